//! Desired state: a ScalableApp in, the list of child objects out. Pure, no I/O.
//!
//! The reconciler applies exactly this list and `operator render` prints it, so what a user sees
//! offline is what reaches the cluster. Each child kind has its own module; this one collects
//! them, fixes the order (dependencies first: ServiceAccounts and ConfigMaps before the pods that
//! use them) and converts the typed objects into `DynamicObject`s so that applying, diffing and
//! printing are one code path for every kind, including the CRD-only ones (PrometheusRule,
//! ServiceMonitor, ScaledObject) that have no k8s-openapi type.

mod alerts;
mod api;
mod autoscaling;
mod config;
mod disruption;
mod ingress;
mod meta;
mod network;
mod pod;
mod redis;
mod service_account;
mod worker;

use kube::api::{ApiResource, DynamicObject};
use serde::Serialize;
use sha2::Digest;

use crate::api::{RedisMode, ScalableApp, ScalingSignal};

pub use alerts::{RULE_GROUP_PREFIX, RUNBOOK_BASE, Rule, RuleGroup, rule_groups};
pub use api::CONFIG_HASH_ANNOTATION;
pub use config::SENTINEL_PORT;
pub use meta::{LABEL_COMPONENT, LABEL_INSTANCE, LABEL_MANAGED_BY, LABEL_NAME, MANAGED_BY, Names};
pub use redis::quorum;

/// Optional APIs found in the cluster. They change what is rendered, never whether it works.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// `monitoring.coreos.com/v1` PrometheusRule is served.
    pub prometheus_rules: bool,
    /// `monitoring.coreos.com/v1` ServiceMonitor is served.
    pub service_monitors: bool,
    /// `keda.sh/v1alpha1` ScaledObject is served.
    pub keda: bool,
}

/// Everything besides the ScalableApp that the output depends on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RenderContext {
    /// Optional APIs present in the cluster.
    pub capabilities: Capabilities,
    /// Tag of the default api-server and worker images: the operator's own release.
    pub image_tag: String,
    /// DNS suffix of the cluster, used for the stable hostnames Sentinel announces.
    pub cluster_domain: String,
}

impl Default for RenderContext {
    fn default() -> Self {
        Self {
            capabilities: Capabilities::default(),
            image_tag: env!("CARGO_PKG_VERSION").to_string(),
            cluster_domain: "cluster.local".to_string(),
        }
    }
}

/// Why an app could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// Owner references and namespaced names need these; the apiserver always sets them.
    #[error("ScalableApp is missing metadata.{0}")]
    MissingMetadata(&'static str),
    /// A typed object did not convert into a DynamicObject (a bug, not a user error).
    #[error("converting a {kind} to a dynamic object: {source}")]
    Convert {
        kind: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

/// Every kind of object the operator creates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ChildKind {
    ServiceAccount,
    ConfigMap,
    Service,
    Deployment,
    StatefulSet,
    HorizontalPodAutoscaler,
    ScaledObject,
    PodDisruptionBudget,
    NetworkPolicy,
    PrometheusRule,
    ServiceMonitor,
    Ingress,
}

impl ChildKind {
    /// All kinds, in apply order.
    pub const ALL: [ChildKind; 12] = [
        ChildKind::ServiceAccount,
        ChildKind::ConfigMap,
        ChildKind::Service,
        ChildKind::Deployment,
        ChildKind::StatefulSet,
        ChildKind::HorizontalPodAutoscaler,
        ChildKind::ScaledObject,
        ChildKind::PodDisruptionBudget,
        ChildKind::NetworkPolicy,
        ChildKind::PrometheusRule,
        ChildKind::ServiceMonitor,
        ChildKind::Ingress,
    ];

    /// (group, version, kind, plural)
    fn gvkp(self) -> (&'static str, &'static str, &'static str, &'static str) {
        match self {
            ChildKind::ServiceAccount => ("", "v1", "ServiceAccount", "serviceaccounts"),
            ChildKind::ConfigMap => ("", "v1", "ConfigMap", "configmaps"),
            ChildKind::Service => ("", "v1", "Service", "services"),
            ChildKind::Deployment => ("apps", "v1", "Deployment", "deployments"),
            ChildKind::StatefulSet => ("apps", "v1", "StatefulSet", "statefulsets"),
            ChildKind::HorizontalPodAutoscaler => (
                "autoscaling",
                "v2",
                "HorizontalPodAutoscaler",
                "horizontalpodautoscalers",
            ),
            ChildKind::ScaledObject => ("keda.sh", "v1alpha1", "ScaledObject", "scaledobjects"),
            ChildKind::PodDisruptionBudget => (
                "policy",
                "v1",
                "PodDisruptionBudget",
                "poddisruptionbudgets",
            ),
            ChildKind::NetworkPolicy => (
                "networking.k8s.io",
                "v1",
                "NetworkPolicy",
                "networkpolicies",
            ),
            ChildKind::PrometheusRule => (
                "monitoring.coreos.com",
                "v1",
                "PrometheusRule",
                "prometheusrules",
            ),
            ChildKind::ServiceMonitor => (
                "monitoring.coreos.com",
                "v1",
                "ServiceMonitor",
                "servicemonitors",
            ),
            ChildKind::Ingress => ("networking.k8s.io", "v1", "Ingress", "ingresses"),
        }
    }

    /// Kind name, also the `kind` label of the operator's metrics.
    pub fn as_str(self) -> &'static str {
        self.gvkp().2
    }

    /// The API coordinates used to read and write this kind dynamically.
    pub fn api_resource(self) -> ApiResource {
        let (group, version, kind, plural) = self.gvkp();
        ApiResource {
            group: group.to_string(),
            version: version.to_string(),
            api_version: if group.is_empty() {
                version.to_string()
            } else {
                format!("{group}/{version}")
            },
            kind: kind.to_string(),
            plural: plural.to_string(),
        }
    }

    /// Kinds served only when a third-party CRD is installed.
    pub fn is_optional(self) -> bool {
        matches!(
            self,
            ChildKind::ScaledObject | ChildKind::PrometheusRule | ChildKind::ServiceMonitor
        )
    }
}

impl std::fmt::Display for ChildKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One desired child object.
#[derive(Clone, Debug, PartialEq)]
pub struct Child {
    pub kind: ChildKind,
    pub object: DynamicObject,
}

impl Child {
    fn from_typed<T: Serialize>(kind: ChildKind, object: &T) -> Result<Self, RenderError> {
        let convert = |source| RenderError::Convert {
            kind: kind.as_str(),
            source,
        };
        let value = serde_json::to_value(object).map_err(convert)?;
        let object: DynamicObject = serde_json::from_value(value).map_err(convert)?;
        Ok(Self { kind, object })
    }

    /// `metadata.name` (always set by the renderer).
    pub fn name(&self) -> &str {
        self.object.metadata.name.as_deref().unwrap_or_default()
    }
}

/// A child that may exist from an earlier spec or capability set, and is removed when not desired.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChildRef {
    pub kind: ChildKind,
    pub name: String,
}

/// The complete desired state of `app`, in apply order.
pub fn desired(app: &ScalableApp, ctx: &RenderContext) -> Result<Vec<Child>, RenderError> {
    let m = meta::AppMeta::new(app)?;
    let caps = ctx.capabilities;
    let spec = &app.spec;
    let sentinel = spec.redis.mode == RedisMode::Sentinel;
    let mut out = Children::default();

    for sa in service_account::service_accounts(&m, sentinel) {
        out.add(ChildKind::ServiceAccount, &sa)?;
    }
    let app_config = config::app_config(&m, spec, ctx);
    let config_hash = config::hash(&app_config);
    out.add(ChildKind::ConfigMap, &app_config)?;
    if sentinel {
        let redis_config = redis::config_map(&m, &spec.redis);
        let redis_hash = config::hash(&redis_config);
        out.add(ChildKind::ConfigMap, &redis_config)?;
        for svc in redis::services(&m) {
            out.add(ChildKind::Service, &svc)?;
        }
        out.add(
            ChildKind::StatefulSet,
            &redis::redis_statefulset(&m, &spec.redis, ctx, &redis_hash),
        )?;
        out.add(
            ChildKind::StatefulSet,
            &redis::sentinel_statefulset(&m, &spec.redis, ctx, &redis_hash),
        )?;
    }
    for svc in api::services(&m) {
        out.add(ChildKind::Service, &svc)?;
    }
    out.add(ChildKind::Service, &worker::metrics_service(&m))?;
    out.add(
        ChildKind::Deployment,
        &api::deployment(&m, spec, ctx, &config_hash),
    )?;
    out.add(
        ChildKind::Deployment,
        &worker::deployment(&m, spec, ctx, &config_hash),
    )?;

    out.add(
        ChildKind::HorizontalPodAutoscaler,
        &autoscaling::api_hpa(&m, &spec.api),
    )?;
    if uses_keda(app, caps) {
        out.add(
            ChildKind::ScaledObject,
            &autoscaling::worker_scaled_object(&m, spec, ctx),
        )?;
    } else {
        out.add(
            ChildKind::HorizontalPodAutoscaler,
            &autoscaling::worker_hpa(&m, &spec.worker),
        )?;
    }

    for pdb in disruption::budgets(&m, spec) {
        out.add(ChildKind::PodDisruptionBudget, &pdb)?;
    }
    if sentinel {
        for np in network::policies(&m) {
            out.add(ChildKind::NetworkPolicy, &np)?;
        }
    }

    if spec.observability.alerts.enabled {
        if caps.prometheus_rules {
            out.add(
                ChildKind::PrometheusRule,
                &alerts::prometheus_rule(&m, spec),
            )?;
        } else {
            out.add(ChildKind::ConfigMap, &alerts::config_map(&m, spec))?;
        }
    }
    if caps.service_monitors && spec.observability.service_monitor {
        out.add(
            ChildKind::ServiceMonitor,
            &alerts::service_monitor(&m, sentinel),
        )?;
    }
    if let Some(ingress) = &spec.ingress {
        out.add(
            ChildKind::Ingress,
            &ingress::ingress(&m, &spec.api, ingress),
        )?;
    }
    let mut out = out.0;
    for child in &mut out {
        stamp_desired_hash(child)?;
    }
    Ok(out)
}

/// Annotation holding a hash of everything the operator sets on a child. When the spec stops
/// setting a field, the hash changes and the apply removes the field; comparing values alone
/// would not notice a field that should be gone.
pub const DESIRED_HASH_ANNOTATION: &str = "scalable.dev/desired-hash";

fn stamp_desired_hash(child: &mut Child) -> Result<(), RenderError> {
    let value = serde_json::to_value(&child.object).map_err(|source| RenderError::Convert {
        kind: child.kind.as_str(),
        source,
    })?;
    // serde_json maps are sorted, so equal objects serialize to equal bytes.
    let digest = sha2::Sha256::digest(value.to_string().as_bytes());
    let hash: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    child
        .object
        .metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(DESIRED_HASH_ANNOTATION.to_string(), hash);
    Ok(())
}

/// Whether the worker scales through a KEDA ScaledObject instead of an HPA.
pub fn uses_keda(app: &ScalableApp, caps: Capabilities) -> bool {
    caps.keda && app.spec.worker.scaling.signal == ScalingSignal::QueueBacklog
}

/// Every child any spec or capability set of this app could produce. The reconciler deletes
/// those of them that are not in `desired`, e.g. the worker HPA once a ScaledObject replaces it
/// (KEDA creates its own HPA and two autoscalers would fight), or the Ingress once it is removed.
pub fn possible(app: &ScalableApp) -> Result<Vec<ChildRef>, RenderError> {
    let m = meta::AppMeta::new(app)?;
    let n = &m.names;
    let r = |kind, name: &str| ChildRef {
        kind,
        name: name.to_string(),
    };
    Ok(vec![
        r(ChildKind::ServiceAccount, &n.api),
        r(ChildKind::ServiceAccount, &n.worker),
        r(ChildKind::ServiceAccount, &n.redis),
        r(ChildKind::ConfigMap, &n.config),
        r(ChildKind::ConfigMap, &n.redis),
        r(ChildKind::ConfigMap, &n.alerts),
        r(ChildKind::Service, &n.api),
        r(ChildKind::Service, &n.worker_metrics),
        r(ChildKind::Service, &n.redis_headless),
        r(ChildKind::Service, &n.sentinel),
        r(ChildKind::Service, &n.sentinel_headless),
        r(ChildKind::Deployment, &n.api),
        r(ChildKind::Deployment, &n.worker),
        r(ChildKind::StatefulSet, &n.redis),
        r(ChildKind::StatefulSet, &n.sentinel),
        r(ChildKind::HorizontalPodAutoscaler, &n.api),
        r(ChildKind::HorizontalPodAutoscaler, &n.worker),
        r(ChildKind::ScaledObject, &n.worker),
        r(ChildKind::PodDisruptionBudget, &n.api),
        r(ChildKind::PodDisruptionBudget, &n.worker),
        r(ChildKind::PodDisruptionBudget, &n.redis),
        r(ChildKind::PodDisruptionBudget, &n.sentinel),
        r(ChildKind::NetworkPolicy, &n.redis),
        r(ChildKind::NetworkPolicy, &n.sentinel),
        r(ChildKind::PrometheusRule, &n.alerts),
        r(ChildKind::ServiceMonitor, &n.app),
        r(ChildKind::Ingress, &n.api),
    ])
}

/// The children collected so far, converted as they are added.
#[derive(Default)]
struct Children(Vec<Child>);

impl Children {
    fn add<T: Serialize>(&mut self, kind: ChildKind, object: &T) -> Result<(), RenderError> {
        self.0.push(Child::from_typed(kind, object)?);
        Ok(())
    }
}

/// Multi-document YAML of the children, as `operator render` prints them.
pub fn to_yaml(children: &[Child]) -> Result<String, serde_saphyr::SerializeError> {
    let objects: Vec<&DynamicObject> = children.iter().map(|c| &c.object).collect();
    serde_saphyr::to_string_multiple(&objects)
}

#[cfg(test)]
mod tests;
