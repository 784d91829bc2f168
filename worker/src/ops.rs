//! Operator commands: read-only stats and dead-letter listing, and re-drive.

use platform::queue::{
    ConnectionOptions, Durability, Queue, QueueConfig, QueueName, RateLimit, RedisHandle,
    RedisTarget, Redrive,
};
use serde_json::json;

async fn open(target: RedisTarget, name: &str) -> anyhow::Result<Queue> {
    let handle = RedisHandle::connect(target, ConnectionOptions::default()).await?;
    queue(handle, name)
}

/// A queue handle for consuming and inspecting (no enqueue, so no replica waits).
pub fn queue(handle: RedisHandle, name: &str) -> anyhow::Result<Queue> {
    Ok(Queue::new(
        handle,
        QueueName::new(name)?,
        QueueConfig {
            durability: Durability {
                replicas: 0,
                ..Durability::default()
            },
            ..QueueConfig::default()
        },
    ))
}

pub async fn stats(target: RedisTarget, queues: &[String]) -> anyhow::Result<()> {
    let handle = RedisHandle::connect(target, ConnectionOptions::default()).await?;
    for name in queues {
        let q = queue(handle.clone(), name)?;
        let s = q.stats().await?;
        let limit = q.rate_limit().await?;
        let line = json!({
            "queue": name,
            "waiting": s.waiting,
            "waitingByPriority": s.waiting_by_priority,
            "delayed": s.delayed,
            "active": s.active,
            "completed": s.completed,
            "dead": s.dead,
            "oldestWaitingSeconds": s.oldest_waiting_age.map(|d| d.as_secs_f64()),
            "rateLimit": limit.map(|l| json!({"max": l.max, "windowMs": l.window.as_millis() as u64})),
        });
        println!("{line}");
    }
    Ok(())
}

pub async fn dlq_list(
    target: RedisTarget,
    name: &str,
    offset: usize,
    limit: usize,
) -> anyhow::Result<()> {
    let q = open(target, name).await?;
    for r in q.dead_letters(offset, limit).await? {
        let line = json!({
            "id": r.id,
            "type": r.job_type,
            "attempts": r.attempts,
            "maxAttempts": r.max_attempts,
            "lastError": r.last_error,
            "finishedAtMs": r.finished_at_ms,
            "payload": r.payload,
        });
        println!("{line}");
    }
    Ok(())
}

pub async fn dlq_redrive(target: RedisTarget, name: &str, which: Redrive) -> anyhow::Result<()> {
    let q = open(target, name).await?;
    let n = q.redrive(which).await?;
    println!("{}", json!({"queue": name, "redriven": n}));
    Ok(())
}

pub async fn set_rate_limit(
    target: RedisTarget,
    name: &str,
    limit: Option<RateLimit>,
) -> anyhow::Result<()> {
    let q = open(target, name).await?;
    q.set_rate_limit(limit).await?;
    let shown = limit.map(|l| json!({"max": l.max, "windowMs": l.window.as_millis() as u64}));
    println!("{}", json!({"queue": name, "rateLimit": shown}));
    Ok(())
}
