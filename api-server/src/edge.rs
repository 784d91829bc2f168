//! The one middleware around every public route, as a single tower service: the request's
//! trace context, log line and metrics; the admission of the caller (authentication and rate
//! limit, or the client IP's rate limit); the request timeout (504); a panic answered as 500;
//! error responses made problem+json; `Connection: close` while draining.
//!
//! One service instead of a stack of `from_fn` and tower-http layers: each of those moved the
//! request and its future into a box of its own, and `from_fn` cloned the boxed route under it,
//! per request (callgrind: about 2,200 instructions of a cache-hit GET).

use std::convert::Infallible;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures::FutureExt as _;
use tower::{Layer, Service, ServiceExt as _};

use crate::state::AppState;
use crate::{auth, observability, problem, ratelimit, shutdown};

/// Who may reach the routes under the layer, and how they are rate limited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// An authenticated caller, rate limited by uid (one Redis script with the revocation
    /// check, see [`auth::require_caller`]).
    Caller,
    /// Anyone, rate limited by client IP.
    ClientIp,
    /// Anyone, not rate limited: the fallback (unknown paths), which touches nothing.
    Open,
}

#[derive(Clone)]
pub struct EdgeLayer {
    state: AppState,
    gate: Gate,
}

impl EdgeLayer {
    pub fn new(state: AppState, gate: Gate) -> Self {
        Self { state, gate }
    }
}

impl<S> Layer<S> for EdgeLayer {
    type Service = Edge<S>;

    fn layer(&self, inner: S) -> Edge<S> {
        Edge {
            inner,
            state: self.state.clone(),
            gate: self.gate,
        }
    }
}

#[derive(Clone)]
pub struct Edge<S> {
    inner: S,
    state: AppState,
    gate: Gate,
}

impl<S> Service<Request> for Edge<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // The inner service is made ready (and called) inside the future, by `oneshot`.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let (inner, state, gate) = (self.inner.clone(), self.state.clone(), self.gate);
        Box::pin(async move {
            let mut response = observability::track_request(
                &state.metrics,
                state.export_spans,
                req,
                |req| async {
                    let admitted = tokio::time::timeout(
                        state.request_timeout,
                        admit(&state, gate, req, inner),
                    );
                    let response = match AssertUnwindSafe(admitted).catch_unwind().await {
                        Ok(Ok(response)) => response,
                        // A hung dependency answers 504 instead of holding the connection.
                        Ok(Err(_elapsed)) => StatusCode::GATEWAY_TIMEOUT.into_response(),
                        Err(panic) => problem::panicked(panic),
                    };
                    problem::ensure_problem_json(response).await
                },
            )
            .await;
            shutdown::close_connection_while_draining(&state, &mut response);
            Ok(response)
        })
    }
}

/// Runs the request through `inner` if the gate lets it in.
///
/// Boxed here, once: the admission's future is kilobytes large, and inline it made the edge's
/// own future about 18 KB, moved (copied) whole at every level that wraps it.
fn admit<'a, S>(
    state: &'a AppState,
    gate: Gate,
    req: Request,
    inner: S,
) -> Pin<Box<dyn Future<Output = Response> + Send + 'a>>
where
    S: Service<Request, Response = Response, Error = Infallible> + Send + 'static,
    S::Future: Send + 'static,
{
    let run = |req: Request| async move {
        match inner.oneshot(req).await {
            Ok(response) => response,
            Err(never) => match never {},
        }
    };
    match gate {
        Gate::Caller => Box::pin(auth::require_caller(state, req, run)),
        Gate::ClientIp => Box::pin(ratelimit::limit(state, req, run)),
        Gate::Open => Box::pin(run(req)),
    }
}
