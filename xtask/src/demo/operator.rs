//! The operator part of the demo: the CRD, the operator, the example app and what it created.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use testenv::Environment;

use super::{Running, show, sibling_binary, step};

pub(super) async fn journey(env: &Environment) -> anyhow::Result<()> {
    let cp = &env.control_plane;
    let root = testenv::repo_root();
    let path = |p: &str| root.join(p).display().to_string();

    step("Operator: install the ScalableApp CRD");
    show(cp.kubectl_run(&["apply", "-f", &path("crds/scalableapp.yaml")])?);
    cp.kubectl_run(&[
        "wait",
        "--for=condition=Established",
        "crd/scalableapps.scalable.dev",
    ])?;

    step("Operator: start it (out-of-cluster, with the local kubeconfig)");
    let log_path = cp.dir().join("operator.log");
    let log = std::fs::File::create(&log_path)?;
    let _operator = Running(
        std::process::Command::new(sibling_binary("operator")?)
            .args(["run", "--no-leader-election"])
            .arg(format!("--admin-addr=127.0.0.1:{}", testenv::free_port()))
            .env("KUBECONFIG", cp.kubeconfig_path())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting the operator")?,
    );
    show(format!("logs: {}", log_path.display()));

    step("Operator: apply examples/scalableapp.yaml and wait for the operator to reconcile it");
    show(cp.kubectl_run(&["apply", "-f", &path("examples/scalableapp.yaml")])?);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let observed = cp
            .kubectl_run(&[
                "get",
                "sapp",
                "demo",
                "-o",
                "jsonpath={.metadata.generation}/{.status.observedGeneration}",
            ])
            .unwrap_or_default();
        if let Some((generation, seen)) = observed.split_once('/')
            && !seen.is_empty()
            && generation == seen
        {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "the operator did not reconcile sapp/demo in 2 minutes; its log:\n{}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    show(cp.kubectl_run(&["get", "sapp"])?);
    show(
        "(no kubelet runs here, so pods never start: Ready stays False and the replica counts stay 0;\n \
         on a real cluster `kubectl wait --for=condition=Ready sapp/demo` returns once they run)",
    );

    step("Operator: the objects it created for sapp/demo");
    show(cp.kubectl_run(&[
        "get",
        "serviceaccounts,configmaps,services,deployments,statefulsets,horizontalpodautoscalers,poddisruptionbudgets,networkpolicies,ingresses",
        "-l",
        "app.kubernetes.io/instance=demo",
    ])?);
    // The generated Redis password: shown by name and owner only, never by value.
    show(cp.kubectl_run(&[
        "get",
        "secret",
        "demo-redis-auth",
        "-o",
        "go-template=secret/{{.metadata.name}}: keys{{range $k, $v := .data}} {{$k}}{{end}}, owned by {{(index .metadata.ownerReferences 0).kind}}/{{(index .metadata.ownerReferences 0).name}} (generated once; pods read it by secretKeyRef)",
    ])?);
    show(cp.kubectl_run(&[
        "get",
        "sapp",
        "demo",
        "-o",
        "jsonpath={range .status.conditions[*]}{.type}={.status} ({.reason}){\"\\n\"}{end}",
    ])?);
    Ok(())
}
