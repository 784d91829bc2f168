//! The worker binary as a process, against a real Redis server (and the Firestore emulator for
//! outcome records).

mod support;

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use platform::queue::{JobState, NewJob};
use serde_json::json;
use support::{WorkerProcess, queue, wait_record};
use testenv::RedisServer;

#[tokio::test]
async fn a_killed_workers_job_is_completed_by_another_after_the_lease() -> anyhow::Result<()> {
    let redis = RedisServer::start().await?;
    let url = redis.url();
    let q = queue(&url, "jobs").await?;
    let lease = ["--lease-ms", "2000"];
    let mut a = WorkerProcess::start("worker-a", &url, &lease, &[]).await?;
    // Long enough that worker-a cannot finish it before worker-b is up and a is killed.
    let job = q.enqueue(NewJob::new("sleep", json!({"ms": 8000}))).await?;
    wait_record(&q, &job.id, Duration::from_secs(30), |r| {
        r.state == JobState::Active && r.worker.as_deref() == Some("worker-a")
    })
    .await?;
    let b = WorkerProcess::start("worker-b", &url, &lease, &[]).await?;

    a.signal(Signal::SIGKILL)?;
    a.wait_exit(Duration::from_secs(10)).await?;
    let killed = Instant::now();
    let rec = wait_record(&q, &job.id, Duration::from_secs(60), |r| {
        r.state == JobState::Completed
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}\nworker-b log:\n{}", b.log()))?;
    println!(
        "completed by {:?} {:?} after the kill",
        rec.worker,
        killed.elapsed()
    );
    assert_eq!(rec.worker.as_deref(), Some("worker-b"));
    assert_eq!(rec.attempts, 2);
    assert!(
        rec.last_error
            .as_deref()
            .is_some_and(|e| e.contains("lease expired")),
        "{rec:?}"
    );
    assert_eq!(rec.result, Some(json!({"slept_ms": 8000})));
    Ok(())
}

#[tokio::test]
async fn sigterm_finishes_in_flight_work_and_hands_back_the_rest_at_once() -> anyhow::Result<()> {
    let redis = RedisServer::start().await?;
    let url = redis.url();
    let q = queue(&url, "jobs").await?;
    let mut w = WorkerProcess::start(
        "draining",
        &url,
        &[
            "--concurrency",
            "2",
            "--grace-ms",
            "3000",
            "--lease-ms",
            "600000",
        ],
        &[],
    )
    .await?;
    let short = q.enqueue(NewJob::new("sleep", json!({"ms": 300}))).await?;
    let long = q
        .enqueue(NewJob::new("sleep", json!({"ms": 600000})))
        .await?;
    for id in [&short.id, &long.id] {
        wait_record(&q, id, Duration::from_secs(30), |r| {
            r.state != JobState::Waiting
        })
        .await?;
    }
    let t = Instant::now();
    w.signal(Signal::SIGTERM)?;
    let status = w.wait_exit(Duration::from_secs(60)).await?;
    let took = t.elapsed();
    assert!(status.success(), "{status}\n{}", w.log());
    // Exits at the end of the grace, not after the 600 s lease.
    assert!(took < Duration::from_secs(30), "{took:?}");
    let short = q
        .get(&short.id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("gone"))?;
    assert_eq!(
        short.state,
        JobState::Completed,
        "finished within the grace"
    );
    let long = q
        .get(&long.id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("gone"))?;
    assert_eq!(
        (long.state, long.attempts),
        (JobState::Waiting, 0),
        "handed back"
    );
    assert!(w.log().contains("handed unfinished jobs back"));
    Ok(())
}

#[tokio::test]
async fn operator_commands_show_stats_list_and_redrive_dead_letters() -> anyhow::Result<()> {
    let redis = RedisServer::start().await?;
    let url = redis.url();
    let q = queue(&url, "ops").await?;
    let dead = q.enqueue(NewJob::new("gone", json!({"x": 1}))).await?;
    q.enqueue(NewJob::new("noop", json!(null)).with_delay(Duration::from_secs(600)))
        .await?;
    let platform::queue::Claim::Jobs(jobs) = q.claim("t", 1, Duration::from_secs(5)).await? else {
        anyhow::bail!("nothing claimed");
    };
    q.fail(&jobs[0], "unknown job type", false).await?;

    let cli = |args: &[&str]| -> anyhow::Result<String> {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_worker"))
            .env_remove("REDIS_SENTINELS")
            .env_remove("WORKER_QUEUES")
            .env("REDIS_URL", &url)
            .env("RUST_LOG", "warn")
            .args(args)
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8(out.stdout)?)
    };
    let stats: serde_json::Value =
        serde_json::from_str(cli(&["queue", "stats", "--queue", "ops"])?.trim())?;
    assert_eq!(stats["dead"], 1);
    assert_eq!(stats["delayed"], 1);
    assert_eq!(stats["waiting"], 0);

    assert_eq!(stats["rateLimit"], serde_json::Value::Null);
    cli(&[
        "queue",
        "rate-limit",
        "--queue",
        "ops",
        "--max",
        "50",
        "--window-ms",
        "2000",
    ])?;
    assert_eq!(
        q.rate_limit().await?,
        Some(platform::queue::RateLimit {
            max: 50,
            window: Duration::from_secs(2)
        })
    );
    let stats: serde_json::Value =
        serde_json::from_str(cli(&["queue", "stats", "--queue", "ops"])?.trim())?;
    assert_eq!(stats["rateLimit"], json!({"max": 50, "windowMs": 2000}));
    cli(&["queue", "rate-limit", "--queue", "ops", "--off"])?;
    assert_eq!(q.rate_limit().await?, None);

    let list = cli(&["dlq", "list", "--queue", "ops"])?;
    let first: serde_json::Value = serde_json::from_str(list.lines().next().unwrap_or(""))?;
    assert_eq!(first["id"], dead.id.as_str());
    assert_eq!(first["lastError"], "unknown job type");

    let redriven: serde_json::Value =
        serde_json::from_str(cli(&["dlq", "redrive", "--queue", "ops", "--id", &dead.id])?.trim())?;
    assert_eq!(redriven["redriven"], 1);
    let rec = q
        .get(&dead.id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("gone"))?;
    assert_eq!((rec.state, rec.attempts), (JobState::Waiting, 0));
    assert!(cli(&["dlq", "list", "--queue", "ops"])?.trim().is_empty());
    Ok(())
}

#[tokio::test]
async fn a_worker_on_sentinels_keeps_working_through_a_failover() -> anyhow::Result<()> {
    use platform::queue::{ConnectionOptions, Queue, QueueConfig, QueueName, RedisHandle};

    // Password-protected data nodes, as the operator deploys them (sentinels without one).
    const PASSWORD: &str = "worker-test-pw-7a2d";
    let mut group = testenv::SentinelGroup::start_with_password(PASSWORD).await?;
    let sentinels = group.sentinel_urls().join(",");
    let target = platform::queue::RedisTarget::Sentinel {
        sentinels: group.sentinel_urls(),
        master_name: group.master_name().to_string(),
        auth: platform::queue::RedisAuth::password(PASSWORD),
    };
    // The publisher waits for a replica, as the api-server does.
    let q = Queue::new(
        RedisHandle::connect(target, ConnectionOptions::default()).await?,
        QueueName::new("jobs")?,
        QueueConfig::default(),
    );
    let w = WorkerProcess::start(
        "sentinel-worker",
        "",
        &[],
        &[
            ("REDIS_SENTINELS", &sentinels),
            ("REDIS_MASTER_NAME", group.master_name()),
            ("REDIS_PASSWORD", PASSWORD),
        ],
    )
    .await?;
    let before = q.enqueue(NewJob::new("noop", json!(null))).await?;
    wait_record(&q, &before.id, Duration::from_secs(30), |r| {
        r.state == JobState::Completed
    })
    .await?;

    let old = group.kill_master().await?;
    let after = q.enqueue(NewJob::new("noop", json!(null))).await?;
    let rec = wait_record(&q, &after.id, Duration::from_secs(60), |r| {
        r.state == JobState::Completed
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", w.log()))?;
    assert_eq!(rec.worker.as_deref(), Some("sentinel-worker"));
    let new = group
        .wait_for_failover(old, Duration::from_secs(60))
        .await?;
    assert_ne!(new, old);
    assert!(w.log().contains("redis master re-resolved"), "{}", w.log());
    assert!(
        !w.log().contains(PASSWORD),
        "the Redis password is in the log"
    );
    Ok(())
}

#[tokio::test]
async fn starts_unready_while_redis_is_unreachable_and_works_once_it_answers() -> anyhow::Result<()>
{
    let port = testenv::free_port();
    let address = format!("redis://127.0.0.1:{port}/");
    let mut w = WorkerProcess::spawn("late-redis", &address, &[], &[])?;
    let http = reqwest::Client::new();

    // Alive, not ready, and says that Redis is what it waits for (it did not exit).
    let deadline = Instant::now() + Duration::from_secs(30);
    let why = loop {
        if let Ok(r) = http.get(w.url("/readyz")).send().await {
            assert_eq!(r.status().as_u16(), 503);
            break r.text().await?;
        }
        assert!(Instant::now() < deadline, "no admin port:\n{}", w.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(why.contains("redis"), "{why}");
    let health = http.get(w.url("/healthz")).send().await?;
    assert_eq!(health.status().as_u16(), 200);
    assert!(w.child.try_wait()?.is_none(), "worker exited:\n{}", w.log());

    // Redis appears at that address: the worker becomes ready and runs jobs.
    let redis = RedisServer::start().await?;
    let _forward = testenv::PortForward::start(port, format!("127.0.0.1:{}", redis.port())).await?;
    w.wait_ready(Duration::from_secs(30)).await?;
    let q = queue(&redis.url(), "jobs").await?;
    let job = q.enqueue(NewJob::new("noop", json!({}))).await?;
    wait_record(&q, &job.id, Duration::from_secs(15), |r| {
        r.state == JobState::Completed
    })
    .await?;
    assert!(w.log().contains("Redis not reachable yet"), "{}", w.log());
    Ok(())
}
