//! Waiting for dependencies at start. The api-server and the worker keep running, not ready,
//! and say what they wait for, instead of exiting (and crash-looping) when Redis or Firestore
//! is not up yet.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

/// A dependency as readiness reports it (`key`) and as logs name it (`name`).
#[derive(Debug, Clone, Copy)]
pub struct Dependency {
    pub key: &'static str,
    pub name: &'static str,
}

pub const REDIS: Dependency = Dependency {
    key: "redis",
    name: "Redis",
};
pub const FIRESTORE: Dependency = Dependency {
    key: "firestore",
    name: "Firestore",
};

/// The dependencies still unreachable, each with its last error.
#[derive(Debug, Default)]
pub struct Waiting(Mutex<BTreeMap<&'static str, String>>);

impl Waiting {
    /// Waiting for each of `dependencies`, none tried yet.
    pub fn new(dependencies: &[Dependency]) -> Self {
        let waiting = Self::default();
        for d in dependencies {
            waiting.set(*d, Some("connecting".into()));
        }
        waiting
    }

    /// Records that `dependency` is unreachable (`Some(why)`) or connected (`None`).
    pub fn set(&self, dependency: Dependency, why: Option<String>) {
        // A poisoned lock only means a panic elsewhere while holding it; the map is whole.
        let mut waiting = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match why {
            Some(why) => waiting.insert(dependency.key, why),
            None => waiting.remove(dependency.key),
        };
    }

    /// `starting: redis: <why>; firestore: <why>`, or `None` once nothing is awaited.
    pub fn describe(&self) -> Option<String> {
        let waiting = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if waiting.is_empty() {
            return None;
        }
        let reasons: Vec<String> = waiting.iter().map(|(d, e)| format!("{d}: {e}")).collect();
        Some(format!("starting: {}", reasons.join("; ")))
    }
}

/// Calls `connect` until it succeeds, backing off from 200 ms to 5 s; every failure is logged
/// and recorded in `waiting`, and success clears it.
pub async fn connect_with_retry<T, E, F, Fut>(
    dependency: Dependency,
    waiting: &Waiting,
    mut connect: F,
) -> T
where
    E: Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut pause = Duration::from_millis(200);
    loop {
        match connect().await {
            Ok(connected) => {
                waiting.set(dependency, None);
                return connected;
            }
            Err(e) => {
                let why = format!("{e:#}");
                tracing::warn!(error = %why, retry_in_ms = pause.as_millis() as u64,
                    "{} not reachable yet", dependency.name);
                waiting.set(dependency, Some(why));
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_what_is_still_awaited() {
        let waiting = Waiting::new(&[REDIS, FIRESTORE]);
        assert_eq!(
            waiting.describe().as_deref(),
            Some("starting: firestore: connecting; redis: connecting")
        );
        waiting.set(FIRESTORE, Some("refused".into()));
        waiting.set(REDIS, None);
        assert_eq!(
            waiting.describe().as_deref(),
            Some("starting: firestore: refused")
        );
        waiting.set(FIRESTORE, None);
        assert_eq!(waiting.describe(), None);
    }

    #[tokio::test]
    async fn retries_until_connected_and_clears_the_reason() {
        let waiting = Waiting::new(&[REDIS]);
        let mut attempts = 0;
        let value = connect_with_retry(REDIS, &waiting, || {
            attempts += 1;
            let attempt = attempts;
            async move {
                if attempt < 3 {
                    Err(format!("attempt {attempt} refused"))
                } else {
                    Ok(attempt)
                }
            }
        })
        .await;
        assert_eq!(value, 3);
        assert_eq!(waiting.describe(), None);
    }
}
