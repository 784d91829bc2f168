//! What a job is: the request to enqueue one ([`NewJob`]), the record Redis keeps of it
//! ([`JobRecord`], one hash per job), and what a worker receives when it claims one
//! ([`ClaimedJob`]).

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::queue::error::{QueueError, Result};
use crate::queue::priority::Priority;
use crate::queue::retry::Backoff;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    Waiting,
    Delayed,
    Active,
    Completed,
    /// Used up its attempts (or failed permanently): in the dead-letter queue.
    Dead,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Waiting => "waiting",
            Self::Delayed => "delayed",
            Self::Active => "active",
            Self::Completed => "completed",
            Self::Dead => "dead",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "waiting" => Self::Waiting,
            "delayed" => Self::Delayed,
            "active" => Self::Active,
            "completed" => Self::Completed,
            "dead" => Self::Dead,
            _ => return None,
        })
    }
}

/// A job to enqueue. Build with [`NewJob::new`] and the `with_*` methods.
#[derive(Debug, Clone)]
pub struct NewJob {
    /// Set by the caller to make a retried enqueue (after a timeout) land on the same job;
    /// generated otherwise.
    pub id: Option<String>,
    pub job_type: String,
    pub payload: Value,
    pub priority: Priority,
    pub delay: Duration,
    pub max_attempts: u32,
    pub backoff: Backoff,
    pub idempotency_key: Option<String>,
    /// W3C `traceparent` of the publishing request.
    pub traceparent: Option<String>,
    /// Who published the job (e.g. a user id), kept in the record beside the payload so access
    /// checks never depend on what the payload contains; handlers do not see it.
    pub owner: Option<String>,
}

impl NewJob {
    pub fn new(job_type: impl Into<String>, payload: Value) -> Self {
        Self {
            id: None,
            job_type: job_type.into(),
            payload,
            priority: Priority::Normal,
            delay: Duration::ZERO,
            max_attempts: 5,
            backoff: Backoff::default(),
            idempotency_key: None,
            traceparent: None,
            owner: None,
        }
    }

    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    pub fn with_priority(mut self, priority: Priority) -> Self {
        self.priority = priority;
        self
    }

    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Runs no earlier than `at` (by the Redis server's clock, measured from now here).
    pub fn run_at(mut self, at: SystemTime) -> Self {
        self.delay = at.duration_since(SystemTime::now()).unwrap_or_default();
        self
    }

    pub fn with_max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts;
        self
    }

    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    pub fn with_idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }

    pub fn with_owner(mut self, owner: impl Into<String>) -> Self {
        self.owner = Some(owner.into());
        self
    }

    pub fn with_traceparent(mut self, traceparent: impl Into<String>) -> Self {
        self.traceparent = Some(traceparent.into());
        self
    }

    /// Carries the current span's trace context (if it is being traced).
    pub fn with_current_trace(mut self) -> Self {
        self.traceparent = crate::queue::trace::current_traceparent();
        self
    }

    pub(crate) fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(QueueError::InvalidJob(m));
        if self.job_type.is_empty() || self.job_type.len() > 128 {
            return bad("type must be 1-128 characters".into());
        }
        if let Some(id) = &self.id
            && !valid_token(id)
        {
            return bad(format!(
                "id {id:?}: use 1-128 characters of A-Z a-z 0-9 . _ -"
            ));
        }
        if let Some(k) = &self.idempotency_key
            && (k.is_empty() || k.len() > 256)
        {
            return bad("idempotency key must be 1-256 bytes".into());
        }
        if let Some(o) = &self.owner
            && (o.is_empty() || o.len() > MAX_OWNER_BYTES)
        {
            return bad(format!("owner must be 1-{MAX_OWNER_BYTES} bytes"));
        }
        if self.max_attempts == 0 {
            return bad("max_attempts must be at least 1".into());
        }
        if let Some(tp) = &self.traceparent
            && !valid_traceparent(tp)
        {
            return bad(format!("traceparent {tp:?} is not W3C trace context"));
        }
        Ok(())
    }
}

/// Enough for any user id (Firebase uids are at most 128 characters) or service name.
pub const MAX_OWNER_BYTES: usize = 256;

fn valid_token(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// `00-<32 hex trace id>-<16 hex span id>-<2 hex flags>`.
pub fn valid_traceparent(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    let hex = |p: &str, n: usize| p.len() == n && p.bytes().all(|b| b.is_ascii_hexdigit());
    parts.len() == 4
        && hex(parts[0], 2)
        && hex(parts[1], 32)
        && hex(parts[2], 16)
        && hex(parts[3], 2)
        && parts[1].bytes().any(|b| b != b'0')
}

/// Time-ordered (so ids sort by creation, handy in `redis-cli` and Firestore) and random enough
/// that two producers never collide: 48 bits of milliseconds, 64 random bits.
pub fn new_job_id() -> String {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64;
    format!("{:012x}{:016x}", ms & 0xffff_ffff_ffff, fastrand::u64(..))
}

/// Everything Redis keeps about a job.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRecord {
    pub id: String,
    pub job_type: String,
    pub payload: Value,
    pub state: JobState,
    pub priority: Priority,
    pub attempts: u32,
    pub max_attempts: u32,
    pub progress: Option<Value>,
    pub result: Option<Value>,
    pub last_error: Option<String>,
    /// Milliseconds since the epoch, by the Redis server's clock.
    pub created_at_ms: i64,
    pub ready_at_ms: Option<i64>,
    pub run_at_ms: Option<i64>,
    pub started_at_ms: Option<i64>,
    pub finished_at_ms: Option<i64>,
    pub traceparent: Option<String>,
    pub idempotency_key: Option<String>,
    /// [`NewJob::owner`].
    pub owner: Option<String>,
    pub worker: Option<String>,
}

impl JobRecord {
    pub(crate) fn from_hash(mut h: HashMap<String, String>) -> Result<Option<Self>> {
        if h.is_empty() {
            return Ok(None);
        }
        let id = h.remove("id").unwrap_or_default();
        let corrupt = |field: &str| crate::queue::error::protocol("job record", (&id, field));
        let mut take = |k: &str| h.remove(k).filter(|v| !v.is_empty());
        let int = |v: Option<String>| v.and_then(|v| v.parse::<i64>().ok());
        let json = |v: Option<String>| -> Result<Option<Value>> {
            v.map(|v| serde_json::from_str(&v))
                .transpose()
                .map_err(Into::into)
        };
        let state = take("state").and_then(|s| JobState::parse(&s));
        let priority = int(take("priority"))
            .and_then(|r| u8::try_from(r).ok())
            .and_then(Priority::from_rank);
        let (Some(state), Some(priority)) = (state, priority) else {
            return Err(corrupt("state/priority"));
        };
        Ok(Some(Self {
            job_type: take("type").unwrap_or_default(),
            payload: json(take("payload"))?.unwrap_or(Value::Null),
            state,
            priority,
            attempts: int(take("attempts")).unwrap_or(0).max(0) as u32,
            max_attempts: int(take("max_attempts")).unwrap_or(1).max(1) as u32,
            progress: json(take("progress"))?,
            result: json(take("result"))?,
            last_error: take("last_error"),
            created_at_ms: int(take("created_at")).unwrap_or(0),
            ready_at_ms: int(take("ready_at")),
            run_at_ms: int(take("run_at")),
            started_at_ms: int(take("started_at")),
            finished_at_ms: int(take("finished_at")),
            traceparent: take("traceparent"),
            idempotency_key: take("idem_key"),
            owner: take("owner"),
            worker: take("worker"),
            id,
        }))
    }
}

/// A job a worker holds a lease on. `attempt` is the lease token: acknowledgements that carry an
/// older attempt (the lease expired and the job was handed to someone else) are refused.
#[derive(Debug, Clone)]
pub struct ClaimedJob {
    pub id: String,
    pub job_type: String,
    pub payload: Value,
    pub attempt: u32,
    pub max_attempts: u32,
    pub backoff: Backoff,
    pub priority: Priority,
    pub traceparent: Option<String>,
    /// When the job became ready (enqueue, or end of its delay), Redis clock, ms.
    pub ready_at_ms: i64,
    /// When this attempt started, Redis clock, ms.
    pub started_at_ms: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_is_checked() {
        assert!(valid_traceparent(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        ));
        assert!(!valid_traceparent(
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01"
        ));
        assert!(!valid_traceparent("00-xyz-00f067aa0ba902b7-01"));
    }

    #[test]
    fn ids_sort_by_time_and_differ() {
        let a = new_job_id();
        std::thread::sleep(Duration::from_millis(2));
        let b = new_job_id();
        assert!(a < b, "{a} {b}");
        assert_eq!(a.len(), 28);
    }
}
