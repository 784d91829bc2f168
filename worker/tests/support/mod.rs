//! Starting worker processes for tests.
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use platform::queue::{
    ConnectionOptions, Durability, JobRecord, Queue, QueueConfig, QueueName, RedisHandle,
    RedisTarget,
};

pub struct WorkerProcess {
    pub child: Child,
    pub admin_port: u16,
    pub id: String,
    _log: tempfile::NamedTempFile,
}

impl WorkerProcess {
    /// Starts `worker run` against `redis_url` and waits for `/readyz`.
    pub async fn start(
        id: &str,
        redis_url: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let mut w = Self::spawn(id, redis_url, args, env)?;
        w.wait_ready(Duration::from_secs(60)).await?;
        Ok(w)
    }

    /// Starts `worker run` without waiting for it to be ready.
    pub fn spawn(
        id: &str,
        redis_url: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let admin_port = testenv::free_port();
        let log = tempfile::NamedTempFile::new()?;
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_worker"));
        for var in [
            "REDIS_SENTINELS",
            "REDIS_MASTER_NAME",
            "FIRESTORE_EMULATOR_HOST",
            "GOOGLE_CLOUD_PROJECT",
            "WEBHOOK_SIGNING_SECRET",
            "WORKER_QUEUES",
            "STORAGE_BUCKET",
            "STORAGE_EMULATOR_HOST",
            "STORAGE_MAX_UPLOAD_BYTES",
        ] {
            cmd.env_remove(var);
        }
        if redis_url.is_empty() {
            cmd.env_remove("REDIS_URL");
        } else {
            cmd.env("REDIS_URL", redis_url);
        }
        cmd.env("RUST_LOG", "info")
            .args(["run", "--worker-id", id, "--admin-addr", "127.0.0.1"])
            .args(["--admin-port", &admin_port.to_string()])
            .args(args)
            .envs(env.iter().copied())
            .stdout(log.reopen()?)
            .stderr(Stdio::inherit());
        let child = cmd.spawn()?;
        Ok(Self {
            child,
            admin_port,
            id: id.to_string(),
            _log: log,
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.admin_port)
    }

    pub async fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                anyhow::bail!("worker exited early: {status}\n{}", self.log());
            }
            if let Ok(r) = reqwest::get(self.url("/readyz")).await
                && r.status().is_success()
            {
                return Ok(());
            }
            if start.elapsed() > timeout {
                anyhow::bail!("worker not ready after {timeout:?}\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self._log.path()).unwrap_or_default()
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) -> anyhow::Result<()> {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id())?);
        nix::sys::signal::kill(pid, sig)?;
        Ok(())
    }

    /// Waits for the process to exit; kills it after `timeout`.
    pub async fn wait_exit(
        &mut self,
        timeout: Duration,
    ) -> anyhow::Result<std::process::ExitStatus> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if start.elapsed() > timeout {
                let _ = self.child.kill();
                anyhow::bail!("worker did not exit within {timeout:?}\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub async fn queue(redis_url: &str, name: &str) -> anyhow::Result<Queue> {
    let handle =
        RedisHandle::connect(RedisTarget::url(redis_url), ConnectionOptions::default()).await?;
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

/// Polls the job record until `pred` holds.
pub async fn wait_record(
    q: &Queue,
    id: &str,
    timeout: Duration,
    pred: impl Fn(&JobRecord) -> bool,
) -> anyhow::Result<JobRecord> {
    let start = Instant::now();
    loop {
        let rec = q.get(id).await?;
        if let Some(r) = &rec
            && pred(r)
        {
            return Ok(r.clone());
        }
        if start.elapsed() > timeout {
            anyhow::bail!("job {id} never reached the expected state; last {rec:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
