//! Revocation store: "every token of user U with `auth_time` at or before T is dead".
//!
//! `revoke` records T in Redis (every replica sees it on the next request) and tells Firebase
//! through the Identity Toolkit `accounts:update` call (`validSince`), which kills the user's
//! refresh tokens so no new ID token can be minted from the old session. `check` runs on every
//! authenticated request; a refreshed ID token keeps its original `auth_time`, so comparing
//! `auth_time` (not `iat`) rejects it too.
//!
//! Times are whole seconds, as in tokens. A token whose `auth_time` equals the revocation second
//! is rejected, since it may predate the revocation; a user who signs in again within that same
//! second must retry a second later.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::Duration;

use firestore::gcloud_sdk::google_cloud_auth::credentials::{
    Builder as CredentialsBuilder, CacheableResource, Credentials,
};
use serde_json::json;

use super::AuthError;
use super::verify::unix_now;
use crate::redis::Redis;

/// Session cookies live up to 14 days and carry the original `auth_time`; keep records longer.
const RECORD_TTL_SECONDS: u64 = 15 * 24 * 3600;

#[derive(Debug, thiserror::Error)]
pub enum RevokeError {
    #[error("recording the revocation in Redis failed: {0}")]
    Store(#[from] redis::RedisError),
    #[error("revoking refresh tokens through the Identity Toolkit failed: {0}")]
    IdentityToolkit(String),
}

/// How the server authenticates to the Identity Toolkit.
pub enum AdminCredentials {
    /// The Auth emulator's admin bearer.
    EmulatorOwner,
    /// Application Default Credentials, built on first use (startup must not depend on them).
    Google(tokio::sync::OnceCell<Credentials>),
}

impl AdminCredentials {
    async fn headers(&self) -> Result<http::HeaderMap, String> {
        match self {
            Self::EmulatorOwner => {
                let mut h = http::HeaderMap::new();
                h.insert(
                    http::header::AUTHORIZATION,
                    http::HeaderValue::from_static("Bearer owner"),
                );
                Ok(h)
            }
            Self::Google(cell) => {
                let creds = cell
                    .get_or_try_init(|| async {
                        CredentialsBuilder::default()
                            .with_scopes(["https://www.googleapis.com/auth/cloud-platform"])
                            .build()
                            .map_err(|e| format!("application default credentials: {e}"))
                    })
                    .await?;
                match creds.headers(http::Extensions::new()).await {
                    Ok(CacheableResource::New { data, .. }) => Ok(data),
                    Ok(CacheableResource::NotModified) => {
                        Err("credentials returned no headers".into())
                    }
                    Err(e) => Err(format!("credentials: {e}")),
                }
            }
        }
    }
}

pub struct Revocations {
    redis: Redis,
    /// Revocations this process has seen, enforced even while Redis is unreachable.
    seen: RwLock<HashMap<String, i64>>,
    fail_open: bool,
    http: reqwest::Client,
    identity_toolkit: String,
    project: String,
    credentials: AdminCredentials,
}

/// The Redis key holding `uid`'s revocation time.
pub fn key(uid: &str) -> String {
    format!("auth:revoked:{uid}")
}

impl Revocations {
    pub fn new(
        redis: Redis,
        fail_open: bool,
        http: reqwest::Client,
        identity_toolkit: String,
        project: String,
        credentials: AdminCredentials,
    ) -> Self {
        Self {
            redis,
            seen: RwLock::new(HashMap::new()),
            fail_open,
            http,
            identity_toolkit,
            project,
            credentials,
        }
    }

    fn remember(&self, uid: &str, at: i64) {
        let mut seen = self.seen.write().unwrap_or_else(|p| p.into_inner());
        let entry = seen.entry(uid.to_string()).or_insert(at);
        *entry = (*entry).max(at);
    }

    fn seen(&self, uid: &str) -> Option<i64> {
        let seen = self.seen.read().unwrap_or_else(|p| p.into_inner());
        seen.get(uid).copied()
    }

    /// Rejects a token of `uid` that started its session (`auth_time`) at or before a revocation.
    pub async fn check(&self, uid: &str, auth_time: i64) -> Result<(), AuthError> {
        let key = key(uid);
        let stored: Result<Option<i64>, _> = self
            .redis
            .call("revocation_get", |mut c| async move {
                redis::cmd("GET").arg(&key).query_async(&mut c).await
            })
            .await;
        self.judge(uid, auth_time, stored.as_ref().map(|v| *v))
    }

    /// The decision for a revocation time read from Redis (by [`Self::check`], or by the
    /// request admission script that also rate-limits), or for a failed read.
    pub fn judge(
        &self,
        uid: &str,
        auth_time: i64,
        stored: Result<Option<i64>, &redis::RedisError>,
    ) -> Result<(), AuthError> {
        let revoked_at = match stored {
            Ok(Some(at)) => {
                self.remember(uid, at);
                Some(at)
            }
            Ok(None) => self.seen(uid),
            Err(e) => match self.seen(uid) {
                Some(at) => Some(at),
                None if self.fail_open => {
                    tracing::warn!(error = %e, "revocation check skipped: Redis unavailable");
                    None
                }
                None => return Err(AuthError::RevocationUnavailable(e.to_string())),
            },
        };
        match revoked_at {
            Some(at) if auth_time <= at => Err(AuthError::Revoked),
            _ => Ok(()),
        }
    }

    /// Revokes every current token and refresh token of `uid`; returns the revocation time.
    pub async fn revoke(&self, uid: &str, traceparent: &str) -> Result<i64, RevokeError> {
        let now = unix_now();
        let key = key(uid);
        // Keep the later of two concurrent revocations.
        let script = redis::Script::new(
            "local cur = tonumber(redis.call('GET', KEYS[1]) or '0') \
             local at = math.max(cur, tonumber(ARGV[1])) \
             redis.call('SET', KEYS[1], string.format('%d', at), 'EX', ARGV[2]) return at",
        );
        let at: i64 = self
            .redis
            .call("revocation_set", |mut c| async move {
                script
                    .key(&key)
                    .arg(now)
                    .arg(RECORD_TTL_SECONDS)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        self.remember(uid, at);
        self.revoke_refresh_tokens(uid, now, traceparent).await?;
        tracing::info!(%uid, revoked_at = at, "revoked tokens");
        Ok(at)
    }

    async fn revoke_refresh_tokens(
        &self,
        uid: &str,
        valid_since: i64,
        traceparent: &str,
    ) -> Result<(), RevokeError> {
        let url = format!(
            "{}/v1/projects/{}/accounts:update",
            self.identity_toolkit, self.project
        );
        let headers = self
            .credentials
            .headers()
            .await
            .map_err(RevokeError::IdentityToolkit)?;
        let response = self
            .http
            .post(&url)
            .headers(headers)
            .header("traceparent", traceparent)
            .timeout(Duration::from_secs(10))
            .json(&json!({"localId": uid, "validSince": valid_since.to_string()}))
            .send()
            .await
            .map_err(|e| RevokeError::IdentityToolkit(format!("POST {url}: {e}")))?;
        if !response.status().is_success() {
            let status = response.status();
            let body = response.text().await.unwrap_or_default();
            return Err(RevokeError::IdentityToolkit(format!(
                "POST {url}: {status}: {}",
                body.chars().take(300).collect::<String>()
            )));
        }
        Ok(())
    }
}
