//! Signing without a key file: the IAM Credentials API's `signBlob` signs with a Google-managed
//! key of the service account, authorised by an access token (Workload Identity on GKE).
//!
//! The endpoint is configurable because Google's real one cannot be reached from development and
//! CI machines here; tests run this code against a local server that signs with a known key and
//! then verify the signature with the public key.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};

use super::canonical::encode_path_segment_keep_at;
use super::signer::{SignFuture, Signer, SigningError};
use super::token::TokenSource;

pub const DEFAULT_IAM_CREDENTIALS_ENDPOINT: &str = "https://iamcredentials.googleapis.com";

pub struct IamSignBlobSigner {
    http: reqwest::Client,
    url: String,
    client_email: String,
    tokens: Arc<dyn TokenSource>,
}

impl std::fmt::Debug for IamSignBlobSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IamSignBlobSigner")
            .field("url", &self.url)
            .field("client_email", &self.client_email)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct SignBlobRequest {
    payload: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SignBlobResponse {
    signed_blob: String,
}

impl IamSignBlobSigner {
    /// `endpoint` is the API's base URL, normally [`DEFAULT_IAM_CREDENTIALS_ENDPOINT`].
    pub fn new(
        http: reqwest::Client,
        endpoint: &str,
        client_email: impl Into<String>,
        tokens: Arc<dyn TokenSource>,
    ) -> Self {
        let client_email = client_email.into();
        let url = format!(
            "{}/v1/projects/-/serviceAccounts/{}:signBlob",
            endpoint.trim_end_matches('/'),
            encode_path_segment_keep_at(&client_email)
        );
        IamSignBlobSigner {
            http,
            url,
            client_email,
            tokens,
        }
    }

    /// Transient failures (429, 5xx, connection refused) are retried twice with a short
    /// backoff, as Google's own clients do; timeouts are not, since the caller is waiting.
    async fn sign_blob(&self, message: &[u8]) -> Result<Vec<u8>, SigningError> {
        let token = self
            .tokens
            .access_token()
            .await
            .map_err(SigningError::Token)?;
        let body = SignBlobRequest {
            payload: BASE64.encode(message),
        };
        let mut backoff = Duration::from_millis(100);
        let mut attempt = 1;
        loop {
            match self.attempt(&token, &body).await {
                Err(e) if attempt < ATTEMPTS && is_transient(&e) => {
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    async fn attempt(&self, token: &str, body: &SignBlobRequest) -> Result<Vec<u8>, SigningError> {
        let response = self
            .http
            .post(&self.url)
            .bearer_auth(token)
            // A signature is on the path of a user's request; fail it rather than hang.
            .timeout(Duration::from_secs(10))
            .json(body)
            .send()
            .await
            .map_err(SigningError::Http)?;
        let status = response.status();
        if !status.is_success() {
            // The error body explains permission problems (missing
            // iam.serviceAccounts.signBlob); keep a bounded amount of it.
            let mut body = response.text().await.unwrap_or_default();
            body.truncate(body.floor_char_boundary(1000));
            return Err(SigningError::Status {
                status: status.as_u16(),
                body,
            });
        }
        let answer: SignBlobResponse =
            response
                .json()
                .await
                .map_err(|e| SigningError::BadResponse {
                    reason: e.to_string(),
                })?;
        BASE64
            .decode(answer.signed_blob)
            .map_err(|e| SigningError::BadResponse {
                reason: format!("signedBlob is not base64: {e}"),
            })
    }
}

const ATTEMPTS: u32 = 3;

fn is_transient(error: &SigningError) -> bool {
    match error {
        SigningError::Status { status, .. } => matches!(status, 429 | 500 | 502 | 503 | 504),
        SigningError::Http(e) => e.is_connect(),
        _ => false,
    }
}

impl Signer for IamSignBlobSigner {
    fn client_email(&self) -> &str {
        &self.client_email
    }

    fn sign<'a>(&'a self, message: &'a [u8]) -> SignFuture<'a> {
        Box::pin(self.sign_blob(message))
    }
}
