//! `api-server serve`: bind, connect (not ready until Redis and Firestore answer), build the
//! routers, serve both ports, drain on SIGTERM.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context as _;
use axum::extract::Request;
use axum::response::IntoResponse as _;
use axum::{Json, Router};
use platform::startup::{FIRESTORE, REDIS, Waiting, connect_with_retry};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::ServiceExt as _;

use crate::config::ServeArgs;
use crate::files::{FilesConfig, FilesSetupError};
use crate::observability::Metrics;
use crate::problem::Problem;
use crate::redis::Redis;
use crate::state::AppState;
use crate::{lanes, routes, shutdown};

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    if let Some(host) = &args.auth.auth_emulator_host {
        tracing::warn!(%host,
            "FIREBASE_AUTH_EMULATOR_HOST is set: accepting UNSIGNED emulator tokens. Never in production.");
    }
    let metrics = Metrics::new();
    let endpoint = args.redis.endpoint()?;
    let files = match FilesConfig::from_args(&args.files) {
        Ok(files) => files,
        // A bucket named without any way to sign (e.g. emulators for Firestore and Auth but
        // none for Storage): serve everything else. A key that is configured but broken stops
        // the server here, before it binds anything.
        Err(e @ FilesSetupError::NoSigner) => {
            tracing::error!(error = %e, "the Files API is off");
            None
        }
        Err(e) => return Err(e).context("setting up file storage"),
    };
    if files.is_none() {
        tracing::info!("file storage not configured: the Files API answers 503");
    }

    // Both ports are bound first: the admin port answers /healthz (alive) and /readyz (not
    // ready, and why) while Redis and Firestore are still unreachable, so a replica that starts
    // before them waits instead of crash-looping. The public port accepts once they answer.
    let public = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let admin = TcpListener::bind(args.admin_listen)
        .await
        .with_context(|| format!("binding {}", args.admin_listen))?;
    tracing::info!(public = %public.local_addr()?, admin = %admin.local_addr()?, "listening");

    let (stop_tx, stop_rx) = watch::channel(false);
    let startup = Arc::new(Startup::new(metrics.clone()));
    let admin_server = axum::serve(admin, startup.admin_router())
        .with_graceful_shutdown(shutdown::stopped(stop_rx.clone()));
    let admin_task = tokio::spawn(async move { admin_server.await });

    let connected = async {
        let fs = &args.firestore;
        tokio::join!(
            connect_with_retry(REDIS, &startup.waiting, || {
                Redis::connect(&endpoint, args.redis_timeout(), metrics.clone())
            }),
            // The client connects when it is built, so an unreachable Firestore fails the build.
            connect_with_retry(FIRESTORE, &startup.waiting, || {
                platform::firestore::connect(
                    &fs.project_id,
                    &fs.firestore_database,
                    fs.firestore_emulator_host.as_deref(),
                )
            }),
        )
    };
    let (redis, db) = tokio::select! {
        connected = connected => connected,
        name = shutdown::signal() => {
            tracing::info!(signal = name, "stopped before Redis and Firestore were reachable");
            let _ = stop_tx.send(true);
            admin_task.await.context("admin server task")?.context("admin server")?;
            return Ok(());
        }
    };
    let files = files.map(|config| config.with_store(db.clone(), metrics.clone()));
    let lanes = lanes::count(args.threads);
    let state = AppState::with_files(&args, redis.with_lanes(lanes), db, metrics, files);
    startup.ready(routes::admin(state.clone()));
    tracing::info!(threads = lanes, "Redis and Firestore reachable: serving");

    let mut public_task = tokio::spawn(lanes::serve(
        public,
        {
            let state = state.clone();
            move || routes::public(state.for_lane())
        },
        lanes,
        // Half the shortest timeout a request's calls start (see `lanes::keep_a_timer_due`).
        args.redis_timeout().min(args.request_timeout()) / 2,
        stop_rx.clone(),
    ));

    let drain = shutdown::drain_on_signal(
        state.clone(),
        Duration::from_secs(args.drain_seconds),
        stop_tx,
    );
    tokio::select! {
        () = drain => {}
        // Only a fault ends the public server before a signal: exit with it, so the pod is
        // restarted instead of staying up (and ready) with its public port closed.
        ended = &mut public_task => {
            let cause = match ended {
                Ok(Ok(_)) => anyhow::anyhow!("it returned without being told to stop"),
                Ok(Err(e)) => e,
                Err(e) => anyhow::Error::from(e),
            };
            return Err(cause.context("the public port stopped serving"));
        }
    }
    let grace = Duration::from_secs(args.shutdown_grace_seconds);
    let finished = tokio::time::timeout(grace, async { tokio::join!(public_task, admin_task) });
    // Held to the end: the lanes' runtimes may still run tasks the rest relies on.
    let _parked = match finished.await {
        Ok((p, a)) => {
            let parked = p.context("public server task")?.context("public server")?;
            a.context("admin server task")?.context("admin server")?;
            tracing::info!("all requests finished; exiting");
            Some(parked)
        }
        Err(_) => {
            tracing::warn!(
                grace_s = grace.as_secs(),
                "grace period over with requests still running; exiting"
            );
            None
        }
    };
    Ok(())
}

/// The admin port before and after the dependencies are reachable.
struct Startup {
    metrics: Metrics,
    /// What is still unreachable, by dependency, with the last error.
    waiting: Waiting,
    /// The admin router of the running server, once there is one.
    admin: OnceLock<Router>,
}

impl Startup {
    fn new(metrics: Metrics) -> Self {
        Self {
            metrics,
            waiting: Waiting::new(&[FIRESTORE, REDIS]),
            admin: OnceLock::new(),
        }
    }

    fn ready(&self, admin: Router) {
        let _ = self.admin.set(admin);
    }

    /// Hands each request to the server's admin router once it exists; until then /healthz is
    /// ok, /readyz is 503 naming what is unreachable, and /metrics works.
    fn admin_router(self: &Arc<Self>) -> Router {
        let startup = self.clone();
        Router::new().fallback(move |req: Request| {
            let startup = startup.clone();
            async move {
                if let Some(router) = startup.admin.get() {
                    return match router.clone().oneshot(req).await {
                        Ok(response) => response,
                        Err(never) => match never {},
                    };
                }
                match req.uri().path() {
                    "/healthz" => Json(json!({"status": "ok"})).into_response(),
                    "/readyz" => Problem::unavailable(
                        startup
                            .waiting
                            .describe()
                            .unwrap_or_else(|| "starting".into()),
                    )
                    .into_response(),
                    "/metrics" => crate::routes::metrics_response(&startup.metrics),
                    _ => crate::problem::not_found().await.into_response(),
                }
            }
        })
    }
}
