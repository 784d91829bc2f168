//! The two routers: the public API (port 8080) and the admin port (9090: health, readiness,
//! metrics), which the load balancer and Prometheus reach but clients do not.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::DefaultBodyLimit;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router, middleware};
use serde::Deserialize;
use serde_json::json;
use tower::ServiceBuilder;

use crate::auth::Caller;
use crate::auth::revocation::RevokeError;
use crate::documents::{handlers, validation};
use crate::edge::{EdgeLayer, Gate};
use crate::files::handlers as files;
use crate::jobs;
use crate::observability::TraceContext;
use crate::problem::{self, Problem};
use crate::state::AppState;

/// Every route gets one [`EdgeLayer`] (see [`crate::edge`]), with the gate of its group; the
/// body limit is the only other layer.
pub fn public(state: AppState) -> Router {
    let authenticated = Router::new()
        .route("/v1/me", get(me))
        .route("/v1/auth/revoke", post(revoke))
        // Static segments win over `/v1/{collection}` ("jobs" and "files" are reserved
        // collection names).
        .route("/v1/jobs", post(jobs::create))
        .route("/v1/jobs/{id}", get(jobs::get))
        .route("/v1/files", post(files::create))
        .route("/v1/files/{id}", get(files::get).delete(files::delete))
        .route("/v1/files/{id}/complete", post(files::complete))
        .route(
            "/v1/{collection}",
            post(handlers::create).get(handlers::list),
        )
        .route(
            "/v1/{collection}/{id}",
            get(handlers::get)
                .patch(handlers::patch)
                .delete(handlers::delete),
        )
        .layer(
            ServiceBuilder::new()
                .layer(EdgeLayer::new(state.clone(), Gate::Caller))
                .layer(DefaultBodyLimit::max(validation::MAX_BODY_BYTES)),
        );
    let anonymous = Router::new()
        .route("/openapi.json", get(crate::openapi::serve))
        .layer(EdgeLayer::new(state.clone(), Gate::ClientIp));
    // Unknown paths: a 404 problem, still logged and counted, and not rate limited.
    let unknown = Router::new()
        .fallback(problem::not_found)
        .layer(EdgeLayer::new(state.clone(), Gate::Open));
    Router::new()
        .merge(authenticated)
        .merge(anonymous)
        .merge(unknown)
        .with_state(state)
}

pub fn admin(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(problem::not_found)
        .layer(middleware::from_fn(|req: Request, next: Next| async move {
            problem::ensure_problem_json(next.run(req).await).await
        }))
        .with_state(state)
}

#[utoipa::path(get, path = "/v1/me", tag = "auth",
    responses(
        (status = 200, description = "The caller's uid and claims", body = crate::openapi::Me),
        (status = 401, description = "Missing or invalid credentials", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 503, description = "A dependency is unavailable", body = crate::openapi::ProblemDetails, content_type = "application/problem+json")
    ))]
pub(crate) async fn me(Extension(caller): Extension<Caller>) -> Json<serde_json::Value> {
    Json(json!({
        "uid": caller.uid(),
        "admin": caller.is_admin(),
        "claims": caller.0.claims,
    }))
}

#[derive(Debug, Deserialize)]
struct RevokeBody {
    uid: Option<String>,
}

/// Revokes the caller's tokens, or any user's for an admin.
#[utoipa::path(post, path = "/v1/auth/revoke", tag = "auth",
    request_body(content = Option<crate::openapi::RevokeRequest>, content_type = "application/json"),
    responses(
        (status = 200, description = "Revoked", body = crate::openapi::Revoked),
        (status = 400, description = "Invalid body", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 403, description = "Only admins may revoke other users", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 502, description = "Recorded here, but Firebase did not revoke the refresh tokens", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid credentials", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 503, description = "A dependency is unavailable", body = crate::openapi::ProblemDetails, content_type = "application/problem+json")
    ))]
pub(crate) async fn revoke(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(trace): Extension<TraceContext>,
    body: Bytes,
) -> Result<Response, Problem> {
    let target = if body.is_empty() {
        None
    } else {
        serde_json::from_slice::<RevokeBody>(&body)
            .map_err(|e| Problem::bad_request(format!("invalid body: {e}")))?
            .uid
    };
    let uid = match target {
        Some(uid) if uid != caller.uid() => {
            if !caller.is_admin() {
                return Err(Problem::new(
                    StatusCode::FORBIDDEN,
                    "Forbidden",
                    "only a caller with the admin claim may revoke another user",
                ));
            }
            if uid.is_empty() || uid.chars().count() > 128 {
                return Err(Problem::bad_request("uid must be 1 to 128 characters"));
            }
            uid
        }
        _ => caller.uid().to_string(),
    };
    match state
        .verifier
        .revocations()
        .revoke(&uid, &trace.traceparent())
        .await
    {
        Ok(at) => Ok(Json(json!({"uid": uid, "revokedAt": at})).into_response()),
        Err(e @ RevokeError::Store(_)) => {
            tracing::error!(error = %e, "revocation not recorded");
            Err(Problem::unavailable(e.to_string()).with_header(header::RETRY_AFTER, "1"))
        }
        Err(e @ RevokeError::IdentityToolkit(_)) => {
            // Recorded in Redis (every server rejects old tokens) but Firebase still honours
            // the refresh token: the client must retry for a complete revocation.
            tracing::error!(error = %e, "refresh tokens not revoked");
            Err(Problem::new(
                StatusCode::BAD_GATEWAY,
                "Bad gateway",
                format!(
                    "tokens are rejected here, but Firebase refresh tokens were not revoked: {e}"
                ),
            ))
        }
    }
}

async fn readyz(State(state): State<AppState>) -> Response {
    if state.is_draining() {
        return Problem::unavailable("draining: shutting down").into_response();
    }
    let redis = tokio::time::timeout(Duration::from_secs(1), state.redis.ping());
    let firestore = tokio::time::timeout(
        Duration::from_secs(2),
        state.db.fluent().select().by_id_in("_readyz").one("probe"),
    );
    let (redis, firestore) = tokio::join!(redis, firestore);
    let mut failures = Vec::new();
    match redis {
        Ok(Ok(())) => {}
        Ok(Err(e)) => failures.push(format!("redis: {e}")),
        Err(_) => failures.push("redis: timed out".to_string()),
    }
    match firestore {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => failures.push(format!("firestore: {e}")),
        Err(_) => failures.push("firestore: timed out".to_string()),
    }
    if failures.is_empty() {
        Json(json!({"status": "ready"})).into_response()
    } else {
        Problem::unavailable(failures.join("; ")).into_response()
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    metrics_response(&state.metrics)
}

pub(crate) fn metrics_response(metrics: &crate::observability::Metrics) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics.encode(),
    )
        .into_response()
}
