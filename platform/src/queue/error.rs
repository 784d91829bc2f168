use std::time::Duration;

/// Everything the queue library can fail with.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// The jobs were written to the master, but fewer replicas than required confirmed them, so a
    /// failover now could lose them. Enqueueing again with these `ids` (`NewJob::with_id`) is
    /// safe: it does not duplicate them, and waits for the replicas again.
    #[error(
        "{} job(s) written but only {acked} of {wanted} replica(s) acknowledged within {timeout:?}; \
         retry with the same ids",
        ids.len()
    )]
    NotDurable {
        ids: Vec<String>,
        acked: i64,
        wanted: u32,
        timeout: Duration,
    },
    #[error("invalid queue name {0:?}: use 1-64 characters of A-Z a-z 0-9 . _ -")]
    InvalidQueueName(String),
    #[error("invalid job: {0}")]
    InvalidJob(String),
    #[error("unexpected reply from redis for {what}: {detail}")]
    Protocol { what: &'static str, detail: String },
    #[error("job payload or result is not JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("the durable enqueue pipeline has stopped")]
    Closed,
}

pub type Result<T, E = QueueError> = std::result::Result<T, E>;

pub(crate) fn protocol(what: &'static str, detail: impl std::fmt::Debug) -> QueueError {
    QueueError::Protocol {
        what,
        detail: format!("{detail:?}"),
    }
}
