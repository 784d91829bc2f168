//! Graceful shutdown for a replica behind a load balancer.
//!
//! On SIGTERM (or SIGINT): /readyz turns false at once, requests keep being served for the
//! drain period (the balancer needs a few probe intervals to stop routing here), then the
//! listeners close, in-flight requests finish within the grace period, and the process exits.
//! Closing the listener before the balancer has noticed would turn requests into
//! connection-refused errors, which is what the drain period avoids.

use std::time::Duration;

use axum::http::{HeaderValue, header};
use axum::response::Response;
use tokio::sync::watch;

use crate::state::AppState;

/// While draining, every response says `Connection: close`, so clients drop their keep-alive
/// connections to this server before the listener closes. Without it a client may send a
/// request on an idle connection at the instant the server closes it, and see it fail.
pub fn close_connection_while_draining(state: &AppState, response: &mut Response) {
    if state.is_draining() {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
}

/// Resolves on the first SIGTERM or SIGINT; returns the signal's name.
pub async fn signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            },
            _ => {
                let _ = tokio::signal::ctrl_c().await;
                "SIGINT"
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "ctrl-c"
    }
}

/// Waits for a signal, drains, then tells the servers to stop accepting (`stop` flips to true).
pub async fn drain_on_signal(state: AppState, drain: Duration, stop: watch::Sender<bool>) {
    let name = signal().await;
    state.start_draining();
    tracing::info!(
        signal = name,
        drain_s = drain.as_secs_f64(),
        "draining: readiness is now false"
    );
    tokio::time::sleep(drain).await;
    tracing::info!("drain period over: closing listeners, finishing in-flight requests");
    let _ = stop.send(true);
}

/// A future for `with_graceful_shutdown` that resolves once `stop` turns true.
pub async fn stopped(mut stop: watch::Receiver<bool>) {
    while !*stop.borrow() {
        if stop.changed().await.is_err() {
            return;
        }
    }
}
