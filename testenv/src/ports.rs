use std::collections::HashSet;
use std::net::TcpListener;
use std::sync::{Mutex, OnceLock};

/// A loopback port nobody listens on now and that this process has not handed out before.
///
/// The kernel picks it; remembering what we gave out keeps two services started in the same
/// test process from racing for one port between `free_port()` and their own `bind()`.
pub fn free_port() -> u16 {
    static GIVEN: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    let given = GIVEN.get_or_init(|| Mutex::new(HashSet::new()));
    loop {
        let port = TcpListener::bind(("127.0.0.1", 0))
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or(0);
        if port == 0 {
            continue;
        }
        let mut given = given.lock().unwrap_or_else(|e| e.into_inner());
        if given.insert(port) {
            return port;
        }
    }
}

/// Forwards every connection made to `127.0.0.1:port` to `to`, byte for byte, until dropped:
/// a service "becomes reachable" at an address a process under test already has.
pub struct PortForward(tokio::task::JoinHandle<()>);

impl PortForward {
    pub async fn start(port: u16, to: impl Into<String>) -> std::io::Result<Self> {
        let to = to.into();
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        Ok(Self(tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let to = to.clone();
                tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(&to).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        })))
    }
}

impl Drop for PortForward {
    fn drop(&mut self) {
        self.0.abort();
    }
}
