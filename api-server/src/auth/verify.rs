//! The checks of the Firebase Admin SDK's `verifyIdToken` and `verifySessionCookie`:
//! RS256 only; `kid` names a current key; signature; `aud` = project; `iss` =
//! `https://securetoken.google.com/<project>` (ID tokens) or
//! `https://session.firebase.google.com/<project>` (session cookies); `sub` a non-empty string
//! of at most 128 characters; `iat` and `auth_time` not in the future and `exp` in the future,
//! each within the configured skew (at most 60 s); then revocation.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::keys::KeyStore;
use super::revocation::Revocations;
use super::token_cache::{TokenCache, token_hash};
use super::{AuthError, emulator};
use crate::observability::Metrics;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    IdToken,
    SessionCookie,
}

impl TokenKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::IdToken => "id_token",
            Self::SessionCookie => "session_cookie",
        }
    }

    pub fn issuer(self, project: &str) -> String {
        match self {
            Self::IdToken => format!("https://securetoken.google.com/{project}"),
            Self::SessionCookie => format!("https://session.firebase.google.com/{project}"),
        }
    }
}

/// What a verified token says about its bearer.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedToken {
    pub uid: String,
    pub iat: i64,
    pub exp: i64,
    pub auth_time: i64,
    pub kind: TokenKind,
    /// Every claim, custom ones included.
    pub claims: Map<String, Value>,
}

impl VerifiedToken {
    /// The custom claim `admin: true`, set through the Admin SDK.
    pub fn is_admin(&self) -> bool {
        self.claims.get("admin") == Some(&Value::Bool(true))
    }
}

pub struct Verifier {
    project: String,
    skew: i64,
    id_keys: KeyStore,
    session_keys: KeyStore,
    emulator: bool,
    cache: TokenCache,
    revocations: Arc<Revocations>,
    metrics: Metrics,
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    kid: Option<String>,
}

impl Verifier {
    pub fn new(
        project: String,
        skew_seconds: u64,
        id_keys: KeyStore,
        session_keys: KeyStore,
        emulator: bool,
        revocations: Arc<Revocations>,
        metrics: Metrics,
    ) -> Self {
        Self {
            project,
            // The Admin SDK caps the tolerance at 60 s; so does the config parser.
            skew: skew_seconds.min(60) as i64,
            id_keys,
            session_keys,
            emulator,
            cache: TokenCache::default(),
            revocations,
            metrics,
        }
    }

    pub fn project(&self) -> &str {
        &self.project
    }

    pub fn revocations(&self) -> &Revocations {
        &self.revocations
    }

    pub fn cached_tokens(&self) -> usize {
        self.cache.len()
    }

    /// Verifies `token` including revocation, counting a failure by reason.
    pub async fn verify(
        &self,
        token: &str,
        kind: TokenKind,
    ) -> Result<Arc<VerifiedToken>, AuthError> {
        let verified = self.authenticate(token, kind).await?;
        if let Err(e) = self
            .revocations
            .check(&verified.uid, verified.auth_time)
            .await
        {
            self.metrics.auth_failure(e.reason());
            return Err(e);
        }
        Ok(verified)
    }

    /// Signature and claims, not revocation (the request path asks Redis about revocation in
    /// the same call as the rate limit), counting a failure by reason.
    pub async fn authenticate(
        &self,
        token: &str,
        kind: TokenKind,
    ) -> Result<Arc<VerifiedToken>, AuthError> {
        let result = self.verify_signed(token, kind).await;
        if let Err(e) = &result {
            self.metrics.auth_failure(e.reason());
        }
        result
    }

    async fn verify_signed(
        &self,
        token: &str,
        kind: TokenKind,
    ) -> Result<Arc<VerifiedToken>, AuthError> {
        let now = unix_now();
        let hash = token_hash(kind.as_str(), token);
        let verified = match self.cache.get(&hash, now, self.skew) {
            Some(v) => v,
            None => {
                // Boxed: the key fetch makes this future kilobytes large, and every request's
                // future would carry (and move) it, though a repeated token never gets here.
                let claims = Box::pin(self.signed_claims(token, kind)).await?;
                let v = Arc::new(check_claims(claims, kind, &self.project, now, self.skew)?);
                self.cache.insert(hash, v.clone(), now);
                v
            }
        };
        Ok(verified)
    }

    /// The payload, once the header and (outside emulator mode) the signature check out.
    async fn signed_claims(
        &self,
        token: &str,
        kind: TokenKind,
    ) -> Result<Map<String, Value>, AuthError> {
        if self.emulator {
            return emulator::unverified_claims(token);
        }
        let header = header(token)?;
        if header.alg != "RS256" {
            return Err(AuthError::Algorithm(header.alg));
        }
        let kid = header.kid.ok_or(AuthError::MissingKid)?;
        let keys = match kind {
            TokenKind::IdToken => self.id_keys.current().await?,
            TokenKind::SessionCookie => self.session_keys.current().await?,
        };
        let key = keys.get(&kid).ok_or(AuthError::UnknownKid(kid.clone()))?;
        verify_rs256(token, key)
    }
}

/// RSASSA-PKCS1-v1_5 with SHA-256 over `header.payload` (RFC 7515 §5.2), then the payload.
/// The claim rules are ours ([`check_claims`]), so that each failure has its own reason.
pub fn verify_rs256(
    token: &str,
    key: &aws_lc_rs::signature::ParsedPublicKey,
) -> Result<Map<String, Value>, AuthError> {
    let (signing_input, signature) = token
        .rsplit_once('.')
        .ok_or_else(|| AuthError::Malformed("no signature".into()))?;
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|e| AuthError::Malformed(format!("signature is not base64url: {e}")))?;
    key.verify_sig(signing_input.as_bytes(), &signature)
        .map_err(|_| AuthError::Signature)?;
    emulator::unverified_claims(token)
}

fn header(token: &str) -> Result<Header, AuthError> {
    let encoded = token
        .split('.')
        .next()
        .ok_or_else(|| AuthError::Malformed("empty token".into()))?;
    if token.split('.').count() != 3 {
        return Err(AuthError::Malformed(
            "expected three dot-separated parts".into(),
        ));
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(encoded)
        .map_err(|e| AuthError::Malformed(format!("header is not base64url: {e}")))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| AuthError::Malformed(format!("header is not a JOSE header: {e}")))
}

/// The claim rules, on a payload whose signature is already trusted. Pure, for unit tests.
pub fn check_claims(
    claims: Map<String, Value>,
    kind: TokenKind,
    project: &str,
    now: i64,
    skew: i64,
) -> Result<VerifiedToken, AuthError> {
    let int = |name: &'static str| {
        claims
            .get(name)
            .and_then(Value::as_i64)
            .ok_or(AuthError::MissingClaim(name))
    };
    let aud = claims
        .get("aud")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if aud != project {
        return Err(AuthError::Audience(aud.to_string()));
    }
    let want_iss = kind.issuer(project);
    let iss = claims
        .get("iss")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if iss != want_iss {
        return Err(AuthError::Issuer(iss.to_string(), want_iss));
    }
    let sub = match claims.get("sub") {
        Some(Value::String(s)) => s.clone(),
        _ => return Err(AuthError::MissingClaim("sub")),
    };
    if sub.is_empty() {
        return Err(AuthError::EmptySubject);
    }
    if sub.chars().count() > 128 {
        return Err(AuthError::SubjectTooLong);
    }
    let (iat, exp, auth_time) = (int("iat")?, int("exp")?, int("auth_time")?);
    if iat > now + skew {
        return Err(AuthError::IssuedInFuture(iat));
    }
    if auth_time > now + skew {
        return Err(AuthError::AuthTimeInFuture(auth_time));
    }
    if exp + skew <= now {
        return Err(AuthError::Expired(exp));
    }
    Ok(VerifiedToken {
        uid: sub,
        iat,
        exp,
        auth_time,
        kind,
        claims,
    })
}

pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: i64 = 1_800_000_000;

    fn claims(edit: impl FnOnce(&mut Map<String, Value>)) -> Map<String, Value> {
        let mut m = json!({
            "aud": "p", "iss": "https://securetoken.google.com/p", "sub": "u",
            "iat": NOW - 10, "exp": NOW + 3600, "auth_time": NOW - 100,
        })
        .as_object()
        .cloned()
        .unwrap_or_default();
        edit(&mut m);
        m
    }

    fn check(m: Map<String, Value>, skew: i64) -> Result<VerifiedToken, AuthError> {
        check_claims(m, TokenKind::IdToken, "p", NOW, skew)
    }

    #[test]
    fn skew_applies_to_iat_auth_time_and_exp() {
        assert!(check(claims(|_| {}), 0).is_ok());
        let future = claims(|m| {
            m.insert("iat".into(), json!(NOW + 30));
        });
        assert_eq!(
            check(future.clone(), 0),
            Err(AuthError::IssuedInFuture(NOW + 30))
        );
        assert!(check(future, 30).is_ok());
        let expired = claims(|m| {
            m.insert("exp".into(), json!(NOW - 5));
        });
        assert_eq!(check(expired.clone(), 0), Err(AuthError::Expired(NOW - 5)));
        assert!(check(expired, 10).is_ok());
        let auth_future = claims(|m| {
            m.insert("auth_time".into(), json!(NOW + 1));
        });
        assert_eq!(
            check(auth_future, 0),
            Err(AuthError::AuthTimeInFuture(NOW + 1))
        );
    }

    #[test]
    fn session_cookies_need_their_own_issuer() {
        let m = claims(|m| {
            m.insert("iss".into(), json!("https://session.firebase.google.com/p"));
        });
        assert!(check_claims(m.clone(), TokenKind::SessionCookie, "p", NOW, 0).is_ok());
        assert!(matches!(check(m, 0), Err(AuthError::Issuer(..))));
    }

    #[test]
    fn sub_must_be_a_string_of_1_to_128_chars() {
        let with_sub = |v: Value| {
            claims(|m| {
                m.insert("sub".into(), v);
            })
        };
        assert_eq!(check(with_sub(json!("")), 0), Err(AuthError::EmptySubject));
        assert_eq!(
            check(with_sub(json!("x".repeat(129))), 0),
            Err(AuthError::SubjectTooLong)
        );
        assert!(check(with_sub(json!("é".repeat(128))), 0).is_ok());
        assert_eq!(
            check(with_sub(json!(5)), 0),
            Err(AuthError::MissingClaim("sub"))
        );
    }
}
