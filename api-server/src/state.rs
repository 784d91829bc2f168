//! The shared state of the handlers: handles to Redis and Firestore and the components built
//! on them. Built from [`ServeArgs`] plus already-connected clients, so a test can point it at
//! the services it started.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use firestore::FirestoreDb;

use crate::auth::Verifier;
use crate::auth::keys::KeyStore;
use crate::auth::revocation::{AdminCredentials, Revocations};
use crate::config::ServeArgs;
use crate::documents::{DocCache, Documents, Store};
use crate::files::Files;
use crate::jobs::Jobs;
use crate::observability::Metrics;
use crate::ratelimit::RateLimiter;
use crate::redis::Redis;

/// Cloned for every middleware and handler call, so it is one `Arc` (one atomic increment)
/// rather than a struct of a dozen handles (a profile showed those clones at ~5% of a
/// cache-hit GET).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

#[derive(Clone)]
pub struct Shared {
    pub metrics: Metrics,
    pub redis: Redis,
    pub db: FirestoreDb,
    pub verifier: Arc<Verifier>,
    pub documents: Arc<Documents>,
    pub rate_limiter: Arc<RateLimiter>,
    pub jobs: Arc<Jobs>,
    /// The Files API; `None` when no bucket is configured (its routes answer 503).
    pub files: Option<Arc<Files>>,
    pub session_cookie_name: Arc<str>,
    pub trust_forwarded_for: bool,
    pub request_timeout: Duration,
    /// An OTLP endpoint is configured: each request gets a span with OpenTelemetry's
    /// attributes (without one, requests have no span; their log lines get the trace ids from
    /// `platform::telemetry::with_trace_ids`).
    pub export_spans: bool,
    /// Shared by every lane's copy (see [`AppState::for_lane`]).
    draining: Arc<AtomicBool>,
}

impl AppState {
    /// Without the Files API; see [`with_files`](Self::with_files). Must be called inside a
    /// Tokio runtime (the job queue starts its commit tasks).
    pub fn new(args: &ServeArgs, redis: Redis, db: FirestoreDb, metrics: Metrics) -> Self {
        Self::with_files(args, redis, db, metrics, None)
    }

    /// With the Files API built by [`Files::from_args`] (which can fail, so it is built first).
    pub fn with_files(
        args: &ServeArgs,
        redis: Redis,
        db: FirestoreDb,
        metrics: Metrics,
        files: Option<Files>,
    ) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .build()
            .unwrap_or_default();
        let project = args.firestore.project_id.clone();
        let emulator = args.auth.auth_emulator_host.is_some();
        let credentials = if emulator {
            AdminCredentials::EmulatorOwner
        } else {
            AdminCredentials::Google(tokio::sync::OnceCell::new())
        };
        let revocations = Arc::new(Revocations::new(
            redis.clone(),
            args.auth.revocation_fail_open,
            http.clone(),
            args.auth.identity_toolkit_base(),
            project.clone(),
            credentials,
        ));
        let keys = |name, url: &String| {
            KeyStore::new(
                name,
                url.clone(),
                http.clone(),
                Some(redis.clone()),
                metrics.clone(),
            )
        };
        let verifier = Verifier::new(
            project,
            args.auth.clock_skew_seconds,
            keys("id_token", &args.auth.id_token_keys_url),
            keys("session_cookie", &args.auth.session_cookie_keys_url),
            emulator,
            revocations,
            metrics.clone(),
        );
        let documents = Documents {
            collections: args.collections.iter().cloned().collect(),
            store: Arc::new(Store::new(db.clone(), metrics.clone())),
            cache: DocCache::new(
                redis.clone(),
                Duration::from_secs(args.cache_ttl_seconds),
                Duration::from_secs(args.cache_negative_ttl_seconds),
                metrics.clone(),
            ),
        };
        let rate_limiter = RateLimiter::new(
            redis.clone(),
            args.rate_limit.rate_limit,
            args.rate_limit.rate_limit_window_seconds,
            args.rate_limit.rate_limit_fail,
            metrics.clone(),
        );
        let jobs = Jobs::new(&args.jobs, &redis, &metrics);
        Self(Arc::new(Shared {
            jobs: Arc::new(jobs),
            files: files.map(Arc::new),
            metrics,
            redis,
            db,
            verifier: Arc::new(verifier),
            documents: Arc::new(documents),
            rate_limiter: Arc::new(rate_limiter),
            session_cookie_name: args.auth.session_cookie_name.as_str().into(),
            trust_forwarded_for: args.rate_limit.trust_forwarded_for,
            request_timeout: args.request_timeout(),
            export_spans: args.otlp_endpoint.is_some(),
            draining: Arc::new(AtomicBool::new(false)),
        }))
    }

    /// The same state behind an `Arc` of the lane's own. Handlers and middleware clone the
    /// state for every request; with one `Arc` for all lanes its count's cache line would move
    /// between cores on each clone.
    pub fn for_lane(&self) -> Self {
        Self(Arc::new(Shared::clone(&self.0)))
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }
}
