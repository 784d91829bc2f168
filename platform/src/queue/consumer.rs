//! The worker side: claims jobs up to a concurrency limit, runs them through a [`Processor`],
//! acknowledges the outcome, and keeps the leases alive.
//!
//! One loop claims as many jobs as there are free slots in one script call; each job runs in a
//! task holding a slot, and when it completes, the same script call that acknowledges it claims
//! the next job for that slot, so a busy worker spends one round trip per job. A maintenance task renews every held lease in one call per tick
//! (a third of the lease) and reclaims leases other workers let expire. When the queue is empty
//! the loop blocks on the queue's signal list (on a connection of its own, since `BLPOP` would
//! stall the shared one) no longer than until the next delayed job is due.
//!
//! Shutdown: stop claiming, let running jobs finish within the grace period, then abort the rest
//! and hand them back at once (front of their list, attempt not counted) rather than leaving them
//! to wait out their lease.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt;
use redis::aio::MultiplexedConnection;
use serde_json::Value as Json;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::queue::connection::is_failover_error;
use crate::queue::error::Result;
use crate::queue::job::ClaimedJob;
use crate::queue::lease::Claim;
use crate::queue::retry::Failed;
use crate::queue::{Queue, QueueMetrics};

#[derive(Debug, Clone)]
pub struct ConsumerOptions {
    /// Shown in job records (`worker`) and logs.
    pub worker_id: String,
    /// Jobs this consumer runs at once.
    pub concurrency: usize,
    /// A job whose lease is not renewed for this long is given to another worker.
    pub lease: Duration,
    /// On shutdown, how long running jobs may take before they are handed back.
    pub grace: Duration,
    /// Longest an idle consumer sleeps before looking again (delayed jobs, lost wake-ups).
    pub max_idle_wait: Duration,
}

impl Default for ConsumerOptions {
    fn default() -> Self {
        Self {
            worker_id: format!("worker-{}", std::process::id()),
            concurrency: 8,
            lease: Duration::from_secs(30),
            grace: Duration::from_secs(20),
            max_idle_wait: Duration::from_secs(1),
        }
    }
}

/// What a handler decided.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Completed(Json),
    /// A transient failure: retry with backoff while attempts remain.
    Retry(String),
    /// A permanent failure: dead-letter now.
    Fail(String),
}

/// What the queue did with an outcome.
#[derive(Debug, Clone, PartialEq)]
pub enum Settled {
    Completed,
    Retrying {
        delay: Duration,
    },
    DeadLettered,
    /// The lease had expired and the job belongs to another attempt; the outcome was dropped.
    LeaseLost,
    /// Redis did not take the acknowledgement (even after following a failover); the lease will
    /// expire and the job run again.
    AckFailed(String),
}

/// Handed to the processor with each job.
#[derive(Clone)]
pub struct JobContext {
    queue: Queue,
    job: ClaimedJob,
}

impl JobContext {
    /// Stores progress in the job record (visible through the jobs API).
    pub async fn progress(&self, progress: &Json) -> Result<bool> {
        self.queue.progress(&self.job, progress).await
    }

    pub fn queue(&self) -> &Queue {
        &self.queue
    }
}

/// Runs jobs. Implemented by the worker's handler registry.
pub trait Processor: Send + Sync + 'static {
    fn process(&self, job: ClaimedJob, ctx: JobContext) -> impl Future<Output = Outcome> + Send;

    /// Called after the outcome was acknowledged (or not), e.g. to record it elsewhere.
    fn settled(
        &self,
        _job: &ClaimedJob,
        _outcome: &Outcome,
        _settled: &Settled,
    ) -> impl Future<Output = ()> + Send {
        async {}
    }
}

/// What happened at shutdown.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunReport {
    /// Jobs still running at the end of the grace period, returned to the queue.
    pub handed_back: u64,
}

type InFlight = Arc<Mutex<HashMap<String, u32>>>;

pub struct Consumer<P> {
    queue: Queue,
    processor: Arc<P>,
    options: ConsumerOptions,
}

impl<P: Processor> Consumer<P> {
    pub fn new(queue: Queue, processor: Arc<P>, options: ConsumerOptions) -> Self {
        Self {
            queue,
            processor,
            options,
        }
    }

    /// Runs until `shutdown` resolves, then drains as described in the module docs.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<RunReport> {
        let opts = &self.options;
        let concurrency = opts.concurrency.max(1);
        let slots = Arc::new(Semaphore::new(concurrency));
        let inflight: InFlight = Arc::default();
        let mut tasks = JoinSet::new();
        let maintenance = tokio::spawn(maintain(self.queue.clone(), inflight.clone(), opts.lease));
        let shared = Arc::new(Shared {
            queue: self.queue.clone(),
            processor: self.processor.clone(),
            inflight: inflight.clone(),
            stopping: AtomicBool::new(false),
            worker_id: opts.worker_id.clone(),
            lease: opts.lease,
        });
        let mut blocker: Option<(u64, MultiplexedConnection)> = None;
        tokio::pin!(shutdown);

        loop {
            while let Some(done) = tasks.try_join_next() {
                if let Err(e) = done {
                    tracing::error!(error = %e, "job task failed");
                }
            }
            let first = tokio::select! {
                _ = &mut shutdown => break,
                p = slots.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            let mut permits = vec![first];
            while permits.len() < concurrency {
                match slots.clone().try_acquire_owned() {
                    Ok(p) => permits.push(p),
                    Err(_) => break,
                }
            }
            // Not raced against shutdown: dropping a claim whose script already ran would strand
            // its jobs in `active` until their lease expired.
            let claim = self
                .queue
                .claim(&opts.worker_id, permits.len(), opts.lease)
                .await;
            let pause = match claim {
                Ok(Claim::Jobs(jobs)) => {
                    for (job, permit) in jobs.into_iter().zip(permits.drain(..)) {
                        lock(&inflight).insert(job.id.clone(), job.attempt);
                        tasks.spawn(run_chain(shared.clone(), job, permit));
                    }
                    continue;
                }
                Ok(Claim::Empty { next_due }) => {
                    drop(permits);
                    let wait = next_due.map_or(opts.max_idle_wait, |d| d.min(opts.max_idle_wait));
                    tokio::select! {
                        _ = &mut shutdown => break,
                        _ = wait_for_signal(&self.queue, &mut blocker, wait, opts.max_idle_wait) => {}
                    }
                    continue;
                }
                Ok(Claim::RateLimited { retry_after }) => retry_after.min(opts.max_idle_wait),
                Err(e) => {
                    tracing::warn!(error = %e, "claim failed");
                    Duration::from_millis(500)
                }
            };
            drop(permits);
            tokio::select! {
                _ = &mut shutdown => break,
                _ = tokio::time::sleep(pause) => {}
            }
        }

        // Drain: finish within grace, then hand the rest back.
        shared.stopping.store(true, Ordering::SeqCst);
        let deadline = tokio::time::Instant::now() + opts.grace;
        while !tasks.is_empty() {
            match tokio::time::timeout_at(deadline, tasks.join_next()).await {
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        let left: Vec<(String, u32)> = lock(&inflight).drain().collect();
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
        maintenance.abort();
        let handed_back = self.queue.release(&left).await?;
        if handed_back > 0 {
            tracing::info!(handed_back, "handed unfinished jobs back");
        }
        Ok(RunReport { handed_back })
    }
}

fn lock(m: &InFlight) -> std::sync::MutexGuard<'_, HashMap<String, u32>> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// What every job task of one consumer shares.
struct Shared<P> {
    queue: Queue,
    processor: Arc<P>,
    inflight: InFlight,
    /// Set at shutdown: tasks stop chaining into the next job.
    stopping: AtomicBool,
    worker_id: String,
    lease: Duration,
}

/// Runs `job`, and then, as long as the queue has work and we are not stopping, the next one
/// claimed together with this one's completion (one script per job while busy).
async fn run_chain<P: Processor>(
    shared: Arc<Shared<P>>,
    job: ClaimedJob,
    _slot: OwnedSemaphorePermit,
) {
    let mut job = job;
    loop {
        let next = run_one(&shared, &job).await;
        lock(&shared.inflight).remove(&job.id);
        match next {
            Some(n) => {
                lock(&shared.inflight).insert(n.id.clone(), n.attempt);
                job = n;
            }
            None => return,
        }
    }
}

async fn run_one<P: Processor>(shared: &Shared<P>, job: &ClaimedJob) -> Option<ClaimedJob> {
    let queue = &shared.queue;
    let metrics: Option<&QueueMetrics> = queue.config().metrics.as_ref();
    let qname = queue.name().as_str();
    if let Some(m) = metrics {
        m.started(qname, &job.job_type);
    }
    let span = tracing::info_span!(
        "job",
        queue = %qname,
        id = %job.id,
        r#type = %job.job_type,
        attempt = job.attempt,
        // Also recorded as a field, so the JSON logs carry it without an OTel collector.
        traceparent = job.traceparent.as_deref().unwrap_or(""),
    );
    crate::queue::trace::link(&span, job.traceparent.as_deref());
    let ctx = JobContext {
        queue: queue.clone(),
        job: job.clone(),
    };
    let started = Instant::now();
    let outcome = AssertUnwindSafe(shared.processor.process(job.clone(), ctx))
        .catch_unwind()
        .instrument(span.clone())
        .await
        .unwrap_or_else(|_| Outcome::Retry("handler panicked".into()));
    let took = started.elapsed();
    let mut next = None;
    let settled = match &outcome {
        Outcome::Completed(result) => {
            let acked = if shared.stopping.load(Ordering::SeqCst) {
                queue.complete(job, result).await
            } else {
                match queue
                    .complete_and_claim(job, result, &shared.worker_id, 1, shared.lease)
                    .await
                {
                    Ok((acked, Claim::Jobs(mut jobs))) => {
                        next = jobs.pop();
                        Ok(acked)
                    }
                    Ok((acked, _)) => Ok(acked),
                    Err(e) => Err(e),
                }
            };
            match acked {
                Ok(true) => {
                    if let Some(m) = metrics {
                        m.completed(qname, &job.job_type, took);
                    }
                    Settled::Completed
                }
                Ok(false) => Settled::LeaseLost,
                Err(e) => Settled::AckFailed(e.to_string()),
            }
        }
        Outcome::Retry(error) | Outcome::Fail(error) => {
            let retryable = matches!(outcome, Outcome::Retry(_));
            match queue.fail(job, error, retryable).await {
                Ok(Failed::Retrying { delay }) => {
                    if let Some(m) = metrics {
                        m.failed(qname, &job.job_type, took, true);
                    }
                    Settled::Retrying { delay }
                }
                Ok(Failed::DeadLettered) => {
                    if let Some(m) = metrics {
                        m.failed(qname, &job.job_type, took, false);
                    }
                    Settled::DeadLettered
                }
                Ok(Failed::LeaseLost) => Settled::LeaseLost,
                Err(e) => Settled::AckFailed(e.to_string()),
            }
        }
    };
    span.in_scope(|| match &settled {
        Settled::LeaseLost => tracing::warn!("lease lost; outcome dropped"),
        Settled::AckFailed(e) => tracing::error!(error = %e, "acknowledgement failed"),
        _ => tracing::debug!(?settled, "job settled"),
    });
    shared.processor.settled(job, &outcome, &settled).await;
    next
}

/// Renews held leases and reclaims expired ones, every third of a lease.
async fn maintain(queue: Queue, inflight: InFlight, lease: Duration) {
    let every = (lease / 3).max(Duration::from_millis(100));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let held: Vec<(String, u32)> = lock(&inflight)
            .iter()
            .map(|(id, a)| (id.clone(), *a))
            .collect();
        match queue.heartbeat(&held, lease).await {
            Ok(lost) if !lost.is_empty() => {
                tracing::warn!(?lost, "leases lost (expired before renewal)");
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "heartbeat failed"),
        }
        match queue.reclaim_expired(1000).await {
            Ok((requeued, dead)) => {
                if requeued + dead > 0 {
                    tracing::info!(requeued, dead, "reclaimed expired leases");
                }
                if let (Some(m), true) = (&queue.config().metrics, dead > 0) {
                    m.dead_lettered(queue.name().as_str(), "unknown", dead);
                }
            }
            Err(e) => tracing::warn!(error = %e, "reclaim failed"),
        }
    }
}

/// Blocks on the queue's signal list for up to `wait` (a new job wakes it at once).
async fn wait_for_signal(
    queue: &Queue,
    blocker: &mut Option<(u64, MultiplexedConnection)>,
    wait: Duration,
    max_wait: Duration,
) {
    if wait.is_zero() {
        return;
    }
    let handle = queue.handle();
    let current = handle.conn().generation;
    if blocker.as_ref().is_none_or(|(g, _)| *g != current) {
        match handle
            .dedicated(Some(max_wait + handle.options().response_timeout))
            .await
        {
            Ok(l) => *blocker = Some((l.generation, l.conn)),
            Err(e) => {
                handle.recover(current, &e).await;
                tokio::time::sleep(wait).await;
                return;
            }
        }
    }
    let Some((generation, conn)) = blocker.as_mut() else {
        return;
    };
    // BLPOP takes fractional seconds since Redis 6; at least 1 ms so 0 never means "forever".
    let secs = format!("{:.3}", wait.as_secs_f64().max(0.001));
    let res: redis::RedisResult<Option<(String, String)>> = redis::cmd("BLPOP")
        .arg(queue.keys().signal())
        .arg(secs)
        .query_async(conn)
        .await;
    if let Err(e) = res {
        let g = *generation;
        *blocker = None;
        if is_failover_error(&e) {
            handle.recover(g, &e).await;
        } else {
            tracing::warn!(error = %e, "waiting for jobs failed");
            tokio::time::sleep(wait).await;
        }
    }
}
