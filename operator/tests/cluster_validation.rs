//! The apiserver rejects invalid ScalableApps with a message that says what to fix: the CEL
//! rules and schema constraints of crds/scalableapp.yaml, checked against a real apiserver.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use kube::api::{Api, DynamicObject, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};

fn app(spec_patch: Value) -> DynamicObject {
    let mut spec = json!({
        "firebase": { "projectId": "demo-test", "emulators": {} },
    });
    merge(&mut spec, spec_patch);
    serde_json::from_value(json!({
        "apiVersion": "scalable.dev/v1alpha1",
        "kind": "ScalableApp",
        "metadata": { "name": "bad", "namespace": "default" },
        "spec": spec,
    }))
    .unwrap()
}

fn merge(base: &mut Value, patch: Value) {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, v) in p {
                merge(b.entry(k).or_insert(Value::Null), v);
            }
        }
        (b, p) => *b = p,
    }
}

#[tokio::test]
async fn apiserver_rejects_invalid_specs_with_actionable_messages() {
    let (_plane, client) = support::cluster().await;
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("scalable.dev", "v1alpha1", "ScalableApp"),
        "scalableapps",
    );
    let api: Api<DynamicObject> = Api::namespaced_with(client, "default", &ar);
    let dry = PostParams {
        dry_run: true,
        ..PostParams::default()
    };

    // A valid spec (all defaults) is accepted, so the rejections below are about their field.
    api.create(&dry, &app(json!({})))
        .await
        .expect("the minimal spec is valid");

    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "api min > max",
            json!({"api": {"minReplicas": 5, "maxReplicas": 2}}),
            "api.minReplicas must be less than or equal to api.maxReplicas",
        ),
        (
            "worker min > max",
            json!({"worker": {"minReplicas": 4, "maxReplicas": 3}}),
            "worker.minReplicas must be less than or equal to worker.maxReplicas",
        ),
        (
            "even sentinels",
            json!({"redis": {"sentinels": 4}}),
            "redis.sentinels must be an odd number, at least 3",
        ),
        (
            "one sentinel",
            json!({"redis": {"sentinels": 1}}),
            "redis.sentinels must be an odd number, at least 3",
        ),
        (
            "one redis in Sentinel mode",
            json!({"redis": {"replicas": 1}}),
            "redis.replicas must be at least 2 in Sentinel mode",
        ),
        (
            "External without an address",
            json!({"redis": {"mode": "External"}}),
            "redis.mode External needs redis.url or redis.sentinelAddresses",
        ),
        (
            "Sentinel mode with a url",
            json!({"redis": {"url": "redis://cache:6379"}}),
            "redis.url and redis.sentinelAddresses are only for mode External",
        ),
        (
            "External with both url and sentinels",
            json!({"redis": {"mode": "External", "url": "redis://cache:6379", "sentinelAddresses": ["s:26379"]}}),
            "set either redis.url or redis.sentinelAddresses, not both",
        ),
        (
            "no Firebase credentials outside emulators",
            json!({"firebase": {"emulators": null}}),
            "firebase.credentialsSecret is required unless firebase.emulators is set",
        ),
        (
            "availability target of 100 %",
            json!({"observability": {"alerts": {"slo": {"availabilityTarget": 1.0}}}}),
            "availabilityTarget must be between 0.5 and 1.0",
        ),
        (
            "latency threshold off the histogram buckets",
            json!({"observability": {"alerts": {"slo": {"latencyThresholdSeconds": 0.3}}}}),
            "latencyThresholdSeconds must be a histogram bucket bound",
        ),
        (
            "unknown redis mode",
            json!({"redis": {"mode": "Cluster"}}),
            "Unsupported value: \"Cluster\"",
        ),
        (
            "zero API replicas",
            json!({"api": {"minReplicas": 0}}),
            "should be greater than or equal to 1",
        ),
    ];
    let mut failures = Vec::new();
    for (what, patch, expected) in cases {
        match api.create(&dry, &app(patch)).await {
            Ok(_) => failures.push(format!("{what}: accepted")),
            Err(kube::Error::Api(e)) => {
                if e.code != 422 || !e.message.contains(expected) {
                    failures.push(format!(
                        "{what}: {} {:?} lacks {expected:?}",
                        e.code, e.message
                    ));
                }
            }
            Err(e) => failures.push(format!("{what}: {e}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // The bucket bound check accepts integral bounds written as integers.
    api.create(
        &dry,
        &app(json!({"observability": {"alerts": {"slo": {"latencyThresholdSeconds": 1}}}})),
    )
    .await
    .expect("latencyThresholdSeconds: 1 is a bucket bound");
}
