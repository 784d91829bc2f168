//! Docs that are generated from the code stay current, and the operator's environment contract
//! with the workloads holds: every variable it sets is one the workload reads.

use std::process::Command;

use anyhow::Context;
use serde_json::Value;
use testenv::repo_root;

#[test]
fn crd_reference_is_generated_from_the_crd() -> anyhow::Result<()> {
    let crd = std::fs::read_to_string(repo_root().join("crds/scalableapp.yaml"))?;
    let committed = std::fs::read_to_string(repo_root().join("docs/crd-reference.md"))?;
    let generated = xtask::docs::crd_reference(&crd)?;
    assert!(
        committed == generated,
        "docs/crd-reference.md is out of date: run `make docs`"
    );
    assert!(
        generated.contains("`spec.redis.sentinels`"),
        "spec fields are listed"
    );
    assert!(
        generated.contains("Validation rules"),
        "CEL rules are listed"
    );
    Ok(())
}

#[test]
fn configuration_reference_is_generated_from_the_binaries() -> anyhow::Result<()> {
    let committed = std::fs::read_to_string(repo_root().join("docs/configuration.md"))?;
    let generated = xtask::docs::configuration(&xtask::docs::bin_dir()?)?;
    assert!(
        committed == generated,
        "docs/configuration.md is out of date: run `make docs`"
    );
    Ok(())
}

/// Names of the `[env: NAME=]` variables a command's `--help` lists (`[env: NAME]` for a
/// secret such as `REDIS_PASSWORD`, whose value clap is told never to print).
fn env_vars_read_by(bin: &str, args: &[&str]) -> anyhow::Result<Vec<String>> {
    let path = xtask::docs::bin_dir()?.join(bin);
    let out = Command::new(&path)
        .args(args)
        .output()
        .with_context(|| format!("{}", path.display()))?;
    let help = String::from_utf8(out.stdout)?;
    Ok(help
        .split("[env: ")
        .skip(1)
        .filter_map(|s| s.split(['=', ']']).next())
        .map(str::to_string)
        .collect())
}

#[test]
fn every_variable_the_operator_sets_is_read_by_the_workload() -> anyhow::Result<()> {
    let example = repo_root().join("examples/scalableapp.yaml");
    let rendered = Command::new(xtask::docs::bin_dir()?.join("operator"))
        .args(["render", "-f"])
        .arg(&example)
        .output()?;
    anyhow::ensure!(rendered.status.success(), "operator render failed");
    let text = String::from_utf8(rendered.stdout)?;
    let api_reads = env_vars_read_by("api-server", &["serve", "--help"])?;
    let mut worker_reads = env_vars_read_by("worker", &["--help"])?;
    worker_reads.extend(env_vars_read_by("worker", &["run", "--help"])?);
    // Read by the runtime rather than by a flag.
    let ambient = [
        "RUST_LOG",
        "POD_NAME",
        "POD_NAMESPACE",
        "GOOGLE_APPLICATION_CREDENTIALS",
        "OTEL_SERVICE_NAME",
    ];

    let objects = text
        .split("\n---")
        .map(|doc| {
            doc.lines()
                .filter(|l| !l.starts_with('#'))
                .collect::<Vec<_>>()
                .join("\n")
        })
        .filter(|body| !body.trim().is_empty())
        .map(|body| serde_saphyr::from_str::<Value>(&body))
        .collect::<Result<Vec<_>, _>>()?;
    let config_keys = |name: &str| -> Vec<String> {
        objects
            .iter()
            .find(|o| o["kind"] == "ConfigMap" && o["metadata"]["name"] == name)
            .and_then(|o| o["data"].as_object())
            .map(|data| data.keys().cloned().collect())
            .unwrap_or_default()
    };

    let mut checked = 0;
    for object in objects.iter().filter(|o| o["kind"] == "Deployment") {
        let component = object
            .pointer("/metadata/labels/app.kubernetes.io~1component")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let reads = match component {
            "api" => &api_reads,
            "worker" => &worker_reads,
            _ => continue,
        };
        // Variables set on the container must be read by that workload; the shared config map
        // (envFrom) serves api and worker alike, so each of its keys must be read by one of them.
        let mut own: Vec<String> = Vec::new();
        let mut shared: Vec<String> = Vec::new();
        for container in object
            .pointer("/spec/template/spec/containers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            for env in container["env"].as_array().into_iter().flatten() {
                own.extend(env["name"].as_str().map(str::to_string));
            }
            for from in container["envFrom"].as_array().into_iter().flatten() {
                if let Some(name) = from.pointer("/configMapRef/name").and_then(Value::as_str) {
                    shared.extend(config_keys(name));
                }
            }
        }
        anyhow::ensure!(
            !own.is_empty() || !shared.is_empty(),
            "the {component} Deployment sets no environment"
        );
        let unread: Vec<&String> = own
            .iter()
            .filter(|name| !reads.contains(name) && !ambient.contains(&name.as_str()))
            .chain(shared.iter().filter(|name| {
                !api_reads.contains(name)
                    && !worker_reads.contains(name)
                    && !ambient.contains(&name.as_str())
            }))
            .collect();
        assert!(
            unread.is_empty(),
            "the operator sets {unread:?} for the {component} but nothing reads them"
        );
        checked += 1;
    }
    assert_eq!(checked, 2, "api and worker Deployments checked");
    Ok(())
}
