//! The end-to-end suite: ordered steps against one cluster, each printed as it runs.
//!
//! The same steps run on a kind cluster (everything) and on the local control plane, which has
//! no nodes: there, every step that needs running pods is skipped, by name, with the reason,
//! and the operator runs out-of-cluster with the chart's ServiceAccount token instead of from
//! its image.

pub mod children;
mod cluster;
mod steps;

pub use cluster::{Cluster, Mode};
pub use steps::{Options, Outcome, run_suite};
