//! `api-server serve` as real child processes against real Redis, the Firestore emulator and
//! the Firebase Auth emulator: the emulator sign-up → call → revoke flow across two servers,
//! the admin port, exact rate limiting across three servers, graceful shutdown under load, and
//! a Sentinel failover with password-protected Redis.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

const PROJECT: &str = "demo-api";

fn env(
    redis: &testenv::RedisServer,
    firestore: &testenv::FirestoreEmulator,
    auth_host: &str,
    extra: &[(&str, &str)],
) -> Vec<(&'static str, String)> {
    let mut v: Vec<(&'static str, String)> = vec![
        ("REDIS_URL", redis.url()),
        ("GOOGLE_CLOUD_PROJECT", PROJECT.to_string()),
        ("FIRESTORE_EMULATOR_HOST", firestore.host()),
        ("FIREBASE_AUTH_EMULATOR_HOST", auth_host.to_string()),
        ("API_DRAIN_SECONDS", "1".to_string()),
    ];
    for (k, val) in extra {
        let k: &'static str = Box::leak(k.to_string().into_boxed_str());
        v.push((k, val.to_string()));
    }
    v
}

async fn get_me(
    http: &reqwest::Client,
    server: &ApiProcess,
    token: &str,
) -> anyhow::Result<(u16, Value)> {
    let r = http
        .get(server.url("/v1/me"))
        .bearer_auth(token)
        .send()
        .await?;
    let status = r.status().as_u16();
    Ok((status, r.json().await.unwrap_or(Value::Null)))
}

#[tokio::test]
async fn auth_emulator_flow_sign_up_call_revoke_rejected_on_every_server() -> anyhow::Result<()> {
    let redis = testenv::RedisServer::start().await?;
    let firestore = testenv::FirestoreEmulator::start().await?;
    let auth = testenv::AuthEmulator::start(PROJECT).await?;
    let e = env(&redis, &firestore, &auth.host(), &[]);
    let (a, b) = (ApiProcess::start(&e).await?, ApiProcess::start(&e).await?);
    let http = reqwest::Client::new();

    let user = auth.sign_up("ada@example.com", "correct horse").await?;
    let (status, body) = get_me(&http, &a, &user.id_token).await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["uid"], user.uid.as_str());
    assert_eq!(body["claims"]["email"], "ada@example.com");
    assert_eq!(get_me(&http, &b, &user.id_token).await?.0, 200);

    // A non-admin may not revoke someone else.
    let other = auth.sign_up("bob@example.com", "battery staple").await?;
    let r = http
        .post(a.url("/v1/auth/revoke"))
        .bearer_auth(&user.id_token)
        .json(&json!({"uid": other.uid}))
        .send()
        .await?;
    assert_eq!(r.status().as_u16(), 403);

    // Self-revocation on server A...
    let r = http
        .post(a.url("/v1/auth/revoke"))
        .bearer_auth(&user.id_token)
        .send()
        .await?;
    assert_eq!(r.status().as_u16(), 200, "{:?}", r.text().await);
    // ...is enforced by A and B at once.
    for server in [&a, &b] {
        let (status, body) = get_me(&http, server, &user.id_token).await?;
        assert_eq!(status, 401, "{body}");
        assert_eq!(body["reason"], "revoked");
    }
    // Firebase was told too: the user's validSince is set (refresh tokens revoked).
    let lookup: Value = http
        .post(format!(
            "http://{}/identitytoolkit.googleapis.com/v1/projects/{PROJECT}/accounts:lookup",
            auth.host()
        ))
        .bearer_auth("owner")
        .json(&json!({"localId": [user.uid]}))
        .send()
        .await?
        .json()
        .await?;
    let valid_since: i64 = lookup["users"][0]["validSince"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    assert!(valid_since >= now() - 60, "{lookup}");

    // Signing in again (a second later: revocation covers its whole second) works.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let again = auth.sign_in("ada@example.com", "correct horse").await?;
    assert_eq!(get_me(&http, &b, &again.id_token).await?.0, 200);

    // An admin may revoke another user.
    auth.set_custom_claims(&other.uid, &json!({"admin": true}))
        .await?;
    let admin = auth.sign_in("bob@example.com", "battery staple").await?;
    let r = http
        .post(b.url("/v1/auth/revoke"))
        .bearer_auth(&admin.id_token)
        .json(&json!({"uid": user.uid}))
        .send()
        .await?;
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(
        get_me(&http, &a, &again.id_token).await?.1["reason"],
        "revoked"
    );

    // Emulator mode was announced, and every request logged one JSON line.
    let log = a
        .log_text_when(|log| log.matches(r#""message":"request""#).count() >= 4)
        .await;
    assert!(log.contains("accepting UNSIGNED emulator tokens"), "{log}");
    let request_lines: Vec<Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["message"] == "request")
        .collect();
    assert!(request_lines.len() >= 4, "{log}");
    assert!(request_lines.iter().all(|l| l["http.route"].is_string()
        && l["http.status"].is_number()
        && l["latency_ms"].is_number()));
    Ok(())
}

#[tokio::test]
async fn admin_port_serves_health_readiness_and_metrics() -> anyhow::Result<()> {
    let redis = testenv::RedisServer::start().await?;
    let firestore = testenv::FirestoreEmulator::start().await?;
    let server = ApiProcess::start(&env(&redis, &firestore, "127.0.0.1:9", &[])).await?;
    let http = reqwest::Client::new();
    assert_eq!(
        http.get(server.admin_url("/healthz"))
            .send()
            .await?
            .status()
            .as_u16(),
        200
    );
    // Ready once both answer: the first Firestore call (a new gRPC channel to an emulator
    // that just started) can take longer than the probe's 2 s on a loaded machine.
    let mut ready = 0;
    for _ in 0..30 {
        ready = http
            .get(server.admin_url("/readyz"))
            .send()
            .await?
            .status()
            .as_u16();
        if ready == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_eq!(ready, 200, "{}", server.log_text());

    let token = unsigned(&id_claims(PROJECT, "ann"));
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let r = http
        .get(server.url("/v1/me"))
        .bearer_auth(&token)
        .header("traceparent", format!("00-{trace}-00f067aa0ba902b7-01"))
        .send()
        .await?;
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.headers().contains_key("ratelimit-policy") && r.headers().contains_key("ratelimit"));
    let r = http.get(server.url("/v1/me")).send().await?;
    assert_eq!(r.status().as_u16(), 401);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    // A line logged while serving a request carries that request's trace id.
    let refused_trace = "0af7651916cd43dd8448eb211c80319c";
    let r = http
        .get(server.url("/v1/me"))
        .bearer_auth("not-a-token")
        .header(
            "traceparent",
            format!("00-{refused_trace}-b7ad6b7169203331-01"),
        )
        .send()
        .await?;
    assert_eq!(r.status().as_u16(), 401);

    let metrics = http
        .get(server.admin_url("/metrics"))
        .send()
        .await?
        .text()
        .await?;
    for needle in [
        r#"http_server_request_duration_seconds_count{http_request_method="GET",http_route="/v1/me",http_response_status_code="200"} 1"#,
        r#"api_auth_failures_total{reason="missing"} 1"#,
        r#"api_rate_limit_decisions_total{decision="allowed"} 1"#,
        "api_redis_command_duration_seconds_bucket",
    ] {
        assert!(metrics.contains(needle), "missing {needle} in\n{metrics}");
    }
    // The caller's trace id is on the request's log line, and on the lines logged inside it.
    let log = server
        .log_text_when(|log| {
            log.lines()
                .any(|l| l.contains(refused_trace) && l.contains(r#""message":"request""#))
        })
        .await;
    assert!(
        log.lines()
            .any(|l| l.contains(trace) && l.contains(r#""message":"request""#)),
        "{log}"
    );
    let lines: Vec<Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    for message in ["credential refused", "request"] {
        assert!(
            lines.iter().any(|l| l["message"] == message
                && l["trace_id"] == refused_trace
                && l["parent_span_id"] == "b7ad6b7169203331"),
            "no {message:?} line with trace {refused_trace}:\n{log}"
        );
    }

    // Redis gone: not ready (and says why).
    drop(redis);
    let r = http.get(server.admin_url("/readyz")).send().await?;
    assert_eq!(r.status().as_u16(), 503);
    assert!(r.text().await?.contains("redis"));
    Ok(())
}

#[tokio::test]
async fn starts_unready_while_firestore_is_unreachable_and_serves_once_it_answers()
-> anyhow::Result<()> {
    let redis = testenv::RedisServer::start().await?;
    let port = testenv::free_port();
    let server = ApiProcess::start(&[
        ("REDIS_URL", redis.url()),
        ("GOOGLE_CLOUD_PROJECT", PROJECT.to_string()),
        ("FIRESTORE_EMULATOR_HOST", format!("127.0.0.1:{port}")),
        ("FIREBASE_AUTH_EMULATOR_HOST", "127.0.0.1:9".to_string()),
        ("API_DRAIN_SECONDS", "1".to_string()),
    ])
    .await?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    // Alive, not ready, and says which dependency is missing.
    let health = http.get(server.admin_url("/healthz")).send().await?;
    assert_eq!(health.status().as_u16(), 200);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = http.get(server.admin_url("/readyz")).send().await?;
        assert_eq!(r.status().as_u16(), 503);
        assert_eq!(r.headers()["content-type"], "application/problem+json");
        let body: Value = r.json().await?;
        let detail = body["detail"].as_str().unwrap_or_default().to_string();
        assert!(detail.contains("firestore"), "{detail}");
        // Redis is up: once its connection is made, only Firestore is named.
        if !detail.contains("redis") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still waiting for Redis: {detail}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        server.log_text().contains("Firestore not reachable yet"),
        "{}",
        server.log_text()
    );
    let metrics = http.get(server.admin_url("/metrics")).send().await?;
    assert_eq!(metrics.status().as_u16(), 200);

    // Firestore appears at the configured address: the server becomes ready and serves.
    let firestore = testenv::FirestoreEmulator::start().await?;
    let _forwarder = testenv::PortForward::start(port, firestore.host()).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = http.get(server.admin_url("/readyz")).send().await?;
        if r.status().as_u16() == 200 {
            break;
        }
        let text = r.text().await?;
        assert!(Instant::now() < deadline, "never ready: {text}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let token = unsigned(&id_claims(PROJECT, "late"));
    let r = http
        .post(server.url("/v1/notes"))
        .bearer_auth(&token)
        .json(&json!({"title": "after startup"}))
        .send()
        .await?;
    let status = r.status().as_u16();
    let created: Value = r.json().await?;
    assert_eq!(status, 201, "{created}");
    let r = http
        .get(server.url(&format!(
            "/v1/notes/{}",
            created["id"].as_str().unwrap_or_default()
        )))
        .bearer_auth(&token)
        .send()
        .await?;
    assert_eq!(r.status().as_u16(), 200);
    Ok(())
}

#[tokio::test]
async fn rate_limit_is_exact_across_three_servers() -> anyhow::Result<()> {
    let redis = testenv::RedisServer::start().await?;
    let firestore = testenv::FirestoreEmulator::start().await?;
    // 100 per hour: GCRA lets the burst of 100 through, then one per 36 s, far longer than
    // the test takes, so exactly 100 may succeed whatever the machine's speed.
    let e = env(
        &redis,
        &firestore,
        "127.0.0.1:9",
        &[
            ("API_RATE_LIMIT", "100"),
            ("API_RATE_LIMIT_WINDOW_SECONDS", "3600"),
        ],
    );
    let servers = [
        ApiProcess::start(&e).await?,
        ApiProcess::start(&e).await?,
        ApiProcess::start(&e).await?,
    ];
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(400)
        .build()?;
    let token = unsigned(&id_claims(PROJECT, "hammer"));
    let replies = futures::future::join_all((0..1000).map(|i| {
        let req = http.get(servers[i % 3].url("/v1/me")).bearer_auth(&token);
        async move {
            let r = req.send().await?;
            let status = r.status().as_u16();
            let retry_after = r
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let ctype = r
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            anyhow::Ok((status, retry_after, ctype))
        }
    }))
    .await;
    let mut counts: HashMap<u16, usize> = HashMap::new();
    for r in replies {
        let (status, retry_after, ctype) = r?;
        *counts.entry(status).or_default() += 1;
        if status == 429 {
            assert!(retry_after.is_some_and(|v| v.parse::<u64>().is_ok_and(|s| s >= 1)));
            assert_eq!(ctype, "application/problem+json");
        }
    }
    assert_eq!(counts.get(&200), Some(&100), "{counts:?}");
    assert_eq!(counts.get(&429), Some(&900), "{counts:?}");
    // Another user has a budget of their own.
    let (status, _) = get_me(&http, &servers[0], &unsigned(&id_claims(PROJECT, "other"))).await?;
    assert_eq!(status, 200);
    Ok(())
}

#[tokio::test]
async fn rate_limiter_fails_open_or_closed_as_configured() -> anyhow::Result<()> {
    let redis = testenv::RedisServer::start().await?;
    let firestore = testenv::FirestoreEmulator::start().await?;
    let open = ApiProcess::start(&env(
        &redis,
        &firestore,
        "127.0.0.1:9",
        &[
            ("API_RATE_LIMIT_FAIL", "open"),
            ("API_REDIS_TIMEOUT_MS", "300"),
        ],
    ))
    .await?;
    let closed = ApiProcess::start(&env(
        &redis,
        &firestore,
        "127.0.0.1:9",
        &[
            ("API_RATE_LIMIT_FAIL", "closed"),
            ("API_REDIS_TIMEOUT_MS", "300"),
        ],
    ))
    .await?;
    drop(redis);
    let http = reqwest::Client::new();
    let token = unsigned(&id_claims(PROJECT, "ann"));
    assert_eq!(get_me(&http, &open, &token).await?.0, 200);
    let (status, body) = get_me(&http, &closed, &token).await?;
    assert_eq!(status, 503, "{body}");
    for (server, decision) in [(&open, "fail_open"), (&closed, "fail_closed")] {
        let metrics = http
            .get(server.admin_url("/metrics"))
            .send()
            .await?
            .text()
            .await?;
        assert!(
            metrics.contains(&format!(
                r#"api_rate_limit_decisions_total{{decision="{decision}"}} 1"#
            )),
            "{metrics}"
        );
    }
    Ok(())
}

/// The load balancer of this test: routes each request to a server whose /readyz said yes at
/// the last poll (every 100 ms, as a balancer's health check would), and on a refused
/// connection retries once on another server. Honest about what it proves: the server's part
/// is to stay ready-false-but-serving long enough for such a balancer to move away, and to
/// finish what it accepted.
#[tokio::test]
async fn sigterm_under_load_fails_no_request() -> anyhow::Result<()> {
    let redis = testenv::RedisServer::start().await?;
    let firestore = testenv::FirestoreEmulator::start().await?;
    let e = env(
        &redis,
        &firestore,
        "127.0.0.1:9",
        &[("API_DRAIN_SECONDS", "2"), ("API_RATE_LIMIT", "1000000")],
    );
    let mut servers = vec![ApiProcess::start(&e).await?, ApiProcess::start(&e).await?];
    let http = reqwest::Client::new();
    let token = unsigned(&id_claims(PROJECT, "steady"));
    let urls: Arc<Vec<(String, String)>> = Arc::new(
        servers
            .iter()
            .map(|s| (s.url("/v1/me"), s.admin_url("/readyz")))
            .collect(),
    );
    let ready = Arc::new([AtomicBool::new(true), AtomicBool::new(true)]);
    let stop = Arc::new(AtomicBool::new(false));

    // Server 0 answering /readyz with 503 (draining, still up), as opposed to not answering.
    let saw_draining = Arc::new(AtomicBool::new(false));
    let poller = {
        let (urls, ready, stop, http) = (urls.clone(), ready.clone(), stop.clone(), http.clone());
        let saw_draining = saw_draining.clone();
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                for (i, (_, readyz)) in urls.iter().enumerate() {
                    let status = http
                        .get(readyz)
                        .timeout(Duration::from_secs(1))
                        .send()
                        .await
                        .map(|r| r.status().as_u16());
                    if i == 0 && matches!(status, Ok(503)) {
                        saw_draining.store(true, Ordering::SeqCst);
                    }
                    ready[i].store(matches!(status, Ok(200)), Ordering::SeqCst);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let (ok, failed, after_term_on_0) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let terminated = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for w in 0..8usize {
        let (urls, ready, stop, http, token) = (
            urls.clone(),
            ready.clone(),
            stop.clone(),
            http.clone(),
            token.clone(),
        );
        let (ok, failed, after, terminated) = (
            ok.clone(),
            failed.clone(),
            after_term_on_0.clone(),
            terminated.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut n = w;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                let mut pick = n % 2;
                if !ready[pick].load(Ordering::SeqCst) {
                    pick = 1 - pick;
                }
                let mut result = http.get(&urls[pick].0).bearer_auth(&token).send().await;
                if result.as_ref().is_err_and(|e| e.is_connect()) {
                    pick = 1 - pick;
                    result = http.get(&urls[pick].0).bearer_auth(&token).send().await;
                }
                match result {
                    Ok(r) if r.status().is_success() => {
                        ok.fetch_add(1, Ordering::SeqCst);
                        if pick == 0 && terminated.load(Ordering::SeqCst) {
                            after.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    other => {
                        eprintln!(
                            "failed request to server {pick} (terminated: {}): {other:?}",
                            terminated.load(Ordering::SeqCst)
                        );
                        failed.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    servers[0].sigterm()?;
    terminated.store(true, Ordering::SeqCst);
    let started = Instant::now();
    // While draining, every lane answers with `Connection: close` (the lanes' copies of the
    // state share the draining flag). Rounds of 8 new connections at once, which the accept
    // loop spreads over the lanes, until one round is all `close`.
    let mut all_close = false;
    for _ in 0..40 {
        let probes = (0..8).map(|_| {
            reqwest::Client::new()
                .get(&urls[0].0)
                .bearer_auth(&token)
                .send()
        });
        let replies = futures::future::join_all(probes).await;
        all_close = replies.iter().all(|r| {
            r.as_ref().is_ok_and(|r| {
                r.headers()
                    .get(axum::http::header::CONNECTION)
                    .is_some_and(|v| v == "close")
            })
        });
        if all_close {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        all_close,
        "no round of answers all saying Connection: close while draining"
    );
    let status = loop {
        if let Some(s) = servers[0].child.try_wait()? {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "server 0 did not exit"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.await?;
    }
    poller.await?;

    assert!(status.success(), "exit status {status}");
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "exited before the drain period"
    );
    assert_eq!(failed.load(Ordering::SeqCst), 0, "failed requests");
    assert!(
        saw_draining.load(Ordering::SeqCst),
        "/readyz never said 503 while draining"
    );
    assert!(
        ok.load(Ordering::SeqCst) > 50,
        "too little load to mean anything"
    );
    let log = servers[0].log_text();
    assert!(
        log.contains("draining: readiness is now false") && log.contains("all requests finished"),
        "{log}"
    );
    eprintln!(
        "ok={} served by the terminating server after SIGTERM={}",
        ok.load(Ordering::SeqCst),
        after_term_on_0.load(Ordering::SeqCst)
    );
    servers.truncate(1);
    Ok(())
}

#[tokio::test]
async fn follows_a_sentinel_failover_without_restart() -> anyhow::Result<()> {
    // Password-protected data nodes, as the operator deploys them (sentinels without one).
    const PASSWORD: &str = "api-test-pw-31c7";
    let mut group = testenv::SentinelGroup::start_with_password(PASSWORD).await?;
    let firestore = testenv::FirestoreEmulator::start().await?;
    let sentinels = group.sentinel_urls().join(",");
    let server = ApiProcess::start(&[
        ("REDIS_SENTINELS", sentinels),
        ("REDIS_MASTER_NAME", group.master_name().to_string()),
        ("REDIS_PASSWORD", PASSWORD.to_string()),
        ("GOOGLE_CLOUD_PROJECT", PROJECT.to_string()),
        ("FIRESTORE_EMULATOR_HOST", firestore.host()),
        ("FIREBASE_AUTH_EMULATOR_HOST", "127.0.0.1:9".to_string()),
        ("API_REDIS_TIMEOUT_MS", "300".to_string()),
    ])
    .await?;
    let http = reqwest::Client::new();
    let token = unsigned(&id_claims(PROJECT, "ann"));
    // RateLimit headers appear only when Redis made the decision (fail-open adds none).
    let decided_by_redis = || async {
        let r = http
            .get(server.url("/v1/me"))
            .bearer_auth(&token)
            .send()
            .await?;
        anyhow::Ok((r.status().as_u16(), r.headers().contains_key("ratelimit")))
    };
    assert_eq!(decided_by_redis().await?, (200, true));

    let old = group.kill_master().await?;
    let new = group
        .wait_for_failover(old, Duration::from_secs(30))
        .await?;
    let started = Instant::now();
    loop {
        let (status, redis_ok) = decided_by_redis().await?;
        assert_eq!(
            status, 200,
            "requests must not fail during the failover (fail-open)"
        );
        if redis_ok {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "never reconnected to the new master {new}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        server.log_text().contains("redis master re-resolved"),
        "{}",
        server.log_text()
    );
    assert!(
        !server.log_text().contains(PASSWORD),
        "the Redis password is in the log"
    );
    Ok(())
}

/// An OTLP/gRPC trace receiver standing in for an OpenTelemetry Collector.
#[derive(Default, Clone)]
struct Collector {
    spans: Arc<std::sync::Mutex<Vec<opentelemetry_proto::tonic::trace::v1::Span>>>,
}

#[tonic::async_trait]
impl opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceService
    for Collector
{
    async fn export(
        &self,
        request: tonic::Request<
            opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest,
        >,
    ) -> Result<
        tonic::Response<
            opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse,
        >,
        tonic::Status,
    > {
        let mut spans = self.spans.lock().unwrap_or_else(|p| p.into_inner());
        for rs in request.into_inner().resource_spans {
            for ss in rs.scope_spans {
                spans.extend(ss.spans);
            }
        }
        Ok(tonic::Response::new(Default::default()))
    }
}

#[tokio::test]
async fn spans_are_exported_over_otlp_as_children_of_the_callers_traceparent() -> anyhow::Result<()>
{
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceServiceServer;
    let redis = testenv::RedisServer::start().await?;
    let firestore = testenv::FirestoreEmulator::start().await?;
    let collector = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let service = TraceServiceServer::new(collector.clone());
    let receiver = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream_of(listener)),
    );
    let endpoint = format!("http://{addr}");
    // Signed tokens (not emulator mode), so the server fetches keys inside the request span.
    let key = TestKey::generate("otlp-key")?;
    let keys = KeyServer::start(&[&key], 3600).await?;
    let mut server = ApiProcess::start(&[
        ("REDIS_URL", redis.url()),
        ("GOOGLE_CLOUD_PROJECT", PROJECT.to_string()),
        ("FIRESTORE_EMULATOR_HOST", firestore.host()),
        ("API_ID_TOKEN_KEYS_URL", keys.url()),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
    ])
    .await?;
    let http = reqwest::Client::new();
    let trace = "0af7651916cd43dd8448eb211c80319c";
    let r = http
        .get(server.url("/v1/me"))
        .bearer_auth(key.sign(&id_claims(PROJECT, "ann"))?)
        .header("traceparent", format!("00-{trace}-b7ad6b7169203331-01"))
        .send()
        .await?;
    assert_eq!(r.status().as_u16(), 200);
    // Exit flushes the batch.
    server.sigterm()?;
    let status = tokio::task::spawn_blocking(move || {
        let s = server.child.wait();
        (server, s)
    })
    .await?;
    let (server, status) = status;
    assert!(status?.success());
    let spans = collector
        .spans
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let span = spans
        .iter()
        .find(|s| s.name == "GET /v1/me")
        .ok_or_else(|| {
            anyhow::anyhow!(
                "no GET /v1/me span among {:?}",
                spans.iter().map(|s| &s.name).collect::<Vec<_>>()
            )
        })?;
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    assert_eq!(hex(&span.trace_id), trace);
    assert_eq!(hex(&span.parent_span_id), "b7ad6b7169203331");
    // The log line names the same span.
    let span_id = hex(&span.span_id);
    assert!(
        server
            .log_text()
            .lines()
            .any(|l| l.contains(&span_id) && l.contains(r#""message":"request""#)),
        "log does not mention span {span_id}:\n{}",
        server.log_text()
    );
    // The key fetch it made for that request carried the trace on.
    let outgoing = keys
        .traceparent
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    assert!(
        outgoing
            .as_deref()
            .is_some_and(|t| t.starts_with(&format!("00-{trace}-"))),
        "key fetch traceparent: {outgoing:?}"
    );
    receiver.abort();
    Ok(())
}

/// The accepted connections of `listener`, as tonic's `serve_with_incoming` wants them.
fn tokio_stream_of(
    listener: tokio::net::TcpListener,
) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    futures::stream::unfold(listener, |l| async move {
        let accepted = l.accept().await.map(|(s, _)| s);
        Some((accepted, l))
    })
}
