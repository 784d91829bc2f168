//! The app ConfigMap: every non-secret setting the api-server and worker read from their
//! environment (`envFrom`). Its content hash is stamped on the pod templates, so a config
//! change rolls the pods instead of leaving them on stale values.
//!
//! Environment contract with the workloads: the names `api-server serve --help` and
//! `worker run --help` list (tests/tests/docs.rs fails when a name here is read by neither):
//! `RUST_LOG`, `API_LISTEN`, `API_ADMIN_LISTEN`, `WORKER_ADMIN_PORT`,
//! `OTEL_EXPORTER_OTLP_ENDPOINT`, `REDIS_SENTINELS` (comma-separated `host:port`) +
//! `REDIS_MASTER_NAME`, or `REDIS_URL`, `GOOGLE_CLOUD_PROJECT`, `GOOGLE_APPLICATION_CREDENTIALS`
//! (a file path; the key itself stays in its Secret), `FIRESTORE_EMULATOR_HOST`,
//! `FIREBASE_AUTH_EMULATOR_HOST` (only when set), `API_RATE_LIMIT` +
//! `API_RATE_LIMIT_WINDOW_SECONDS`, `WORKER_QUEUES` + `API_JOBS_QUEUE` (the same queue),
//! `WORKER_CONCURRENCY`, `STORAGE_BUCKET` (the Files API and the worker's `file.finalize`; both
//! off without it) and `STORAGE_EMULATOR_HOST` (only when set). The api-server signs URLs with
//! the mounted service-account key (`GOOGLE_APPLICATION_CREDENTIALS`).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use sha2::{Digest, Sha256};

use super::RenderContext;
use super::meta::AppMeta;
use super::pod::{ADMIN_PORT, HTTP_PORT};
use crate::api::{RedisMode, ScalableAppSpec};

/// Where the Firebase credentials Secret is mounted.
pub const CREDENTIALS_DIR: &str = "/var/run/secrets/firebase";
/// Port every sentinel listens on.
pub const SENTINEL_PORT: i32 = 26379;
/// Port every Redis listens on.
pub const REDIS_PORT: i32 = 6379;

pub(super) fn app_config(m: &AppMeta, spec: &ScalableAppSpec, ctx: &RenderContext) -> ConfigMap {
    let mut data = BTreeMap::new();
    let mut set = |k: &str, v: String| {
        data.insert(k.to_string(), v);
    };
    set(
        "RUST_LOG",
        spec.observability.log_level.as_str().to_string(),
    );
    set("API_LISTEN", format!("0.0.0.0:{HTTP_PORT}"));
    set("API_ADMIN_LISTEN", format!("0.0.0.0:{ADMIN_PORT}"));
    set("WORKER_ADMIN_PORT", ADMIN_PORT.to_string());
    if let Some(endpoint) = &spec.observability.otlp_endpoint {
        set("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.clone());
    }

    match spec.redis.mode {
        RedisMode::Sentinel => {
            set(
                "REDIS_SENTINELS",
                sentinel_addresses(m, spec.redis.sentinels, &ctx.cluster_domain).join(","),
            );
            set("REDIS_MASTER_NAME", spec.redis.master_name.clone());
        }
        RedisMode::External => {
            if let Some(url) = &spec.redis.url {
                set("REDIS_URL", url.clone());
            }
            if let Some(addresses) = &spec.redis.sentinel_addresses {
                set("REDIS_SENTINELS", addresses.join(","));
                set("REDIS_MASTER_NAME", spec.redis.master_name.clone());
            }
        }
    }

    let firebase = &spec.firebase;
    set("GOOGLE_CLOUD_PROJECT", firebase.project_id.clone());
    if let Some(bucket) = &firebase.storage_bucket {
        set("STORAGE_BUCKET", bucket.clone());
    }
    if let Some(secret) = &firebase.credentials_secret {
        set(
            "GOOGLE_APPLICATION_CREDENTIALS",
            format!("{CREDENTIALS_DIR}/{}", secret.key),
        );
    }
    if let Some(emulators) = &firebase.emulators {
        if let Some(host) = &emulators.firestore {
            set("FIRESTORE_EMULATOR_HOST", host.clone());
        }
        if let Some(host) = &emulators.auth {
            set("FIREBASE_AUTH_EMULATOR_HOST", host.clone());
        }
        if let Some(host) = &emulators.storage {
            set("STORAGE_EMULATOR_HOST", host.clone());
        }
    }

    // The api-server's GCRA admits `limit` requests at once, then one per `window / limit`: the
    // capacity is the sustained rate plus the burst, and the window makes the rate come out.
    let rate_limit = &spec.api.rate_limit;
    let rps = rate_limit.requests_per_second.max(1);
    let capacity = rps + rate_limit.burst.max(0);
    let window = (f64::from(capacity) / f64::from(rps)).round().max(1.0);
    set("API_RATE_LIMIT", capacity.to_string());
    set("API_RATE_LIMIT_WINDOW_SECONDS", format!("{window}"));
    // The API publishes to the queue the workers consume; a renamed queue must move both.
    set("WORKER_QUEUES", spec.worker.queue.name.clone());
    set("API_JOBS_QUEUE", spec.worker.queue.name.clone());
    set("WORKER_CONCURRENCY", spec.worker.concurrency.to_string());

    ConfigMap {
        metadata: m.object_meta(&m.names.config, "config"),
        data: Some(data),
        ..Default::default()
    }
}

/// Stable `host:port` of each sentinel pod (through the headless Service), so clients can ask
/// several sentinels and survive any one of them being down.
pub(super) fn sentinel_addresses(m: &AppMeta, sentinels: i32, cluster_domain: &str) -> Vec<String> {
    let n = &m.names;
    (0..sentinels)
        .map(|i| {
            format!(
                "{}-{i}.{}:{SENTINEL_PORT}",
                n.sentinel,
                m.service_host(&n.sentinel_headless, cluster_domain)
            )
        })
        .collect()
}

/// Short content hash of a ConfigMap's data, for the pod template annotation.
pub(super) fn hash(config: &ConfigMap) -> String {
    let mut hasher = Sha256::new();
    // BTreeMaps iterate sorted, so equal data always hashes equal.
    for (k, v) in config.data.iter().flatten() {
        hasher.update(k.as_bytes());
        hasher.update([0]);
        hasher.update(v.as_bytes());
        hasher.update([0]);
    }
    let digest = hasher.finalize();
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}
