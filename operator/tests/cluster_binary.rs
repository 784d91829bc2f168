//! `operator run` as a process: readiness, metrics (including requests to the apiserver),
//! JSON logs, OTLP traces, reconciling, and a clean exit on SIGTERM that releases the leader
//! lease.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, PostParams};
use operator::api::ScalableApp;
use operator::render::ChildKind;
use support::*;

#[tokio::test]
async fn operator_run_serves_reconciles_and_exits_on_sigterm() {
    let (plane, client) = cluster().await;
    let collector = Collector::default();
    let endpoint = collector.serve().await;
    let op = OperatorProcess::start_with_env(
        &plane,
        &["--lease-duration-seconds", "10"],
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)],
    )
    .await;
    assert_eq!(http_get(op.admin, "/healthz").await.unwrap().0, 200);

    let apps: Api<ScalableApp> = Api::namespaced(client.clone(), "default");
    apps.create(&PostParams::default(), &app_yaml("shop", "default"))
        .await
        .unwrap();
    let deployments = child_api(&client, ChildKind::Deployment, "default");
    eventually("worker Deployment", || {
        let deployments = deployments.clone();
        async move { deployments.get_opt("shop-worker").await.unwrap() }
    })
    .await;

    let metrics = eventually("a successful reconcile", || {
        let op = &op;
        async move {
            let m = op.metrics().await;
            (counter_sum(&m, "scalable_operator_reconciles_total{result=\"ok\"}") >= 1).then_some(m)
        }
    })
    .await;
    assert_eq!(
        counter_sum(&metrics, "scalable_operator_leader "),
        1,
        "{metrics}"
    );
    assert!(counter_sum(&metrics, "scalable_operator_kube_requests_total") > 20);
    assert_eq!(
        counter_sum(&metrics, "scalable_operator_reconcile_errors_total"),
        0,
        "{metrics}"
    );
    assert!(
        metrics
            .contains("scalable_operator_child_apply_duration_seconds_count{kind=\"StatefulSet\"}")
    );

    let leases: Api<Lease> = Api::namespaced(client.clone(), "default");
    let holder = leases
        .get("scalable-operator")
        .await
        .unwrap()
        .spec
        .unwrap()
        .holder_identity;
    assert!(holder.is_some_and(|h| !h.is_empty()));

    assert!(op.terminate().await, "exit status after SIGTERM");
    // The lease was released on the way out, so a successor need not wait for expiry.
    let holder = leases
        .get("scalable-operator")
        .await
        .unwrap()
        .spec
        .unwrap()
        .holder_identity;
    assert!(
        holder.as_ref().is_none_or(|h| h.is_empty()),
        "lease still held by {holder:?}"
    );

    // The exit flushed the reconcile spans to the collector, named after the app.
    let spans = collector.spans.lock().unwrap().clone();
    let reconcile = spans
        .iter()
        .find(|s| {
            s.name == "reconcile"
                && s.attributes
                    .iter()
                    .any(|a| a.key == "app" && format!("{:?}", a.value).contains("default/shop"))
        })
        .unwrap_or_else(|| {
            panic!(
                "no reconcile span for default/shop among {:?}",
                spans.iter().map(|s| &s.name).collect::<Vec<_>>()
            )
        });
    assert_eq!(reconcile.trace_id.len(), 16);

    let log = std::fs::read_to_string(plane.dir().join("operator.log")).unwrap();
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.len() > 3, "log: {log}");
    for line in lines {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        assert!(
            v.get("level").is_some() && v.get("timestamp").is_some(),
            "{line}"
        );
    }
}

/// An OTLP/gRPC trace receiver standing in for an OpenTelemetry Collector.
#[derive(Default, Clone)]
struct Collector {
    spans: std::sync::Arc<std::sync::Mutex<Vec<opentelemetry_proto::tonic::trace::v1::Span>>>,
}

#[tonic::async_trait]
impl opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceService
    for Collector
{
    async fn export(
        &self,
        request: tonic::Request<
            opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest,
        >,
    ) -> Result<
        tonic::Response<
            opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse,
        >,
        tonic::Status,
    > {
        let mut spans = self.spans.lock().unwrap();
        for rs in request.into_inner().resource_spans {
            for ss in rs.scope_spans {
                spans.extend(ss.spans);
            }
        }
        Ok(tonic::Response::new(Default::default()))
    }
}

impl Collector {
    /// Serves on a loopback port for the rest of the test; returns the endpoint URL.
    async fn serve(&self) -> String {
        use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceServiceServer;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let incoming = futures::stream::unfold(listener, |l| async move {
            let accepted = l.accept().await.map(|(s, _)| s);
            Some((accepted, l))
        });
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(self.clone()))
                .serve_with_incoming(incoming),
        );
        format!("http://{addr}")
    }
}
