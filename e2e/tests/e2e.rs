//! Runs the e2e suite against `E2E_KUBECONFIG` (a kind cluster: e2e/run-kind.sh), or against a
//! local control plane it starts itself, where the steps that need running pods are skipped.

use std::path::PathBuf;

use e2e::{Cluster, Mode};

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
        operator_bin: e2e::workspace_binary("operator")?,
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
