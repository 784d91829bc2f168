//! The api-server's view of Redis: [`platform::queue::connection::RedisHandle`]s (multiplexed
//! connections that follow a Sentinel failover: one per lane of [`crate::lanes`] and a shared
//! one) used in fail-fast mode.
//!
//! The handle's own `run` retries through a failover for up to its deadline, which suits a
//! queue but not a request path: a cache or rate-limit call must fail within the request's
//! budget and let the caller degrade (read Firestore, fail open). So each call here makes one
//! attempt, and an error that means "master gone" starts a single background re-resolution;
//! calls keep failing fast until it finds the new master.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use platform::config::RedisEndpoint;
use platform::queue::connection::{ConnectionOptions, RedisHandle, RedisTarget};
use redis::aio::MultiplexedConnection;
use redis::{RedisError, RedisResult};

use crate::lanes;
use crate::observability::Metrics;

/// Cheap to clone; clones share the connections.
#[derive(Clone)]
pub struct Redis {
    /// Used outside the lanes (admin port, job queue, startup) and by a lane until its own
    /// connection is open.
    shared: Arc<Conn>,
    /// One connection per lane of [`crate::lanes`], each opened on (and driven by) its lane's
    /// runtime at the lane's first call; empty when the server runs without lanes (tests that
    /// build the state in process).
    lanes: Arc<[LaneConn]>,
    /// The runtime that opened `shared`, where its re-resolution runs, so that its I/O task
    /// stays on the main runtime with its other users (admin port, job queue, startup).
    home: tokio::runtime::Handle,
    metrics: Metrics,
}

struct Conn {
    handle: RedisHandle,
    /// One re-resolution at a time: without this every failing request would queue another.
    recovering: Arc<AtomicBool>,
}

#[derive(Default)]
struct LaneConn {
    conn: OnceLock<Conn>,
    opening: AtomicBool,
}

impl Conn {
    fn new(handle: RedisHandle) -> Self {
        Self {
            handle,
            recovering: Arc::new(AtomicBool::new(false)),
        }
    }
}

impl Redis {
    /// Must be called inside a Tokio runtime.
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
            shared: Arc::new(Conn::new(handle)),
            lanes: Arc::from([]),
            home: tokio::runtime::Handle::current(),
            metrics,
        })
    }

    /// Room for a connection per lane, each opened by the lane's first call.
    pub fn with_lanes(mut self, lanes: usize) -> Self {
        self.lanes = (0..lanes).map(|_| LaneConn::default()).collect();
        self
    }

    /// How many lanes have a connection of their own.
    pub fn lanes(&self) -> usize {
        self.lanes.len()
    }

    /// Opens lane `lane`'s connection on the calling (lane's) runtime, retrying until Redis
    /// answers; until then the lane's calls use the shared connection.
    async fn open_lane(self, lane: usize) {
        let Some(slot) = self.lanes.get(lane) else {
            return;
        };
        let mut pause = Duration::from_millis(100);
        loop {
            match self.shared.handle.sibling().await {
                Ok(handle) => {
                    let _ = slot.conn.set(Conn::new(handle));
                    return;
                }
                Err(e) => {
                    tracing::warn!(lane, error = %e, "lane's redis connection not open yet; using the shared one");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// The calling lane's connection, or the shared one (outside the lanes, and in a lane until
    /// its own is open: the first call starts opening it).
    fn conn(&self) -> (&Conn, bool) {
        if let Some(lane) = lanes::current()
            && let Some(slot) = self.lanes.get(lane)
        {
            if let Some(own) = slot.conn.get() {
                return (own, true);
            }
            if !slot.opening.swap(true, Ordering::AcqRel) {
                tokio::spawn(self.clone().open_lane(lane));
            }
        }
        (&self.shared, false)
    }

    /// One attempt of `op` on this thread's connection; `name` labels the duration metric.
    pub async fn call<T, F, Fut>(&self, name: &'static str, op: F) -> RedisResult<T>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let (conn, in_lane) = self.conn();
        let lease = conn.handle.conn();
        let started = Instant::now();
        let result = op(lease.conn).await;
        self.metrics
            .redis_duration(name, result.is_ok(), started.elapsed());
        if let Err(e) = &result {
            self.recover_in_background(conn, in_lane, lease.generation, e);
        }
        result
    }

    fn recover_in_background(&self, conn: &Conn, in_lane: bool, generation: u64, err: &RedisError) {
        if !platform::queue::connection::is_failover_error(err) {
            return;
        }
        if conn.recovering.swap(true, Ordering::AcqRel) {
            return;
        }
        let handle = conn.handle.clone();
        let flag = conn.recovering.clone();
        let err = err.clone();
        let recover = async move {
            handle.recover(generation, &err).await;
            flag.store(false, Ordering::Release);
        };
        // A lane's connection reopens on the lane (where its I/O task must run); the shared one
        // on its home runtime.
        if in_lane {
            tokio::spawn(recover);
        } else {
            self.home.spawn(recover);
        }
    }

    /// The shared handle, for the job queue (which retries through a failover itself).
    pub fn handle(&self) -> &RedisHandle {
        &self.shared.handle
    }

    /// PING, for /readyz.
    pub async fn ping(&self) -> RedisResult<()> {
        self.call("ping", |mut c| async move {
            redis::cmd("PING").query_async::<()>(&mut c).await
        })
        .await
    }
}
