//! Names, labels, owner references: what every child shares.
//!
//! Names are derived from the app name only, so the reconciler can find (and prune) children
//! without listing, and two apps in one namespace never collide as long as their names differ.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use kube::Resource;

use super::RenderError;
use crate::api::ScalableApp;

pub const LABEL_NAME: &str = "app.kubernetes.io/name";
pub const LABEL_INSTANCE: &str = "app.kubernetes.io/instance";
pub const LABEL_COMPONENT: &str = "app.kubernetes.io/component";
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Value of `app.kubernetes.io/managed-by` on every child; the operator's watches select on it.
pub const MANAGED_BY: &str = "scalable-operator";
/// Services carrying this label are scraped by the ServiceMonitor.
pub const LABEL_METRICS: &str = "scalable.dev/metrics";
const APP_NAME: &str = "scalableapp";

/// Deterministic child names of one app.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Names {
    pub app: String,
    pub api: String,
    pub worker: String,
    pub worker_metrics: String,
    pub config: String,
    pub alerts: String,
    pub redis: String,
    pub redis_headless: String,
    pub sentinel: String,
    pub sentinel_headless: String,
}

impl Names {
    pub fn new(app: &str) -> Self {
        Self {
            app: app.to_string(),
            api: format!("{app}-api"),
            worker: format!("{app}-worker"),
            worker_metrics: format!("{app}-worker-metrics"),
            config: format!("{app}-config"),
            alerts: format!("{app}-alerts"),
            redis: format!("{app}-redis"),
            redis_headless: format!("{app}-redis-headless"),
            sentinel: format!("{app}-sentinel"),
            sentinel_headless: format!("{app}-sentinel-headless"),
        }
    }
}

/// The parts of the app every renderer needs.
pub(super) struct AppMeta {
    pub names: Names,
    pub namespace: String,
    owner: OwnerReference,
}

impl AppMeta {
    pub fn new(app: &ScalableApp) -> Result<Self, RenderError> {
        let name = app
            .metadata
            .name
            .clone()
            .ok_or(RenderError::MissingMetadata("name"))?;
        let namespace = app
            .metadata
            .namespace
            .clone()
            .ok_or(RenderError::MissingMetadata("namespace"))?;
        let mut owner = app
            .controller_owner_ref(&())
            .ok_or(RenderError::MissingMetadata("uid"))?;
        // The app is not gone (foreground deletion) until its children are.
        owner.block_owner_deletion = Some(true);
        Ok(Self {
            names: Names::new(&name),
            namespace,
            owner,
        })
    }

    pub fn app_name(&self) -> &str {
        &self.names.app
    }

    /// Labels that select one component's pods. Kept minimal: selectors are immutable.
    pub fn selector_labels(&self, component: &str) -> BTreeMap<String, String> {
        BTreeMap::from([
            (LABEL_NAME.to_string(), APP_NAME.to_string()),
            (LABEL_INSTANCE.to_string(), self.names.app.clone()),
            (LABEL_COMPONENT.to_string(), component.to_string()),
        ])
    }

    pub fn selector(&self, component: &str) -> LabelSelector {
        LabelSelector {
            match_labels: Some(self.selector_labels(component)),
            ..Default::default()
        }
    }

    /// Labels of every child object and pod.
    pub fn labels(&self, component: &str) -> BTreeMap<String, String> {
        let mut labels = self.selector_labels(component);
        labels.insert(LABEL_MANAGED_BY.to_string(), MANAGED_BY.to_string());
        labels
    }

    /// Metadata of a child: name, namespace, common labels and the controller owner reference.
    pub fn object_meta(&self, name: &str, component: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(self.namespace.clone()),
            labels: Some(self.labels(component)),
            owner_references: Some(vec![self.owner.clone()]),
            ..Default::default()
        }
    }

    /// In-cluster DNS name of a Service of this app.
    pub fn service_host(&self, service: &str, cluster_domain: &str) -> String {
        format!("{service}.{}.svc.{cluster_domain}", self.namespace)
    }
}
