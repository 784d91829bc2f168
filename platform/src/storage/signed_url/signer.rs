//! What produces the RSA-SHA256 signature over a string to sign.
//!
//! A trait object rather than a generic so the implementation can be chosen from config at start
//! (`Arc<dyn Signer>` in the server's state). The future is boxed by hand to keep the trait
//! dyn-compatible; its cost is noise next to one RSA signature or one HTTP round trip.

use std::future::Future;
use std::pin::Pin;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub type SignFuture<'a> = Pin<Box<dyn Future<Output = Result<Vec<u8>, SigningError>> + Send + 'a>>;

pub trait Signer: Send + Sync {
    /// The service account whose key makes the signature; it goes into `X-Goog-Credential`.
    fn client_email(&self) -> &str;

    /// RSASSA-PKCS1-v1_5 with SHA-256 over `message`, as raw signature bytes.
    fn sign<'a>(&'a self, message: &'a [u8]) -> SignFuture<'a>;
}

#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    #[error("RSA signing with the service-account key failed")]
    Rsa,
    #[error("could not get an access token for the IAM Credentials API")]
    Token(#[source] BoxError),
    #[error("signBlob request failed")]
    Http(#[source] reqwest::Error),
    #[error("signBlob answered HTTP {status}: {body}")]
    Status { status: u16, body: String },
    #[error("signBlob answer is malformed: {reason}")]
    BadResponse { reason: String },
}
