//! Bringing children in line with the desired state: server-side apply with one field
//! manager, skipped when the live object already matches, and pruning of children the spec
//! no longer asks for.
//!
//! "Matches" is decided against the watch caches, without a request: the live object must
//! carry the desired-hash annotation of this exact desired object (so fields the operator
//! stopped setting get removed) and contain every desired value (so an edit by someone else is
//! put back). A no-op reconcile therefore sends no write at all and changes no resourceVersion.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, Preconditions};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, ResourceExt};
use serde_json::Value;

use crate::metrics::Metrics;
use crate::render::{Child, ChildKind, ChildRef, DESIRED_HASH_ANNOTATION};

/// The one field manager of every write the operator makes.
pub const FIELD_MANAGER: &str = "scalable-operator";

/// What happened to one child.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Created,
    Updated,
    /// Deleted (orphaning its pods) and created again, for an immutable field.
    Replaced,
    Unchanged,
    Deleted,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Created => "created",
            Outcome::Updated => "updated",
            Outcome::Replaced => "replaced",
            Outcome::Unchanged => "unchanged",
            Outcome::Deleted => "deleted",
        }
    }
}

/// Bringing one child in line failed.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The apiserver refused or could not be reached.
    #[error("{action} {kind} {name}: {source}")]
    Api {
        action: &'static str,
        kind: ChildKind,
        name: String,
        #[source]
        source: kube::Error,
    },
    /// An object with the child's name exists but belongs to someone else. Applying would take
    /// it over (and garbage collection would later delete it with the app), so it is left alone.
    #[error(
        "{kind} {name} already exists and is not controlled by this ScalableApp: \
         delete or rename it, or rename the ScalableApp"
    )]
    NotOurs { kind: ChildKind, name: String },
}

/// Watch caches of every child kind being watched, keyed by kind.
#[derive(Clone, Default)]
pub struct Stores(pub HashMap<ChildKind, Store<DynamicObject>>);

impl Stores {
    pub fn get(&self, kind: ChildKind, namespace: &str, name: &str) -> Option<Arc<DynamicObject>> {
        let store = self.0.get(&kind)?;
        store.get(&ObjectRef::new_with(name, kind.api_resource()).within(namespace))
    }
}

/// Whether every value in `desired` is present and equal in `live`. Empty maps and lists in
/// `desired` match an absent field (the apiserver drops them), and resource quantities compare
/// by value (the apiserver rewrites `0.5` as `500m`, `1024Mi` as `1Gi`).
pub fn contains(live: &Value, desired: &Value) -> bool {
    contains_at(live, desired, false)
}

/// `quantities`: at or inside a `requests`/`limits` map, whose values are resource quantities.
fn contains_at(live: &Value, desired: &Value, quantities: bool) -> bool {
    match (desired, live) {
        (Value::Object(want), Value::Object(have)) => want.iter().all(|(k, v)| match have.get(k) {
            Some(h) => contains_at(h, v, quantities || k == "requests" || k == "limits"),
            None => is_empty(v),
        }),
        (Value::Object(want), Value::Null) => want.values().all(is_empty),
        (Value::Array(want), Value::Array(have)) => {
            want.len() == have.len() && want.iter().zip(have).all(|(w, h)| contains_at(h, w, false))
        }
        (Value::Array(want), Value::Null) => want.is_empty(),
        (Value::Number(w), Value::Number(h)) => w.as_f64() == h.as_f64(),
        (Value::String(w), Value::String(h)) if quantities && w != h => {
            match (quantity(w), quantity(h)) {
                (Some(a), Some(b)) => (a - b).abs() <= f64::EPSILON * a.abs().max(b.abs()) * 4.0,
                _ => false,
            }
        }
        (w, h) => w == h,
    }
}

/// Value of a Kubernetes resource quantity (`500m`, `1.5Gi`, `2e3`, `128974848`).
fn quantity(s: &str) -> Option<f64> {
    const SUFFIXES: [(&str, f64); 14] = [
        ("Ki", 1024.0),
        ("Mi", 1_048_576.0),
        ("Gi", 1_073_741_824.0),
        ("Ti", 1_099_511_627_776.0),
        ("Pi", 1_125_899_906_842_624.0),
        ("Ei", 1_152_921_504_606_846_976.0),
        ("n", 1e-9),
        ("u", 1e-6),
        ("m", 1e-3),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
    ];
    let s = s.trim();
    for (suffix, factor) in SUFFIXES {
        if let Some(number) = s.strip_suffix(suffix) {
            return number.parse::<f64>().ok().map(|n| n * factor);
        }
    }
    if let Some(number) = s.strip_suffix('E') {
        return number.parse::<f64>().ok().map(|n| n * 1e18);
    }
    s.parse::<f64>().ok()
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Object(m) => m.values().all(is_empty),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

/// Whether `live` already is what applying `child` would produce.
pub fn up_to_date(live: &DynamicObject, child: &Child) -> bool {
    let hash = |o: &DynamicObject| o.annotations().get(DESIRED_HASH_ANNOTATION).cloned();
    if hash(live).is_none() || hash(live) != hash(&child.object) {
        return false;
    }
    match (
        serde_json::to_value(live),
        serde_json::to_value(&child.object),
    ) {
        (Ok(live), Ok(desired)) => contains(&live, &desired),
        _ => false,
    }
}

/// Applies one child unless its cached live state already matches.
pub async fn ensure(
    client: &Client,
    stores: &Stores,
    metrics: &Metrics,
    namespace: &str,
    child: &Child,
) -> Result<Outcome, ApplyError> {
    let started = Instant::now();
    let name = child.name();
    let live = stores.get(child.kind, namespace, name);
    if live.as_deref().is_some_and(|l| up_to_date(l, child)) {
        metrics.child(child.kind.as_str(), "unchanged", started.elapsed());
        return Ok(Outcome::Unchanged);
    }
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), namespace, &child.kind.api_resource());
    if live.is_none() {
        // The caches only hold labelled objects; look before creating so a same-named object
        // someone else made is never adopted. One GET per create, none in steady state.
        let existing = api.get_opt(name).await.map_err(|source| ApplyError::Api {
            action: "reading",
            kind: child.kind,
            name: name.to_string(),
            source,
        })?;
        if let Some(existing) = existing
            && !controlled_by_same_owner(&existing, child)
        {
            metrics.child(child.kind.as_str(), "failed", started.elapsed());
            return Err(ApplyError::NotOurs {
                kind: child.kind,
                name: name.to_string(),
            });
        }
    }
    // force: the operator owns these fields; another manager's conflicting value is drift.
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let mut result = api.patch(name, &params, &Patch::Apply(&child.object)).await;
    let mut outcome = if live.is_some() {
        Outcome::Updated
    } else {
        Outcome::Created
    };
    if let Err(kube::Error::Api(e)) = &result
        && child.kind == ChildKind::StatefulSet
        && e.code == 422
        && is_immutable_field_error(&e.message)
    {
        // e.g. a new volume size in `spec.redis.storage`: volumeClaimTemplates cannot change.
        tracing::info!(
            statefulset = name,
            "immutable field changed: recreating, keeping the pods"
        );
        result = match recreate_orphaning_pods(&api, name).await {
            Ok(()) => api.patch(name, &params, &Patch::Apply(&child.object)).await,
            Err(e) => Err(e),
        };
        outcome = Outcome::Replaced;
    }
    match result {
        Ok(_) => {
            metrics.child(child.kind.as_str(), outcome.as_str(), started.elapsed());
            Ok(outcome)
        }
        Err(source) => {
            metrics.child(child.kind.as_str(), "failed", started.elapsed());
            Err(ApplyError::Api {
                action: "applying",
                kind: child.kind,
                name: name.to_string(),
                source,
            })
        }
    }
}

/// Whether `existing` has the same controller (the app) that `child` names.
fn controlled_by_same_owner(existing: &DynamicObject, child: &Child) -> bool {
    let controller = |o: &DynamicObject| {
        o.owner_references()
            .iter()
            .find(|r| r.controller == Some(true))
            .map(|r| r.uid.clone())
    };
    controller(existing).is_some() && controller(existing) == controller(&child.object)
}

/// Whether a 422 is about an immutable StatefulSet field. The wording differs between
/// fields and Kubernetes versions (`spec.volumeClaimTemplates: ... field is immutable`,
/// `spec: Forbidden: updates to statefulset spec for fields other than ...`).
fn is_immutable_field_error(message: &str) -> bool {
    message.contains("field is immutable")
        || message.contains("updates to statefulset spec for fields other than")
}

/// Deletes a StatefulSet but not its pods (or their volumes), and waits until it is gone. The
/// StatefulSet applied next adopts the pods by their labels, so Redis keeps running.
async fn recreate_orphaning_pods(api: &Api<DynamicObject>, name: &str) -> Result<(), kube::Error> {
    match api.delete(name, &DeleteParams::orphan()).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 => return Ok(()),
        Err(e) => return Err(e),
    }
    // The garbage collector releases the pods, then removes the object: usually well under a
    // second; after a minute the apply below fails and the reconcile is retried with backoff.
    for _ in 0..120 {
        if api.get_opt(name).await?.is_none() {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    Ok(())
}

/// Deletes a child that is no longer desired, if the cache shows it exists and this app
/// controls it (never an object someone else created under the same name).
pub async fn prune(
    client: &Client,
    stores: &Stores,
    metrics: &Metrics,
    namespace: &str,
    owner_uid: &str,
    child: &ChildRef,
) -> Result<Option<Outcome>, ApplyError> {
    let Some(live) = stores.get(child.kind, namespace, &child.name) else {
        return Ok(None);
    };
    let controlled = live
        .owner_references()
        .iter()
        .any(|o| o.controller == Some(true) && o.uid == owner_uid);
    if !controlled {
        return Ok(None);
    }
    let started = Instant::now();
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), namespace, &child.kind.api_resource());
    let params = DeleteParams {
        preconditions: live.uid().map(|uid| Preconditions {
            uid: Some(uid),
            resource_version: None,
        }),
        ..DeleteParams::background()
    };
    match api.delete(&child.name, &params).await {
        Ok(_) => {}
        // Already gone (the cache lagged): nothing to do.
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
        Err(source) => {
            metrics.child(child.kind.as_str(), "failed", started.elapsed());
            return Err(ApplyError::Api {
                action: "deleting",
                kind: child.kind,
                name: child.name.clone(),
                source,
            });
        }
    }
    metrics.child(child.kind.as_str(), "deleted", started.elapsed());
    Ok(Some(Outcome::Deleted))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::contains;

    #[test]
    fn desired_values_must_all_be_live() {
        let live = json!({"a": 1, "b": {"c": [1, 2], "d": "x"}, "status": {"ready": 1}});
        assert!(contains(&live, &json!({"b": {"d": "x"}})));
        assert!(contains(&live, &json!({"a": 1.0})));
        assert!(!contains(&live, &json!({"b": {"d": "y"}})));
        assert!(!contains(&live, &json!({"b": {"c": [1]}})));
        assert!(!contains(&live, &json!({"e": 1})));
        // Empty desired collections match absent fields.
        assert!(contains(&live, &json!({"e": {}, "f": [], "g": null})));
    }

    #[test]
    fn quantities_compare_by_value_only_in_resource_maps() {
        let live = json!({"resources": {"requests": {"cpu": "500m", "memory": "1Gi"}},
                          "env": [{"name": "N", "value": "500m"}]});
        assert!(contains(
            &live,
            &json!({"resources": {"requests": {"cpu": "0.5", "memory": "1024Mi"}}})
        ));
        assert!(!contains(
            &live,
            &json!({"resources": {"requests": {"cpu": "0.6"}}})
        ));
        assert!(!contains(
            &live,
            &json!({"env": [{"name": "N", "value": "0.5"}]})
        ));
        assert_eq!(super::quantity("2e3"), Some(2000.0));
        assert_eq!(super::quantity("1.5Gi"), Some(1.5 * 1_073_741_824.0));
        assert_eq!(super::quantity("abc"), None);
    }
}
