//! Which optional APIs the cluster serves. Checked at start and on a timer: installing the
//! Prometheus Operator or KEDA later switches the apps over (ConfigMap rules → PrometheusRule,
//! worker HPA → ScaledObject) without restarting the operator.

use kube::Client;

use crate::render::{Capabilities, ChildKind};

/// Whether the group/version of `kind` is served and lists the kind.
async fn serves(client: &Client, kind: ChildKind) -> Result<bool, kube::Error> {
    let ar = kind.api_resource();
    match client.list_api_group_resources(&ar.api_version).await {
        Ok(list) => Ok(list
            .resources
            .iter()
            .any(|r| r.name == ar.plural && r.kind == ar.kind)),
        // The group/version does not exist: the CRD is not installed.
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(false),
        Err(e) => Err(e),
    }
}

/// The optional APIs present right now.
pub async fn capabilities(client: &Client) -> Result<Capabilities, kube::Error> {
    Ok(Capabilities {
        prometheus_rules: serves(client, ChildKind::PrometheusRule).await?,
        service_monitors: serves(client, ChildKind::ServiceMonitor).await?,
        keda: serves(client, ChildKind::ScaledObject).await?,
    })
}

impl Capabilities {
    /// Whether objects of `kind` can be created in this cluster.
    pub fn serves(&self, kind: ChildKind) -> bool {
        match kind {
            ChildKind::PrometheusRule => self.prometheus_rules,
            ChildKind::ServiceMonitor => self.service_monitors,
            ChildKind::ScaledObject => self.keda,
            _ => true,
        }
    }
}
