//! Tokens of the Firebase Auth emulator: `alg: none`, no signature, production-shaped claims.
//! Accepted only when `FIREBASE_AUTH_EMULATOR_HOST` is configured (as the Admin SDK does), and
//! then every claim rule still applies; only the signature is not checked.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};

use super::AuthError;

/// The payload of `token`, without checking any signature (also the payload step of
/// [`super::verify::verify_rs256`], once the signature is checked).
pub fn unverified_claims(token: &str) -> Result<Map<String, Value>, AuthError> {
    let mut parts = token.split('.');
    let (Some(_header), Some(payload), Some(_sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthError::Malformed(
            "expected three dot-separated parts".into(),
        ));
    };
    let bytes = URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|e| AuthError::Malformed(format!("payload is not base64url: {e}")))?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(AuthError::Malformed("payload is not a JSON object".into())),
        Err(e) => Err(AuthError::Malformed(format!("payload is not JSON: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_payload_of_an_unsigned_token() {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#);
        let payload = URL_SAFE_NO_PAD.encode(br#"{"sub":"u1"}"#);
        let claims = unverified_claims(&format!("{header}.{payload}.")).expect("claims");
        assert_eq!(claims.get("sub"), Some(&Value::from("u1")));
        assert!(matches!(
            unverified_claims("a.b"),
            Err(AuthError::Malformed(_))
        ));
        assert!(matches!(
            unverified_claims(&format!("{header}.!!.")),
            Err(AuthError::Malformed(_))
        ));
    }
}
