//! Rust side of the queue benchmark, and its driver: starts a Redis master with two replicas
//! (testenv's Sentinel group, so `WAIT 1` has replicas to wait for), runs the BullMQ script on
//! the same master, then the same measurements with `platform::queue`, and writes both with the
//! ratios to docs/benchmarks/queue.json.
//!
//! Run: `cargo bench -p worker --bench queue` (needs `npm ci` in bench/queue first).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use platform::queue::{
    ClaimedJob, ConnectionOptions, Consumer, ConsumerOptions, Durability, JobContext, NewJob,
    Outcome, Processor, Queue, QueueConfig, QueueName, RedisHandle, RedisTarget, Settled,
};
use serde_json::{Value, json};
use tokio::sync::Notify;

#[derive(Clone, Copy)]
struct Sizes {
    single: usize,
    concurrent: usize,
    bulk: usize,
    c1: usize,
    c32: usize,
    latency: usize,
}

fn env_n(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros() as u64
}

async fn flush(handle: &RedisHandle) -> anyhow::Result<()> {
    let mut c = handle.conn().conn;
    let () = redis::cmd("FLUSHALL").query_async(&mut c).await?;
    Ok(())
}

fn queue(handle: &RedisHandle, name: &str, durable: bool) -> anyhow::Result<Queue> {
    queue_with_lanes(handle, name, durable, Durability::default().lanes)
}

fn queue_with_lanes(
    handle: &RedisHandle,
    name: &str,
    durable: bool,
    lanes: usize,
) -> anyhow::Result<Queue> {
    let durability = Durability {
        replicas: u32::from(durable),
        timeout: Duration::from_secs(2),
        lanes,
    };
    Ok(Queue::new(
        handle.clone(),
        QueueName::new(name)?,
        QueueConfig {
            durability,
            ..QueueConfig::default()
        },
    ))
}

async fn enqueue_single(h: &RedisHandle, n: usize, durable: bool) -> anyhow::Result<f64> {
    flush(h).await?;
    let q = queue(h, "single", durable)?;
    let t = Instant::now();
    for i in 0..n {
        q.enqueue(NewJob::new("noop", json!({ "i": i }))).await?;
    }
    Ok(n as f64 / t.elapsed().as_secs_f64())
}

/// Server-side cost per call of the commands an enqueue sends (`INFO commandstats`, since the
/// last `CONFIG RESETSTAT`): the script's own time, and how long `WAIT` blocked.
async fn server_cost(h: &RedisHandle) -> anyhow::Result<Value> {
    let mut c = h.conn().conn;
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut c)
        .await?;
    let mut out = serde_json::Map::new();
    for line in info.lines() {
        let Some((name, fields)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim_start_matches("cmdstat_");
        for field in fields.split(',') {
            if let Some((k, v)) = field.split_once('=')
                && matches!(k, "calls" | "usec_per_call")
                && let Ok(v) = v.parse::<f64>()
            {
                out.insert(format!("{name}_{k}"), json!(v));
            }
        }
    }
    Ok(Value::Object(out))
}

async fn reset_stats(h: &RedisHandle) -> anyhow::Result<()> {
    let mut c = h.conn().conn;
    let () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(&mut c)
        .await?;
    Ok(())
}

/// One at a time, durable, with the server's per-command cost.
async fn enqueue_single_costed(h: &RedisHandle, n: usize) -> anyhow::Result<(f64, Value)> {
    flush(h).await?;
    // The first call loads the script; keep it out of the counts.
    queue(h, "warm", true)?
        .enqueue(NewJob::new("noop", json!({})))
        .await?;
    reset_stats(h).await?;
    let rate = enqueue_single(h, n, true).await?;
    Ok((rate, server_cost(h).await?))
}

async fn enqueue_concurrent(
    h: &RedisHandle,
    n: usize,
    adders: usize,
    durable: bool,
) -> anyhow::Result<f64> {
    enqueue_concurrent_lanes(h, n, adders, durable, Durability::default().lanes).await
}

async fn enqueue_concurrent_lanes(
    h: &RedisHandle,
    n: usize,
    adders: usize,
    durable: bool,
    lanes: usize,
) -> anyhow::Result<f64> {
    flush(h).await?;
    let q = queue_with_lanes(h, "concurrent", durable, lanes)?;
    let per = n / adders;
    let t = Instant::now();
    let mut tasks = Vec::new();
    for a in 0..adders {
        let q = q.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..per {
                q.enqueue(NewJob::new("noop", json!({ "a": a, "i": i })))
                    .await?;
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok((per * adders) as f64 / t.elapsed().as_secs_f64())
}

async fn enqueue_bulk(
    h: &RedisHandle,
    n: usize,
    batch: usize,
    durable: bool,
) -> anyhow::Result<f64> {
    flush(h).await?;
    let q = queue(h, "bulk", durable)?;
    let t = Instant::now();
    for start in (0..n).step_by(batch) {
        let jobs = (start..(start + batch).min(n))
            .map(|i| NewJob::new("noop", json!({ "i": i })))
            .collect();
        q.enqueue_many(jobs).await?;
    }
    Ok(n as f64 / t.elapsed().as_secs_f64())
}

/// The raw floor, measured in the same run: `clients` connections of their own, each sending
/// `SET` (and, when `durable`, `WAIT 1` in the same write) and awaiting the reply, `n` in all.
async fn floor_set_wait(
    h: &RedisHandle,
    n: usize,
    clients: usize,
    durable: bool,
) -> anyhow::Result<f64> {
    flush(h).await?;
    let per = n / clients;
    let mut conns = Vec::new();
    for _ in 0..clients {
        conns.push(h.dedicated(Some(Duration::from_secs(5))).await?.conn);
    }
    let t = Instant::now();
    let mut tasks = Vec::new();
    for (c, mut conn) in conns.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            for i in 0..per {
                let mut pipe = redis::pipe();
                pipe.cmd("SET")
                    .arg(format!("floor:{c}:{i}"))
                    .arg("x")
                    .ignore();
                if durable {
                    pipe.cmd("WAIT").arg(1).arg(2000);
                }
                let _: Vec<redis::Value> = pipe.query_async(&mut conn).await?;
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok((per * clients) as f64 / t.elapsed().as_secs_f64())
}

/// Counts settled jobs; with `latency`, records enqueue-to-start from the payload's `t` (µs).
#[derive(Default)]
struct Counter {
    settled: AtomicUsize,
    target: usize,
    done: Notify,
    latency: std::sync::Mutex<Vec<f64>>,
}

impl Processor for Counter {
    async fn process(&self, job: ClaimedJob, _ctx: JobContext) -> Outcome {
        if let Some(t) = job.payload.get("t").and_then(Value::as_u64)
            && let Ok(mut l) = self.latency.lock()
        {
            l.push(now_us().saturating_sub(t) as f64 / 1000.0);
        }
        Outcome::Completed(Value::Null)
    }

    async fn settled(&self, _job: &ClaimedJob, _o: &Outcome, _s: &Settled) {
        if self.settled.fetch_add(1, Ordering::SeqCst) + 1 == self.target {
            self.done.notify_one();
        }
    }
}

fn consumer(q: &Queue, counter: Arc<Counter>, concurrency: usize) -> Consumer<Counter> {
    Consumer::new(
        q.clone(),
        counter,
        ConsumerOptions {
            worker_id: "bench".into(),
            concurrency,
            lease: Duration::from_secs(30),
            grace: Duration::from_secs(5),
            max_idle_wait: Duration::from_secs(1),
        },
    )
}

async fn processing(h: &RedisHandle, n: usize, concurrency: usize) -> anyhow::Result<f64> {
    flush(h).await?;
    let q = queue(h, "proc", false)?;
    for start in (0..n).step_by(1000) {
        let jobs = (start..(start + 1000).min(n))
            .map(|i| NewJob::new("noop", json!({ "i": i })))
            .collect();
        q.enqueue_many(jobs).await?;
    }
    let counter = Arc::new(Counter {
        target: n,
        ..Counter::default()
    });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let t = Instant::now();
    let c = consumer(&q, counter.clone(), concurrency);
    let task = tokio::spawn(c.run(async move {
        let _ = stopped.await;
    }));
    counter.done.notified().await;
    let rate = n as f64 / t.elapsed().as_secs_f64();
    let _ = stop.send(());
    task.await??;
    Ok(rate)
}

async fn latency(h: &RedisHandle, n: usize, concurrency: usize) -> anyhow::Result<Value> {
    flush(h).await?;
    // The product configuration: durable enqueue.
    let q = queue(h, "lat", true)?;
    let counter = Arc::new(Counter {
        target: n,
        ..Counter::default()
    });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let c = consumer(&q, counter.clone(), concurrency);
    let task = tokio::spawn(c.run(async move {
        let _ = stopped.await;
    }));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let done = counter.done.notified();
    for _ in 0..n {
        q.enqueue(NewJob::new("noop", json!({ "t": now_us() })))
            .await?;
    }
    done.await;
    let _ = stop.send(());
    task.await??;
    let mut s = counter
        .latency
        .lock()
        .map(|l| l.clone())
        .unwrap_or_default();
    s.sort_by(f64::total_cmp);
    let pct = |p: f64| s[((p / 100.0) * s.len() as f64) as usize % s.len().max(1)];
    Ok(json!({ "p50_ms": pct(50.0), "p99_ms": pct(99.0) }))
}

async fn rust_side(h: &RedisHandle, n: &Sizes) -> anyhow::Result<Value> {
    let (single, cost) = enqueue_single_costed(h, n.single).await?;
    Ok(json!({
        "impl": "platform::queue",
        "enqueue_single_per_s": single,
        "server_cost_single_durable": cost,
        "enqueue_concurrent8_per_s": enqueue_concurrent(h, n.concurrent, 8, true).await?,
        "enqueue_bulk1000_per_s": enqueue_bulk(h, n.bulk, 1000, true).await?,
        "non_durable": {
            "enqueue_single_per_s": enqueue_single(h, n.single, false).await?,
            "enqueue_concurrent8_per_s": enqueue_concurrent(h, n.concurrent, 8, false).await?,
            "enqueue_bulk1000_per_s": enqueue_bulk(h, n.bulk, 1000, false).await?,
        },
        // What Redis itself allows here, same run: SET (+ WAIT 1) one at a time and 8 at once.
        "floor": {
            "set_wait1_single_per_s": floor_set_wait(h, n.single, 1, true).await?,
            "set_wait1_concurrent8_per_s": floor_set_wait(h, n.concurrent, 8, true).await?,
            "set_single_per_s": floor_set_wait(h, n.single, 1, false).await?,
            "set_concurrent8_per_s": floor_set_wait(h, n.concurrent, 8, false).await?,
        },
        "durable_enqueue_concurrent8_by_lanes": {
            "1": enqueue_concurrent_lanes(h, n.concurrent, 8, true, 1).await?,
            "2": enqueue_concurrent_lanes(h, n.concurrent, 8, true, 2).await?,
            "4": enqueue_concurrent_lanes(h, n.concurrent, 8, true, 4).await?,
            "8": enqueue_concurrent_lanes(h, n.concurrent, 8, true, 8).await?,
        },
        "process_c1_per_s": processing(h, n.c1, 1).await?,
        "process_c32_per_s": processing(h, n.c32, 32).await?,
        "latency_c32": latency(h, n.latency, 32).await?,
    }))
}

/// `a / b` rounded to two places, for two numbers.
fn over(a: &Value, b: &Value) -> Value {
    match (a.as_f64(), b.as_f64()) {
        (Some(a), Some(b)) if b > 0.0 => json!((a / b * 100.0).round() / 100.0),
        _ => Value::Null,
    }
}

fn ratio(ours: &Value, theirs: &Value, path: &[&str]) -> Value {
    let get = |v: &Value| {
        path.iter()
            .try_fold(v, |v, k| v.get(k))
            .and_then(Value::as_f64)
    };
    match (get(ours), get(theirs)) {
        (Some(a), Some(b)) if b > 0.0 => json!((a / b * 100.0).round() / 100.0),
        _ => Value::Null,
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n = Sizes {
        single: env_n("N_SINGLE", 5000),
        concurrent: env_n("N_CONCURRENT", 20000),
        bulk: env_n("N_BULK", 50000),
        c1: env_n("N_C1", 5000),
        c32: env_n("N_C32", 50000),
        latency: env_n("N_LATENCY", 2000),
    };
    let root = testenv::repo_root();
    let bench_dir = root.join("bench/queue");
    let group = testenv::SentinelGroup::start().await?;
    let port = group
        .current_master()
        .await
        .context("the sentinels agree on no master")?;

    eprintln!("BullMQ on port {port}...");
    let out = std::process::Command::new("node")
        .arg(bench_dir.join("bullmq-bench.mjs"))
        .arg(port.to_string())
        .env("N_SINGLE", n.single.to_string())
        .env("N_CONCURRENT", n.concurrent.to_string())
        .env("N_BULK", n.bulk.to_string())
        .env("N_C1", n.c1.to_string())
        .env("N_C32", n.c32.to_string())
        .env("N_LATENCY", n.latency.to_string())
        .current_dir(&bench_dir)
        .output()
        .context("running node (run `npm ci` in bench/queue first)")?;
    anyhow::ensure!(
        out.status.success(),
        "BullMQ bench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bullmq: Value = serde_json::from_slice(&out.stdout)?;

    eprintln!("platform::queue on port {port}...");
    let handle = RedisHandle::connect(
        RedisTarget::url(format!("redis://127.0.0.1:{port}/")),
        ConnectionOptions::default(),
    )
    .await?;
    // How this benchmark measured until November 2026, kept for comparison: one at a time from
    // `main`'s own future, which runs on the thread that called `block_on` (not a runtime
    // worker), so every reply wakes it across threads.
    let from_main = enqueue_single(&handle, n.single, true).await?;
    // The rest on a runtime worker, as a server's request handlers run.
    let mut ours = tokio::spawn(async move { rust_side(&handle, &n).await }).await??;
    ours["enqueue_single_durable_from_block_on_thread_per_s"] = json!(from_main);

    let ratios = json!({
        "enqueue_single_durable_vs_bullmq": ratio(&ours, &bullmq, &["enqueue_single_per_s"]),
        "enqueue_concurrent8_durable_vs_bullmq": ratio(&ours, &bullmq, &["enqueue_concurrent8_per_s"]),
        "enqueue_bulk1000_durable_vs_bullmq": ratio(&ours, &bullmq, &["enqueue_bulk1000_per_s"]),
        "process_c1_vs_bullmq": ratio(&ours, &bullmq, &["process_c1_per_s"]),
        "process_c32_vs_bullmq": ratio(&ours, &bullmq, &["process_c32_per_s"]),
        "latency_p50_vs_bullmq": ratio(&ours, &bullmq, &["latency_c32", "p50_ms"]),
        "latency_p99_vs_bullmq": ratio(&ours, &bullmq, &["latency_c32", "p99_ms"]),
        "enqueue_single_not_durable_vs_bullmq": ratio(&ours["non_durable"], &bullmq, &["enqueue_single_per_s"]),
        "enqueue_concurrent8_not_durable_vs_bullmq": ratio(&ours["non_durable"], &bullmq, &["enqueue_concurrent8_per_s"]),
    });
    // Ours against the raw floor of the same run (SET + WAIT 1, one connection per client).
    let floor = &ours["floor"];
    let vs_floor = json!({
        "enqueue_single_durable_vs_set_wait1":
            over(&ours["enqueue_single_per_s"], &floor["set_wait1_single_per_s"]),
        "enqueue_concurrent8_durable_vs_set_wait1":
            over(&ours["enqueue_concurrent8_per_s"], &floor["set_wait1_concurrent8_per_s"]),
        "bullmq_single_vs_set": over(&bullmq["enqueue_single_per_s"], &floor["set_single_per_s"]),
    });
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let report = json!({
        "date": jiff::Timestamp::now().to_string(),
        "setup": {
            "redis": "redis-server 7.0 master + 2 replicas (testenv Sentinel group), loopback",
            "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            "loadavg_at_end": load.trim(),
            "durable": "platform::queue enqueues wait for 1 replica (WAIT 1, group commit); BullMQ does not wait",
            "handlers": "no-op; concurrency 1 and 32; 8 concurrent adders; bulk batches of 1000",
            "jobs": { "single": n.single, "concurrent": n.concurrent, "bulk": n.bulk,
                      "c1": n.c1, "c32": n.c32, "latency": n.latency },
        },
        "bullmq": bullmq,
        "platform_queue": ours,
        "ratios_ours_over_bullmq": ratios,
        "ratios_over_floor": vs_floor,
    });
    let path = root.join("docs/benchmarks/queue.json");
    std::fs::create_dir_all(root.join("docs/benchmarks"))?;
    std::fs::write(&path, serde_json::to_string_pretty(&report)? + "\n")?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    eprintln!("wrote {}", path.display());
    Ok(())
}
