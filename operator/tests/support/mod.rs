//! Shared setup of the integration tests: a real control plane (testenv), the CRD installed
//! from crds/scalableapp.yaml, and the operator running in-process against it.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, ListParams, PostParams};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Client, ResourceExt};
use operator::api::ScalableApp;
use operator::metrics::Metrics;
use operator::render::ChildKind;
use operator::runner::{self, OperatorConfig};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub const TIMEOUT: Duration = Duration::from_secs(60);

/// Control plane with the ScalableApp CRD installed.
pub async fn cluster() -> (testenv::ControlPlane, Client) {
    let plane = testenv::ControlPlane::start()
        .await
        .expect("the test control plane starts (see testenv for what it needs)");
    let client = plane.client().await.expect("admin client");
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../crds/scalableapp.yaml"
    ))
    .expect("crds/scalableapp.yaml");
    let crd: CustomResourceDefinition = serde_saphyr::from_str(&text).expect("CRD parses");
    install_crd(&client, crd).await;
    (plane, client)
}

pub async fn install_crd(client: &Client, crd: CustomResourceDefinition) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let name = crd.name_any();
    crds.create(&PostParams::default(), &crd)
        .await
        .expect("CRD created");
    tokio::time::timeout(
        TIMEOUT,
        await_condition(crds, &name, conditions::is_crd_established()),
    )
    .await
    .expect("CRD established in time")
    .expect("watching the CRD");
}

pub async fn namespace(client: &Client, name: &str, labels: &[(&str, &str)]) {
    let ns: Namespace = serde_json::from_value(serde_json::json!({
        "metadata": {
            "name": name,
            "labels": labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<std::collections::BTreeMap<_, _>>(),
        }
    }))
    .unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("namespace created");
}

/// An operator running in this process; stops (and releases its lease) on `stop`.
pub struct RunningOperator {
    pub metrics: Arc<Metrics>,
    pub ready: Arc<AtomicBool>,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl RunningOperator {
    pub fn start(client: Client, config: OperatorConfig) -> Self {
        let metrics = Arc::new(Metrics::default());
        let ready = Arc::new(AtomicBool::new(false));
        let (shutdown, rx) = watch::channel(false);
        let task = tokio::spawn({
            let metrics = metrics.clone();
            let ready = ready.clone();
            async move {
                runner::run(client, config, metrics, ready, rx)
                    .await
                    .expect("operator runs");
            }
        });
        Self {
            metrics,
            ready,
            shutdown,
            task,
        }
    }

    pub fn is_leader(&self) -> bool {
        self.metrics.leader.get() == 1
    }

    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        tokio::time::timeout(TIMEOUT, self.task)
            .await
            .expect("operator stops in time")
            .expect("operator task");
    }
}

pub fn test_config() -> OperatorConfig {
    OperatorConfig {
        discovery_interval: Duration::from_secs(2),
        ..OperatorConfig::new("test-operator")
    }
}

/// Polls `check` until it returns Some, or panics with `what` after TIMEOUT.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(start.elapsed() < TIMEOUT, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

pub fn app_yaml(name: &str, namespace: &str) -> ScalableApp {
    let text = format!(
        r#"
apiVersion: scalable.dev/v1alpha1
kind: ScalableApp
metadata:
  name: {name}
  namespace: {namespace}
spec:
  api:
    minReplicas: 2
    maxReplicas: 4
  worker:
    minReplicas: 1
    maxReplicas: 3
  firebase:
    projectId: demo-test
    emulators:
      firestore: firestore.test.svc:8080
  ingress:
    host: {name}.example.test
"#
    );
    serde_saphyr::from_str(&text).expect("test app parses")
}

pub fn child_api(client: &Client, kind: ChildKind, namespace: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), namespace, &kind.api_resource())
}

/// `kind/name` → resourceVersion of every object the operator manages in `namespace`.
pub async fn resource_versions(
    client: &Client,
    namespace: &str,
    kinds: &[ChildKind],
) -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::new();
    let lp = ListParams::default().labels("app.kubernetes.io/managed-by=scalable-operator");
    for kind in kinds {
        for obj in child_api(client, *kind, namespace).list(&lp).await.unwrap() {
            out.insert(
                format!("{kind}/{}", obj.name_any()),
                obj.resource_version().unwrap_or_default(),
            );
        }
    }
    out
}

/// Child kinds served by a bare control plane (no optional CRDs).
pub const CORE_KINDS: [ChildKind; 9] = [
    ChildKind::ServiceAccount,
    ChildKind::ConfigMap,
    ChildKind::Service,
    ChildKind::Deployment,
    ChildKind::StatefulSet,
    ChildKind::HorizontalPodAutoscaler,
    ChildKind::PodDisruptionBudget,
    ChildKind::NetworkPolicy,
    ChildKind::Ingress,
];

/// Minimal HTTP/1.1 GET for the admin port: (status code, body).
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).await.ok()?;
    let code = out.get(9..12)?.parse().ok()?;
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((code, body))
}

/// Sum of a counter family in Prometheus text, e.g. `scalable_operator_kube_requests_total`.
pub fn counter_sum(text: &str, name: &str) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// `operator run` as a child process against `plane`, admin port on loopback.
pub struct OperatorProcess {
    pub child: std::process::Child,
    pub admin: std::net::SocketAddr,
}

impl OperatorProcess {
    pub async fn start(plane: &testenv::ControlPlane, extra: &[&str]) -> Self {
        Self::start_with_env(plane, extra, &[]).await
    }

    pub async fn start_with_env(
        plane: &testenv::ControlPlane,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let admin: std::net::SocketAddr = format!("127.0.0.1:{}", testenv::free_port())
            .parse()
            .unwrap();
        let log = std::fs::File::create(plane.dir().join("operator.log")).unwrap();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_operator"))
            .arg("run")
            .arg("--admin-addr")
            .arg(admin.to_string())
            .args(extra)
            .env("KUBECONFIG", plane.kubeconfig_path())
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(log)
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("operator binary starts");
        let op = Self { child, admin };
        eventually("operator /readyz", || async move {
            matches!(http_get(admin, "/readyz").await, Some((200, _))).then_some(())
        })
        .await;
        op
    }

    pub async fn metrics(&self) -> String {
        http_get(self.admin, "/metrics")
            .await
            .expect("metrics served")
            .1
    }

    /// Peak resident set size in KiB (VmHWM).
    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    /// SIGTERM, then wait (without blocking the runtime); returns whether it exited cleanly.
    pub async fn terminate(mut self) -> bool {
        let pid = self.child.id().to_string();
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status();
        let start = Instant::now();
        while start.elapsed() < TIMEOUT {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _ = self.child.kill();
        false
    }
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
