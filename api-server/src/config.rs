//! `api-server serve` options. Every flag is also an environment variable so a Helm chart sets
//! them without templating a command line; the emulator variables keep their standard names.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use platform::config::{FirestoreArgs, RedisArgs, StorageArgs};
use platform::queue::QueueName;

pub const GOOGLE_ID_TOKEN_KEYS: &str =
    "https://www.googleapis.com/robot/v1/metadata/x509/securetoken@system.gserviceaccount.com";
pub const GOOGLE_SESSION_COOKIE_KEYS: &str =
    "https://www.googleapis.com/identitytoolkit/v3/relyingparty/publicKeys";
pub const IDENTITY_TOOLKIT: &str = "https://identitytoolkit.googleapis.com";

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Public API address.
    #[arg(long, env = "API_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// Admin address: /healthz, /readyz, /metrics. Not exposed through the load balancer.
    #[arg(long, env = "API_ADMIN_LISTEN", default_value = "0.0.0.0:9090")]
    pub admin_listen: SocketAddr,

    /// Threads serving the public port, each a single-threaded runtime with its own Redis
    /// connection; 0 means one per CPU available to the process (a container's CPU limit
    /// counts). The operator sets it to the container's CPU limit, or its CPU request when it
    /// has no limit, rounded up to whole cores.
    #[arg(long, env = "API_THREADS", default_value_t = 0)]
    pub threads: usize,

    #[command(flatten)]
    pub redis: RedisArgs,
    /// Per-command Redis timeout; past it a call counts as failed and the request degrades.
    #[arg(long, env = "API_REDIS_TIMEOUT_MS", default_value_t = 1000)]
    pub redis_timeout_ms: u64,

    #[command(flatten)]
    pub firestore: FirestoreArgs,

    #[command(flatten)]
    pub auth: AuthArgs,

    /// Collections clients may use (comma-separated).
    #[arg(
        long,
        env = "API_COLLECTIONS",
        value_delimiter = ',',
        default_value = "notes"
    )]
    pub collections: Vec<String>,
    /// Lifetime of a cached document; each entry gets up to 10% random extra so entries filled
    /// together do not expire together.
    #[arg(long, env = "API_CACHE_TTL_SECONDS", default_value_t = 300)]
    pub cache_ttl_seconds: u64,
    /// Lifetime of a cached "not found".
    #[arg(long, env = "API_CACHE_NEGATIVE_TTL_SECONDS", default_value_t = 5)]
    pub cache_negative_ttl_seconds: u64,

    #[command(flatten)]
    pub rate_limit: RateLimitArgs,

    #[command(flatten)]
    pub jobs: JobsArgs,

    #[command(flatten)]
    pub files: FilesArgs,

    /// Longest a request may take; past it the client gets 504 (problem+json) and the work is
    /// abandoned, so a hung dependency cannot pile up open requests. Keep it below the
    /// shutdown grace period.
    #[arg(long, env = "API_REQUEST_TIMEOUT_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(100..=300_000))]
    pub request_timeout_ms: u64,

    /// After SIGTERM, how long /readyz reports false while requests are still served, so the
    /// load balancer stops sending new ones before the listener closes.
    #[arg(long, env = "API_DRAIN_SECONDS", default_value_t = 5)]
    pub drain_seconds: u64,
    /// OTLP/gRPC endpoint for spans (`http://collector:4317`); no export when unset.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// `service.name` of exported spans.
    #[arg(long, env = "OTEL_SERVICE_NAME", default_value = "api-server")]
    pub service_name: String,

    /// After the drain period, how long in-flight requests get to finish.
    #[arg(long, env = "API_SHUTDOWN_GRACE_SECONDS", default_value_t = 20)]
    pub shutdown_grace_seconds: u64,
}

#[derive(Debug, Clone, Args)]
pub struct AuthArgs {
    /// `host:port` of the Firebase Auth emulator (standard variable). When set, unsigned
    /// emulator tokens are accepted: never set it in production.
    #[arg(long, env = "FIREBASE_AUTH_EMULATOR_HOST")]
    pub auth_emulator_host: Option<String>,
    /// x509 key endpoint for ID tokens.
    #[arg(long, env = "API_ID_TOKEN_KEYS_URL", default_value = GOOGLE_ID_TOKEN_KEYS)]
    pub id_token_keys_url: String,
    /// x509 key endpoint for session cookies.
    #[arg(long, env = "API_SESSION_COOKIE_KEYS_URL", default_value = GOOGLE_SESSION_COOKIE_KEYS)]
    pub session_cookie_keys_url: String,
    /// Name of the cookie carrying a Firebase session cookie.
    #[arg(long, env = "API_SESSION_COOKIE_NAME", default_value = "session")]
    pub session_cookie_name: String,
    /// Clock skew tolerated on iat, auth_time and exp (0-60 s, as the Admin SDK allows).
    #[arg(long, env = "API_CLOCK_SKEW_SECONDS", default_value_t = 0,
          value_parser = clap::value_parser!(u64).range(0..=60))]
    pub clock_skew_seconds: u64,
    /// Identity Toolkit base URL for revoking refresh tokens; defaults to Google's, or to the
    /// emulator's when FIREBASE_AUTH_EMULATOR_HOST is set.
    #[arg(long, env = "API_IDENTITY_TOOLKIT_URL")]
    pub identity_toolkit_url: Option<String>,
    /// When Redis cannot be asked whether a user was revoked: accept the token (true) or
    /// answer 503 (false). Revocations this server recorded itself are always enforced.
    #[arg(long, env = "API_REVOCATION_FAIL_OPEN", default_value_t = true,
          action = clap::ArgAction::Set)]
    pub revocation_fail_open: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FailMode {
    /// Allow the request when Redis cannot decide.
    Open,
    /// Answer 503 when Redis cannot decide.
    Closed,
}

#[derive(Debug, Clone, Args)]
pub struct RateLimitArgs {
    /// Requests allowed per window and key (uid, or client IP when unauthenticated).
    #[arg(long, env = "API_RATE_LIMIT", default_value_t = 600)]
    pub rate_limit: u32,
    /// The window, in seconds.
    #[arg(long, env = "API_RATE_LIMIT_WINDOW_SECONDS", default_value_t = 60)]
    pub rate_limit_window_seconds: u32,
    /// What to do when Redis is unreachable.
    #[arg(long, env = "API_RATE_LIMIT_FAIL", value_enum, default_value_t = FailMode::Open)]
    pub rate_limit_fail: FailMode,
    /// Take the client IP from the first X-Forwarded-For entry (only behind a proxy that sets it).
    #[arg(long, env = "API_TRUST_FORWARDED_FOR", default_value_t = false)]
    pub trust_forwarded_for: bool,
}

#[derive(Debug, Clone, Args)]
pub struct JobsArgs {
    /// Queue that `POST /v1/jobs` enqueues into (the workers' `WORKER_QUEUES` must include it).
    #[arg(long, env = "API_JOBS_QUEUE", default_value = "jobs", value_parser = queue_name)]
    pub jobs_queue: QueueName,
    /// Replicas that must hold a job before `POST /v1/jobs` answers 202 (0 = do not wait; a
    /// failover may then lose accepted jobs). With no replica, every enqueue answers 503.
    #[arg(long, env = "API_JOBS_DURABLE_REPLICAS", default_value_t = 1)]
    pub jobs_durable_replicas: u32,
    /// How long to wait for those replicas before answering 503.
    #[arg(long, env = "API_JOBS_DURABLE_TIMEOUT_MS", default_value_t = 2000)]
    pub jobs_durable_timeout_ms: u64,
}

/// The Files API: uploads and downloads through V4 signed URLs, metadata in Firestore.
#[derive(Debug, Clone, Args)]
pub struct FilesArgs {
    #[command(flatten)]
    pub storage: StorageArgs,
    /// Service-account JSON key that signs the URLs. Without it (and without
    /// STORAGE_SIGNING_SERVICE_ACCOUNT) the key in GOOGLE_APPLICATION_CREDENTIALS signs; against
    /// an emulator, which checks no signature, a throwaway key does.
    #[arg(long, env = "STORAGE_SIGNING_KEY_FILE")]
    pub storage_signing_key_file: Option<PathBuf>,
    /// Sign through the IAM Credentials signBlob API as this service account (keyless, with a
    /// metadata-server token under Workload Identity) instead of with a key file.
    #[arg(
        long,
        env = "STORAGE_SIGNING_SERVICE_ACCOUNT",
        conflicts_with = "storage_signing_key_file"
    )]
    pub storage_signing_service_account: Option<String>,
    /// Lifetime of an upload URL (1 s to 7 days).
    #[arg(long, env = "FILES_UPLOAD_URL_SECONDS", default_value_t = 900,
          value_parser = clap::value_parser!(u64).range(1..=604_800))]
    pub files_upload_url_seconds: u64,
    /// Lifetime of a download URL (1 s to 7 days).
    #[arg(long, env = "FILES_DOWNLOAD_URL_SECONDS", default_value_t = 300,
          value_parser = clap::value_parser!(u64).range(1..=604_800))]
    pub files_download_url_seconds: u64,
    /// Content types clients may upload (comma-separated, exact match, case-insensitive).
    #[arg(
        long,
        env = "FILES_CONTENT_TYPES",
        value_delimiter = ',',
        default_value = "image/png,image/jpeg,image/gif,image/webp,application/pdf,text/plain"
    )]
    pub files_content_types: Vec<String>,
}

fn queue_name(s: &str) -> Result<QueueName, String> {
    QueueName::new(s).map_err(|e| e.to_string())
}

impl ServeArgs {
    pub fn redis_timeout(&self) -> Duration {
        Duration::from_millis(self.redis_timeout_ms)
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
}

impl AuthArgs {
    pub fn identity_toolkit_base(&self) -> String {
        match (&self.identity_toolkit_url, &self.auth_emulator_host) {
            (Some(url), _) => url.trim_end_matches('/').to_string(),
            (None, Some(host)) => format!("http://{host}/identitytoolkit.googleapis.com"),
            (None, None) => IDENTITY_TOOLKIT.to_string(),
        }
    }
}
