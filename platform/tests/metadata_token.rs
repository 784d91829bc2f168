//! The metadata-server token source against a local stand-in: it sends the header the real
//! server insists on, caches tokens until shortly before they expire, and reports refusals.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use platform::storage::signed_url::{MetadataServerToken, TokenSource};

#[derive(Clone)]
struct Fake {
    calls: Arc<AtomicU32>,
    expires_in: u64,
    status: StatusCode,
}

async fn token(
    State(fake): State<Fake>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, (StatusCode, String)> {
    let n = fake.calls.fetch_add(1, Ordering::SeqCst) + 1;
    if headers.get("metadata-flavor").and_then(|v| v.to_str().ok()) != Some("Google") {
        return Err((StatusCode::FORBIDDEN, "missing Metadata-Flavor".to_owned()));
    }
    if fake.status != StatusCode::OK {
        return Err((fake.status, "no service account for this pod".to_owned()));
    }
    Ok(Json(serde_json::json!({
        "access_token": format!("token-{n}"),
        "expires_in": fake.expires_in,
        "token_type": "Bearer",
    })))
}

async fn serve(fake: Fake) -> String {
    let app = axum::Router::new()
        .route(
            "/computeMetadata/v1/instance/service-accounts/default/token",
            get(token),
        )
        .with_state(fake);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

fn fake(expires_in: u64, status: StatusCode) -> Fake {
    Fake {
        calls: Arc::new(AtomicU32::new(0)),
        expires_in,
        status,
    }
}

#[tokio::test]
async fn caches_a_fresh_token() {
    let fake = fake(3599, StatusCode::OK);
    let source = MetadataServerToken::new(reqwest::Client::new(), &serve(fake.clone()).await);
    assert_eq!(source.access_token().await.expect("token"), "token-1");
    assert_eq!(source.access_token().await.expect("token"), "token-1");
    assert_eq!(fake.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn refetches_a_token_inside_the_refresh_margin() {
    // 30 s left is inside the 60 s margin, so it is never served from the cache.
    let fake = fake(30, StatusCode::OK);
    let source = MetadataServerToken::new(reqwest::Client::new(), &serve(fake.clone()).await);
    assert_eq!(source.access_token().await.expect("token"), "token-1");
    assert_eq!(source.access_token().await.expect("token"), "token-2");
    assert_eq!(fake.calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn refusal_is_reported_with_status_and_body() {
    let fake = fake(3599, StatusCode::NOT_FOUND);
    let source = MetadataServerToken::new(reqwest::Client::new(), &serve(fake).await);
    let err = source
        .access_token()
        .await
        .expect_err("refused")
        .to_string();
    assert!(
        err.contains("404") && err.contains("no service account"),
        "{err}"
    );
}
