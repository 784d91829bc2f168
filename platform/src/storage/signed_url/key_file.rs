//! Signing with a service-account JSON key held in memory (`client_email` + PKCS#8 PEM
//! `private_key`), the way local tools and non-GKE deployments sign.
//!
//! The RSA operation runs inline on the caller's task: it costs about 0.3 ms for a 2048-bit key
//! (docs/benchmarks/signing.json), short enough not to justify a blocking-pool hop per
//! signature.

use std::fmt;
use std::path::{Path, PathBuf};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use rustls_pki_types::PrivatePkcs8KeyDer;
use rustls_pki_types::pem::PemObject;

use super::signer::{SignFuture, Signer, SigningError};

#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("cannot read key file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("key file is not a JSON object")]
    NotJson(#[source] serde_json::Error),
    #[error("key file field {field:?} is missing")]
    MissingField { field: &'static str },
    #[error("key file field {field:?} is not a string")]
    NotAString { field: &'static str },
    #[error("key file field \"type\" is {found:?}; a service-account key has \"service_account\"")]
    WrongType { found: String },
    #[error("key file field \"client_email\" is not an email address: {found:?}")]
    BadClientEmail { found: String },
    #[error("key file field \"private_key\" is not a PEM \"PRIVATE KEY\" (PKCS#8) block: {reason}")]
    BadPrivateKeyPem { reason: String },
    #[error("key file field \"private_key\" is not an RSA key of 2048 to 8192 bits: {reason}")]
    BadPrivateKey { reason: String },
}

pub struct ServiceAccountKeySigner {
    client_email: String,
    key: RsaKeyPair,
    rng: SystemRandom,
}

impl fmt::Debug for ServiceAccountKeySigner {
    // Never print key material.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceAccountKeySigner")
            .field("client_email", &self.client_email)
            .finish_non_exhaustive()
    }
}

impl ServiceAccountKeySigner {
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, KeyFileError> {
        let path = path.as_ref();
        let json = std::fs::read_to_string(path).map_err(|source| KeyFileError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_json(&json)
    }

    pub fn from_json(json: &str) -> Result<Self, KeyFileError> {
        let doc: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(json).map_err(KeyFileError::NotJson)?;
        let field = |field: &'static str| -> Result<Option<&str>, KeyFileError> {
            match doc.get(field) {
                None => Ok(None),
                Some(serde_json::Value::String(s)) => Ok(Some(s)),
                Some(_) => Err(KeyFileError::NotAString { field }),
            }
        };
        let required =
            |name: &'static str| field(name)?.ok_or(KeyFileError::MissingField { field: name });

        // An authorized-user or external-account credential file has no key to sign with; say
        // so rather than complain about a missing private_key.
        if let Some(kind) = field("type")?
            && kind != "service_account"
        {
            return Err(KeyFileError::WrongType {
                found: kind.to_owned(),
            });
        }
        let client_email = required("client_email")?;
        if client_email.is_empty()
            || !client_email.contains('@')
            || client_email.chars().any(|c| c.is_whitespace() || c == '/')
        {
            return Err(KeyFileError::BadClientEmail {
                found: client_email.to_owned(),
            });
        }
        let pem = required("private_key")?;
        let der = PrivatePkcs8KeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| {
            KeyFileError::BadPrivateKeyPem {
                reason: e.to_string(),
            }
        })?;
        Self::from_pkcs8_der(client_email, der.secret_pkcs8_der())
    }

    /// For keys that do not come from a file (tests, secrets mounted as raw DER).
    pub fn from_pkcs8_der(client_email: &str, der: &[u8]) -> Result<Self, KeyFileError> {
        let key = RsaKeyPair::from_pkcs8(der).map_err(|e| KeyFileError::BadPrivateKey {
            reason: e.to_string(),
        })?;
        Ok(ServiceAccountKeySigner {
            client_email: client_email.to_owned(),
            key,
            rng: SystemRandom::new(),
        })
    }

    /// The synchronous signature, for callers outside an async context (benchmarks, CLI tools).
    pub fn sign_sync(&self, message: &[u8]) -> Result<Vec<u8>, SigningError> {
        let mut signature = vec![0; self.key.public_modulus_len()];
        self.key
            .sign(&RSA_PKCS1_SHA256, &self.rng, message, &mut signature)
            .map_err(|_| SigningError::Rsa)?;
        Ok(signature)
    }
}

impl Signer for ServiceAccountKeySigner {
    fn client_email(&self) -> &str {
        &self.client_email
    }

    fn sign<'a>(&'a self, message: &'a [u8]) -> SignFuture<'a> {
        let result = self.sign_sync(message);
        Box::pin(std::future::ready(result))
    }
}

#[cfg(test)]
mod tests {
    use aws_lc_rs::encoding::AsDer;
    use aws_lc_rs::rsa::{KeyPair, KeySize};
    use aws_lc_rs::signature::{KeyPair as _, RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};
    use base64::Engine as _;

    use super::*;

    fn pem_of_new_key() -> (String, Vec<u8>) {
        let key = KeyPair::generate(KeySize::Rsa2048).expect("keygen");
        let der = key.as_der().expect("pkcs8");
        let body = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
        let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
        for line in body.as_bytes().chunks(64) {
            pem.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
            pem.push('\n');
        }
        pem.push_str("-----END PRIVATE KEY-----\n");
        (pem, key.public_key().as_ref().to_vec())
    }

    fn key_json(email: serde_json::Value, pem: serde_json::Value) -> String {
        serde_json::json!({
            "type": "service_account",
            "project_id": "demo",
            "client_email": email,
            "private_key": pem,
        })
        .to_string()
    }

    #[test]
    fn signs_verifiably_with_a_pkcs8_key_file() {
        let (pem, public) = pem_of_new_key();
        let signer =
            ServiceAccountKeySigner::from_json(&key_json("sa@demo.iam".into(), pem.into()))
                .expect("valid key file");
        assert_eq!(signer.client_email(), "sa@demo.iam");
        let signature = signer.sign_sync(b"string to sign").expect("sign");
        assert_eq!(signature.len(), 256);
        UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, &public)
            .verify(b"string to sign", &signature)
            .expect("signature verifies with the public key");
        assert!(!format!("{signer:?}").contains("PRIVATE"));
    }

    #[test]
    fn malformed_key_files_name_the_field() {
        let (pem, _) = pem_of_new_key();
        let cases: Vec<(String, &str)> = vec![
            ("not json".into(), "not a JSON object"),
            ("[]".into(), "not a JSON object"),
            (
                serde_json::json!({"private_key": pem}).to_string(),
                "\"client_email\" is missing",
            ),
            (
                serde_json::json!({"client_email": "a@b"}).to_string(),
                "\"private_key\" is missing",
            ),
            (key_json(42.into(), pem.clone().into()), "\"client_email\" is not a string"),
            (key_json("nobody".into(), pem.clone().into()), "\"client_email\" is not an email"),
            (key_json("a@b".into(), "garbage".into()), "\"private_key\" is not a PEM"),
            (
                key_json(
                    "a@b".into(),
                    "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n".into(),
                ),
                "\"private_key\" is not an RSA key",
            ),
            (
                serde_json::json!({"type": "authorized_user", "client_email": "a@b", "private_key": pem})
                    .to_string(),
                "\"type\" is \"authorized_user\"",
            ),
        ];
        for (json, expected) in cases {
            let err = ServiceAccountKeySigner::from_json(&json).expect_err(&json);
            assert!(
                err.to_string().contains(expected),
                "{json}: got {err}, want {expected:?}"
            );
        }
    }

    #[test]
    fn missing_file_is_a_read_error_with_the_path() {
        let err = ServiceAccountKeySigner::from_file("/nonexistent/key.json").expect_err("missing");
        assert!(err.to_string().contains("/nonexistent/key.json"), "{err}");
    }
}
