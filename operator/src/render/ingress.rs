//! Optional Ingress to the API Service. The rate limit is also written as ingress-nginx
//! annotations so abusive clients are turned away at the edge; the API servers enforce the
//! same limit through Redis for traffic that does not pass this Ingress.

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule,
    IngressServiceBackend, IngressSpec as K8sIngressSpec, IngressTLS, ServiceBackendPort,
};

use super::meta::AppMeta;
use crate::api::{ApiSpec, IngressSpec};

pub(super) fn ingress(m: &AppMeta, api: &ApiSpec, spec: &IngressSpec) -> Ingress {
    let rate = &api.rate_limit;
    // ingress-nginx expresses burst as a multiple of the rate.
    let burst_multiplier = (rate.burst + rate.requests_per_second - 1) / rate.requests_per_second;
    let mut metadata = m.object_meta(&m.names.api, super::api::COMPONENT);
    metadata.annotations = Some(BTreeMap::from([
        (
            "nginx.ingress.kubernetes.io/limit-rps".to_string(),
            rate.requests_per_second.to_string(),
        ),
        (
            "nginx.ingress.kubernetes.io/limit-burst-multiplier".to_string(),
            burst_multiplier.max(1).to_string(),
        ),
    ]));
    Ingress {
        metadata,
        spec: Some(K8sIngressSpec {
            ingress_class_name: spec.class_name.clone(),
            tls: spec.tls_secret_name.as_ref().map(|secret| {
                vec![IngressTLS {
                    hosts: Some(vec![spec.host.clone()]),
                    secret_name: Some(secret.clone()),
                }]
            }),
            rules: Some(vec![IngressRule {
                host: Some(spec.host.clone()),
                http: Some(HTTPIngressRuleValue {
                    paths: vec![HTTPIngressPath {
                        path: Some("/".to_string()),
                        path_type: "Prefix".to_string(),
                        backend: IngressBackend {
                            service: Some(IngressServiceBackend {
                                name: m.names.api.clone(),
                                port: Some(ServiceBackendPort {
                                    name: Some("http".to_string()),
                                    ..Default::default()
                                }),
                            }),
                            ..Default::default()
                        },
                    }],
                }),
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}
