//! Where the binaries the environment runs come from.
//!
//! Go-built tools live in the cache that `scripts/build-go-tools.sh` fills, keyed by the versions
//! pinned in `tools/versions.env`; Debian's packages are on PATH; firebase-tools is installed
//! under `tools/firebase/` from its lockfile. Each lookup fails with the command that fixes it.

use std::path::{Path, PathBuf};

use crate::{Error, Result};

const VERSIONS: &str = include_str!("../../tools/versions.env");
const BUILD_HINT: &str =
    "run `make deps` (or scripts/build-go-tools.sh) to build it into the cache";

/// The repository checkout this crate was built from.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// A pinned version from `tools/versions.env`.
fn pinned(name: &str) -> &'static str {
    VERSIONS
        .lines()
        .filter_map(|l| l.split_once('='))
        .find(|(k, _)| k.trim() == name)
        .map(|(_, v)| v.trim())
        .unwrap_or("unknown")
}

#[derive(Debug, Clone)]
pub struct Tools {
    cache: PathBuf,
}

impl Default for Tools {
    fn default() -> Self {
        Self::new()
    }
}

impl Tools {
    pub fn new() -> Self {
        let cache = std::env::var_os("SCALABLE_CACHE")
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("scalableapp"))
            })
            .or_else(|| {
                std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/scalableapp"))
            })
            .unwrap_or_else(|| PathBuf::from("/tmp/scalableapp-cache"));
        Self { cache }
    }

    /// Tools looked up in `cache` instead of the default cache dir.
    pub fn with_cache(cache: impl Into<PathBuf>) -> Self {
        Self {
            cache: cache.into(),
        }
    }

    pub fn cache_dir(&self) -> &Path {
        &self.cache
    }

    pub fn kubernetes_version(&self) -> &'static str {
        pinned("K8S_VERSION")
    }

    fn cached(&self, what: &'static str, dir: String, file: &str) -> Result<PathBuf> {
        let path = self.cache.join("bin").join(dir).join(file);
        exists(what, path, BUILD_HINT)
    }

    pub fn kube_apiserver(&self) -> Result<PathBuf> {
        let dir = format!("kubernetes-{}", pinned("K8S_VERSION"));
        self.cached("kube-apiserver", dir, "kube-apiserver")
    }

    pub fn kube_controller_manager(&self) -> Result<PathBuf> {
        let dir = format!("kubernetes-{}", pinned("K8S_VERSION"));
        self.cached("kube-controller-manager", dir, "kube-controller-manager")
    }

    pub fn etcd(&self) -> Result<PathBuf> {
        self.cached("etcd", format!("etcd-{}", pinned("ETCD_VERSION")), "etcd")
    }

    pub fn helm(&self) -> Result<PathBuf> {
        self.cached("helm", format!("helm-{}", pinned("HELM_VERSION")), "helm")
    }

    pub fn helm_docs(&self) -> Result<PathBuf> {
        let dir = format!("helm-docs-{}", pinned("HELM_DOCS_VERSION"));
        self.cached("helm-docs", dir, "helm-docs")
    }

    pub fn umoci(&self) -> Result<PathBuf> {
        on_path("umoci", "apt-get install umoci (or run `make deps`)")
    }

    pub fn fake_gcs_server(&self) -> Result<PathBuf> {
        let dir = format!("fake-gcs-server-{}", pinned("FAKE_GCS_VERSION"));
        self.cached("fake-gcs-server", dir, "fake-gcs-server")
    }

    pub fn kubectl(&self) -> Result<PathBuf> {
        on_path(
            "kubectl",
            "install kubectl (it ships with the Google Cloud SDK packages)",
        )
    }

    pub fn redis_server(&self) -> Result<PathBuf> {
        on_path(
            "redis-server",
            "apt-get install redis-server (or run `make deps`)",
        )
    }

    pub fn redis_sentinel(&self) -> Result<PathBuf> {
        on_path(
            "redis-sentinel",
            "apt-get install redis-sentinel (or run `make deps`)",
        )
    }

    pub fn promtool(&self) -> Result<PathBuf> {
        on_path(
            "promtool",
            "apt-get install prometheus (or run `make deps`)",
        )
    }

    pub fn nginx(&self) -> Result<PathBuf> {
        exists(
            "nginx",
            PathBuf::from("/usr/sbin/nginx"),
            "apt-get install nginx-light (or run `make deps`)",
        )
    }

    /// The Firestore emulator shipped inside the Google Cloud SDK.
    pub fn firestore_emulator(&self) -> Result<PathBuf> {
        let root = std::env::var_os("CLOUDSDK_ROOT_DIR")
            .map(PathBuf::from)
            .or_else(gcloud_sdk_root)
            .unwrap_or_else(|| PathBuf::from("/usr/lib/google-cloud-sdk"));
        exists(
            "Firestore emulator",
            root.join("platform/cloud-firestore-emulator/cloud_firestore_emulator"),
            "install the Google Cloud SDK component cloud-firestore-emulator",
        )
    }

    /// firebase-tools as pinned in tools/firebase/package-lock.json.
    pub fn firebase(&self) -> Result<PathBuf> {
        exists(
            "firebase-tools",
            repo_root().join("tools/firebase/node_modules/.bin/firebase"),
            "run `make deps` (npm ci in tools/firebase)",
        )
    }
}

fn exists(what: &'static str, path: PathBuf, hint: &'static str) -> Result<PathBuf> {
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error::MissingTool { what, path, hint })
    }
}

fn on_path(name: &'static str, hint: &'static str) -> Result<PathBuf> {
    let paths = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&paths)
        .chain(["/usr/sbin", "/usr/bin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or(Error::MissingTool {
            what: name,
            path: PathBuf::from(name),
            hint,
        })
}

fn gcloud_sdk_root() -> Option<PathBuf> {
    let out = std::process::Command::new("gcloud")
        .args(["info", "--format=value(installation.sdk_root)"])
        .output()
        .ok()?;
    let root = String::from_utf8(out.stdout).ok()?;
    let root = root.trim();
    (out.status.success() && !root.is_empty()).then(|| PathBuf::from(root))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_pinned_in_one_file() {
        assert!(
            pinned("K8S_VERSION").starts_with("v1."),
            "{}",
            pinned("K8S_VERSION")
        );
        assert!(pinned("ETCD_VERSION").starts_with("v3."));
        assert!(pinned("HELM_VERSION").starts_with("v3."));
        assert_eq!(pinned("NO_SUCH_TOOL"), "unknown");
    }

    #[test]
    fn a_missing_go_tool_says_how_to_build_it() {
        let tools = Tools::with_cache("/nonexistent/scalableapp-cache");
        let err = tools
            .kube_apiserver()
            .expect_err("nothing is cached there")
            .to_string();
        assert!(err.contains("kube-apiserver not found"), "{err}");
        assert!(
            err.contains("/nonexistent/scalableapp-cache/bin/kubernetes-v1."),
            "{err}"
        );
        assert!(err.contains("make deps"), "{err}");
    }

    #[test]
    fn a_missing_debian_tool_says_which_package() {
        let err = on_path("no-such-binary-scalableapp", "apt-get install something")
            .expect_err("not on PATH")
            .to_string();
        assert!(
            err.contains("no-such-binary-scalableapp not found"),
            "{err}"
        );
        assert!(err.contains("apt-get install something"), "{err}");
    }
}
