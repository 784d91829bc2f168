//! HorizontalPodAutoscalers (autoscaling/v2) for api and worker, or a KEDA ScaledObject for the
//! worker when it scales on queue backlog and KEDA is installed.
//!
//! Behaviour: scale up fast (double, or +4 pods, every 30 s) because load arrives suddenly;
//! scale down slowly (at most half every minute, after 5 minutes of lower recommendations)
//! because flapping costs cold starts and drops connections.

use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HPAScalingPolicy, HPAScalingRules, HorizontalPodAutoscaler,
    HorizontalPodAutoscalerBehavior, HorizontalPodAutoscalerSpec, MetricSpec, MetricTarget,
    ResourceMetricSource,
};
use kube::api::{DynamicObject, TypeMeta};
use serde_json::json;

use super::meta::AppMeta;
use super::{ChildKind, RenderContext, config};
use crate::api::{ApiSpec, RedisMode, ScalableAppSpec, WorkerSpec};

fn behavior() -> HorizontalPodAutoscalerBehavior {
    let policy = |type_: &str, value: i32, period: i32| HPAScalingPolicy {
        type_: type_.to_string(),
        value,
        period_seconds: period,
    };
    HorizontalPodAutoscalerBehavior {
        scale_up: Some(HPAScalingRules {
            stabilization_window_seconds: Some(0),
            select_policy: Some("Max".to_string()),
            policies: Some(vec![policy("Percent", 100, 30), policy("Pods", 4, 30)]),
            ..Default::default()
        }),
        scale_down: Some(HPAScalingRules {
            stabilization_window_seconds: Some(300),
            select_policy: Some("Max".to_string()),
            policies: Some(vec![policy("Percent", 50, 60)]),
            ..Default::default()
        }),
    }
}

fn cpu_hpa(
    m: &AppMeta,
    name: &str,
    component: &str,
    min: i32,
    max: i32,
    cpu: i32,
) -> HorizontalPodAutoscaler {
    HorizontalPodAutoscaler {
        metadata: m.object_meta(name, component),
        spec: HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some("apps/v1".to_string()),
                kind: "Deployment".to_string(),
                name: name.to_string(),
            },
            min_replicas: Some(min),
            max_replicas: max,
            metrics: Some(vec![MetricSpec {
                type_: "Resource".to_string(),
                resource: Some(ResourceMetricSource {
                    name: "cpu".to_string(),
                    target: MetricTarget {
                        type_: "Utilization".to_string(),
                        average_utilization: Some(cpu),
                        ..Default::default()
                    },
                }),
                ..Default::default()
            }]),
            behavior: Some(behavior()),
        },
        ..Default::default()
    }
}

pub(super) fn api_hpa(m: &AppMeta, api: &ApiSpec) -> HorizontalPodAutoscaler {
    cpu_hpa(
        m,
        &m.names.api,
        super::api::COMPONENT,
        api.min_replicas,
        api.max_replicas,
        api.target_cpu_utilization,
    )
}

/// CPU-based worker HPA; also the fallback for QueueBacklog scaling without KEDA.
pub(super) fn worker_hpa(m: &AppMeta, worker: &WorkerSpec) -> HorizontalPodAutoscaler {
    cpu_hpa(
        m,
        &m.names.worker,
        super::worker::COMPONENT,
        worker.min_replicas,
        worker.max_replicas,
        worker.scaling.target_cpu_utilization,
    )
}

/// Lists of ready jobs, one per priority: `platform::queue::keys` names them
/// `q:{<queue>}:wait:<rank>`, rank 0 (critical) to 3 (low).
const QUEUE_PRIORITIES: u8 = 4;

/// KEDA ScaledObject scaling the worker on the jobs waiting: one Redis list-length trigger per
/// priority list (KEDA scales on the largest). KEDA creates and owns its own HPA for the
/// Deployment, which is why the operator's worker HPA is removed when this one exists.
pub(super) fn worker_scaled_object(
    m: &AppMeta,
    spec: &ScalableAppSpec,
    ctx: &RenderContext,
) -> DynamicObject {
    let worker = &spec.worker;
    let length = worker.scaling.jobs_per_replica.to_string();
    let triggers: Vec<_> = (0..QUEUE_PRIORITIES)
        .map(|rank| {
            let list = format!("q:{{{}}}:wait:{rank}", worker.queue.name);
            match (spec.redis.mode, &spec.redis.url) {
                (RedisMode::External, Some(url)) => json!({
                    "type": "redis",
                    "metadata": {
                        "address": redis_address(url),
                        "listName": list,
                        "listLength": length,
                    },
                }),
                _ => {
                    let addresses = match (&spec.redis.mode, &spec.redis.sentinel_addresses) {
                        (RedisMode::External, Some(list)) => list.clone(),
                        _ => {
                            config::sentinel_addresses(m, spec.redis.sentinels, &ctx.cluster_domain)
                        }
                    };
                    json!({
                        "type": "redis-sentinel",
                        "metadata": {
                            "addresses": addresses.join(","),
                            "sentinelMaster": spec.redis.master_name,
                            "listName": list,
                            "listLength": length,
                        },
                    })
                }
            }
        })
        .collect();
    let ar = ChildKind::ScaledObject.api_resource();
    let mut obj = DynamicObject::new(&m.names.worker, &ar);
    obj.types = Some(TypeMeta {
        api_version: ar.api_version.clone(),
        kind: ar.kind.clone(),
    });
    obj.metadata = m.object_meta(&m.names.worker, super::worker::COMPONENT);
    obj.data = json!({
        "spec": {
            "scaleTargetRef": { "name": m.names.worker },
            "minReplicaCount": worker.min_replicas,
            "maxReplicaCount": worker.max_replicas,
            "advanced": {
                "horizontalPodAutoscalerConfig": { "behavior": behavior() },
            },
            "triggers": triggers,
        }
    });
    obj
}

/// `host:port` of a `redis://[user:pass@]host[:port][/db]` URL (KEDA wants the address).
fn redis_address(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    let host_port = rest.split('/').next().unwrap_or(rest);
    if host_port.contains(':') {
        host_port.to_string()
    } else {
        format!("{host_port}:6379")
    }
}

#[cfg(test)]
mod tests {
    use super::redis_address;

    #[test]
    fn redis_address_strips_scheme_credentials_and_db() {
        assert_eq!(redis_address("redis://cache:6380/0"), "cache:6380");
        assert_eq!(
            redis_address("rediss://u:p@cache.example"),
            "cache.example:6379"
        );
    }
}
