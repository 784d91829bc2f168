//! Documents through the real router against the Firestore emulator and Redis. Callers use
//! emulator-mode tokens (unsigned, as the Auth emulator issues them); signature checks are
//! covered in auth.rs.

mod common;

use anyhow::Context as _;
use api_server::observability::Metrics;
use api_server::redis::Redis;
use api_server::state::AppState;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use common::*;
use serde_json::json;

const PROJECT: &str = "demo-docs";

struct Fixture {
    redis: Option<testenv::RedisServer>,
    redis_url: String,
    firestore: testenv::FirestoreEmulator,
    state: AppState,
}

async fn fixture() -> anyhow::Result<Fixture> {
    fixture_with(&[]).await
}

/// A fixture whose server also gets `extra` flags.
async fn fixture_with(extra: &[&str]) -> anyhow::Result<Fixture> {
    let redis = testenv::RedisServer::start().await?;
    let firestore = testenv::FirestoreEmulator::start().await?;
    let host = firestore.host();
    let args = serve_args(
        &[
            "--project-id",
            PROJECT,
            "--redis-url",
            &redis.url(),
            "--firestore-emulator-host",
            &host,
            "--auth-emulator-host",
            "127.0.0.1:9",
            "--collections",
            "notes,tasks",
            "--redis-timeout-ms",
            "300",
        ]
        .into_iter()
        .chain(extra.iter().copied())
        .collect::<Vec<_>>(),
    )?;
    let metrics = Metrics::new();
    let r = Redis::connect(
        &args.redis.endpoint()?,
        args.redis_timeout(),
        metrics.clone(),
    )
    .await?;
    let db = platform::firestore::connect(PROJECT, "(default)", Some(&host)).await?;
    Ok(Fixture {
        redis_url: redis.url(),
        redis: Some(redis),
        firestore,
        state: AppState::new(&args, r, db, metrics),
    })
}

async fn call(
    state: &AppState,
    method: &str,
    uri: &str,
    uid: &str,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
) -> anyhow::Result<Reply> {
    let mut req = Request::builder().method(method).uri(uri).header(
        "authorization",
        format!("Bearer {}", caller_token(PROJECT, uid)),
    );
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(body.map(Body::from).unwrap_or_else(Body::empty))?;
    reply_of(state, req).await
}

/// `POST /v1/notes` as `uid`: the reply and the new document's id.
async fn create_note(state: &AppState, uid: &str, body: &[u8]) -> anyhow::Result<(Reply, String)> {
    let created = call(state, "POST", "/v1/notes", uid, &[], Some(body.to_vec())).await?;
    let id = created.body["id"].as_str().unwrap_or_default().to_string();
    Ok((created, id))
}

#[tokio::test]
async fn create_read_patch_delete_with_etags() -> anyhow::Result<()> {
    let f = fixture().await?;
    let s = &f.state;
    let (created, id) = create_note(s, "ann", br#"{"title":"a","tags":["x"],"n":1}"#).await?;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert_eq!(
        header_of(&created, header::LOCATION),
        format!("/v1/notes/{id}")
    );
    let etag1 = header_of(&created, header::ETAG).to_string();
    assert!(etag1.starts_with('"'), "{etag1}");
    assert_eq!(created.body["owner"], "ann");

    let read = call(s, "GET", &format!("/v1/notes/{id}"), "ann", &[], None).await?;
    assert_eq!(read.status, StatusCode::OK);
    assert_eq!(read.body["data"], json!({"title":"a","tags":["x"],"n":1}));
    assert_eq!(header_of(&read, header::ETAG), etag1);

    let not_modified = call(
        s,
        "GET",
        &format!("/v1/notes/{id}"),
        "ann",
        &[("if-none-match", &etag1)],
        None,
    )
    .await?;
    assert_eq!(not_modified.status, StatusCode::NOT_MODIFIED);

    // PATCH needs If-Match.
    let no_match = call(
        s,
        "PATCH",
        &format!("/v1/notes/{id}"),
        "ann",
        &[],
        Some(br#"{"n":2}"#.to_vec()),
    )
    .await?;
    assert_problem(&no_match, 428);

    let patched = call(
        s,
        "PATCH",
        &format!("/v1/notes/{id}"),
        "ann",
        &[
            ("if-match", &etag1),
            ("content-type", "application/merge-patch+json"),
        ],
        Some(br#"{"n":2,"title":null,"extra":{"k":"v"}}"#.to_vec()),
    )
    .await?;
    assert_eq!(patched.status, StatusCode::OK, "{}", patched.body);
    assert_eq!(
        patched.body["data"],
        json!({"tags":["x"],"n":2,"extra":{"k":"v"}})
    );
    let etag2 = header_of(&patched, header::ETAG).to_string();
    assert_ne!(etag1, etag2);

    // Write then read: the new version, never the cached old one.
    let reread = call(s, "GET", &format!("/v1/notes/{id}"), "ann", &[], None).await?;
    assert_eq!(reread.body["data"]["n"], 2);
    assert_eq!(header_of(&reread, header::ETAG), etag2);
    // The old ETag no longer matches for If-None-Match.
    let changed = call(
        s,
        "GET",
        &format!("/v1/notes/{id}"),
        "ann",
        &[("if-none-match", &etag1)],
        None,
    )
    .await?;
    assert_eq!(changed.status, StatusCode::OK);

    // A stale If-Match: 412, nothing written.
    let stale = call(
        s,
        "PATCH",
        &format!("/v1/notes/{id}"),
        "ann",
        &[("if-match", &etag1)],
        Some(br#"{"n":3}"#.to_vec()),
    )
    .await?;
    assert_problem(&stale, 412);
    let still = call(s, "GET", &format!("/v1/notes/{id}"), "ann", &[], None).await?;
    assert_eq!(still.body["data"]["n"], 2);

    let deleted = call(
        s,
        "DELETE",
        &format!("/v1/notes/{id}"),
        "ann",
        &[("if-match", &etag2)],
        None,
    )
    .await?;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    let gone = call(s, "GET", &format!("/v1/notes/{id}"), "ann", &[], None).await?;
    assert_problem(&gone, 404);
    Ok(())
}

#[tokio::test]
async fn stale_if_match_is_refused_by_firestore_precondition() -> anyhow::Result<()> {
    // Two writers read the same version; the second commit must fail inside Firestore even
    // though our own pre-check passed for both (the race a read-compare-write would lose).
    let f = fixture().await?;
    let s = &f.state;
    let (_, id) = create_note(s, "ann", br#"{"n":0}"#).await?;
    let store = &s.documents.store;
    let current = store
        .get("notes", &id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("missing"))?;
    let first = store
        .replace(
            "notes",
            &current,
            current.version,
            serde_json::Map::from_iter([("n".to_string(), json!(1))]),
        )
        .await;
    assert!(first.is_ok());
    let second = store
        .replace(
            "notes",
            &current,
            current.version,
            serde_json::Map::from_iter([("n".to_string(), json!(2))]),
        )
        .await;
    assert!(
        matches!(second, Err(api_server::documents::store::StoreError::Stale)),
        "{second:?}"
    );
    Ok(())
}

#[tokio::test]
async fn owners_only_and_admins_read_all() -> anyhow::Result<()> {
    let f = fixture().await?;
    let s = &f.state;
    let (created, id) = create_note(s, "ann", br#"{"secret":true}"#).await?;
    let etag = header_of(&created, header::ETAG).to_string();
    let path = format!("/v1/notes/{id}");
    assert_problem(&call(s, "GET", &path, "bob", &[], None).await?, 404);
    assert_problem(
        &call(
            s,
            "PATCH",
            &path,
            "bob",
            &[("if-match", &etag)],
            Some(br#"{"x":1}"#.to_vec()),
        )
        .await?,
        404,
    );
    assert_problem(&call(s, "DELETE", &path, "bob", &[], None).await?, 404);
    let admin = call(s, "GET", &path, "admin", &[], None).await?;
    assert_eq!(admin.status, StatusCode::OK);
    assert_eq!(admin.body["owner"], "ann");
    // Bob's list does not show Ann's document.
    let list = call(s, "GET", "/v1/notes", "bob", &[], None).await?;
    assert_eq!(list.body["items"], json!([]));
    // And Ann's document is unchanged.
    assert_eq!(
        call(s, "GET", &path, "ann", &[], None).await?.body["data"],
        json!({"secret": true})
    );
    Ok(())
}

#[tokio::test]
async fn bad_input_is_refused_and_nothing_is_written() -> anyhow::Result<()> {
    let f = fixture().await?;
    let s = &f.state;
    let deep = format!("{}1{}", r#"{"a":"#.repeat(25), "}".repeat(25));
    let huge = format!(r#"{{"blob":"{}"}}"#, "x".repeat(1024 * 1024));
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("/v1/notes", b"{not json".to_vec(), 400),
        ("/v1/notes", b"[1,2]".to_vec(), 422),
        ("/v1/notes", deep.into_bytes(), 422),
        ("/v1/notes", huge.into_bytes(), 413),
        ("/v1/notes", br#"{"__name__":"x"}"#.to_vec(), 422),
        ("/v1/notes", br#"{"a":{"":1}}"#.to_vec(), 422),
        ("/v1/users", br#"{"a":1}"#.to_vec(), 404),
    ];
    for (path, body, status) in cases {
        let r = call(s, "POST", path, "ann", &[], Some(body)).await?;
        assert_problem(&r, status);
    }
    let list = call(s, "GET", "/v1/notes", "ann", &[], None).await?;
    assert_eq!(list.body["items"], json!([]), "nothing was written");
    // Unknown routes and methods are problems too.
    assert_problem(&call(s, "GET", "/v2/nothing", "ann", &[], None).await?, 404);
    assert_problem(&call(s, "PUT", "/v1/notes", "ann", &[], None).await?, 405);
    assert_problem(
        &call(s, "GET", "/v1/notes?limit=0", "ann", &[], None).await?,
        400,
    );
    assert_problem(
        &call(s, "GET", "/v1/notes?pageToken=%21%21", "ann", &[], None).await?,
        400,
    );
    Ok(())
}

#[tokio::test]
async fn listing_pages_through_the_callers_documents() -> anyhow::Result<()> {
    let f = fixture().await?;
    let s = &f.state;
    let mut ids = Vec::new();
    for i in 0..5 {
        let r = call(
            s,
            "POST",
            "/v1/tasks",
            "ann",
            &[],
            Some(format!(r#"{{"i":{i}}}"#).into_bytes()),
        )
        .await?;
        ids.push(r.body["id"].as_str().unwrap_or_default().to_string());
        // Another user's documents interleave and must not appear.
        call(s, "POST", "/v1/tasks", "bob", &[], Some(b"{}".to_vec())).await?;
    }
    let mut seen = Vec::new();
    let mut uri = "/v1/tasks?limit=2".to_string();
    let mut pages = 0;
    loop {
        let page = call(s, "GET", &uri, "ann", &[], None).await?;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        pages += 1;
        for item in page.body["items"].as_array().cloned().unwrap_or_default() {
            assert_eq!(item["owner"], "ann");
            seen.push(item["id"].as_str().unwrap_or_default().to_string());
        }
        match page.body["nextPageToken"].as_str() {
            Some(t) => uri = format!("/v1/tasks?limit=2&pageToken={t}"),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(
        seen, ids,
        "all of Ann's documents, in creation order, once each"
    );
    Ok(())
}

#[tokio::test]
async fn a_stampede_on_a_cold_key_reads_firestore_once() -> anyhow::Result<()> {
    let f = fixture().await?;
    let s = &f.state;
    let (_, id) = create_note(s, "ann", br#"{"hot":true}"#).await?;
    // Cold: drop what the create wrote through.
    let client = redis::Client::open(f.redis_url.as_str())?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    redis::cmd("DEL")
        .arg(format!("doc:notes:{id}"))
        .query_async::<()>(&mut conn)
        .await?;
    let before = s.documents.store.reads();

    let path = format!("/v1/notes/{id}");
    let replies =
        futures::future::join_all((0..200).map(|_| call(s, "GET", &path, "ann", &[], None))).await;
    for r in replies {
        let r = r?;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.body["data"]["hot"], true);
    }
    assert_eq!(
        s.documents.store.reads() - before,
        1,
        "one Firestore read for 200 GETs"
    );
    let ttl: i64 = redis::cmd("PTTL")
        .arg(format!("doc:notes:{id}"))
        .query_async(&mut conn)
        .await?;
    // 300 s + up to 10% jitter, less the time since the fill (generous on a loaded machine).
    assert!(
        ttl > 240_000 && ttl <= 330_000,
        "TTL 300 s + up to 10% jitter, got {ttl} ms"
    );

    // Missing ids are cached briefly too.
    let before = s.documents.store.reads();
    for _ in 0..3 {
        assert_problem(
            &call(s, "GET", "/v1/notes/doesnotexist", "ann", &[], None).await?,
            404,
        );
    }
    assert_eq!(
        s.documents.store.reads() - before,
        1,
        "404 is negatively cached"
    );
    let neg_ttl: i64 = redis::cmd("PTTL")
        .arg("doc:notes:doesnotexist")
        .query_async(&mut conn)
        .await?;
    assert!(neg_ttl > 0 && neg_ttl <= 5_000, "{neg_ttl}");
    assert!(s.metrics.cache_count("hit") >= 2);
    Ok(())
}

/// The count of Redis calls named `operation` in the metrics.
fn redis_calls(state: &AppState, operation: &str) -> u64 {
    let needle = format!(
        r#"api_redis_command_duration_seconds_count{{operation="{operation}",outcome="ok"}} "#
    );
    state
        .metrics
        .encode()
        .lines()
        .find_map(|l| l.strip_prefix(needle.as_str()))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_cache_hit_get_is_one_redis_call_and_returns_the_stored_bytes() -> anyhow::Result<()> {
    let f = fixture().await?;
    let s = &f.state;
    let (created, id) = create_note(s, "ann", br#"{"b":[1,{"z":"\u00e9"}],"a":1.5}"#).await?;
    let (admits, gets, hits, reads) = (
        redis_calls(s, "admit"),
        redis_calls(s, "cache_get"),
        s.metrics.cache_count("hit"),
        s.documents.store.reads(),
    );
    let read = call(s, "GET", &format!("/v1/notes/{id}"), "ann", &[], None).await?;
    assert_eq!(read.status, StatusCode::OK, "{}", read.body);
    assert_eq!(
        read.body, created.body,
        "a hit reads what the create returned"
    );
    assert_eq!(header_of(&read, header::CONTENT_TYPE), "application/json");
    assert_eq!(
        header_of(&read, header::ETAG),
        header_of(&created, header::ETAG)
    );
    assert_eq!(redis_calls(s, "admit") - admits, 1);
    assert_eq!(
        redis_calls(s, "cache_get") - gets,
        0,
        "the admission script read the cache entry"
    );
    assert_eq!(s.metrics.cache_count("hit") - hits, 1);
    assert_eq!(s.documents.store.reads() - reads, 0);
    // Someone else's document is still not revealed, from the same prefetched entry.
    assert_problem(
        &call(s, "GET", &format!("/v1/notes/{id}"), "bob", &[], None).await?,
        404,
    );
    Ok(())
}

/// A rolling upgrade: entries the previous release wrote (`<µs>|{"state":...}`) are still
/// served from the cache, and what this release writes is the pre-rendered response.
#[tokio::test]
async fn entries_written_by_the_previous_release_are_still_hits() -> anyhow::Result<()> {
    let f = fixture().await?;
    let s = &f.state;
    let (created, id) = create_note(s, "ann", br#"{"v":1}"#).await?;
    let key = format!("doc:notes:{id}");
    let client = redis::Client::open(f.redis_url.as_str())?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let written: Vec<u8> = redis::cmd("GET").arg(&key).query_async(&mut conn).await?;
    let etag = header_of(&created, header::ETAG).to_string();
    let (micros, entry) = std::str::from_utf8(&written)?
        .split_once('|')
        .ok_or_else(|| anyhow::anyhow!("no version prefix"))?;
    assert!(
        entry.starts_with(&format!("={etag}|3:ann{{")),
        "pre-rendered entry: {entry}"
    );

    // The same version as the previous release stored it, with data Firestore does not have,
    // so a hit is told apart from a Firestore read.
    let (seconds, nanos) = etag
        .trim_matches('"')
        .split_once('.')
        .ok_or_else(|| anyhow::anyhow!("etag {etag}"))?;
    let legacy = serde_json::json!({
        "state": "found",
        "doc": {"id": id, "owner": "ann", "data": {"v": "cached"},
                "version": {"seconds": seconds.parse::<i64>()?, "nanos": nanos.parse::<i32>()?}},
    });
    redis::cmd("SET")
        .arg(&key)
        .arg(format!("{micros}|{legacy}"))
        .query_async::<()>(&mut conn)
        .await?;
    let reads = s.documents.store.reads();
    let read = call(s, "GET", &format!("/v1/notes/{id}"), "ann", &[], None).await?;
    assert_eq!(read.status, StatusCode::OK, "{}", read.body);
    assert_eq!(read.body["data"]["v"], "cached");
    assert_eq!(read.body["owner"], "ann");
    assert_eq!(read.body["collection"], "notes");
    assert_eq!(header_of(&read, header::ETAG), etag);
    assert_eq!(
        s.documents.store.reads() - reads,
        0,
        "served from the cache"
    );
    assert_problem(
        &call(s, "GET", &format!("/v1/notes/{id}"), "bob", &[], None).await?,
        404,
    );
    Ok(())
}

#[tokio::test]
async fn reads_are_served_from_firestore_when_redis_is_down() -> anyhow::Result<()> {
    let mut f = fixture().await?;
    let s = f.state.clone();
    let (created, id) = create_note(&s, "ann", br#"{"v":1}"#).await?;
    let etag = header_of(&created, header::ETAG).to_string();
    drop(f.redis.take()); // stops redis-server
    let read = call(&s, "GET", &format!("/v1/notes/{id}"), "ann", &[], None).await?;
    assert_eq!(read.status, StatusCode::OK, "{}", read.body);
    assert_eq!(read.body["data"]["v"], 1);
    // Writes still commit; the cache could not be told, and reads still see Firestore.
    let patched = call(
        &s,
        "PATCH",
        &format!("/v1/notes/{id}"),
        "ann",
        &[("if-match", &etag)],
        Some(br#"{"v":2}"#.to_vec()),
    )
    .await?;
    assert_eq!(patched.status, StatusCode::OK, "{}", patched.body);
    let read = call(&s, "GET", &format!("/v1/notes/{id}"), "ann", &[], None).await?;
    assert_eq!(read.body["data"]["v"], 2);
    assert!(s.metrics.cache_count("error") >= 2);
    let _ = &f.firestore;
    Ok(())
}

/// Sends a signal to a test service's whole process group (the emulator is a JVM under a
/// wrapper script).
fn signal_group(service: &testenv::Service, signal: &str) -> anyhow::Result<()> {
    let status = std::process::Command::new("kill")
        .args([signal, "--", &format!("-{}", service.pid())])
        .status()?;
    anyhow::ensure!(status.success(), "kill {signal} failed");
    Ok(())
}

#[tokio::test]
async fn a_request_stuck_on_a_frozen_firestore_answers_504_and_the_next_one_is_served()
-> anyhow::Result<()> {
    let mut f = fixture_with(&["--request-timeout-ms", "1000"]).await?;
    // A cold emulator on a busy machine can take longer than the budget to take the first write:
    // that is a 504 too, which a client may retry.
    let mut created = None;
    for _ in 0..10 {
        let reply = call(
            &f.state,
            "POST",
            "/v1/notes",
            "ann",
            &[],
            Some(br#"{"title":"frozen"}"#.to_vec()),
        )
        .await?;
        if reply.status != StatusCode::GATEWAY_TIMEOUT {
            created = Some(reply);
            break;
        }
    }
    let created = created.context("every write took longer than the request budget")?;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let uri = format!(
        "/v1/notes/{}",
        created.body["id"].as_str().unwrap_or_default()
    );

    // An empty cache, so this read needs Firestore, which no longer answers.
    let client = redis::Client::open(f.redis_url.as_str())?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    redis::cmd("FLUSHALL").query_async::<()>(&mut conn).await?;
    signal_group(f.firestore.service(), "-STOP")?;
    // Without the request budget this call would wait for as long as Firestore is frozen.
    let stuck = call(&f.state, "GET", &uri, "ann", &[], None).await;
    signal_group(f.firestore.service(), "-CONT")?;
    let stuck = stuck?;
    assert_problem(&stuck, 504);
    assert!(
        stuck.body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("did not finish in time")),
        "{}",
        stuck.body
    );

    // Nothing was left behind (no stuck single-flight entry, no poisoned cache).
    let mut served = call(&f.state, "GET", &uri, "ann", &[], None).await?;
    for _ in 0..10 {
        if served.status != StatusCode::GATEWAY_TIMEOUT {
            break;
        }
        served = call(&f.state, "GET", &uri, "ann", &[], None).await?;
    }
    assert_eq!(served.status, StatusCode::OK, "{}", served.body);
    assert_eq!(served.body["data"], json!({"title": "frozen"}));
    Ok(())
}

#[tokio::test]
async fn a_limit_above_one_per_microsecond_still_reports_what_remains() -> anyhow::Result<()> {
    // 10^8 per 60 s is finer than the script's 1 µs step: without the clamp its emission
    // interval was 0 and the remaining count came back as i64::MIN (RateLimit: r=0).
    let f = fixture_with(&["--rate-limit", "100000000"]).await?;
    for _ in 0..2 {
        let r = call(&f.state, "GET", "/v1/notes", "ann", &[], None).await?;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        let value = header_of(&r, header::HeaderName::from_static("ratelimit")).to_string();
        let remaining: u64 = value
            .split(';')
            .find_map(|p| p.strip_prefix("r="))
            .and_then(|n| n.parse().ok())
            .unwrap_or_default();
        assert!(
            remaining > 50_000_000 && remaining <= 60_000_000,
            "RateLimit: {value}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn a_panicking_handler_answers_a_500_problem_and_is_counted() -> anyhow::Result<()> {
    use api_server::edge::{EdgeLayer, Gate};
    use tower::ServiceExt as _;
    let f = fixture().await?;
    // A route of our own behind the public routes' edge: admitted as a caller, then it panics.
    let app = axum::Router::new()
        .route(
            "/v1/boom",
            axum::routing::get(|| async {
                if PROJECT.is_empty() {
                    return "unreachable";
                }
                panic!("the handler failed")
            }),
        )
        .layer(EdgeLayer::new(f.state.clone(), Gate::Caller))
        .with_state(f.state.clone());
    let req = || {
        Request::get("/v1/boom")
            .header(
                "authorization",
                format!("Bearer {}", caller_token(PROJECT, "ann")),
            )
            .body(Body::empty())
    };
    for _ in 0..2 {
        let response = app.clone().oneshot(req()?).await?;
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
        let body = axum::body::to_bytes(response.into_body(), 1 << 16).await?;
        let body: serde_json::Value = serde_json::from_slice(&body)?;
        assert_eq!(body["status"], 500, "{body}");
        // The panic message may hold request data: it goes to the log, not to the client.
        assert!(!body.to_string().contains("the handler failed"), "{body}");
    }
    let text = f.state.metrics.encode();
    assert!(
        text.lines().any(
            |l| l.starts_with("http_server_request_duration_seconds_count")
                && l.contains(r#"http_route="/v1/boom""#)
                && l.contains(r#"http_response_status_code="500""#)
                && l.ends_with(" 2")
        ),
        "{text}"
    );
    Ok(())
}

#[tokio::test]
async fn anonymous_routes_are_limited_by_client_ip() -> anyhow::Result<()> {
    let f = fixture_with(&["--rate-limit", "2", "--trust-forwarded-for"]).await?;
    let get = |forwarded_for: &str| {
        Request::get("/openapi.json")
            .header("x-forwarded-for", forwarded_for)
            .body(Body::empty())
    };
    for remaining in ["1", "0"] {
        let served = reply_of(&f.state, get("203.0.113.7")?).await?;
        assert_eq!(served.status, StatusCode::OK);
        assert!(
            header_of(&served, "ratelimit".parse()?).contains(&format!("r={remaining}")),
            "{:?}",
            served.headers
        );
    }
    let limited = reply_of(&f.state, get("203.0.113.7")?).await?;
    assert_problem(&limited, 429);
    assert!(limited.headers.contains_key(header::RETRY_AFTER));
    // Another client has a budget of its own (the first X-Forwarded-For entry is the client).
    let other = reply_of(&f.state, get("198.51.100.2, 203.0.113.7")?).await?;
    assert_eq!(other.status, StatusCode::OK);
    let client = redis::Client::open(f.redis_url.as_str())?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg("ratelimit:ip:*")
        .query_async(&mut conn)
        .await?;
    keys.sort();
    assert_eq!(
        keys,
        ["ratelimit:ip:198.51.100.2", "ratelimit:ip:203.0.113.7"]
    );
    Ok(())
}
