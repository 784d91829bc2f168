//! The api-server's view of Redis: [`platform::queue::connection::RedisHandle`] (one shared
//! multiplexed connection that follows a Sentinel failover) used in fail-fast mode.
//!
//! The handle's own `run` retries through a failover for up to its deadline, which suits a
//! queue but not a request path: a cache or rate-limit call must fail within the request's
//! budget and let the caller degrade (read Firestore, fail open). So each call here makes one
//! attempt, and an error that means "master gone" starts a single background re-resolution;
//! calls keep failing fast until it finds the new master.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use platform::config::RedisEndpoint;
use platform::queue::connection::{ConnectionOptions, RedisHandle, RedisTarget};
use redis::aio::MultiplexedConnection;
use redis::{RedisError, RedisResult};

use crate::observability::Metrics;

#[derive(Clone)]
pub struct Redis {
    handle: RedisHandle,
    recovering: Arc<AtomicBool>,
    metrics: Metrics,
}

impl Redis {
    pub async fn connect(
        endpoint: &RedisEndpoint,
        timeout: Duration,
        metrics: Metrics,
    ) -> RedisResult<Self> {
        let target = RedisTarget::from(endpoint.clone());
        let options = ConnectionOptions {
            response_timeout: timeout,
            connect_timeout: timeout,
            ..ConnectionOptions::default()
        };
        let handle = RedisHandle::connect(target, options).await?;
        Ok(Self {
            handle,
            recovering: Arc::new(AtomicBool::new(false)),
            metrics,
        })
    }

    /// One attempt of `op` on the shared connection; `name` labels the duration metric.
    pub async fn call<T, F, Fut>(&self, name: &'static str, op: F) -> RedisResult<T>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let lease = self.handle.conn();
        let started = Instant::now();
        let result = op(lease.conn).await;
        self.metrics
            .redis_duration(name, result.is_ok(), started.elapsed());
        if let Err(e) = &result {
            self.recover_in_background(lease.generation, e);
        }
        result
    }

    fn recover_in_background(&self, generation: u64, err: &RedisError) {
        if !platform::queue::connection::is_failover_error(err) {
            return;
        }
        // One re-resolution at a time: without this every failing request would queue another.
        if self.recovering.swap(true, Ordering::AcqRel) {
            return;
        }
        let handle = self.handle.clone();
        let flag = self.recovering.clone();
        let err = err.clone();
        tokio::spawn(async move {
            handle.recover(generation, &err).await;
            flag.store(false, Ordering::Release);
        });
    }

    /// The underlying handle, for the job queue (which retries through a failover itself).
    pub fn handle(&self) -> &RedisHandle {
        &self.handle
    }

    /// PING, for /readyz.
    pub async fn ping(&self) -> RedisResult<()> {
        self.call("ping", |mut c| async move {
            redis::cmd("PING").query_async::<()>(&mut c).await
        })
        .await
    }
}
