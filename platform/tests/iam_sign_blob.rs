//! The signBlob signer against a local stand-in for the IAM Credentials API (Google's endpoint is
//! unreachable here). The stand-in signs with a key whose public half the test holds, so the test
//! checks the wire format both ways and that the resulting URL verifies.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::{KeyPair as _, RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use platform::storage::signed_url::{
    IamSignBlobSigner, Method, ServiceAccountKeySigner, SignedUrlError, SignedUrlRequest,
    Signer as _, SigningError, StaticToken, sign_url,
};

const EMAIL: &str = "signer@demo-project.iam.gserviceaccount.com";
const TOKEN: &str = "ya29.test-token";

#[derive(Clone)]
struct Fake {
    key: Arc<ServiceAccountKeySigner>,
    seen: Arc<Mutex<Vec<String>>>,
    refuse: bool,
    /// How many requests still get a 503 before the fake starts signing.
    unavailable: Arc<AtomicU32>,
}

async fn sign_blob(
    State(fake): State<Fake>,
    Path(name): Path<String>,
    headers: HeaderMap,
    Json(body): Json<serde_json::Value>,
) -> Result<Json<serde_json::Value>, (StatusCode, String)> {
    fake.seen
        .lock()
        .map_err(|_| (StatusCode::INTERNAL_SERVER_ERROR, "poisoned".to_owned()))?
        .push(name.clone());
    if fake
        .unavailable
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        return Err((StatusCode::SERVICE_UNAVAILABLE, "try again".to_owned()));
    }
    if fake.refuse {
        return Err((
            StatusCode::FORBIDDEN,
            "Permission 'iam.serviceAccounts.signBlob' denied".to_owned(),
        ));
    }
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if auth != format!("Bearer {TOKEN}") || name != format!("{EMAIL}:signBlob") {
        return Err((StatusCode::UNAUTHORIZED, format!("auth={auth} name={name}")));
    }
    let payload = body["payload"]
        .as_str()
        .and_then(|p| BASE64.decode(p).ok())
        .ok_or((StatusCode::BAD_REQUEST, "payload".to_owned()))?;
    let signature = fake
        .key
        .sign_sync(&payload)
        .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(Json(serde_json::json!({
        "keyId": "0123abcd",
        "signedBlob": BASE64.encode(signature),
    })))
}

async fn serve(fake: Fake) -> String {
    let app = axum::Router::new()
        .route("/v1/projects/-/serviceAccounts/{name}", post(sign_blob))
        .with_state(fake);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

fn new_key() -> (ServiceAccountKeySigner, Vec<u8>) {
    let pair = KeyPair::generate(KeySize::Rsa2048).expect("keygen");
    let der = pair.as_der().expect("pkcs8");
    let signer = ServiceAccountKeySigner::from_pkcs8_der(EMAIL, der.as_ref()).expect("key");
    (signer, pair.public_key().as_ref().to_vec())
}

fn request() -> SignedUrlRequest {
    let at = "2026-11-26T07:00:00Z".parse().expect("timestamp");
    SignedUrlRequest::new(Method::Put, "uploads", Duration::from_secs(600), at)
        .object("users/u1/photo 1.jpg")
        .header("Content-Type", "image/jpeg")
}

#[tokio::test]
async fn sign_blob_signature_verifies_and_equals_local_key_signature() {
    let (key, public) = new_key();
    let key = Arc::new(key);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let base = serve(Fake {
        key: key.clone(),
        seen: seen.clone(),
        refuse: false,
        unavailable: Arc::new(AtomicU32::new(0)),
    })
    .await;
    let signer = IamSignBlobSigner::new(
        reqwest::Client::new(),
        &base,
        EMAIL,
        Arc::new(StaticToken(TOKEN.to_owned())),
    );

    let url = sign_url(&signer, &request()).await.expect("signBlob signs");

    let prepared = request().prepare(EMAIL).expect("valid request");
    let hex_signature = url
        .rsplit_once("&X-Goog-Signature=")
        .map(|(_, sig)| sig)
        .expect("signature parameter");
    let signature: Vec<u8> = (0..hex_signature.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex_signature[i..i + 2], 16).expect("hex"))
        .collect();
    UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, &public)
        .verify(prepared.string_to_sign().as_bytes(), &signature)
        .expect("signature over the string to sign verifies with the public key");

    // PKCS#1 v1.5 is deterministic, so both signers must give the same URL.
    let local = sign_url(key.as_ref(), &request())
        .await
        .expect("local key signs");
    assert_eq!(url, local);
    assert_eq!(signer.client_email(), EMAIL);
    assert_eq!(
        *seen.lock().expect("not poisoned"),
        vec![format!("{EMAIL}:signBlob")]
    );
}

#[tokio::test]
async fn sign_blob_refusal_is_a_typed_error_with_the_reason() {
    let (key, _) = new_key();
    let base = serve(Fake {
        key: Arc::new(key),
        seen: Arc::new(Mutex::new(Vec::new())),
        refuse: true,
        unavailable: Arc::new(AtomicU32::new(0)),
    })
    .await;
    let signer = IamSignBlobSigner::new(
        reqwest::Client::new(),
        &base,
        EMAIL,
        Arc::new(StaticToken(TOKEN.to_owned())),
    );
    let err = sign_url(&signer, &request()).await.expect_err("refused");
    match err {
        SignedUrlError::Signing(SigningError::Status { status, body }) => {
            assert_eq!(status, 403);
            assert!(body.contains("iam.serviceAccounts.signBlob"), "{body}");
        }
        other => panic!("expected a signBlob status error, got {other:?}"),
    }
}

#[tokio::test]
async fn unreachable_endpoint_is_an_http_error() {
    // Bind and drop to get a loopback port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let signer = IamSignBlobSigner::new(
        reqwest::Client::new(),
        &format!("http://127.0.0.1:{port}"),
        EMAIL,
        Arc::new(StaticToken(TOKEN.to_owned())),
    );
    let err = sign_url(&signer, &request())
        .await
        .expect_err("nothing listens");
    assert!(
        matches!(err, SignedUrlError::Signing(SigningError::Http(_))),
        "{err:?}"
    );
}

#[tokio::test]
async fn transient_unavailability_is_retried() {
    let (key, _) = new_key();
    let key = Arc::new(key);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let base = serve(Fake {
        key: key.clone(),
        seen: seen.clone(),
        refuse: false,
        unavailable: Arc::new(AtomicU32::new(2)),
    })
    .await;
    let signer = IamSignBlobSigner::new(
        reqwest::Client::new(),
        &base,
        EMAIL,
        Arc::new(StaticToken(TOKEN.to_owned())),
    );
    let url = sign_url(&signer, &request())
        .await
        .expect("third attempt signs");
    let local = sign_url(key.as_ref(), &request())
        .await
        .expect("local key signs");
    assert_eq!(url, local);
    assert_eq!(seen.lock().expect("not poisoned").len(), 3);
}

#[tokio::test]
async fn persistent_unavailability_gives_up_after_three_attempts() {
    let (key, _) = new_key();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let base = serve(Fake {
        key: Arc::new(key),
        seen: seen.clone(),
        refuse: false,
        unavailable: Arc::new(AtomicU32::new(u32::MAX)),
    })
    .await;
    let signer = IamSignBlobSigner::new(
        reqwest::Client::new(),
        &base,
        EMAIL,
        Arc::new(StaticToken(TOKEN.to_owned())),
    );
    let err = sign_url(&signer, &request()).await.expect_err("always 503");
    assert!(
        matches!(
            err,
            SignedUrlError::Signing(SigningError::Status { status: 503, .. })
        ),
        "{err:?}"
    );
    assert_eq!(seen.lock().expect("not poisoned").len(), 3);
}
