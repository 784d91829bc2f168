//! A small Cloud Storage JSON API client for what the servers do to objects themselves: read an
//! object's metadata (the finalize job) and delete it (the Files API). Bytes never pass through
//! the servers; clients move them with signed URLs.
//!
//! Against an emulator (`STORAGE_EMULATOR_HOST`) requests go over plain HTTP without
//! credentials. In production they carry an OAuth token from Application Default Credentials
//! (the mounted service-account key, or the metadata server under Workload Identity). Google's
//! real endpoint cannot be reached from development and CI machines here, so that path is
//! exercised only in a real deployment.

use std::time::Duration;

use firestore::gcloud_sdk::google_cloud_auth::credentials::{
    AccessTokenCredentials, Builder as CredentialsBuilder,
};
use serde::Deserialize;

use super::signed_url::canonical::encode_query_component;

/// Google's JSON API endpoint.
pub const DEFAULT_JSON_API: &str = "https://storage.googleapis.com";
/// Objects are read and deleted, never listed or re-permissioned.
const SCOPE: &str = "https://www.googleapis.com/auth/devstorage.read_write";
const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    #[error("no such object")]
    NotFound,
    #[error("Cloud Storage request failed: {0}")]
    Http(#[source] reqwest::Error),
    #[error("Cloud Storage answered HTTP {status}: {body}")]
    Status { status: u16, body: String },
    #[error("Cloud Storage answer is malformed: {0}")]
    BadResponse(String),
    #[error("no credentials for Cloud Storage: {0}")]
    Credentials(String),
}

impl ObjectError {
    /// Worth retrying later: network trouble, throttling, a server-side error, or a token
    /// endpoint that did not answer.
    pub fn is_transient(&self) -> bool {
        match self {
            ObjectError::Http(_) | ObjectError::Credentials(_) => true,
            ObjectError::Status { status, .. } => {
                *status >= 500 || *status == 429 || *status == 408
            }
            ObjectError::NotFound | ObjectError::BadResponse(_) => false,
        }
    }
}

/// What the finalize job needs to know about an uploaded object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMetadata {
    pub name: String,
    pub size: u64,
    pub content_type: Option<String>,
    /// Base64 MD5 of the content (absent for composite objects).
    pub md5_hash: Option<String>,
    /// Base64 big-endian CRC32C of the content.
    pub crc32c: Option<String>,
    pub generation: i64,
}

/// The JSON API encodes int64 values as strings.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawObject {
    name: String,
    size: String,
    content_type: Option<String>,
    md5_hash: Option<String>,
    crc32c: Option<String>,
    generation: String,
}

enum Auth {
    /// The emulator verifies nothing.
    None,
    Google(AccessTokenCredentials),
}

pub struct ObjectClient {
    http: reqwest::Client,
    base: String,
    auth: Auth,
}

impl std::fmt::Debug for ObjectClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectClient")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

/// `http://host:port` for an emulator host given with or without a scheme.
pub fn emulator_base(host: &str) -> String {
    let host = host.trim_end_matches('/');
    if host.starts_with("http://") || host.starts_with("https://") {
        host.to_string()
    } else {
        format!("http://{host}")
    }
}

impl ObjectClient {
    /// A client for the emulator at `host` (`host:port` or a URL), without credentials.
    pub fn emulator(host: &str) -> Self {
        Self {
            http: http_client(),
            base: emulator_base(host),
            auth: Auth::None,
        }
    }

    /// A client for Google's endpoint with Application Default Credentials.
    pub fn google() -> Result<Self, ObjectError> {
        let credentials = CredentialsBuilder::default()
            .with_scopes([SCOPE])
            .build_access_token_credentials()
            .map_err(|e| ObjectError::Credentials(e.to_string()))?;
        Ok(Self {
            http: http_client(),
            base: DEFAULT_JSON_API.to_string(),
            auth: Auth::Google(credentials),
        })
    }

    /// The emulator when `emulator_host` is set, else Google.
    pub fn from_config(emulator_host: Option<&str>) -> Result<Self, ObjectError> {
        match emulator_host {
            Some(host) => Ok(Self::emulator(host)),
            None => Self::google(),
        }
    }

    fn object_url(&self, bucket: &str, object: &str) -> String {
        // The object name is one path segment here: `/` is encoded too.
        format!(
            "{}/storage/v1/b/{}/o/{}",
            self.base,
            encode_query_component(bucket),
            encode_query_component(object)
        )
    }

    async fn send(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, ObjectError> {
        let request = match &self.auth {
            Auth::None => request,
            Auth::Google(credentials) => {
                let token = credentials
                    .access_token()
                    .await
                    .map_err(|e| ObjectError::Credentials(e.to_string()))?;
                request.bearer_auth(token.token)
            }
        };
        let response = request.send().await.map_err(ObjectError::Http)?;
        let status = response.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Err(ObjectError::NotFound);
        }
        if !status.is_success() {
            let mut body = response.text().await.unwrap_or_default();
            body.truncate(body.floor_char_boundary(500));
            return Err(ObjectError::Status {
                status: status.as_u16(),
                body,
            });
        }
        Ok(response)
    }

    /// The object's current metadata; [`ObjectError::NotFound`] when there is none.
    pub async fn metadata(
        &self,
        bucket: &str,
        object: &str,
    ) -> Result<ObjectMetadata, ObjectError> {
        let response = self
            .send(self.http.get(self.object_url(bucket, object)))
            .await?;
        let raw: RawObject = response
            .json()
            .await
            .map_err(|e| ObjectError::BadResponse(e.to_string()))?;
        Ok(ObjectMetadata {
            size: raw
                .size
                .parse()
                .map_err(|_| ObjectError::BadResponse(format!("size {:?}", raw.size)))?,
            generation: raw.generation.parse().map_err(|_| {
                ObjectError::BadResponse(format!("generation {:?}", raw.generation))
            })?,
            name: raw.name,
            content_type: raw.content_type,
            md5_hash: raw.md5_hash,
            crc32c: raw.crc32c,
        })
    }

    /// Deletes the object (its live generation); [`ObjectError::NotFound`] when there is none.
    pub async fn delete(&self, bucket: &str, object: &str) -> Result<(), ObjectError> {
        self.send(self.http.delete(self.object_url(bucket, object)))
            .await
            .map(drop)
    }
}

fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(TIMEOUT)
        .connect_timeout(Duration::from_secs(3))
        .build()
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emulator_hosts_with_or_without_a_scheme() {
        assert_eq!(emulator_base("127.0.0.1:4443"), "http://127.0.0.1:4443");
        assert_eq!(emulator_base("http://gcs:4443/"), "http://gcs:4443");
        assert_eq!(emulator_base("https://gcs:4443"), "https://gcs:4443");
    }

    #[test]
    fn object_names_are_one_encoded_path_segment() {
        let c = ObjectClient::emulator("h:1");
        assert_eq!(
            c.object_url("b", "users/u 1/x?.txt"),
            "http://h:1/storage/v1/b/b/o/users%2Fu%201%2Fx%3F.txt"
        );
    }

    #[test]
    fn only_transient_failures_are_retryable() {
        let status = |status| ObjectError::Status {
            status,
            body: String::new(),
        };
        assert!(status(503).is_transient());
        assert!(status(429).is_transient());
        assert!(!status(403).is_transient());
        assert!(!ObjectError::NotFound.is_transient());
    }
}
