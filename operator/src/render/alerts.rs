//! Alert rules: a PrometheusRule when its CRD is installed, otherwise a ConfigMap holding the
//! same groups as a Prometheus rules file (`rules.yaml`) for any Prometheus to load.
//!
//! Metrics the rules read, and who exposes them (the contract with the workloads):
//! - api-server: `http_server_request_duration_seconds` histogram (labels `method`, `route`,
//!   `status` = numeric HTTP status), scraped as job `<app>-api`;
//! - worker: `queue_jobs_waiting` and `queue_oldest_job_age_seconds` gauges,
//!   `queue_jobs_dead_lettered_total` counter, scraped as job `<app>-worker-metrics`;
//! - redis_exporter sidecars: `redis_up`, `redis_instance_info{role}`, `redis_connected_slaves`,
//!   `redis_master_link_up` (jobs `<app>-redis-headless` and, for sentinels,
//!   `<app>-sentinel-headless`);
//! - kube-state-metrics: `kube_pod_container_status_restarts_total`.
//!
//! Job names are the Service names, as the ServiceMonitor (Prometheus Operator) assigns them.
//!
//! SLO alerts follow the multi-window, multi-burn-rate scheme of the SRE workbook (chapter 5):
//! page when 2% of a 30-day error budget burns in 1 h (burn 14.4) or 5% in 6 h (burn 6), each
//! confirmed by a short window so the alert resets quickly after recovery; open a ticket when
//! 10% burns in 3 days (burn 1) or in 1 day (burn 3).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{DynamicObject, TypeMeta};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::ChildKind;
use super::meta::AppMeta;
use super::redis::quorum;
use crate::api::{RedisMode, ScalableAppSpec};

/// Group names start with this, followed by `<namespace>-<app>`.
pub const RULE_GROUP_PREFIX: &str = "scalableapp";
/// Where every alert's `runbook_url` points; the anchor is the alert name in lower case.
pub const RUNBOOK_BASE: &str = "docs/runbooks.md";
const COMPONENT: &str = "alerts";

/// A Prometheus rule group, serialized identically into a PrometheusRule and a rules file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RuleGroup {
    pub name: String,
    pub rules: Vec<Rule>,
}

/// A recording rule (`record`) or an alerting rule (`alert`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert: Option<String>,
    pub expr: String,
    #[serde(default, rename = "for", skip_serializing_if = "Option::is_none")]
    pub for_: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// SLO windows the recording rules precompute.
const WINDOWS: [&str; 7] = ["5m", "30m", "1h", "2h", "6h", "1d", "3d"];

/// (severity, long window, short window, burn rate, `for`)
const BURN_ALERTS: [(&str, &str, &str, &str, &str); 4] = [
    ("critical", "1h", "5m", "14.4", "2m"),
    ("critical", "6h", "30m", "6", "15m"),
    ("warning", "1d", "2h", "3", "1h"),
    ("warning", "3d", "6h", "1", "3h"),
];

/// `le` matcher for a histogram bound, accepting both spellings exporters use for integral
/// bounds (`1` from Go clients, `1.0` from OpenMetrics/Rust clients and Prometheus 3).
fn le_matcher(bound: f64) -> String {
    let short = format!("{bound}");
    if short.contains('.') {
        format!("le=\"{short}\"")
    } else {
        format!("le=~\"{short}|{short}.0\"")
    }
}

struct Builder<'a> {
    app: &'a str,
    namespace: &'a str,
    extra: &'a BTreeMap<String, String>,
}

impl Builder<'_> {
    fn sel(&self, job: &str) -> String {
        format!("namespace=\"{}\", job=\"{job}\"", self.namespace)
    }

    fn base_labels(&self) -> BTreeMap<String, String> {
        let mut labels = self.extra.clone();
        labels.insert("namespace".to_string(), self.namespace.to_string());
        labels.insert("scalableapp".to_string(), self.app.to_string());
        labels
    }

    fn record(&self, name: String, expr: String) -> Rule {
        Rule {
            record: Some(name),
            alert: None,
            expr,
            for_: None,
            labels: self.base_labels(),
            annotations: BTreeMap::new(),
        }
    }

    fn alert(&self, name: &str, severity: &str, for_: &str, expr: String, summary: String) -> Rule {
        let mut labels = self.base_labels();
        labels.insert("severity".to_string(), severity.to_string());
        Rule {
            record: None,
            alert: Some(name.to_string()),
            expr,
            for_: Some(for_.to_string()),
            labels,
            annotations: BTreeMap::from([
                ("summary".to_string(), summary),
                (
                    "runbook_url".to_string(),
                    format!("{RUNBOOK_BASE}#{}", name.to_lowercase()),
                ),
            ]),
        }
    }
}

/// All rule groups of one app. Public so the promtool tests can check exactly these.
pub fn rule_groups(app: &str, namespace: &str, spec: &ScalableAppSpec) -> Vec<RuleGroup> {
    let b = Builder {
        app,
        namespace,
        extra: &spec.observability.alerts.extra_labels,
    };
    let slo = &spec.observability.alerts.slo;
    let api_job = format!("{app}-api");
    let worker_job = format!("{app}-worker-metrics");
    let api = b.sel(&api_job);
    let own = format!("namespace=\"{namespace}\", scalableapp=\"{app}\"");
    let group = |suffix: &str, rules| RuleGroup {
        name: format!("{RULE_GROUP_PREFIX}-{namespace}-{app}-{suffix}"),
        rules,
    };

    let mut recording = Vec::new();
    for w in WINDOWS {
        recording.push(b.record(
            format!("scalableapp:api_request_errors:ratio_rate{w}"),
            format!(
                "sum(rate(http_server_request_duration_seconds_count{{{api}, status=~\"5..\"}}[{w}])) \
                 / sum(rate(http_server_request_duration_seconds_count{{{api}}}[{w}]))"
            ),
        ));
        recording.push(b.record(
            format!("scalableapp:api_request_slow:ratio_rate{w}"),
            format!(
                "1 - sum(rate(http_server_request_duration_seconds_bucket{{{api}, {le}}}[{w}])) \
                 / sum(rate(http_server_request_duration_seconds_count{{{api}}}[{w}]))",
                le = le_matcher(slo.latency_threshold_seconds)
            ),
        ));
    }

    let mut slo_alerts = Vec::new();
    for (sli, name, target, what) in [
        (
            "api_request_errors",
            "ScalableAppApiErrorBudgetBurn",
            slo.availability_target,
            "5xx responses burn the error",
        ),
        (
            "api_request_slow",
            "ScalableAppApiLatencyBudgetBurn",
            slo.latency_target,
            "requests slower than the threshold burn the latency",
        ),
    ] {
        for (severity, long, short, burn, for_) in BURN_ALERTS {
            let budget = format!("{burn} * (1 - {target})");
            let expr = format!(
                "scalableapp:{sli}:ratio_rate{long}{{{own}}} > {budget}\n\
                 and\n\
                 scalableapp:{sli}:ratio_rate{short}{{{own}}} > {budget}"
            );
            let mut rule = b.alert(
                name,
                severity,
                for_,
                expr,
                format!("API {what} budget {burn}x too fast ({long} window)"),
            );
            rule.labels.insert("window".to_string(), long.to_string());
            slo_alerts.push(rule);
        }
    }

    let backlog_limit = spec.worker.scaling.jobs_per_replica * spec.worker.max_replicas;
    let worker = b.sel(&worker_job);
    let restarts_pods = format!("{app}-(api|worker|redis|sentinel)-.*");
    let workloads = vec![
        b.alert(
            "ScalableAppApiDown",
            "critical",
            "2m",
            format!("absent(up{{{api}}} == 1)"),
            "No API server is up".to_string(),
        ),
        b.alert(
            "ScalableAppWorkerDown",
            "critical",
            "5m",
            format!("absent(up{{{worker}}} == 1)"),
            "No worker is up; jobs are not processed".to_string(),
        ),
        b.alert(
            "ScalableAppQueueBacklogHigh",
            "warning",
            "15m",
            format!("max(queue_jobs_waiting{{{worker}}}) > {backlog_limit}"),
            format!("More than {backlog_limit} jobs waiting: even the most workers allowed cannot keep up"),
        ),
        b.alert(
            "ScalableAppQueueOldestJobTooOld",
            "warning",
            "5m",
            format!("max(queue_oldest_job_age_seconds{{{worker}}}) > 600"),
            "The oldest waiting job is older than 10 minutes".to_string(),
        ),
        b.alert(
            "ScalableAppDeadLettersGrowing",
            "warning",
            "5m",
            format!("sum(increase(queue_jobs_dead_lettered_total{{{worker}}}[15m])) > 0"),
            "Jobs are being dead-lettered".to_string(),
        ),
        b.alert(
            "ScalableAppPodCrashLooping",
            "warning",
            "5m",
            format!(
                "max by (pod, container) (increase(kube_pod_container_status_restarts_total{{namespace=\"{namespace}\", pod=~\"{restarts_pods}\"}}[15m])) > 2"
            ),
            "A pod of the app keeps restarting".to_string(),
        ),
    ];

    let mut groups = vec![
        group("slo-recording", recording),
        group("slo-alerts", slo_alerts),
        group("workloads", workloads),
    ];

    if spec.redis.mode == RedisMode::Sentinel {
        let redis = b.sel(&format!("{app}-redis-headless"));
        let sentinel = b.sel(&format!("{app}-sentinel-headless"));
        let replicas_expected = spec.redis.replicas - 1;
        let q = quorum(spec.redis.sentinels);
        groups.push(group(
            "redis",
            vec![
                b.alert(
                    "ScalableAppRedisMasterMissing",
                    "critical",
                    "1m",
                    format!("absent(redis_instance_info{{{redis}, role=\"master\"}})"),
                    "No Redis pod reports the master role".to_string(),
                ),
                b.alert(
                    "ScalableAppRedisMultipleMasters",
                    "critical",
                    "1m",
                    format!("count(redis_instance_info{{{redis}, role=\"master\"}}) > 1"),
                    "More than one Redis pod reports the master role (split brain)".to_string(),
                ),
                b.alert(
                    "ScalableAppSentinelQuorumLost",
                    "critical",
                    "2m",
                    format!("(sum(redis_up{{{sentinel}}}) or vector(0)) < {q}"),
                    format!("Fewer than {q} sentinels are up: a failover is no longer possible"),
                ),
                b.alert(
                    "ScalableAppRedisReplicationBroken",
                    "warning",
                    "5m",
                    format!(
                        "max(redis_connected_slaves{{{redis}}}) < {replicas_expected}\n\
                         or\n\
                         min(redis_master_link_up{{{redis}}}) == 0"
                    ),
                    format!("The Redis master has fewer than {replicas_expected} connected replicas, or a replica lost its link"),
                ),
            ],
        ));
    }
    groups
}

fn groups_of(m: &AppMeta, spec: &ScalableAppSpec) -> Vec<RuleGroup> {
    rule_groups(m.app_name(), &m.namespace, spec)
}

pub(super) fn prometheus_rule(m: &AppMeta, spec: &ScalableAppSpec) -> DynamicObject {
    let ar = ChildKind::PrometheusRule.api_resource();
    let mut obj = DynamicObject::new(&m.names.alerts, &ar);
    obj.types = Some(TypeMeta {
        api_version: ar.api_version.clone(),
        kind: ar.kind.clone(),
    });
    obj.metadata = m.object_meta(&m.names.alerts, COMPONENT);
    obj.data = json!({ "spec": { "groups": groups_of(m, spec) } });
    obj
}

/// The same groups as a Prometheus rules file. Falls back to JSON (valid YAML) if the YAML
/// serializer ever refused the document, so the rules are never silently dropped.
pub(super) fn config_map(m: &AppMeta, spec: &ScalableAppSpec) -> ConfigMap {
    let file = json!({ "groups": groups_of(m, spec) });
    let text = serde_saphyr::to_string(&file).unwrap_or_else(|_| file.to_string());
    ConfigMap {
        metadata: m.object_meta(&m.names.alerts, COMPONENT),
        data: Some(BTreeMap::from([("rules.yaml".to_string(), text)])),
        ..Default::default()
    }
}

/// ServiceMonitor scraping every Service of the app labelled `scalable.dev/metrics`.
pub(super) fn service_monitor(m: &AppMeta, with_redis: bool) -> DynamicObject {
    let ar = ChildKind::ServiceMonitor.api_resource();
    let mut obj = DynamicObject::new(&m.names.app, &ar);
    obj.types = Some(TypeMeta {
        api_version: ar.api_version.clone(),
        kind: ar.kind.clone(),
    });
    obj.metadata = m.object_meta(&m.names.app, "monitoring");
    let mut endpoints = vec![json!({ "port": "admin", "path": "/metrics", "interval": "30s" })];
    if with_redis {
        endpoints.push(json!({ "port": "metrics", "path": "/metrics", "interval": "30s" }));
    }
    obj.data = json!({
        "spec": {
            "selector": {
                "matchLabels": {
                    super::meta::LABEL_INSTANCE: m.app_name(),
                    super::meta::LABEL_METRICS: "true",
                }
            },
            "namespaceSelector": { "matchNames": [m.namespace] },
            "endpoints": endpoints,
        }
    });
    obj
}
