//! NetworkPolicies: Redis and the sentinels accept connections only from this app's api,
//! worker, Redis and sentinel pods (Redis runs without AUTH inside that boundary). The
//! exporter port stays open so Prometheus, wherever it runs, can scrape it.

use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeMap;

use super::config::{REDIS_PORT, SENTINEL_PORT};
use super::meta::{AppMeta, LABEL_COMPONENT, LABEL_INSTANCE};
use super::redis::{EXPORTER_PORT, REDIS_COMPONENT, SENTINEL_COMPONENT};

fn tcp(port: i32) -> NetworkPolicyPort {
    NetworkPolicyPort {
        port: Some(IntOrString::Int(port)),
        protocol: Some("TCP".to_string()),
        ..Default::default()
    }
}

fn policy(m: &AppMeta, name: &str, component: &str, port: i32) -> NetworkPolicy {
    let clients = NetworkPolicyPeer {
        pod_selector: Some(LabelSelector {
            match_labels: Some(BTreeMap::from([(
                LABEL_INSTANCE.to_string(),
                m.app_name().to_string(),
            )])),
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: LABEL_COMPONENT.to_string(),
                operator: "In".to_string(),
                values: Some(
                    [
                        super::api::COMPONENT,
                        super::worker::COMPONENT,
                        REDIS_COMPONENT,
                        SENTINEL_COMPONENT,
                    ]
                    .map(String::from)
                    .to_vec(),
                ),
            }]),
        }),
        ..Default::default()
    };
    NetworkPolicy {
        metadata: m.object_meta(name, component),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(m.selector(component)),
            policy_types: Some(vec!["Ingress".to_string()]),
            ingress: Some(vec![
                NetworkPolicyIngressRule {
                    from: Some(vec![clients]),
                    ports: Some(vec![tcp(port)]),
                },
                NetworkPolicyIngressRule {
                    from: None,
                    ports: Some(vec![tcp(EXPORTER_PORT)]),
                },
            ]),
            ..Default::default()
        }),
    }
}

pub(super) fn policies(m: &AppMeta) -> Vec<NetworkPolicy> {
    vec![
        policy(m, &m.names.redis, REDIS_COMPONENT, REDIS_PORT),
        policy(m, &m.names.sentinel, SENTINEL_COMPONENT, SENTINEL_PORT),
    ]
}
