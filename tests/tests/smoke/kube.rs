use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ApiResource, DeleteParams, DynamicObject, PostParams};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Api, ResourceExt};
use serde_json::json;
use testenv::ControlPlane;

#[tokio::test]
async fn control_plane_serves_crds_and_garbage_collects_owned_objects() -> anyhow::Result<()> {
    let cp = ControlPlane::start().await?;
    assert_eq!(cp.kubectl_run(&["get", "--raw", "/readyz"])?.trim(), "ok");
    let client = cp.client().await?;

    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.smoke.scalable.dev"},
        "spec": {
            "group": "smoke.scalable.dev",
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "properties": {"size": {"type": "integer", "minimum": 1}}}
                }}}
            }]
        }
    }))?;
    crds.create(&PostParams::default(), &crd).await?;
    tokio::time::timeout(
        Duration::from_secs(30),
        await_condition(
            crds,
            "widgets.smoke.scalable.dev",
            conditions::is_crd_established(),
        ),
    )
    .await??;

    let resource = ApiResource {
        group: "smoke.scalable.dev".into(),
        version: "v1".into(),
        api_version: "smoke.scalable.dev/v1".into(),
        kind: "Widget".into(),
        plural: "widgets".into(),
    };
    let widgets: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &resource);
    // The schema is enforced: a size below its minimum is refused.
    let invalid = DynamicObject::new("bad", &resource).data(json!({"spec": {"size": 0}}));
    let refused = widgets.create(&PostParams::default(), &invalid).await;
    assert!(
        matches!(&refused, Err(kube::Error::Api(s)) if s.code == 422 && s.message.contains("spec.size")),
        "{refused:?}"
    );
    let widget = DynamicObject::new("w1", &resource).data(json!({"spec": {"size": 3}}));
    let widget = widgets.create(&PostParams::default(), &widget).await?;

    let config_maps: Api<ConfigMap> = Api::namespaced(client, "default");
    let owned: ConfigMap = serde_json::from_value(json!({
        "metadata": {
            "name": "owned-by-w1",
            "ownerReferences": [{
                "apiVersion": "smoke.scalable.dev/v1", "kind": "Widget", "name": "w1",
                "uid": widget.uid(), "controller": true, "blockOwnerDeletion": true
            }]
        },
        "data": {"k": "v"}
    }))?;
    let owned_uid = config_maps
        .create(&PostParams::default(), &owned)
        .await?
        .uid()
        .ok_or_else(|| anyhow::anyhow!("created ConfigMap has no uid"))?;
    let unowned: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "unowned"}}))?;
    config_maps.create(&PostParams::default(), &unowned).await?;

    widgets.delete("w1", &DeleteParams::background()).await?;
    // The garbage collector finds the orphan (it rediscovers custom resources every 30 s).
    tokio::time::timeout(
        Duration::from_secs(120),
        await_condition(
            config_maps.clone(),
            "owned-by-w1",
            conditions::is_deleted(&owned_uid),
        ),
    )
    .await??;
    assert!(config_maps.get_opt("owned-by-w1").await?.is_none());
    assert!(
        config_maps.get_opt("unowned").await?.is_some(),
        "GC must leave unowned objects alone"
    );
    Ok(())
}
