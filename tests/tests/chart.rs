//! The operator's Helm chart, checked by helm and by the real apiserver of the local control
//! plane: lint, generated docs, server-side dry-run of every rendered manifest, install /
//! upgrade / uninstall, and least-privilege RBAC proven by running the operator with the
//! chart's ServiceAccount token.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use e2e::children::{get, parse_rendered};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{Api, ResourceExt};
use serde_json::Value;
use testenv::{ControlPlane, Helm, Tools, repo_root};

const RELEASE: &str = "scalable-operator";
const NAMESPACE: &str = "scalable-system";

fn chart() -> PathBuf {
    repo_root().join("charts/scalable-operator")
}

fn path_str(path: &Path) -> anyhow::Result<&str> {
    path.to_str().context("non-UTF-8 path")
}

fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

#[test]
fn chart_lints_strict_and_rejects_values_outside_its_schema() -> anyhow::Result<()> {
    let helm = Helm::new()?;
    let chart = chart();
    let chart = path_str(&chart)?;
    let out = helm.run(&["lint", "--strict", chart])?;
    assert!(out.contains("0 chart(s) failed"), "{out}");

    for (set, complaint) in [
        ("replicaCount=0", "replicaCount"),
        ("logLevel=loud", "logLevel"),
        ("metrics.serviceMonitor.interval=often", "interval"),
        ("unknownKey=1", "unknownKey"),
    ] {
        let err = helm
            .run(&["template", RELEASE, chart, "--set", set])
            .expect_err(set)
            .to_string();
        assert!(
            err.contains("values don't meet the specifications of the schema"),
            "{set}: {err}"
        );
        assert!(err.contains(complaint), "{set}: {err}");
    }
    Ok(())
}

#[test]
fn chart_readme_values_table_is_generated_from_values_yaml() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let copy = dir.path().join("scalable-operator");
    copy_dir(&chart(), &copy)?;
    let helm_docs = Tools::new().helm_docs()?;
    let status = Command::new(helm_docs)
        .args([
            "--chart-search-root",
            ".",
            "--template-files",
            "README.md.gotmpl",
            "--log-level",
            "warning",
        ])
        .current_dir(&copy)
        .status()?;
    ensure!(status.success(), "helm-docs failed");
    let committed = std::fs::read_to_string(chart().join("README.md"))?;
    let generated = std::fs::read_to_string(copy.join("README.md"))?;
    assert!(
        committed == generated,
        "charts/scalable-operator/README.md is out of date: run `make chart-docs`"
    );
    Ok(())
}

#[test]
fn chart_ships_the_crd_generated_from_the_rust_types() -> anyhow::Result<()> {
    let shipped = std::fs::read_to_string(chart().join("files/scalableapp-crd.yaml"))?;
    let generated = std::fs::read_to_string(repo_root().join("crds/scalableapp.yaml"))?;
    assert!(
        shipped == generated,
        "charts/scalable-operator/files/scalableapp-crd.yaml differs from crds/scalableapp.yaml: run `make crds`"
    );
    Ok(())
}

#[tokio::test]
async fn every_rendered_manifest_is_accepted_by_the_apiserver() -> anyhow::Result<()> {
    let cp = ControlPlane::start().await?;
    cp.kubectl_run(&["create", "namespace", NAMESPACE])?;
    cp.kubectl_run(&["create", "namespace", "apps"])?;
    let stand_in = repo_root().join("tests/fixtures/chart/servicemonitor-crd.yaml");
    cp.kubectl_run(&["apply", "-f", path_str(&stand_in)?])?;
    cp.kubectl_run(&[
        "wait",
        "--for=condition=Established",
        "crd/servicemonitors.monitoring.coreos.com",
    ])?;

    let helm = Helm::new()?;
    let chart = chart();
    let every = repo_root().join("tests/fixtures/chart/every-option.yaml");
    for (name, extra) in [
        ("default", vec![]),
        ("every-option", vec!["-f", path_str(&every)?]),
    ] {
        let mut args = vec![
            "template",
            RELEASE,
            path_str(&chart)?,
            "--namespace",
            NAMESPACE,
        ];
        args.extend(extra);
        let rendered = helm.run(&args)?;
        let file = cp.dir().join(format!("{name}.yaml"));
        std::fs::write(&file, &rendered)?;
        let applied = cp
            .kubectl_run(&["apply", "--dry-run=server", "-f", path_str(&file)?])
            .with_context(|| format!("server-side dry-run of the {name} values"))?;
        let kinds = rendered.lines().filter(|l| l.starts_with("kind: ")).count();
        let accepted = applied
            .lines()
            .filter(|l| l.contains("(server dry run)"))
            .count();
        assert_eq!(
            accepted, kinds,
            "{name}: every object is accepted\n{applied}"
        );
        if name == "every-option" {
            assert!(
                rendered.contains("kind: ServiceMonitor"),
                "ServiceMonitor rendered"
            );
            assert!(
                rendered.contains("kind: Role\n"),
                "namespaced RBAC for watchNamespace"
            );
            assert!(
                !rendered.contains("kind: ClusterRole\n"),
                "no cluster-wide role for one namespace"
            );
        }
    }
    Ok(())
}

fn crd_api(client: kube::Client) -> Api<CustomResourceDefinition> {
    Api::all(client)
}

#[tokio::test]
async fn helm_installs_upgrades_to_a_changed_crd_and_uninstalls_without_orphans()
-> anyhow::Result<()> {
    let cp = ControlPlane::start().await?;
    let client = cp.client().await?;
    let helm = Helm::with_kubeconfig(cp.kubeconfig_path())?;
    let chart = chart();
    helm.run(&[
        "install",
        RELEASE,
        path_str(&chart)?,
        "--namespace",
        NAMESPACE,
        "--create-namespace",
    ])?;

    cp.kubectl_run(&[
        "wait",
        "--for=condition=Established",
        "crd/scalableapps.scalable.dev",
        "--timeout=60s",
    ])?;
    let deployment =
        cp.kubectl_run(&["get", "deployment", RELEASE, "-n", NAMESPACE, "-o", "json"])?;
    let deployment: Value = serde_json::from_str(&deployment)?;
    assert_eq!(deployment["spec"]["replicas"], 2);
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"],
        true
    );
    for (kind, ns) in [
        ("clusterrole", None),
        ("clusterrolebinding", None),
        ("role", Some(NAMESPACE)),
        ("rolebinding", Some(NAMESPACE)),
        ("serviceaccount", Some(NAMESPACE)),
    ] {
        let mut args = vec![
            "get",
            kind,
            "-l",
            "app.kubernetes.io/instance=scalable-operator",
            "-o",
            "name",
        ];
        if let Some(ns) = ns {
            args.extend(["-n", ns]);
        }
        let names = cp.kubectl_run(&args)?;
        assert!(!names.trim().is_empty(), "{kind} installed");
    }

    // A changed CRD: a new optional field. Helm upgrades templates, so the cluster gets it.
    let dir = tempfile::tempdir()?;
    let changed = dir.path().join("scalable-operator");
    copy_dir(&chart, &changed)?;
    let crd_file = changed.join("files/scalableapp-crd.yaml");
    let mut crd: Value = serde_saphyr::from_str(&std::fs::read_to_string(&crd_file)?)?;
    let spec_properties = crd
        .pointer_mut("/spec/versions/0/schema/openAPIV3Schema/properties/spec/properties")
        .and_then(Value::as_object_mut)
        .context("the CRD has no spec properties")?;
    spec_properties.insert(
        "upgradeProbe".into(),
        serde_json::json!({"type": "string", "description": "Added by the upgrade test."}),
    );
    std::fs::write(&crd_file, serde_saphyr::to_string(&crd)?)?;
    helm.run(&[
        "upgrade",
        RELEASE,
        path_str(&changed)?,
        "--namespace",
        NAMESPACE,
    ])?;
    let upgraded = crd_api(client.clone())
        .get("scalableapps.scalable.dev")
        .await?;
    let upgraded = serde_json::to_value(&upgraded)?;
    assert!(
        upgraded
            .pointer(
                "/spec/versions/0/schema/openAPIV3Schema/properties/spec/properties/upgradeProbe"
            )
            .is_some(),
        "helm upgrade applied the changed CRD"
    );

    helm.run(&["uninstall", RELEASE, "--namespace", NAMESPACE, "--wait"])?;
    let leftovers = cp.kubectl_run(&[
        "get",
        "deployments,services,serviceaccounts,roles,rolebindings,clusterroles,clusterrolebindings,networkpolicies,poddisruptionbudgets,configmaps",
        "--all-namespaces",
        "-l",
        "app.kubernetes.io/instance=scalable-operator",
        "-o",
        "name",
    ])?;
    assert_eq!(leftovers.trim(), "", "helm uninstall leaves no orphans");
    // The CRD is kept on purpose (crds.keep), so ScalableApps survive a reinstall.
    let kept = crd_api(client).get("scalableapps.scalable.dev").await?;
    assert_eq!(
        kept.annotations()
            .get("helm.sh/resource-policy")
            .map(String::as_str),
        Some("keep")
    );
    Ok(())
}

/// The operator binary built beside this test binary (`cargo test --workspace` builds it).
fn operator_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .context("test binary has no target dir")?;
    let bin = dir.join("operator");
    ensure!(
        bin.is_file(),
        "{} is missing: run `cargo build -p operator` first",
        bin.display()
    );
    Ok(bin)
}

/// Kills the operator process when the test ends, however it ends.
struct Operator(Child);

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn the_charts_service_account_reconciles_an_app_with_least_privilege() -> anyhow::Result<()> {
    let cp = ControlPlane::start().await?;
    let helm = Helm::with_kubeconfig(cp.kubeconfig_path())?;
    helm.run(&[
        "install",
        RELEASE,
        path_str(&chart())?,
        "--namespace",
        NAMESPACE,
        "--create-namespace",
    ])?;
    cp.kubectl_run(&[
        "wait",
        "--for=condition=Established",
        "crd/scalableapps.scalable.dev",
        "--timeout=60s",
    ])?;

    let account = format!("system:serviceaccount:{NAMESPACE}:{RELEASE}");
    for (verb, resource, extra, want) in [
        ("list", "secrets", "--all-namespaces", "no"),
        ("list", "secrets", "--namespace=default", "no"),
        ("watch", "secrets", "--all-namespaces", "no"),
        ("patch", "secrets", "--namespace=default", "no"),
        ("delete", "secrets", "--namespace=default", "no"),
        // The generated Redis password: created if absent; no Secret can be read.
        ("get", "secrets", "--namespace=default", "no"),
        ("get", "secrets", "--all-namespaces", "no"),
        ("create", "secrets", "--namespace=default", "yes"),
        ("create", "pods/exec", "--namespace=default", "no"),
        ("create", "pods", "--namespace=default", "no"),
        ("patch", "deployments.apps", "--namespace=default", "yes"),
        (
            "patch",
            "scalableapps.scalable.dev",
            "--subresource=status",
            "yes",
        ),
    ] {
        let mut cmd = cp.kubectl()?;
        let out = cmd
            .args(["auth", "can-i", verb, resource, extra, "--as", &account])
            .output()?;
        let answer = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert_eq!(answer, want, "can-i {verb} {resource} {extra}");
    }

    // Out-of-cluster, with nothing but the ServiceAccount's own token.
    let token = cp.kubectl_run(&["create", "token", RELEASE, "-n", NAMESPACE, "--duration=1h"])?;
    let ca = base64_file(cp.ca_cert_path())?;
    let kubeconfig = cp.dir().join("operator-sa.kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {}\n    certificate-authority-data: {ca}\nusers:\n- name: sa\n  user:\n    token: {}\ncontexts:\n- name: c\n  context: {{cluster: c, user: sa, namespace: {NAMESPACE}}}\ncurrent-context: c\n",
            cp.server_url(),
            token.trim()
        ),
    )?;
    let log_path = cp.dir().join("operator.log");
    let log = std::fs::File::create(&log_path)?;
    let _operator = Operator(
        Command::new(operator_binary()?)
            .args(["run", "--lease-name", RELEASE, "--identity", "rbac-test"])
            .arg(format!("--admin-addr=127.0.0.1:{}", testenv::free_port()))
            .env("KUBECONFIG", &kubeconfig)
            .env("POD_NAMESPACE", NAMESPACE)
            .env("RUST_LOG", "info")
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?,
    );

    let example = repo_root().join("examples/scalableapp.yaml");
    cp.kubectl_run(&["apply", "-f", path_str(&example)?])?;

    // What the operator must create: exactly what `operator render` prints for this cluster.
    let rendered = Command::new(operator_binary()?)
        .args(["render", "-f", path_str(&example)?])
        .stderr(Stdio::inherit())
        .output()?;
    ensure!(rendered.status.success(), "operator render failed");
    let expected = parse_rendered(&String::from_utf8(rendered.stdout)?)?;
    ensure!(
        expected.len() >= 10,
        "render lists {} children",
        expected.len()
    );

    let client = cp.client().await?;
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut missing = expected.clone();
    while !missing.is_empty() {
        let mut still = Vec::new();
        for child in missing {
            if get(&client, &child).await?.is_none() {
                still.push(child);
            }
        }
        missing = still;
        if Instant::now() > deadline {
            bail!(
                "children never created: {missing:?}\noperator log:\n{}",
                std::fs::read_to_string(&log_path)?
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let log = std::fs::read_to_string(&log_path)?;
    assert!(
        !log.to_lowercase().contains("forbidden"),
        "the chart's RBAC denied the operator something:\n{log}"
    );
    Ok(())
}

fn base64_file(path: &Path) -> anyhow::Result<String> {
    use base64::Engine;
    Ok(base64::engine::general_purpose::STANDARD.encode(std::fs::read(path)?))
}

/// The `helm test` hook runs `operator probe URL` (the image has no shell or curl).
#[test]
fn the_helm_test_probe_passes_on_2xx_and_fails_otherwise() -> anyhow::Result<()> {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    let server = std::thread::spawn(move || {
        for status in ["200 OK", "503 Service Unavailable"] {
            if let Ok((mut stream, _)) = listener.accept() {
                let mut request = [0u8; 1024];
                let _ = stream.read(&mut request);
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
            }
        }
    });
    let url = format!("http://127.0.0.1:{port}/readyz");
    let ok = Command::new(operator_binary()?)
        .args(["probe", &url])
        .output()?;
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let unavailable = Command::new(operator_binary()?)
        .args(["probe", &url])
        .output()?;
    assert!(!unavailable.status.success());
    assert!(String::from_utf8_lossy(&unavailable.stderr).contains("503"));
    let _ = server.join();
    let refused = Command::new(operator_binary()?)
        .args(["probe", &url])
        .output()?;
    assert!(!refused.status.success());
    Ok(())
}
