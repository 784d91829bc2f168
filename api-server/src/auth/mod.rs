//! Firebase Authentication for the API: who is calling, and may they.
//!
//! - [`keys`]: the signing keys (x509 endpoints), cached in process and shared through Redis.
//! - [`verify`]: the Admin SDK's `verifyIdToken` / `verifySessionCookie` rules.
//! - [`token_cache`]: verified tokens by hash, so a repeated token skips RSA.
//! - [`revocation`]: "tokens of this user issued before T are dead", in Redis for every server.
//! - [`emulator`]: unsigned Auth emulator tokens, only when the emulator is configured.
//! - [`middleware`]: the axum layer that turns a request into a [`Caller`] or a 401.

pub mod emulator;
pub mod error;
pub mod keys;
pub mod middleware;
pub mod revocation;
pub mod token_cache;
pub mod verify;

pub use error::AuthError;
pub use middleware::{Caller, require_caller};
pub use verify::{TokenKind, VerifiedToken, Verifier};
