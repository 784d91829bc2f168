//! A child process that is stopped when its guard is dropped.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use crate::error::IoContext;
use crate::{Error, Result};

/// A running service process, in its own process group, logging to a file.
#[derive(Debug)]
pub struct Service {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Service {
    /// Starts `command` with stdout and stderr appended to `log`.
    pub fn spawn(name: impl Into<String>, mut command: Command, log: &Path) -> Result<Self> {
        let name = name.into();
        let out = File::options()
            .create(true)
            .append(true)
            .open(log)
            .context(|| format!("opening {}", log.display()))?;
        let err = out
            .try_clone()
            .context(|| format!("opening {}", log.display()))?;
        let child = command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            // Own process group: stopping it reaches launcher scripts' children too.
            .process_group(0)
            .spawn()
            .map_err(|source| Error::Spawn {
                what: format!("{name} ({})", command.get_program().to_string_lossy()),
                source,
            })?;
        Ok(Self {
            name,
            child,
            log: log.to_path_buf(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Fails if the process has already exited, with the end of its log.
    pub fn check_running(&mut self) -> Result<()> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(Error::Exited {
                what: self.name.clone(),
                status: status.to_string(),
                log: self.log.clone(),
                tail: self.log_tail(30),
            }),
            Err(e) => Err(Error::Io {
                context: format!("waiting for {}", self.name),
                source: e,
            }),
        }
    }

    /// The last `lines` lines of the log, for error messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// An error saying the service did not become ready, with why and its log.
    pub fn not_ready(&mut self, waited: Duration, last: impl Into<String>) -> Error {
        if let Err(exited) = self.check_running() {
            return exited;
        }
        Error::NotReady {
            what: self.name.clone(),
            seconds: waited.as_secs(),
            last: last.into(),
            log: self.log.clone(),
            tail: self.log_tail(30),
        }
    }

    /// SIGKILL, the way a crash or an OOM kill looks to the rest of the system.
    pub fn kill_hard(&mut self) {
        self.signal(Signal::SIGKILL);
        let _ = self.child.wait();
    }

    /// SIGTERM, then SIGKILL if it has not exited within `grace`.
    pub fn stop(&mut self, grace: Duration) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            self.signal(Signal::SIGKILL); // leftovers in the group
            return;
        }
        self.signal(Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.signal(Signal::SIGKILL);
        let _ = self.child.wait();
    }

    fn signal(&self, signal: Signal) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = killpg(Pid::from_raw(pid), signal);
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
    }
}

/// Polls `probe` until it returns `Ok`, the service exits, or `timeout` passes.
pub(crate) async fn wait_ready<F, Fut, T>(
    service: &mut Service,
    timeout: Duration,
    mut probe: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::result::Result<T, String>>,
{
    let start = Instant::now();
    loop {
        service.check_running()?;
        let last = match probe().await {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        if start.elapsed() > timeout {
            return Err(service.not_ready(timeout, last));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs a command to completion; a non-zero exit is an error carrying its stderr.
pub(crate) fn run(command: &mut Command) -> Result<std::process::Output> {
    let shown = format!(
        "{} {}",
        command.get_program().to_string_lossy(),
        command
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let output = command.output().map_err(|source| Error::Spawn {
        what: shown.clone(),
        source,
    })?;
    if output.status.success() {
        Ok(output)
    } else {
        Err(Error::Command {
            command: shown,
            status: output.status.to_string(),
            stderr: format!(
                "{}{}",
                String::from_utf8_lossy(&output.stderr),
                String::from_utf8_lossy(&output.stdout)
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_service_that_exits_early_reports_its_log() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo 'bad flag --frobnicate'; exit 3"]);
        let mut service =
            Service::spawn("failing", cmd, &dir.path().join("failing.log")).expect("spawn");
        let err = wait_ready(&mut service, Duration::from_secs(10), || async {
            Err::<(), _>("not yet".to_string())
        })
        .await
        .expect_err("it exits");
        let text = err.to_string();
        assert!(
            text.contains("failing exited before it was ready"),
            "{text}"
        );
        assert!(text.contains("bad flag --frobnicate"), "{text}");
    }

    #[test]
    fn a_missing_program_is_a_spawn_error_naming_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let err = Service::spawn(
            "ghost",
            Command::new("/nonexistent/ghost-binary"),
            &dir.path().join("ghost.log"),
        )
        .expect_err("no such program")
        .to_string();
        assert!(
            err.contains("ghost (/nonexistent/ghost-binary) failed to start"),
            "{err}"
        );
    }

    #[test]
    fn dropping_a_service_stops_its_whole_process_group() {
        let dir = tempfile::tempdir().expect("temp dir");
        let pidfile = dir.path().join("child.pid");
        let mut cmd = Command::new("sh");
        // A launcher that forks a long-lived child, as the emulators' scripts do.
        cmd.arg("-c")
            .arg(format!("sleep 300 & echo $! > {}; wait", pidfile.display()));
        let service = Service::spawn("launcher", cmd, &dir.path().join("l.log")).expect("spawn");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !pidfile.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let child: i32 = std::fs::read_to_string(&pidfile)
            .expect("pid file")
            .trim()
            .parse()
            .expect("pid");
        drop(service);
        let alive = std::path::Path::new(&format!("/proc/{child}")).exists()
            && !std::fs::read_to_string(format!("/proc/{child}/stat"))
                .unwrap_or_default()
                .contains(") Z ");
        assert!(!alive, "the launcher's child {child} outlived the guard");
    }
}
