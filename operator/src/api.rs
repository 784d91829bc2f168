//! The `ScalableApp` custom resource: the one object a platform team writes.
//!
//! These Rust types are the source of truth for the CRD (`operator crd` prints it). Validation
//! lives in the schema so the apiserver rejects a bad spec at `kubectl apply` time with a message
//! that says what to fix, instead of the operator failing later. Cross-field rules are CEL
//! (`x-kubernetes-validations`) on the struct that owns both fields, so the error path points at
//! the right place (`spec.api`, `spec.redis`, ...).
//!
//! Defaults are serde defaults, which schemars also writes into the schema, so the apiserver
//! stores them and `kubectl get -o yaml` shows the effective spec. Images are the exception: they
//! stay optional and resolve to the operator's own release at render time, so upgrading the
//! operator upgrades the workloads of apps that did not pin an image.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// API group of the custom resource.
pub const GROUP: &str = "scalable.dev";
/// Version of the custom resource served and stored.
pub const VERSION: &str = "v1alpha1";

/// Desired state of one ScalableApp: API servers, workers, Redis with Sentinel, Firebase wiring,
/// observability and an optional ingress.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "scalable.dev",
    version = "v1alpha1",
    kind = "ScalableApp",
    doc = "One application of the ScalableApp architecture: API servers, workers, Redis with Sentinel, Firebase wiring, autoscaling, disruption budgets, network policies and alerts, kept in shape by the scalable operator.",
    plural = "scalableapps",
    shortname = "sapp",
    namespaced,
    status = "ScalableAppStatus",
    derive = "PartialEq",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"API","type":"string","jsonPath":".status.api.ready"}"#,
    printcolumn = r#"{"name":"Workers","type":"string","jsonPath":".status.worker.ready"}"#,
    printcolumn = r#"{"name":"Redis","type":"string","jsonPath":".status.redis.ready"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ScalableAppSpec {
    /// Stateless HTTP API servers.
    #[serde(default)]
    pub api: ApiSpec,
    /// Background job workers consuming the Redis queue.
    #[serde(default)]
    pub worker: WorkerSpec,
    /// Redis used as cache, token store and job queue.
    #[serde(default)]
    pub redis: RedisSpec,
    /// Firebase project the workloads use for Firestore, Auth and Storage.
    pub firebase: FirebaseSpec,
    /// Logs, traces, metrics scraping and alert rules.
    #[serde(default)]
    pub observability: ObservabilitySpec,
    /// Optional Ingress in front of the API Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<IngressSpec>,
    /// When true the operator makes no writes for this app (children and status are left as they are).
    #[serde(default)]
    pub paused: bool,
}

/// API server Deployment, Service and autoscaling.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("self.minReplicas <= self.maxReplicas").message("api.minReplicas must be less than or equal to api.maxReplicas"))]
#[serde(rename_all = "camelCase")]
pub struct ApiSpec {
    /// Container image; defaults to the api-server release matching the operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Fewest replicas the autoscaler keeps.
    #[serde(default = "default_api_min")]
    #[schemars(range(min = 1))]
    pub min_replicas: i32,
    /// Most replicas the autoscaler may create.
    #[serde(default = "default_api_max")]
    #[schemars(range(min = 1))]
    pub max_replicas: i32,
    /// Average CPU utilisation (percent of requests) the autoscaler aims for.
    #[serde(default = "default_cpu_target")]
    #[schemars(range(min = 10, max = 100))]
    pub target_cpu_utilization: i32,
    /// Container resources; sensible requests and limits are used when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Per-client rate limit, enforced by the API servers (through Redis) and the Ingress.
    #[serde(default)]
    pub rate_limit: RateLimitSpec,
}

/// Requests per second per client and the burst allowed above it.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RateLimitSpec {
    /// Sustained requests per second per client.
    #[serde(default = "default_rps")]
    #[schemars(range(min = 1))]
    pub requests_per_second: i32,
    /// Extra requests a client may send at once on top of the sustained rate.
    #[serde(default = "default_burst")]
    #[schemars(range(min = 0))]
    pub burst: i32,
}

/// Worker Deployment and how it scales.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("self.minReplicas <= self.maxReplicas").message("worker.minReplicas must be less than or equal to worker.maxReplicas"))]
#[serde(rename_all = "camelCase")]
pub struct WorkerSpec {
    /// Container image; defaults to the worker release matching the operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Fewest replicas the autoscaler keeps.
    #[serde(default = "default_worker_min")]
    #[schemars(range(min = 1))]
    pub min_replicas: i32,
    /// Most replicas the autoscaler may create.
    #[serde(default = "default_worker_max")]
    #[schemars(range(min = 1))]
    pub max_replicas: i32,
    /// Jobs one worker process runs at the same time.
    #[serde(default = "default_concurrency")]
    #[schemars(range(min = 1, max = 1000))]
    pub concurrency: i32,
    /// Container resources; sensible requests and limits are used when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// What drives the number of workers.
    #[serde(default)]
    pub scaling: WorkerScalingSpec,
    /// The job queue the workers consume.
    #[serde(default)]
    pub queue: QueueSpec,
}

/// Worker autoscaling signal.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WorkerScalingSpec {
    /// `Cpu` scales on CPU utilisation; `QueueBacklog` scales on jobs waiting (needs KEDA;
    /// without KEDA's ScaledObject CRD the operator falls back to CPU). Not named `on`: YAML 1.1
    /// parsers (kubectl's among them) read that key as the boolean `true`.
    #[serde(default)]
    pub signal: ScalingSignal,
    /// Average CPU utilisation (percent of requests) the autoscaler aims for.
    #[serde(default = "default_cpu_target")]
    #[schemars(range(min = 10, max = 100))]
    pub target_cpu_utilization: i32,
    /// Waiting jobs per worker replica before another replica is added (QueueBacklog).
    #[serde(default = "default_jobs_per_replica")]
    #[schemars(range(min = 1))]
    pub jobs_per_replica: i32,
}

/// Signal the worker autoscaler follows.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ScalingSignal {
    /// CPU utilisation through a HorizontalPodAutoscaler.
    #[default]
    Cpu,
    /// Queue backlog through a KEDA ScaledObject (redis-streams trigger).
    QueueBacklog,
}

/// The job queue (platform::queue): its keys are `q:{<name>}:...`, one list of ready jobs per
/// priority, so KEDA can scale on their lengths.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct QueueSpec {
    /// Queue name the api-server publishes to and the workers consume.
    #[serde(default = "default_queue_name")]
    #[schemars(length(min = 1, max = 64), regex(pattern = r"^[A-Za-z0-9._-]+$"))]
    pub name: String,
}

/// Redis: run by the operator with Sentinel, or an external endpoint.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(
    validation = Rule::new("self.mode != 'Sentinel' || (!has(self.url) && !has(self.sentinelAddresses))").message("redis.url and redis.sentinelAddresses are only for mode External: remove them, or set redis.mode to External"),
    validation = Rule::new("self.mode != 'External' || has(self.url) || (has(self.sentinelAddresses) && size(self.sentinelAddresses) > 0)").message("redis.mode External needs redis.url or redis.sentinelAddresses"),
    validation = Rule::new("!has(self.url) || !has(self.sentinelAddresses)").message("set either redis.url or redis.sentinelAddresses, not both"),
    validation = Rule::new("self.mode != 'Sentinel' || self.replicas >= 2").message("redis.replicas must be at least 2 in Sentinel mode (one master and at least one replica to fail over to)"),
    validation = Rule::new("self.mode != 'Sentinel' || (self.sentinels >= 3 && self.sentinels % 2 == 1)").message("redis.sentinels must be an odd number, at least 3, so a majority can agree on a failover")
)]
#[serde(rename_all = "camelCase")]
pub struct RedisSpec {
    /// `Sentinel`: the operator runs Redis with Sentinel. `External`: use `url` or `sentinelAddresses`.
    #[serde(default)]
    pub mode: RedisMode,
    /// Redis pods (one master, the rest replicas). Sentinel mode only.
    #[serde(default = "default_redis_replicas")]
    #[schemars(range(min = 1, max = 9))]
    pub replicas: i32,
    /// Sentinel processes (odd, at least 3). Sentinel mode only.
    #[serde(default = "default_sentinels")]
    #[schemars(range(min = 1, max = 9))]
    pub sentinels: i32,
    /// Name Sentinel monitors the master under.
    #[serde(default = "default_master_name")]
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-zA-Z0-9_-]+$"))]
    pub master_name: String,
    /// Redis (and Sentinel) image.
    #[serde(default = "default_redis_image")]
    pub image: String,
    /// Prometheus exporter sidecar image (redis_exporter; serves `redis_*` metrics on 9121).
    #[serde(default = "default_exporter_image")]
    pub exporter_image: String,
    /// Persistent storage of each Redis pod.
    #[serde(default)]
    pub storage: StorageSpec,
    /// Resources of each Redis container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// External mode: a `redis://` or `rediss://` URL of a single endpoint (managed Redis).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^rediss?://"))]
    pub url: Option<String>,
    /// External mode: `host:port` of each sentinel of an existing Sentinel group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 9))]
    pub sentinel_addresses: Option<Vec<String>>,
    /// Secret key holding the password of the Redis data nodes (`requirepass`), passed to the
    /// pods by reference only. Sentinel mode without it: the operator creates
    /// `<app>-redis-auth` (key `password`, random) once and never changes it. External mode
    /// without it: no password. Sentinels themselves are not password-protected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret: Option<PasswordSecretRef>,
}

/// A key in a Secret in the app's namespace holding the Redis password. The value is used
/// verbatim in redis.conf, so it must not contain whitespace or quotes.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PasswordSecretRef {
    /// Secret name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key in the Secret.
    #[serde(default = "default_password_key")]
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// Key of the password in the Secret the operator generates.
pub const GENERATED_PASSWORD_KEY: &str = "password";

impl RedisSpec {
    /// Name of the Secret the operator generates when `passwordSecret` is absent.
    pub fn generated_password_secret(app: &str) -> String {
        format!("{app}-redis-auth")
    }

    /// The Secret and key the pods read `REDIS_PASSWORD` from, if Redis has a password.
    pub fn password_ref(&self, app: &str) -> Option<PasswordSecretRef> {
        match (&self.password_secret, self.mode) {
            (Some(r), _) => Some(r.clone()),
            (None, RedisMode::Sentinel) => Some(PasswordSecretRef {
                name: Self::generated_password_secret(app),
                key: GENERATED_PASSWORD_KEY.to_string(),
            }),
            (None, RedisMode::External) => None,
        }
    }
}

/// How Redis is provided.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum RedisMode {
    /// Operator-run Redis StatefulSet with Sentinel.
    #[default]
    Sentinel,
    /// An existing Redis, reached by URL or through its sentinels.
    External,
}

/// Persistent volume of each Redis pod.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// Volume size, e.g. `1Gi`.
    #[serde(default = "default_storage_size")]
    pub size: String,
    /// StorageClass; the cluster default when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
    /// Delete the volumes when the ScalableApp is deleted. Off by default: data outlives uninstall.
    #[serde(default)]
    pub delete_on_uninstall: bool,
}

/// Firebase project wiring. Credentials are passed by Secret reference, never inline.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("has(self.credentialsSecret) || has(self.emulators)").message("firebase.credentialsSecret is required unless firebase.emulators is set (emulators are for development and e2e only)"))]
#[serde(rename_all = "camelCase")]
pub struct FirebaseSpec {
    /// Firebase / Google Cloud project id.
    #[schemars(length(min = 1, max = 63))]
    pub project_id: String,
    /// Cloud Storage bucket for uploads, e.g. `my-project.appspot.com`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_bucket: Option<String>,
    /// Secret holding a service-account JSON key; mounted read-only into the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<SecretKeyRef>,
    /// Emulator endpoints (`host:port`) for development and end-to-end tests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emulators: Option<FirebaseEmulators>,
}

/// A key in a Secret in the app's namespace.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Secret name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key in the Secret.
    #[serde(default = "default_credentials_key")]
    pub key: String,
}

/// Firebase emulator hosts; only the ones set are passed to the workloads.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct FirebaseEmulators {
    /// Firestore emulator `host:port` (FIRESTORE_EMULATOR_HOST).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firestore: Option<String>,
    /// Auth emulator `host:port` (FIREBASE_AUTH_EMULATOR_HOST).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<String>,
    /// Storage emulator `host:port` (STORAGE_EMULATOR_HOST).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<String>,
}

/// Telemetry and alerting.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ObservabilitySpec {
    /// OTLP gRPC endpoint for traces, e.g. `http://otel-collector.observability:4317`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub otlp_endpoint: Option<String>,
    /// Log level of the workloads.
    #[serde(default)]
    pub log_level: LogLevel,
    /// Create a ServiceMonitor when the Prometheus Operator's CRD is installed.
    #[serde(default = "default_true")]
    pub service_monitor: bool,
    /// Alert rules.
    #[serde(default)]
    pub alerts: AlertsSpec,
}

/// Log level passed to the workloads.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Errors only.
    Error,
    /// Warnings and errors.
    Warn,
    /// The default.
    #[default]
    Info,
    /// Verbose.
    Debug,
    /// Very verbose.
    Trace,
}

impl LogLevel {
    /// The value as written in env vars and filters.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

/// Alert rules and the SLO they are derived from.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AlertsSpec {
    /// Render alert rules (PrometheusRule, or a ConfigMap when its CRD is missing).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Service level objective the burn-rate alerts protect.
    #[serde(default)]
    pub slo: SloSpec,
    /// Labels added to every rule, e.g. to route alerts to a team.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra_labels: BTreeMap<String, String>,
}

/// Availability and latency objectives over a 30-day window.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(
    validation = Rule::new("self.availabilityTarget > 0.5 && self.availabilityTarget < 1.0").message("observability.alerts.slo.availabilityTarget must be between 0.5 and 1.0 (exclusive), e.g. 0.999"),
    validation = Rule::new("self.latencyTarget > 0.5 && self.latencyTarget < 1.0").message("observability.alerts.slo.latencyTarget must be between 0.5 and 1.0 (exclusive), e.g. 0.99"),
    validation = Rule::new("self.latencyThresholdSeconds in [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]").message("observability.alerts.slo.latencyThresholdSeconds must be a histogram bucket bound of the API servers: 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5 or 10")
)]
#[serde(rename_all = "camelCase")]
pub struct SloSpec {
    /// Fraction of requests that must not fail with a 5xx, e.g. 0.999.
    #[serde(default = "default_availability")]
    pub availability_target: f64,
    /// Requests slower than this count against the latency objective (a histogram bucket bound).
    #[serde(default = "default_latency_threshold")]
    pub latency_threshold_seconds: f64,
    /// Fraction of requests that must be faster than the threshold, e.g. 0.99.
    #[serde(default = "default_latency_target")]
    pub latency_target: f64,
}

/// Ingress in front of the API Service.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct IngressSpec {
    /// Public host name.
    #[schemars(length(min = 1, max = 253))]
    pub host: String,
    /// IngressClass; the cluster default when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_name: Option<String>,
    /// Secret with the TLS certificate for `host`; plain HTTP when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_secret_name: Option<String>,
}

/// Observed state, written by the operator.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ScalableAppStatus {
    /// The `metadata.generation` this status was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready, Progressing, Degraded, and ApiReady, WorkerReady, RedisReady.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// API server replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api: Option<ComponentStatus>,
    /// Worker replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<ComponentStatus>,
    /// Redis replicas and how clients connect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<RedisStatus>,
}

/// Replica counts of one workload.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ComponentStatus {
    /// Pods the workload wants.
    pub replicas: i32,
    /// Pods that are ready.
    pub ready_replicas: i32,
    /// `ready/desired`, for `kubectl get`.
    pub ready: String,
}

/// Redis replica counts and connection info.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RedisStatus {
    /// Redis pods wanted (0 in External mode).
    pub replicas: i32,
    /// Redis pods ready.
    pub ready_replicas: i32,
    /// `ready/desired`, or `external`.
    pub ready: String,
    /// Sentinel mode: the Service clients ask for the current master (`host:port`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sentinel_service: Option<String>,
    /// Name the sentinels know the master by.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master_name: Option<String>,
}

impl Default for ApiSpec {
    fn default() -> Self {
        Self {
            image: None,
            min_replicas: default_api_min(),
            max_replicas: default_api_max(),
            target_cpu_utilization: default_cpu_target(),
            resources: None,
            rate_limit: RateLimitSpec::default(),
        }
    }
}

impl Default for RateLimitSpec {
    fn default() -> Self {
        Self {
            requests_per_second: default_rps(),
            burst: default_burst(),
        }
    }
}

impl Default for WorkerSpec {
    fn default() -> Self {
        Self {
            image: None,
            min_replicas: default_worker_min(),
            max_replicas: default_worker_max(),
            concurrency: default_concurrency(),
            resources: None,
            scaling: WorkerScalingSpec::default(),
            queue: QueueSpec::default(),
        }
    }
}

impl Default for WorkerScalingSpec {
    fn default() -> Self {
        Self {
            signal: ScalingSignal::default(),
            target_cpu_utilization: default_cpu_target(),
            jobs_per_replica: default_jobs_per_replica(),
        }
    }
}

impl Default for QueueSpec {
    fn default() -> Self {
        Self {
            name: default_queue_name(),
        }
    }
}

impl Default for RedisSpec {
    fn default() -> Self {
        Self {
            mode: RedisMode::default(),
            replicas: default_redis_replicas(),
            sentinels: default_sentinels(),
            master_name: default_master_name(),
            image: default_redis_image(),
            exporter_image: default_exporter_image(),
            storage: StorageSpec::default(),
            resources: None,
            url: None,
            sentinel_addresses: None,
            password_secret: None,
        }
    }
}

impl Default for StorageSpec {
    fn default() -> Self {
        Self {
            size: default_storage_size(),
            storage_class_name: None,
            delete_on_uninstall: false,
        }
    }
}

impl Default for ObservabilitySpec {
    fn default() -> Self {
        Self {
            otlp_endpoint: None,
            log_level: LogLevel::default(),
            service_monitor: true,
            alerts: AlertsSpec::default(),
        }
    }
}

impl Default for AlertsSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            slo: SloSpec::default(),
            extra_labels: BTreeMap::new(),
        }
    }
}

impl Default for SloSpec {
    fn default() -> Self {
        Self {
            availability_target: default_availability(),
            latency_threshold_seconds: default_latency_threshold(),
            latency_target: default_latency_target(),
        }
    }
}

fn default_api_min() -> i32 {
    2
}
fn default_api_max() -> i32 {
    10
}
fn default_worker_min() -> i32 {
    2
}
fn default_worker_max() -> i32 {
    10
}
fn default_cpu_target() -> i32 {
    70
}
fn default_rps() -> i32 {
    50
}
fn default_burst() -> i32 {
    100
}
fn default_concurrency() -> i32 {
    8
}
fn default_jobs_per_replica() -> i32 {
    100
}
fn default_queue_name() -> String {
    "jobs".into()
}
fn default_redis_replicas() -> i32 {
    3
}
fn default_sentinels() -> i32 {
    3
}
fn default_master_name() -> String {
    "mymaster".into()
}
fn default_redis_image() -> String {
    "redis:7.2".into()
}
fn default_exporter_image() -> String {
    "oliver006/redis_exporter:v1.67.0".into()
}
fn default_storage_size() -> String {
    "1Gi".into()
}
fn default_password_key() -> String {
    GENERATED_PASSWORD_KEY.to_string()
}
fn default_credentials_key() -> String {
    "credentials.json".into()
}
fn default_true() -> bool {
    true
}
fn default_availability() -> f64 {
    0.999
}
fn default_latency_threshold() -> f64 {
    0.5
}
fn default_latency_target() -> f64 {
    0.99
}
