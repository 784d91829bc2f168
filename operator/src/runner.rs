//! The operator process: leader election gates everything; the leader discovers the
//! optional APIs, then runs the controller until shutdown, loss of the lease, or a change of
//! those APIs (the controller is then rebuilt so it watches the newly served kinds).
//! `run` is what `operator run` and the in-process integration tests share.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use kube::Client;
use tokio::sync::watch;

use crate::admin::{self, AdminState};
use crate::controller::{backoff, run_controller};
use crate::discovery;
use crate::leader::{self, LeaseConfig};
use crate::metrics::Metrics;
use crate::render::Capabilities;

/// Command-line options of `operator run`.
#[derive(Clone, Debug, clap::Args)]
pub struct RunArgs {
    /// Address of /healthz, /readyz and /metrics.
    #[arg(long, env = "OPERATOR_ADMIN_ADDR", default_value = "0.0.0.0:9090")]
    pub admin_addr: SocketAddr,
    /// Watch only this namespace (all namespaces when omitted).
    #[arg(long, env = "OPERATOR_WATCH_NAMESPACE")]
    pub namespace: Option<String>,
    /// Namespace of the leader-election Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub lease_namespace: String,
    /// Name of the leader-election Lease.
    #[arg(long, default_value = "scalable-operator")]
    pub lease_name: String,
    /// This replica's identity in the Lease; defaults to the host name.
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Seconds a lease stays valid without renewal.
    #[arg(long, default_value_t = 15)]
    pub lease_duration_seconds: u64,
    /// Run without leader election (a single replica).
    #[arg(long)]
    pub no_leader_election: bool,
    /// Cluster DNS domain.
    #[arg(long, env = "CLUSTER_DOMAIN", default_value = "cluster.local")]
    pub cluster_domain: String,
    /// Seconds between checks for newly installed optional CRDs.
    #[arg(long, default_value_t = 60)]
    pub discovery_interval_seconds: u64,
    /// Seconds between full resyncs of every app.
    #[arg(long, default_value_t = 300)]
    pub resync_seconds: u64,
    /// OTLP gRPC endpoint to export traces to (none when omitted).
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
}

/// Settings of a running operator, independent of how it was started.
#[derive(Clone, Debug)]
pub struct OperatorConfig {
    pub namespace: Option<String>,
    pub lease: Option<LeaseConfig>,
    pub cluster_domain: String,
    pub discovery_interval: Duration,
    pub resync: Duration,
    /// Reported in Events as the reporting instance.
    pub identity: String,
}

impl OperatorConfig {
    /// Defaults for an in-process operator (tests): no leader election, fast discovery.
    pub fn new(identity: impl Into<String>) -> Self {
        Self {
            namespace: None,
            lease: None,
            cluster_domain: "cluster.local".to_string(),
            discovery_interval: Duration::from_secs(5),
            resync: Duration::from_secs(300),
            identity: identity.into(),
        }
    }
}

/// Why `operator run` stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("connecting to the Kubernetes API: {0}")]
    Client(#[source] kube::Error),
    #[error(transparent)]
    Admin(#[from] admin::AdminError),
    #[error(transparent)]
    Leader(#[from] leader::LeaderError),
    #[error(transparent)]
    Telemetry(#[from] crate::telemetry::TelemetryError),
}

/// Resolves once the flag is true (or its sender is gone). Drops the borrow before returning,
/// so the future stays `Send` inside `select!`.
async fn wait_true(flag: &mut watch::Receiver<bool>) {
    let _ = flag.wait_for(|v| *v).await;
}

/// Discovery with retries: the apiserver may be briefly unreachable at start.
async fn discover(client: &Client, shutdown: &mut watch::Receiver<bool>) -> Option<Capabilities> {
    let mut attempt = 0;
    loop {
        match discovery::capabilities(client).await {
            Ok(caps) => return Some(caps),
            Err(e) => {
                attempt += 1;
                let delay = backoff(attempt).min(Duration::from_secs(30));
                tracing::warn!(error = %e, retry_in = ?delay, "discovering optional APIs");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = wait_true(shutdown) => return None,
                }
            }
        }
    }
}

/// Runs the operator with `client` until `shutdown` turns true. Used by `operator run` and,
/// in-process, by the integration tests.
pub async fn run(
    client: Client,
    config: OperatorConfig,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), RunError> {
    let mut election = match &config.lease {
        Some(lease) => Some(leader::elect(client.clone(), lease).await?),
        None => None,
    };
    loop {
        if let Some(election) = election.as_mut() {
            // A standby replica is healthy in its role: ready, so rollouts of the operator's
            // own Deployment do not wait on a pod that is not leading.
            ready.store(true, Ordering::Relaxed);
            tracing::info!(identity = %config.identity, "waiting for the leader lease");
            tokio::select! {
                won = election.wait_until_leader() => if !won { return Ok(()) },
                _ = wait_true(&mut shutdown) => break,
            }
            tracing::info!(identity = %config.identity, "acquired the leader lease");
        }
        metrics.leader.set(1);

        // Stop signal for the controller: shutdown, lost lease, or changed capabilities.
        let (stop_tx, stop_rx) = watch::channel(false);
        let Some(caps) = discover(&client, &mut shutdown).await else {
            break;
        };
        let stop = {
            let mut stop_rx = stop_rx.clone();
            async move {
                let _ = stop_rx.wait_for(|s| *s).await;
            }
        };
        let controller = run_controller(
            client.clone(),
            &config,
            caps,
            metrics.clone(),
            ready.clone(),
            stop,
        );
        tokio::pin!(controller);
        let mut ticker = tokio::time::interval(config.discovery_interval);
        ticker.tick().await;
        let reason = loop {
            tokio::select! {
                _ = &mut controller => break "controller ended",
                _ = wait_true(&mut shutdown) => break "shutdown",
                _ = async {
                    match election.as_mut() {
                        Some(e) => e.lost().await,
                        None => std::future::pending().await,
                    }
                } => break "lost the leader lease",
                _ = ticker.tick() => {
                    match discovery::capabilities(&client).await {
                        Ok(now) if now != caps => {
                            tracing::info!(before = ?caps, after = ?now, "optional APIs changed");
                            break "capabilities changed";
                        }
                        Ok(_) => {}
                        Err(e) => tracing::warn!(error = %e, "rediscovering optional APIs"),
                    }
                }
            }
        };
        tracing::info!(reason, "stopping the controller");
        let _ = stop_tx.send(true);
        controller.await;
        metrics.leader.set(0);
        if *shutdown.borrow() {
            break;
        }
    }
    metrics.leader.set(0);
    if let Some(election) = election {
        election.step_down().await;
    }
    Ok(())
}

/// `operator run`: logs, admin server, client from the environment, until SIGTERM/Ctrl-C.
pub async fn run_main(args: RunArgs) -> Result<(), RunError> {
    let telemetry = crate::telemetry::init(args.otlp_endpoint.as_deref())?;
    let metrics = Arc::new(Metrics::default());
    let ready = Arc::new(AtomicBool::new(false));
    let addr = admin::serve(
        args.admin_addr,
        AdminState {
            metrics: metrics.clone(),
            ready: ready.clone(),
        },
    )
    .await?;
    tracing::info!(%addr, "admin server listening");
    let kube_config = kube::Config::infer()
        .await
        .map_err(|e| RunError::Client(kube::Error::InferConfig(e)))?;
    let client =
        crate::client::counting_client(kube_config, metrics.clone()).map_err(RunError::Client)?;
    let identity = args
        .identity
        .clone()
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| format!("scalable-operator-{}", std::process::id()));
    let config = OperatorConfig {
        namespace: args.namespace.clone(),
        lease: (!args.no_leader_election).then(|| LeaseConfig {
            namespace: args.lease_namespace.clone(),
            name: args.lease_name.clone(),
            identity: identity.clone(),
            duration_seconds: args.lease_duration_seconds,
            grace_seconds: (args.lease_duration_seconds / 3).max(1),
        }),
        cluster_domain: args.cluster_domain.clone(),
        discovery_interval: Duration::from_secs(args.discovery_interval_seconds),
        resync: Duration::from_secs(args.resync_seconds),
        identity,
    };
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutdown requested");
        let _ = shutdown_tx.send(true);
    });
    let result = run(client, config, metrics, ready, shutdown_rx).await;
    telemetry.shutdown();
    result
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
