//! Redis from Debian's redis-server: a standalone server, and a Sentinel group (one master, two
//! replicas, three sentinels, quorum 2) whose master can be killed to force a failover. Both
//! can require a password (`requirepass`; replicas `masterauth`, sentinels `auth-pass`), as the
//! operator's Redis does; the sentinels themselves never ask for one.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::error::IoContext;
use crate::process::{Service, wait_ready};
use crate::{Error, Result, Tools, free_port};

const START_TIMEOUT: Duration = Duration::from_secs(30);
pub const MASTER_NAME: &str = "mymaster";

/// One redis-server process.
pub struct RedisServer {
    service: Service,
    port: u16,
    password: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

impl RedisServer {
    /// A standalone server with persistence off.
    pub async fn start() -> Result<Self> {
        let dir = tempdir("testenv-redis-")?;
        let mut server = Self::start_in(dir.path(), "redis", &[], None).await?;
        server._dir = Some(dir);
        Ok(server)
    }

    /// A standalone server that requires `password` (`requirepass`).
    pub async fn start_with_password(password: &str) -> Result<Self> {
        let dir = tempdir("testenv-redis-")?;
        let mut server = Self::start_in(dir.path(), "redis", &[], Some(password)).await?;
        server._dir = Some(dir);
        Ok(server)
    }

    async fn start_in(
        dir: &Path,
        name: &str,
        extra: &[String],
        password: Option<&str>,
    ) -> Result<Self> {
        let port = free_port();
        let mut cmd = Command::new(Tools::new().redis_server()?);
        cmd.args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .args(["--daemonize", "no", "--protected-mode", "no"])
        .arg("--dir")
        .arg(dir)
        .args(["--dbfilename", &format!("{name}.rdb")])
        .args(extra)
        .current_dir(dir);
        if let Some(pw) = password {
            // masterauth too, so a replica (or a demoted master) can sync from its master.
            cmd.args(["--requirepass", pw, "--masterauth", pw]);
        }
        let mut service = Service::spawn(name, cmd, &dir.join(format!("{name}.log")))?;
        wait_ready(&mut service, START_TIMEOUT, || ping(port, password)).await?;
        Ok(Self {
            service,
            port,
            password: password.map(str::to_string),
            _dir: None,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT/`, without the password even when one is required.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    pub fn service(&mut self) -> &mut Service {
        &mut self.service
    }
}

async fn ping(port: u16, password: Option<&str>) -> std::result::Result<(), String> {
    let mut conn = connect(port, password).await.map_err(|e| e.to_string())?;
    let pong: String = redis::cmd("PING")
        .query_async(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
    if pong == "PONG" { Ok(()) } else { Err(pong) }
}

/// A master, two replicas and three sentinels watching them under [`MASTER_NAME`].
pub struct SentinelGroup {
    // Dropped first: sentinels would otherwise fail over while the servers stop.
    sentinels: Vec<Sentinel>,
    servers: Vec<RedisServer>,
    password: Option<String>,
    dir: tempfile::TempDir,
}

struct Sentinel {
    _service: Service,
    port: u16,
}

impl SentinelGroup {
    pub async fn start() -> Result<Self> {
        Self::start_inner(None).await
    }

    /// The data nodes require `password` (`requirepass`, `masterauth`); the sentinels know it
    /// (`sentinel auth-pass`) but ask none of their own.
    pub async fn start_with_password(password: &str) -> Result<Self> {
        Self::start_inner(Some(password)).await
    }

    async fn start_inner(password: Option<&str>) -> Result<Self> {
        let dir = tempdir("testenv-sentinel-")?;
        let master = RedisServer::start_in(dir.path(), "redis-0", &[], password).await?;
        let replica_of = [
            "--replicaof".to_string(),
            "127.0.0.1".into(),
            master.port.to_string(),
        ];
        let mut servers = vec![master];
        for i in 1..=2 {
            servers.push(
                RedisServer::start_in(dir.path(), &format!("redis-{i}"), &replica_of, password)
                    .await?,
            );
        }
        let master_port = servers[0].port;
        wait_replicas_online(master_port, password, 2).await?;

        let sentinel_bin = Tools::new().redis_sentinel()?;
        let mut sentinels = Vec::new();
        for i in 0..3 {
            let port = free_port();
            let conf = dir.path().join(format!("sentinel-{i}.conf"));
            // Sentinel rewrites its config file as it learns, so each needs its own writable copy.
            let mut text = format!(
                "port {port}\nbind 127.0.0.1\nprotected-mode no\ndaemonize no\ndir {dir}\n\
                 sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} 2\n\
                 sentinel down-after-milliseconds {MASTER_NAME} 1000\n\
                 sentinel failover-timeout {MASTER_NAME} 10000\n\
                 sentinel parallel-syncs {MASTER_NAME} 1\n",
                dir = dir.path().display()
            );
            if let Some(pw) = password {
                text.push_str(&format!("sentinel auth-pass {MASTER_NAME} {pw}\n"));
            }
            std::fs::write(&conf, text).context(|| format!("writing {}", conf.display()))?;
            let mut cmd = Command::new(&sentinel_bin);
            cmd.arg(&conf).current_dir(dir.path());
            let name = format!("sentinel-{i}");
            let mut service = Service::spawn(&name, cmd, &dir.path().join(format!("{name}.log")))?;
            wait_ready(&mut service, START_TIMEOUT, || ping(port, None)).await?;
            sentinels.push(Sentinel {
                _service: service,
                port,
            });
        }
        let group = Self {
            sentinels,
            servers,
            password: password.map(str::to_string),
            dir,
        };
        group.wait_converged().await?;
        Ok(group)
    }

    pub fn master_name(&self) -> &str {
        MASTER_NAME
    }

    /// The data nodes' password, when started with one.
    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    /// `redis://127.0.0.1:PORT` of each sentinel.
    pub fn sentinel_urls(&self) -> Vec<String> {
        self.sentinels
            .iter()
            .map(|s| format!("redis://127.0.0.1:{}/", s.port))
            .collect()
    }

    pub fn sentinel_ports(&self) -> Vec<u16> {
        self.sentinels.iter().map(|s| s.port).collect()
    }

    pub fn server_ports(&self) -> Vec<u16> {
        self.servers.iter().map(|s| s.port).collect()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The master's port as each sentinel reports it (`None` for a sentinel that did not answer).
    pub async fn masters_reported(&self) -> Vec<Option<u16>> {
        let mut out = Vec::new();
        for s in &self.sentinels {
            out.push(sentinel_master(s.port).await.ok());
        }
        out
    }

    /// The master's port, when a majority of sentinels agree on it.
    pub async fn current_master(&self) -> Option<u16> {
        let reported = self.masters_reported().await;
        let quorum = self.sentinels.len() / 2 + 1;
        reported
            .iter()
            .flatten()
            .find(|p| reported.iter().filter(|q| q.as_ref() == Some(p)).count() >= quorum)
            .copied()
    }

    /// SIGKILLs the current master's process and returns its port.
    pub async fn kill_master(&mut self) -> Result<u16> {
        let port = self
            .current_master()
            .await
            .ok_or_else(|| Error::Other("the sentinels agree on no master".into()))?;
        let server = self
            .servers
            .iter_mut()
            .find(|s| s.port == port)
            .ok_or_else(|| Error::Other(format!("no server of this group listens on {port}")))?;
        server.service.kill_hard();
        Ok(port)
    }

    /// Waits until a majority of sentinels name a master other than `old`, and that server
    /// says it is a master. Returns the new master's port.
    pub async fn wait_for_failover(&self, old: u16, timeout: Duration) -> Result<u16> {
        let start = Instant::now();
        loop {
            if let Some(port) = self.current_master().await
                && port != old
                && role(port, self.password())
                    .await
                    .is_ok_and(|r| r == "master")
            {
                return Ok(port);
            }
            if start.elapsed() > timeout {
                return Err(Error::Other(format!(
                    "no failover away from port {old} within {timeout:?}; sentinels report {:?}",
                    self.masters_reported().await
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Every sentinel sees the master, both replicas and the two other sentinels.
    async fn wait_converged(&self) -> Result<()> {
        let start = Instant::now();
        loop {
            let mut ok = true;
            let mut last = String::new();
            for s in &self.sentinels {
                match sentinel_view(s.port).await {
                    Ok((replicas, sentinels)) if replicas >= 2 && sentinels >= 2 => {}
                    Ok(view) => {
                        ok = false;
                        last = format!(
                            "sentinel on {} sees (replicas, sentinels) = {view:?}",
                            s.port
                        );
                    }
                    Err(e) => {
                        ok = false;
                        last = e.to_string();
                    }
                }
            }
            if ok {
                return Ok(());
            }
            if start.elapsed() > START_TIMEOUT {
                return Err(Error::Other(format!(
                    "sentinel group did not converge: {last}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// A connection to a server on loopback; `password` for a data node that requires one (the
/// password goes into the connection info, not a URL).
async fn connect(port: u16, password: Option<&str>) -> Result<redis::aio::MultiplexedConnection> {
    use redis::IntoConnectionInfo;
    let mut info = format!("redis://127.0.0.1:{port}/").into_connection_info()?;
    if let Some(pw) = password {
        let settings = info.redis_settings().clone().set_password(pw);
        info = info.set_redis_settings(settings);
    }
    let client = redis::Client::open(info)?;
    Ok(client.get_multiplexed_async_connection().await?)
}

async fn sentinel_master(port: u16) -> Result<u16> {
    let mut conn = connect(port, None).await?;
    let addr: Vec<String> = redis::cmd("SENTINEL")
        .arg("get-master-addr-by-name")
        .arg(MASTER_NAME)
        .query_async(&mut conn)
        .await?;
    addr.get(1)
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| Error::Other(format!("sentinel on {port} answered {addr:?}")))
}

async fn sentinel_view(port: u16) -> Result<(usize, usize)> {
    let mut conn = connect(port, None).await?;
    let replicas: Vec<redis::Value> = redis::cmd("SENTINEL")
        .arg("replicas")
        .arg(MASTER_NAME)
        .query_async(&mut conn)
        .await?;
    let sentinels: Vec<redis::Value> = redis::cmd("SENTINEL")
        .arg("sentinels")
        .arg(MASTER_NAME)
        .query_async(&mut conn)
        .await?;
    Ok((replicas.len(), sentinels.len()))
}

/// `master` or `slave`, from ROLE.
pub(crate) async fn role(port: u16, password: Option<&str>) -> Result<String> {
    let mut conn = connect(port, password).await?;
    let role: Vec<redis::Value> = redis::cmd("ROLE").query_async(&mut conn).await?;
    match role.first() {
        Some(redis::Value::BulkString(b)) => Ok(String::from_utf8_lossy(b).into_owned()),
        Some(redis::Value::SimpleString(s)) => Ok(s.clone()),
        other => Err(Error::Other(format!("unexpected ROLE reply {other:?}"))),
    }
}

async fn wait_replicas_online(master_port: u16, password: Option<&str>, want: usize) -> Result<()> {
    let start = Instant::now();
    loop {
        let mut conn = connect(master_port, password).await?;
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query_async(&mut conn)
            .await
            .unwrap_or_default();
        let online = info
            .lines()
            .filter(|l| l.starts_with("slave") && l.contains("state=online"))
            .count();
        if online >= want {
            return Ok(());
        }
        if start.elapsed() > START_TIMEOUT {
            return Err(Error::Other(format!(
                "replicas did not come online on master {master_port}:\n{info}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn tempdir(prefix: &str) -> Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .context(|| "creating a temp dir".into())
}
