use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what} not found (looked for {path}): {hint}")]
    MissingTool {
        what: &'static str,
        path: PathBuf,
        hint: &'static str,
    },

    #[error("{what} failed to start: {source}")]
    Spawn {
        what: String,
        #[source]
        source: std::io::Error,
    },

    #[error("{what} exited before it was ready ({status}); last lines of {log}:\n{tail}")]
    Exited {
        what: String,
        status: String,
        log: PathBuf,
        tail: String,
    },

    #[error("{what} was not ready after {seconds} s ({last}); last lines of {log}:\n{tail}")]
    NotReady {
        what: String,
        seconds: u64,
        last: String,
        log: PathBuf,
        tail: String,
    },

    #[error("{command} failed ({status}):\n{stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },

    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    #[error("generating certificates: {0}")]
    Certificate(#[from] rcgen::Error),

    #[error("kubernetes client: {0}")]
    Kube(#[from] ::kube::Error),

    #[error("kubeconfig: {0}")]
    Kubeconfig(#[from] ::kube::config::KubeconfigError),

    #[error("redis: {0}")]
    Redis(#[from] ::redis::RedisError),

    #[error("{0}")]
    Other(String),
}

impl Error {
    /// The service exited because another process bound its port between `free_port()` and
    /// the service's own `bind()` (any outgoing connection can take it as its local port):
    /// starting again on a fresh port is the remedy.
    pub fn is_port_taken(&self) -> bool {
        matches!(self, Error::Exited { tail, .. } if tail.contains("Address already in use"))
    }
}

/// Attaches what was being done to an I/O error.
pub(crate) trait IoContext<T> {
    fn context(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn context(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Io {
            context: context(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exited(tail: &str) -> Error {
        Error::Exited {
            what: "firestore-emulator".into(),
            status: "exit status: 1".into(),
            log: PathBuf::from("/tmp/firestore.log"),
            tail: tail.into(),
        }
    }

    #[test]
    fn only_a_lost_port_is_worth_a_fresh_one() {
        assert!(exited("java.net.BindException: Address already in use").is_port_taken());
        assert!(!exited("java.lang.OutOfMemoryError: Java heap space").is_port_taken());
        let not_ready = Error::NotReady {
            what: "firestore-emulator".into(),
            seconds: 90,
            last: "Address already in use".into(),
            log: PathBuf::from("/tmp/firestore.log"),
            tail: "Address already in use".into(),
        };
        assert!(!not_ready.is_port_taken());
    }
}
