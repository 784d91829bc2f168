//! The objects `operator render` prints, and whether each exists in a cluster: how the suites
//! check that the operator created exactly what it means to apply.

use anyhow::Context;
use kube::Api;
use kube::api::DynamicObject;
use serde_json::Value;

/// One rendered child, by identity.
#[derive(Debug, Clone)]
pub struct ChildRef {
    pub api_version: String,
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
}

/// The children in `operator render`'s multi-document YAML (comment lines skipped).
pub fn parse_rendered(yaml: &str) -> anyhow::Result<Vec<ChildRef>> {
    let mut out = Vec::new();
    for doc in yaml.split("\n---") {
        let body: String = doc
            .lines()
            .filter(|l| !l.starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n");
        if body.trim().is_empty() {
            continue;
        }
        let v: Value = serde_saphyr::from_str(&body)?;
        let field = |p: &str| v.pointer(p).and_then(Value::as_str).map(str::to_string);
        out.push(ChildRef {
            api_version: field("/apiVersion").context("apiVersion")?,
            kind: field("/kind").context("kind")?,
            namespace: field("/metadata/namespace"),
            name: field("/metadata/name").context("name")?,
        });
    }
    Ok(out)
}

/// The live object of `child`, if it exists.
pub async fn get(client: &kube::Client, child: &ChildRef) -> anyhow::Result<Option<DynamicObject>> {
    let (group, version) = child
        .api_version
        .split_once('/')
        .unwrap_or(("", &child.api_version));
    let gvk = kube::api::GroupVersionKind::gvk(group, version, &child.kind);
    let (resource, _) = kube::discovery::pinned_kind(client, &gvk).await?;
    let api: Api<DynamicObject> = match &child.namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
        None => Api::all_with(client.clone(), &resource),
    };
    Ok(api.get_opt(&child.name).await?)
}
