//! The OpenAPI 3.1 description, generated from the handlers' annotations (utoipa), served at
//! `/openapi.json` and committed as docs/openapi.json (a test fails when the two drift).

use axum::Json;
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use crate::documents::handlers;
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
        description = "Documents owned by Firebase users, stored in Firestore and cached in Redis; background jobs on a Redis queue.",
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
        jobs::get
    ),
    components(schemas(ProblemDetails, DocumentOut, ListedDocument, DocumentPage, Me, RevokeRequest, Revoked, JobType, JobPriority, JobRequest, JobAccepted, JobOut)),
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
