//! A Redis connection that follows a Sentinel failover.
//!
//! The redis crate resolves a Sentinel master once; a `ConnectionManager` built from that client
//! keeps reconnecting to the dead address forever. So this handle owns the resolution: it asks the
//! sentinels for the master, checks with `ROLE` that the server really is a master (a sentinel can
//! lag), and opens one multiplexed connection that every caller clones. When an operation fails
//! with an error that means "this is no longer the master" (I/O error, `READONLY` from a demoted
//! master, `MASTERDOWN`, `LOADING`, or the sentinels not knowing the master mid-failover), the
//! caller hands the error back with the connection's generation and the handle re-resolves once
//! for every caller that saw the same broken connection.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::{
    AsyncConnectionConfig, ConnectionInfo, ErrorKind, IntoConnectionInfo, RedisError, RedisResult,
    ServerErrorKind,
};

pub use crate::config::RedisAuth;

/// Where the master is found, and the credentials of the data nodes.
#[derive(Debug, Clone)]
pub enum RedisTarget {
    /// A single server (no failover to follow; reconnects to the same address). `auth` applies
    /// only when the URL carries no credentials of its own.
    Url { url: String, auth: RedisAuth },
    /// Sentinel addresses (`redis://host:port`) and the monitored master's name. `auth` is for
    /// the master (and replicas); the sentinels are asked without a password.
    Sentinel {
        sentinels: Vec<String>,
        master_name: String,
        auth: RedisAuth,
    },
}

impl RedisTarget {
    /// A single server without credentials beyond those in the URL.
    pub fn url(url: impl Into<String>) -> Self {
        Self::Url {
            url: url.into(),
            auth: RedisAuth::default(),
        }
    }
}

/// Timeouts of the handle.
#[derive(Debug, Clone)]
pub struct ConnectionOptions {
    /// Per-command response timeout on the shared connection. A master that vanished without a
    /// reset (network partition) is noticed after this long.
    pub response_timeout: Duration,
    pub connect_timeout: Duration,
    /// How long [`RedisHandle::run`] keeps retrying through a failover before giving up.
    pub failover_deadline: Duration,
}

impl Default for ConnectionOptions {
    fn default() -> Self {
        Self {
            response_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(2),
            failover_deadline: Duration::from_secs(30),
        }
    }
}

/// Cheap to clone; all clones share the connection and its re-resolution.
#[derive(Clone)]
pub struct RedisHandle {
    inner: Arc<Inner>,
}

struct Inner {
    target: RedisTarget,
    options: ConnectionOptions,
    current: RwLock<Current>,
    // Serialises re-resolution so a burst of failing callers triggers one, not hundreds.
    resolving: tokio::sync::Mutex<()>,
}

#[derive(Clone)]
struct Current {
    generation: u64,
    /// `redis://host:port/`, without credentials: safe to log.
    addr: String,
    /// What `addr` was opened with, credentials included (its `Debug` redacts the password).
    info: ConnectionInfo,
    conn: MultiplexedConnection,
}

/// A connection together with the generation to report back to [`RedisHandle::recover`].
pub struct Lease {
    pub generation: u64,
    pub conn: MultiplexedConnection,
}

impl RedisHandle {
    pub async fn connect(target: RedisTarget, options: ConnectionOptions) -> RedisResult<Self> {
        let (addr, info, conn) = resolve(&target, &options).await?;
        Ok(Self {
            inner: Arc::new(Inner {
                target,
                options,
                current: RwLock::new(Current {
                    generation: 0,
                    addr,
                    info,
                    conn,
                }),
                resolving: tokio::sync::Mutex::new(()),
            }),
        })
    }

    pub fn options(&self) -> &ConnectionOptions {
        &self.inner.options
    }

    /// Another handle to the same target with a connection of its own, opened on the calling
    /// Tokio runtime: a multiplexed connection's I/O task runs on the runtime that opened it, so
    /// a single-threaded runtime keeps its Redis round trips on its own thread with this.
    pub async fn sibling(&self) -> RedisResult<Self> {
        Self::connect(self.inner.target.clone(), self.inner.options.clone()).await
    }

    /// The shared multiplexed connection and its generation.
    pub fn conn(&self) -> Lease {
        // Called once per Redis operation: clones the connection only, not the address and
        // credentials that `read` copies.
        let lease = |c: &Current| Lease {
            generation: c.generation,
            conn: c.conn.clone(),
        };
        match self.inner.current.read() {
            Ok(c) => lease(&c),
            Err(p) => lease(&p.into_inner()),
        }
    }

    /// `redis://host:port/` of the master in use (never with credentials).
    pub fn master_addr(&self) -> String {
        self.read().addr
    }

    fn read(&self) -> Current {
        // A poisoned lock only means a panic elsewhere while holding it; the value is still whole.
        match self.inner.current.read() {
            Ok(c) => c.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// A new connection of its own to the current master, for blocking commands (`BLPOP`, `WAIT`)
    /// that would otherwise stall every caller multiplexed on the shared connection.
    pub async fn dedicated(&self, response_timeout: Option<Duration>) -> RedisResult<Lease> {
        let cur = self.read();
        let conn = open(
            cur.info,
            self.inner.options.connect_timeout,
            response_timeout,
        )
        .await?;
        Ok(Lease {
            generation: cur.generation,
            conn,
        })
    }

    /// Called with an error from a connection of `generation`. When the error means the master
    /// moved or died, re-resolves (once per generation) until a master answers or the deadline
    /// passes. Returns whether retrying the operation makes sense.
    pub async fn recover(&self, generation: u64, err: &RedisError) -> bool {
        if !is_failover_error(err) {
            return false;
        }
        let _guard = self.inner.resolving.lock().await;
        if self.read().generation != generation {
            return true; // someone else already moved on
        }
        let started = Instant::now();
        let mut pause = Duration::from_millis(50);
        loop {
            match resolve(&self.inner.target, &self.inner.options).await {
                Ok((addr, info, conn)) => {
                    tracing::warn!(
                        %addr, after_ms = started.elapsed().as_millis() as u64,
                        cause = %err, "redis master re-resolved"
                    );
                    let mut w = match self.inner.current.write() {
                        Ok(w) => w,
                        Err(p) => p.into_inner(),
                    };
                    *w = Current {
                        generation: generation + 1,
                        addr,
                        info,
                        conn,
                    };
                    return true;
                }
                Err(e) if started.elapsed() < self.inner.options.failover_deadline => {
                    tracing::debug!(error = %e, "no redis master yet");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(500));
                }
                Err(e) => {
                    tracing::error!(error = %e, "no redis master within the failover deadline");
                    return false;
                }
            }
        }
    }

    /// Runs `op` on the shared connection, retrying through a failover (re-resolving the master)
    /// until `failover_deadline`. `op` must be safe to repeat: a write whose reply was lost may
    /// have been applied.
    pub async fn run<T, F, Fut>(&self, mut op: F) -> RedisResult<T>
    where
        F: FnMut(MultiplexedConnection) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let started = Instant::now();
        loop {
            let lease = self.conn();
            match op(lease.conn).await {
                Ok(v) => return Ok(v),
                Err(e) => {
                    if started.elapsed() > self.inner.options.failover_deadline
                        || !self.recover(lease.generation, &e).await
                    {
                        return Err(e);
                    }
                }
            }
        }
    }
}

/// Errors after which the same server will not serve writes again soon: it is gone, demoted, or
/// the sentinels are mid-failover.
pub fn is_failover_error(err: &RedisError) -> bool {
    matches!(
        err.kind(),
        ErrorKind::Io
            | ErrorKind::MasterNameNotFoundBySentinel
            | ErrorKind::Server(
                ServerErrorKind::ReadOnly
                    | ServerErrorKind::MasterDown
                    | ServerErrorKind::BusyLoading
                    | ServerErrorKind::TryAgain
            )
    ) || err.is_connection_dropped()
        || err.is_timeout()
        || err.is_connection_refusal()
}

async fn open(
    info: ConnectionInfo,
    connect_timeout: Duration,
    response_timeout: Option<Duration>,
) -> RedisResult<MultiplexedConnection> {
    let client = redis::Client::open(info)?;
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(connect_timeout))
        .set_response_timeout(response_timeout);
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
}

/// `info` with `auth` applied, unless it already names a password (a URL with its own
/// credentials wins). The password goes into the `ConnectionInfo`, never into a URL string
/// that could end up in a log line.
fn with_auth(info: ConnectionInfo, auth: &RedisAuth) -> ConnectionInfo {
    let Some(password) = &auth.password else {
        return info;
    };
    if info.redis_settings().password().is_some() {
        return info;
    }
    let mut redis = info.redis_settings().clone().set_password(password);
    if let Some(user) = &auth.username {
        redis = redis.set_username(user);
    }
    info.set_redis_settings(redis)
}

/// `redis://host:port/` of `info`, without credentials or database.
fn display_addr(info: &ConnectionInfo) -> String {
    format!("redis://{}/", info.addr())
}

async fn resolve(
    target: &RedisTarget,
    options: &ConnectionOptions,
) -> RedisResult<(String, ConnectionInfo, MultiplexedConnection)> {
    match target {
        RedisTarget::Url { url, auth } => {
            let info = with_auth(url.as_str().into_connection_info()?, auth);
            let conn = open(
                info.clone(),
                options.connect_timeout,
                Some(options.response_timeout),
            )
            .await?;
            Ok((display_addr(&info), info, conn))
        }
        RedisTarget::Sentinel {
            sentinels,
            master_name,
            auth,
        } => resolve_sentinel(sentinels, master_name, auth, options).await,
    }
}

/// A sentinel address as a URL: the operator passes `host:port` (REDIS_SENTINELS), people
/// often write `redis://host:port`; both are accepted.
fn sentinel_url(address: &str) -> String {
    if address.contains("://") {
        address.to_string()
    } else {
        format!("redis://{address}/")
    }
}

/// Asks each sentinel in turn; takes the first address whose server confirms it is a master.
async fn resolve_sentinel(
    sentinels: &[String],
    master_name: &str,
    auth: &RedisAuth,
    options: &ConnectionOptions,
) -> RedisResult<(String, ConnectionInfo, MultiplexedConnection)> {
    if sentinels.is_empty() {
        return Err(RedisError::from((
            ErrorKind::EmptySentinelList,
            "no sentinel addresses",
        )));
    }
    let mut last = String::new();
    for sentinel in sentinels {
        let sentinel = &sentinel_url(sentinel);
        let answer: RedisResult<Option<(String, u16)>> = async {
            // No credentials: sentinels run without `requirepass` (see docs/high-availability.md).
            let mut conn = open(
                sentinel.as_str().into_connection_info()?,
                options.connect_timeout,
                Some(options.connect_timeout),
            )
            .await?;
            redis::cmd("SENTINEL")
                .arg("get-master-addr-by-name")
                .arg(master_name)
                .query_async(&mut conn)
                .await
        }
        .await;
        let (host, port) = match answer {
            Ok(Some(a)) => a,
            Ok(None) => {
                last = format!("{sentinel} does not know {master_name}");
                continue;
            }
            Err(e) => {
                last = format!("{sentinel}: {e}");
                continue;
            }
        };
        let addr = format!("redis://{host}:{port}/");
        let info = with_auth(addr.as_str().into_connection_info()?, auth);
        match open(
            info.clone(),
            options.connect_timeout,
            Some(options.response_timeout),
        )
        .await
        {
            Ok(mut conn) => {
                let role: RedisResult<redis::Role> =
                    redis::cmd("ROLE").query_async(&mut conn).await;
                match role {
                    Ok(redis::Role::Primary { .. }) => return Ok((addr, info, conn)),
                    Ok(_) => last = format!("{addr} (named by {sentinel}) is not a master yet"),
                    Err(e) => last = format!("{addr}: {e}"),
                }
            }
            Err(e) => last = format!("{addr} (named by {sentinel}): {e}"),
        }
    }
    Err(RedisError::from((
        ErrorKind::MasterNameNotFoundBySentinel,
        "no sentinel named a reachable master",
        last,
    )))
}

impl From<crate::config::RedisEndpoint> for RedisTarget {
    fn from(e: crate::config::RedisEndpoint) -> Self {
        match e {
            crate::config::RedisEndpoint::Url { url, auth } => Self::Url { url, auth },
            crate::config::RedisEndpoint::Sentinel {
                sentinels,
                master_name,
                auth,
            } => Self::Sentinel {
                sentinels,
                master_name,
                auth,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_applies_unless_the_url_has_its_own_password() -> RedisResult<()> {
        let auth = RedisAuth {
            username: Some("app".into()),
            password: Some("pw-from-env".into()),
        };
        let plain = with_auth("redis://h:1/".into_connection_info()?, &auth);
        assert_eq!(plain.redis_settings().password(), Some("pw-from-env"));
        assert_eq!(plain.redis_settings().username(), Some("app"));
        let own = with_auth("redis://:in-url@h:1/".into_connection_info()?, &auth);
        assert_eq!(own.redis_settings().password(), Some("in-url"));
        assert_eq!(display_addr(&own), "redis://h:1/");
        assert!(!format!("{own:?}").contains("in-url"));
        Ok(())
    }

    #[test]
    fn sentinel_addresses_may_omit_the_scheme() {
        assert_eq!(
            sentinel_url("demo-sentinel-0.demo:26379"),
            "redis://demo-sentinel-0.demo:26379/"
        );
        assert_eq!(
            sentinel_url("redis://10.0.0.1:26379"),
            "redis://10.0.0.1:26379"
        );
    }
}
