//! Queue semantics against a real Redis server, one server per test.

mod queue_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use platform::queue::{
    Backoff, Claim, ClaimedJob, Consumer, ConsumerOptions, Durability, JobContext, JobState,
    NewJob, Outcome, Priority, Processor, Queue, QueueConfig, QueueError, QueueName, RateLimit,
    Redrive, Retention,
};
use queue_support::{Recorder, eventually, handle, queue};
use serde_json::json;
use testenv::RedisServer;
use tokio::sync::oneshot;

const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn opts(concurrency: usize) -> ConsumerOptions {
    ConsumerOptions {
        worker_id: "test".into(),
        concurrency,
        lease: Duration::from_secs(10),
        grace: Duration::from_secs(5),
        max_idle_wait: Duration::from_millis(200),
    }
}

/// Runs a consumer in the background; the returned sender stops it.
fn spawn_consumer<P: Processor>(
    q: &Queue,
    p: Arc<P>,
    o: ConsumerOptions,
) -> (
    oneshot::Sender<()>,
    tokio::task::JoinHandle<platform::queue::Result<platform::queue::consumer::RunReport>>,
) {
    let (tx, rx) = oneshot::channel::<()>();
    let c = Consumer::new(q.clone(), p, o);
    let task = tokio::spawn(c.run(async move {
        let _ = rx.await;
    }));
    (tx, task)
}

#[tokio::test]
async fn enqueue_writes_the_record_and_a_claim_leases_it() -> anyhow::Result<()> {
    let redis = RedisServer::start().await?;
    let q = queue(&handle(&redis.url()).await?, "basic")?;
    let e = q
        .enqueue(
            NewJob::new("email.send", json!({"to": "a@b.c"}))
                .with_traceparent(TP)
                .with_owner("user:ann"),
        )
        .await?;
    assert!(e.created);
    let rec = q
        .get(&e.id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no record"))?;
    assert_eq!(rec.state, JobState::Waiting);
    assert_eq!(rec.attempts, 0);
    assert_eq!(rec.payload, json!({"to": "a@b.c"}));
    assert_eq!(rec.owner.as_deref(), Some("user:ann"));
    assert_eq!(rec.traceparent.as_deref(), Some(TP));

    let Claim::Jobs(jobs) = q.claim("w1", 10, Duration::from_secs(5)).await? else {
        anyhow::bail!("nothing claimed");
    };
    assert_eq!(jobs.len(), 1);
    let job = &jobs[0];
    assert_eq!((job.id.as_str(), job.attempt), (e.id.as_str(), 1));
    assert_eq!(
        job.traceparent.as_deref(),
        Some(TP),
        "trace context travels"
    );
    assert!(q.progress(job, &json!({"pct": 50})).await?);
    let rec = q
        .get(&e.id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no record"))?;
    assert_eq!(rec.state, JobState::Active);
    assert_eq!(rec.worker.as_deref(), Some("w1"));
    assert_eq!(rec.progress, Some(json!({"pct": 50})));

    assert!(q.complete(job, &json!({"sent": true})).await?);
    assert!(
        q.complete(job, &json!({"sent": true})).await?,
        "ack is idempotent"
    );
    let rec = q
        .get(&e.id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no record"))?;
    assert_eq!(rec.state, JobState::Completed);
    assert_eq!(rec.result, Some(json!({"sent": true})));
    assert!(rec.finished_at_ms >= rec.started_at_ms);
    assert!(matches!(
        q.claim("w1", 10, Duration::from_secs(5)).await?,
        Claim::Empty { next_due: None }
    ));
    // Unset optional fields read back as unset.
    let plain = q.enqueue(NewJob::new("t", json!(null))).await?;
    let plain = q
        .get(&plain.id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no record"))?;
    assert_eq!(
        (plain.owner, plain.traceparent, plain.idempotency_key),
        (None, None, None)
    );
    assert!(plain.ready_at_ms.is_some_and(|t| t == plain.created_at_ms));
    Ok(())
}

#[tokio::test]
async fn priorities_are_claimed_highest_first_and_fifo_within_one() -> anyhow::Result<()> {
    let redis = RedisServer::start().await?;
    let q = queue(&handle(&redis.url()).await?, "prio")?;
    let order = [
        ("a", Priority::Low),
        ("b", Priority::Normal),
        ("c", Priority::Critical),
        ("d", Priority::High),
        ("e", Priority::Normal),
        ("f", Priority::Critical),
    ];
    for (id, p) in order {
        q.enqueue(NewJob::new("t", json!(null)).with_id(id).with_priority(p))
            .await?;
    }
    let mut claimed = Vec::new();
    // One at a time, and in a batch: both follow priority order.
    if let Claim::Jobs(j) = q.claim("w", 1, Duration::from_secs(5)).await? {
        claimed.extend(j.into_iter().map(|j| j.id));
    }
    if let Claim::Jobs(j) = q.claim("w", 10, Duration::from_secs(5)).await? {
        claimed.extend(j.into_iter().map(|j| j.id));
    }
    assert_eq!(claimed, ["c", "f", "d", "b", "e", "a"]);
    Ok(())
}

#[tokio::test]
async fn a_delayed_job_does_not_start_early() -> anyhow::Result<()> {
    let redis = RedisServer::start().await?;
    let q = queue(&handle(&redis.url()).await?, "delay")?;
    let e = q
        .enqueue(NewJob::new("t", json!(1)).with_delay(Duration::from_millis(1500)))
        .await?;
    let rec = q
        .get(&e.id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no record"))?;
    assert_eq!(rec.state, JobState::Delayed);
    match q.claim("w", 1, Duration::from_secs(5)).await? {
        Claim::Empty { next_due: Some(d) } => assert!(d <= Duration::from_millis(1500), "{d:?}"),
        other => anyhow::bail!("claimed early: {other:?}"),
    }
    let rec_p = Recorder::default();
    let p = Arc::new(rec_p.clone());
    let (stop, task) = spawn_consumer(&q, p, opts(1));
    let done = eventually(Duration::from_secs(30), || async {
        q.get(&e.id)
            .await
            .ok()
            .flatten()
            .is_some_and(|r| r.state == JobState::Completed)
    })
    .await;
    let _ = stop.send(());
    task.await??;
    assert!(done, "delayed job never ran");
    let rec = q
        .get(&e.id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no record"))?;
    let started = rec.started_at_ms.unwrap_or(0);
    // Both times are the Redis server's clock.
    assert!(
        started - rec.created_at_ms >= 1500,
        "started {} ms after enqueue",
        started - rec.created_at_ms
    );
    Ok(())
}

#[tokio::test]
async fn an_idempotency_key_returns_the_existing_job_within_its_window() -> anyhow::Result<()> {
    let redis = RedisServer::start().await?;
    let h = handle(&redis.url()).await?;
    let q = Queue::new(
        h,
        QueueName::new("idem")?,
        QueueConfig {
            durability: Durability {
                replicas: 0,
                ..Default::default()
            },
            idempotency_window: Duration::from_millis(400),
            ..Default::default()
        },
    );
    let first = q
        .enqueue(NewJob::new("t", json!(1)).with_idempotency_key("order-42"))
        .await?;
    let again = q
        .enqueue(NewJob::new("t", json!(2)).with_idempotency_key("order-42"))
        .await?;
    assert!(first.created);
    assert_eq!(again.id, first.id);
    assert!(!again.created);
    let other = q
        .enqueue(NewJob::new("t", json!(3)).with_idempotency_key("order-43"))
        .await?;
    assert_ne!(other.id, first.id);
    assert_eq!(
        q.stats().await?.waiting,
        2,
        "the duplicate was not enqueued"
    );
    // Same explicit id: also a no-op (this is what makes a retried enqueue safe).
    let by_id = q
        .enqueue(NewJob::new("t", json!(4)).with_id(&first.id))
        .await?;
    assert!(!by_id.created);

    tokio::time::sleep(Duration::from_millis(1000)).await;
    let later = q
        .enqueue(NewJob::new("t", json!(5)).with_idempotency_key("order-42"))
        .await?;
    assert!(later.created, "the key expired with its window");
    assert_ne!(later.id, first.id);
    Ok(())
}

/// Fails until `succeed` is set; records the server-side start time of each attempt.
#[derive(Default)]
struct Flaky {
    succeed: AtomicBool,
    permanent: bool,
    starts: std::sync::Mutex<Vec<(u32, i64)>>,
}

impl Processor for Flaky {
    async fn process(&self, job: ClaimedJob, _ctx: JobContext) -> Outcome {
        if let Ok(mut s) = self.starts.lock() {
            s.push((job.attempt, job.started_at_ms));
        }
        if self.succeed.load(Ordering::SeqCst) {
            Outcome::Completed(json!("fine"))
        } else if self.permanent {
            Outcome::Fail("400 bad request".into())
        } else {
            Outcome::Retry(format!("boom {}", job.attempt))
        }
    }
}

#[tokio::test]
async fn retries_back_off_then_dead_letter_and_can_be_redriven() -> anyhow::Result<()> {
    let redis = RedisServer::start().await?;
    let q = queue(&handle(&redis.url()).await?, "retry")?;
    let backoff = Backoff {
        base: Duration::from_millis(200),
        max: Duration::from_millis(800),
    };
    let e = q
        .enqueue(
            NewJob::new("t", json!(1))
                .with_max_attempts(4)
                .with_backoff(backoff),
        )
        .await?;
    let flaky = Arc::new(Flaky::default());
    let (stop, task) = spawn_consumer(&q, flaky.clone(), opts(2));
    let dead = eventually(Duration::from_secs(60), || async {
        q.get(&e.id)
            .await
            .ok()
            .flatten()
            .is_some_and(|r| r.state == JobState::Dead)
    })
    .await;
    assert!(dead, "never dead-lettered");
    let rec = q
        .get(&e.id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no record"))?;
    assert_eq!(rec.attempts, 4);
    assert_eq!(rec.last_error.as_deref(), Some("boom 4"));

    // The schedule: attempt n+1 starts no earlier than half of base * 2^(n-1) (equal jitter).
    let starts = flaky.starts.lock().map(|s| s.clone()).unwrap_or_default();
    assert_eq!(starts.iter().map(|s| s.0).collect::<Vec<_>>(), [1, 2, 3, 4]);
    for w in starts.windows(2) {
        let gap = w[1].1 - w[0].1;
        let floor = backoff.ceiling(w[0].0).as_millis() as i64 / 2;
        assert!(
            gap >= floor,
            "attempt {} after {gap} ms, floor {floor}",
            w[1].0
        );
    }

    let dlq = q.dead_letters(0, 10).await?;
    assert_eq!(
        dlq.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        [e.id.as_str()]
    );
    assert_eq!(q.stats().await?.dead, 1);

    flaky.succeed.store(true, Ordering::SeqCst);
    assert_eq!(q.redrive(Redrive::Ids(vec![e.id.clone()])).await?, 1);
    assert_eq!(
        q.redrive(Redrive::Ids(vec![e.id.clone()])).await?,
        0,
        "already moved"
    );
    let completed = eventually(Duration::from_secs(30), || async {
        q.get(&e.id)
            .await
            .ok()
            .flatten()
            .is_some_and(|r| r.state == JobState::Completed)
    })
    .await;
    let _ = stop.send(());
    task.await??;
    assert!(completed, "re-driven job did not complete");
    let rec = q
        .get(&e.id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no record"))?;
    assert_eq!(rec.attempts, 1, "re-drive gives a fresh attempt budget");
    assert!(q.dead_letters(0, 10).await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn a_permanent_failure_dead_letters_at_once() -> anyhow::Result<()> {
    let redis = RedisServer::start().await?;
    let q = queue(&handle(&redis.url()).await?, "perm")?;
    let e = q
        .enqueue(NewJob::new("t", json!(1)).with_max_attempts(5))
        .await?;
    let flaky = Arc::new(Flaky {
        permanent: true,
        ..Default::default()
    });
    let (stop, task) = spawn_consumer(&q, flaky.clone(), opts(1));
    let dead = eventually(Duration::from_secs(30), || async {
        q.stats().await.is_ok_and(|s| s.dead == 1)
    })
    .await;
    let _ = stop.send(());
    task.await??;
    assert!(dead);
    let rec = q
        .get(&e.id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no record"))?;
    assert_eq!((rec.state, rec.attempts), (JobState::Dead, 1));
    assert_eq!(rec.last_error.as_deref(), Some("400 bad request"));
    Ok(())
}

#[tokio::test]
async fn an_expired_lease_is_reclaimed_and_the_stale_ack_refused() -> anyhow::Result<()> {
    let redis = RedisServer::start().await?;
    let q = queue(&handle(&redis.url()).await?, "lease")?;
    let e = q.enqueue(NewJob::new("t", json!(1))).await?;
    let Claim::Jobs(mut first) = q.claim("crashed", 1, Duration::from_millis(1500)).await? else {
        anyhow::bail!("nothing claimed");
    };
    let stale = first.remove(0);
    assert_eq!(q.reclaim_expired(10).await?, (0, 0), "lease still valid");
    // A heartbeat keeps it; then it stops and the lease runs out.
    assert!(
        q.heartbeat(
            &[(stale.id.clone(), stale.attempt)],
            Duration::from_millis(1500)
        )
        .await?
        .is_empty()
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(q.reclaim_expired(10).await?, (1, 0));
    let rec = q
        .get(&e.id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no record"))?;
    assert_eq!(rec.state, JobState::Waiting);
    assert!(rec.last_error.is_some_and(|e| e.contains("lease expired")));

    let Claim::Jobs(mut second) = q.claim("healthy", 1, Duration::from_secs(5)).await? else {
        anyhow::bail!("reclaimed job not claimable");
    };
    let fresh = second.remove(0);
    assert_eq!((fresh.id.as_str(), fresh.attempt), (e.id.as_str(), 2));
    assert!(
        !q.complete(&stale, &json!("late")).await?,
        "stale ack refused"
    );
    assert_eq!(
        q.heartbeat(&[(stale.id.clone(), stale.attempt)], Duration::from_secs(5))
            .await?,
        [stale.id.as_str()]
    );
    assert!(q.complete(&fresh, &json!("ok")).await?);
    let rec = q
        .get(&e.id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no record"))?;
    assert_eq!(rec.result, Some(json!("ok")));
    Ok(())
}

#[tokio::test]
async fn retention_bounds_completed_and_dead_records() -> anyhow::Result<()> {
    let redis = RedisServer::start().await?;
    let h = handle(&redis.url()).await?;
    let q = Queue::new(
        h.clone(),
        QueueName::new("ret")?,
        QueueConfig {
            durability: Durability {
                replicas: 0,
                ..Default::default()
            },
            retention: Retention {
                completed_max_count: 10,
                completed_max_age: Duration::from_secs(3600),
                dead_max_count: 3,
                dead_max_age: Duration::from_secs(3600),
            },
            ..Default::default()
        },
    );
    let mut ids = Vec::new();
    for i in 0..60 {
        ids.push(
            q.enqueue(NewJob::new("t", json!(i)).with_max_attempts(1))
                .await?
                .id,
        );
    }
    // 50 complete, 10 fail permanently.
    for n in 0..60 {
        let Claim::Jobs(jobs) = q.claim("w", 1, Duration::from_secs(5)).await? else {
            anyhow::bail!("ran dry at {n}");
        };
        for j in jobs {
            if n < 50 {
                q.complete(&j, &json!(n)).await?;
            } else {
                q.fail(&j, "x", true).await?;
            }
        }
    }
    let s = q.stats().await?;
    assert_eq!((s.completed, s.dead), (10, 3));
    assert!(q.get(&ids[0]).await?.is_none(), "oldest record removed");
    assert!(q.get(&ids[49]).await?.is_some(), "newest kept");
    let mut conn = h.conn().conn;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("q:{ret}:job:*")
        .query_async(&mut conn)
        .await?;
    assert_eq!(keys.len(), 13, "only retained records are left");
    Ok(())
}

/// Sleeps for the number of milliseconds in the payload.
struct Sleeper;

impl Processor for Sleeper {
    async fn process(&self, job: ClaimedJob, _ctx: JobContext) -> Outcome {
        tokio::time::sleep(Duration::from_millis(job.payload.as_u64().unwrap_or(0))).await;
        Outcome::Completed(json!(null))
    }
}

#[tokio::test]
async fn shutdown_finishes_what_fits_in_the_grace_and_hands_back_the_rest() -> anyhow::Result<()> {
    let redis = RedisServer::start().await?;
    let q = queue(&handle(&redis.url()).await?, "drain")?;
    let quick = q
        .enqueue(NewJob::new("t", json!(300)).with_priority(Priority::High))
        .await?;
    let slow = q
        .enqueue(NewJob::new("t", json!(600_000)).with_priority(Priority::High))
        .await?;
    let queued = q.enqueue(NewJob::new("t", json!(0))).await?;
    let mut o = opts(2);
    o.grace = Duration::from_secs(3);
    o.lease = Duration::from_secs(600);
    let (stop, task) = spawn_consumer(&q, Arc::new(Sleeper), o);
    let both = eventually(Duration::from_secs(20), || async {
        q.stats().await.is_ok_and(|s| s.active == 2)
    })
    .await;
    assert!(both, "both slots never filled");
    let t = std::time::Instant::now();
    let _ = stop.send(());
    let report = task.await??;
    let took = t.elapsed();
    assert_eq!(report.handed_back, 1);
    // Handed back at the end of the grace, far before the 600 s lease.
    assert!(took < Duration::from_secs(60), "{took:?}");
    let state = |id: String| {
        let q = q.clone();
        async move {
            q.get(&id)
                .await
                .ok()
                .flatten()
                .map(|r| (r.state, r.attempts))
        }
    };
    assert_eq!(state(quick.id).await, Some((JobState::Completed, 1)));
    assert_eq!(state(slow.id.clone()).await, Some((JobState::Waiting, 0)));
    assert_eq!(state(queued.id).await, Some((JobState::Waiting, 0)));
    let s = q.stats().await?;
    assert_eq!((s.active, s.waiting), (0, 2));
    // Handed back to the front: the next claim takes the interrupted job first.
    let Claim::Jobs(next) = q.claim("w", 1, Duration::from_secs(5)).await? else {
        anyhow::bail!("nothing to claim");
    };
    assert_eq!(next[0].id, slow.id);
    Ok(())
}

#[tokio::test]
async fn a_rate_limit_caps_starts_per_window_for_every_worker() -> anyhow::Result<()> {
    let redis = RedisServer::start().await?;
    let h = handle(&redis.url()).await?;
    let q = queue(&h, "rate")?;
    let other_worker = queue(&h, "rate")?;
    let limit = RateLimit {
        max: 3,
        window: Duration::from_secs(4),
    };
    q.set_rate_limit(Some(limit)).await?;
    assert_eq!(other_worker.rate_limit().await?, Some(limit));
    for i in 0..10 {
        q.enqueue(NewJob::new("t", json!(i))).await?;
    }
    let Claim::Jobs(a) = q.claim("a", 2, Duration::from_secs(5)).await? else {
        anyhow::bail!("first claim limited");
    };
    let Claim::Jobs(b) = other_worker.claim("b", 10, Duration::from_secs(5)).await? else {
        anyhow::bail!("second claim limited");
    };
    assert_eq!((a.len(), b.len()), (2, 1), "3 per window across both");
    match q.claim("a", 10, Duration::from_secs(5)).await? {
        Claim::RateLimited { retry_after } => {
            assert!(retry_after <= Duration::from_secs(4), "{retry_after:?}")
        }
        other => anyhow::bail!("not limited: {other:?}"),
    }
    tokio::time::sleep(Duration::from_millis(4200)).await;
    let Claim::Jobs(c) = q.claim("a", 10, Duration::from_secs(5)).await? else {
        anyhow::bail!("window did not reopen");
    };
    assert_eq!(c.len(), 3);
    q.set_rate_limit(None).await?;
    let Claim::Jobs(d) = q.claim("a", 10, Duration::from_secs(5)).await? else {
        anyhow::bail!("limit not removed");
    };
    assert_eq!(d.len(), 4);
    Ok(())
}

#[tokio::test]
async fn durable_enqueue_without_replicas_fails_clearly() -> anyhow::Result<()> {
    let redis = RedisServer::start().await?;
    let q = Queue::new(
        handle(&redis.url()).await?,
        QueueName::new("durable")?,
        QueueConfig {
            durability: Durability {
                replicas: 1,
                timeout: Duration::from_millis(100),
                lanes: 1,
            },
            ..Default::default()
        },
    );
    let err = q
        .enqueue(NewJob::new("t", json!(1)).with_id("j1"))
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("enqueue claimed durability without replicas"))?;
    match &err {
        QueueError::NotDurable {
            ids, acked, wanted, ..
        } => {
            assert_eq!((*acked, *wanted), (0, 1));
            assert_eq!(ids, &["j1"], "names the jobs to retry");
        }
        other => anyhow::bail!("wrong error: {other}"),
    }
    assert!(err.to_string().contains("0 of 1 replica"), "{err}");
    Ok(())
}

#[tokio::test]
async fn an_abandoned_durable_enqueue_still_answers_the_others_in_its_batch() -> anyhow::Result<()>
{
    // No replica, so every WAIT blocks for its whole timeout: enqueues pile up behind the one
    // lane, and the first (which sends from its own task) is dropped while it waits.
    let redis = RedisServer::start().await?;
    let q = Queue::new(
        handle(&redis.url()).await?,
        QueueName::new("abandoned")?,
        QueueConfig {
            durability: Durability {
                replicas: 1,
                timeout: Duration::from_millis(300),
                lanes: 1,
            },
            ..Default::default()
        },
    );
    let leader = tokio::spawn({
        let q = q.clone();
        async move { q.enqueue(NewJob::new("t", json!(0)).with_id("lead")).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut others = Vec::new();
    for i in 0..3 {
        let q = q.clone();
        others.push(tokio::spawn(async move {
            q.enqueue(NewJob::new("t", json!(i)).with_id(format!("o{i}")))
                .await
        }));
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    leader.abort();
    // A liveness bound, not a speed check: without the hand-over they would wait forever.
    let bound = Duration::from_secs(20);
    for other in others {
        let r = tokio::time::timeout(bound, other).await??;
        assert!(matches!(r, Err(QueueError::NotDurable { .. })), "{r:?}");
    }
    // The lane was freed: a later enqueue is sent and answered too.
    let r = tokio::time::timeout(bound, q.enqueue(NewJob::new("t", json!(9)))).await?;
    assert!(matches!(r, Err(QueueError::NotDurable { .. })), "{r:?}");
    // Everything sent was written, the abandoned one included.
    let s = q.stats().await?;
    assert_eq!(s.waiting, 5);
    Ok(())
}

#[tokio::test]
async fn stats_report_depth_and_the_oldest_ready_job() -> anyhow::Result<()> {
    let redis = RedisServer::start().await?;
    let q = queue(&handle(&redis.url()).await?, "stats")?;
    q.enqueue(NewJob::new("t", json!(1)).with_priority(Priority::Low))
        .await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    q.enqueue(NewJob::new("t", json!(2)).with_priority(Priority::Critical))
        .await?;
    q.enqueue(NewJob::new("t", json!(3)).with_delay(Duration::from_secs(60)))
        .await?;
    let s = q.stats().await?;
    assert_eq!(s.waiting_by_priority, [1, 0, 0, 1]);
    assert_eq!((s.waiting, s.delayed, s.active), (2, 1, 0));
    let age = s
        .oldest_waiting_age
        .ok_or_else(|| anyhow::anyhow!("no age"))?;
    assert!(
        age >= Duration::from_millis(300),
        "the low-priority job is the oldest: {age:?}"
    );
    Ok(())
}

#[tokio::test]
async fn invalid_jobs_are_refused_and_nothing_is_enqueued() -> anyhow::Result<()> {
    let redis = RedisServer::start().await?;
    let q = queue(&handle(&redis.url()).await?, "invalid")?;
    let big = "x".repeat(platform::queue::enqueue::MAX_PAYLOAD_BYTES + 1);
    let bad = [
        NewJob::new("t", json!(big)),
        NewJob::new("", json!(1)),
        NewJob::new("t", json!(1)).with_traceparent("not-a-traceparent"),
        NewJob::new("t", json!(1)).with_max_attempts(0),
        NewJob::new("t", json!(1)).with_id("has space"),
        NewJob::new("t", json!(1)).with_owner(""),
        NewJob::new("t", json!(1))
            .with_owner("o".repeat(platform::queue::job::MAX_OWNER_BYTES + 1)),
    ];
    for job in bad {
        let err = q.enqueue(job.clone()).await.err();
        assert!(
            matches!(err, Some(QueueError::InvalidJob(_))),
            "{job:?} gave {err:?}"
        );
    }
    // A batch with one bad job enqueues none of it.
    let batch = vec![NewJob::new("t", json!(1)), NewJob::new("", json!(2))];
    assert!(q.enqueue_many(batch).await.is_err());
    let s = q.stats().await?;
    assert_eq!((s.waiting, s.delayed), (0, 0));
    Ok(())
}

#[tokio::test]
async fn completing_claims_the_next_job_in_the_same_call() -> anyhow::Result<()> {
    let redis = RedisServer::start().await?;
    let q = queue(&handle(&redis.url()).await?, "chain")?;
    for id in ["a", "b", "c"] {
        q.enqueue(NewJob::new("t", json!(id)).with_id(id)).await?;
    }
    let lease = Duration::from_secs(5);
    let Claim::Jobs(mut first) = q.claim("w", 1, lease).await? else {
        anyhow::bail!("nothing claimed");
    };
    let a = first.remove(0);
    let (acked, next) = q.complete_and_claim(&a, &json!(1), "w", 1, lease).await?;
    assert!(acked);
    let Claim::Jobs(mut next) = next else {
        anyhow::bail!("no next job: {next:?}");
    };
    let b = next.remove(0);
    assert_eq!((b.id.as_str(), b.attempt), ("b", 1));
    // A stale completion is refused, but the claim still happens.
    let (acked, next) = q.complete_and_claim(&a, &json!(2), "w", 1, lease).await?;
    assert!(acked, "re-acking the same attempt is idempotent");
    assert!(matches!(next, Claim::Jobs(ref j) if j[0].id == "c"));
    let stale = ClaimedJob {
        attempt: 7,
        ..b.clone()
    };
    let (acked, next) = q
        .complete_and_claim(&stale, &json!(3), "w", 1, lease)
        .await?;
    assert!(!acked);
    assert!(matches!(next, Claim::Empty { next_due: None }));
    let rec = q.get("b").await?.ok_or_else(|| anyhow::anyhow!("gone"))?;
    assert_eq!(rec.state, JobState::Active, "stale ack did not complete it");
    assert_eq!(q.get("a").await?.and_then(|r| r.result), Some(json!(1)));
    Ok(())
}
