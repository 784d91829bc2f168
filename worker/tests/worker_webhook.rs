//! `webhook.deliver` end to end: a worker process signs and POSTs to a local receiver that
//! checks the HMAC, retries 5xx and timeouts, dead-letters a 4xx, and records every outcome in
//! the Firestore emulator.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_lc_rs::hmac;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use platform::queue::{Backoff, JobState, NewJob};
use serde_json::json;
use support::{WorkerProcess, queue, wait_record};
use testenv::FirestoreEmulator;

const SECRET: &str = "s3cret";
const PROJECT: &str = "demo-worker";

#[derive(Debug, Clone)]
struct Delivery {
    id: String,
    signature_ok: bool,
    body: serde_json::Value,
}

#[derive(Clone, Default)]
struct Receiver {
    deliveries: Arc<Mutex<HashMap<String, Vec<Delivery>>>>,
}

impl Receiver {
    fn of(&self, route: &str) -> Vec<Delivery> {
        self.deliveries
            .lock()
            .ok()
            .and_then(|d| d.get(route).cloned())
            .unwrap_or_default()
    }
}

/// Checks `t=<t>,v1=<hex>` against our own HMAC of `"<t>.<body>"`.
fn verify(headers: &HeaderMap, body: &[u8]) -> bool {
    let Some(sig) = headers
        .get("webhook-signature")
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let mut t = None;
    let mut v1 = None;
    for part in sig.split(',') {
        match part.split_once('=') {
            Some(("t", x)) => t = Some(x.to_string()),
            Some(("v1", x)) => v1 = Some(x.to_string()),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else {
        return false;
    };
    let tag: Option<Vec<u8>> = (0..v1.len())
        .step_by(2)
        .map(|i| {
            v1.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect();
    let Some(tag) = tag else { return false };
    let mut msg = format!("{t}.").into_bytes();
    msg.extend_from_slice(body);
    let key = hmac::Key::new(hmac::HMAC_SHA256, SECRET.as_bytes());
    hmac::verify(&key, &msg, &tag).is_ok()
}

async fn receive(
    State(r): State<Receiver>,
    Path(route): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let d = Delivery {
        id: headers
            .get("webhook-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string(),
        signature_ok: verify(&headers, &body),
        body: serde_json::from_slice(&body).unwrap_or_default(),
    };
    let n = {
        let Ok(mut all) = r.deliveries.lock() else {
            return StatusCode::INTERNAL_SERVER_ERROR;
        };
        let list = all.entry(route.clone()).or_default();
        list.push(d);
        list.len()
    };
    match (route.as_str(), n) {
        ("flaky", 1) => StatusCode::SERVICE_UNAVAILABLE,
        ("slow", 1) => {
            tokio::time::sleep(Duration::from_secs(5)).await;
            StatusCode::OK
        }
        ("bad", _) => StatusCode::UNPROCESSABLE_ENTITY,
        _ => StatusCode::NO_CONTENT,
    }
}

#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct OutcomeDoc {
    state: String,
    attempts: u32,
    r#type: String,
    last_error: Option<String>,
    result: Option<serde_json::Value>,
    worker: String,
}

#[tokio::test]
async fn webhooks_are_signed_retried_on_5xx_and_timeouts_and_recorded() -> anyhow::Result<()> {
    let (redis, firestore) =
        tokio::join!(testenv::RedisServer::start(), FirestoreEmulator::start());
    let (redis, firestore) = (redis?, firestore?);
    let receiver = Receiver::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let app = Router::new()
        .route("/hook/{route}", post(receive))
        .with_state(receiver.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let host = firestore.host();
    let w = WorkerProcess::start(
        "hooks",
        &redis.url(),
        &[],
        &[
            ("WEBHOOK_SIGNING_SECRET", SECRET),
            // Generous, so a loaded machine never times out a fast delivery (it would be
            // retried and miscounted); the slow route sleeps well past it.
            ("WEBHOOK_TIMEOUT_MS", "1500"),
            ("FIRESTORE_EMULATOR_HOST", &host),
            ("GOOGLE_CLOUD_PROJECT", PROJECT),
        ],
    )
    .await?;
    let q = queue(&redis.url(), "jobs").await?;
    let backoff = Backoff {
        base: Duration::from_millis(200),
        max: Duration::from_secs(1),
    };
    let mut ids = HashMap::new();
    for route in ["ok", "flaky", "slow", "bad"] {
        let job = NewJob::new(
            "webhook.deliver",
            json!({"url": format!("{base}/hook/{route}"), "body": {"event": route}}),
        )
        .with_max_attempts(3)
        .with_backoff(backoff);
        ids.insert(route, q.enqueue(job).await?.id);
    }

    let settled =
        |r: &platform::queue::JobRecord| matches!(r.state, JobState::Completed | JobState::Dead);
    let mut recs = HashMap::new();
    for (route, id) in &ids {
        let rec = wait_record(&q, id, Duration::from_secs(60), settled)
            .await
            .map_err(|e| anyhow::anyhow!("{e}\n{}", w.log()))?;
        recs.insert(*route, rec);
    }
    let state = |r: &str| (recs[r].state, recs[r].attempts);
    assert_eq!(state("ok"), (JobState::Completed, 1));
    assert_eq!(state("flaky"), (JobState::Completed, 2), "5xx retried");
    assert_eq!(state("slow"), (JobState::Completed, 2), "timeout retried");
    assert_eq!(state("bad"), (JobState::Dead, 1), "4xx not retried");
    assert!(
        recs["bad"]
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("422"))
    );
    assert!(
        recs["slow"]
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("delivery failed"))
    );

    for route in ["ok", "flaky", "slow", "bad"] {
        let got = receiver.of(route);
        let want = if matches!(route, "flaky" | "slow") {
            2
        } else {
            1
        };
        assert_eq!(got.len(), want, "{route}: {got:?}");
        for d in got {
            assert!(d.signature_ok, "{route}: bad signature");
            assert_eq!(d.id, ids[route], "the job id identifies retries");
            assert_eq!(d.body, json!({"event": route}));
        }
    }

    // Firestore has the final outcome of each.
    let db = firestore.admin_db(PROJECT).await?;
    for (route, want_state, want_attempts) in [
        ("ok", "completed", 1),
        ("flaky", "completed", 2),
        ("slow", "completed", 2),
        ("bad", "dead", 1),
    ] {
        let mut doc: Option<OutcomeDoc> = None;
        for _ in 0..100 {
            doc = db
                .fluent()
                .select()
                .by_id_in("jobs")
                .obj()
                .one(&ids[route])
                .await?;
            if doc.as_ref().is_some_and(|d| d.state == want_state) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let doc = doc.ok_or_else(|| anyhow::anyhow!("no Firestore record for {route}"))?;
        assert_eq!(
            (doc.state.as_str(), doc.attempts),
            (want_state, want_attempts),
            "{route}"
        );
        assert_eq!(doc.r#type, "webhook.deliver");
        assert_eq!(doc.worker, "hooks");
        if want_state == "completed" {
            assert!(doc.result.is_some(), "{route}");
        } else {
            assert!(doc.last_error.is_some(), "{route}");
        }
    }

    // Metrics by queue and type, and the queue gauges the alerts read.
    let mut text = String::new();
    for _ in 0..100 {
        text = reqwest::get(w.url("/metrics")).await?.text().await?;
        if text.contains(r#"queue_jobs_waiting{queue="jobs"}"#) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for line in [
        r#"queue_jobs_started_total{queue="jobs",type="webhook.deliver"} 6"#,
        r#"queue_jobs_completed_total{queue="jobs",type="webhook.deliver"} 3"#,
        r#"queue_jobs_retried_total{queue="jobs",type="webhook.deliver"} 2"#,
        r#"queue_jobs_failed_total{queue="jobs",type="webhook.deliver"} 3"#,
        r#"queue_jobs_dead_lettered_total{queue="jobs",type="webhook.deliver"} 1"#,
        r#"queue_job_duration_seconds_count{queue="jobs",type="webhook.deliver"} 6"#,
        r#"queue_jobs_waiting{queue="jobs"} 0"#,
        r#"queue_oldest_job_age_seconds{queue="jobs"} 0"#,
    ] {
        assert!(text.contains(line), "{line} missing from\n{text}");
    }
    let health = reqwest::get(w.url("/healthz")).await?;
    assert!(health.status().is_success());
    Ok(())
}
