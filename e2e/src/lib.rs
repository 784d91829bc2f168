//! The end-to-end suite: ordered steps against one cluster, each printed as it runs.
//!
//! The same steps run on a kind cluster (everything) and on the local control plane, which has
//! no nodes: there, every step that needs running pods is skipped, by name, with the reason,
//! and the operator runs out-of-cluster with the chart's ServiceAccount token instead of from
//! its image.

pub mod children;
mod cluster;
pub mod journey;
mod steps;

pub use cluster::{Cluster, Mode};
pub use steps::{Options, Outcome, run_suite};

/// A binary of this workspace beside the test binary's target dir (`target/debug/<name>`), or
/// the path in `E2E_<NAME>_BIN` (`E2E_API_SERVER_BIN` for `api-server`).
pub fn workspace_binary(name: &str) -> anyhow::Result<std::path::PathBuf> {
    let var = format!("E2E_{}_BIN", name.to_uppercase().replace('-', "_"));
    if let Some(bin) = std::env::var_os(&var) {
        return Ok(std::path::PathBuf::from(bin));
    }
    let exe = std::env::current_exe()?;
    // target/debug/deps/<test> → target/debug/<name>
    let bin = exe
        .parent()
        .and_then(std::path::Path::parent)
        .ok_or_else(|| anyhow::anyhow!("test binary outside a target dir"))?
        .join(name);
    anyhow::ensure!(
        bin.is_file(),
        "{} is missing: run `cargo build -p {name}` (or set {var})",
        bin.display()
    );
    Ok(bin)
}
