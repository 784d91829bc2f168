//! `worker run`: one consumer per queue sharing a Redis connection, the admin port, and the
//! SIGTERM drain (readiness goes false, consumers stop claiming, finish within the grace period
//! and hand the rest back).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use firestore::FirestoreDb;
use platform::config::StorageArgs;
use platform::queue::{
    ConnectionOptions, Consumer, ConsumerOptions, Durability, Queue, QueueConfig, QueueMetrics,
    QueueName, RedisHandle, RedisTarget,
};
use platform::startup::{Dependency, FIRESTORE, REDIS, Waiting, connect_with_retry};
use tokio::sync::watch;

use crate::admin::{AdminState, router};
use crate::dispatch::Dispatcher;
use crate::handlers::{Registry, basic, files, webhook};

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Queues to consume.
    #[arg(
        long = "queue",
        env = "WORKER_QUEUES",
        value_delimiter = ',',
        default_value = "jobs"
    )]
    queues: Vec<String>,
    /// Jobs run at once, per queue.
    #[arg(long, env = "WORKER_CONCURRENCY", default_value_t = 8)]
    concurrency: usize,
    /// Lease per running job; renewed every third of it.
    #[arg(long, env = "WORKER_LEASE_MS", default_value_t = 30_000)]
    lease_ms: u64,
    /// On SIGTERM, how long running jobs may take before they are handed back.
    #[arg(long, env = "WORKER_GRACE_MS", default_value_t = 20_000)]
    grace_ms: u64,
    #[arg(long, env = "WORKER_ADMIN_PORT", default_value_t = 9090)]
    admin_port: u16,
    #[arg(long, env = "WORKER_ADMIN_ADDR", default_value = "0.0.0.0")]
    admin_addr: std::net::IpAddr,
    /// Shown in job records; defaults to the host name and pid.
    #[arg(long, env = "WORKER_ID")]
    worker_id: Option<String>,
    /// HMAC key for `webhook.deliver` signatures (the handler is off without it).
    #[arg(long, env = "WEBHOOK_SIGNING_SECRET", hide_env_values = true)]
    webhook_secret: Option<String>,
    #[arg(long, env = "WEBHOOK_TIMEOUT_MS", default_value_t = 10_000)]
    webhook_timeout_ms: u64,
    /// Project whose Firestore receives job outcomes (`jobs/{id}`); none recorded without it.
    #[arg(long, env = "GOOGLE_CLOUD_PROJECT")]
    firestore_project: Option<String>,
    #[arg(long, env = "FIRESTORE_DATABASE_ID", default_value = "(default)")]
    firestore_database: String,
    #[arg(long, env = "FIRESTORE_EMULATOR_HOST")]
    firestore_emulator_host: Option<String>,
    /// The bucket `file.finalize` checks uploads in (the handler is off without it; it also
    /// needs GOOGLE_CLOUD_PROJECT for the file records).
    #[command(flatten)]
    storage: StorageArgs,
}

/// The handlers this worker knows. Teams register their job types here. `firestore` is the
/// database of job outcomes and file records, when configured.
pub fn registry(args: &RunArgs, firestore: Option<&FirestoreDb>) -> anyhow::Result<Registry> {
    let mut r = Registry::default();
    r.register("noop", basic::Noop)
        .register("sleep", basic::Sleep);
    if let Some(secret) = &args.webhook_secret {
        r.register(
            "webhook.deliver",
            webhook::Webhook::new(
                secret.as_bytes(),
                Duration::from_millis(args.webhook_timeout_ms),
            )?,
        );
    }
    if args.storage.storage_bucket.is_some() {
        let db =
            firestore.context("STORAGE_BUCKET is set: file.finalize needs GOOGLE_CLOUD_PROJECT")?;
        r.register(
            platform::storage::files::FINALIZE_JOB,
            files::FileFinalize {
                store: platform::storage::file_store::FileStore::new(db.clone()),
                objects: platform::storage::objects::ObjectClient::from_config(
                    args.storage.storage_emulator_host.as_deref(),
                )
                .context("Cloud Storage client for file.finalize")?,
                max_size: args.storage.storage_max_upload_bytes,
            },
        );
    }
    Ok(r)
}

pub async fn run(target: RedisTarget, args: RunArgs) -> anyhow::Result<()> {
    let worker_id = args.worker_id.clone().unwrap_or_else(|| {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "worker".into());
        format!("{host}-{}", std::process::id())
    });
    // The admin port first: while Redis or Firestore are unreachable it answers /healthz and
    // a /readyz that names them, and the worker retries instead of exiting.
    let mut prom = prometheus_client::registry::Registry::default();
    let metrics = QueueMetrics::register(&mut prom);
    let shutting_down = Arc::new(AtomicBool::new(false));
    let awaited: &[Dependency] = if args.firestore_project.is_some() {
        &[REDIS, FIRESTORE]
    } else {
        &[REDIS]
    };
    let admin = AdminState {
        registry: Arc::new(prom),
        redis: Arc::default(),
        waiting: Arc::new(Waiting::new(awaited)),
        shutting_down: shutting_down.clone(),
    };
    let addr = SocketAddr::new(args.admin_addr, args.admin_port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the admin port {addr}"))?;
    tracing::info!(%addr, "admin port listening");
    let admin_router = router(admin.clone());
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, admin_router).await {
            tracing::error!(error = %e, "admin server stopped");
        }
    });

    let connected = async {
        let firestore = async {
            let project = args.firestore_project.as_deref()?;
            Some(
                connect_with_retry(FIRESTORE, &admin.waiting, || {
                    platform::firestore::connect(
                        project,
                        &args.firestore_database,
                        args.firestore_emulator_host.as_deref(),
                    )
                })
                .await,
            )
        };
        tokio::join!(
            connect_with_retry(REDIS, &admin.waiting, || RedisHandle::connect(
                target.clone(),
                ConnectionOptions::default()
            )),
            firestore
        )
    };
    let (handle, firestore) = tokio::select! {
        connected = connected => connected,
        signal = wait_for_signal() => {
            signal?;
            tracing::info!("stopped before Redis and Firestore were reachable");
            return Ok(());
        }
    };
    let registry = Arc::new(registry(&args, firestore.as_ref())?);

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut consumers = Vec::new();
    let mut queues = Vec::new();
    for name in &args.queues {
        let queue = Queue::new(
            handle.clone(),
            QueueName::new(name.as_str())?,
            QueueConfig {
                // A worker does not enqueue, so it needs no replica waits.
                durability: Durability {
                    replicas: 0,
                    ..Durability::default()
                },
                metrics: Some(metrics.clone()),
                ..QueueConfig::default()
            },
        );
        queues.push(queue.clone());
        let dispatcher = Dispatcher {
            queue: name.clone(),
            worker_id: worker_id.clone(),
            registry: registry.clone(),
            firestore: firestore.clone(),
        };
        let consumer = Consumer::new(
            queue,
            Arc::new(dispatcher),
            ConsumerOptions {
                worker_id: worker_id.clone(),
                concurrency: args.concurrency,
                lease: Duration::from_millis(args.lease_ms),
                grace: Duration::from_millis(args.grace_ms),
                max_idle_wait: Duration::from_secs(1),
            },
        );
        let mut rx = stop_rx.clone();
        consumers.push(tokio::spawn(consumer.run(async move {
            let _ = rx.wait_for(|stop| *stop).await;
        })));
    }
    tokio::spawn(sample_stats(queues, metrics));
    // Ready only once the consumers run.
    let _ = admin.redis.set(handle.clone());
    tracing::info!(
        %worker_id, queues = ?args.queues, handlers = ?registry.types(),
        concurrency = args.concurrency, "worker started"
    );

    wait_for_signal().await?;
    tracing::info!("shutting down: no new jobs, finishing in-flight ones");
    shutting_down.store(true, Ordering::SeqCst);
    let _ = stop_tx.send(true);
    for c in consumers {
        match c.await {
            Ok(Ok(report)) => tracing::info!(handed_back = report.handed_back, "consumer stopped"),
            Ok(Err(e)) => tracing::error!(error = %e, "consumer stopped with an error"),
            Err(e) => tracing::error!(error = %e, "consumer task failed"),
        }
    }
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        r = tokio::signal::ctrl_c() => r?,
    }
    Ok(())
}

/// Queue-wide gauges (depth, oldest job age) for alerts and autoscaling.
async fn sample_stats(queues: Vec<Queue>, metrics: QueueMetrics) {
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        tick.tick().await;
        for q in &queues {
            match q.stats().await {
                Ok(s) => metrics.observe_stats(q.name().as_str(), &s),
                Err(e) => tracing::warn!(queue = %q.name(), error = %e, "queue stats failed"),
            }
        }
    }
}
