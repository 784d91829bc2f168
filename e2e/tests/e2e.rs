//! Runs the e2e suite against `E2E_KUBECONFIG` (a kind cluster: e2e/run-kind.sh), or against a
//! local control plane it starts itself, where the steps that need running pods are skipped.

use std::path::PathBuf;

use anyhow::{Context, ensure};
use e2e::{Cluster, Mode};

fn operator_binary() -> anyhow::Result<PathBuf> {
    if let Some(bin) = std::env::var_os("E2E_OPERATOR_BIN") {
        return Ok(PathBuf::from(bin));
    }
    let exe = std::env::current_exe()?;
    let bin = exe
        .parent()
        .and_then(std::path::Path::parent)
        .context("test binary outside a target dir")?
        .join("operator");
    ensure!(
        bin.is_file(),
        "{} is missing: run `cargo build -p operator`",
        bin.display()
    );
    Ok(bin)
}

#[tokio::test]
async fn e2e_suite() -> anyhow::Result<()> {
    let work = tempfile_dir()?;
    let repo = testenv::repo_root();
    let (cluster, _control_plane) = match std::env::var_os("E2E_KUBECONFIG") {
        Some(kubeconfig) => (
            Cluster::connect(&PathBuf::from(kubeconfig), &work).await?,
            None,
        ),
        None => {
            let cp = testenv::ControlPlane::start().await?;
            let cluster = Cluster::connect(cp.kubeconfig_path(), &work).await?;
            (cluster, Some(cp))
        }
    };
    println!(
        "e2e against {} ({:?})",
        cluster.kubeconfig.display(),
        cluster.mode
    );
    let chart_set = std::env::var("E2E_CHART_SET")
        .map(|s| s.split(',').map(str::to_string).collect())
        .unwrap_or_default();
    let options = e2e::Options {
        repo,
        operator_bin: operator_binary()?,
        chart_set,
    };
    let outcome = e2e::run_suite(&cluster, &options).await?;
    match cluster.mode {
        Mode::Full => assert!(
            outcome.skipped.is_empty(),
            "nothing is skipped on a cluster with nodes"
        ),
        Mode::ControlPlaneOnly => {
            assert!(outcome.passed.len() >= 6, "{outcome:?}");
            assert!(
                outcome
                    .skipped
                    .iter()
                    .all(|(_, why)| why.contains("needs running pods"))
            );
        }
    }
    Ok(())
}

fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("scalable-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
