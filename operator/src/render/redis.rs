//! Redis with Sentinel: two StatefulSets, their headless Services, a client Service for the
//! sentinels and a ConfigMap with the config and the role-deciding init scripts.
//!
//! Sentinels run as their own StatefulSet rather than as a sidecar of each Redis pod:
//! - `spec.redis.sentinels` and `spec.redis.replicas` are independent (2 Redis + 3 sentinels is
//!   the smallest safe layout, which a sidecar cannot express);
//! - a sidecar sentinel dies with its Redis pod, so losing the master's node would also take
//!   away one of the votes needed to fail it over;
//! - the PodDisruptionBudget of the sentinels can then protect the quorum exactly.
//!
//! Failure modes of Redis on Kubernetes and what handles them:
//! - stale master IP after restarts: everything (replication, sentinel announcements, client
//!   config) uses stable DNS names of headless Services with `publishNotReadyAddresses`;
//!   sentinels run with `resolve-hostnames` and `announce-hostnames`.
//! - a restarted pod coming back as a second master: the init script asks the sentinels for
//!   the current master first and starts as its replica (scripts/redis-init.sh).
//! - a master restarted empty wiping its replicas: data is on a PVC with AOF, and a pod that
//!   the sentinels still name as master waits for their failover before it serves anything.
//! - split brain of an isolated old master: with 3+ Redis pods it needs one connected replica
//!   to accept writes (`min-replicas-to-write 1`), so writes on the losing side fail instead of
//!   being silently discarded at reconnection. With 2 pods that would stop all writes whenever
//!   the single replica is down, so it is only set from 3 up.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
};
use k8s_openapi::api::core::v1::{
    Affinity, ConfigMap, ConfigMapVolumeSource, Container, EnvVar, EnvVarSource, ExecAction,
    ObjectFieldSelector, PersistentVolumeClaim, PersistentVolumeClaimSpec, PodAffinityTerm,
    PodAntiAffinity, PodSpec, PodTemplateSpec, Probe, Service, ServiceSpec,
    VolumeResourceRequirements, WeightedPodAffinityTerm,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::RenderContext;
use super::api::{CONFIG_HASH_ANNOTATION, container_port, service_port};
use super::config::{REDIS_PORT, SENTINEL_PORT};
use super::meta::{AppMeta, LABEL_METRICS};
use super::pod;
use crate::api::RedisSpec;

pub const REDIS_COMPONENT: &str = "redis";
pub const SENTINEL_COMPONENT: &str = "sentinel";
/// Port of the redis_exporter sidecars.
pub const EXPORTER_PORT: i32 = 9121;
/// UID of the `redis` user in the official image.
const REDIS_UID: i64 = 999;
/// How long sentinels wait before declaring the master down.
pub const DOWN_AFTER_MS: i32 = 5000;

const REDIS_INIT: &str = include_str!("scripts/redis-init.sh");
const SENTINEL_INIT: &str = include_str!("scripts/sentinel-init.sh");

/// Votes needed for a failover: a strict majority of the sentinels.
pub fn quorum(sentinels: i32) -> i32 {
    sentinels / 2 + 1
}

fn redis_conf(spec: &RedisSpec) -> String {
    let min_replicas = if spec.replicas >= 3 { 1 } else { 0 };
    format!(
        "port {REDIS_PORT}\n\
         bind * -::*\n\
         # Reachability is limited by NetworkPolicy to this app's pods.\n\
         protected-mode no\n\
         dir /data\n\
         appendonly yes\n\
         appendfsync everysec\n\
         save 3600 1 300 100 60 10000\n\
         replica-read-only yes\n\
         repl-diskless-sync yes\n\
         min-replicas-to-write {min_replicas}\n\
         min-replicas-max-lag 10\n\
         # Jobs and tokens must never be evicted to make room.\n\
         maxmemory-policy noeviction\n"
    )
}

pub(super) fn config_map(m: &AppMeta, spec: &RedisSpec) -> ConfigMap {
    ConfigMap {
        metadata: m.object_meta(&m.names.redis, REDIS_COMPONENT),
        data: Some(BTreeMap::from([
            ("redis.conf".to_string(), redis_conf(spec)),
            ("redis-init.sh".to_string(), REDIS_INIT.to_string()),
            ("sentinel-init.sh".to_string(), SENTINEL_INIT.to_string()),
        ])),
        ..Default::default()
    }
}

pub(super) fn services(m: &AppMeta) -> Vec<Service> {
    let n = &m.names;
    let headless = |name: &str, component: &str, port_name: &str, port: i32| {
        let mut metadata = m.object_meta(name, component);
        if let Some(labels) = metadata.labels.as_mut() {
            labels.insert(LABEL_METRICS.to_string(), "true".to_string());
        }
        Service {
            metadata,
            spec: Some(ServiceSpec {
                cluster_ip: Some("None".to_string()),
                // DNS names must exist before readiness: the init scripts resolve peers
                // that are still starting.
                publish_not_ready_addresses: Some(true),
                selector: Some(m.selector_labels(component)),
                ports: Some(vec![
                    service_port(port_name, port),
                    service_port("metrics", EXPORTER_PORT),
                ]),
                ..Default::default()
            }),
            ..Default::default()
        }
    };
    vec![
        headless(&n.redis_headless, REDIS_COMPONENT, "redis", REDIS_PORT),
        headless(
            &n.sentinel_headless,
            SENTINEL_COMPONENT,
            "sentinel",
            SENTINEL_PORT,
        ),
        Service {
            metadata: m.object_meta(&n.sentinel, SENTINEL_COMPONENT),
            spec: Some(ServiceSpec {
                selector: Some(m.selector_labels(SENTINEL_COMPONENT)),
                ports: Some(vec![service_port("sentinel", SENTINEL_PORT)]),
                ..Default::default()
            }),
            ..Default::default()
        },
    ]
}

fn env(name: &str, value: impl ToString) -> EnvVar {
    EnvVar {
        name: name.to_string(),
        value: Some(value.to_string()),
        ..Default::default()
    }
}

fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.to_string(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.to_string(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// What the init scripts need to find their peers.
fn topology_env(m: &AppMeta, spec: &RedisSpec, cluster_domain: &str) -> Vec<EnvVar> {
    let n = &m.names;
    vec![
        field_env("POD_NAME", "metadata.name"),
        field_env("NAMESPACE", "metadata.namespace"),
        env("CLUSTER_DOMAIN", cluster_domain),
        env("MASTER_NAME", &spec.master_name),
        env("REDIS_STS", &n.redis),
        env("REDIS_HEADLESS", &n.redis_headless),
        env("REDIS_REPLICAS", spec.replicas),
        env("SENTINEL_STS", &n.sentinel),
        env("SENTINEL_HEADLESS", &n.sentinel_headless),
        env("SENTINELS", spec.sentinels),
        env("QUORUM", quorum(spec.sentinels)),
        env("DOWN_AFTER_MS", DOWN_AFTER_MS),
        // Three missed down-after periods plus the failover itself.
        env("FAILOVER_WAIT_SECONDS", 3 * DOWN_AFTER_MS / 1000 + 15),
    ]
}

fn exec_probe(command: &str, period: i32, failure_threshold: i32) -> Probe {
    Probe {
        exec: Some(ExecAction {
            command: Some(vec!["sh".into(), "-c".into(), command.to_string()]),
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(3),
        failure_threshold: Some(failure_threshold),
        ..Default::default()
    }
}

/// `password` holds the `REDIS_PASSWORD` env (redis_exporter reads that variable) for the data
/// nodes; empty for sentinels, which have no password.
fn exporter(spec: &RedisSpec, port: i32, password: Vec<EnvVar>) -> Container {
    let mut exporter_env = vec![env("REDIS_ADDR", format!("redis://localhost:{port}"))];
    exporter_env.extend(password);
    Container {
        name: "metrics".to_string(),
        image: Some(spec.exporter_image.clone()),
        env: Some(exporter_env),
        ports: Some(vec![container_port("metrics", EXPORTER_PORT)]),
        resources: Some(pod::resources("10m", "32Mi", "64Mi")),
        security_context: Some(pod::container_security_context()),
        ..Default::default()
    }
}

/// Prefer one pod of a component per node; "preferred" so small clusters still schedule.
fn anti_affinity(m: &AppMeta, component: &str) -> Affinity {
    Affinity {
        pod_anti_affinity: Some(PodAntiAffinity {
            preferred_during_scheduling_ignored_during_execution: Some(vec![
                WeightedPodAffinityTerm {
                    weight: 100,
                    pod_affinity_term: PodAffinityTerm {
                        label_selector: Some(m.selector(component)),
                        topology_key: "kubernetes.io/hostname".to_string(),
                        ..Default::default()
                    },
                },
            ]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[allow(clippy::too_many_arguments)]
fn statefulset(
    m: &AppMeta,
    name: &str,
    component: &str,
    service_name: &str,
    replicas: i32,
    config_hash: &str,
    containers: Vec<Container>,
    init: Container,
    volumes: Vec<k8s_openapi::api::core::v1::Volume>,
) -> StatefulSet {
    StatefulSet {
        metadata: m.object_meta(name, component),
        spec: StatefulSetSpec {
            replicas: Some(replicas),
            service_name: Some(service_name.to_string()),
            // Pods start together; the init scripts order the roles, not the StatefulSet.
            pod_management_policy: Some("Parallel".to_string()),
            selector: m.selector(component),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(m.labels(component)),
                    annotations: Some(BTreeMap::from([(
                        CONFIG_HASH_ANNOTATION.to_string(),
                        config_hash.to_string(),
                    )])),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(m.names.redis.clone()),
                    automount_service_account_token: Some(false),
                    security_context: Some(pod::pod_security_context(REDIS_UID)),
                    affinity: Some(anti_affinity(m, component)),
                    topology_spread_constraints: Some(pod::topology_spread(m, component, false)),
                    init_containers: Some(vec![init]),
                    containers,
                    volumes: Some(volumes),
                    ..Default::default()
                }),
            },
            ..Default::default()
        },
        ..Default::default()
    }
}

fn config_volume(m: &AppMeta) -> k8s_openapi::api::core::v1::Volume {
    k8s_openapi::api::core::v1::Volume {
        name: "config".to_string(),
        config_map: Some(ConfigMapVolumeSource {
            name: m.names.redis.clone(),
            default_mode: Some(0o555),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub(super) fn redis_statefulset(
    m: &AppMeta,
    spec: &RedisSpec,
    ctx: &RenderContext,
    config_hash: &str,
) -> StatefulSet {
    let image = Some(spec.image.clone());
    let mounts = vec![
        pod::mount("config", "/config", true),
        pod::mount("runtime", "/runtime", false),
        pod::mount("data", "/data", false),
        pod::mount("tmp", "/tmp", false),
    ];
    // REDIS_PASSWORD for redis-init.sh (requirepass, masterauth in the runtime config), and
    // REDISCLI_AUTH so redis-cli (init script, probes) authenticates.
    let password = pod::redis_password_env(m, spec, true);
    let mut init_env = topology_env(m, spec, &ctx.cluster_domain);
    init_env.extend(password.iter().cloned());
    let init = Container {
        name: "role".to_string(),
        image: image.clone(),
        command: Some(vec!["sh".into(), "/config/redis-init.sh".into()]),
        env: Some(init_env),
        resources: Some(pod::resources("10m", "16Mi", "64Mi")),
        security_context: Some(pod::container_security_context()),
        volume_mounts: Some(mounts.clone()),
        ..Default::default()
    };
    let ping = format!("redis-cli -p {REDIS_PORT} ping | grep -q PONG");
    let redis = Container {
        name: "redis".to_string(),
        image,
        command: Some(vec!["redis-server".into(), "/runtime/redis.conf".into()]),
        env: (!password.is_empty()).then(|| password.clone()),
        ports: Some(vec![container_port("redis", REDIS_PORT)]),
        resources: Some(
            spec.resources
                .clone()
                .unwrap_or_else(|| pod::resources("100m", "128Mi", "512Mi")),
        ),
        // Loading a large AOF can take a while: the startup probe allows it before liveness.
        startup_probe: Some(exec_probe(&ping, 5, 60)),
        liveness_probe: Some(exec_probe(&ping, 10, 3)),
        readiness_probe: Some(exec_probe(&ping, 5, 2)),
        security_context: Some(pod::container_security_context()),
        volume_mounts: Some(mounts),
        ..Default::default()
    };
    let mut sts = statefulset(
        m,
        &m.names.redis,
        REDIS_COMPONENT,
        &m.names.redis_headless,
        spec.replicas,
        config_hash,
        vec![
            redis,
            exporter(spec, REDIS_PORT, pod::redis_password_env(m, spec, false)),
        ],
        init,
        vec![
            config_volume(m),
            pod::empty_dir("runtime"),
            pod::empty_dir("tmp"),
        ],
    );
    {
        let s = &mut sts.spec;
        s.volume_claim_templates = Some(vec![PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some("data".to_string()),
                labels: Some(m.labels(REDIS_COMPONENT)),
                ..Default::default()
            },
            spec: Some(PersistentVolumeClaimSpec {
                access_modes: Some(vec!["ReadWriteOnce".to_string()]),
                storage_class_name: spec.storage.storage_class_name.clone(),
                resources: Some(VolumeResourceRequirements {
                    requests: Some(BTreeMap::from([(
                        "storage".to_string(),
                        Quantity(spec.storage.size.clone()),
                    )])),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }]);
        // Data outlives the app unless the spec asks otherwise; scaling down keeps volumes so
        // scaling back up finds its data.
        s.persistent_volume_claim_retention_policy =
            Some(StatefulSetPersistentVolumeClaimRetentionPolicy {
                when_deleted: Some(
                    if spec.storage.delete_on_uninstall {
                        "Delete"
                    } else {
                        "Retain"
                    }
                    .to_string(),
                ),
                when_scaled: Some("Retain".to_string()),
            });
    }
    sts
}

pub(super) fn sentinel_statefulset(
    m: &AppMeta,
    spec: &RedisSpec,
    ctx: &RenderContext,
    config_hash: &str,
) -> StatefulSet {
    let image = Some(spec.image.clone());
    let mounts = vec![
        pod::mount("config", "/config", true),
        pod::mount("runtime", "/runtime", false),
        pod::mount("tmp", "/tmp", false),
    ];
    // sentinel-init.sh writes `sentinel auth-pass` and asks the data nodes with redis-cli.
    let mut init_env = topology_env(m, spec, &ctx.cluster_domain);
    init_env.extend(pod::redis_password_env(m, spec, true));
    let init = Container {
        name: "monitor".to_string(),
        image: image.clone(),
        command: Some(vec!["sh".into(), "/config/sentinel-init.sh".into()]),
        env: Some(init_env),
        resources: Some(pod::resources("10m", "16Mi", "64Mi")),
        security_context: Some(pod::container_security_context()),
        volume_mounts: Some(mounts.clone()),
        ..Default::default()
    };
    let ping = format!("redis-cli -p {SENTINEL_PORT} ping | grep -q PONG");
    let sentinel = Container {
        name: "sentinel".to_string(),
        image,
        command: Some(vec![
            "redis-server".into(),
            "/runtime/sentinel.conf".into(),
            "--sentinel".into(),
        ]),
        ports: Some(vec![container_port("sentinel", SENTINEL_PORT)]),
        resources: Some(pod::resources("20m", "32Mi", "128Mi")),
        liveness_probe: Some(exec_probe(&ping, 10, 3)),
        readiness_probe: Some(exec_probe(&ping, 5, 2)),
        security_context: Some(pod::container_security_context()),
        volume_mounts: Some(mounts),
        ..Default::default()
    };
    statefulset(
        m,
        &m.names.sentinel,
        SENTINEL_COMPONENT,
        &m.names.sentinel_headless,
        spec.sentinels,
        config_hash,
        vec![sentinel, exporter(spec, SENTINEL_PORT, Vec::new())],
        init,
        vec![
            config_volume(m),
            pod::empty_dir("runtime"),
            pod::empty_dir("tmp"),
        ],
    )
}
