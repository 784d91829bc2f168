//! Why a credential was refused. The variant decides the HTTP status, the metric label and the
//! `reason` member of the problem body, so a client can tell "expired" from "revoked".

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::problem::Problem;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no credentials: send `Authorization: Bearer <Firebase ID token>` or a session cookie")]
    Missing,
    #[error("the token is not a well-formed JWT: {0}")]
    Malformed(String),
    #[error("algorithm {0:?} is not accepted; Firebase tokens are RS256")]
    Algorithm(String),
    #[error("the token has no `kid` header")]
    MissingKid,
    #[error("`kid` {0:?} is not one of the current signing keys")]
    UnknownKid(String),
    #[error("the signature does not verify")]
    Signature,
    #[error("the token has no valid `{0}` claim")]
    MissingClaim(&'static str),
    #[error("the token expired at {0} (unix seconds)")]
    Expired(i64),
    #[error("the token was issued in the future (iat {0})")]
    IssuedInFuture(i64),
    #[error("auth_time {0} is in the future")]
    AuthTimeInFuture(i64),
    #[error("audience {0:?} is not this project")]
    Audience(String),
    #[error("issuer {0:?} is not {1:?}")]
    Issuer(String, String),
    #[error("`sub` is empty")]
    EmptySubject,
    #[error("`sub` is longer than 128 characters")]
    SubjectTooLong,
    #[error("the token was revoked: the user signed out everywhere after it was issued")]
    Revoked,
    #[error("signing keys are unavailable: {0}")]
    KeysUnavailable(String),
    #[error("revocation status is unavailable: {0}")]
    RevocationUnavailable(String),
}

impl AuthError {
    /// Stable, low-cardinality name: the metric label and the problem's `reason` member.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Malformed(_) => "malformed",
            Self::Algorithm(_) => "algorithm",
            Self::MissingKid => "missing_kid",
            Self::UnknownKid(_) => "unknown_kid",
            Self::Signature => "signature",
            Self::MissingClaim(_) => "missing_claim",
            Self::Expired(_) => "expired",
            Self::IssuedInFuture(_) => "issued_in_future",
            Self::AuthTimeInFuture(_) => "auth_time_in_future",
            Self::Audience(_) => "audience",
            Self::Issuer(..) => "issuer",
            Self::EmptySubject => "empty_subject",
            Self::SubjectTooLong => "subject_too_long",
            Self::Revoked => "revoked",
            Self::KeysUnavailable(_) => "keys_unavailable",
            Self::RevocationUnavailable(_) => "revocation_unavailable",
        }
    }

    /// 503 when we could not decide (our dependency failed), 401 when the credential is bad.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::KeysUnavailable(_) | Self::RevocationUnavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            _ => StatusCode::UNAUTHORIZED,
        }
    }
}

impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        let status = self.status();
        let detail = self.to_string();
        let mut problem = Problem::new(
            status,
            if status == StatusCode::UNAUTHORIZED {
                "Unauthorized"
            } else {
                "Service unavailable"
            },
            detail.clone(),
        )
        .with_member("reason", self.reason());
        if status == StatusCode::UNAUTHORIZED {
            // RFC 6750 §3: no error code when no credentials were sent at all.
            let challenge = match self {
                Self::Missing => r#"Bearer realm="api""#.to_string(),
                _ => format!(
                    r#"Bearer realm="api", error="invalid_token", error_description="{}""#,
                    detail.replace(['"', '\\'], "'")
                ),
            };
            problem = problem.with_header(header::WWW_AUTHENTICATE, &challenge);
        } else {
            problem = problem.with_header(header::RETRY_AFTER, "1");
        }
        problem.into_response()
    }
}
