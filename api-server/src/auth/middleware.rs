//! The authentication layer: a bearer ID token (or a session cookie) becomes a [`Caller`] in
//! the request extensions; anything else is a 401 problem with `WWW-Authenticate`.

use std::sync::Arc;

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderMap, Method, header};
use axum::response::{IntoResponse, Response};

use super::{AuthError, TokenKind, VerifiedToken, revocation};
use crate::documents::cache::{self, PrefetchedEntry};
use crate::documents::validation;
use crate::ratelimit::{self, Admission, AdmissionKeys};
use crate::state::AppState;

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller(pub Arc<VerifiedToken>);

impl Caller {
    pub fn uid(&self) -> &str {
        &self.0.uid
    }

    pub fn is_admin(&self) -> bool {
        self.0.is_admin()
    }
}

/// `Authorization: Bearer` first, then the session cookie.
fn credential<'a>(headers: &'a HeaderMap, cookie_name: &str) -> Option<(&'a str, TokenKind)> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let value = value.to_str().ok()?;
        let (scheme, token) = value.split_once(' ')?;
        return scheme
            .eq_ignore_ascii_case("bearer")
            .then_some((token.trim(), TokenKind::IdToken));
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(name, _)| *name == cookie_name)
        .map(|(_, value)| (value, TokenKind::SessionCookie))
}

/// Admits an authenticated caller (see [`crate::edge`]): the request runs through `run` with
/// its [`Caller`] in the extensions, or is answered 401, 429 or 503 here.
pub async fn require_caller<F, Fut>(state: &AppState, mut req: Request, run: F) -> Response
where
    F: FnOnce(Request) -> Fut,
    Fut: Future<Output = Response>,
{
    let Some((token, kind)) = credential(req.headers(), &state.session_cookie_name) else {
        state.metrics.auth_failure(AuthError::Missing.reason());
        return AuthError::Missing.into_response();
    };
    let verified = match state.verifier.authenticate(token, kind).await {
        Ok(v) => v,
        Err(e) => return refused(e),
    };
    // Revocation, rate limit and (for a document GET) the cache read in one Redis call; the
    // decision is enforced below, and the GET handler gets the cache entry.
    let keys = AdmissionKeys {
        budget: ratelimit::uid_key(&verified.uid),
        revocation: revocation::key(&verified.uid),
        cache: document_read(&req, state),
    };
    let mut admission = state.rate_limiter.admit(keys, verified.auth_time).await;
    if let Ok(a) = &mut admission
        && let Some((key, entry)) = a.cached.take()
    {
        req.extensions_mut()
            .insert(PrefetchedEntry::new(key, entry));
    }
    let stored = match &admission {
        Ok(a) => Ok(a.revoked_at),
        Err(e) => Err(e),
    };
    let judged = state
        .verifier
        .revocations()
        .judge(&verified.uid, verified.auth_time, stored);
    if let Err(e) = judged {
        state.metrics.auth_failure(e.reason());
        return refused(e);
    }
    let decision = match admission {
        Ok(Admission {
            decision: Some(d), ..
        }) => Ok(d),
        // The script saw a revocation and took no rate-limit decision; `judge` rejects such a
        // token, so this arm is only reached if the two ever disagree: then ask Redis on its
        // own rather than let the request through unmetered.
        Ok(Admission { decision: None, .. }) => {
            Box::pin(state.rate_limiter.check(&ratelimit::uid_key(&verified.uid)))
                .await
                .map_err(|e| e.to_string())
        }
        Err(e) => Err(e.to_string()),
    };
    req.extensions_mut().insert(Caller(verified));
    ratelimit::enforce(state, decision, req, run).await
}

/// The route whose GET reads a document through the cache.
const DOCUMENT_ROUTE: &str = "/v1/{collection}/{id}";

/// The cache key of the document a `GET /v1/{collection}/{id}` reads, when the path names a
/// readable collection and a possible id (else the handler refuses it without reading).
///
/// Taken from the raw path rather than axum's (percent-decoded) path parameters: valid
/// collection names and ids have nothing to decode, so a path with an escape in them only
/// loses the prefetch (the handler decodes, validates and reads as usual).
fn document_read(req: &Request, state: &AppState) -> Option<String> {
    let is_read = req.method() == Method::GET
        && req
            .extensions()
            .get::<MatchedPath>()
            .is_some_and(|p| p.as_str() == DOCUMENT_ROUTE);
    if !is_read {
        return None;
    }
    let (collection, id) = req.uri().path().strip_prefix("/v1/")?.split_once('/')?;
    (validation::collection(&state.documents.collections, collection).is_ok()
        && validation::document_id(id).is_ok())
    .then(|| cache::key(collection, id))
}

fn refused(e: AuthError) -> Response {
    tracing::info!(reason = e.reason(), error = %e, "credential refused");
    e.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn bearer_wins_over_cookie_and_cookie_is_found_by_name() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; session=tok; b=2"),
        );
        assert_eq!(
            credential(&h, "session"),
            Some(("tok", TokenKind::SessionCookie))
        );
        assert_eq!(credential(&h, "other"), None);
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer xyz"),
        );
        assert_eq!(credential(&h, "session"), Some(("xyz", TokenKind::IdToken)));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic xyz"));
        assert_eq!(credential(&h, "session"), None);
    }
}
