//! Connects the queue's consumer to the handler registry, and records each settled outcome in
//! Firestore (`jobs/{id}`) as the durable account of what happened (Redis trims its records).

use std::sync::Arc;

use futures::FutureExt as _;

use platform::queue::{ClaimedJob, JobContext, Outcome, Processor, Settled};
use serde::Serialize;
use serde_json::Value;

use crate::handlers::{HandlerError, Registry};

pub const JOBS_COLLECTION: &str = "jobs";

pub struct Dispatcher {
    pub queue: String,
    pub worker_id: String,
    pub registry: Arc<Registry>,
    pub firestore: Option<firestore::FirestoreDb>,
}

/// The Firestore document of a job.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct JobOutcomeDoc {
    pub id: String,
    pub queue: String,
    pub r#type: String,
    /// `completed`, `retrying` or `dead`.
    pub state: String,
    pub attempts: u32,
    pub max_attempts: u32,
    pub result: Option<Value>,
    pub last_error: Option<String>,
    pub worker: String,
    pub traceparent: Option<String>,
    /// When this attempt started (Redis clock, ms): orders writes of different attempts.
    pub started_at_ms: i64,
    /// RFC 3339.
    pub updated_at: String,
}

impl Processor for Dispatcher {
    async fn process(&self, job: ClaimedJob, ctx: JobContext) -> Outcome {
        let Some(handler) = self.registry.get(&job.job_type) else {
            return Outcome::Fail(format!("no handler for job type {:?}", job.job_type));
        };
        match handler.handle(&job, &ctx).await {
            Ok(v) => Outcome::Completed(v),
            Err(HandlerError::Retryable(e)) => Outcome::Retry(e),
            Err(HandlerError::Permanent(e)) => Outcome::Fail(e),
        }
    }

    async fn settled(&self, job: &ClaimedJob, outcome: &Outcome, settled: &Settled) {
        let Some(db) = &self.firestore else { return };
        let state = match settled {
            Settled::Completed => "completed",
            Settled::Retrying { .. } => "retrying",
            Settled::DeadLettered => "dead",
            // Not ours to report: another attempt owns the job, or it will run again.
            Settled::LeaseLost | Settled::AckFailed(_) => return,
        };
        let (result, last_error) = match outcome {
            Outcome::Completed(v) => (Some(v.clone()), None),
            Outcome::Retry(e) | Outcome::Fail(e) => (None, Some(e.clone())),
        };
        let doc = JobOutcomeDoc {
            id: job.id.clone(),
            queue: self.queue.clone(),
            r#type: job.job_type.clone(),
            state: state.into(),
            attempts: job.attempt,
            max_attempts: job.max_attempts,
            result,
            last_error,
            worker: self.worker_id.clone(),
            traceparent: job.traceparent.clone(),
            started_at_ms: job.started_at_ms,
            updated_at: jiff::Timestamp::now().to_string(),
        };
        // The record is an account, not the source of truth: a failed write is logged, and the
        // job's state in Redis stays authoritative. Attempts can finish out of order (a slow
        // write of attempt 1's failure landing after attempt 2 completed, or a stalled worker),
        // so the write is a transaction that keeps whichever attempt started last.
        let doc = Arc::new(doc);
        let written = db
            .run_transaction_with_options(
                |db, tx| {
                    let doc = doc.clone();
                    async move {
                        let current: Option<JobOutcomeDoc> = db
                            .fluent()
                            .select()
                            .by_id_in(JOBS_COLLECTION)
                            .obj()
                            .one(&doc.id)
                            .await?;
                        if current.is_some_and(|c| c.started_at_ms > doc.started_at_ms) {
                            return Ok(());
                        }
                        db.fluent()
                            .update()
                            .in_col(JOBS_COLLECTION)
                            .document_id(&doc.id)
                            .object(doc.as_ref())
                            .add_to_transaction(tx)?;
                        Ok(())
                    }
                    .boxed()
                },
                // Contended transactions abort often on the emulator; retry generously.
                firestore::FirestoreTransactionOptions::new().with_max_retries(20),
            )
            .await;
        if let Err(e) = written {
            tracing::warn!(id = %job.id, error = %e, "recording the job outcome in Firestore failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use platform::queue::{Backoff, Priority};
    use serde_json::json;

    use super::*;

    fn attempt(n: u32, started_at_ms: i64) -> ClaimedJob {
        ClaimedJob {
            id: "j1".into(),
            job_type: "webhook.deliver".into(),
            payload: json!({}),
            attempt: n,
            max_attempts: 3,
            backoff: Backoff::default(),
            priority: Priority::Normal,
            traceparent: None,
            ready_at_ms: 0,
            started_at_ms,
        }
    }

    /// A slow write of attempt 1's failure must not overwrite attempt 2's completion.
    #[tokio::test]
    async fn a_late_record_of_an_earlier_attempt_does_not_overwrite_a_later_one()
    -> anyhow::Result<()> {
        let emulator = testenv::FirestoreEmulator::start().await?;
        let db = platform::firestore::connect("demo-dispatch", "(default)", Some(&emulator.host()))
            .await?;
        let d = Dispatcher {
            queue: "jobs".into(),
            worker_id: "w".into(),
            registry: Arc::new(Registry::default()),
            firestore: Some(db.clone()),
        };
        let second = attempt(2, 2_000);
        d.settled(
            &second,
            &Outcome::Completed(json!({"status": 200})),
            &Settled::Completed,
        )
        .await;
        let first = attempt(1, 1_000);
        d.settled(
            &first,
            &Outcome::Retry("timeout".into()),
            &Settled::Retrying {
                delay: Duration::from_secs(1),
            },
        )
        .await;
        let doc: Option<JobOutcomeDoc> = db
            .fluent()
            .select()
            .by_id_in(JOBS_COLLECTION)
            .obj()
            .one("j1")
            .await?;
        let doc = doc.ok_or_else(|| anyhow::anyhow!("no record"))?;
        assert_eq!((doc.state.as_str(), doc.attempts), ("completed", 2));
        assert_eq!(doc.result, Some(json!({"status": 200})));

        // A later attempt (a re-drive) does replace it.
        let third = attempt(1, 3_000);
        d.settled(
            &third,
            &Outcome::Fail("410 gone".into()),
            &Settled::DeadLettered,
        )
        .await;
        let doc: Option<JobOutcomeDoc> = db
            .fluent()
            .select()
            .by_id_in(JOBS_COLLECTION)
            .obj()
            .one("j1")
            .await?;
        assert_eq!(doc.map(|d| d.state), Some("dead".to_string()));
        Ok(())
    }
}
