//! The file routes. Owner-only: another user's file is "not found" (its existence is not
//! revealed), except to a caller with the `admin` claim.
//!
//! `complete` is idempotent: on a pending file it moves the record to `finalizing` and queues
//! the finalize job; repeated while finalizing it queues again under the same idempotency key
//! (so at most one job exists); on a settled (`ready` or `rejected`) file it changes nothing and
//! answers 200 with the record.

use axum::Extension;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;
use platform::queue::NewJob;
use platform::storage::files::{FINALIZE_FILE_ID, FINALIZE_JOB, FileRecord, FileState};
use platform::storage::objects::ObjectError;
use platform::storage::signed_url::{Method, SignedUrlError, SignedUrlRequest, sign_url};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{Files, name};
use crate::auth::Caller;
use crate::documents::store::new_id;
use crate::observability::TraceContext;
use crate::problem::Problem;
use crate::state::AppState;
use platform::storage::file_store::{FileStoreError, RecordVersion};

/// Attempts at a read-then-conditional-write before giving up on a busy record.
const WRITE_ATTEMPTS: usize = 3;

fn unprocessable(detail: impl Into<String>) -> Problem {
    Problem::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "Unprocessable content",
        detail,
    )
}

fn enabled(state: &AppState) -> Result<&Files, Problem> {
    state.files.as_deref().ok_or_else(|| {
        Problem::unavailable(
            "file storage is not configured on this server (STORAGE_BUCKET and a URL signer)",
        )
    })
}

fn store_problem(e: FileStoreError) -> Problem {
    match e {
        FileStoreError::Stale | FileStoreError::Exists => Problem::new(
            StatusCode::CONFLICT,
            "Conflict",
            "the file changed concurrently; retry",
        ),
        FileStoreError::Firestore(err) => {
            tracing::error!(error = %err, "Firestore call failed");
            Problem::unavailable("the file metadata store is unavailable")
                .with_header(header::RETRY_AFTER, "1")
        }
        FileStoreError::Corrupt(detail) => {
            tracing::error!(%detail, "malformed file record");
            Problem::internal("a stored file record is malformed")
        }
    }
}

fn sign_problem(e: SignedUrlError) -> Problem {
    match e {
        // A name we let through that Cloud Storage would not take: still the client's input.
        SignedUrlError::InvalidObjectName { reason } => {
            unprocessable(format!("fileName cannot be an object name: {reason}"))
        }
        SignedUrlError::Signing(err) => {
            tracing::error!(error = %err, "signing a URL failed");
            Problem::unavailable("URL signing is unavailable").with_header(header::RETRY_AFTER, "1")
        }
        other => {
            tracing::error!(error = %other, "signing request refused; check the storage config");
            Problem::internal("the server's storage configuration is invalid")
        }
    }
}

fn object_problem(e: ObjectError) -> Problem {
    tracing::error!(error = %e, "Cloud Storage call failed");
    if e.is_transient() {
        Problem::unavailable("Cloud Storage is unavailable").with_header(header::RETRY_AFTER, "1")
    } else {
        Problem::new(
            StatusCode::BAD_GATEWAY,
            "Bad gateway",
            "Cloud Storage refused the request",
        )
    }
}

fn no_store(mut response: Response) -> Response {
    // Bodies carry signed URLs and change as the upload is finalized.
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn representation(r: &FileRecord) -> Value {
    json!({
        "id": r.id,
        "owner": r.owner,
        "fileName": r.file_name,
        "contentType": r.content_type,
        "declaredSize": r.declared_size,
        "state": r.state.as_str(),
        "size": r.size,
        "md5Hash": r.md5_hash,
        "crc32c": r.crc32c,
        "generation": r.generation.map(|g| g.to_string()),
        "reason": r.reason,
        "createdAt": r.created_at,
        "updatedAt": r.updated_at,
    })
}

/// Ids are made by [`new_id`]: lowercase hex. Anything else cannot exist.
fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// The record, if the caller may see it (owner or admin).
async fn accessible(
    files: &Files,
    caller: &Caller,
    id: &str,
) -> Result<(FileRecord, RecordVersion), Problem> {
    let not_found = || Problem::not_found("no such file");
    if !valid_id(id) {
        return Err(not_found());
    }
    match files.store.get(id).await.map_err(store_problem)? {
        Some((r, v)) if r.owner == caller.uid() || caller.is_admin() => Ok((r, v)),
        _ => Err(not_found()),
    }
}

fn path_id(path: Result<Path<String>, PathRejection>) -> Result<String, Problem> {
    path.map(|Path(id)| id)
        .map_err(|e| Problem::bad_request(e.body_text()))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateBody {
    file_name: String,
    content_type: String,
    size: u64,
}

/// Registers a file and returns a signed URL to upload it with.
#[utoipa::path(post, path = "/v1/files", tag = "files",
    request_body(content = crate::openapi::FileRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "Registered (`pending`); PUT the bytes to `uploadUrl` with exactly `requiredHeaders`", body = crate::openapi::FileUpload,
            headers(("Location" = String, description = "The file's URL"))),
        (status = 400, description = "Invalid JSON or unknown member", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 413, description = "Body over 1 MiB", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 422, description = "Bad file name, content type not allowed, or size over the limit; nothing written", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid credentials", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 503, description = "File storage is off on this server, or a dependency is unavailable", body = crate::openapi::ProblemDetails, content_type = "application/problem+json")
    ))]
pub async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let files = enabled(&state)?;
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Problem::new(e.status(), "Content too large", e.body_text())
        } else {
            Problem::bad_request(e.body_text())
        }
    })?;
    let body: CreateBody = serde_json::from_slice(&body)
        .map_err(|e| Problem::bad_request(format!("invalid body: {e}")))?;
    let file_name = name::file_name(&body.file_name).map_err(|e| unprocessable(e.to_string()))?;
    let content_type = body.content_type.trim().to_ascii_lowercase();
    if !files.content_types.contains(&content_type) {
        let mut allowed: Vec<&str> = files.content_types.iter().map(String::as_str).collect();
        allowed.sort_unstable();
        return Err(unprocessable(format!(
            "contentType {:?} is not allowed; allowed: {}",
            body.content_type,
            allowed.join(", ")
        )));
    }
    let declared_size = i64::try_from(body.size)
        .ok()
        .filter(|_| body.size <= files.max_size)
        .ok_or_else(|| {
            unprocessable(format!(
                "size {} is over the limit of {} bytes",
                body.size, files.max_size
            ))
        })?;

    let id = new_id();
    let object = name::object_path(caller.uid(), &id, file_name);
    let now = Timestamp::now();
    // Signed headers cannot be changed: the type is fixed, GCS refuses a body outside the
    // declared size, and `if-generation-match: 0` makes the URL create the object once, never
    // overwrite it (so a checked upload cannot be swapped later while the URL is still valid).
    let required = [
        ("content-type", content_type.clone()),
        ("x-goog-content-length-range", format!("0,{}", body.size)),
        ("x-goog-if-generation-match", "0".to_string()),
    ];
    let mut request = SignedUrlRequest::new(Method::Put, &files.bucket, files.upload_ttl, now)
        .object(&object)
        .scheme(files.target.scheme)
        .host(&files.target.host);
    for (name, value) in &required {
        request = request.header(*name, value);
    }
    let expires_at = request.expires_at().map(|t| t.to_string());
    let upload_url = sign_url(files.signer.as_ref(), &request)
        .await
        .map_err(sign_problem)?;

    let record = FileRecord {
        id: id.clone(),
        owner: caller.uid().to_string(),
        bucket: files.bucket.clone(),
        object,
        file_name: file_name.to_string(),
        content_type,
        declared_size,
        state: FileState::Pending,
        created_at: now.to_string(),
        updated_at: now.to_string(),
        size: None,
        md5_hash: None,
        crc32c: None,
        generation: None,
        reason: None,
    };
    files.store.create(&record).await.map_err(store_problem)?;
    tracing::info!(file = %id, size = body.size, "file registered");

    let headers: Map<String, Value> = required
        .iter()
        .map(|(k, v)| ((*k).to_string(), Value::String(v.clone())))
        .collect();
    let mut response = (
        StatusCode::CREATED,
        axum::Json(json!({
            "id": id,
            "state": FileState::Pending.as_str(),
            "uploadUrl": upload_url,
            "method": "PUT",
            "requiredHeaders": headers,
            "expiresAt": expires_at,
        })),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("/v1/files/{id}")) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    Ok(no_store(response))
}

/// Queues the finalize job; one job per file however often this is called. Client idempotency
/// keys all start with a 32-hex-digit owner scope (jobs.rs), so they never collide with these.
/// The job belongs to the file's owner, so `GET /v1/jobs/{id}` shows it to them as to an admin.
async fn enqueue_finalize(
    state: &AppState,
    trace: &TraceContext,
    id: &str,
    owner: &str,
) -> Result<(), Problem> {
    let mut job = NewJob::new(FINALIZE_JOB, json!({ FINALIZE_FILE_ID: id }))
        .with_owner(owner)
        .with_idempotency_key(format!("{FINALIZE_JOB}:{id}"));
    let traceparent = trace.traceparent();
    if platform::queue::job::valid_traceparent(&traceparent) {
        job = job.with_traceparent(traceparent);
    }
    state
        .jobs
        .queue
        .enqueue(job)
        .await
        .map_err(crate::jobs::queue_problem)?;
    Ok(())
}

/// Says the upload is done: the file is checked in the background.
#[utoipa::path(post, path = "/v1/files/{id}/complete", tag = "files",
    params(("id" = String, Path, description = "File id")),
    responses(
        (status = 202, description = "Finalizing: the upload is being checked; poll GET /v1/files/{id}", body = crate::openapi::FileOut),
        (status = 200, description = "Already settled (`ready` or `rejected`); nothing changed", body = crate::openapi::FileOut),
        (status = 404, description = "No such file, or not the caller's", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 409, description = "The file changed concurrently; retry", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid credentials", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 503, description = "File storage is off on this server, or a dependency is unavailable", body = crate::openapi::ProblemDetails, content_type = "application/problem+json")
    ))]
pub async fn complete(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(trace): Extension<TraceContext>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, Problem> {
    let files = enabled(&state)?;
    let id = path_id(path)?;
    for _ in 0..WRITE_ATTEMPTS {
        let (mut record, version) = accessible(files, &caller, &id).await?;
        match record.state {
            FileState::Pending => {
                record.state = FileState::Finalizing;
                record.updated_at = Timestamp::now().to_string();
                match files.store.replace(&record, version).await {
                    Ok(()) => {}
                    Err(FileStoreError::Stale) => continue,
                    Err(e) => return Err(store_problem(e)),
                }
            }
            // Queued before, perhaps not successfully: the idempotency key dedups.
            FileState::Finalizing => {}
            FileState::Ready | FileState::Rejected => {
                return Ok(no_store(
                    axum::Json(representation(&record)).into_response(),
                ));
            }
        }
        // A failure here leaves the record `finalizing`; the client's retry queues it again.
        enqueue_finalize(&state, &trace, &id, &record.owner).await?;
        tracing::info!(file = %id, "finalize queued");
        return Ok(no_store(
            (StatusCode::ACCEPTED, axum::Json(representation(&record))).into_response(),
        ));
    }
    Err(store_problem(FileStoreError::Stale))
}

/// A file's metadata and, once ready, a short-lived download URL.
#[utoipa::path(get, path = "/v1/files/{id}", tag = "files",
    params(("id" = String, Path, description = "File id")),
    responses(
        (status = 200, description = "The file", body = crate::openapi::FileOut),
        (status = 404, description = "No such file, or not the caller's", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid credentials", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 503, description = "File storage is off on this server, or a dependency is unavailable", body = crate::openapi::ProblemDetails, content_type = "application/problem+json")
    ))]
pub async fn get(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, Problem> {
    let files = enabled(&state)?;
    let id = path_id(path)?;
    let (record, _) = accessible(files, &caller, &id).await?;
    let mut body = representation(&record);
    if let (FileState::Ready, Some(generation)) = (record.state, record.generation) {
        // Pinned to the checked generation: a later object under the name is not served.
        let request = SignedUrlRequest::new(
            Method::Get,
            &record.bucket,
            files.download_ttl,
            Timestamp::now(),
        )
        .object(&record.object)
        .query("generation", generation.to_string())
        .scheme(files.target.scheme)
        .host(&files.target.host);
        body["downloadExpiresAt"] = json!(request.expires_at().map(|t| t.to_string()));
        body["downloadUrl"] = json!(
            sign_url(files.signer.as_ref(), &request)
                .await
                .map_err(sign_problem)?
        );
    }
    Ok(no_store(axum::Json(body).into_response()))
}

/// Deletes the object and then its record.
#[utoipa::path(delete, path = "/v1/files/{id}", tag = "files",
    params(("id" = String, Path, description = "File id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such file, or not the caller's", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 409, description = "The file changed concurrently; retry", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 502, description = "Cloud Storage refused to delete the object; the record is kept", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid credentials", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 503, description = "File storage is off on this server, or a dependency is unavailable", body = crate::openapi::ProblemDetails, content_type = "application/problem+json")
    ))]
pub async fn delete(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, Problem> {
    let files = enabled(&state)?;
    let id = path_id(path)?;
    for _ in 0..WRITE_ATTEMPTS {
        let (record, version) = accessible(files, &caller, &id).await?;
        // Object first: if the record went first and this failed, the bytes would be orphaned
        // with nothing pointing at them. A retry finds the object gone and deletes the record.
        match files.objects.delete(&record.bucket, &record.object).await {
            Ok(()) | Err(ObjectError::NotFound) => {}
            Err(e) => return Err(object_problem(e)),
        }
        match files.store.delete(&id, version).await {
            Ok(()) => {
                tracing::info!(file = %id, "file deleted");
                return Ok(StatusCode::NO_CONTENT.into_response());
            }
            // The finalize job wrote in between; read again and delete that version.
            Err(FileStoreError::Stale) => continue,
            Err(e) => return Err(store_problem(e)),
        }
    }
    Err(store_problem(FileStoreError::Stale))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_server_made_ids_are_looked_up() {
        assert!(valid_id(&new_id()));
        for bad in ["", "../x", "a/b", "a b", &"a".repeat(65)] {
            assert!(!valid_id(bad), "{bad:?}");
        }
    }
}
