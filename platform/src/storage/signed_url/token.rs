//! Bearer tokens for the IAM Credentials API.
//!
//! On GKE with Workload Identity (and on any Google VM) the metadata server hands out short-lived
//! tokens for the pod's service account; [`MetadataServerToken`] fetches and caches them.
//! [`StaticToken`] serves a token obtained some other way.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::signer::BoxError;

pub type TokenFuture<'a> = Pin<Box<dyn Future<Output = Result<String, BoxError>> + Send + 'a>>;

pub trait TokenSource: Send + Sync {
    fn access_token(&self) -> TokenFuture<'_>;
}

/// A token obtained elsewhere (tests, or a sidecar that keeps it fresh).
#[derive(Clone)]
pub struct StaticToken(pub String);

impl TokenSource for StaticToken {
    fn access_token(&self) -> TokenFuture<'_> {
        Box::pin(std::future::ready(Ok(self.0.clone())))
    }
}

/// The metadata server's fixed address inside Google Cloud.
pub const DEFAULT_METADATA_ENDPOINT: &str = "http://metadata.google.internal";

/// Tokens are refreshed this long before they expire, so one never lapses mid-request.
const REFRESH_MARGIN: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum MetadataTokenError {
    #[error("metadata server request failed")]
    Http(#[source] reqwest::Error),
    #[error("metadata server answered HTTP {status}: {body}")]
    Status { status: u16, body: String },
    #[error("metadata server token answer is malformed")]
    BadResponse(#[source] reqwest::Error),
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    expires_in: u64,
}

pub struct MetadataServerToken {
    http: reqwest::Client,
    url: String,
    cached: Mutex<Option<(String, Instant)>>,
}

impl std::fmt::Debug for MetadataServerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetadataServerToken")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl MetadataServerToken {
    /// `endpoint` is normally [`DEFAULT_METADATA_ENDPOINT`]; tests point it at a local server.
    pub fn new(http: reqwest::Client, endpoint: &str) -> Self {
        MetadataServerToken {
            http,
            url: format!(
                "{}/computeMetadata/v1/instance/service-accounts/default/token",
                endpoint.trim_end_matches('/')
            ),
            cached: Mutex::new(None),
        }
    }

    fn cached(&self) -> Option<String> {
        // A panic elsewhere cannot leave a half-written Option; the value is still usable.
        let guard = self.cached.lock().unwrap_or_else(PoisonError::into_inner);
        guard
            .as_ref()
            .filter(|(_, refresh_at)| Instant::now() < *refresh_at)
            .map(|(token, _)| token.clone())
    }

    async fn fetch(&self) -> Result<String, MetadataTokenError> {
        if let Some(token) = self.cached() {
            return Ok(token);
        }
        // Concurrent misses may fetch twice; both tokens are valid, so no lock is held across
        // the request.
        let response = self
            .http
            .get(&self.url)
            .header("Metadata-Flavor", "Google")
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .map_err(MetadataTokenError::Http)?;
        let status = response.status();
        if !status.is_success() {
            let mut body = response.text().await.unwrap_or_default();
            body.truncate(body.floor_char_boundary(500));
            return Err(MetadataTokenError::Status {
                status: status.as_u16(),
                body,
            });
        }
        let answer: TokenResponse = response
            .json()
            .await
            .map_err(MetadataTokenError::BadResponse)?;
        let lifetime = Duration::from_secs(answer.expires_in).saturating_sub(REFRESH_MARGIN);
        *self.cached.lock().unwrap_or_else(PoisonError::into_inner) =
            Some((answer.access_token.clone(), Instant::now() + lifetime));
        Ok(answer.access_token)
    }
}

impl TokenSource for MetadataServerToken {
    fn access_token(&self) -> TokenFuture<'_> {
        Box::pin(async move { self.fetch().await.map_err(BoxError::from) })
    }
}
