//! The jobs API: `POST /v1/jobs` publishes a job to the Redis job queue ([`platform::queue`]);
//! `GET /v1/jobs/{id}` reports its state to the caller who published it, or to an admin. A job
//! someone else published is "not found" (its existence is not revealed).
//!
//! Only the job types of the worker's built-in handlers are accepted, with their payloads
//! checked as those handlers check them, so a job that could only fail is refused with a 4xx
//! and never enqueued.
//!
//! Ownership: the publisher's uid is the job record's `owner` ([`NewJob::with_owner`]), written
//! by the same script as the job, so it is replicated with it (the durability wait covers it)
//! and removed with it by retention. It is not part of the payload: the handler gets exactly the
//! payload the client sent, and nothing in a payload can claim a job for someone else.
//! Idempotency keys are scoped per owner, so two users' keys never name the same job.

use std::time::Duration;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use platform::queue::{Durability, JobRecord, NewJob, Priority, Queue, QueueConfig, QueueError};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::auth::Caller;
use crate::config::JobsArgs;
use crate::observability::{Metrics, TraceContext};
use crate::problem::Problem;
use crate::redis::Redis;
use crate::state::AppState;

/// Job types this API publishes: the worker's built-in handlers.
pub const JOB_TYPES: [&str; 3] = ["noop", "sleep", "webhook.deliver"];
/// The worker's `sleep` handler refuses longer sleeps.
pub const MAX_SLEEP_MS: u64 = 3_600_000;
/// Longer delays are more likely mistakes than plans, and their records would outlive retention.
pub const MAX_DELAY_SECONDS: u64 = 30 * 24 * 3600;
/// The queue allows 256 bytes; the owner scope takes 33 of them.
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 200;

/// The queue the API publishes to.
pub struct Jobs {
    pub queue: Queue,
}

impl Jobs {
    /// Shares the server's Redis connection; counts into the server's /metrics. Must be called
    /// inside a Tokio runtime.
    pub fn new(args: &JobsArgs, redis: &Redis, metrics: &Metrics) -> Self {
        let config = QueueConfig {
            durability: Durability {
                replicas: args.jobs_durable_replicas,
                timeout: Duration::from_millis(args.jobs_durable_timeout_ms),
                ..Durability::default()
            },
            metrics: Some(metrics.queue().clone()),
            ..QueueConfig::default()
        };
        Self {
            queue: Queue::new(redis.handle().clone(), args.jobs_queue.clone(), config),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct EnqueueBody {
    #[serde(rename = "type")]
    job_type: String,
    #[serde(default)]
    payload: Option<Value>,
    idempotency_key: Option<String>,
    delay_seconds: Option<u64>,
    priority: Option<String>,
}

fn unprocessable(detail: impl Into<String>) -> Problem {
    Problem::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "Unprocessable content",
        detail,
    )
}

/// The payload as the job's handler will read it; checked like the worker's handlers do.
fn payload(job_type: &str, payload: Option<Value>) -> Result<Map<String, Value>, Problem> {
    if !JOB_TYPES.contains(&job_type) {
        return Err(unprocessable(format!(
            "unknown job type {job_type:?}; known types: {}",
            JOB_TYPES.join(", ")
        )));
    }
    let map = match payload {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m,
        Some(_) => return Err(unprocessable("payload must be a JSON object")),
    };
    match job_type {
        "sleep" => {
            let ok = map
                .get("ms")
                .and_then(Value::as_u64)
                .is_some_and(|ms| ms <= MAX_SLEEP_MS);
            if !ok {
                return Err(unprocessable(format!(
                    "sleep payload must be {{\"ms\": 0..={MAX_SLEEP_MS}}}"
                )));
            }
        }
        "webhook.deliver" => {
            let url = map
                .get("url")
                .and_then(Value::as_str)
                .ok_or_else(|| unprocessable("webhook.deliver payload needs a \"url\" string"))?;
            let url = reqwest::Url::parse(url)
                .map_err(|e| unprocessable(format!("webhook.deliver url: {e}")))?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(unprocessable("webhook.deliver url must be http or https"));
            }
        }
        _ => {}
    }
    Ok(map)
}

/// A fixed-length, unambiguous per-user prefix for idempotency keys (a uid may contain `:`).
fn owner_scope(uid: &str) -> String {
    let digest = Sha256::digest(uid.as_bytes());
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn queue_problem(e: QueueError) -> Problem {
    match e {
        QueueError::NotDurable {
            acked,
            wanted,
            timeout,
            ..
        } => {
            tracing::warn!(acked, wanted, ?timeout, "job not durable; answered 503");
            // Written to the master, so it may still run; the same idempotencyKey makes a retry
            // land on that job instead of a second one.
            Problem::unavailable(format!(
                "the job could not be made durable ({acked} of {wanted} replica(s) confirmed it \
                 within {} ms) and was not accepted; retry with the same idempotencyKey",
                timeout.as_millis()
            ))
            .with_header(header::RETRY_AFTER, "1")
        }
        QueueError::InvalidJob(detail) => unprocessable(detail),
        e @ (QueueError::Redis(_) | QueueError::Closed) => {
            tracing::error!(error = %e, "job queue call failed");
            Problem::unavailable("the job queue is unavailable")
                .with_header(header::RETRY_AFTER, "1")
        }
        e => {
            tracing::error!(error = %e, "job queue call failed");
            Problem::internal("the job queue answered unexpectedly")
        }
    }
}

fn timestamp(ms: i64) -> Option<String> {
    jiff::Timestamp::from_millisecond(ms)
        .ok()
        .map(|t| t.to_string())
}

fn representation(r: &JobRecord) -> Value {
    json!({
        "id": r.id,
        "type": r.job_type,
        "state": r.state.as_str(),
        "priority": r.priority.as_str(),
        "attempts": r.attempts,
        "maxAttempts": r.max_attempts,
        "progress": r.progress,
        "result": r.result,
        "lastError": r.last_error,
        "owner": r.owner,
        "createdAt": timestamp(r.created_at_ms),
        "runAt": r.run_at_ms.and_then(timestamp),
        "startedAt": r.started_at_ms.and_then(timestamp),
        "finishedAt": r.finished_at_ms.and_then(timestamp),
    })
}

/// Publishes a job owned by the caller.
#[utoipa::path(post, path = "/v1/jobs", tag = "jobs",
    request_body(content = crate::openapi::JobRequest, content_type = "application/json"),
    responses(
        (status = 202, description = "Accepted (durable); also for a repeated idempotencyKey, with the existing job", body = crate::openapi::JobAccepted,
            headers(("Location" = String, description = "The job's URL"))),
        (status = 400, description = "Invalid JSON or unknown member", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 413, description = "Body over 1 MiB", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 422, description = "Unknown type, invalid payload, priority, delay or idempotency key; nothing enqueued", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid credentials", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 503, description = "The queue is unavailable, or the job could not be made durable (not accepted)", body = crate::openapi::ProblemDetails, content_type = "application/problem+json")
    ))]
pub async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(trace): Extension<TraceContext>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Problem::new(e.status(), "Content too large", e.body_text())
        } else {
            Problem::bad_request(e.body_text())
        }
    })?;
    let body: EnqueueBody = serde_json::from_slice(&body)
        .map_err(|e| Problem::bad_request(format!("invalid body: {e}")))?;
    let data = payload(&body.job_type, body.payload)?;
    let priority = match &body.priority {
        Some(p) => p
            .parse::<Priority>()
            .map_err(|_| unprocessable("priority must be critical, high, normal or low"))?,
        None => Priority::Normal,
    };
    let delay_seconds = body.delay_seconds.unwrap_or(0);
    if delay_seconds > MAX_DELAY_SECONDS {
        return Err(unprocessable(format!(
            "delaySeconds must be at most {MAX_DELAY_SECONDS}"
        )));
    }
    let mut job = NewJob::new(body.job_type, Value::Object(data))
        .with_owner(caller.uid())
        .with_priority(priority)
        .with_delay(Duration::from_secs(delay_seconds));
    let traceparent = trace.traceparent();
    if platform::queue::job::valid_traceparent(&traceparent) {
        job = job.with_traceparent(traceparent);
    }
    if let Some(key) = &body.idempotency_key {
        if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY_BYTES {
            return Err(unprocessable(format!(
                "idempotencyKey must be 1-{MAX_IDEMPOTENCY_KEY_BYTES} bytes"
            )));
        }
        job = job.with_idempotency_key(format!("{}:{key}", owner_scope(caller.uid())));
    }
    let queue = &state.jobs.queue;
    let enqueued = queue.enqueue(job).await.map_err(queue_problem)?;
    let job_state = if enqueued.created {
        if delay_seconds > 0 {
            "delayed"
        } else {
            "waiting"
        }
    } else {
        // A repeated idempotency key: report the existing job as it is now.
        match queue.get(&enqueued.id).await.map_err(queue_problem)? {
            Some(r) => r.state.as_str(),
            // Retention removed the record while the key was still remembered.
            None => "expired",
        }
    };
    let mut response = (
        StatusCode::ACCEPTED,
        axum::Json(json!({"id": enqueued.id, "state": job_state})),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("/v1/jobs/{}", enqueued.id)) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    Ok(response)
}

/// Queue ids are 1-128 characters of `A-Z a-z 0-9 . _ -`; anything else cannot exist.
fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// A job's state (the publisher's, or any for an admin).
#[utoipa::path(get, path = "/v1/jobs/{id}", tag = "jobs",
    params(("id" = String, Path, description = "Job id")),
    responses(
        (status = 200, description = "The job", body = crate::openapi::JobOut),
        (status = 404, description = "No such job (or removed by retention), or not the caller's", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid credentials", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 503, description = "A dependency is unavailable", body = crate::openapi::ProblemDetails, content_type = "application/problem+json")
    ))]
pub async fn get(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, Problem> {
    let Path(id) = path.map_err(|e| Problem::bad_request(e.body_text()))?;
    let not_found = || Problem::not_found("no such job");
    if !valid_id(&id) {
        return Err(not_found());
    }
    let record = state.jobs.queue.get(&id).await.map_err(queue_problem)?;
    match record {
        Some(r) if r.owner.as_deref() == Some(caller.uid()) || caller.is_admin() => {
            let mut response = axum::Json(representation(&r)).into_response();
            // The state changes as the job runs; never serve it from a cache.
            response
                .headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            Ok(response)
        }
        _ => Err(not_found()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_are_checked_like_the_worker_checks_them() {
        assert!(payload("noop", None).is_ok());
        assert!(payload("sleep", Some(json!({"ms": 0}))).is_ok());
        assert!(payload("sleep", Some(json!({"ms": MAX_SLEEP_MS}))).is_ok());
        assert!(payload("webhook.deliver", Some(json!({"url": "https://x.test/h"}))).is_ok());
        for (t, p) in [
            ("mail.send", json!({})),
            ("noop", json!([1])),
            ("sleep", json!({"ms": -1})),
            ("sleep", json!({"ms": "5"})),
            ("sleep", json!({"ms": MAX_SLEEP_MS + 1})),
            ("webhook.deliver", json!({})),
            ("webhook.deliver", json!({"url": "not a url"})),
            ("webhook.deliver", json!({"url": "ftp://x.test/"})),
        ] {
            let r = payload(t, Some(p.clone()));
            assert!(
                r.as_ref().is_err_and(|e| e.status().is_client_error()),
                "{t} {p}"
            );
        }
    }

    #[test]
    fn owner_scopes_are_fixed_length_and_distinct() {
        assert_eq!(owner_scope("a:b").len(), 32);
        assert_ne!(owner_scope("a:b"), owner_scope("a"));
    }
}
