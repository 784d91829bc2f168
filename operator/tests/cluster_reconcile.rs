//! The reconciler against a real control plane (etcd, kube-apiserver, kube-controller-manager;
//! no kubelet): children created, updated, restored, pruned and garbage-collected; no writes
//! when nothing changed; paused apps left alone.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use operator::api::ScalableApp;
use operator::render::{self, CONFIG_HASH_ANNOTATION, ChildKind, RenderContext};
use serde_json::json;
use support::*;

/// A control plane with the operator running and the app `shop` created in `default`.
async fn operator_with_shop() -> (
    testenv::ControlPlane,
    Client,
    RunningOperator,
    Api<ScalableApp>,
) {
    let (plane, client) = cluster().await;
    let op = RunningOperator::start(client.clone(), test_config());
    let apps: Api<ScalableApp> = Api::namespaced(client.clone(), "default");
    apps.create(&PostParams::default(), &app_yaml("shop", "default"))
        .await
        .unwrap();
    (plane, client, op, apps)
}

/// What a write by the operator would change: the resourceVersion for kinds no controller
/// writes status to, else the generation and the time of the operator's managed fields.
async fn fingerprints(client: &Client, ns: &str) -> BTreeMap<String, String> {
    let lp = ListParams::default().labels("app.kubernetes.io/managed-by=scalable-operator");
    let mut out = BTreeMap::new();
    for kind in CORE_KINDS {
        for obj in child_api(client, kind, ns).list(&lp).await.unwrap() {
            let ours = obj
                .managed_fields()
                .iter()
                .filter(|m| m.manager.as_deref() == Some("scalable-operator"))
                .map(|m| format!("{:?}", m.time))
                .collect::<Vec<_>>()
                .join(",");
            let print = match kind {
                ChildKind::ServiceAccount
                | ChildKind::ConfigMap
                | ChildKind::Service
                | ChildKind::NetworkPolicy
                | ChildKind::Ingress => obj.resource_version().unwrap_or_default(),
                _ => format!("gen {:?} ours {ours}", obj.metadata.generation),
            };
            out.insert(format!("{kind}/{}", obj.name_any()), print);
        }
    }
    out
}

fn writes(op: &RunningOperator) -> u64 {
    let text = op.metrics.encode().unwrap();
    text.lines()
        .filter(|l| {
            l.starts_with("scalable_operator_child_operations_total")
                && (l.contains("action=\"created\"")
                    || l.contains("action=\"updated\"")
                    || l.contains("action=\"replaced\"")
                    || l.contains("action=\"deleted\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

fn reconciles(op: &RunningOperator, result: &str) -> u64 {
    let text = op.metrics.encode().unwrap();
    text.lines()
        .find(|l| {
            l.starts_with(&format!(
                "scalable_operator_reconciles_total{{result=\"{result}\"}}"
            ))
        })
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0)
}

/// Waits for the app's `Degraded` condition to be true with a message containing `text`;
/// returns the message.
async fn degraded_saying(apps: &Api<ScalableApp>, app: &str, text: &str) -> String {
    eventually(&format!("Degraded naming {text}"), || {
        let apps = apps.clone();
        async move {
            let status = apps.get(app).await.unwrap().status?;
            let c = status
                .conditions
                .into_iter()
                .find(|c| c.type_ == "Degraded" && c.status == "True")?;
            c.message.contains(text).then_some(c.message)
        }
    })
    .await
}

/// Deletes `name` and waits for the operator to create it again (a new UID).
async fn deleted_and_restored<K>(api: &Api<K>, name: &str)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let old = api.get(name).await.unwrap().uid();
    api.delete(name, &DeleteParams::default()).await.unwrap();
    eventually(&format!("{name} restored"), || {
        let api = api.clone();
        let old = old.clone();
        async move {
            let restored = api.get_opt(name).await.unwrap()?;
            (restored.uid() != old).then_some(())
        }
    })
    .await;
}

/// Waits until the children and the app's status stop changing (the controller-manager
/// settles the children's status, the operator follows in the app's status).
async fn settled(client: &Client, ns: &str) -> BTreeMap<String, String> {
    let snapshot = |client: Client| async move {
        let apps: Api<ScalableApp> = Api::namespaced(client.clone(), ns);
        let rvs: Vec<_> = apps
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .iter()
            .map(|a| a.resource_version())
            .collect();
        (fingerprints(&client, ns).await, rvs)
    };
    let start = std::time::Instant::now();
    let mut last = snapshot(client.clone()).await;
    loop {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let now = snapshot(client.clone()).await;
        if now == last {
            return now.0;
        }
        assert!(
            start.elapsed() < TIMEOUT,
            "children and status never settled"
        );
        last = now;
    }
}

async fn expected_children(client: &Client, ns: &str, name: &str) -> Vec<render::Child> {
    let app = Api::<ScalableApp>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .unwrap();
    render::desired(&app, &RenderContext::default()).unwrap()
}

#[tokio::test]
async fn children_are_created_updated_restored_pruned_and_collected() {
    let (_plane, client) = cluster().await;
    let ns = "shop";
    // Pod Security "restricted" enforced: every pod the children create must pass admission.
    namespace(
        &client,
        ns,
        &[
            ("pod-security.kubernetes.io/enforce", "restricted"),
            ("pod-security.kubernetes.io/enforce-version", "latest"),
        ],
    )
    .await;
    let op = RunningOperator::start(client.clone(), test_config());
    let apps: Api<ScalableApp> = Api::namespaced(client.clone(), ns);
    apps.create(&PostParams::default(), &app_yaml("shop", ns))
        .await
        .unwrap();

    // Create → every desired child exists with the rendered spec.
    let desired = expected_children(&client, ns, "shop").await;
    assert!(desired.len() >= 20);
    for child in &desired {
        let api = child_api(&client, child.kind, ns);
        let live = eventually(&format!("{} {}", child.kind, child.name()), || {
            let api = api.clone();
            let name = child.name().to_string();
            async move { api.get_opt(&name).await.unwrap() }
        })
        .await;
        assert!(
            operator::apply::contains(
                &serde_json::to_value(&live).unwrap(),
                &serde_json::to_value(&child.object).unwrap()
            ),
            "{} {} differs from the rendered object",
            child.kind,
            child.name()
        );
    }
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let api_deploy = deployments.get("shop-api").await.unwrap();
    assert_eq!(
        api_deploy
            .managed_fields()
            .iter()
            .filter(|m| m.manager.as_deref() == Some("scalable-operator"))
            .count(),
        1,
        "one field manager"
    );

    // Status: observedGeneration and the six conditions.
    let app = eventually("status with observedGeneration", || {
        let apps = apps.clone();
        async move {
            let app = apps.get("shop").await.unwrap();
            let status = app.status.as_ref()?;
            (status.observed_generation == app.metadata.generation && status.conditions.len() == 6)
                .then_some(app)
        }
    })
    .await;
    let status = app.status.unwrap();
    let types: Vec<_> = status.conditions.iter().map(|c| c.type_.as_str()).collect();
    for t in [
        "Ready",
        "Progressing",
        "Degraded",
        "ApiReady",
        "WorkerReady",
        "RedisReady",
    ] {
        assert!(types.contains(&t), "condition {t} missing: {types:?}");
    }
    assert_eq!(
        status.redis.unwrap().sentinel_service.as_deref(),
        Some("shop-sentinel.shop.svc.cluster.local:26379")
    );

    // Pod Security: the controller-manager created pods for api, worker, redis and sentinels,
    // and no ReplicaSet reports a FailedCreate.
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    for component in ["api", "worker", "redis", "sentinel"] {
        eventually(&format!("a {component} pod admitted"), || {
            let pods = pods.clone();
            async move {
                let lp = ListParams::default()
                    .labels(&format!("app.kubernetes.io/component={component}"));
                (!pods.list(&lp).await.unwrap().items.is_empty()).then_some(())
            }
        })
        .await;
    }
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    let failed: Vec<String> = events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("FailedCreate"))
        .map(|e| e.message.unwrap_or_default())
        .collect();
    assert!(failed.is_empty(), "FailedCreate events: {failed:?}");
    let replica_sets: Api<ReplicaSet> = Api::namespaced(client.clone(), ns);
    for rs in replica_sets.list(&ListParams::default()).await.unwrap() {
        let name = rs.name_any();
        let failures = rs
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .into_iter()
            .filter(|c| c.type_.as_deref() == Some("ReplicaFailure"))
            .count();
        assert_eq!(failures, 0, "ReplicaSet {} failed to create pods", name);
    }

    // A reconcile with nothing to change writes nothing.
    let before = settled(&client, ns).await;
    let app_rv = apps.get("shop").await.unwrap().resource_version();
    let writes_before = writes(&op);
    let reconciles_before = reconciles(&op, "ok");
    // An annotation is a change the controller sees (and reconciles) but not a spec change.
    apps.patch(
        "shop",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {"test/poke": "1"}}})),
    )
    .await
    .unwrap();
    eventually("the poke to be reconciled", || {
        let n = reconciles(&op, "ok");
        async move { (n > reconciles_before).then_some(()) }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        writes(&op),
        writes_before,
        "a no-op reconcile wrote children"
    );
    assert_eq!(fingerprints(&client, ns).await, before, "children changed");
    let poked = apps.get("shop").await.unwrap();
    assert_ne!(
        poked.resource_version(),
        app_rv,
        "the poke itself is a write"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        apps.get("shop").await.unwrap().resource_version(),
        poked.resource_version(),
        "status rewritten without a change"
    );

    // Spec change → children updated, observedGeneration follows.
    let old_hash = api_deploy
        .spec
        .template
        .metadata
        .unwrap()
        .annotations
        .unwrap()[CONFIG_HASH_ANNOTATION]
        .clone();
    let changed = apps
        .patch(
            "shop",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {
                "api": {"maxReplicas": 6},
                "observability": {"logLevel": "debug"},
                "ingress": null,
            }})),
        )
        .await
        .unwrap();
    let generation = changed.metadata.generation;
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(client.clone(), ns);
    eventually("HPA max 6", || {
        let hpas = hpas.clone();
        async move { (hpas.get("shop-api").await.unwrap().spec.max_replicas == 6).then_some(()) }
    })
    .await;
    let configs: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let log_level = |configs: Api<ConfigMap>| async move {
        configs
            .get("shop-config")
            .await
            .ok()?
            .data?
            .get("RUST_LOG")
            .cloned()
    };
    eventually("RUST_LOG debug", || {
        let configs = configs.clone();
        async move { (log_level(configs).await.as_deref() == Some("debug")).then_some(()) }
    })
    .await;
    eventually("pods rolled with the new config hash", || {
        let deployments = deployments.clone();
        let old_hash = old_hash.clone();
        async move {
            let d = deployments.get("shop-api").await.unwrap();
            let hash = d
                .spec
                .template
                .metadata?
                .annotations?
                .get(CONFIG_HASH_ANNOTATION)?
                .clone();
            (hash != old_hash).then_some(())
        }
    })
    .await;
    eventually("observedGeneration follows", || {
        let apps = apps.clone();
        async move {
            let app = apps.get("shop").await.unwrap();
            (app.status?.observed_generation == generation).then_some(())
        }
    })
    .await;
    // The Ingress left the spec, so it is pruned.
    let ingresses = child_api(&client, ChildKind::Ingress, ns);
    eventually("Ingress pruned", || {
        let ingresses = ingresses.clone();
        async move {
            ingresses
                .get_opt("shop-api")
                .await
                .unwrap()
                .is_none()
                .then_some(())
        }
    })
    .await;

    // A deleted child is restored; an edited one is put back.
    deleted_and_restored(&configs, "shop-config").await;
    deployments
        .delete("shop-worker", &DeleteParams::default())
        .await
        .unwrap();
    eventually("worker Deployment restored", || {
        let deployments = deployments.clone();
        async move {
            let d = deployments.get_opt("shop-worker").await.unwrap()?;
            d.metadata.deletion_timestamp.is_none().then_some(())
        }
    })
    .await;
    configs
        .patch(
            "shop-config",
            &PatchParams::apply("intruder").force(),
            &Patch::Apply(json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "data": {"RUST_LOG": "trace"}
            })),
        )
        .await
        .unwrap();
    hpas.patch(
        "shop-api",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"maxReplicas": 50}})),
    )
    .await
    .unwrap();
    eventually("edits reverted", || {
        let configs = configs.clone();
        let hpas = hpas.clone();
        async move {
            let level = log_level(configs).await;
            let max = hpas.get("shop-api").await.unwrap().spec.max_replicas;
            (level.as_deref() == Some("debug") && max == 6).then_some(())
        }
    })
    .await;

    // Deleting the app → the controller-manager's garbage collector removes the children.
    apps.delete("shop", &DeleteParams::default()).await.unwrap();
    for (kind, name) in [
        (ChildKind::Deployment, "shop-api"),
        (ChildKind::StatefulSet, "shop-redis"),
        (ChildKind::ConfigMap, "shop-config"),
        (ChildKind::Service, "shop-api"),
    ] {
        let api = child_api(&client, kind, ns);
        eventually(&format!("{kind} {name} collected"), || {
            let api = api.clone();
            async move { api.get_opt(name).await.unwrap().is_none().then_some(()) }
        })
        .await;
    }
    op.stop().await;
}

#[tokio::test]
async fn paused_apps_are_left_alone() {
    let (_plane, client) = cluster().await;
    let ns = "default";
    let op = RunningOperator::start(client.clone(), test_config());
    let apps: Api<ScalableApp> = Api::namespaced(client.clone(), ns);

    // Paused from the start: nothing is created.
    let mut frozen = app_yaml("frozen", ns);
    frozen.spec.paused = true;
    apps.create(&PostParams::default(), &frozen).await.unwrap();

    apps.create(&PostParams::default(), &app_yaml("shop", ns))
        .await
        .unwrap();
    let configs: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    eventually("shop children", || {
        let configs = configs.clone();
        async move { configs.get_opt("shop-config").await.unwrap() }
    })
    .await;
    eventually("the frozen app reconciled as paused", || {
        let n = reconciles(&op, "paused");
        async move { (n >= 1).then_some(()) }
    })
    .await;
    let frozen_children = expected_children(&client, ns, "frozen").await;
    for child in &frozen_children {
        let live = child_api(&client, child.kind, ns)
            .get_opt(child.name())
            .await
            .unwrap();
        assert!(
            live.is_none(),
            "{} {} created for a paused app",
            child.kind,
            child.name()
        );
    }
    assert!(
        apps.get("frozen").await.unwrap().status.is_none(),
        "paused app status written"
    );

    // Pausing a running app: deletions and edits of its children stay.
    let paused_before = reconciles(&op, "paused");
    apps.patch(
        "shop",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"paused": true}})),
    )
    .await
    .unwrap();
    eventually("the pause to be seen", || {
        let n = reconciles(&op, "paused");
        async move { (n > paused_before).then_some(()) }
    })
    .await;
    let app_rv = apps.get("shop").await.unwrap().resource_version();
    configs
        .delete("shop-config", &DeleteParams::default())
        .await
        .unwrap();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    deployments
        .patch(
            "shop-api",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"app.kubernetes.io/name": "edited"}}})),
        )
        .await
        .unwrap();
    // Several discovery periods and child events later, nothing was put back.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(
        configs.get_opt("shop-config").await.unwrap().is_none(),
        "deleted child restored while paused"
    );
    let labels = deployments.get("shop-api").await.unwrap().labels().clone();
    assert_eq!(labels["app.kubernetes.io/name"], "edited");
    assert_eq!(
        apps.get("shop").await.unwrap().resource_version(),
        app_rv,
        "paused app written"
    );

    // Unpausing restores both.
    apps.patch(
        "shop",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"paused": false}})),
    )
    .await
    .unwrap();
    eventually("restored after unpause", || {
        let configs = configs.clone();
        let deployments = deployments.clone();
        async move {
            configs.get_opt("shop-config").await.unwrap()?;
            let d = deployments.get("shop-api").await.unwrap();
            (d.labels()["app.kubernetes.io/name"] == "scalableapp").then_some(())
        }
    })
    .await;
    op.stop().await;
}

#[tokio::test]
async fn redis_volume_change_recreates_the_statefulset_and_keeps_its_pods() {
    let (_plane, client, op, apps) = operator_with_shop().await;
    let ns = "default";
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let lp = ListParams::default()
        .labels("app.kubernetes.io/instance=shop,app.kubernetes.io/component=redis");
    let before = eventually("three Redis pods", || {
        let pods = pods.clone();
        let lp = lp.clone();
        async move {
            let list = pods.list(&lp).await.unwrap().items;
            (list.len() == 3).then(|| list.iter().map(|p| p.uid().unwrap()).collect::<Vec<_>>())
        }
    })
    .await;
    let old_uid = sets.get("shop-redis").await.unwrap().uid().unwrap();

    apps.patch(
        "shop",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"redis": {"storage": {"size": "2Gi"}}}})),
    )
    .await
    .unwrap();
    let size = |s: &StatefulSet| {
        s.spec.volume_claim_templates.as_ref().unwrap()[0]
            .spec
            .as_ref()
            .unwrap()
            .resources
            .as_ref()
            .unwrap()
            .requests
            .as_ref()
            .unwrap()["storage"]
            .0
            .clone()
    };
    let new = eventually("StatefulSet recreated with 2Gi volumes", || {
        let sets = sets.clone();
        async move {
            let s = sets.get_opt("shop-redis").await.unwrap()?;
            (size(&s) == "2Gi" && s.metadata.deletion_timestamp.is_none()).then_some(s)
        }
    })
    .await;
    assert_ne!(new.uid().unwrap(), old_uid);
    // The same pods, adopted by the new StatefulSet.
    let new_uid = new.uid().unwrap();
    eventually("pods adopted", || {
        let pods = pods.clone();
        let lp = lp.clone();
        let before = before.clone();
        let new_uid = new_uid.clone();
        async move {
            let list = pods.list(&lp).await.unwrap().items;
            let uids: Vec<_> = list.iter().map(|p| p.uid().unwrap()).collect();
            let adopted = list
                .iter()
                .all(|p| p.owner_references().iter().any(|o| o.uid == new_uid));
            (uids == before && adopted).then_some(())
        }
    })
    .await;
    assert_eq!(
        reconciles(&op, "error"),
        0,
        "the change went through without errors"
    );
    op.stop().await;
}

#[tokio::test]
async fn a_same_named_object_of_someone_else_is_never_taken_over() {
    let (_plane, client) = cluster().await;
    let ns = "default";
    let configs: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let foreign: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "shop-config"},
        "data": {"mine": "yes"}
    }))
    .unwrap();
    configs
        .create(&PostParams::default(), &foreign)
        .await
        .unwrap();

    let op = RunningOperator::start(client.clone(), test_config());
    let apps: Api<ScalableApp> = Api::namespaced(client.clone(), ns);
    apps.create(&PostParams::default(), &app_yaml("shop", ns))
        .await
        .unwrap();

    // The rest of the app is created; the status says what is in the way.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    eventually("the other children", || {
        let deployments = deployments.clone();
        async move { deployments.get_opt("shop-api").await.unwrap() }
    })
    .await;
    let degraded = degraded_saying(&apps, "shop", "ConfigMap shop-config").await;
    assert!(
        degraded.contains(
            "ConfigMap shop-config already exists and is not controlled by this ScalableApp"
        ),
        "{degraded}"
    );
    // The Event is recorded after the status is written, so it may land a moment later.
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    eventually("a ReconcileFailed warning Event", || {
        let events = events.clone();
        async move {
            events
                .list(&ListParams::default())
                .await
                .unwrap()
                .items
                .into_iter()
                .any(|e| {
                    e.reason.as_deref() == Some("ReconcileFailed")
                        && e.type_.as_deref() == Some("Warning")
                })
                .then_some(())
        }
    })
    .await;
    let untouched = configs.get("shop-config").await.unwrap();
    assert!(
        untouched.metadata.owner_references.is_none(),
        "foreign ConfigMap adopted"
    );
    assert_eq!(untouched.data.unwrap()["mine"], "yes");

    // Once it is gone, the retry (with backoff) creates the app's own.
    configs
        .delete("shop-config", &DeleteParams::default())
        .await
        .unwrap();
    eventually("own ConfigMap created and Degraded cleared", || {
        let configs = configs.clone();
        let apps = apps.clone();
        async move {
            let cm = configs.get_opt("shop-config").await.unwrap()?;
            cm.data.as_ref()?.get("RUST_LOG")?;
            let status = apps.get("shop").await.unwrap().status?;
            let c = status
                .conditions
                .into_iter()
                .find(|c| c.type_ == "Degraded")?;
            (c.status == "False").then_some(())
        }
    })
    .await;
    op.stop().await;
}

/// The operator may only create Secrets, so it cannot look for the generated password; it
/// creates it again once the recheck interval (the resync) has passed. A Secret deleted by
/// hand comes back (with a new value), and when the create is refused before the apiserver
/// gets to "already exists" (here by a full Secret quota), the rest of the app is still
/// applied and the refusal is reported.
#[tokio::test]
async fn a_refused_password_create_does_not_hold_back_the_children() {
    use k8s_openapi::api::core::v1::{ResourceQuota, ResourceQuotaSpec, Secret, Service};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    let (_plane, client) = cluster().await;
    let ns = "quota";
    namespace(&client, ns, &[]).await;
    let mut config = test_config();
    config.resync = Duration::from_secs(2);
    let op = RunningOperator::start(client.clone(), config);
    let pp = PostParams::default();
    let apps: Api<ScalableApp> = Api::namespaced(client.clone(), ns);
    apps.create(&pp, &app_yaml("shop", ns)).await.unwrap();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let first = eventually("the generated password Secret", || {
        let secrets = secrets.clone();
        async move { secrets.get_opt("shop-redis-auth").await.unwrap() }
    })
    .await;

    secrets
        .delete("shop-redis-auth", &DeleteParams::default())
        .await
        .unwrap();
    let second = eventually("the Secret created again", || {
        let secrets = secrets.clone();
        let first_uid = first.uid();
        async move {
            let s = secrets.get_opt("shop-redis-auth").await.unwrap()?;
            (s.uid() != first_uid).then_some(s)
        }
    })
    .await;
    let password = |s: &Secret| s.data.as_ref().unwrap()["password"].0.clone();
    assert_ne!(password(&first), password(&second));

    // One Secret allowed, one there: every Secret create is refused by the quota (403).
    let quotas: Api<ResourceQuota> = Api::namespaced(client.clone(), ns);
    let mut quota = ResourceQuota {
        spec: Some(ResourceQuotaSpec {
            hard: Some([("secrets".to_string(), Quantity("1".into()))].into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    quota.metadata.name = Some("secrets".into());
    quotas.create(&pp, &quota).await.unwrap();
    eventually("the quota's usage counted", || {
        let quotas = quotas.clone();
        async move {
            let used = quotas.get("secrets").await.unwrap().status?.used?;
            (used.get("secrets")? == &Quantity("1".into())).then_some(())
        }
    })
    .await;
    let mut other = Secret::default();
    other.metadata.name = Some("shop-redis-auth".into());
    let refused = secrets.create(&pp, &other).await.unwrap_err();
    assert!(
        matches!(refused, kube::Error::Api(ref e) if e.code == 403),
        "a create of an existing name is refused by the quota first: {refused}"
    );

    // The status says what failed.
    let degraded = degraded_saying(
        &apps,
        "shop",
        "creating the Redis password Secret shop-redis-auth",
    )
    .await;
    assert!(degraded.contains("exceeded quota"), "{degraded}");
    // A failed create is not remembered, so every reconcile tries again and is refused: a
    // child deleted now is still restored.
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    deleted_and_restored(&services, "shop-api").await;
    assert_eq!(
        password(&secrets.get("shop-redis-auth").await.unwrap()),
        password(&second),
        "the Secret is never rewritten"
    );
    op.stop().await;
}

#[tokio::test]
async fn the_generated_redis_password_is_created_once_and_never_rotated() {
    use k8s_openapi::api::core::v1::Secret;

    let (_plane, client, op, apps) = operator_with_shop().await;
    let ns = "default";
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let secret = eventually("the generated Redis password Secret", || {
        let secrets = secrets.clone();
        async move { secrets.get_opt("shop-redis-auth").await.unwrap() }
    })
    .await;
    let uid = apps.get("shop").await.unwrap().uid();
    let owner = &secret.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (
            owner.kind.as_str(),
            owner.name.as_str(),
            Some(owner.uid.clone())
        ),
        ("ScalableApp", "shop", uid)
    );
    assert_eq!(owner.controller, Some(true));
    let password = secret.data.as_ref().unwrap()["password"].0.clone();
    assert_eq!(password.len(), 43, "32 random bytes, base64url");
    // Referenced by the workloads, never copied into the app ConfigMap.
    let config = Api::<ConfigMap>::namespaced(client.clone(), ns)
        .get("shop-config")
        .await
        .unwrap();
    let config_text = serde_json::to_string(&config.data).unwrap();
    assert!(!config_text.contains(std::str::from_utf8(&password).unwrap()));

    // A spec change reconciles the app again; the password stays what it was.
    let reconciles_before = reconciles(&op, "ok");
    apps.patch(
        "shop",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"api": {"maxReplicas": 5}}})),
    )
    .await
    .unwrap();
    eventually("the spec change to be reconciled", || {
        let n = reconciles(&op, "ok");
        async move { (n > reconciles_before).then_some(()) }
    })
    .await;
    let after = secrets.get("shop-redis-auth").await.unwrap();
    assert_eq!(after.data.as_ref().unwrap()["password"].0, password);
    assert_eq!(after.resource_version(), secret.resource_version());

    // Gone with the app (garbage collector, through the owner reference).
    apps.delete("shop", &DeleteParams::default()).await.unwrap();
    eventually("the Secret collected with the app", || {
        let secrets = secrets.clone();
        async move {
            secrets
                .get_opt("shop-redis-auth")
                .await
                .unwrap()
                .is_none()
                .then_some(())
        }
    })
    .await;
    op.stop().await;
}
