//! A Kubernetes control plane: etcd, kube-apiserver and kube-controller-manager on loopback.
//!
//! No kubelet and no scheduler: objects are stored, validated, admitted and garbage-collected as
//! on a real cluster, Deployments get ReplicaSets and ReplicaSets try to create Pods, but no Pod
//! ever runs. The apiserver authorizes with RBAC and issues service-account tokens, so
//! least-privilege roles can be tested for real.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::Api;
use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::error::IoContext;
use crate::pki::{self, Pki};
use crate::process::{Service, wait_ready};
use crate::{Result, Tools, free_port};

const START_TIMEOUT: Duration = Duration::from_secs(120);

/// A running control plane. Dropping it stops every process and removes its files.
pub struct ControlPlane {
    // Declared (and so dropped) in reverse start order.
    controller_manager: Service,
    apiserver: Service,
    etcd: Service,
    apiserver_args: Vec<String>,
    apiserver_bin: PathBuf,
    port: u16,
    kubeconfig: PathBuf,
    pki: Pki,
    dir: tempfile::TempDir,
}

impl ControlPlane {
    pub async fn start() -> Result<Self> {
        let tools = Tools::new();
        let etcd_bin = tools.etcd()?;
        let apiserver_bin = tools.kube_apiserver()?;
        let kcm_bin = tools.kube_controller_manager()?;

        let dir = tempfile::Builder::new()
            .prefix("testenv-kube-")
            .tempdir()
            .context(|| "creating a temp dir".into())?;
        let pki = pki::generate(dir.path())?;

        let etcd = start_etcd(&etcd_bin, dir.path()).await?;

        let port = free_port();
        let apiserver_args = apiserver_args(port, &etcd.1, &pki);
        let mut apiserver = spawn(
            &apiserver_bin,
            &apiserver_args,
            "kube-apiserver",
            dir.path(),
        )?;
        let kubeconfig = dir.path().join("admin.kubeconfig");
        write_kubeconfig(&kubeconfig, port, &pki)?;
        wait_apiserver_ready(&mut apiserver, &kubeconfig).await?;

        let kcm_args = controller_manager_args(&kubeconfig, &pki, dir.path());
        let mut controller_manager =
            spawn(&kcm_bin, &kcm_args, "kube-controller-manager", dir.path())?;
        // Functional readiness: the serviceaccount controller has made the `default` account.
        let client = client_from(&kubeconfig).await?;
        let accounts: Api<ServiceAccount> = Api::namespaced(client, "default");
        wait_ready(&mut controller_manager, START_TIMEOUT, || {
            let accounts = accounts.clone();
            async move {
                match accounts.get_opt("default").await {
                    Ok(Some(_)) => Ok(()),
                    Ok(None) => Err("no default ServiceAccount yet".into()),
                    Err(e) => Err(e.to_string()),
                }
            }
        })
        .await?;

        Ok(Self {
            controller_manager,
            apiserver,
            etcd: etcd.0,
            apiserver_args,
            apiserver_bin,
            port,
            kubeconfig,
            pki,
            dir,
        })
    }

    /// An admin kubeconfig for kubectl, helm and kube-rs.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    pub fn server_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// The CA that signed the apiserver's certificate, PEM.
    pub fn ca_cert_path(&self) -> &Path {
        &self.pki.ca_cert
    }

    /// A temp dir that lives as long as the control plane, for a test's own files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A cluster-admin client.
    pub async fn client(&self) -> Result<kube::Client> {
        client_from(&self.kubeconfig).await
    }

    /// `kubectl` with the admin kubeconfig.
    pub fn kubectl(&self) -> Result<Command> {
        let mut cmd = Command::new(Tools::new().kubectl()?);
        cmd.arg("--kubeconfig").arg(&self.kubeconfig);
        Ok(cmd)
    }

    /// Runs kubectl and returns its stdout; a failure carries its stderr.
    pub fn kubectl_run(&self, args: &[&str]) -> Result<String> {
        let out = crate::process::run(self.kubectl()?.args(args))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Kills the apiserver (SIGKILL) and starts it again on the same port and storage.
    pub async fn restart_apiserver(&mut self) -> Result<()> {
        self.apiserver.kill_hard();
        self.apiserver = spawn(
            &self.apiserver_bin,
            &self.apiserver_args,
            "kube-apiserver",
            self.dir.path(),
        )?;
        wait_apiserver_ready(&mut self.apiserver, &self.kubeconfig).await
    }

    pub fn pids(&self) -> [(&str, u32); 3] {
        [
            ("etcd", self.etcd.pid()),
            ("kube-apiserver", self.apiserver.pid()),
            ("kube-controller-manager", self.controller_manager.pid()),
        ]
    }
}

pub(crate) async fn client_from(kubeconfig: &Path) -> Result<kube::Client> {
    let config = Kubeconfig::read_from(kubeconfig)?;
    let config =
        kube::Config::from_custom_kubeconfig(config, &KubeConfigOptions::default()).await?;
    Ok(kube::Client::try_from(config)?)
}

fn spawn(bin: &Path, args: &[String], name: &str, dir: &Path) -> Result<Service> {
    let mut cmd = Command::new(bin);
    cmd.args(args).current_dir(dir);
    Service::spawn(name, cmd, &dir.join(format!("{name}.log")))
}

async fn start_etcd(bin: &Path, dir: &Path) -> Result<(Service, String)> {
    let client_port = free_port();
    let peer_port = free_port();
    let client_url = format!("http://127.0.0.1:{client_port}");
    let peer_url = format!("http://127.0.0.1:{peer_port}");
    let data = dir.join("etcd-data");
    let args = vec![
        format!("--data-dir={}", data.display()),
        format!("--listen-client-urls={client_url}"),
        format!("--advertise-client-urls={client_url}"),
        format!("--listen-peer-urls={peer_url}"),
        format!("--initial-advertise-peer-urls={peer_url}"),
        format!("--initial-cluster=default={peer_url}"),
        // Throwaway data: fsync would only slow every write the tests make.
        "--unsafe-no-fsync".into(),
        "--log-level=warn".into(),
    ];
    let mut etcd = spawn(bin, &args, "etcd", dir)?;
    let http = reqwest::Client::new();
    let health = format!("{client_url}/health");
    wait_ready(&mut etcd, START_TIMEOUT, || {
        let req = http.get(&health).send();
        async move {
            let body = req
                .await
                .map_err(|e| e.to_string())?
                .text()
                .await
                .map_err(|e| e.to_string())?;
            if body.contains("\"health\":\"true\"") {
                Ok(())
            } else {
                Err(body)
            }
        }
    })
    .await?;
    Ok((etcd, client_url))
}

fn apiserver_args(port: u16, etcd_url: &str, pki: &Pki) -> Vec<String> {
    let p = |p: &PathBuf| p.display().to_string();
    vec![
        format!("--etcd-servers={etcd_url}"),
        "--bind-address=127.0.0.1".into(),
        "--advertise-address=127.0.0.1".into(),
        // The endpoint reconciler refuses a loopback address; nothing needs that Endpoints object.
        "--endpoint-reconciler-type=none".into(),
        format!("--secure-port={port}"),
        format!("--tls-cert-file={}", p(&pki.serving_cert)),
        format!("--tls-private-key-file={}", p(&pki.serving_key)),
        format!("--client-ca-file={}", p(&pki.ca_cert)),
        "--authorization-mode=RBAC".into(),
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
        format!("--service-account-key-file={}", p(&pki.sa_public)),
        format!("--service-account-signing-key-file={}", p(&pki.sa_private)),
        format!("--service-cluster-ip-range={}", pki::SERVICE_CIDR),
        "--allow-privileged=true".into(),
        "--profiling=false".into(),
        "--v=1".into(),
    ]
}

fn controller_manager_args(kubeconfig: &Path, pki: &Pki, dir: &Path) -> Vec<String> {
    let k = kubeconfig.display();
    vec![
        format!("--kubeconfig={k}"),
        format!("--authentication-kubeconfig={k}"),
        format!("--authorization-kubeconfig={k}"),
        "--bind-address=127.0.0.1".into(),
        format!("--secure-port={}", free_port()),
        format!("--cert-dir={}", dir.join("kcm-certs").display()),
        "--leader-elect=false".into(),
        // Every default controller: garbage collector, deployment, replicaset, namespace,
        // serviceaccount(-token), horizontal pod autoscaler, disruption, ...
        "--controllers=*".into(),
        format!("--root-ca-file={}", pki.ca_cert.display()),
        format!(
            "--service-account-private-key-file={}",
            pki.sa_private.display()
        ),
        format!("--cluster-signing-cert-file={}", pki.ca_cert.display()),
        format!("--cluster-signing-key-file={}", pki.ca_key.display()),
        "--v=1".into(),
    ]
}

fn write_kubeconfig(path: &Path, port: u16, pki: &Pki) -> Result<()> {
    let read = |p: &PathBuf| std::fs::read(p).context(|| format!("reading {}", p.display()));
    let yaml = format!(
        "apiVersion: v1
kind: Config
clusters:
- name: testenv
  cluster:
    server: https://127.0.0.1:{port}
    certificate-authority-data: {ca}
users:
- name: testenv-admin
  user:
    client-certificate-data: {cert}
    client-key-data: {key}
contexts:
- name: testenv
  context:
    cluster: testenv
    user: testenv-admin
    namespace: default
current-context: testenv
",
        ca = B64.encode(read(&pki.ca_cert)?),
        cert = B64.encode(read(&pki.admin_cert)?),
        key = B64.encode(read(&pki.admin_key)?),
    );
    std::fs::write(path, yaml).context(|| format!("writing {}", path.display()))
}

async fn wait_apiserver_ready(apiserver: &mut Service, kubeconfig: &Path) -> Result<()> {
    let client = client_from(kubeconfig).await?;
    let started = Instant::now();
    wait_ready(apiserver, START_TIMEOUT, || {
        let client = client.clone();
        async move {
            let req = http::Request::get("/readyz")
                .body(Vec::new())
                .map_err(|e| e.to_string())?;
            match client.request_text(req).await {
                Ok(body) if body.trim() == "ok" => Ok(()),
                Ok(body) => Err(body),
                Err(e) => Err(e.to_string()),
            }
        }
    })
    .await?;
    tracing::debug!(elapsed = ?started.elapsed(), "kube-apiserver ready");
    Ok(())
}
