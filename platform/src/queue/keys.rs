//! Key layout. Every key of a queue carries the hash tag `{name}`, so on Redis Cluster they all
//! hash to one slot and the Lua scripts may touch any of them. Scripts also build job keys from
//! the job-key prefix (`q:{name}:job:`) instead of receiving each as `KEYS[i]`; that is safe on
//! Cluster for the same reason (same slot), and it is what lets a claim script pop a job id and
//! read its record in one round trip.

use crate::queue::error::{QueueError, Result};
use crate::queue::priority::Priority;

/// A validated queue name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct QueueName(String);

impl QueueName {
    pub fn new(name: impl Into<String>) -> Result<Self> {
        let name = name.into();
        let ok = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if ok {
            Ok(Self(name))
        } else {
            Err(QueueError::InvalidQueueName(name))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for QueueName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The keys of one queue.
#[derive(Debug, Clone)]
pub struct Keys {
    base: String,
}

impl Keys {
    pub fn new(name: &QueueName) -> Self {
        Self {
            base: format!("q:{{{name}}}:"),
        }
    }

    fn key(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.base)
    }

    /// Ready jobs of one priority: a list, pushed on the left, popped on the right (FIFO).
    pub fn wait(&self, priority: Priority) -> String {
        self.key(&format!("wait:{}", priority.rank()))
    }

    /// The wait lists from highest to lowest priority (the order `KEYS` expects them).
    pub fn wait_all(&self) -> [String; Priority::COUNT] {
        Priority::ALL.map(|p| self.wait(p))
    }

    /// Delayed and retrying jobs: a sorted set scored by the time they become ready (ms).
    pub fn delayed(&self) -> String {
        self.key("delayed")
    }

    /// Running jobs: a sorted set scored by lease expiry (ms).
    pub fn active(&self) -> String {
        self.key("active")
    }

    /// Completed jobs by completion time (ms), trimmed by retention.
    pub fn completed(&self) -> String {
        self.key("completed")
    }

    /// The dead-letter queue: jobs that used up their attempts, by time (ms).
    pub fn dead(&self) -> String {
        self.key("dead")
    }

    /// Queue-wide settings shared by every worker (rate limit).
    pub fn meta(&self) -> String {
        self.key("meta")
    }

    /// Counter of jobs started in the current rate-limit window.
    pub fn rate(&self) -> String {
        self.key("rate")
    }

    /// Wake-up tokens for idle workers blocked in `BLPOP`.
    pub fn signal(&self) -> String {
        self.key("signal")
    }

    pub fn job_prefix(&self) -> String {
        self.key("job:")
    }

    pub fn job(&self, id: &str) -> String {
        self.key(&format!("job:{id}"))
    }

    pub fn idempotency(&self, key: &str) -> String {
        self.key(&format!("idem:{key}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_carries_the_queue_hash_tag() -> Result<()> {
        let keys = Keys::new(&QueueName::new("mail")?);
        let all = [
            keys.wait(Priority::High),
            keys.delayed(),
            keys.active(),
            keys.completed(),
            keys.dead(),
            keys.meta(),
            keys.rate(),
            keys.signal(),
            keys.job("j1"),
            keys.idempotency("k"),
        ];
        for k in all {
            assert!(k.starts_with("q:{mail}:"), "{k}");
        }
        Ok(())
    }

    #[test]
    fn names_that_would_break_the_hash_tag_are_rejected() {
        for bad in ["", "a{b", "a}b", "a b", &"x".repeat(65)] {
            assert!(QueueName::new(bad).is_err(), "{bad:?}");
        }
    }
}
