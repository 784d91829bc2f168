//! Admin HTTP server: /healthz (the process serves), /readyz (healthy in its role: a standby
//! waiting for the lease, or the leader with its caches synced), /metrics (Prometheus text).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::metrics::Metrics;

/// What the admin endpoints report on.
#[derive(Clone)]
pub struct AdminState {
    pub metrics: Arc<Metrics>,
    pub ready: Arc<AtomicBool>,
}

/// The admin server could not start.
#[derive(Debug, thiserror::Error)]
#[error("admin server on {addr}: {source}")]
pub struct AdminError {
    addr: SocketAddr,
    #[source]
    source: std::io::Error,
}

pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn readyz(State(state): State<AdminState>) -> impl IntoResponse {
    if state.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

async fn metrics(State(state): State<AdminState>) -> impl IntoResponse {
    match state.metrics.encode() {
        Ok(body) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// Binds `addr` and serves until the process ends. Binding happens before returning, so a
/// port conflict is reported at start.
pub async fn serve(addr: SocketAddr, state: AdminState) -> Result<SocketAddr, AdminError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| AdminError { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| AdminError { addr, source })?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router(state)).await {
            tracing::error!(error = %e, "admin server stopped");
        }
    });
    Ok(bound)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    async fn get_text(addr: SocketAddr, path: &str) -> (u16, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        let code = out[9..12].parse().unwrap();
        (code, out)
    }

    #[tokio::test]
    async fn serves_health_readiness_and_metrics() {
        let state = AdminState {
            metrics: Arc::new(Metrics::default()),
            ready: Arc::new(AtomicBool::new(false)),
        };
        state
            .metrics
            .reconciled("ok", std::time::Duration::from_millis(1));
        let addr = serve("127.0.0.1:0".parse().unwrap(), state.clone())
            .await
            .unwrap();
        assert_eq!(get_text(addr, "/healthz").await.0, 200);
        assert_eq!(get_text(addr, "/readyz").await.0, 503);
        state.ready.store(true, Ordering::Relaxed);
        assert_eq!(get_text(addr, "/readyz").await.0, 200);
        let (code, body) = get_text(addr, "/metrics").await;
        assert_eq!(code, 200);
        assert!(body.contains("scalable_operator_reconciles_total{result=\"ok\"} 1"));
    }
}
