//! Pod-level building blocks shared by every workload: the Pod Security "restricted" profile,
//! probes, topology spread and default resources.
//!
//! Every pod passes the `restricted` Pod Security Standard, so an app can live in a namespace
//! labelled `pod-security.kubernetes.io/enforce=restricted`: non-root with a numeric UID (the
//! admission check cannot inspect the image's USER), no privilege escalation, all capabilities
//! dropped, RuntimeDefault seccomp. The root filesystem is read-only too; writable paths are
//! explicit emptyDir or PVC mounts.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, EmptyDirVolumeSource, HTTPGetAction, PodSecurityContext, Probe,
    ResourceRequirements, SeccompProfile, SecurityContext, TopologySpreadConstraint, Volume,
    VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::meta::AppMeta;

/// Port of the public HTTP API.
pub const HTTP_PORT: i32 = 8080;
/// Port of /healthz, /readyz and /metrics on api and worker.
pub const ADMIN_PORT: i32 = 9090;
/// UID/GID the api-server and worker images run as (images/rootfs.sh creates the user).
pub const APP_UID: i64 = 65532;

pub fn pod_security_context(uid: i64) -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(uid),
        run_as_group: Some(uid),
        fs_group: Some(uid),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".to_string(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn container_security_context() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_string()]),
            ..Default::default()
        }),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".to_string(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Spread one component's pods over zones and nodes. `ScheduleAnyway`: a single-zone or
/// single-node cluster still runs every replica; the scheduler only prefers spreading.
/// `pod_template_hash` limits the skew computation to the current ReplicaSet during a rollout.
pub fn topology_spread(
    m: &AppMeta,
    component: &str,
    pod_template_hash: bool,
) -> Vec<TopologySpreadConstraint> {
    ["topology.kubernetes.io/zone", "kubernetes.io/hostname"]
        .into_iter()
        .map(|key| TopologySpreadConstraint {
            max_skew: 1,
            topology_key: key.to_string(),
            when_unsatisfiable: "ScheduleAnyway".to_string(),
            label_selector: Some(m.selector(component)),
            match_label_keys: pod_template_hash.then(|| vec!["pod-template-hash".to_string()]),
            ..Default::default()
        })
        .collect()
}

pub fn http_probe(path: &str, port: i32, period: i32, failure_threshold: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_string()),
            port: IntOrString::Int(port),
            ..Default::default()
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(2),
        failure_threshold: Some(failure_threshold),
        ..Default::default()
    }
}

/// Requests sized for scheduling; a memory limit (a leak is killed, not the node) and no CPU
/// limit (CPU limits throttle latency-sensitive servers even when the node is idle).
pub fn resources(cpu: &str, memory: &str, memory_limit: &str) -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_string(), Quantity(cpu.to_string())),
            ("memory".to_string(), Quantity(memory.to_string())),
        ])),
        limits: Some(BTreeMap::from([(
            "memory".to_string(),
            Quantity(memory_limit.to_string()),
        )])),
        ..Default::default()
    }
}

/// A writable scratch directory, since the root filesystem is read-only.
pub fn empty_dir(name: &str) -> Volume {
    Volume {
        name: name.to_string(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Default::default()
    }
}

pub fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.to_string(),
        mount_path: path.to_string(),
        read_only: read_only.then_some(true),
        ..Default::default()
    }
}

/// `name` read from a key of a Secret: the value never appears in the rendered objects.
pub fn secret_env(
    name: &str,
    secret: &crate::api::PasswordSecretRef,
) -> k8s_openapi::api::core::v1::EnvVar {
    use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, SecretKeySelector};
    EnvVar {
        name: name.to_string(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.name.clone(),
                key: secret.key.clone(),
                optional: Some(false),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// `REDIS_PASSWORD` (and, for redis-cli in the Redis pods, `REDISCLI_AUTH`) from the app's
/// Redis password Secret, or nothing when Redis has no password.
pub fn redis_password_env(
    m: &AppMeta,
    spec: &crate::api::RedisSpec,
    cli: bool,
) -> Vec<k8s_openapi::api::core::v1::EnvVar> {
    let Some(secret) = spec.password_ref(m.app_name()) else {
        return Vec::new();
    };
    let mut env = vec![secret_env("REDIS_PASSWORD", &secret)];
    if cli {
        env.push(secret_env("REDISCLI_AUTH", &secret));
    }
    env
}
