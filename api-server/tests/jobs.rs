//! The jobs API through the real router against Redis (the queue) and the Firestore emulator
//! (the server's other dependency). A job is run by an in-process queue consumer (claim and
//! complete), standing in for the worker.

mod common;

use std::time::Duration;

use api_server::observability::Metrics;
use api_server::redis::Redis;
use api_server::state::AppState;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use common::*;
use platform::queue::{Claim, QueueStats};
use serde_json::{Value, json};

const PROJECT: &str = "demo-jobs";
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

struct Fixture {
    _redis: testenv::RedisServer,
    _firestore: testenv::FirestoreEmulator,
    state: AppState,
}

/// A server on a standalone Redis; `durable_replicas` as `--jobs-durable-replicas`.
async fn fixture(durable_replicas: &str) -> anyhow::Result<Fixture> {
    let redis = testenv::RedisServer::start().await?;
    let firestore = testenv::FirestoreEmulator::start().await?;
    let host = firestore.host();
    let args = serve_args(&[
        "--project-id",
        PROJECT,
        "--redis-url",
        &redis.url(),
        "--firestore-emulator-host",
        &host,
        "--auth-emulator-host",
        "127.0.0.1:9",
        "--jobs-queue",
        "api-jobs",
        "--jobs-durable-replicas",
        durable_replicas,
        "--jobs-durable-timeout-ms",
        "200",
    ])?;
    let metrics = Metrics::new();
    let r = Redis::connect(
        &args.redis.endpoint()?,
        args.redis_timeout(),
        metrics.clone(),
    )
    .await?;
    let db = platform::firestore::connect(PROJECT, "(default)", Some(&host)).await?;
    Ok(Fixture {
        _redis: redis,
        _firestore: firestore,
        state: AppState::new(&args, r, db, metrics),
    })
}

async fn call(
    state: &AppState,
    method: &str,
    uri: &str,
    uid: &str,
    body: Option<Value>,
) -> anyhow::Result<Reply> {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header(
            "authorization",
            format!("Bearer {}", caller_token(PROJECT, uid)),
        )
        .header("traceparent", TRACEPARENT)
        .header(header::CONTENT_TYPE, "application/json")
        .body(
            body.map(|b| Body::from(b.to_string()))
                .unwrap_or_else(Body::empty),
        )?;
    reply_of(state, req).await
}

async fn post(state: &AppState, uid: &str, body: Value) -> anyhow::Result<Reply> {
    call(state, "POST", "/v1/jobs", uid, Some(body)).await
}

fn id_of(r: &Reply) -> String {
    r.body["id"].as_str().unwrap_or_default().to_string()
}

async fn stats(state: &AppState) -> anyhow::Result<QueueStats> {
    Ok(state.jobs.queue.stats().await?)
}

#[tokio::test]
async fn accepted_job_is_visible_to_its_owner_and_admins_and_completes() -> anyhow::Result<()> {
    let f = fixture("0").await?;
    let s = &f.state;

    let accepted = post(s, "ann", json!({"type": "sleep", "payload": {"ms": 10}})).await?;
    assert_eq!(accepted.status, StatusCode::ACCEPTED, "{}", accepted.body);
    let id = id_of(&accepted);
    assert!(!id.is_empty());
    assert_eq!(accepted.body["state"], "waiting");
    assert_eq!(
        header_of(&accepted, header::LOCATION),
        format!("/v1/jobs/{id}")
    );
    assert_eq!(stats(s).await?.waiting, 1);

    let read = call(s, "GET", &format!("/v1/jobs/{id}"), "ann", None).await?;
    assert_eq!(read.status, StatusCode::OK, "{}", read.body);
    assert_eq!(read.body["id"], id.as_str());
    assert_eq!(read.body["type"], "sleep");
    assert_eq!(read.body["state"], "waiting");
    assert_eq!(read.body["attempts"], 0);
    assert_eq!(read.body["owner"], "ann");
    assert!(read.body["createdAt"].is_string(), "{}", read.body);
    assert!(read.body["result"].is_null());

    // Not revealed to anyone else; readable by an admin.
    let other = call(s, "GET", &format!("/v1/jobs/{id}"), "bob", None).await?;
    assert_problem(&other, 404);
    let missing = call(s, "GET", "/v1/jobs/0123456789abcdef", "ann", None).await?;
    assert_problem(&missing, 404);
    assert_eq!(other.body["detail"], missing.body["detail"]);
    let admin = call(s, "GET", &format!("/v1/jobs/{id}"), "admin", None).await?;
    assert_eq!(admin.status, StatusCode::OK, "{}", admin.body);
    assert_eq!(admin.body["owner"], "ann");

    // A consumer (the worker's part) claims it: the owner and the request's trace travel along.
    let claimed = match s
        .jobs
        .queue
        .claim("test-worker", 1, Duration::from_secs(30))
        .await?
    {
        Claim::Jobs(mut jobs) => jobs.pop(),
        other => anyhow::bail!("nothing claimed: {other:?}"),
    };
    let Some(job) = claimed else {
        anyhow::bail!("empty claim")
    };
    assert_eq!(job.id, id);
    // The handler's payload is what the client sent; the owner is in the record, not in it.
    assert_eq!(job.payload, json!({"ms": 10}));
    let tp = job.traceparent.clone().unwrap_or_default();
    assert!(
        tp.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
        "the request's trace id: {tp}"
    );
    let active = call(s, "GET", &format!("/v1/jobs/{id}"), "ann", None).await?;
    assert_eq!(active.body["state"], "active");
    assert_eq!(active.body["attempts"], 1);
    assert!(
        s.jobs
            .queue
            .complete(&job, &json!({"slept_ms": 10}))
            .await?
    );
    let done = call(s, "GET", &format!("/v1/jobs/{id}"), "ann", None).await?;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    assert_eq!(done.body["state"], "completed");
    assert_eq!(done.body["attempts"], 1);
    assert_eq!(done.body["result"], json!({"slept_ms": 10}));
    assert!(done.body["finishedAt"].is_string(), "{}", done.body);
    Ok(())
}

#[tokio::test]
async fn idempotency_key_priority_and_delay() -> anyhow::Result<()> {
    let f = fixture("0").await?;
    let s = &f.state;
    let body = json!({"type": "noop", "idempotencyKey": "order-42", "priority": "high"});
    let first = post(s, "ann", body.clone()).await?;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{}", first.body);
    let again = post(s, "ann", body.clone()).await?;
    assert_eq!(again.status, StatusCode::ACCEPTED, "{}", again.body);
    assert_eq!(id_of(&first), id_of(&again));
    assert_eq!(again.body["state"], "waiting");
    assert_eq!(
        header_of(&again, header::LOCATION),
        header_of(&first, header::LOCATION)
    );
    // Keys are per caller: the same key from someone else is a job of their own.
    let bobs = post(s, "bob", body).await?;
    assert_eq!(bobs.status, StatusCode::ACCEPTED, "{}", bobs.body);
    assert_ne!(id_of(&bobs), id_of(&first));
    let st = stats(s).await?;
    assert_eq!(st.waiting, 2);
    assert_eq!(st.waiting_by_priority, [0, 2, 0, 0]);

    let delayed = post(s, "ann", json!({"type": "noop", "delaySeconds": 3600})).await?;
    assert_eq!(delayed.status, StatusCode::ACCEPTED, "{}", delayed.body);
    assert_eq!(delayed.body["state"], "delayed");
    let read = call(
        s,
        "GET",
        &format!("/v1/jobs/{}", id_of(&delayed)),
        "ann",
        None,
    )
    .await?;
    assert_eq!(read.body["state"], "delayed");
    assert!(read.body["runAt"].is_string(), "{}", read.body);
    assert_eq!(stats(s).await?.delayed, 1);
    Ok(())
}

#[tokio::test]
async fn invalid_jobs_are_refused_and_nothing_is_enqueued() -> anyhow::Result<()> {
    let f = fixture("0").await?;
    let s = &f.state;
    for body in [
        json!({"type": "mail.send", "payload": {}}),
        json!({"type": "webhook.deliver", "payload": {}}),
        json!({"type": "webhook.deliver", "payload": {"url": 5}}),
        json!({"type": "webhook.deliver", "payload": {"url": "ftp://example.test/x"}}),
        json!({"type": "webhook.deliver", "payload": {"url": "not a url"}}),
        json!({"type": "sleep", "payload": {"ms": -1}}),
        json!({"type": "sleep", "payload": {"ms": 3_600_001}}),
        json!({"type": "sleep"}),
        json!({"type": "noop", "payload": [1, 2]}),
        json!({"type": "noop", "priority": "urgent"}),
        json!({"type": "noop", "delaySeconds": 999_999_999}),
        json!({"type": "noop", "idempotencyKey": ""}),
    ] {
        let r = post(s, "ann", body.clone()).await?;
        assert_problem(&r, 422);
        assert!(r.headers.get(header::LOCATION).is_none(), "{body}");
    }
    for body in [
        json!({"payload": {}}),
        json!({"type": "noop", "delaySeconds": -5}),
        json!({"type": "noop", "idempotency_key": "typo"}),
        json!("noop"),
    ] {
        let r = post(s, "ann", body.clone()).await?;
        assert_problem(&r, 400);
    }
    assert_eq!(stats(s).await?, QueueStats::default());
    Ok(())
}

#[tokio::test]
async fn durability_that_cannot_be_met_is_a_503_not_an_acceptance() -> anyhow::Result<()> {
    // A standalone Redis has no replica to confirm the write.
    let f = fixture("1").await?;
    let r = post(&f.state, "ann", json!({"type": "noop"})).await?;
    assert_problem(&r, 503);
    assert!(
        r.body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("durable")),
        "{}",
        r.body
    );
    assert!(r.headers.get(header::LOCATION).is_none());
    assert_eq!(header_of(&r, header::RETRY_AFTER), "1");
    let text = f.state.metrics.encode();
    assert!(
        text.contains(r#"queue_jobs_not_durable_total{queue="api-jobs",type="noop"} 1"#),
        "{text}"
    );
    // Written to the master but not accepted: not counted as enqueued.
    assert!(!text.contains("queue_jobs_enqueued_total{"), "{text}");
    Ok(())
}

#[tokio::test]
async fn nothing_in_the_payload_can_claim_a_job_for_someone_else() -> anyhow::Result<()> {
    let f = fixture("0").await?;
    let s = &f.state;
    let sent = json!({"_owner": "bob", "owner": "bob", "uid": "bob", "n": 1});
    let accepted = post(s, "ann", json!({"type": "noop", "payload": sent.clone()})).await?;
    assert_eq!(accepted.status, StatusCode::ACCEPTED, "{}", accepted.body);
    let id = id_of(&accepted);

    let bobs = call(s, "GET", &format!("/v1/jobs/{id}"), "bob", None).await?;
    assert_problem(&bobs, 404);
    let anns = call(s, "GET", &format!("/v1/jobs/{id}"), "ann", None).await?;
    assert_eq!(anns.status, StatusCode::OK, "{}", anns.body);
    assert_eq!(anns.body["owner"], "ann");
    let record = s.jobs.queue.get(&id).await?;
    assert_eq!(
        record.and_then(|r| r.owner).as_deref(),
        Some("ann"),
        "the record names the caller"
    );

    // The handler gets the payload exactly as sent, look-alike members included.
    let Claim::Jobs(mut jobs) = s
        .jobs
        .queue
        .claim("test-worker", 1, Duration::from_secs(30))
        .await?
    else {
        anyhow::bail!("nothing claimed")
    };
    let job = jobs.pop().ok_or_else(|| anyhow::anyhow!("empty claim"))?;
    assert_eq!(job.id, id);
    assert_eq!(job.payload, sent);
    Ok(())
}

#[tokio::test]
async fn a_published_job_is_counted_on_the_admin_metrics() -> anyhow::Result<()> {
    use tower::ServiceExt as _;
    let f = fixture("0").await?;
    let accepted = post(
        &f.state,
        "ann",
        json!({"type": "sleep", "payload": {"ms": 1}}),
    )
    .await?;
    assert_eq!(accepted.status, StatusCode::ACCEPTED, "{}", accepted.body);
    // A repeat of an idempotency key creates nothing and counts nothing.
    let keyed = json!({"type": "noop", "idempotencyKey": "k"});
    for _ in 0..2 {
        let r = post(&f.state, "ann", keyed.clone()).await?;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    }

    let response = api_server::routes::admin(f.state.clone())
        .oneshot(Request::get("/metrics").body(Body::empty())?)
        .await?;
    assert_eq!(response.status(), StatusCode::OK);
    let text = String::from_utf8(
        axum::body::to_bytes(response.into_body(), 4 << 20)
            .await?
            .to_vec(),
    )?;
    for line in [
        r#"queue_jobs_enqueued_total{queue="api-jobs",type="sleep"} 1"#,
        r#"queue_jobs_enqueued_total{queue="api-jobs",type="noop"} 1"#,
    ] {
        assert!(text.contains(line), "{line:?} missing in\n{text}");
    }
    Ok(())
}
