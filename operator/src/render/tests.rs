//! Unit tests of the desired state: properties every rendered child must have.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, PodSpec, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::de::DeserializeOwned;

use super::*;
use crate::api::{
    FirebaseEmulators, FirebaseSpec, IngressSpec, RedisMode, ScalableApp, ScalableAppSpec,
    ScalingSignal, SecretKeyRef,
};

fn app() -> ScalableApp {
    let mut app = ScalableApp::new(
        "shop",
        ScalableAppSpec {
            api: Default::default(),
            worker: Default::default(),
            redis: Default::default(),
            firebase: FirebaseSpec {
                project_id: "shop-prod".into(),
                storage_bucket: Some("shop-prod.appspot.com".into()),
                credentials_secret: Some(SecretKeyRef {
                    name: "firebase-key".into(),
                    key: "credentials.json".into(),
                }),
                emulators: None,
            },
            observability: Default::default(),
            ingress: None,
            paused: false,
        },
    );
    app.metadata.namespace = Some("prod".into());
    app.metadata.uid = Some("1234".into());
    app
}

fn all_caps() -> RenderContext {
    RenderContext {
        capabilities: Capabilities {
            prometheus_rules: true,
            service_monitors: true,
            keda: true,
        },
        ..RenderContext::default()
    }
}

fn typed<T: DeserializeOwned>(children: &[Child], kind: ChildKind, name: &str) -> T {
    let child = children
        .iter()
        .find(|c| c.kind == kind && c.name() == name)
        .unwrap_or_else(|| panic!("no {kind} {name} rendered"));
    serde_json::from_value(serde_json::to_value(&child.object).unwrap()).unwrap()
}

fn has(children: &[Child], kind: ChildKind, name: &str) -> bool {
    children.iter().any(|c| c.kind == kind && c.name() == name)
}

fn pod_specs(children: &[Child]) -> Vec<(String, PodSpec)> {
    let mut out = Vec::new();
    for c in children {
        let pod = match c.kind {
            ChildKind::Deployment => {
                typed::<Deployment>(children, c.kind, c.name())
                    .spec
                    .template
                    .spec
            }
            ChildKind::StatefulSet => {
                typed::<StatefulSet>(children, c.kind, c.name())
                    .spec
                    .template
                    .spec
            }
            _ => continue,
        };
        out.push((c.name().to_string(), pod.unwrap()));
    }
    out
}

#[test]
fn every_child_is_owned_labelled_and_named_after_the_app() {
    let children = desired(&app(), &all_caps()).unwrap();
    assert!(children.len() > 20, "only {} children", children.len());
    for c in &children {
        let meta = &c.object.metadata;
        assert!(c.name().starts_with("shop"), "{} {}", c.kind, c.name());
        assert_eq!(meta.namespace.as_deref(), Some("prod"));
        let owners = meta.owner_references.as_ref().unwrap();
        assert_eq!(owners.len(), 1);
        assert_eq!(owners[0].uid, "1234");
        assert_eq!(owners[0].kind, "ScalableApp");
        assert_eq!(owners[0].controller, Some(true));
        assert_eq!(owners[0].block_owner_deletion, Some(true));
        let labels = meta.labels.as_ref().unwrap();
        assert_eq!(labels[LABEL_MANAGED_BY], MANAGED_BY);
        assert_eq!(labels[LABEL_INSTANCE], "shop");
        assert_eq!(labels[LABEL_NAME], "scalableapp");
        assert!(labels.contains_key(LABEL_COMPONENT));
        let types = c.object.types.as_ref().unwrap();
        assert_eq!(types.kind, c.kind.as_str());
        assert_eq!(types.api_version, c.kind.api_resource().api_version);
    }
    // Same input, same output: the reconciler relies on it to skip no-op writes.
    assert_eq!(children, desired(&app(), &all_caps()).unwrap());
}

#[test]
fn every_desired_child_is_a_possible_child_and_names_are_unique() {
    for ctx in [RenderContext::default(), all_caps()] {
        let mut a = app();
        a.spec.ingress = Some(IngressSpec {
            host: "shop.example.com".into(),
            class_name: None,
            tls_secret_name: Some("shop-tls".into()),
        });
        a.spec.worker.scaling.signal = ScalingSignal::QueueBacklog;
        let possible = possible(&a).unwrap();
        let children = desired(&a, &ctx).unwrap();
        let mut seen = std::collections::HashSet::new();
        for c in &children {
            let r = ChildRef {
                kind: c.kind,
                name: c.name().to_string(),
            };
            assert!(possible.contains(&r), "{r:?} missing from possible()");
            assert!(seen.insert(r.clone()), "{r:?} rendered twice");
        }
    }
}

#[test]
fn every_pod_meets_pod_security_restricted() {
    let children = desired(&app(), &all_caps()).unwrap();
    let pods = pod_specs(&children);
    assert_eq!(pods.len(), 4, "api, worker, redis, sentinel");
    for (name, pod) in pods {
        let psc = pod.security_context.as_ref().unwrap();
        assert_eq!(psc.run_as_non_root, Some(true), "{name}");
        assert!(psc.run_as_user.unwrap() > 0, "{name}: numeric non-root uid");
        assert_eq!(
            psc.seccomp_profile.as_ref().unwrap().type_,
            "RuntimeDefault",
            "{name}"
        );
        let containers = pod
            .containers
            .iter()
            .chain(pod.init_containers.iter().flatten());
        for c in containers {
            let sc = c.security_context.as_ref().unwrap();
            assert_eq!(
                sc.allow_privilege_escalation,
                Some(false),
                "{name}/{}",
                c.name
            );
            assert_eq!(
                sc.read_only_root_filesystem,
                Some(true),
                "{name}/{}",
                c.name
            );
            assert_eq!(
                sc.capabilities.as_ref().unwrap().drop,
                Some(vec!["ALL".to_string()]),
                "{name}/{}",
                c.name
            );
            assert!(sc.capabilities.as_ref().unwrap().add.is_none());
            assert!(c.resources.is_some(), "{name}/{}: resources", c.name);
        }
        assert!(pod.host_network.is_none() && pod.host_pid.is_none());
        assert_eq!(pod.automount_service_account_token, Some(false), "{name}");
        let spread = pod.topology_spread_constraints.unwrap();
        let keys: Vec<_> = spread.iter().map(|t| t.topology_key.as_str()).collect();
        assert_eq!(
            keys,
            ["topology.kubernetes.io/zone", "kubernetes.io/hostname"]
        );
    }
}

#[test]
fn api_and_worker_probe_the_admin_port_and_leave_replicas_to_the_hpa() {
    let children = desired(&app(), &all_caps()).unwrap();
    for name in ["shop-api", "shop-worker"] {
        let d: Deployment = typed(&children, ChildKind::Deployment, name);
        assert_eq!(d.spec.replicas, None, "{name}: the HPA owns replicas");
        let c = &d.spec.template.spec.as_ref().unwrap().containers[0];
        let path = |p: &Option<k8s_openapi::api::core::v1::Probe>| {
            let get = p.as_ref().unwrap().http_get.as_ref().unwrap();
            assert_eq!(get.port, IntOrString::Int(9090));
            get.path.clone().unwrap()
        };
        assert_eq!(path(&c.liveness_probe), "/healthz");
        assert_eq!(path(&c.readiness_probe), "/readyz");
        let hpa: HorizontalPodAutoscaler =
            typed(&children, ChildKind::HorizontalPodAutoscaler, name);
        assert_eq!(hpa.spec.scale_target_ref.name, name);
        let down = hpa.spec.behavior.unwrap().scale_down.unwrap();
        assert!(down.stabilization_window_seconds.unwrap() >= 300);
    }
    let api: Deployment = typed(&children, ChildKind::Deployment, "shop-api");
    let ports = api.spec.template.spec.unwrap().containers[0]
        .ports
        .clone()
        .unwrap();
    assert!(ports.iter().any(|p| p.container_port == 8080));
    let svc: Service = typed(&children, ChildKind::Service, "shop-api");
    assert!(
        svc.spec
            .unwrap()
            .ports
            .unwrap()
            .iter()
            .any(|p| p.port == 8080)
    );
}

/// The api-server's lanes follow the container's CPU, not the node's.
#[test]
fn api_threads_follow_the_cpu_limit_or_else_the_request() {
    use k8s_openapi::api::core::v1::ResourceRequirements;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    let threads_from = |a: &ScalableApp| -> Option<String> {
        let children = desired(a, &all_caps()).unwrap();
        let d: Deployment = typed(&children, ChildKind::Deployment, "shop-api");
        let c = d.spec.template.spec.unwrap().containers.remove(0);
        let env = c.env.unwrap();
        let threads: Vec<_> = env.iter().filter(|e| e.name == "API_THREADS").collect();
        assert!(threads.len() <= 1, "{env:?}");
        let field = threads
            .first()?
            .value_from
            .as_ref()
            .and_then(|v| v.resource_field_ref.clone())
            .expect("from the Downward API");
        assert_eq!(field.container_name.as_deref(), Some(c.name.as_str()));
        assert_eq!(field.divisor, Some(Quantity("1".into())));
        Some(field.resource)
    };
    assert_eq!(
        threads_from(&app()).as_deref(),
        Some("requests.cpu"),
        "default: no CPU limit"
    );

    let mut limited = app();
    let cpu = |v: &str| Some([("cpu".to_string(), Quantity(v.into()))].into());
    limited.spec.api.resources = Some(ResourceRequirements {
        requests: cpu("500m"),
        limits: cpu("2"),
        ..Default::default()
    });
    assert_eq!(threads_from(&limited).as_deref(), Some("limits.cpu"));
    // No CPU figure at all: the api-server's own default (the CPUs it may use).
    limited.spec.api.resources = Some(ResourceRequirements {
        requests: Some([("memory".to_string(), Quantity("256Mi".into()))].into()),
        ..Default::default()
    });
    assert_eq!(threads_from(&limited), None);

    // The worker has no public port, so no lanes.
    let children = desired(&app(), &all_caps()).unwrap();
    let w: Deployment = typed(&children, ChildKind::Deployment, "shop-worker");
    let env = w.spec.template.spec.unwrap().containers[0]
        .env
        .clone()
        .unwrap();
    assert!(env.iter().all(|e| e.name != "API_THREADS"));
}

#[test]
fn config_wires_redis_firebase_and_otlp_by_reference() {
    let mut a = app();
    a.spec.observability.otlp_endpoint = Some("http://otel:4317".into());
    let children = desired(&a, &all_caps()).unwrap();
    let cm: ConfigMap = typed(&children, ChildKind::ConfigMap, "shop-config");
    let data = cm.data.unwrap();
    assert_eq!(data["REDIS_MASTER_NAME"], "mymaster");
    let sentinels: Vec<_> = data["REDIS_SENTINELS"].split(',').collect();
    assert_eq!(sentinels.len(), 3);
    assert_eq!(
        sentinels[0],
        "shop-sentinel-0.shop-sentinel-headless.prod.svc.cluster.local:26379"
    );
    assert_eq!(data["GOOGLE_CLOUD_PROJECT"], "shop-prod");
    assert_eq!(data["STORAGE_BUCKET"], "shop-prod.appspot.com");
    assert_eq!(
        data["GOOGLE_APPLICATION_CREDENTIALS"],
        "/var/run/secrets/firebase/credentials.json"
    );
    assert_eq!(data["OTEL_EXPORTER_OTLP_ENDPOINT"], "http://otel:4317");
    assert_eq!(data["RUST_LOG"], "info");
    assert_eq!(data["API_LISTEN"], "0.0.0.0:8080");
    assert_eq!(data["WORKER_QUEUES"], "jobs");
    assert_eq!(data["API_JOBS_QUEUE"], data["WORKER_QUEUES"]);
    assert!(!data.keys().any(|k| k.ends_with("EMULATOR_HOST")));

    let d: Deployment = typed(&children, ChildKind::Deployment, "shop-api");
    let pod = d.spec.template.spec.unwrap();
    let secret_volume = pod
        .volumes
        .unwrap()
        .into_iter()
        .find_map(|v| v.secret)
        .expect("credentials mounted from the Secret");
    assert_eq!(secret_volume.secret_name.as_deref(), Some("firebase-key"));
    let c = &pod.containers[0];
    assert_eq!(
        c.env_from.as_ref().unwrap()[0]
            .config_map_ref
            .as_ref()
            .unwrap()
            .name,
        "shop-config"
    );
}

#[test]
fn emulator_hosts_appear_only_when_set() {
    let mut a = app();
    a.spec.firebase.credentials_secret = None;
    a.spec.firebase.emulators = Some(FirebaseEmulators {
        firestore: Some("firestore:8080".into()),
        auth: None,
        storage: Some("gcs:4443".into()),
    });
    let children = desired(&a, &all_caps()).unwrap();
    let data = typed::<ConfigMap>(&children, ChildKind::ConfigMap, "shop-config")
        .data
        .unwrap();
    assert_eq!(data["FIRESTORE_EMULATOR_HOST"], "firestore:8080");
    assert_eq!(data["STORAGE_EMULATOR_HOST"], "gcs:4443");
    assert!(!data.contains_key("FIREBASE_AUTH_EMULATOR_HOST"));
    assert!(!data.contains_key("GOOGLE_APPLICATION_CREDENTIALS"));
    let d: Deployment = typed(&children, ChildKind::Deployment, "shop-api");
    assert!(
        d.spec
            .template
            .spec
            .unwrap()
            .volumes
            .unwrap()
            .iter()
            .all(|v| v.secret.is_none())
    );
}

#[test]
fn config_change_rolls_pods_and_scaling_change_does_not() {
    let hash = |a: &ScalableApp| {
        let children = desired(a, &all_caps()).unwrap();
        let d: Deployment = typed(&children, ChildKind::Deployment, "shop-worker");
        d.spec.template.metadata.unwrap().annotations.unwrap()[CONFIG_HASH_ANNOTATION].clone()
    };
    let base = app();
    let mut scaled = app();
    scaled.spec.worker.max_replicas = 30;
    assert_eq!(hash(&base), hash(&scaled));
    let mut relogged = app();
    relogged.spec.observability.log_level = crate::api::LogLevel::Debug;
    assert_ne!(hash(&base), hash(&relogged));
}

#[test]
fn keda_replaces_the_worker_hpa_only_for_backlog_scaling_with_its_crd() {
    let mut a = app();
    let children = desired(&a, &all_caps()).unwrap();
    assert!(has(
        &children,
        ChildKind::HorizontalPodAutoscaler,
        "shop-worker"
    ));
    assert!(!has(&children, ChildKind::ScaledObject, "shop-worker"));

    a.spec.worker.scaling.signal = ScalingSignal::QueueBacklog;
    let without_keda = desired(&a, &RenderContext::default()).unwrap();
    assert!(has(
        &without_keda,
        ChildKind::HorizontalPodAutoscaler,
        "shop-worker"
    ));
    assert!(!has(&without_keda, ChildKind::ScaledObject, "shop-worker"));

    let with_keda = desired(&a, &all_caps()).unwrap();
    assert!(!has(
        &with_keda,
        ChildKind::HorizontalPodAutoscaler,
        "shop-worker"
    ));
    let so = with_keda
        .iter()
        .find(|c| c.kind == ChildKind::ScaledObject)
        .unwrap();
    // One list-length trigger per priority list of platform::queue.
    let triggers = so.object.data["spec"]["triggers"].as_array().unwrap();
    assert_eq!(triggers.len(), 4);
    for (rank, trigger) in triggers.iter().enumerate() {
        assert_eq!(trigger["type"], "redis-sentinel");
        assert_eq!(
            trigger["metadata"]["listName"],
            format!("q:{{jobs}}:wait:{rank}")
        );
        assert_eq!(trigger["metadata"]["listLength"], "100");
        assert_eq!(trigger["metadata"]["sentinelMaster"], "mymaster");
    }
    assert_eq!(
        so.object.data["spec"]["scaleTargetRef"]["name"],
        "shop-worker"
    );
}

#[test]
fn alert_rules_go_to_a_prometheus_rule_only_when_its_crd_exists() {
    let with = desired(&app(), &all_caps()).unwrap();
    assert!(has(&with, ChildKind::PrometheusRule, "shop-alerts"));
    assert!(!has(&with, ChildKind::ConfigMap, "shop-alerts"));
    assert!(has(&with, ChildKind::ServiceMonitor, "shop"));

    let without = desired(&app(), &RenderContext::default()).unwrap();
    assert!(!has(&without, ChildKind::PrometheusRule, "shop-alerts"));
    assert!(!has(&without, ChildKind::ServiceMonitor, "shop"));
    let cm: ConfigMap = typed(&without, ChildKind::ConfigMap, "shop-alerts");
    let file: serde_json::Value = serde_saphyr::from_str(&cm.data.unwrap()["rules.yaml"]).unwrap();
    let rule = with
        .iter()
        .find(|c| c.kind == ChildKind::PrometheusRule)
        .unwrap();
    assert_eq!(file["groups"], rule.object.data["spec"]["groups"]);
}

#[test]
fn every_alert_has_a_runbook_and_severity() {
    let groups = rule_groups("shop", "prod", &app().spec);
    let alerts: Vec<&Rule> = groups
        .iter()
        .flat_map(|g| &g.rules)
        .filter(|r| r.alert.is_some())
        .collect();
    assert!(alerts.len() >= 15, "{} alerts", alerts.len());
    for rule in alerts {
        let name = rule.alert.as_ref().unwrap();
        assert_eq!(
            rule.annotations["runbook_url"],
            format!("docs/runbooks.md#{}", name.to_lowercase())
        );
        assert!(["critical", "warning"].contains(&rule.labels["severity"].as_str()));
        assert_eq!(rule.labels["scalableapp"], "shop");
    }
}

#[test]
fn extra_rule_labels_are_added_but_cannot_override_severity() {
    let mut a = app();
    a.spec
        .observability
        .alerts
        .extra_labels
        .insert("team".into(), "payments".into());
    a.spec
        .observability
        .alerts
        .extra_labels
        .insert("severity".into(), "info".into());
    for rule in rule_groups("shop", "prod", &a.spec)
        .iter()
        .flat_map(|g| &g.rules)
    {
        assert_eq!(rule.labels["team"], "payments");
        if rule.alert.is_some() {
            assert_ne!(rule.labels["severity"], "info");
        }
    }
}

#[test]
fn disruption_budgets_never_block_drains_and_keep_sentinel_quorum() {
    let mut a = app();
    a.spec.api.min_replicas = 1;
    a.spec.redis.sentinels = 5;
    let children = desired(&a, &all_caps()).unwrap();
    for (name, expected) in [
        ("shop-api", 1),
        ("shop-worker", 1),
        ("shop-redis", 1),
        ("shop-sentinel", 2),
    ] {
        let pdb: PodDisruptionBudget = typed(&children, ChildKind::PodDisruptionBudget, name);
        let spec = pdb.spec.unwrap();
        assert_eq!(
            spec.max_unavailable,
            Some(IntOrString::Int(expected)),
            "{name}"
        );
        assert!(spec.min_available.is_none(), "{name}");
    }
}

#[test]
fn redis_statefulsets_keep_data_and_announce_hostnames() {
    let children = desired(&app(), &all_caps()).unwrap();
    let redis: StatefulSet = typed(&children, ChildKind::StatefulSet, "shop-redis");
    assert_eq!(redis.spec.replicas, Some(3));
    assert_eq!(
        redis.spec.service_name.as_deref(),
        Some("shop-redis-headless")
    );
    let retention = redis.spec.persistent_volume_claim_retention_policy.unwrap();
    assert_eq!(retention.when_deleted.as_deref(), Some("Retain"));
    assert_eq!(redis.spec.volume_claim_templates.unwrap().len(), 1);
    let pod = redis.spec.template.spec.unwrap();
    assert!(pod.affinity.unwrap().pod_anti_affinity.is_some());

    let sentinel: StatefulSet = typed(&children, ChildKind::StatefulSet, "shop-sentinel");
    assert_eq!(sentinel.spec.replicas, Some(3));

    let cm: ConfigMap = typed(&children, ChildKind::ConfigMap, "shop-redis");
    let data = cm.data.unwrap();
    assert!(data["sentinel-init.sh"].contains("sentinel announce-hostnames yes"));
    assert!(data["sentinel-init.sh"].contains("sentinel resolve-hostnames yes"));
    assert!(data["redis-init.sh"].contains("get-master-addr-by-name"));
    assert!(data["redis-init.sh"].contains(r#"if [ "$ORDINAL" = "0" ]"#));
    assert!(data["redis.conf"].contains("appendonly yes"));
    assert!(data["redis.conf"].contains("min-replicas-to-write 1"));

    let headless: Service = typed(&children, ChildKind::Service, "shop-redis-headless");
    let spec = headless.spec.unwrap();
    assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
    assert_eq!(spec.publish_not_ready_addresses, Some(true));

    let mut deleting = app();
    deleting.spec.redis.storage.delete_on_uninstall = true;
    let children = desired(&deleting, &all_caps()).unwrap();
    let redis: StatefulSet = typed(&children, ChildKind::StatefulSet, "shop-redis");
    let retention = redis.spec.persistent_volume_claim_retention_policy.unwrap();
    assert_eq!(retention.when_deleted.as_deref(), Some("Delete"));
}

#[test]
fn redis_network_policy_admits_only_the_apps_own_pods() {
    let children = desired(&app(), &all_caps()).unwrap();
    let np: k8s_openapi::api::networking::v1::NetworkPolicy =
        typed(&children, ChildKind::NetworkPolicy, "shop-redis");
    let spec = np.spec.unwrap();
    let rule = &spec.ingress.as_ref().unwrap()[0];
    assert_eq!(
        rule.ports.as_ref().unwrap()[0].port,
        Some(IntOrString::Int(6379))
    );
    let peer = rule.from.as_ref().unwrap()[0]
        .pod_selector
        .as_ref()
        .unwrap();
    assert_eq!(peer.match_labels.as_ref().unwrap()[LABEL_INSTANCE], "shop");
    let allowed = peer.match_expressions.as_ref().unwrap()[0]
        .values
        .clone()
        .unwrap();
    assert_eq!(allowed, ["api", "worker", "redis", "sentinel"]);
    assert!(rule.from.as_ref().unwrap()[0].namespace_selector.is_none());
}

#[test]
fn external_redis_renders_no_redis_workloads() {
    let mut a = app();
    a.spec.redis.mode = RedisMode::External;
    a.spec.redis.url = Some("redis://cache.example:6379".into());
    let children = desired(&a, &all_caps()).unwrap();
    assert!(children.iter().all(|c| c.kind != ChildKind::StatefulSet));
    assert!(children.iter().all(|c| c.kind != ChildKind::NetworkPolicy));
    assert!(!has(
        &children,
        ChildKind::PodDisruptionBudget,
        "shop-redis"
    ));
    let data = typed::<ConfigMap>(&children, ChildKind::ConfigMap, "shop-config")
        .data
        .unwrap();
    assert_eq!(data["REDIS_URL"], "redis://cache.example:6379");
    assert!(!data.contains_key("REDIS_SENTINELS"));
    let groups = rule_groups("shop", "prod", &a.spec);
    assert!(groups.iter().all(|g| !g.name.ends_with("redis")));
}

#[test]
fn ingress_carries_rate_limit_annotations_and_tls() {
    let mut a = app();
    a.spec.ingress = Some(IngressSpec {
        host: "shop.example.com".into(),
        class_name: Some("nginx".into()),
        tls_secret_name: Some("shop-tls".into()),
    });
    let children = desired(&a, &all_caps()).unwrap();
    let ing: k8s_openapi::api::networking::v1::Ingress =
        typed(&children, ChildKind::Ingress, "shop-api");
    let annotations = ing.metadata.annotations.unwrap();
    assert_eq!(annotations["nginx.ingress.kubernetes.io/limit-rps"], "50");
    assert_eq!(
        annotations["nginx.ingress.kubernetes.io/limit-burst-multiplier"],
        "2"
    );
    let spec = ing.spec.unwrap();
    assert_eq!(
        spec.tls.unwrap()[0].secret_name.as_deref(),
        Some("shop-tls")
    );
    assert_eq!(spec.ingress_class_name.as_deref(), Some("nginx"));
    assert!(!has(
        &desired(&app(), &all_caps()).unwrap(),
        ChildKind::Ingress,
        "shop-api"
    ));
}

#[test]
fn render_needs_the_apiserver_assigned_metadata() {
    let mut a = app();
    a.metadata.uid = None;
    assert!(matches!(
        desired(&a, &all_caps()),
        Err(RenderError::MissingMetadata("uid"))
    ));
}

#[test]
fn yaml_output_round_trips() {
    let children = desired(&app(), &all_caps()).unwrap();
    let yaml = to_yaml(&children).unwrap();
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&yaml).unwrap();
    assert_eq!(docs.len(), children.len());
    for (doc, child) in docs.iter().zip(&children) {
        assert_eq!(doc, &serde_json::to_value(&child.object).unwrap());
    }
}

#[test]
fn rate_limit_becomes_the_api_servers_gcra_limit_and_window() {
    let mut a = app();
    a.spec.api.rate_limit.requests_per_second = 50;
    a.spec.api.rate_limit.burst = 100;
    let children = desired(&a, &RenderContext::default()).unwrap();
    let cm: ConfigMap = typed(&children, ChildKind::ConfigMap, "shop-config");
    let data = cm.data.unwrap();
    // 150 at once, then 150 per 3 s: 50 per second sustained.
    assert_eq!(data["API_RATE_LIMIT"], "150");
    assert_eq!(data["API_RATE_LIMIT_WINDOW_SECONDS"], "3");
}

/// `(container, secret name, key)` of every `REDIS_PASSWORD`/`REDISCLI_AUTH` env, and whether
/// any env sets a password inline.
fn password_refs(children: &[Child]) -> Vec<(String, String, String, String)> {
    let mut out = Vec::new();
    for (pod, spec) in pod_specs(children) {
        let containers = spec
            .init_containers
            .clone()
            .unwrap_or_default()
            .into_iter()
            .chain(spec.containers.clone());
        for c in containers {
            for e in c.env.clone().unwrap_or_default() {
                if e.name != "REDIS_PASSWORD" && e.name != "REDISCLI_AUTH" {
                    continue;
                }
                assert!(e.value.is_none(), "{pod}/{}: {} set inline", c.name, e.name);
                let r = e
                    .value_from
                    .and_then(|v| v.secret_key_ref)
                    .unwrap_or_else(|| panic!("{pod}/{}: {} not from a Secret", c.name, e.name));
                out.push((format!("{pod}/{}", c.name), e.name, r.name, r.key));
            }
        }
    }
    out
}

#[test]
fn the_redis_password_reaches_every_redis_client_by_secret_reference_only() {
    let children = desired(&app(), &all_caps()).unwrap();
    let refs = password_refs(&children);
    let has_ref = |container: &str, var: &str| {
        refs.iter().any(|(c, v, name, key)| {
            c == container && v == var && name == "shop-redis-auth" && key == "password"
        })
    };
    for container in [
        "shop-api/api",
        "shop-worker/worker",
        "shop-redis/role",
        "shop-redis/redis",
        "shop-redis/metrics",
        "shop-sentinel/monitor",
    ] {
        assert!(
            has_ref(container, "REDIS_PASSWORD"),
            "{container}: {refs:?}"
        );
    }
    // redis-cli in the Redis pods (init script, probes) and the sentinel init script.
    for container in [
        "shop-redis/role",
        "shop-redis/redis",
        "shop-sentinel/monitor",
    ] {
        assert!(has_ref(container, "REDISCLI_AUTH"), "{container}: {refs:?}");
    }
    // Sentinels have no password: neither the sentinel nor its exporter sends one.
    assert!(
        refs.iter()
            .all(|(c, ..)| c != "shop-sentinel/sentinel" && c != "shop-sentinel/metrics"),
        "{refs:?}"
    );
    // The Secret is created by the reconciler (once), never rendered: SSA would rotate it.
    assert!(children.iter().all(|c| !c.name().ends_with("redis-auth")));
    // No ConfigMap mentions a password.
    for c in children.iter().filter(|c| c.kind == ChildKind::ConfigMap) {
        let cm: ConfigMap = typed(&children, c.kind, c.name());
        for (k, v) in cm.data.unwrap_or_default() {
            if k.ends_with(".sh") {
                continue; // the init scripts read $REDIS_PASSWORD from the env
            }
            assert!(
                !k.contains("PASSWORD") && !v.contains("requirepass") && !v.contains("auth-pass"),
                "{}: {k}",
                c.name()
            );
        }
    }
}

#[test]
fn an_explicit_password_secret_is_used_and_external_redis_has_none_by_default() {
    let mut a = app();
    a.spec.redis.password_secret = Some(crate::api::PasswordSecretRef {
        name: "my-redis".into(),
        key: "pw".into(),
    });
    let refs = password_refs(&desired(&a, &all_caps()).unwrap());
    assert!(!refs.is_empty());
    assert!(
        refs.iter().all(|(_, _, n, k)| n == "my-redis" && k == "pw"),
        "{refs:?}"
    );

    let mut ext = app();
    ext.spec.redis.mode = RedisMode::External;
    ext.spec.redis.url = Some("redis://cache.example:6379".into());
    assert_eq!(password_refs(&desired(&ext, &all_caps()).unwrap()), vec![]);
    // External with a Secret: api and worker get it.
    ext.spec.redis.password_secret = a.spec.redis.password_secret.clone();
    let refs = password_refs(&desired(&ext, &all_caps()).unwrap());
    let containers: Vec<&str> = refs.iter().map(|(c, ..)| c.as_str()).collect();
    assert_eq!(containers, ["shop-api/api", "shop-worker/worker"]);
}
