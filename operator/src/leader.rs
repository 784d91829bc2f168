//! Leader election on a coordination.k8s.io/v1 Lease, so several operator replicas can run
//! and exactly one reconciles. kube-lease-manager does the Lease bookkeeping with server-side
//! apply (a conflicting takeover fails instead of overwriting), renews before expiry and
//! takes over an expired lease.

use kube::Client;
use kube_lease_manager::{LeaseManagerBuilder, LeaseManagerError};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Lease settings.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    /// Unique per replica, e.g. the pod name.
    pub identity: String,
    /// How long a lease is valid without renewal; a dead leader is replaced after this.
    pub duration_seconds: u64,
    /// Renew this long before expiry.
    pub grace_seconds: u64,
}

/// A running election: `is_leader` flips as the lease is won and lost.
pub struct Election {
    pub is_leader: watch::Receiver<bool>,
    task: JoinHandle<Result<kube_lease_manager::LeaseManager, LeaseManagerError>>,
}

/// The election could not start.
#[derive(Debug, thiserror::Error)]
#[error("starting leader election on Lease {namespace}/{name}: {source}")]
pub struct LeaderError {
    namespace: String,
    name: String,
    #[source]
    source: LeaseManagerError,
}

/// Starts competing for the lease in the background.
pub async fn elect(client: Client, config: &LeaseConfig) -> Result<Election, LeaderError> {
    let manager = LeaseManagerBuilder::new(client, &config.name)
        .with_namespace(&config.namespace)
        .with_identity(&config.identity)
        .with_duration(config.duration_seconds)
        .with_grace(config.grace_seconds)
        .with_field_manager(format!("scalable-operator-lease-{}", config.identity))
        .build()
        .await
        .map_err(|source| LeaderError {
            namespace: config.namespace.clone(),
            name: config.name.clone(),
            source,
        })?;
    let (is_leader, task) = manager.watch().await;
    Ok(Election { is_leader, task })
}

impl Election {
    /// Waits until this replica holds the lease.
    pub async fn wait_until_leader(&mut self) -> bool {
        self.is_leader.wait_for(|leader| *leader).await.is_ok()
    }

    /// Resolves when the lease is lost (or the election stopped).
    pub async fn lost(&mut self) {
        let _ = self.is_leader.wait_for(|leader| !*leader).await;
    }

    /// Releases the lease so another replica takes over at once instead of after expiry.
    pub async fn step_down(self) {
        // Dropping the receiver makes the manager release the lease and return.
        drop(self.is_leader);
        match self.task.await {
            Ok(Ok(_)) => tracing::info!("released the leader lease"),
            Ok(Err(e)) => tracing::warn!(error = %e, "releasing the leader lease"),
            Err(e) => tracing::warn!(error = %e, "lease task ended abnormally"),
        }
    }
}
