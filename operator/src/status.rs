//! Status: what the children report, turned into replica counts and Kubernetes-style
//! conditions. Pure functions over cached objects, so they are tested without a cluster.
//!
//! Conditions: `ApiReady`, `WorkerReady`, `RedisReady` (one per component), `Ready` (all of
//! them), `Progressing` (children changed or a rollout is under way) and `Degraded` (the last
//! reconcile failed, or a rollout exceeded its progress deadline). `lastTransitionTime` only
//! moves when a condition's status flips, so `kubectl wait --for=condition=Ready` and alerting
//! on condition age behave.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::DynamicObject;
use serde_json::Value;

use crate::api::{ComponentStatus, RedisMode, RedisStatus, ScalableApp, ScalableAppStatus};
use crate::render::Names;

/// Replica counts of a Deployment or StatefulSet, as its status reports them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Workload {
    pub desired: i32,
    pub ready: i32,
    pub updated: i32,
    /// The workload controller has seen the latest spec.
    pub observed: bool,
    /// A Deployment gave up progressing (ProgressDeadlineExceeded).
    pub stalled: bool,
}

impl Workload {
    /// Reads the fields shared by Deployments and StatefulSets.
    pub fn from_object(obj: &DynamicObject) -> Self {
        let int = |v: &Value| v.as_i64().and_then(|n| i32::try_from(n).ok()).unwrap_or(0);
        let spec = &obj.data["spec"];
        let status = &obj.data["status"];
        let desired = spec.get("replicas").map_or(1, int);
        let generation = obj.metadata.generation.unwrap_or(0);
        let observed = status["observedGeneration"].as_i64().unwrap_or(0) >= generation;
        let stalled = status["conditions"].as_array().is_some_and(|cs| {
            cs.iter().any(|c| {
                c["type"] == "Progressing"
                    && c["status"] == "False"
                    && c["reason"] == "ProgressDeadlineExceeded"
            })
        });
        Self {
            desired,
            ready: int(&status["readyReplicas"]),
            updated: int(&status["updatedReplicas"]),
            observed,
            stalled,
        }
    }

    fn is_ready(&self) -> bool {
        self.observed
            && self.desired > 0
            && self.ready >= self.desired
            && self.updated >= self.desired
    }

    fn rolling_out(&self) -> bool {
        !self.observed || self.updated < self.desired
    }

    fn summary(&self) -> ComponentStatus {
        ComponentStatus {
            replicas: self.desired,
            ready_replicas: self.ready,
            ready: format!("{}/{}", self.ready, self.desired),
        }
    }
}

/// What the reconcile saw of the children.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    pub api: Option<Workload>,
    pub worker: Option<Workload>,
    pub redis: Option<Workload>,
    pub sentinel: Option<Workload>,
    /// Children were created, updated or deleted in this reconcile.
    pub changed: bool,
    /// The reconcile failed with this message.
    pub error: Option<String>,
}

fn condition(type_: &str, ok: bool, reason: &str, message: String) -> Condition {
    Condition {
        type_: type_.to_string(),
        status: if ok { "True" } else { "False" }.to_string(),
        reason: reason.to_string(),
        message,
        observed_generation: None,
        // Set when the conditions are merged with the previous status.
        last_transition_time: Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
    }
}

fn workload_condition(type_: &str, name: &str, w: Option<&Workload>) -> Condition {
    match w {
        None => condition(
            type_,
            false,
            "NotFound",
            format!("{name} does not exist yet"),
        ),
        Some(w) if w.is_ready() => condition(
            type_,
            true,
            "Available",
            format!("{name}: {}/{} ready", w.ready, w.desired),
        ),
        Some(w) if w.rolling_out() => condition(
            type_,
            false,
            "RollingOut",
            format!(
                "{name}: {} of {} updated, {} ready",
                w.updated, w.desired, w.ready
            ),
        ),
        Some(w) => condition(
            type_,
            false,
            "Unavailable",
            format!("{name}: {}/{} ready", w.ready, w.desired),
        ),
    }
}

/// The status this reconcile should write, with transition times carried over from `app`.
pub fn desired_status(
    app: &ScalableApp,
    observed: &Observed,
    cluster_domain: &str,
    now: &Time,
) -> ScalableAppStatus {
    let names = Names::new(&app.metadata.name.clone().unwrap_or_default());
    let namespace = app.metadata.namespace.clone().unwrap_or_default();
    let generation = app.metadata.generation;
    let redis_spec = &app.spec.redis;

    let api = workload_condition("ApiReady", &names.api, observed.api.as_ref());
    let worker = workload_condition("WorkerReady", &names.worker, observed.worker.as_ref());
    let (redis, redis_status) = match redis_spec.mode {
        RedisMode::External => (
            condition(
                "RedisReady",
                true,
                "External",
                "Redis is provided externally".to_string(),
            ),
            RedisStatus {
                replicas: 0,
                ready_replicas: 0,
                ready: "external".to_string(),
                sentinel_service: None,
                master_name: redis_spec
                    .sentinel_addresses
                    .as_ref()
                    .map(|_| redis_spec.master_name.clone()),
            },
        ),
        RedisMode::Sentinel => {
            let quorum = crate::render::quorum(redis_spec.sentinels);
            let sentinels_ok = observed
                .sentinel
                .as_ref()
                .is_some_and(|s| s.ready >= quorum);
            let mut c = workload_condition("RedisReady", &names.redis, observed.redis.as_ref());
            if c.status == "True" && !sentinels_ok {
                c = condition(
                    "RedisReady",
                    false,
                    "SentinelQuorumMissing",
                    format!("fewer than {quorum} sentinels are ready"),
                );
            }
            let w = observed.redis.clone().unwrap_or_default();
            (
                c,
                RedisStatus {
                    replicas: w.desired,
                    ready_replicas: w.ready,
                    ready: format!("{}/{}", w.ready, w.desired),
                    sentinel_service: Some(format!(
                        "{}.{namespace}.svc.{cluster_domain}:{}",
                        names.sentinel,
                        crate::render::SENTINEL_PORT
                    )),
                    master_name: Some(redis_spec.master_name.clone()),
                },
            )
        }
    };

    let components = [&api, &worker, &redis];
    let all_ready = components.iter().all(|c| c.status == "True");
    let not_ready: Vec<&str> = components
        .iter()
        .filter(|c| c.status != "True")
        .map(|c| c.type_.as_str())
        .collect();
    let ready = if all_ready {
        condition(
            "Ready",
            true,
            "AllComponentsReady",
            "all components are ready".to_string(),
        )
    } else {
        condition(
            "Ready",
            false,
            "ComponentsNotReady",
            format!("not ready: {}", not_ready.join(", ")),
        )
    };

    let rolling: Vec<&str> = [
        (&names.api, &observed.api),
        (&names.worker, &observed.worker),
        (&names.redis, &observed.redis),
        (&names.sentinel, &observed.sentinel),
    ]
    .into_iter()
    .filter(|(_, w)| w.as_ref().is_some_and(Workload::rolling_out))
    .map(|(n, _)| n.as_str())
    .collect();
    let progressing = if observed.changed {
        condition(
            "Progressing",
            true,
            "ChildrenChanged",
            "children were created or updated".to_string(),
        )
    } else if !rolling.is_empty() {
        condition(
            "Progressing",
            true,
            "RollingOut",
            format!("rolling out: {}", rolling.join(", ")),
        )
    } else {
        condition(
            "Progressing",
            false,
            "Stable",
            "no change in progress".to_string(),
        )
    };

    let stalled: Vec<&str> = [
        (&names.api, &observed.api),
        (&names.worker, &observed.worker),
    ]
    .into_iter()
    .filter(|(_, w)| w.as_ref().is_some_and(|w| w.stalled))
    .map(|(n, _)| n.as_str())
    .collect();
    let degraded = match &observed.error {
        Some(err) => condition("Degraded", true, "ReconcileError", truncate(err)),
        None if !stalled.is_empty() => condition(
            "Degraded",
            true,
            "ProgressDeadlineExceeded",
            format!("rollout stalled: {}", stalled.join(", ")),
        ),
        None => condition("Degraded", false, "Healthy", "no errors".to_string()),
    };

    let old = app.status.clone().unwrap_or_default();
    let conditions = [ready, progressing, degraded, api, worker, redis]
        .into_iter()
        .map(|mut c| {
            c.observed_generation = generation;
            c.last_transition_time = old
                .conditions
                .iter()
                .find(|o| o.type_ == c.type_ && o.status == c.status)
                .map_or_else(|| now.clone(), |o| o.last_transition_time.clone());
            c
        })
        .collect();

    ScalableAppStatus {
        observed_generation: generation,
        conditions,
        api: Some(observed.api.clone().unwrap_or_default().summary()),
        worker: Some(observed.worker.clone().unwrap_or_default().summary()),
        redis: Some(redis_status),
    }
}

/// Condition messages are for people; keep them readable and within API limits.
fn truncate(s: &str) -> String {
    const MAX: usize = 1024;
    if s.len() <= MAX {
        return s.to_string();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use k8s_openapi::jiff::Timestamp;

    use super::*;
    use crate::api::{FirebaseSpec, ScalableAppSpec};

    fn app() -> ScalableApp {
        let mut app = ScalableApp::new(
            "shop",
            ScalableAppSpec {
                api: Default::default(),
                worker: Default::default(),
                redis: Default::default(),
                firebase: FirebaseSpec {
                    project_id: "p".into(),
                    storage_bucket: None,
                    credentials_secret: None,
                    emulators: Some(Default::default()),
                },
                observability: Default::default(),
                ingress: None,
                paused: false,
            },
        );
        app.metadata.namespace = Some("prod".into());
        app.metadata.generation = Some(3);
        app
    }

    fn ready(n: i32) -> Option<Workload> {
        Some(Workload {
            desired: n,
            ready: n,
            updated: n,
            observed: true,
            stalled: false,
        })
    }

    fn at(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).unwrap())
    }

    fn cond<'a>(s: &'a ScalableAppStatus, t: &str) -> &'a Condition {
        s.conditions.iter().find(|c| c.type_ == t).unwrap()
    }

    #[test]
    fn all_components_ready_make_the_app_ready() {
        let observed = Observed {
            api: ready(2),
            worker: ready(2),
            redis: ready(3),
            sentinel: ready(3),
            ..Default::default()
        };
        let s = desired_status(&app(), &observed, "cluster.local", &at(100));
        assert_eq!(s.observed_generation, Some(3));
        for t in ["Ready", "ApiReady", "WorkerReady", "RedisReady"] {
            assert_eq!(cond(&s, t).status, "True", "{t}");
        }
        assert_eq!(cond(&s, "Progressing").status, "False");
        assert_eq!(cond(&s, "Degraded").status, "False");
        assert_eq!(s.api.as_ref().unwrap().ready, "2/2");
        let redis = s.redis.unwrap();
        assert_eq!(
            redis.sentinel_service.as_deref(),
            Some("shop-sentinel.prod.svc.cluster.local:26379")
        );
        assert_eq!(redis.master_name.as_deref(), Some("mymaster"));
    }

    #[test]
    fn missing_quorum_or_rollout_keeps_the_app_not_ready() {
        let observed = Observed {
            api: Some(Workload {
                desired: 2,
                ready: 2,
                updated: 1,
                observed: true,
                stalled: false,
            }),
            worker: ready(2),
            redis: ready(3),
            sentinel: Some(Workload {
                desired: 3,
                ready: 1,
                updated: 3,
                observed: true,
                stalled: false,
            }),
            ..Default::default()
        };
        let s = desired_status(&app(), &observed, "cluster.local", &at(100));
        assert_eq!(cond(&s, "Ready").status, "False");
        assert_eq!(cond(&s, "ApiReady").reason, "RollingOut");
        assert_eq!(cond(&s, "RedisReady").reason, "SentinelQuorumMissing");
        assert_eq!(cond(&s, "Progressing").status, "True");
    }

    #[test]
    fn transition_time_moves_only_when_status_flips() {
        let mut a = app();
        let healthy = Observed {
            api: ready(2),
            worker: ready(2),
            redis: ready(3),
            sentinel: ready(3),
            ..Default::default()
        };
        let first = desired_status(&a, &healthy, "cluster.local", &at(100));
        a.status = Some(first.clone());
        // Same observation later: nothing changes, so there is nothing to write.
        let second = desired_status(&a, &healthy, "cluster.local", &at(200));
        assert_eq!(first, second);
        // An error flips Degraded (new time) but keeps Ready's time.
        let failing = Observed {
            error: Some("boom".into()),
            ..healthy
        };
        let third = desired_status(&a, &failing, "cluster.local", &at(300));
        assert_eq!(cond(&third, "Degraded").status, "True");
        assert_eq!(cond(&third, "Degraded").last_transition_time, at(300));
        assert_eq!(cond(&third, "Ready").last_transition_time, at(100));
    }

    #[test]
    fn workload_is_read_from_deployment_status() {
        let obj: DynamicObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "shop-api", "generation": 4},
            "spec": {"replicas": 3},
            "status": {"observedGeneration": 4, "readyReplicas": 2, "updatedReplicas": 3,
                "conditions": [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}]}
        }))
        .unwrap();
        let w = Workload::from_object(&obj);
        assert_eq!(
            w,
            Workload {
                desired: 3,
                ready: 2,
                updated: 3,
                observed: true,
                stalled: true
            }
        );
    }
}
