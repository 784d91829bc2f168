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

/// A `kubectl port-forward` to a Service, stopped on drop.
pub struct PortForward {
    child: std::process::Child,
    pub local_port: u16,
}

impl PortForward {
    /// `http://127.0.0.1:<local port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.local_port)
    }
}

impl Drop for PortForward {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Cluster {
    /// Forwards a free local port to the named port of a Service; returns once it accepts.
    pub async fn port_forward(
        &self,
        namespace: &str,
        service: &str,
        port_name: &str,
    ) -> anyhow::Result<PortForward> {
        let port = self.kubectl(&[
            "get",
            "service",
            service,
            "-n",
            namespace,
            "-o",
            &format!("jsonpath={{.spec.ports[?(@.name==\"{port_name}\")].port}}"),
        ])?;
        let port = port.trim();
        if port.is_empty() {
            bail!("service {namespace}/{service} has no port named {port_name}");
        }
        let local_port = testenv::free_port();
        let log = std::fs::File::create(
            self.work_dir
                .join(format!("port-forward-{service}-{port_name}.log")),
        )?;
        let child = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args([
                "port-forward",
                "-n",
                namespace,
                &format!("service/{service}"),
                &format!("{local_port}:{port}"),
                "--address",
                "127.0.0.1",
            ])
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting kubectl port-forward")?;
        let forward = PortForward { child, local_port };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while tokio::net::TcpStream::connect(("127.0.0.1", local_port))
            .await
            .is_err()
        {
            if std::time::Instant::now() > deadline {
                bail!("kubectl port-forward to {namespace}/{service}:{port_name} did not listen");
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        Ok(forward)
    }
}
