//! `noop` and `sleep`: for tests, benchmarks and checking a deployment end to end.

use std::time::Duration;

use platform::queue::{ClaimedJob, JobContext};
use serde_json::{Value, json};

use super::{HandlerError, HandlerFuture, JobHandler};

pub struct Noop;

impl JobHandler for Noop {
    fn handle<'a>(&'a self, _job: &'a ClaimedJob, _ctx: &'a JobContext) -> HandlerFuture<'a> {
        Box::pin(async { Ok(Value::Null) })
    }
}

/// Sleeps `{"ms": N}` milliseconds (at most an hour), reporting progress halfway.
pub struct Sleep;

impl JobHandler for Sleep {
    fn handle<'a>(&'a self, job: &'a ClaimedJob, ctx: &'a JobContext) -> HandlerFuture<'a> {
        Box::pin(async move {
            let ms = job
                .payload
                .get("ms")
                .and_then(Value::as_u64)
                .filter(|ms| *ms <= 3_600_000)
                .ok_or_else(|| HandlerError::permanent("payload must be {\"ms\": 0..=3600000}"))?;
            tokio::time::sleep(Duration::from_millis(ms / 2)).await;
            // Progress is best effort: a lost lease shows up at the acknowledgement anyway.
            let _ = ctx.progress(&json!({"slept_ms": ms / 2})).await;
            tokio::time::sleep(Duration::from_millis(ms - ms / 2)).await;
            Ok(json!({"slept_ms": ms}))
        })
    }
}
