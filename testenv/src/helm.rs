//! Helm (built from its Go module) pointed at one kubeconfig, with its own cache and config dirs.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::IoContext;
use crate::process::run;
use crate::{Result, Tools};

pub struct Helm {
    bin: PathBuf,
    kubeconfig: Option<PathBuf>,
    home: tempfile::TempDir,
}

impl Helm {
    /// Helm for `helm template`/`lint`, with no cluster.
    pub fn new() -> Result<Self> {
        Ok(Self {
            bin: Tools::new().helm()?,
            kubeconfig: None,
            home: tempfile::Builder::new()
                .prefix("testenv-helm-")
                .tempdir()
                .context(|| "creating a temp dir".into())?,
        })
    }

    /// Helm talking to the cluster of `kubeconfig`.
    pub fn with_kubeconfig(kubeconfig: &Path) -> Result<Self> {
        let mut helm = Self::new()?;
        helm.kubeconfig = Some(kubeconfig.to_path_buf());
        Ok(helm)
    }

    pub fn command(&self) -> Command {
        let mut cmd = Command::new(&self.bin);
        let home = self.home.path();
        cmd.env("HELM_CACHE_HOME", home.join("cache"))
            .env("HELM_CONFIG_HOME", home.join("config"))
            .env("HELM_DATA_HOME", home.join("data"));
        if let Some(k) = &self.kubeconfig {
            cmd.env("KUBECONFIG", k);
        }
        cmd
    }

    /// Runs helm with `args`; stdout on success, stderr in the error.
    pub fn run(&self, args: &[&str]) -> Result<String> {
        let out = run(self.command().args(args))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}
