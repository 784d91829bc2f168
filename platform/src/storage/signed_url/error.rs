//! Why a signed URL could not be made. Everything except `Signing` is a fault in the request and
//! is detected before any key is touched.

use super::request::MAX_EXPIRY_SECS;
use super::signer::SigningError;

#[derive(Debug, thiserror::Error)]
pub enum SignedUrlError {
    #[error("expiry must be at least 1 second")]
    ExpiryTooShort,
    #[error("expiry of {seconds} s is longer than the V4 maximum of {MAX_EXPIRY_SECS} s (7 days)")]
    ExpiryTooLong { seconds: u64 },
    #[error("invalid bucket name {name:?}: {reason}")]
    InvalidBucketName { name: String, reason: &'static str },
    #[error("invalid object name: {reason}")]
    InvalidObjectName { reason: &'static str },
    #[error("invalid host {host:?}: {reason}")]
    InvalidHost { host: String, reason: &'static str },
    #[error("invalid header {name:?}: {reason}")]
    InvalidHeader { name: String, reason: &'static str },
    #[error("invalid query parameter {name:?}: {reason}")]
    InvalidQueryParameter { name: String, reason: &'static str },
    #[error("signing failed")]
    Signing(#[from] SigningError),
}
