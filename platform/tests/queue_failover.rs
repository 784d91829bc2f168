//! Against a real Sentinel group: the connection follows a failover, and no acknowledged job is
//! lost when the master is killed under load.

mod queue_support;

use std::time::{Duration, Instant};

use platform::queue::connection::RedisHandle;
use testenv::SentinelGroup;

async fn set_get(handle: &RedisHandle, key: &str) -> redis::RedisResult<String> {
    handle
        .run(|mut conn| async move {
            let () = redis::cmd("SET")
                .arg(key)
                .arg("v")
                .query_async(&mut conn)
                .await?;
            redis::cmd("GET").arg(key).query_async(&mut conn).await
        })
        .await
}

#[tokio::test]
async fn connection_follows_a_sentinel_failover() -> anyhow::Result<()> {
    let mut group = SentinelGroup::start().await?;
    let handle = queue_support::sentinel_handle(&group).await?;
    let before = handle.master_addr();
    assert_eq!(set_get(&handle, "a").await?, "v");

    let killed = group.kill_master().await?;
    assert!(before.contains(&killed.to_string()), "{before} vs {killed}");
    let started = Instant::now();
    // The same handle, no restart: the first call after the kill rides through the failover.
    assert_eq!(set_get(&handle, "b").await?, "v");
    let outage = started.elapsed();
    let after = handle.master_addr();
    println!("write outage through failover: {outage:?} ({before} -> {after})");
    assert_ne!(before, after);
    let new = group
        .wait_for_failover(killed, Duration::from_secs(60))
        .await?;
    assert!(
        after.contains(&new.to_string()),
        "{after} vs sentinel's {new}"
    );
    assert_eq!(set_get(&handle, "c").await?, "v");
    Ok(())
}

/// 5,000 jobs enqueued durably (WAIT for one replica) by 8 producers while two workers process
/// them; the master is killed midway. Every job whose enqueue was acknowledged must complete.
#[tokio::test]
async fn killing_the_master_under_load_loses_no_acknowledged_job() -> anyhow::Result<()> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use platform::queue::{
        Consumer, ConsumerOptions, Durability, JobState, NewJob, Queue, QueueConfig, QueueName,
    };
    use queue_support::{Recorder, eventually, sentinel_handle};

    const PRODUCERS: usize = 8;
    const PER_PRODUCER: usize = 625;
    let mut group = SentinelGroup::start().await?;
    let config = || QueueConfig {
        durability: Durability {
            replicas: 1,
            timeout: Duration::from_secs(2),
            lanes: 4,
        },
        ..QueueConfig::default()
    };
    let name = QueueName::new("failover")?;
    let producer = Queue::new(sentinel_handle(&group).await?, name.clone(), config());

    let recorder = Recorder::default();
    let mut stops = Vec::new();
    let mut workers = Vec::new();
    for i in 0..2 {
        let q = Queue::new(sentinel_handle(&group).await?, name.clone(), config());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let c = Consumer::new(
            q,
            Arc::new(recorder.clone()),
            ConsumerOptions {
                worker_id: format!("w{i}"),
                concurrency: 16,
                lease: Duration::from_secs(3),
                grace: Duration::from_secs(5),
                max_idle_wait: Duration::from_millis(500),
            },
        );
        workers.push(tokio::spawn(c.run(async move {
            let _ = rx.await;
        })));
        stops.push(tx);
    }

    let acked_count = Arc::new(AtomicUsize::new(0));
    let mut producers = Vec::new();
    for p in 0..PRODUCERS {
        let q = producer.clone();
        let acked_count = acked_count.clone();
        producers.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut errors = 0usize;
            for i in 0..PER_PRODUCER {
                let id = format!("p{p}-{i}");
                // Retrying with the same id is safe: the enqueue script skips existing ids.
                loop {
                    match q
                        .enqueue(NewJob::new("noop", serde_json::json!(i)).with_id(&id))
                        .await
                    {
                        Ok(_) => {
                            acked.push((id.clone(), Instant::now()));
                            acked_count.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                        Err(_) => {
                            errors += 1;
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                }
            }
            (acked, errors)
        }));
    }

    // Kill the master once a fifth of the jobs are in.
    let reached = eventually(Duration::from_secs(120), || async {
        acked_count.load(Ordering::Relaxed) >= PRODUCERS * PER_PRODUCER / 5
    })
    .await;
    assert!(reached, "producers stalled before the kill");
    let killed_at = Instant::now();
    let old = group.kill_master().await?;

    let mut acked = Vec::new();
    let mut errors = 0;
    for p in producers {
        let (a, e) = p.await?;
        acked.extend(a);
        errors += e;
    }
    let new = group
        .wait_for_failover(old, Duration::from_secs(60))
        .await?;
    assert_eq!(acked.len(), PRODUCERS * PER_PRODUCER);

    // Write outage: the longest pause between acknowledgements around the kill.
    let mut times: Vec<Instant> = acked.iter().map(|(_, t)| *t).collect();
    times.sort();
    let outage = times
        .windows(2)
        .filter(|w| w[1] >= killed_at)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default();
    let first_after = times
        .iter()
        .find(|t| **t > killed_at)
        .map(|t| *t - killed_at);
    println!(
        "failover {old} -> {new}: longest enqueue gap {outage:?}, first ack after kill {first_after:?}, \
         {errors} enqueue errors retried"
    );

    let ids: Vec<String> = acked.iter().map(|(id, _)| id.clone()).collect();
    let all_completed = eventually(Duration::from_secs(180), || async {
        producer
            .records(&ids)
            .await
            .is_ok_and(|r| r.len() == ids.len() && r.iter().all(|r| r.state == JobState::Completed))
    })
    .await;
    for s in stops {
        let _ = s.send(());
    }
    for w in workers {
        w.await??;
    }
    let records = producer.records(&ids).await?;
    let missing = ids.len() - records.len();
    let not_done = records
        .iter()
        .filter(|r| r.state != JobState::Completed)
        .count();
    assert!(
        all_completed,
        "{missing} acknowledged jobs lost, {not_done} not completed"
    );
    let counts = recorder.counts();
    assert!(
        ids.iter().all(|id| counts.contains_key(id)),
        "every acked job ran"
    );
    let reruns = counts.values().filter(|n| **n > 1).count();
    println!("{reruns} jobs ran more than once (lease expiry after the failover)");
    Ok(())
}

/// Stops a process until dropped (so a failing test does not leave it stopped).
struct Stopped(nix::unistd::Pid);

impl Stopped {
    fn new(pid: i32) -> anyhow::Result<Self> {
        let pid = nix::unistd::Pid::from_raw(pid);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP)?;
        Ok(Self(pid))
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(self.0, nix::sys::signal::Signal::SIGCONT);
    }
}

#[tokio::test]
async fn a_repeated_enqueue_is_acknowledged_only_once_a_replica_holds_the_job() -> anyhow::Result<()>
{
    use platform::queue::{Durability, NewJob, Queue, QueueConfig, QueueError, QueueName};
    use queue_support::{eventually, handle};
    use serde_json::json;

    // A master and one replica of it.
    let master = testenv::RedisServer::start().await?;
    let replica = testenv::RedisServer::start().await?;
    let mut r = handle(&replica.url()).await?.conn().conn;
    let () = redis::cmd("REPLICAOF")
        .arg("127.0.0.1")
        .arg(master.port())
        .query_async(&mut r)
        .await?;
    let info: String = redis::cmd("INFO").arg("server").query_async(&mut r).await?;
    let pid: i32 = info
        .lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .ok_or_else(|| anyhow::anyhow!("no process_id in INFO"))?
        .trim()
        .parse()?;
    let h = handle(&master.url()).await?;
    let m = h.conn().conn;
    let synced = eventually(Duration::from_secs(10), || {
        let mut m = m.clone();
        async move {
            let info: String = redis::cmd("INFO")
                .arg("replication")
                .query_async(&mut m)
                .await
                .unwrap_or_default();
            info.contains("state=online")
        }
    })
    .await;
    assert!(synced, "the replica never came online");

    // Two publishers, each with its own lane connection.
    let durable = |ms| QueueConfig {
        durability: Durability {
            replicas: 1,
            timeout: Duration::from_millis(ms),
            lanes: 1,
        },
        ..QueueConfig::default()
    };
    let name = QueueName::new("repeat")?;
    let first = Queue::new(h.clone(), name.clone(), durable(300));
    let second = Queue::new(h.clone(), name.clone(), durable(300));
    let keyed = || NewJob::new("t", json!(1)).with_idempotency_key("k");
    let by_id = || NewJob::new("t", json!(2)).with_id("job-x");
    assert!(first.enqueue(NewJob::new("t", json!(0))).await?.created);

    // The replica stops acknowledging: the first enqueue is written but not durable ...
    let stopped = Stopped::new(pid)?;
    for job in [keyed(), by_id()] {
        let r = first.enqueue(job.clone()).await;
        assert!(matches!(r, Err(QueueError::NotDurable { .. })), "{r:?}");
        // ... and so is its repeat through another connection, which finds the job written.
        let r = second.enqueue(job).await;
        assert!(matches!(r, Err(QueueError::NotDurable { .. })), "{r:?}");
    }
    drop(stopped);
    let later = Queue::new(h.clone(), name, durable(10_000));
    let again = later.enqueue(keyed()).await?;
    assert!(!again.created);
    let again = later.enqueue(by_id()).await?;
    assert_eq!((again.id.as_str(), again.created), ("job-x", false));
    Ok(())
}
