//! Cloud Storage V4 signed URLs (`GOOG4-RSA-SHA256`), built the way Google specifies them.
//!
//! Signing is split in two so each half can be tested and swapped on its own:
//! - [`SignedUrlRequest::prepare`] is pure: it validates the request and produces the canonical
//!   request, the string to sign and the unsigned URL ([`canonical`]).
//! - a [`Signer`] turns the string to sign into an RSA-SHA256 signature, either with a
//!   service-account key held in memory ([`ServiceAccountKeySigner`]) or remotely through the IAM
//!   Credentials `signBlob` API for keyless deployments ([`IamSignBlobSigner`]).
//!
//! [`sign_url`] puts the two together. The output is byte-for-byte what Google's Python client
//! (`google-cloud-storage`) produces for the same input; api-server's differential test checks
//! that on a matrix of cases.

pub mod canonical;
mod error;
mod iam;
mod key_file;
mod request;
mod signer;
mod token;

pub use canonical::PreparedUrl;
pub use error::SignedUrlError;
pub use iam::{DEFAULT_IAM_CREDENTIALS_ENDPOINT, IamSignBlobSigner};
pub use key_file::{KeyFileError, ServiceAccountKeySigner};
pub use request::{
    DEFAULT_HOST, MAX_EXPIRY_SECS, Method, Scheme, SignedUrlRequest, UnknownMethod, UrlStyle,
};
pub use signer::{BoxError, SignFuture, Signer, SigningError};
pub use token::{
    DEFAULT_METADATA_ENDPOINT, MetadataServerToken, MetadataTokenError, StaticToken, TokenFuture,
    TokenSource,
};

/// Signs `request` with `signer` and returns the complete URL.
pub async fn sign_url(
    signer: &(impl Signer + ?Sized),
    request: &SignedUrlRequest,
) -> Result<String, SignedUrlError> {
    let prepared = request.prepare(signer.client_email())?;
    let signature = signer.sign(prepared.string_to_sign().as_bytes()).await?;
    Ok(prepared.finish(&signature))
}
