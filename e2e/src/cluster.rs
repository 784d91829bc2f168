//! The cluster under test and how to reach it.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

/// Whether pods run on the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// kind (or any cluster with nodes): every step runs.
    Full,
    /// The local control plane: no nodes, no pods.
    ControlPlaneOnly,
}

pub struct Cluster {
    pub kubeconfig: PathBuf,
    pub client: kube::Client,
    pub mode: Mode,
    /// Where the suite writes files (kubeconfigs, logs).
    pub work_dir: PathBuf,
}

impl Cluster {
    /// Connects through `kubeconfig` and finds out whether it has Ready nodes.
    pub async fn connect(kubeconfig: &Path, work_dir: &Path) -> anyhow::Result<Self> {
        let config = kube::config::Kubeconfig::read_from(kubeconfig)?;
        let config = kube::Config::from_custom_kubeconfig(
            config,
            &kube::config::KubeConfigOptions::default(),
        )
        .await?;
        let client = kube::Client::try_from(config)?;
        let mut cluster = Self {
            kubeconfig: kubeconfig.to_path_buf(),
            client,
            mode: Mode::ControlPlaneOnly,
            work_dir: work_dir.to_path_buf(),
        };
        let nodes = cluster.kubectl(&[
            "get",
            "nodes",
            "-o",
            "jsonpath={.items[*].status.conditions[?(@.type==\"Ready\")].status}",
        ])?;
        if nodes.split_whitespace().any(|s| s == "True") {
            cluster.mode = Mode::Full;
        }
        Ok(cluster)
    }

    pub fn kubectl(&self, args: &[&str]) -> anyhow::Result<String> {
        run(Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args))
    }

    pub fn helm(&self, args: &[&str]) -> anyhow::Result<String> {
        // The cached build of `make deps`, else a helm the user installed.
        let helm = testenv::Tools::new()
            .helm()
            .unwrap_or_else(|_| PathBuf::from("helm"));
        run(Command::new(helm)
            .env("KUBECONFIG", &self.kubeconfig)
            .args(args))
    }
}

pub(crate) fn run(cmd: &mut Command) -> anyhow::Result<String> {
    let shown = format!("{:?}", cmd);
    let out = cmd.output().with_context(|| format!("running {shown}"))?;
    if !out.status.success() {
        bail!(
            "{shown} failed: {}{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
