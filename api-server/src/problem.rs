//! RFC 9457 problem details: every error response of both ports is `application/problem+json`.
//!
//! Handlers return [`Problem`]; responses that axum or tower produce on their own (unknown
//! route, wrong method, body too large) are rewritten by [`ensure_problem_json`], so clients
//! never have to parse two error formats.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

pub const CONTENT_TYPE: &str = "application/problem+json";

/// Boxed so that `Result<T, Problem>` stays small on the happy path.
#[derive(Debug, Clone)]
pub struct Problem(Box<Inner>);

#[derive(Debug, Clone)]
struct Inner {
    status: StatusCode,
    title: &'static str,
    detail: String,
    headers: HeaderMap,
    extra: Map<String, Value>,
}

impl Problem {
    pub fn new(status: StatusCode, title: &'static str, detail: impl Into<String>) -> Self {
        Self(Box::new(Inner {
            status,
            title,
            detail: detail.into(),
            headers: HeaderMap::new(),
            extra: Map::new(),
        }))
    }

    pub fn status(&self) -> StatusCode {
        self.0.status
    }

    pub fn detail(&self) -> &str {
        &self.0.detail
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "Bad request", detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "Not found", detail)
    }

    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "Service unavailable",
            detail,
        )
    }

    pub fn internal(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "Internal error", detail)
    }

    /// Adds a response header; values that are not valid header text are dropped, as they
    /// come from our own code and never from the client.
    pub fn with_header(mut self, name: HeaderName, value: &str) -> Self {
        if let Ok(v) = HeaderValue::from_str(value) {
            self.0.headers.insert(name, v);
        }
        self
    }

    /// Adds an extension member to the body (RFC 9457 §3.2), e.g. the auth failure reason.
    pub fn with_member(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.0.extra.insert(name.to_string(), value.into());
        self
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let p = *self.0;
        let mut body = Map::new();
        body.insert("type".into(), json!("about:blank"));
        body.insert("title".into(), json!(p.title));
        body.insert("status".into(), json!(p.status.as_u16()));
        body.insert("detail".into(), json!(p.detail));
        body.extend(p.extra);
        let mut response = (p.status, Value::Object(body).to_string()).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
        response.headers_mut().extend(p.headers);
        response
    }
}

/// Rewrites error responses that are not problem+json yet (axum's own 404/405/413/415) into
/// problem+json, keeping status and headers.
pub async fn ensure_problem_json(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(CONTENT_TYPE.as_bytes()));
    if is_problem {
        return response;
    }
    // Boxed: reading the body makes this future half a kilobyte, which every request's future
    // would carry, though only an error from axum itself gets here.
    Box::pin(rewritten(response)).await
}

/// `response` (an error of axum's, plain text) as a problem.
async fn rewritten(response: Response) -> Response {
    let status = response.status();
    let (mut parts, body) = response.into_parts();
    // The original body is axum's short plain-text reason; keep it as the detail.
    let detail = match axum::body::to_bytes(body, 64 * 1024).await {
        Ok(b) if !b.is_empty() => String::from_utf8_lossy(&b).into_owned(),
        // Only the edge's request timeout answers 504, with no body.
        _ if status == StatusCode::GATEWAY_TIMEOUT => {
            "the request did not finish in time (a dependency is slow); it may be retried".into()
        }
        _ => status.canonical_reason().unwrap_or("error").to_string(),
    };
    let title = status.canonical_reason().unwrap_or("Error");
    let body =
        json!({"type": "about:blank", "title": title, "status": status.as_u16(), "detail": detail});
    parts.headers.remove(header::CONTENT_LENGTH);
    parts
        .headers
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    Response::from_parts(parts, Body::from(body.to_string()))
}

/// A handler panicked: the client gets a 500 problem, not a dropped connection, and the panic
/// is logged (its message may hold request data, so it goes to the log, not the client).
pub fn panicked(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let message = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("(no message)");
    tracing::error!(panic = message, "request handler panicked");
    Problem::internal("the server failed on this request").into_response()
}

/// The router fallback: an unknown path.
pub async fn not_found() -> Problem {
    Problem::not_found("no such route")
}
