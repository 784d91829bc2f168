//! Worker Deployment, plus a headless Service that only exists so its metrics can be scraped.
//! Also the container parts api and worker share (env, probes, volumes).

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{
    ConfigMapEnvSource, Container, EnvFromSource, EnvVar, EnvVarSource, KeyToPath,
    ObjectFieldSelector, SecretVolumeSource, Service, ServiceSpec, Volume, VolumeMount,
};

use super::RenderContext;
use super::api::{container_port, service_port, workload_deployment};
use super::config::CREDENTIALS_DIR;
use super::meta::{AppMeta, LABEL_METRICS};
use super::pod::{self, ADMIN_PORT};
use crate::api::ScalableAppSpec;

pub const COMPONENT: &str = "worker";

pub(super) fn metrics_service(m: &AppMeta) -> Service {
    let mut metadata = m.object_meta(&m.names.worker_metrics, COMPONENT);
    if let Some(labels) = metadata.labels.as_mut() {
        labels.insert(LABEL_METRICS.to_string(), "true".to_string());
    }
    Service {
        metadata,
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".to_string()),
            selector: Some(m.selector_labels(COMPONENT)),
            ports: Some(vec![service_port("admin", ADMIN_PORT)]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub(super) fn deployment(
    m: &AppMeta,
    spec: &ScalableAppSpec,
    ctx: &RenderContext,
    config_hash: &str,
) -> Deployment {
    let worker = &spec.worker;
    let container = Container {
        name: COMPONENT.to_string(),
        image: Some(
            worker
                .image
                .clone()
                .unwrap_or_else(|| format!("scalableapp/worker:{}", ctx.image_tag)),
        ),
        ports: Some(vec![container_port("admin", ADMIN_PORT)]),
        resources: Some(
            worker
                .resources
                .clone()
                .unwrap_or_else(|| pod::resources("100m", "128Mi", "512Mi")),
        ),
        ..base_container(m, spec, COMPONENT)
    };
    let mut deployment =
        workload_deployment(m, spec, COMPONENT, &m.names.worker, container, config_hash);
    // Workers finish in-flight jobs on SIGTERM; give them longer than the API's 30 s.
    if let Some(pod) = deployment.spec.template.spec.as_mut() {
        pod.termination_grace_period_seconds = Some(60);
    }
    deployment
}

/// Env, probes, security and mounts common to the api and worker containers.
pub(super) fn base_container(m: &AppMeta, spec: &ScalableAppSpec, component: &str) -> Container {
    let (_, mounts) = volumes(spec);
    Container {
        env_from: Some(vec![EnvFromSource {
            config_map_ref: Some(ConfigMapEnvSource {
                name: m.names.config.clone(),
                optional: Some(false),
            }),
            ..Default::default()
        }]),
        env: Some(
            [
                EnvVar {
                    name: "POD_NAME".to_string(),
                    value_from: Some(EnvVarSource {
                        field_ref: Some(ObjectFieldSelector {
                            field_path: "metadata.name".to_string(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                EnvVar {
                    name: "OTEL_SERVICE_NAME".to_string(),
                    value: Some(format!("{}-{component}", m.app_name())),
                    ..Default::default()
                },
            ]
            .into_iter()
            // The Redis password by Secret reference: never in the ConfigMap.
            .chain(pod::redis_password_env(m, &spec.redis, false))
            .collect(),
        ),
        // Liveness only restarts a wedged process; readiness takes a pod out of the Service
        // while its dependencies (Redis, Firestore) are unreachable, without restarting it.
        startup_probe: Some(pod::http_probe("/healthz", ADMIN_PORT, 2, 30)),
        liveness_probe: Some(pod::http_probe("/healthz", ADMIN_PORT, 10, 3)),
        readiness_probe: Some(pod::http_probe("/readyz", ADMIN_PORT, 5, 2)),
        security_context: Some(pod::container_security_context()),
        volume_mounts: Some(mounts),
        ..Default::default()
    }
}

/// Volumes and mounts: a writable /tmp and, when configured, the Firebase key (read-only).
pub(super) fn volumes(spec: &ScalableAppSpec) -> (Vec<Volume>, Vec<VolumeMount>) {
    let mut volumes = vec![pod::empty_dir("tmp")];
    let mut mounts = vec![pod::mount("tmp", "/tmp", false)];
    if let Some(secret) = &spec.firebase.credentials_secret {
        volumes.push(Volume {
            name: "firebase-credentials".to_string(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret.name.clone()),
                items: Some(vec![KeyToPath {
                    key: secret.key.clone(),
                    path: secret.key.clone(),
                    ..Default::default()
                }]),
                default_mode: Some(0o440),
                ..Default::default()
            }),
            ..Default::default()
        });
        mounts.push(pod::mount("firebase-credentials", CREDENTIALS_DIR, true));
    }
    (volumes, mounts)
}
