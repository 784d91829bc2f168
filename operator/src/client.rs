//! The Kubernetes client of `operator run`, with every request counted by verb in the
//! operator's metrics: requests per app is the cost that matters when many apps share one
//! apiserver, and it is what the benchmark reports.

use std::sync::Arc;

use kube::client::{Body, ClientBuilder};
use kube::{Client, Config};
use tower::util::MapRequestLayer;

use crate::metrics::Metrics;

/// Verb of a request as the apiserver would name it (watches told apart from gets).
fn verb(req: &http::Request<Body>) -> &'static str {
    let watch = req
        .uri()
        .query()
        .is_some_and(|q| q.contains("watch=true") || q.contains("watch=1"));
    match *req.method() {
        http::Method::GET if watch => "watch",
        http::Method::GET => "get",
        http::Method::POST => "create",
        http::Method::PUT => "update",
        http::Method::PATCH => "patch",
        http::Method::DELETE => "delete",
        _ => "other",
    }
}

/// A client from `config` whose requests increment `scalable_operator_kube_requests_total`.
pub fn counting_client(config: Config, metrics: Arc<Metrics>) -> Result<Client, kube::Error> {
    let layer = MapRequestLayer::new(move |req: http::Request<Body>| {
        metrics.api_request(verb(&req));
        req
    });
    Ok(ClientBuilder::try_from(config)?.with_layer(&layer).build())
}
