//! Volume: 10,000 jobs over two workers (separate connections), each completed once.

mod queue_support;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use platform::queue::{Consumer, ConsumerOptions, NewJob};
use queue_support::{Recorder, eventually, handle, queue};
use serde_json::json;
use testenv::RedisServer;

#[tokio::test]
async fn ten_thousand_jobs_over_two_workers_each_complete_once() -> anyhow::Result<()> {
    const N: usize = 10_000;
    let redis = RedisServer::start().await?;
    let producer = queue(&handle(&redis.url()).await?, "load")?;

    let workers: Vec<Recorder> = vec![Recorder::default(), Recorder::default()];
    let mut stops = Vec::new();
    let mut tasks = Vec::new();
    for (i, w) in workers.iter().enumerate() {
        // Each worker has its own connection, as separate processes would.
        let q = queue(&handle(&redis.url()).await?, "load")?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let c = Consumer::new(
            q,
            Arc::new(w.clone()),
            ConsumerOptions {
                worker_id: format!("w{i}"),
                concurrency: 16,
                lease: Duration::from_secs(60),
                grace: Duration::from_secs(5),
                max_idle_wait: Duration::from_millis(500),
            },
        );
        tasks.push(tokio::spawn(c.run(async move {
            let _ = rx.await;
        })));
        stops.push(tx);
    }

    let started = Instant::now();
    let mut ids = Vec::with_capacity(N);
    for chunk in 0..N / 500 {
        let jobs = (0..500)
            .map(|i| NewJob::new("noop", json!({ "n": chunk * 500 + i })))
            .collect();
        for e in producer.enqueue_many(jobs).await? {
            assert!(e.created);
            ids.push(e.id);
        }
    }
    let all_done = eventually(Duration::from_secs(240), || async {
        producer
            .stats()
            .await
            .is_ok_and(|s| s.completed as usize == N)
    })
    .await;
    let took = started.elapsed();
    for s in stops {
        let _ = s.send(());
    }
    for t in tasks {
        assert_eq!(t.await??.handed_back, 0);
    }
    assert!(all_done, "not all completed: {:?}", producer.stats().await?);

    let per_worker: Vec<usize> = workers.iter().map(|w| w.runs().len()).collect();
    println!(
        "{N} jobs in {took:?} ({:.0} jobs/s), per worker {per_worker:?}",
        N as f64 / took.as_secs_f64()
    );
    assert!(per_worker.iter().all(|&n| n > 0), "both workers took jobs");
    let mut counts = workers[0].counts();
    for (id, n) in workers[1].counts() {
        *counts.entry(id).or_insert(0) += n;
    }
    let expected: HashSet<&String> = ids.iter().collect();
    assert_eq!(counts.len(), N);
    assert!(counts.keys().all(|id| expected.contains(id)));
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "ran more than once: {twice:?}");
    let s = producer.stats().await?;
    assert_eq!((s.waiting, s.active, s.delayed, s.dead), (0, 0, 0, 0));
    Ok(())
}
