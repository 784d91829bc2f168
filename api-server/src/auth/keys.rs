//! Token signing keys from an x509 endpoint (`{"kid": "-----BEGIN CERTIFICATE-----..."}`),
//! the format Google serves for ID tokens and session cookies.
//!
//! Three tiers, so N replicas fetch once per key rotation and survive the endpoint being down:
//! 1. in process, until the response's `Cache-Control: max-age`;
//! 2. in Redis under the same expiry, filled by whichever replica wins a short `SET NX` lock
//!    (the others wait briefly for its result instead of fetching too);
//! 3. the last good set (in process, and in Redis without expiry), used when a fetch fails —
//!    Google rotates keys days before signing with new ones, so yesterday's set still verifies.
//!
//! An unknown `kid` does not trigger a fetch: a client could otherwise make us fetch at will.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_lc_rs::signature::{ParsedPublicKey, RSA_PKCS1_2048_8192_SHA256};
use jsonwebtoken::{DecodingKey, DecodingKeyKind};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::AuthError;
use crate::observability::Metrics;
use crate::redis::Redis;

/// Used when the endpoint sends no max-age.
const DEFAULT_MAX_AGE: Duration = Duration::from_secs(300);
/// How long a fallback (last good) set is used before trying the endpoint again.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(30);
const LOCK_TTL_MS: u64 = 10_000;
/// How long a replica that lost the lock waits for the winner's keys before fetching itself.
const WAIT_FOR_WINNER: Duration = Duration::from_secs(3);

/// A parsed key set. Keys are kept parsed for aws-lc (modulus and Montgomery context built
/// once), which makes a verification about as cheap as `openssl speed`; re-parsing the key on
/// each verification (what jsonwebtoken's `decode` does) cost several µs more per token.
pub struct KeySet {
    keys: HashMap<String, ParsedPublicKey>,
}

impl KeySet {
    pub fn get(&self, kid: &str) -> Option<&ParsedPublicKey> {
        self.keys.get(kid)
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// The shared form in Redis: the certificates as served, and when they stop being fresh.
#[derive(Serialize, Deserialize)]
struct Shared {
    fresh_until_unix: u64,
    certs: HashMap<String, String>,
}

struct Local {
    set: Arc<KeySet>,
    certs: HashMap<String, String>,
    fresh_until: Instant,
}

pub struct KeyStore {
    name: &'static str,
    url: String,
    http: reqwest::Client,
    redis: Option<Redis>,
    metrics: Metrics,
    local: RwLock<Option<Local>>,
    refreshing: tokio::sync::Mutex<()>,
    redis_key: String,
}

impl KeyStore {
    /// `name` tells ID-token keys from session-cookie keys in Redis keys and logs.
    pub fn new(
        name: &'static str,
        url: String,
        http: reqwest::Client,
        redis: Option<Redis>,
        metrics: Metrics,
    ) -> Self {
        let digest = Sha256::digest(url.as_bytes());
        let short: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        Self {
            name,
            redis_key: format!("auth:keys:{name}:{short}"),
            url,
            http,
            redis,
            metrics,
            local: RwLock::new(None),
            refreshing: tokio::sync::Mutex::new(()),
        }
    }

    /// The current key set: fresh if possible, else the last good one.
    pub async fn current(&self) -> Result<Arc<KeySet>, AuthError> {
        if let Some(set) = self.fresh_local() {
            return Ok(set);
        }
        let _guard = self.refreshing.lock().await;
        if let Some(set) = self.fresh_local() {
            return Ok(set); // another task refreshed while we waited
        }
        match self.refresh().await {
            Ok(set) => Ok(set),
            Err(e) => self.fallback(e).await,
        }
    }

    fn fresh_local(&self) -> Option<Arc<KeySet>> {
        let local = self.local.read().unwrap_or_else(|p| p.into_inner());
        local
            .as_ref()
            .filter(|l| l.fresh_until > Instant::now())
            .map(|l| l.set.clone())
    }

    fn install(&self, certs: HashMap<String, String>, fresh_for: Duration) -> Arc<KeySet> {
        let set = Arc::new(parse_certs(&certs));
        let mut local = self.local.write().unwrap_or_else(|p| p.into_inner());
        *local = Some(Local {
            set: set.clone(),
            certs,
            fresh_until: Instant::now() + fresh_for,
        });
        set
    }

    async fn refresh(&self) -> Result<Arc<KeySet>, String> {
        if let Some(shared) = self.read_shared(&self.redis_key).await
            && let Some(left) = remaining(shared.fresh_until_unix)
        {
            return Ok(self.install(shared.certs, left));
        }
        if !self.try_lock().await {
            let started = Instant::now();
            while started.elapsed() < WAIT_FOR_WINNER {
                tokio::time::sleep(Duration::from_millis(50)).await;
                if let Some(shared) = self.read_shared(&self.redis_key).await
                    && let Some(left) = remaining(shared.fresh_until_unix)
                {
                    return Ok(self.install(shared.certs, left));
                }
            }
            tracing::warn!(
                keys = self.name,
                "no key set from the lock holder; fetching ourselves"
            );
        }
        let fetched = self.fetch().await;
        self.unlock().await;
        let (certs, max_age) = fetched?;
        self.write_shared(&certs, max_age).await;
        Ok(self.install(certs, max_age))
    }

    async fn fallback(&self, error: String) -> Result<Arc<KeySet>, AuthError> {
        tracing::warn!(keys = self.name, url = %self.url, %error, "key refresh failed; using the last good keys");
        let local_certs = {
            let local = self.local.read().unwrap_or_else(|p| p.into_inner());
            local.as_ref().map(|l| l.certs.clone())
        };
        let certs = match local_certs {
            Some(c) => Some(c),
            None => self
                .read_shared(&format!("{}:last", self.redis_key))
                .await
                .map(|s| s.certs),
        };
        match certs {
            Some(certs) if !certs.is_empty() => Ok(self.install(certs, RETRY_AFTER_FAILURE)),
            _ => Err(AuthError::KeysUnavailable(error)),
        }
    }

    async fn fetch(&self) -> Result<(HashMap<String, String>, Duration), String> {
        let mut request = self.http.get(&self.url).timeout(Duration::from_secs(5));
        if let Some(traceparent) = crate::observability::current_traceparent() {
            request = request.header("traceparent", traceparent);
        }
        let response = request.send().await.and_then(|r| r.error_for_status());
        let response = match response {
            Ok(r) => r,
            Err(e) => {
                self.metrics.key_fetch("error");
                return Err(format!("GET {}: {e}", self.url));
            }
        };
        let max_age = response
            .headers()
            .get(reqwest::header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .and_then(max_age)
            .unwrap_or(DEFAULT_MAX_AGE);
        let certs: HashMap<String, String> = match response.json().await {
            Ok(c) => c,
            Err(e) => {
                self.metrics.key_fetch("error");
                return Err(format!("GET {}: not a kid→certificate map: {e}", self.url));
            }
        };
        if parse_certs(&certs).is_empty() {
            self.metrics.key_fetch("error");
            return Err(format!("GET {}: no usable RSA certificate", self.url));
        }
        self.metrics.key_fetch("ok");
        tracing::info!(
            keys = self.name,
            count = certs.len(),
            max_age_s = max_age.as_secs(),
            "fetched signing keys"
        );
        Ok((certs, max_age))
    }

    async fn read_shared(&self, key: &str) -> Option<Shared> {
        let redis = self.redis.as_ref()?;
        let key = key.to_string();
        let raw: Option<String> = redis
            .call("auth_keys_get", |mut c| async move {
                redis::cmd("GET").arg(&key).query_async(&mut c).await
            })
            .await
            .ok()?;
        serde_json::from_str(&raw?).ok()
    }

    async fn write_shared(&self, certs: &HashMap<String, String>, max_age: Duration) {
        let Some(redis) = &self.redis else { return };
        let shared = Shared {
            fresh_until_unix: unix_now() + max_age.as_secs(),
            certs: certs.clone(),
        };
        let Ok(json) = serde_json::to_string(&shared) else {
            return;
        };
        let key = self.redis_key.clone();
        let ttl_ms = max_age.as_millis().max(1) as u64;
        let result = redis
            .call("auth_keys_set", |mut c| async move {
                redis::pipe()
                    .cmd("SET")
                    .arg(&key)
                    .arg(&json)
                    .arg("PX")
                    .arg(ttl_ms)
                    .ignore()
                    .cmd("SET")
                    .arg(format!("{key}:last"))
                    .arg(&json)
                    .ignore()
                    .query_async::<()>(&mut c)
                    .await
            })
            .await;
        if let Err(e) = result {
            tracing::warn!(keys = self.name, error = %e, "could not share keys through Redis");
        }
    }

    /// True when we hold the fetch lock, or when Redis cannot say (then we just fetch).
    async fn try_lock(&self) -> bool {
        let Some(redis) = &self.redis else {
            return true;
        };
        let key = format!("{}:lock", self.redis_key);
        let got: Result<Option<String>, _> = redis
            .call("auth_keys_lock", |mut c| async move {
                redis::cmd("SET")
                    .arg(&key)
                    .arg(1)
                    .arg("NX")
                    .arg("PX")
                    .arg(LOCK_TTL_MS)
                    .query_async(&mut c)
                    .await
            })
            .await;
        !matches!(got, Ok(None))
    }

    async fn unlock(&self) {
        let Some(redis) = &self.redis else { return };
        let key = format!("{}:lock", self.redis_key);
        let _ = redis
            .call("auth_keys_unlock", |mut c| async move {
                redis::cmd("DEL").arg(&key).query_async::<()>(&mut c).await
            })
            .await;
    }
}

fn parse_certs(certs: &HashMap<String, String>) -> KeySet {
    let keys = certs
        .iter()
        .filter_map(|(kid, pem)| match rsa_key(pem) {
            Ok(key) => Some((kid.clone(), key)),
            Err(e) => {
                tracing::warn!(%kid, error = %e, "skipping a certificate that is not RSA PEM");
                None
            }
        })
        .collect();
    KeySet { keys }
}

/// The RSA public key of a PEM certificate (jsonwebtoken extracts it from the X.509 structure),
/// parsed for RS256 verification with a 2048-8192 bit modulus.
pub fn rsa_key(pem: &str) -> Result<ParsedPublicKey, String> {
    let decoding = DecodingKey::from_rsa_pem(pem.as_bytes()).map_err(|e| e.to_string())?;
    let DecodingKeyKind::SecretOrDer(der) = decoding.kind() else {
        return Err("not a DER public key".into());
    };
    ParsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, der).map_err(|e| e.to_string())
}

/// `max-age=N` of a Cache-Control value.
fn max_age(value: &str) -> Option<Duration> {
    value.split(',').find_map(|d| {
        let (k, v) = d.trim().split_once('=')?;
        (k.eq_ignore_ascii_case("max-age"))
            .then(|| v.trim().parse().ok().map(Duration::from_secs))
            .flatten()
    })
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn remaining(until_unix: u64) -> Option<Duration> {
    let now = unix_now();
    (until_unix > now).then(|| Duration::from_secs(until_unix - now))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_age_is_read_from_cache_control() {
        assert_eq!(
            max_age("public, max-age=19302, must-revalidate, no-transform"),
            Some(Duration::from_secs(19302))
        );
        assert_eq!(max_age("no-cache"), None);
        assert_eq!(max_age("max-age=abc"), None);
    }
}
