//! Operator metrics served on the admin port's /metrics, in the Prometheus text format.
//!
//! Labels are bounded sets (child kinds, actions, error kinds) so the series count does not
//! grow with the number of apps; per-app detail belongs in logs, Events and status.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// `ok`, `error` or `paused`.
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// Variant of the reconcile error.
    pub error: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ChildLabels {
    /// Child kind, e.g. `Deployment`.
    pub kind: String,
    /// `created`, `updated`, `replaced`, `unchanged`, `deleted` or `failed`.
    pub action: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerbLabels {
    /// `get`, `watch`, `create`, `update`, `patch`, `delete`.
    pub verb: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

/// Every metric of the operator, registered once.
pub struct Metrics {
    registry: Registry,
    pub reconciles: Family<ResultLabels, Counter>,
    pub reconcile_errors: Family<ErrorLabels, Counter>,
    pub reconcile_duration: Histogram,
    pub child_operations: Family<ChildLabels, Counter>,
    pub child_duration: Family<KindLabels, Histogram>,
    pub leader: Gauge,
    pub kube_requests: Family<VerbLabels, Counter>,
}

fn duration_histogram() -> Histogram {
    // 1 ms .. ~16 s
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("scalable_operator");
        let reconciles = Family::<ResultLabels, Counter>::default();
        let reconcile_errors = Family::<ErrorLabels, Counter>::default();
        let reconcile_duration = duration_histogram();
        let child_operations = Family::<ChildLabels, Counter>::default();
        let child_duration =
            Family::<KindLabels, Histogram>::new_with_constructor(duration_histogram as fn() -> _);
        let leader = Gauge::default();
        let kube_requests = Family::<VerbLabels, Counter>::default();
        registry.register(
            "reconciles",
            "Reconciliations of ScalableApps by result",
            reconciles.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Failed reconciliations by error kind",
            reconcile_errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time to reconcile one ScalableApp",
            reconcile_duration.clone(),
        );
        registry.register(
            "child_operations",
            "Child objects checked per kind and what was done to them",
            child_operations.clone(),
        );
        registry.register(
            "child_apply_duration_seconds",
            "Time to bring one child object in line, per kind",
            child_duration.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica holds the leader lease",
            leader.clone(),
        );
        registry.register(
            "kube_requests",
            "Requests sent to the Kubernetes API, by verb",
            kube_requests.clone(),
        );
        Self {
            registry,
            kube_requests,
            reconciles,
            reconcile_errors,
            reconcile_duration,
            child_operations,
            child_duration,
            leader,
        }
    }
}

impl Metrics {
    pub fn reconciled(&self, result: &str, took: Duration) {
        self.reconciles
            .get_or_create(&ResultLabels {
                result: result.to_string(),
            })
            .inc();
        self.reconcile_duration.observe(took.as_secs_f64());
    }

    pub fn error(&self, kind: &str) {
        self.reconcile_errors
            .get_or_create(&ErrorLabels {
                error: kind.to_string(),
            })
            .inc();
    }

    pub fn child(&self, kind: &str, action: &str, took: Duration) {
        self.child_operations
            .get_or_create(&ChildLabels {
                kind: kind.to_string(),
                action: action.to_string(),
            })
            .inc();
        self.child_duration
            .get_or_create(&KindLabels {
                kind: kind.to_string(),
            })
            .observe(took.as_secs_f64());
    }

    pub fn api_request(&self, verb: &str) {
        self.kube_requests
            .get_or_create(&VerbLabels {
                verb: verb.to_string(),
            })
            .inc();
    }

    /// The registry in the Prometheus text exposition format.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn encodes_per_kind_series() {
        let m = Metrics::default();
        m.reconciled("ok", Duration::from_millis(12));
        m.child("Deployment", "updated", Duration::from_millis(3));
        m.error("Apply");
        let text = m.encode().unwrap();
        assert!(text.contains("scalable_operator_reconciles_total{result=\"ok\"} 1"));
        assert!(text.contains(
            "scalable_operator_child_operations_total{kind=\"Deployment\",action=\"updated\"} 1"
        ));
        assert!(text.contains(
            "scalable_operator_child_apply_duration_seconds_count{kind=\"Deployment\"} 1"
        ));
        assert!(text.contains("scalable_operator_reconcile_errors_total{error=\"Apply\"} 1"));
    }
}
