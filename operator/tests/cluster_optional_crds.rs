//! Optional CRDs change what is rendered: a PrometheusRule only once the Prometheus
//! Operator's CRD is served (until then the same rules sit in a ConfigMap), a ServiceMonitor
//! likewise, and a KEDA
//! ScaledObject replaces the worker HPA once KEDA's CRD is served. Both are noticed while the
//! operator runs, through periodic discovery.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use operator::api::{ScalableApp, ScalingSignal};
use operator::render::ChildKind;
use serde_json::json;
use support::*;

/// A stand-in for a third-party CRD: same group, version, kind and plural, any content.
fn crd(group: &str, version: &str, kind: &str, plural: &str) -> CustomResourceDefinition {
    serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{plural}.{group}")},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"kind": kind, "plural": plural, "singular": kind.to_lowercase()},
            "versions": [{
                "name": version, "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}
            }]
        }
    }))
    .unwrap()
}

async fn exists(client: &Client, kind: ChildKind, name: &str) -> bool {
    child_api(client, kind, "default")
        .get_opt(name)
        .await
        .ok()
        .flatten()
        .is_some()
}

#[tokio::test]
async fn prometheus_rule_service_monitor_and_scaled_object_appear_only_with_their_crds() {
    let (_plane, client) = cluster().await;
    let op = RunningOperator::start(client.clone(), test_config());
    let apps: Api<ScalableApp> = Api::namespaced(client.clone(), "default");
    let mut app = app_yaml("shop", "default");
    app.spec.worker.scaling.signal = ScalingSignal::QueueBacklog;
    apps.create(&PostParams::default(), &app).await.unwrap();

    // Without the CRDs: rules in a ConfigMap, worker scaled by an HPA (CPU fallback).
    eventually("alerts ConfigMap and worker HPA", || {
        let client = client.clone();
        async move {
            (exists(&client, ChildKind::ConfigMap, "shop-alerts").await
                && exists(&client, ChildKind::HorizontalPodAutoscaler, "shop-worker").await)
                .then_some(())
        }
    })
    .await;

    install_crd(
        &client,
        crd(
            "monitoring.coreos.com",
            "v1",
            "PrometheusRule",
            "prometheusrules",
        ),
    )
    .await;
    let rules = child_api(&client, ChildKind::PrometheusRule, "default");
    let rule = eventually("PrometheusRule created", || {
        let rules = rules.clone();
        async move { rules.get_opt("shop-alerts").await.ok().flatten() }
    })
    .await;
    let groups = rule.data["spec"]["groups"].as_array().unwrap();
    assert!(groups.len() >= 4, "rule groups: {}", groups.len());
    eventually("alerts ConfigMap pruned", || {
        let client = client.clone();
        async move { (!exists(&client, ChildKind::ConfigMap, "shop-alerts").await).then_some(()) }
    })
    .await;
    // No ServiceMonitor CRD, no ServiceMonitor; the PrometheusRule stays in sync with the spec.
    apps.patch(
        "shop",
        &PatchParams::default(),
        &Patch::Merge(
            json!({"spec": {"observability": {"alerts": {"extraLabels": {"team": "payments"}}}}}),
        ),
    )
    .await
    .unwrap();
    eventually("rule labels updated", || {
        let rules = rules.clone();
        async move {
            let rule = rules.get("shop-alerts").await.ok()?;
            let label = &rule.data["spec"]["groups"][0]["rules"][0]["labels"]["team"];
            (label == "payments").then_some(())
        }
    })
    .await;

    install_crd(
        &client,
        crd("keda.sh", "v1alpha1", "ScaledObject", "scaledobjects"),
    )
    .await;
    let scaled = child_api(&client, ChildKind::ScaledObject, "default");
    let so = eventually("ScaledObject created", || {
        let scaled = scaled.clone();
        async move { scaled.get_opt("shop-worker").await.ok().flatten() }
    })
    .await;
    assert_eq!(so.data["spec"]["triggers"][0]["type"], "redis-sentinel");
    assert_eq!(
        so.data["spec"]["triggers"][0]["metadata"]["listName"],
        "q:{jobs}:wait:0"
    );
    eventually("worker HPA replaced", || {
        let client = client.clone();
        async move {
            (!exists(&client, ChildKind::HorizontalPodAutoscaler, "shop-worker").await)
                .then_some(())
        }
    })
    .await;
    assert!(exists(&client, ChildKind::HorizontalPodAutoscaler, "shop-api").await);
    op.stop().await;
}
