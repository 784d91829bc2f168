//! The steps, in order. Each says whether it needs running pods; on a cluster without nodes
//! those are skipped with the reason, and the run ends with the list of what was skipped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use serde_json::Value;

use crate::children::{ChildRef, get, parse_rendered};
use crate::cluster::{Cluster, Mode, run};

pub const RELEASE: &str = "scalable-operator";
pub const OPERATOR_NAMESPACE: &str = "scalable-system";

/// Inputs of the suite.
pub struct Options {
    pub repo: PathBuf,
    /// The operator binary, for `operator render` and for the out-of-cluster operator.
    pub operator_bin: PathBuf,
    /// Helm values for the chart (kind: the locally built image).
    pub chart_set: Vec<String>,
}

/// What happened, for the caller to print and assert on.
#[derive(Debug, Default)]
pub struct Outcome {
    pub passed: Vec<String>,
    pub skipped: Vec<(String, String)>,
}

/// The app the suite applies: examples/scalableapp.yaml.
struct App {
    name: String,
    namespace: String,
    children: Vec<ChildRef>,
}

/// Stops the out-of-cluster operator when the suite ends.
struct LocalOperator(Child);

impl Drop for LocalOperator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const NO_PODS: &str = "needs running pods; this cluster has no Ready nodes (local control plane)";

pub async fn run_suite(cluster: &Cluster, options: &Options) -> anyhow::Result<Outcome> {
    let mut outcome = Outcome::default();
    let total = 11;
    let mut n = 0;
    let mut step = |name: &str| {
        n += 1;
        println!("[{n:>2}/{total}] {name}");
        name.to_string()
    };
    let full = cluster.mode == Mode::Full;
    let timer = Instant::now();
    let pass = |outcome: &mut Outcome, name: String| {
        println!(
            "        ok ({:.1} s into the run)",
            timer.elapsed().as_secs_f64()
        );
        outcome.passed.push(name);
    };
    let skip = |outcome: &mut Outcome, name: String| {
        println!("        SKIP: {NO_PODS}");
        outcome.skipped.push((name, NO_PODS.to_string()));
    };

    let name = step("monitoring CRDs (PrometheusRule, ServiceMonitor) are installed");
    monitoring_crds(cluster, options)?;
    pass(&mut outcome, name);

    let name = step("the chart installs the operator, its RBAC and the CRD");
    install_chart(cluster, options)?;
    pass(&mut outcome, name);

    let name = step("the operator runs and holds the leader Lease");
    let _local_operator = if full {
        cluster.kubectl(&[
            "rollout",
            "status",
            &format!("deployment/{RELEASE}"),
            "-n",
            OPERATOR_NAMESPACE,
            "--timeout=180s",
        ])?;
        None
    } else {
        // No pods here: the operator runs beside the test with nothing but the chart's
        // ServiceAccount token, which is also what proves the chart's RBAC sufficient.
        Some(start_local_operator(cluster, options)?)
    };
    wait_for_leader(cluster).await?;
    pass(&mut outcome, name);

    let name = step("Firebase emulators run in the cluster");
    if full {
        let manifest = options.repo.join("e2e/manifests/firebase-emulators.yaml");
        cluster.kubectl(&["apply", "-f", path_str(&manifest)?])?;
        cluster.kubectl(&[
            "rollout",
            "status",
            "deployment/firebase-emulators",
            "-n",
            "default",
            "--timeout=300s",
        ])?;
        pass(&mut outcome, name);
    } else {
        skip(&mut outcome, name);
    }

    let name = step("examples/scalableapp.yaml is applied and every child is created");
    let app = apply_example(cluster, options).await?;
    pass(&mut outcome, name);

    let name = step("the ScalableApp becomes Ready");
    if full {
        cluster.kubectl(&[
            "wait",
            "--for=condition=Ready",
            &format!("sapp/{}", app.name),
            "-n",
            &app.namespace,
            "--timeout=300s",
        ])?;
        pass(&mut outcome, name);
    } else {
        skip(&mut outcome, name);
    }

    let name = step("the API answers through its Service");
    if full {
        let health = service_get(cluster, &app, "api", "admin", "/readyz").await?;
        ensure!(
            health.contains("ok") || health.contains("ready"),
            "readyz answered {health}"
        );
        pass(&mut outcome, name);
    } else {
        skip(&mut outcome, name);
    }

    let name =
        step("a signed-in user creates and reads a document; a job is processed by a worker");
    if full {
        user_journey(cluster, &app).await?;
        pass(&mut outcome, name);
    } else {
        skip(&mut outcome, name);
    }

    let name = step("deleting the Redis master pod fails over with the API still serving");
    if full {
        redis_failover(cluster, &app).await?;
        pass(&mut outcome, name);
    } else {
        skip(&mut outcome, name);
    }

    let name = step("the alert rules are loaded and pass promtool");
    alert_rules(cluster, &app).await?;
    pass(&mut outcome, name);

    let name = step("deleting the ScalableApp removes everything it created");
    delete_app(cluster, &app).await?;
    pass(&mut outcome, name);

    println!(
        "\ne2e: {} passed, 0 failed, {} skipped",
        outcome.passed.len(),
        outcome.skipped.len()
    );
    for (name, why) in &outcome.skipped {
        println!("  skipped: {name} ({why})");
    }
    Ok(outcome)
}

fn path_str(path: &Path) -> anyhow::Result<&str> {
    path.to_str().context("non-UTF-8 path")
}

fn monitoring_crds(cluster: &Cluster, options: &Options) -> anyhow::Result<()> {
    let installed = cluster.kubectl(&["get", "crd", "-o", "name"])?;
    let has = |name: &str| {
        installed
            .lines()
            .any(|l| l.trim() == format!("customresourcedefinition.apiextensions.k8s.io/{name}"))
    };
    if !(has("prometheusrules.monitoring.coreos.com")
        && has("servicemonitors.monitoring.coreos.com"))
    {
        // On kind, e2e/run-kind.sh installs the real prometheus-operator CRDs first; elsewhere
        // stand-ins with the same group, version and kind let the operator create the objects.
        let stand_in = options
            .repo
            .join("e2e/manifests/monitoring-crds-stand-in.yaml");
        cluster.kubectl(&["apply", "-f", path_str(&stand_in)?])?;
    }
    for crd in [
        "prometheusrules.monitoring.coreos.com",
        "servicemonitors.monitoring.coreos.com",
    ] {
        cluster.kubectl(&[
            "wait",
            "--for=condition=Established",
            &format!("crd/{crd}"),
            "--timeout=60s",
        ])?;
    }
    Ok(())
}

fn install_chart(cluster: &Cluster, options: &Options) -> anyhow::Result<()> {
    let chart = options.repo.join("charts/scalable-operator");
    let mut args = vec![
        "upgrade",
        "--install",
        RELEASE,
        path_str(&chart)?,
        "--namespace",
        OPERATOR_NAMESPACE,
        "--create-namespace",
    ];
    for set in &options.chart_set {
        args.extend(["--set", set.as_str()]);
    }
    cluster.helm(&args)?;
    cluster.kubectl(&[
        "wait",
        "--for=condition=Established",
        "crd/scalableapps.scalable.dev",
        "--timeout=60s",
    ])?;
    Ok(())
}

fn start_local_operator(cluster: &Cluster, options: &Options) -> anyhow::Result<LocalOperator> {
    let token = cluster.kubectl(&[
        "create",
        "token",
        RELEASE,
        "-n",
        OPERATOR_NAMESPACE,
        "--duration=2h",
    ])?;
    let server = cluster.kubectl(&[
        "config",
        "view",
        "--minify",
        "-o",
        "jsonpath={.clusters[0].cluster.server}",
    ])?;
    let ca = cluster.kubectl(&[
        "config",
        "view",
        "--minify",
        "--raw",
        "-o",
        "jsonpath={.clusters[0].cluster.certificate-authority-data}",
    ])?;
    let kubeconfig = cluster.work_dir.join("operator-sa.kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\nusers:\n- name: sa\n  user:\n    token: {}\ncontexts:\n- name: c\n  context: {{cluster: c, user: sa, namespace: {OPERATOR_NAMESPACE}}}\ncurrent-context: c\n",
            token.trim()
        ),
    )?;
    let log = std::fs::File::create(cluster.work_dir.join("operator.log"))?;
    let child = Command::new(&options.operator_bin)
        .args(["run", "--lease-name", RELEASE, "--identity", "e2e-local"])
        .arg(format!("--admin-addr=127.0.0.1:{}", testenv::free_port()))
        .env("KUBECONFIG", &kubeconfig)
        .env("POD_NAMESPACE", OPERATOR_NAMESPACE)
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", options.operator_bin.display()))?;
    Ok(LocalOperator(child))
}

async fn wait_for_leader(cluster: &Cluster) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let holder = cluster
            .kubectl(&[
                "get",
                "lease",
                RELEASE,
                "-n",
                OPERATOR_NAMESPACE,
                "-o",
                "jsonpath={.spec.holderIdentity}",
            ])
            .unwrap_or_default();
        if !holder.trim().is_empty() {
            println!("        leader: {}", holder.trim());
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("no operator took the Lease {OPERATOR_NAMESPACE}/{RELEASE}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn apply_example(cluster: &Cluster, options: &Options) -> anyhow::Result<App> {
    let example = options.repo.join("examples/scalableapp.yaml");
    let manifest: Value = serde_saphyr::from_str(&std::fs::read_to_string(&example)?)?;
    let name = manifest
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .context("example has no name")?;
    let namespace = manifest
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("default");
    cluster.kubectl(&["apply", "-f", path_str(&example)?])?;

    // What must exist: exactly what `operator render` prints for this cluster's capabilities.
    let rendered = run(Command::new(&options.operator_bin)
        .args([
            "render",
            "-f",
            path_str(&example)?,
            "--prometheus-rules",
            "--service-monitors",
        ])
        .stderr(Stdio::inherit()))?;
    let children = parse_rendered(&rendered)?;
    ensure!(
        children.len() >= 10,
        "render lists only {} children",
        children.len()
    );
    wait_until(
        Duration::from_secs(120),
        "every child to be created",
        || async {
            let mut missing = Vec::new();
            for child in &children {
                if get(&cluster.client, child).await?.is_none() {
                    missing.push(format!("{} {}", child.kind, child.name));
                }
            }
            Ok(missing
                .is_empty()
                .then_some(())
                .ok_or(format!("missing: {missing:?}")))
        },
    )
    .await?;
    println!("        {} children created", children.len());
    Ok(App {
        name: name.to_string(),
        namespace: namespace.to_string(),
        children,
    })
}

async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Result<(), String>>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let last = match check().await? {
            Ok(()) => return Ok(()),
            Err(why) => why,
        };
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}: {last}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// GET through the apiserver's service proxy: no port-forward, no Ingress needed.
async fn service_get(
    cluster: &Cluster,
    app: &App,
    component: &str,
    port: &str,
    path: &str,
) -> anyhow::Result<String> {
    let url = format!(
        "/api/v1/namespaces/{}/services/{}-{component}:{port}/proxy{path}",
        app.namespace, app.name
    );
    cluster.kubectl(&["get", "--raw", &url])
}

async fn user_journey(cluster: &Cluster, app: &App) -> anyhow::Result<()> {
    // Through port-forwards: the apiserver's service proxy drops the Authorization header
    // once it has authenticated the kubectl user, so it cannot carry a Firebase token.
    let api = cluster
        .port_forward(&app.namespace, &format!("{}-api", app.name), "http")
        .await?;
    let auth = cluster
        .port_forward("default", "firebase-emulators", "auth")
        .await?;
    let project = cluster.kubectl(&[
        "get",
        "sapp",
        &app.name,
        "-n",
        &app.namespace,
        "-o",
        "jsonpath={.spec.firebase.projectId}",
    ])?;
    let endpoints = crate::journey::Endpoints {
        api: api.url(),
        auth: testenv::AuthEmulatorClient::new(
            format!("127.0.0.1:{}", auth.local_port),
            project.trim(),
        ),
        collection: "notes".to_string(),
    };
    crate::journey::run(&endpoints).await.map(|_| ())
}

async fn redis_failover(cluster: &Cluster, app: &App) -> anyhow::Result<()> {
    let pod = format!("{}-redis-0", app.name);
    cluster.kubectl(&["delete", "pod", &pod, "-n", &app.namespace, "--wait=false"])?;
    wait_until(
        Duration::from_secs(120),
        "the API to serve after the failover",
        || async {
            Ok(
                match service_get(cluster, app, "api", "admin", "/readyz").await {
                    Ok(_) => Ok(()),
                    Err(e) => Err(e.to_string()),
                },
            )
        },
    )
    .await
}

async fn alert_rules(cluster: &Cluster, app: &App) -> anyhow::Result<()> {
    let rule = app
        .children
        .iter()
        .find(|c| c.kind == "PrometheusRule")
        .context("the operator renders no PrometheusRule although its CRD is installed")?;
    let live = get(&cluster.client, rule)
        .await?
        .context("PrometheusRule missing")?;
    let groups = live
        .data
        .pointer("/spec/groups")
        .context("PrometheusRule without groups")?;
    let file = cluster.work_dir.join("rules.yaml");
    std::fs::write(
        &file,
        serde_json::to_string(&serde_json::json!({"groups": groups}))?,
    )?;
    let checked = testenv::Promtool::new()?.check_rules(&file)?;
    ensure!(checked.contains("SUCCESS"), "promtool: {checked}");
    println!(
        "        {}",
        checked.lines().last().unwrap_or_default().trim()
    );
    Ok(())
}

async fn delete_app(cluster: &Cluster, app: &App) -> anyhow::Result<()> {
    cluster.kubectl(&[
        "delete",
        "sapp",
        &app.name,
        "-n",
        &app.namespace,
        "--wait=true",
        "--timeout=60s",
    ])?;
    // The garbage collector removes the owned children; PVCs are kept by design unless asked.
    wait_until(
        Duration::from_secs(180),
        "every child to be garbage-collected",
        || async {
            let mut left = Vec::new();
            for child in &app.children {
                if get(&cluster.client, child).await?.is_some() {
                    left.push(format!("{} {}", child.kind, child.name));
                }
            }
            Ok(left
                .is_empty()
                .then_some(())
                .ok_or(format!("still there: {left:?}")))
        },
    )
    .await
}
