//! PodDisruptionBudgets. None of them can block a node drain forever:
//! - api and worker allow one pod down at a time (`maxUnavailable: 1`), which at one replica
//!   still lets the drain evict it (a `minAvailable: 1` PDB would block it);
//! - Redis allows one pod down: the sentinels promote a replica if it was the master;
//! - sentinels allow only as many down as keeps a majority (quorum) up.
//!
//! Unhealthy pods may always be evicted, so a crash-looping pod never holds up a drain.

use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::meta::AppMeta;
use super::redis::{REDIS_COMPONENT, SENTINEL_COMPONENT, quorum};
use crate::api::{RedisMode, ScalableAppSpec};

fn budget(m: &AppMeta, name: &str, component: &str, max_unavailable: i32) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: m.object_meta(name, component),
        spec: Some(PodDisruptionBudgetSpec {
            selector: Some(m.selector(component)),
            max_unavailable: Some(IntOrString::Int(max_unavailable)),
            unhealthy_pod_eviction_policy: Some("AlwaysAllow".to_string()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub(super) fn budgets(m: &AppMeta, spec: &ScalableAppSpec) -> Vec<PodDisruptionBudget> {
    let n = &m.names;
    let mut out = vec![
        budget(m, &n.api, super::api::COMPONENT, 1),
        budget(m, &n.worker, super::worker::COMPONENT, 1),
    ];
    if spec.redis.mode == RedisMode::Sentinel {
        out.push(budget(m, &n.redis, REDIS_COMPONENT, 1));
        let spare = (spec.redis.sentinels - quorum(spec.redis.sentinels)).max(1);
        out.push(budget(m, &n.sentinel, SENTINEL_COMPONENT, spare));
    }
    out
}
