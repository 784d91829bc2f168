//! A Redis job queue with at-least-once delivery, shared by api-server (enqueue, job status) and
//! worker (claim, run, acknowledge).
//!
//! # Design
//! Lists and sorted sets changed only by Lua scripts, not Streams consumer groups. Streams give
//! at-least-once with a pending list, but no priorities, no delays and no per-job state; those
//! would need side structures kept consistent with the stream anyway. With plain structures each
//! transition is one atomic script:
//!
//! ```text
//!  enqueue ──► wait:{0..3} (list per priority) ──claim──► active (zset by lease expiry)
//!     │             ▲    ▲                                 │    │    │
//!     └─► delayed ──┘    └──── reclaim (lease expired) ────┘    │    └─fail─► delayed (backoff)
//!         (zset by       └──── hand back (shutdown) ───────┘    │         or dead (last attempt)
//!          ready time)                                  complete ──► completed (trimmed)
//! ```
//!
//! - A job is a hash (`JobRecord`); the lists and sets hold ids. All keys share the hash tag
//!   `{queue}` (see [`keys`]).
//! - The lease token is the attempt number; acks from an expired lease are refused ([`lease`]).
//! - A completion also claims the next job in the same script, so a busy worker spends one
//!   round trip per job ([`consumer`]).
//! - Delays and retries are due times in a sorted set, promoted by claims ([`delayed`]).
//! - Durable enqueue waits for replicas with group-committed `WAIT` ([`enqueue`]).
//! - Idle workers block on a signal list instead of polling.
//! - The publisher's trace context travels in the job; the job span links to it ([`trace`]).
//!
//! The Redis connection follows a Sentinel failover ([`connection`]); every script is safe to
//! re-run after a lost reply, so operations retry through a failover.

pub mod connection;
pub mod consumer;
pub mod dead_letter;
pub mod delayed;
pub mod enqueue;
pub mod error;
pub mod job;
pub mod keys;
pub mod lease;
pub mod metrics;
pub mod priority;
pub mod rate_limit;
pub mod retention;
pub mod retry;
mod script;
pub mod stats;
pub mod trace;

use std::sync::Arc;
use std::time::Duration;

pub use connection::{ConnectionOptions, RedisAuth, RedisHandle, RedisTarget};
pub use consumer::{Consumer, ConsumerOptions, JobContext, Outcome, Processor, Settled};
pub use dead_letter::Redrive;
pub use enqueue::{Durability, Enqueued};
pub use error::{QueueError, Result};
pub use job::{ClaimedJob, JobRecord, JobState, NewJob};
pub use keys::{Keys, QueueName};
pub use lease::Claim;
pub use metrics::QueueMetrics;
pub use priority::Priority;
pub use rate_limit::RateLimit;
pub use retention::Retention;
pub use retry::{Backoff, Failed};
pub use stats::QueueStats;

/// Settings of a [`Queue`] handle.
#[derive(Debug, Clone)]
pub struct QueueConfig {
    pub durability: Durability,
    pub retention: Retention,
    /// How long an idempotency key keeps pointing at its job.
    pub idempotency_window: Duration,
    pub metrics: Option<QueueMetrics>,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            durability: Durability::default(),
            retention: Retention::default(),
            idempotency_window: Duration::from_secs(24 * 3600),
            metrics: None,
        }
    }
}

/// One named queue. Cheap to clone.
#[derive(Clone)]
pub struct Queue {
    inner: Arc<QueueInner>,
}

pub(crate) struct QueueInner {
    handle: RedisHandle,
    name: QueueName,
    keys: Keys,
    config: QueueConfig,
    committer: Option<enqueue::Committer>,
}

impl Queue {
    /// Must be called inside a Tokio runtime (durable enqueue starts its commit tasks).
    pub fn new(handle: RedisHandle, name: QueueName, config: QueueConfig) -> Self {
        let committer = (config.durability.replicas > 0)
            .then(|| enqueue::Committer::start(handle.clone(), config.durability));
        Self {
            inner: Arc::new(QueueInner {
                keys: Keys::new(&name),
                handle,
                name,
                config,
                committer,
            }),
        }
    }

    pub fn name(&self) -> &QueueName {
        &self.inner.name
    }

    pub fn keys(&self) -> &Keys {
        &self.inner.keys
    }

    pub fn handle(&self) -> &RedisHandle {
        &self.inner.handle
    }

    pub fn config(&self) -> &QueueConfig {
        &self.inner.config
    }
}
