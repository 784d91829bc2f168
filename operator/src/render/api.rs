//! API server Deployment and Service.
//!
//! `spec.replicas` is deliberately absent: the HPA owns the replica count, and a value written
//! here would reset it on every apply (the operator and the HPA would fight).

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvVar, EnvVarSource, PodSpec, PodTemplateSpec,
    ResourceFieldSelector, ResourceRequirements, Service, ServicePort, ServiceSpec,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::meta::{AppMeta, LABEL_METRICS};
use super::pod::{self, ADMIN_PORT, APP_UID, HTTP_PORT};
use super::{RenderContext, worker};
use crate::api::ScalableAppSpec;

pub const COMPONENT: &str = "api";
/// Annotation on pod templates carrying the app ConfigMap's content hash.
pub const CONFIG_HASH_ANNOTATION: &str = "scalable.dev/config-hash";

pub(super) fn services(m: &AppMeta) -> Vec<Service> {
    let mut metadata = m.object_meta(&m.names.api, COMPONENT);
    if let Some(labels) = metadata.labels.as_mut() {
        labels.insert(LABEL_METRICS.to_string(), "true".to_string());
    }
    vec![Service {
        metadata,
        spec: Some(ServiceSpec {
            selector: Some(m.selector_labels(COMPONENT)),
            ports: Some(vec![
                service_port("http", HTTP_PORT),
                service_port("admin", ADMIN_PORT),
            ]),
            ..Default::default()
        }),
        ..Default::default()
    }]
}

pub(super) fn service_port(name: &str, port: i32) -> ServicePort {
    ServicePort {
        name: Some(name.to_string()),
        port,
        target_port: Some(IntOrString::String(name.to_string())),
        protocol: Some("TCP".to_string()),
        ..Default::default()
    }
}

pub(super) fn deployment(
    m: &AppMeta,
    spec: &ScalableAppSpec,
    ctx: &RenderContext,
    config_hash: &str,
) -> Deployment {
    let api = &spec.api;
    let resources = api
        .resources
        .clone()
        .unwrap_or_else(|| pod::resources("100m", "128Mi", "256Mi"));
    let mut base = worker::base_container(m, spec, COMPONENT);
    if let Some(threads) = lanes_env(&resources) {
        base.env.get_or_insert_with(Vec::new).push(threads);
    }
    let container = Container {
        name: COMPONENT.to_string(),
        image: Some(
            api.image
                .clone()
                .unwrap_or_else(|| format!("scalableapp/api-server:{}", ctx.image_tag)),
        ),
        ports: Some(vec![
            container_port("http", HTTP_PORT),
            container_port("admin", ADMIN_PORT),
        ]),
        resources: Some(resources),
        ..base
    };
    workload_deployment(m, spec, COMPONENT, &m.names.api, container, config_hash)
}

/// `API_THREADS`, the threads serving the public port: the container's CPU limit, or its CPU
/// request when it has no limit, rounded up to whole cores (by the Downward API). The
/// api-server's own default is the CPUs the process may use, which without a CPU limit is
/// every CPU of the node: a lane and a Redis connection each, however small the pod. Beyond
/// its request a pod is meant to be joined by another (the HPA scales on CPU), not to spread
/// over the node. Resources without any CPU figure leave the api-server's default.
fn lanes_env(resources: &ResourceRequirements) -> Option<EnvVar> {
    let has_cpu =
        |m: &Option<BTreeMap<String, Quantity>>| m.as_ref().is_some_and(|m| m.contains_key("cpu"));
    let resource = if has_cpu(&resources.limits) {
        "limits.cpu"
    } else if has_cpu(&resources.requests) {
        "requests.cpu"
    } else {
        return None;
    };
    Some(EnvVar {
        name: "API_THREADS".to_string(),
        value_from: Some(EnvVarSource {
            resource_field_ref: Some(ResourceFieldSelector {
                container_name: Some(COMPONENT.to_string()),
                resource: resource.to_string(),
                divisor: Some(Quantity("1".to_string())),
            }),
            ..Default::default()
        }),
        ..Default::default()
    })
}

pub(super) fn container_port(name: &str, port: i32) -> ContainerPort {
    ContainerPort {
        name: Some(name.to_string()),
        container_port: port,
        protocol: Some("TCP".to_string()),
        ..Default::default()
    }
}

/// The Deployment shape api and worker share: restricted pods, spread, config hash, surge-only
/// rollouts (never below the current capacity during an update).
pub(super) fn workload_deployment(
    m: &AppMeta,
    spec: &ScalableAppSpec,
    component: &str,
    name: &str,
    container: Container,
    config_hash: &str,
) -> Deployment {
    let (volumes, _) = worker::volumes(spec);
    Deployment {
        metadata: m.object_meta(name, component),
        spec: DeploymentSpec {
            selector: m.selector(component),
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".to_string()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::String("25%".to_string())),
                    max_unavailable: Some(IntOrString::Int(0)),
                }),
            }),
            revision_history_limit: Some(5),
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
                    service_account_name: Some(name.to_string()),
                    automount_service_account_token: Some(false),
                    security_context: Some(pod::pod_security_context(APP_UID)),
                    topology_spread_constraints: Some(pod::topology_spread(m, component, true)),
                    termination_grace_period_seconds: Some(30),
                    containers: vec![container],
                    volumes: Some(volumes),
                    ..Default::default()
                }),
            },
            ..Default::default()
        },
        ..Default::default()
    }
}
