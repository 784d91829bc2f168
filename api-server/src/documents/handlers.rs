//! The document routes. Owner-only: a document someone else owns is "not found" (its
//! existence is not revealed), except to a caller with the `admin` claim, who may read any.

use axum::Extension;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde_json::{Value, json};

use super::cache::{Doc, PrefetchedEntry, Representation};
use super::store::{StoreError, StoredDoc, Version};
use super::validation;
use crate::auth::Caller;
use crate::problem::Problem;
use crate::state::AppState;

const DEFAULT_PAGE: u32 = 20;
const MAX_PAGE: u32 = 100;

fn store_problem(e: &StoreError) -> Problem {
    match e {
        StoreError::NotFound => Problem::not_found("no such document"),
        StoreError::Stale => Problem::new(
            StatusCode::PRECONDITION_FAILED,
            "Precondition failed",
            "the document changed since the version in If-Match",
        ),
        StoreError::Firestore(err) => {
            tracing::error!(error = %err, "Firestore call failed");
            Problem::unavailable("the document store is unavailable")
                .with_header(header::RETRY_AFTER, "1")
        }
        StoreError::Corrupt(detail) => {
            tracing::error!(%detail, "malformed stored document");
            Problem::internal("a stored document is malformed")
        }
    }
}

fn representation(collection: &str, doc: &StoredDoc) -> Value {
    // Strings and a JSON map: serialising cannot fail.
    serde_json::to_value(Representation::of(collection, doc)).unwrap_or_default()
}

fn with_etag(response: Response, doc: &StoredDoc) -> Response {
    with_etag_value(response, &doc.version.etag())
}

fn with_etag_value(response: Response, etag: &str) -> Response {
    with_etag_header(response, HeaderValue::from_str(etag).ok())
}

fn with_etag_header(mut response: Response, etag: Option<HeaderValue>) -> Response {
    if let Some(etag) = etag {
        response.headers_mut().insert(header::ETAG, etag);
    }
    // Private: the body belongs to one user; no-cache: revalidate with If-None-Match.
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-cache"),
    );
    response
}

fn path_problem(e: PathRejection) -> Problem {
    Problem::bad_request(e.body_text())
}

fn body_problem(e: BytesRejection) -> Problem {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        validation::too_large()
    } else {
        Problem::bad_request(e.body_text())
    }
}

/// The document, if the caller may read it. `prefetched` is its cache entry when the
/// request's admission script already read it.
async fn readable(
    state: &AppState,
    caller: &Caller,
    collection: &str,
    id: &str,
    prefetched: Option<Option<Bytes>>,
) -> Result<Doc, Problem> {
    validation::collection(&state.documents.collections, collection)?;
    validation::document_id(id)?;
    let docs = &state.documents;
    match docs
        .cache
        .read(&docs.store, collection, id, prefetched)
        .await
    {
        Ok(Some(doc)) if doc.owned_by(caller.uid()) || caller.is_admin() => Ok(doc),
        Ok(_) => Err(Problem::not_found("no such document")),
        Err(e) => Err(store_problem(&e)),
    }
}

/// The current version straight from Firestore (writes must not decide on a cached copy),
/// if the caller owns it.
async fn owned(
    state: &AppState,
    caller: &Caller,
    collection: &str,
    id: &str,
) -> Result<StoredDoc, Problem> {
    validation::collection(&state.documents.collections, collection)?;
    validation::document_id(id)?;
    match state.documents.store.get(collection, id).await {
        Ok(Some(doc)) if doc.owner == caller.uid() => Ok(doc),
        Ok(_) => Err(Problem::not_found("no such document")),
        Err(e) => Err(store_problem(&e)),
    }
}

/// Creates a document owned by the caller.
#[utoipa::path(post, path = "/v1/{collection}", tag = "documents",
    params(("collection" = String, Path, description = "An allow-listed collection")),
    request_body(content = Object, description = "Any JSON object (at most 1 MiB, 19 levels deep)", content_type = "application/json"),
    responses(
        (status = 201, description = "Created", body = crate::openapi::DocumentOut,
            headers(("Location" = String, description = "The document's URL"), ("ETag" = String, description = "Version"))),
        (status = 400, description = "Invalid JSON", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 404, description = "Unknown collection", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 413, description = "Over 1 MiB", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 422, description = "Not an object, too deep, or reserved field names", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid credentials", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 503, description = "A dependency is unavailable", body = crate::openapi::ProblemDetails, content_type = "application/problem+json")
    ))]
pub async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    path: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let Path(collection) = path.map_err(path_problem)?;
    validation::collection(&state.documents.collections, &collection)?;
    let data = validation::object(&body.map_err(body_problem)?)?;
    let doc = state
        .documents
        .store
        .create(&collection, caller.uid(), data)
        .await
        .map_err(|e| store_problem(&e))?;
    state.documents.cache.written(&collection, &doc).await;
    let mut response = (
        StatusCode::CREATED,
        axum::Json(Representation::of(&collection, &doc)),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("/v1/{collection}/{}", doc.id)) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    Ok(with_etag(response, &doc))
}

/// Reads a document (the owner's, or any for an admin).
#[utoipa::path(get, path = "/v1/{collection}/{id}", tag = "documents",
    params(("collection" = String, Path, description = "An allow-listed collection"), ("id" = String, Path, description = "Document id"),
        ("If-None-Match" = Option<String>, Header, description = "ETag of the version the client has")),
    responses(
        (status = 200, description = "The document", body = crate::openapi::DocumentOut,
            headers(("ETag" = String, description = "Version"))),
        (status = 304, description = "Not modified"),
        (status = 404, description = "No such document, or not the caller's", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid credentials", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 503, description = "A dependency is unavailable", body = crate::openapi::ProblemDetails, content_type = "application/problem+json")
    ))]
pub async fn get(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    path: Result<Path<(String, String)>, PathRejection>,
    IfNoneMatch(if_none_match): IfNoneMatch,
    Prefetched(prefetched): Prefetched,
) -> Result<Response, Problem> {
    let Path((collection, id)) = path.map_err(path_problem)?;
    let prefetched = prefetched.and_then(|p| p.take_for(&collection, &id));
    let doc = readable(&state, &caller, &collection, &id, prefetched).await?;
    let etag = doc.etag();
    let not_modified = if_none_match
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            let t = t.trim();
            t == "*"
                || etag
                    .as_ref()
                    .is_some_and(|e| t.trim_start_matches("W/").as_bytes() == e.as_bytes())
        });
    let response = if not_modified {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            doc.representation(&collection),
        )
            .into_response()
    };
    Ok(with_etag_header(response, etag))
}

/// The request's `If-None-Match` values: what a GET needs of the headers, without copying the
/// whole map (a 1 KB bearer token included) as the `HeaderMap` extractor does.
pub struct IfNoneMatch(Vec<HeaderValue>);

impl<S: Send + Sync> FromRequestParts<S> for IfNoneMatch {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(
            parts
                .headers
                .get_all(header::IF_NONE_MATCH)
                .iter()
                .cloned()
                .collect(),
        ))
    }
}

/// The cache entry the admission read for this request, taken out of the extensions (the
/// `Extension` extractor would clone it).
pub struct Prefetched(Option<PrefetchedEntry>);

impl<S: Send + Sync> FromRequestParts<S> for Prefetched {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(parts.extensions.remove()))
    }
}

/// The version in `If-Match`: required (428 without), 412 when it cannot match anything.
fn if_match(headers: &HeaderMap) -> Result<Version, Problem> {
    let raw = headers
        .get(header::IF_MATCH)
        .ok_or_else(|| {
            Problem::new(
                StatusCode::PRECONDITION_REQUIRED,
                "Precondition required",
                "send If-Match with the ETag of the version you are changing",
            )
        })?
        .to_str()
        .unwrap_or_default();
    Version::from_etag(raw).ok_or_else(|| {
        Problem::new(
            StatusCode::PRECONDITION_FAILED,
            "Precondition failed",
            "If-Match is not the ETag of any version",
        )
    })
}

/// Applies a JSON merge patch (RFC 7386) to the caller's document.
#[utoipa::path(patch, path = "/v1/{collection}/{id}", tag = "documents",
    params(("collection" = String, Path, description = "An allow-listed collection"), ("id" = String, Path, description = "Document id"),
        ("If-Match" = String, Header, description = "ETag of the version being changed")),
    request_body(content = Object, description = "A JSON merge patch", content_type = "application/merge-patch+json"),
    responses(
        (status = 200, description = "The patched document", body = crate::openapi::DocumentOut,
            headers(("ETag" = String, description = "New version"))),
        (status = 400, description = "Invalid JSON", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 404, description = "No such document, or not the caller's", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 412, description = "The document changed since the If-Match version", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 413, description = "Over 1 MiB", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 422, description = "Not an object, too deep, or reserved field names", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 428, description = "If-Match is required", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid credentials", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 503, description = "A dependency is unavailable", body = crate::openapi::ProblemDetails, content_type = "application/problem+json")
    ))]
pub async fn patch(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let Path((collection, id)) = path.map_err(path_problem)?;
    validation::collection(&state.documents.collections, &collection)?;
    let expected = if_match(&headers)?;
    let patch = Value::Object(validation::object(&body.map_err(body_problem)?)?);
    let current = owned(&state, &caller, &collection, &id).await?;
    if current.version != expected {
        return Err(store_problem(&StoreError::Stale));
    }
    let mut merged = Value::Object(current.data.clone());
    validation::merge_patch(&mut merged, &patch);
    let Value::Object(merged) = merged else {
        return Err(Problem::internal("merge produced a non-object"));
    };
    validation::merged(&merged)?;
    // Firestore checks `expected` again at commit: a write between our read and now fails.
    let result = state
        .documents
        .store
        .replace(&collection, &current, expected, merged)
        .await;
    let doc = match result {
        Ok(doc) => doc,
        Err(e) => {
            if matches!(e, StoreError::NotFound) {
                state.documents.cache.deleted(&collection, &id).await;
            }
            return Err(store_problem(&e));
        }
    };
    state.documents.cache.written(&collection, &doc).await;
    Ok(with_etag(
        axum::Json(Representation::of(&collection, &doc)).into_response(),
        &doc,
    ))
}

/// Deletes the caller's document.
#[utoipa::path(delete, path = "/v1/{collection}/{id}", tag = "documents",
    params(("collection" = String, Path, description = "An allow-listed collection"), ("id" = String, Path, description = "Document id"),
        ("If-Match" = Option<String>, Header, description = "ETag of the version being deleted")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such document, or not the caller's", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 412, description = "The document changed since the If-Match version", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid credentials", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 503, description = "A dependency is unavailable", body = crate::openapi::ProblemDetails, content_type = "application/problem+json")
    ))]
pub async fn delete(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let Path((collection, id)) = path.map_err(path_problem)?;
    validation::collection(&state.documents.collections, &collection)?;
    let current = owned(&state, &caller, &collection, &id).await?;
    // If-Match is optional here; without it we delete the version we just read.
    let expected = if headers.contains_key(header::IF_MATCH) {
        if_match(&headers)?
    } else {
        current.version
    };
    if expected != current.version {
        return Err(store_problem(&StoreError::Stale));
    }
    let result = state
        .documents
        .store
        .delete(&collection, &id, expected)
        .await;
    if let Err(e) = result {
        return Err(store_problem(&e));
    }
    state.documents.cache.deleted(&collection, &id).await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Page size, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// `nextPageToken` of the previous page.
    #[serde(rename = "pageToken")]
    pub page_token: Option<String>,
}

/// Lists the caller's documents in creation order, a page at a time.
#[utoipa::path(get, path = "/v1/{collection}", tag = "documents",
    params(("collection" = String, Path, description = "An allow-listed collection"), ListParams),
    responses(
        (status = 200, description = "A page", body = crate::openapi::DocumentPage),
        (status = 400, description = "Invalid limit or pageToken", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 404, description = "Unknown collection", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid credentials", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 503, description = "A dependency is unavailable", body = crate::openapi::ProblemDetails, content_type = "application/problem+json")
    ))]
pub async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<ListParams>, QueryRejection>,
) -> Result<Response, Problem> {
    let Path(collection) = path.map_err(path_problem)?;
    validation::collection(&state.documents.collections, &collection)?;
    let Query(params) = query.map_err(|e| Problem::bad_request(e.body_text()))?;
    let limit = params.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(Problem::bad_request(format!(
            "limit must be between 1 and {MAX_PAGE}"
        )));
    }
    let after = match &params.page_token {
        Some(token) => Some(decode_page_token(token)?),
        None => None,
    };
    let (docs, more) = state
        .documents
        .store
        .list(&collection, caller.uid(), limit, after.as_deref())
        .await
        .map_err(|e| store_problem(&e))?;
    let next = match (more, docs.last()) {
        (true, Some(last)) => Some(URL_SAFE_NO_PAD.encode(last.id.as_bytes())),
        _ => None,
    };
    let items: Vec<Value> = docs
        .iter()
        .map(|d| {
            let mut v = representation(&collection, d);
            v["etag"] = json!(d.version.etag());
            v
        })
        .collect();
    Ok(axum::Json(json!({"items": items, "nextPageToken": next})).into_response())
}

/// Page tokens are the last id seen, base64url: opaque to clients, checked like an id.
fn decode_page_token(token: &str) -> Result<String, Problem> {
    URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .filter(|id| validation::document_id(id).is_ok())
        .ok_or_else(|| Problem::bad_request("invalid pageToken"))
}
