//! Enqueue, with durability. One script writes the job record, its idempotency key and its place
//! in a wait list (or the delayed set) atomically; re-running it for an id that exists is a no-op,
//! so an enqueue whose reply was lost can be retried safely, including across a failover.
//!
//! Durability: Redis acknowledges a write before any replica has it, so a failover right after
//! could lose it. With `Durability::replicas > 0` the enqueue returns only after `WAIT` confirms
//! that many replicas hold it (Sentinel promotes the most up-to-date replica, so such a job
//! survives losing the master). `WAIT` blocks its connection, so it never runs on the shared
//! multiplexed one: a few "lanes", each with a connection of its own, send whatever enqueues are
//! pending as one pipeline ending in a single `WAIT` (one write, one round trip), and answer them
//! all (group commit). Under load one `WAIT` covers a whole batch. An enqueue that finds a lane
//! free sends from its own task, so alone it costs one round trip and no hand-off to another
//! task and back.
//!
//! A repeat that finds its job already written (by a lost-reply retry, or through another
//! connection) is covered too: Redis records the replication offset after every command of a
//! connection, reads included, and `WAIT` waits for that offset.

use std::pin::Pin;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use redis::{Cmd, Script, Value};
use tokio::sync::oneshot;

use crate::queue::Queue;
use crate::queue::connection::{RedisHandle, is_failover_error};
use crate::queue::error::{QueueError, Result, protocol};
use crate::queue::job::{NewJob, new_job_id};
use crate::queue::keys::Keys;
use crate::queue::lease::{as_i64, as_string};
use crate::queue::script::{PRELUDE, build};

/// How many replicas must hold a job before enqueue returns, and how long to wait for them.
#[derive(Debug, Clone, Copy)]
pub struct Durability {
    /// 0 turns the wait off (a failover may then lose just-acknowledged jobs).
    pub replicas: u32,
    pub timeout: Duration,
    /// Group-commit connections (batches in flight at once).
    pub lanes: usize,
}

impl Default for Durability {
    fn default() -> Self {
        Self {
            replicas: 1,
            timeout: Duration::from_secs(2),
            // Fewer lanes make bigger batches (fewer WAITs); two overlap one batch's round trip
            // with the next. Measured on loopback, 1-4 lanes were within noise, 8 was slower.
            lanes: 2,
        }
    }
}

impl Durability {
    /// No replica wait: for a standalone Redis (local demo, tests). A failover may then lose
    /// jobs whose enqueue already returned.
    pub fn none() -> Self {
        Self {
            replicas: 0,
            ..Self::default()
        }
    }
}

/// The outcome of one enqueue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enqueued {
    pub id: String,
    /// False when the idempotency key (or the id) already named a job: `id` is that job.
    pub created: bool,
}

// KEYS: job, idempotency key, wait list of its priority, delayed, signal.
// ARGV: id, type, payload, priority, max attempts, backoff base ms, backoff max ms, delay ms,
//       traceparent, idempotency key, idempotency window ms, owner.
// Optional fields are written only when set (readers take a missing field as unset), and the
// record is one HSET: fewer commands in the script every enqueue runs.
const ENQUEUE_BODY: &str = r#"
if ARGV[10] ~= '' then
  local existing = redis.call('GET', KEYS[2])
  if existing then return {0, existing} end
end
if redis.call('EXISTS', KEYS[1]) == 1 then return {0, ARGV[1]} end
local now = now_ms()
local delay = tonumber(ARGV[8])
local f = {'id', ARGV[1], 'type', ARGV[2], 'payload', ARGV[3], 'priority', ARGV[4],
  'attempts', 0, 'max_attempts', ARGV[5], 'backoff_base_ms', ARGV[6],
  'backoff_max_ms', ARGV[7], 'created_at', now}
local function put(name, v) f[#f + 1] = name; f[#f + 1] = v end
if ARGV[9] ~= '' then put('traceparent', ARGV[9]) end
if ARGV[10] ~= '' then put('idem_key', ARGV[10]) end
if ARGV[12] ~= '' then put('owner', ARGV[12]) end
if delay > 0 then
  put('state', 'delayed')
  put('run_at', now + delay)
  redis.call('HSET', KEYS[1], unpack(f))
  redis.call('ZADD', KEYS[4], now + delay, ARGV[1])
else
  put('state', 'waiting')
  put('ready_at', now)
  redis.call('HSET', KEYS[1], unpack(f))
  redis.call('LPUSH', KEYS[3], ARGV[1])
  -- Wakes an idle worker. Capped at 64 (enough for every waiter); checking first spares a
  -- write, which the replicas would apply too, while the list is full (no worker idle).
  if redis.call('LLEN', KEYS[5]) < 64 then redis.call('LPUSH', KEYS[5], 1) end
end
if ARGV[10] ~= '' then redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[11]) end
return {1, ARGV[1]}
"#;

static ENQUEUE: LazyLock<Script> = LazyLock::new(|| build(&[PRELUDE, ENQUEUE_BODY]));

impl Queue {
    /// Enqueues one job; returns once it is durable (see [`Durability`]).
    pub async fn enqueue(&self, job: NewJob) -> Result<Enqueued> {
        let mut out = self.enqueue_many(vec![job]).await?;
        out.pop().ok_or_else(|| protocol("enqueue", "empty reply"))
    }

    /// Enqueues jobs in one pipeline (and one `WAIT`). Results are in input order.
    pub async fn enqueue_many(&self, jobs: Vec<NewJob>) -> Result<Vec<Enqueued>> {
        let mut cmds = Vec::with_capacity(jobs.len());
        for job in &jobs {
            job.validate()?;
            cmds.push(enqueue_cmd(
                self.keys(),
                job,
                self.config().idempotency_window,
            )?);
        }
        let types: Vec<String> = jobs.into_iter().map(|j| j.job_type).collect();
        let result = match &self.inner.committer {
            Some(committer) => committer.submit(cmds).await,
            None => commit_direct(self.handle(), cmds).await,
        };
        if let Some(m) = &self.config().metrics {
            let queue = self.name().as_str();
            match &result {
                Ok(done) => {
                    for (e, t) in done.iter().zip(&types) {
                        if e.created {
                            m.enqueued(queue, t);
                        }
                    }
                }
                Err(QueueError::NotDurable { .. }) => {
                    for t in &types {
                        m.not_durable(queue, t);
                    }
                }
                Err(_) => {}
            }
        }
        result
    }
}

/// Jobs travel through Redis memory and every worker's claim reply; big blobs belong in storage.
pub const MAX_PAYLOAD_BYTES: usize = 512 * 1024;

fn enqueue_cmd(keys: &Keys, job: &NewJob, idem_window: Duration) -> Result<Cmd> {
    let id = job.id.clone().unwrap_or_else(new_job_id);
    let idem = job.idempotency_key.clone().unwrap_or_default();
    let payload = serde_json::to_string(&job.payload)?;
    if payload.len() > MAX_PAYLOAD_BYTES {
        return Err(QueueError::InvalidJob(format!(
            "payload is {} bytes; the limit is {MAX_PAYLOAD_BYTES} (store large data elsewhere and pass a reference)",
            payload.len()
        )));
    }
    let mut inv = ENQUEUE.prepare_invoke();
    inv.key(keys.job(&id))
        .key(keys.idempotency(&idem))
        .key(keys.wait(job.priority))
        .key(keys.delayed())
        .key(keys.signal())
        .arg(&id)
        .arg(&job.job_type)
        .arg(payload)
        .arg(job.priority.rank())
        .arg(job.max_attempts)
        .arg(job.backoff.base.as_millis() as u64)
        .arg(job.backoff.max.as_millis() as u64)
        .arg(job.delay.as_millis() as u64)
        .arg(job.traceparent.as_deref().unwrap_or(""))
        .arg(&idem)
        .arg(idem_window.as_millis().max(1) as u64)
        .arg(job.owner.as_deref().unwrap_or(""));
    // EVALSHA, for use in pipelines; NOSCRIPT is handled by loading and resending the batch.
    Ok(Cmd::invoke_script(&inv))
}

fn parse_enqueued(v: &Value) -> Result<Enqueued> {
    match v {
        Value::Array(parts) => {
            let created = parts.first().and_then(as_i64) == Some(1);
            let id = parts
                .get(1)
                .and_then(as_string)
                .ok_or_else(|| protocol("enqueue", parts))?;
            Ok(Enqueued { id, created })
        }
        other => Err(protocol("enqueue", other)),
    }
}

fn is_noscript(e: &redis::RedisError) -> bool {
    e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript)
}

/// Without durability: one pipeline on the shared connection.
async fn commit_direct(handle: &RedisHandle, cmds: Vec<Cmd>) -> Result<Vec<Enqueued>> {
    let mut pipe = redis::pipe();
    for c in cmds {
        pipe.add_command(c);
    }
    let pipe = &pipe;
    let values: Vec<Value> = handle
        .run(|mut conn| async move {
            match pipe.query_async(&mut conn).await {
                Err(e) if is_noscript(&e) => {
                    ENQUEUE.load_async(&mut conn).await?;
                    pipe.query_async(&mut conn).await
                }
                other => other,
            }
        })
        .await?;
    values.iter().map(parse_enqueued).collect()
}

struct Request {
    cmds: Vec<Cmd>,
    reply: oneshot::Sender<Result<Vec<Enqueued>>>,
}

/// A lane's connection and its generation; `None` until opened (or after a failover).
type LaneConn = Option<(u64, redis::aio::MultiplexedConnection)>;

/// Group commit of one queue's durable enqueues. At most `lanes` batches are in flight, each on
/// a connection of its own. An enqueue that finds a lane free sends its batch from its own task
/// (with whatever else is pending), so a lone enqueue costs no hand-off to another task; one that
/// finds every lane busy is sent with the next batch of whichever lane frees first.
pub(crate) struct Committer {
    shared: Arc<Shared>,
}

struct Shared {
    handle: RedisHandle,
    durability: Durability,
    state: std::sync::Mutex<State>,
}

struct State {
    /// Waiting for a lane; non-empty only while every lane is busy.
    pending: Vec<Request>,
    free_lanes: usize,
    /// The connections of free lanes.
    conns: Vec<LaneConn>,
}

impl Committer {
    pub(crate) fn start(handle: RedisHandle, durability: Durability) -> Self {
        let lanes = durability.lanes.max(1);
        Self {
            shared: Arc::new(Shared {
                handle,
                durability,
                state: std::sync::Mutex::new(State {
                    pending: Vec::new(),
                    free_lanes: lanes,
                    conns: Vec::with_capacity(lanes),
                }),
            }),
        }
    }

    async fn submit(&self, cmds: Vec<Cmd>) -> Result<Vec<Enqueued>> {
        let (reply, rx) = oneshot::channel();
        let lead = {
            let mut st = self.shared.lock();
            st.pending.push(Request { cmds, reply });
            if st.free_lanes == 0 {
                None
            } else {
                st.free_lanes -= 1;
                let conn = st.conns.pop().flatten();
                Some((take_batch(&mut st.pending), conn))
            }
        };
        if let Some((batch, conn)) = lead {
            let work = commit_then_continue(self.shared.clone(), batch, conn);
            Detached(Some(Box::pin(work))).run().await;
        }
        rx.await.map_err(|_| QueueError::Closed)?
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Poisoning only means a panic elsewhere while holding it; the state is still whole.
        match self.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// The next batch for this lane, or (nothing pending) the lane back to the free ones.
    fn next_or_release(&self, conn: &mut LaneConn) -> Option<Vec<Request>> {
        let mut st = self.lock();
        if st.pending.is_empty() {
            st.free_lanes += 1;
            st.conns.push(conn.take());
            None
        } else {
            Some(take_batch(&mut st.pending))
        }
    }
}

/// Work run inline by a caller that must not be lost if the caller goes away (a dropped HTTP
/// request): dropped unfinished, it moves to a task of its own, so the other callers in its
/// batch still get their answer and the lane is freed.
struct Detached(Option<Pin<Box<dyn Future<Output = ()> + Send>>>);

impl Detached {
    async fn run(mut self) {
        if let Some(work) = self.0.as_mut() {
            work.await;
        }
        self.0 = None;
    }
}

impl Drop for Detached {
    fn drop(&mut self) {
        if let Some(work) = self.0.take()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            rt.spawn(work);
        }
    }
}

/// Commits one batch; if more arrived meanwhile, hands them (and the lane) to a task of its own
/// so the caller that led this batch returns now.
async fn commit_then_continue(shared: Arc<Shared>, batch: Vec<Request>, mut conn: LaneConn) {
    commit_batch(&shared, batch, &mut conn).await;
    let_answered_callers_resubmit().await;
    if let Some(next) = shared.next_or_release(&mut conn) {
        tokio::spawn(drain(shared, next, conn));
    }
}

/// Commits batches until nothing is pending, then frees the lane.
async fn drain(shared: Arc<Shared>, mut batch: Vec<Request>, mut conn: LaneConn) {
    loop {
        commit_batch(&shared, batch, &mut conn).await;
        let_answered_callers_resubmit().await;
        match shared.next_or_release(&mut conn) {
            Some(next) => batch = next,
            None => return,
        }
    }
}

/// Yields once before a lane decides whether to stop: the callers it just answered were woken
/// on this worker and often enqueue again at once; this way they join the lane's next batch
/// instead of each leading a batch (and a `WAIT`) of one. With 8 concurrent adders this raised
/// throughput by a median 1.5x over 5 paired runs; a lone enqueue was unaffected.
async fn let_answered_callers_resubmit() {
    tokio::task::yield_now().await;
}

const MAX_BATCH_CMDS: usize = 1000;

/// The oldest pending requests, up to [`MAX_BATCH_CMDS`] commands (at least one request).
fn take_batch(pending: &mut Vec<Request>) -> Vec<Request> {
    let mut n = 0;
    let take = pending
        .iter()
        .enumerate()
        .take_while(|(i, r)| {
            n += r.cmds.len();
            *i == 0 || n <= MAX_BATCH_CMDS
        })
        .count();
    if take == pending.len() {
        std::mem::take(pending)
    } else {
        pending.drain(..take).collect()
    }
}

/// Sends a batch with one `WAIT` and answers every request in it.
async fn commit_batch(shared: &Shared, mut batch: Vec<Request>, conn: &mut LaneConn) {
    let durability = shared.durability;
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    let mut counts = Vec::with_capacity(batch.len());
    for req in &mut batch {
        counts.push(req.cmds.len());
        for cmd in req.cmds.drain(..) {
            pipe.add_command(cmd);
        }
    }
    let timeout_ms = durability.timeout.as_millis().max(1) as u64;
    pipe.cmd("WAIT").arg(durability.replicas).arg(timeout_ms);
    match commit_durable(&shared.handle, durability, conn, &pipe).await {
        Ok((values, acked)) => {
            let durable = acked >= i64::from(durability.replicas);
            let mut values = values.into_iter();
            for (req, n) in batch.into_iter().zip(counts) {
                let mine: Result<Vec<Enqueued>> = values
                    .by_ref()
                    .take(n)
                    .map(|v| v.and_then(|v| parse_enqueued(&v)))
                    .collect();
                let reply = match mine {
                    Ok(jobs) if !durable => Err(QueueError::NotDurable {
                        ids: jobs.into_iter().map(|e| e.id).collect(),
                        acked,
                        wanted: durability.replicas,
                        timeout: durability.timeout,
                    }),
                    other => other,
                };
                let _ = req.reply.send(reply);
            }
        }
        Err(e) => {
            for req in batch {
                let err = match &e {
                    QueueError::Redis(r) => QueueError::Redis(r.clone()),
                    other => protocol("durable enqueue", other.to_string()),
                };
                let _ = req.reply.send(Err(err));
            }
        }
    }
}

/// Sends the batch (ending in its `WAIT`) on the lane's own connection; follows a failover
/// (re-sending is safe: the script skips ids that exist). Returns the script replies and how many
/// replicas acknowledged them.
async fn commit_durable(
    handle: &RedisHandle,
    durability: Durability,
    conn: &mut LaneConn,
    pipe: &redis::Pipeline,
) -> Result<(Vec<Result<Value>>, i64)> {
    let started = std::time::Instant::now();
    let deadline = handle.options().failover_deadline;
    loop {
        let current = handle.conn().generation;
        if conn.as_ref().is_none_or(|(g, _)| *g != current) {
            // Response timeout above the WAIT timeout so a slow WAIT is not cut short.
            match handle
                .dedicated(Some(handle.options().response_timeout + durability.timeout))
                .await
            {
                Ok(l) => *conn = Some((l.generation, l.conn)),
                Err(e) => {
                    if started.elapsed() < deadline && handle.recover(current, &e).await {
                        continue;
                    }
                    return Err(e.into());
                }
            }
        }
        let Some((generation, c)) = conn.as_mut() else {
            continue;
        };
        let reply: redis::RedisResult<Vec<redis::RedisResult<Value>>> = pipe.query_async(c).await;
        let err = match reply {
            Ok(mut values) => {
                let acked = values
                    .pop()
                    .and_then(|v| v.ok())
                    .as_ref()
                    .and_then(as_i64)
                    .unwrap_or(0);
                let first_err = values.iter().find_map(|v| v.as_ref().err()).cloned();
                match first_err {
                    None => {
                        let values = values
                            .into_iter()
                            .map(|v| v.map_err(QueueError::from))
                            .collect();
                        return Ok((values, acked));
                    }
                    Some(e) if is_noscript(&e) => {
                        ENQUEUE.load_async(c).await?;
                        continue;
                    }
                    Some(e) => e,
                }
            }
            Err(e) => e,
        };
        let gen_now = *generation;
        if is_failover_error(&err) {
            *conn = None;
        }
        if started.elapsed() < deadline && handle.recover(gen_now, &err).await {
            continue;
        }
        return Err(err.into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(n: usize) -> Request {
        Request {
            cmds: (0..n).map(|_| redis::cmd("PING")).collect(),
            reply: oneshot::channel().0,
        }
    }

    fn sizes(batch: &[Request]) -> Vec<usize> {
        batch.iter().map(|r| r.cmds.len()).collect()
    }

    #[test]
    fn batches_stop_at_the_command_cap_but_always_take_one_request() {
        let mut pending = vec![request(600), request(300), request(200), request(5)];
        assert_eq!(sizes(&take_batch(&mut pending)), [600, 300]);
        assert_eq!(sizes(&take_batch(&mut pending)), [200, 5]);
        assert!(pending.is_empty());
        let mut pending = vec![request(1500), request(1)];
        assert_eq!(sizes(&take_batch(&mut pending)), [1500]);
        assert_eq!(sizes(&pending), [1]);
    }
}
