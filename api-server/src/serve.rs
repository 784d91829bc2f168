//! `api-server serve`: connect, build the routers, serve both ports, drain on SIGTERM.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::ServeArgs;
use crate::files::{Files, FilesSetupError};
use crate::observability::Metrics;
use crate::redis::Redis;
use crate::state::AppState;
use crate::{routes, shutdown};

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    if let Some(host) = &args.auth.auth_emulator_host {
        tracing::warn!(%host,
            "FIREBASE_AUTH_EMULATOR_HOST is set: accepting UNSIGNED emulator tokens. Never in production.");
    }
    let metrics = Metrics::new();
    let endpoint = args.redis.endpoint()?;
    let redis = connect_redis(&endpoint, args.redis_timeout(), &metrics).await;
    let fs = &args.firestore;
    let db = platform::firestore::connect(
        &fs.project_id,
        &fs.firestore_database,
        fs.firestore_emulator_host.as_deref(),
    )
    .await?;
    let files = match Files::from_args(&args.files, db.clone(), metrics.clone()) {
        Ok(files) => files,
        // A bucket named without any way to sign (e.g. emulators for Firestore and Auth but
        // none for Storage): serve everything else; a key that is configured but broken is
        // still fatal below.
        Err(e @ FilesSetupError::NoSigner) => {
            tracing::error!(error = %e, "the Files API is off");
            None
        }
        Err(e) => return Err(e).context("setting up file storage"),
    };
    if files.is_none() {
        tracing::info!("file storage not configured: the Files API answers 503");
    }
    let state = AppState::with_files(&args, redis, db, metrics, files);

    let public = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let admin = TcpListener::bind(args.admin_listen)
        .await
        .with_context(|| format!("binding {}", args.admin_listen))?;
    tracing::info!(public = %public.local_addr()?, admin = %admin.local_addr()?, "listening");

    let (stop_tx, stop_rx) = watch::channel(false);
    let public_server = axum::serve(
        public,
        routes::public(state.clone()).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown::stopped(stop_rx.clone()));
    let admin_server = axum::serve(admin, routes::admin(state.clone()))
        .with_graceful_shutdown(shutdown::stopped(stop_rx.clone()));
    let public_task = tokio::spawn(async move { public_server.await });
    let admin_task = tokio::spawn(async move { admin_server.await });

    shutdown::drain_on_signal(
        state.clone(),
        Duration::from_secs(args.drain_seconds),
        stop_tx,
    )
    .await;
    let grace = Duration::from_secs(args.shutdown_grace_seconds);
    match tokio::time::timeout(grace, async { tokio::join!(public_task, admin_task) }).await {
        Ok((p, a)) => {
            p.context("public server task")?.context("public server")?;
            a.context("admin server task")?.context("admin server")?;
            tracing::info!("all requests finished; exiting");
        }
        Err(_) => tracing::warn!(
            grace_s = grace.as_secs(),
            "grace period over with requests still running; exiting"
        ),
    }
    Ok(())
}

/// Retries until Redis answers: a replica that starts before Redis should wait, not crash-loop.
async fn connect_redis(
    endpoint: &platform::config::RedisEndpoint,
    timeout: Duration,
    metrics: &Metrics,
) -> Redis {
    let mut pause = Duration::from_millis(200);
    loop {
        match Redis::connect(endpoint, timeout, metrics.clone()).await {
            Ok(r) => return r,
            Err(e) => {
                tracing::warn!(error = %e, retry_in_ms = pause.as_millis() as u64, "Redis not reachable yet");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
        }
    }
}
