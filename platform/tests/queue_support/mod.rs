//! Helpers shared by the queue tests.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use platform::queue::{
    ClaimedJob, ConnectionOptions, Durability, JobContext, Outcome, Processor, Queue, QueueConfig,
    QueueName, RedisAuth, RedisHandle, RedisTarget,
};

pub async fn handle(url: &str) -> anyhow::Result<RedisHandle> {
    Ok(RedisHandle::connect(RedisTarget::url(url), ConnectionOptions::default()).await?)
}

/// The credentials a testenv server or group was started with.
pub fn auth_of(password: Option<&str>) -> RedisAuth {
    RedisAuth {
        username: None,
        password: password.map(str::to_string),
    }
}

pub async fn sentinel_handle(group: &testenv::SentinelGroup) -> anyhow::Result<RedisHandle> {
    let target = RedisTarget::Sentinel {
        sentinels: group.sentinel_urls(),
        master_name: group.master_name().to_string(),
        auth: auth_of(group.password()),
    };
    let options = ConnectionOptions {
        response_timeout: Duration::from_secs(3),
        connect_timeout: Duration::from_millis(500),
        failover_deadline: Duration::from_secs(60),
    };
    Ok(RedisHandle::connect(target, options).await?)
}

/// A queue without replica waits (standalone servers have no replicas).
pub fn queue(handle: &RedisHandle, name: &str) -> anyhow::Result<Queue> {
    Ok(Queue::new(
        handle.clone(),
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

/// Records every run of every job id, in start order; completes unless told otherwise.
#[derive(Default, Clone)]
pub struct Recorder {
    pub runs: Arc<Mutex<Vec<(String, u32)>>>,
    pub delay: Option<Duration>,
}

impl Recorder {
    pub fn runs(&self) -> Vec<(String, u32)> {
        self.runs.lock().map(|r| r.clone()).unwrap_or_default()
    }

    pub fn counts(&self) -> HashMap<String, usize> {
        let mut m = HashMap::new();
        for (id, _) in self.runs() {
            *m.entry(id).or_insert(0) += 1;
        }
        m
    }
}

impl Processor for Recorder {
    async fn process(&self, job: ClaimedJob, _ctx: JobContext) -> Outcome {
        if let Ok(mut r) = self.runs.lock() {
            r.push((job.id.clone(), job.attempt));
        }
        if let Some(d) = self.delay {
            tokio::time::sleep(d).await;
        }
        Outcome::Completed(serde_json::json!({"ok": job.id}))
    }
}

/// Polls `check` until it is true or `timeout` passes.
pub async fn eventually<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = std::time::Instant::now();
    loop {
        if check().await {
            return true;
        }
        if start.elapsed() > timeout {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
