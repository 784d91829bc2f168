//! The OpenAPI 3.1 description, generated from the handlers' annotations (utoipa), served at
//! `/openapi.json` and committed as docs/openapi.json (a test fails when the two drift).

use axum::Json;
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use crate::documents::handlers;
use crate::files::handlers as files;
use crate::{jobs, routes};

/// RFC 9457 problem details: the body of every error response.
#[derive(Serialize, ToSchema)]
pub struct ProblemDetails {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// Why a credential was refused (401/503 from authentication only).
    #[schema(nullable = false)]
    pub reason: Option<String>,
}

/// A document as the API returns it.
#[derive(Serialize, ToSchema)]
pub struct DocumentOut {
    pub id: String,
    pub collection: String,
    pub owner: String,
    #[schema(value_type = Object)]
    pub data: Map<String, Value>,
}

/// A document in a listing, with its ETag.
#[derive(Serialize, ToSchema)]
pub struct ListedDocument {
    pub id: String,
    pub collection: String,
    pub owner: String,
    #[schema(value_type = Object)]
    pub data: Map<String, Value>,
    pub etag: String,
}

/// One page of the caller's documents.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DocumentPage {
    pub items: Vec<ListedDocument>,
    /// Pass as `pageToken` for the next page; null on the last page.
    pub next_page_token: Option<String>,
}

/// The caller.
#[derive(Serialize, ToSchema)]
pub struct Me {
    pub uid: String,
    pub admin: bool,
    /// Every claim of the verified token.
    #[schema(value_type = Object)]
    pub claims: Map<String, Value>,
}

/// Whose tokens to revoke; the caller's own when `uid` is absent.
#[derive(Serialize, ToSchema)]
pub struct RevokeRequest {
    pub uid: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Revoked {
    pub uid: String,
    /// Unix seconds; tokens whose auth_time is at or before it are refused.
    pub revoked_at: i64,
}

/// The job types the API publishes (the worker's built-in handlers).
#[derive(Serialize, ToSchema)]
pub enum JobType {
    #[serde(rename = "noop")]
    Noop,
    #[serde(rename = "sleep")]
    Sleep,
    #[serde(rename = "webhook.deliver")]
    WebhookDeliver,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobPriority {
    Critical,
    High,
    Normal,
    Low,
}

/// A job to publish.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobRequest {
    /// `noop`, `sleep` (payload `{"ms": 0..=3600000}`) or `webhook.deliver` (payload
    /// `{"url": "http(s)://…", "body": <any JSON>}`).
    #[serde(rename = "type")]
    pub job_type: JobType,
    /// A JSON object, given to the job's handler as sent.
    #[schema(value_type = Option<Object>)]
    pub payload: Option<Map<String, Value>>,
    /// Repeating a key (per caller, within 24 h) returns the existing job instead of a new one.
    /// At most 200 bytes.
    #[schema(min_length = 1, max_length = 200)]
    pub idempotency_key: Option<String>,
    /// Run no earlier than this many seconds from now (at most 30 days).
    #[schema(maximum = 2592000)]
    pub delay_seconds: Option<u64>,
    /// Claimed before lower priorities; `normal` when absent.
    pub priority: Option<JobPriority>,
}

/// An accepted job.
#[derive(Serialize, ToSchema)]
pub struct JobAccepted {
    pub id: String,
    /// `waiting`, `delayed`, or for a repeated idempotency key the existing job's state.
    pub state: String,
}

/// A job's record.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobOut {
    pub id: String,
    #[serde(rename = "type")]
    pub job_type: String,
    /// `waiting`, `delayed`, `active`, `completed` or `dead` (dead-lettered).
    pub state: String,
    pub priority: String,
    /// Attempts started so far.
    pub attempts: u32,
    pub max_attempts: u32,
    /// Any JSON the handler reported.
    pub progress: Option<Value>,
    /// The handler's result (any JSON), once completed.
    pub result: Option<Value>,
    /// The last failed attempt's error.
    pub last_error: Option<String>,
    /// The publisher's uid.
    pub owner: Option<String>,
    /// RFC 3339 timestamps (Redis clock).
    pub created_at: Option<String>,
    pub run_at: Option<String>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
}

/// A file to register before uploading it.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FileRequest {
    /// 1-255 bytes; no `/`, `\`, `..`, control or invisible formatting characters, no
    /// surrounding whitespace.
    #[schema(min_length = 1, example = "report.pdf")]
    pub file_name: String,
    /// One of the server's allowed content types (`FILES_CONTENT_TYPES`).
    #[schema(example = "application/pdf")]
    pub content_type: String,
    /// Bytes the upload will have; at most `STORAGE_MAX_UPLOAD_BYTES`.
    pub size: u64,
}

/// A registered file and where to upload it.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FileUpload {
    pub id: String,
    /// `pending`.
    pub state: String,
    /// V4 signed URL.
    pub upload_url: String,
    /// `PUT`.
    pub method: String,
    /// Headers the upload must send with exactly these values (they are signed).
    #[schema(value_type = Object)]
    pub required_headers: Map<String, Value>,
    /// RFC 3339; the URL stops working then.
    pub expires_at: String,
}

/// A file's metadata.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FileOut {
    pub id: String,
    pub owner: String,
    pub file_name: String,
    pub content_type: String,
    pub declared_size: u64,
    /// `pending`, `finalizing`, `ready` or `rejected`.
    pub state: String,
    /// Stored size, once finalized.
    pub size: Option<u64>,
    /// Base64 MD5 and CRC32C of the stored bytes, as Cloud Storage reports them.
    pub md5_hash: Option<String>,
    pub crc32c: Option<String>,
    /// Object generation (an int64 as a string).
    pub generation: Option<String>,
    /// Why the upload was rejected.
    pub reason: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    /// When `ready`: a short-lived signed GET URL for the checked generation.
    #[schema(nullable = false)]
    pub download_url: Option<String>,
    #[schema(nullable = false)]
    pub download_expires_at: Option<String>,
}

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "firebase_id_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some("A Firebase ID token"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "firebase_session_cookie",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                "session",
                "A Firebase session cookie",
            ))),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "ScalableApp API",
        description = "Documents owned by Firebase users, stored in Firestore and cached in Redis; background jobs on a Redis queue; files uploaded and downloaded through signed Cloud Storage URLs.",
        version = "1.0.0"
    ),
    paths(
        routes::me,
        routes::revoke,
        handlers::create,
        handlers::list,
        handlers::get,
        handlers::patch,
        handlers::delete,
        jobs::create,
        jobs::get,
        files::create,
        files::complete,
        files::get,
        files::delete
    ),
    components(schemas(ProblemDetails, DocumentOut, ListedDocument, DocumentPage, Me, RevokeRequest, Revoked, JobType, JobPriority, JobRequest, JobAccepted, JobOut, FileRequest, FileUpload, FileOut)),
    modifiers(&Security),
    security(("firebase_id_token" = []), ("firebase_session_cookie" = []))
)]
pub struct ApiDoc;

/// The document as served and committed: pretty JSON with a final newline.
pub fn document() -> String {
    let mut s = ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    s.push('\n');
    s
}

pub async fn serve() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
