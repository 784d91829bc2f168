//! The admin port: `/healthz` (the process runs), `/readyz` (connected, Redis answers and we
//! are not shutting down), `/metrics` (Prometheus text). It serves from the start, so a worker
//! waiting for Redis or Firestore says so instead of crash-looping.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use platform::queue::RedisHandle;
use platform::startup::Waiting;
use prometheus_client::registry::Registry;

#[derive(Clone)]
pub struct AdminState {
    pub registry: Arc<Registry>,
    /// Set once Redis is connected.
    pub redis: Arc<OnceLock<RedisHandle>>,
    /// Dependencies still being connected, with the last error.
    pub waiting: Arc<Waiting>,
    pub shutting_down: Arc<AtomicBool>,
}

pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn readyz(State(s): State<AdminState>) -> impl IntoResponse {
    if s.shutting_down.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down".to_string());
    }
    if let Some(starting) = s.waiting.describe() {
        return (StatusCode::SERVICE_UNAVAILABLE, starting);
    }
    let Some(redis) = s.redis.get() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "starting".to_string());
    };
    let mut conn = redis.conn().conn;
    let ping: redis::RedisResult<String> = redis::cmd("PING").query_async(&mut conn).await;
    match ping {
        Ok(_) => (StatusCode::OK, "ready".to_string()),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("redis: {e}")),
    }
}

async fn metrics(State(s): State<AdminState>) -> impl IntoResponse {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &s.registry) {
        Ok(()) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}
