//! The handler registry: one [`JobHandler`] per job type. A team adds its own job types by
//! implementing the trait and registering it in `run::registry`.

pub mod basic;
pub mod files;
pub mod webhook;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use platform::queue::{ClaimedJob, JobContext};
use serde_json::Value;

/// Why an attempt failed, which decides whether it is retried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandlerError {
    /// Worth another attempt after backoff (timeouts, 5xx, a dependency down).
    Retryable(String),
    /// Will fail the same way every time (invalid payload, 4xx): dead-letter now.
    Permanent(String),
}

impl HandlerError {
    pub fn retryable(e: impl std::fmt::Display) -> Self {
        Self::Retryable(e.to_string())
    }

    pub fn permanent(e: impl std::fmt::Display) -> Self {
        Self::Permanent(e.to_string())
    }
}

pub type HandlerFuture<'a> = Pin<Box<dyn Future<Output = Result<Value, HandlerError>> + Send + 'a>>;

/// Runs jobs of one type. Jobs are delivered at least once: a handler must tolerate running
/// again for the same `job.id` (use it as an idempotency key downstream).
pub trait JobHandler: Send + Sync + 'static {
    fn handle<'a>(&'a self, job: &'a ClaimedJob, ctx: &'a JobContext) -> HandlerFuture<'a>;
}

#[derive(Default, Clone)]
pub struct Registry {
    handlers: HashMap<String, Arc<dyn JobHandler>>,
}

impl Registry {
    pub fn register(&mut self, job_type: impl Into<String>, handler: impl JobHandler) -> &mut Self {
        self.handlers.insert(job_type.into(), Arc::new(handler));
        self
    }

    pub fn get(&self, job_type: &str) -> Option<&Arc<dyn JobHandler>> {
        self.handlers.get(job_type)
    }

    pub fn types(&self) -> Vec<&str> {
        let mut t: Vec<&str> = self.handlers.keys().map(String::as_str).collect();
        t.sort_unstable();
        t
    }
}
