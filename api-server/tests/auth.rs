//! Token verification as the Firebase Admin SDK does it, against tokens signed by keys this
//! test generates and serves from a local stand-in for Google's x509 endpoint. The router runs
//! in process against a real Redis (keys store, token cache, revocations).

mod common;

use std::sync::Arc;

use api_server::observability::Metrics;
use api_server::redis::Redis;
use api_server::state::AppState;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tower::ServiceExt as _;

const PROJECT: &str = "demo-auth";

struct Fixture {
    _redis: testenv::RedisServer,
    firestore: testenv::FirestoreEmulator,
    redis_url: String,
    id_keys: KeyServer,
    session_keys: KeyServer,
    key: TestKey,
    session_key: TestKey,
    state: AppState,
}

async fn fixture(extra: &[&str]) -> anyhow::Result<Fixture> {
    let redis = testenv::RedisServer::start().await?;
    // These tests never read documents, but the server's Firestore client connects at start.
    let firestore = testenv::FirestoreEmulator::start().await?;
    let key = TestKey::generate("key-1")?;
    let session_key = TestKey::generate("session-1")?;
    let id_keys = KeyServer::start(&[&key], 3600).await?;
    let session_keys = KeyServer::start(&[&session_key], 3600).await?;
    let state = state(
        &redis.url(),
        &firestore.host(),
        &id_keys.url(),
        &session_keys.url(),
        extra,
    )
    .await?;
    Ok(Fixture {
        firestore,
        redis_url: redis.url(),
        _redis: redis,
        id_keys,
        session_keys,
        key,
        session_key,
        state,
    })
}

async fn state(
    redis_url: &str,
    firestore: &str,
    id_keys: &str,
    session_keys: &str,
    extra: &[&str],
) -> anyhow::Result<AppState> {
    let mut flags = vec![
        "--project-id",
        PROJECT,
        "--redis-url",
        redis_url,
        "--id-token-keys-url",
        id_keys,
        "--session-cookie-keys-url",
        session_keys,
        "--firestore-emulator-host",
        firestore,
    ];
    flags.extend_from_slice(extra);
    let args = serve_args(&flags)?;
    let metrics = Metrics::new();
    let redis = Redis::connect(
        &args.redis.endpoint()?,
        args.redis_timeout(),
        metrics.clone(),
    )
    .await?;
    let db = platform::firestore::connect(PROJECT, "(default)", Some(firestore)).await?;
    Ok(AppState::new(&args, redis, db, metrics))
}

async fn me(
    state: &AppState,
    auth: Option<(&str, String)>,
) -> anyhow::Result<(StatusCode, Value, axum::http::HeaderMap)> {
    let mut req = Request::get("/v1/me");
    if let Some((name, value)) = auth {
        req = req.header(name, value);
    }
    let response = api_server::routes::public(state.clone())
        .oneshot(req.body(Body::empty())?)
        .await?;
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await?;
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Ok((status, body, headers))
}

fn bearer(token: String) -> Option<(&'static str, String)> {
    Some(("authorization", format!("Bearer {token}")))
}

/// Asserts a 401 problem with the reason and a WWW-Authenticate challenge.
async fn assert_refused(state: &AppState, token: String, reason: &str) -> anyhow::Result<()> {
    let (status, body, headers) = me(state, bearer(token)).await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{reason}: {body}");
    assert_eq!(body["reason"], reason, "{body}");
    assert_eq!(body["status"], 401);
    assert_eq!(
        headers.get(header::CONTENT_TYPE).map(|v| v.as_bytes()),
        Some(&b"application/problem+json"[..])
    );
    let challenge = headers
        .get(header::WWW_AUTHENTICATE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(
        challenge.starts_with("Bearer ") && challenge.contains("invalid_token"),
        "{challenge}"
    );
    Ok(())
}

#[tokio::test]
async fn tokens_are_verified_like_the_admin_sdk() -> anyhow::Result<()> {
    let f = fixture(&[]).await?;
    let s = &f.state;
    let valid = id_claims(PROJECT, "alice");

    // Valid: 200 with the uid and claims.
    let (status, body, _) = me(s, bearer(f.key.sign(&valid)?)).await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["uid"], "alice");
    assert_eq!(body["claims"]["firebase"]["sign_in_provider"], "password");

    let now = now();
    let signed = |c: Value| f.key.sign(&c);
    assert_refused(
        s,
        signed(edit(valid.clone(), |m| {
            m.insert("exp".into(), json!(now - 1));
        }))?,
        "expired",
    )
    .await?;
    assert_refused(
        s,
        signed(edit(valid.clone(), |m| {
            m.insert("iat".into(), json!(now + 120));
        }))?,
        "issued_in_future",
    )
    .await?;
    assert_refused(
        s,
        signed(edit(valid.clone(), |m| {
            m.insert("auth_time".into(), json!(now + 120));
        }))?,
        "auth_time_in_future",
    )
    .await?;
    assert_refused(
        s,
        signed(edit(valid.clone(), |m| {
            m.insert("aud".into(), json!("other-project"));
        }))?,
        "audience",
    )
    .await?;
    assert_refused(
        s,
        signed(edit(valid.clone(), |m| {
            m.insert("iss".into(), json!("https://securetoken.google.com/other"));
        }))?,
        "issuer",
    )
    .await?;
    assert_refused(
        s,
        signed(edit(valid.clone(), |m| {
            m.insert("sub".into(), json!(""));
        }))?,
        "empty_subject",
    )
    .await?;
    assert_refused(
        s,
        signed(edit(valid.clone(), |m| {
            m.insert("sub".into(), json!("x".repeat(129)));
        }))?,
        "subject_too_long",
    )
    .await?;
    // 128 characters is still fine.
    let (status, _, _) = me(
        s,
        bearer(signed(edit(valid.clone(), |m| {
            m.insert("sub".into(), json!("y".repeat(128)));
        }))?),
    )
    .await?;
    assert_eq!(status, StatusCode::OK);

    // alg none: the emulator's format, refused outside emulator mode.
    assert_refused(s, unsigned(&valid), "algorithm").await?;

    // HS256 "signed" with the public certificate: the classic key-confusion attack.
    let mut hs = Header::new(Algorithm::HS256);
    hs.kid = Some(f.key.kid.clone());
    let confused = jsonwebtoken::encode(
        &hs,
        &valid,
        &EncodingKey::from_secret(f.key.cert_pem.as_bytes()),
    )?;
    assert_refused(s, confused, "algorithm").await?;

    // A key the endpoint does not publish.
    let stranger = TestKey::generate("key-unknown")?;
    assert_refused(s, stranger.sign(&valid)?, "unknown_kid").await?;
    // A published kid, but signed by another key.
    let impostor = TestKey {
        kid: f.key.kid.clone(),
        ..TestKey::generate("x")?
    };
    assert_refused(s, impostor.sign(&valid)?, "signature").await?;

    // Tampered payload: change the uid of a validly signed token.
    let token = f.key.sign(&valid)?;
    let parts: Vec<&str> = token.split('.').collect();
    let forged_payload = {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(
            edit(valid.clone(), |m| {
                m.insert("sub".into(), json!("mallory"));
            })
            .to_string(),
        )
    };
    assert_refused(
        s,
        format!("{}.{forged_payload}.{}", parts[0], parts[2]),
        "signature",
    )
    .await?;

    // Garbage and no credentials at all.
    assert_refused(s, "not-a-jwt".into(), "malformed").await?;
    let (status, body, headers) = me(s, None).await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["reason"], "missing");
    assert_eq!(
        headers
            .get(header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok()),
        Some(r#"Bearer realm="api""#)
    );

    // Revoked: a revocation recorded after the token's auth_time (as POST /v1/auth/revoke
    // records it; the endpoint itself is exercised with the Auth emulator in processes.rs).
    let bob = id_claims(PROJECT, "bob");
    let bob_token = f.key.sign(&bob)?;
    assert_eq!(me(s, bearer(bob_token.clone())).await?.0, StatusCode::OK);
    let client = redis::Client::open(f.redis_url.as_str())?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    redis::cmd("SET")
        .arg("auth:revoked:bob")
        .arg(now)
        .query_async::<()>(&mut conn)
        .await?;
    assert_refused(s, bob_token, "revoked").await?;
    // A session that started after the revocation is fine.
    let later = edit(bob, |m| {
        m.insert("auth_time".into(), json!(now + 1));
        m.insert("iat".into(), json!(now + 1));
    });
    let state_with_skew = state(
        &f.redis_url,
        &f.firestore.host(),
        &f.id_keys.url(),
        &f.session_keys.url(),
        &["--clock-skew-seconds", "5"],
    )
    .await?;
    assert_eq!(
        me(&state_with_skew, bearer(f.key.sign(&later)?)).await?.0,
        StatusCode::OK
    );

    // Each refusal was counted by reason.
    assert_eq!(s.metrics.auth_failure_count("expired"), 1);
    assert_eq!(s.metrics.auth_failure_count("algorithm"), 2);
    assert_eq!(s.metrics.auth_failure_count("revoked"), 1);
    Ok(())
}

#[tokio::test]
async fn session_cookies_use_their_own_issuer_and_keys() -> anyhow::Result<()> {
    let f = fixture(&[]).await?;
    let claims = edit(id_claims(PROJECT, "carol"), |m| {
        m.insert(
            "iss".into(),
            json!(format!("https://session.firebase.google.com/{PROJECT}")),
        );
    });
    let cookie = f.session_key.sign(&claims)?;
    let (status, body, _) = me(
        &f.state,
        Some(("cookie", format!("theme=dark; session={cookie}"))),
    )
    .await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["uid"], "carol");
    // The same cookie as a bearer ID token: its key is not an ID-token key.
    assert_refused(&f.state, cookie, "unknown_kid").await?;
    // Session claims signed with an ID-token key: wrong issuer for an ID token.
    assert_refused(&f.state, f.key.sign(&claims)?, "issuer").await?;
    // An ID-token-issuer cookie signed by the ID token key: kid unknown to the session keys.
    let wrong = f.key.sign(&id_claims(PROJECT, "carol"))?;
    let (status, body, _) = me(&f.state, Some(("cookie", format!("session={wrong}")))).await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["reason"], "unknown_kid");
    Ok(())
}

#[tokio::test]
async fn keys_are_fetched_once_for_all_servers_and_outlive_the_endpoint() -> anyhow::Result<()> {
    let f = fixture(&[]).await?;
    // Two more "servers" on the same Redis.
    let others = [
        state(
            &f.redis_url,
            &f.firestore.host(),
            &f.id_keys.url(),
            &f.session_keys.url(),
            &[],
        )
        .await?,
        state(
            &f.redis_url,
            &f.firestore.host(),
            &f.id_keys.url(),
            &f.session_keys.url(),
            &[],
        )
        .await?,
    ];
    let token = f.key.sign(&id_claims(PROJECT, "dave"))?;
    // All three verify concurrently, each for the first time.
    let all: Vec<AppState> = std::iter::once(f.state.clone())
        .chain(others.iter().cloned())
        .collect();
    let results = futures::future::join_all(all.iter().map(|s| me(s, bearer(token.clone())))).await;
    for r in results {
        assert_eq!(r?.0, StatusCode::OK);
    }
    assert_eq!(f.id_keys.hits(), 1, "three servers, one fetch");

    // A repeated token is served from the verified-token cache.
    assert_eq!(f.state.verifier.cached_tokens(), 1);

    // Endpoint down, Redis copy gone (as after its max-age): a new server still verifies with
    // the last good keys, which Redis keeps without expiry.
    f.id_keys
        .down
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let client = redis::Client::open(f.redis_url.as_str())?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("auth:keys:id_token:*")
        .query_async(&mut conn)
        .await?;
    let fresh: Vec<&String> = keys.iter().filter(|k| !k.ends_with(":last")).collect();
    assert_eq!(fresh.len(), 1, "{keys:?}");
    redis::cmd("DEL")
        .arg(fresh[0])
        .query_async::<()>(&mut conn)
        .await?;
    let newcomer = state(
        &f.redis_url,
        &f.firestore.host(),
        &f.id_keys.url(),
        &f.session_keys.url(),
        &[],
    )
    .await?;
    let fresh_token = f.key.sign(&id_claims(PROJECT, "erin"))?;
    let (status, body, _) = me(&newcomer, bearer(fresh_token)).await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        f.id_keys.hits() >= 2,
        "the newcomer tried the endpoint first"
    );
    Ok(())
}

#[tokio::test]
async fn emulator_tokens_are_accepted_only_in_emulator_mode() -> anyhow::Result<()> {
    let f = fixture(&["--auth-emulator-host", "127.0.0.1:9"]).await?;
    let claims = id_claims(PROJECT, "frank");
    let (status, body, _) = me(&f.state, bearer(unsigned(&claims))).await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Claim rules still apply in emulator mode.
    let expired = edit(claims, |m| {
        m.insert("exp".into(), json!(now() - 10));
    });
    assert_refused(&f.state, unsigned(&expired), "expired").await?;
    let _ = Arc::new(());
    Ok(())
}
