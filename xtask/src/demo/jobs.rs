//! The jobs part of the demo: two workers consume the queue; a user publishes a webhook job
//! through the API; a local receiver gets the signed POST; the job shows completed through the
//! API and its outcome is recorded in Firestore.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use serde_json::{Value, json};
use testenv::{DEMO_BUCKET, DEMO_PROJECT, Environment, Service, free_port};

use super::api::{ApiTier, call, sentinels, wait_ready};
use super::{show, sibling_binary, step};

const WORKERS: usize = 2;

/// A request the webhook receiver got: its signature header and body.
struct Delivery {
    signature: String,
    body: String,
}

/// The running workers; dropping it stops them.
pub(super) struct Workers {
    _running: Vec<Service>,
}

pub(super) async fn start_workers(env: &Environment, api: &ApiTier) -> anyhow::Result<Workers> {
    step("Jobs: start two workers on the Sentinel-managed Redis");
    let http = reqwest::Client::new();
    let mut workers = Vec::new();
    for i in 0..WORKERS {
        let admin_port = free_port();
        let mut cmd = Command::new(sibling_binary("worker")?);
        cmd.arg("run")
            .env("REDIS_SENTINELS", sentinels(env))
            .env("REDIS_MASTER_NAME", env.sentinels.master_name())
            .env("GOOGLE_CLOUD_PROJECT", DEMO_PROJECT)
            .env("FIRESTORE_EMULATOR_HOST", env.firestore.host())
            .env("STORAGE_BUCKET", DEMO_BUCKET)
            .env("STORAGE_EMULATOR_HOST", env.storage.host())
            .env("WEBHOOK_SIGNING_SECRET", "demo-webhook-secret")
            .env("WORKER_ADMIN_ADDR", "127.0.0.1")
            .env("WORKER_ADMIN_PORT", admin_port.to_string())
            .env("WORKER_ID", format!("demo-worker-{i}"))
            .env("RUST_LOG", "warn");
        let log = api.dir.path().join(format!("worker-{i}.log"));
        workers.push(Service::spawn(format!("worker-{i}"), cmd, &log)?);
        wait_ready(&http, &format!("http://127.0.0.1:{admin_port}/readyz")).await?;
    }
    show(format!("{WORKERS} workers ready"));
    Ok(Workers { _running: workers })
}

pub(super) async fn journey(env: &Environment, api: &ApiTier) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    step("Jobs: publish a webhook job through the API");
    let (receiver_url, deliveries) = webhook_receiver()?;
    let job = json!({
        "type": "webhook.deliver",
        "payload": {"url": receiver_url, "body": {"event": "note.created", "title": "Buy milk"}},
        "idempotencyKey": "demo-webhook-1"
    });
    let (status, served_by, accepted, _) = call(
        &http,
        "POST",
        &format!("{}/v1/jobs", api.lb),
        &api.token,
        Some(&job),
        None,
    )
    .await?;
    ensure!(status == 202, "POST /v1/jobs answered {status}: {accepted}");
    let id = accepted["id"]
        .as_str()
        .context("accepted job has no id")?
        .to_string();
    show(format!(
        "POST /v1/jobs → {status} (served by {served_by}): {accepted}"
    ));

    let delivery = deliveries
        .recv_timeout(Duration::from_secs(30))
        .context("the webhook was not delivered within 30 s")?;
    show(format!(
        "receiver got POST {} with Webhook-Signature: {}",
        delivery.body, delivery.signature
    ));

    step("Jobs: the job is completed, through the API and in Firestore");
    let url = format!("{}/v1/jobs/{id}", api.lb);
    let deadline = Instant::now() + Duration::from_secs(30);
    let record = loop {
        let (status, _, record, _) = call(&http, "GET", &url, &api.token, None, None).await?;
        if status == 200 && record["state"] == "completed" {
            break record;
        }
        if Instant::now() > deadline {
            bail!("job {id} not completed: {status} {record}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    show(format!(
        "GET /v1/jobs/{id} → state {}, attempts {}, result {}",
        record["state"], record["attempts"], record["result"]
    ));
    let outcome = firestore_outcome(&http, env, &id).await?;
    show(format!("Firestore jobs/{id}: {outcome}"));
    Ok(())
}

/// A one-request-at-a-time HTTP receiver on loopback that answers 200 and reports each POST.
fn webhook_receiver() -> anyhow::Result<(String, mpsc::Receiver<Delivery>)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let url = format!("http://{}/hooks/demo", listener.local_addr()?);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(&stream);
            let (mut length, mut signature) = (0usize, String::new());
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                let header = line.trim_end().to_string();
                line.clear();
                if header.is_empty() {
                    break;
                }
                if let Some((name, value)) = header.split_once(':') {
                    match name.to_ascii_lowercase().as_str() {
                        "content-length" => length = value.trim().parse().unwrap_or(0),
                        "webhook-signature" => signature = value.trim().to_string(),
                        _ => {}
                    }
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            let mut stream = &stream;
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            let body = String::from_utf8_lossy(&body).into_owned();
            if tx.send(Delivery { signature, body }).is_err() {
                break;
            }
        }
    });
    Ok((url, rx))
}

/// The outcome document the worker wrote, read through the emulator's REST API.
async fn firestore_outcome(
    http: &reqwest::Client,
    env: &Environment,
    id: &str,
) -> anyhow::Result<Value> {
    let url = format!(
        "http://{}/v1/projects/{DEMO_PROJECT}/databases/(default)/documents/jobs/{id}",
        env.firestore.host()
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let response = http.get(&url).bearer_auth("owner").send().await?;
        if response.status().is_success() {
            let doc: Value = response.json().await?;
            let fields = doc["fields"].as_object().cloned().unwrap_or_default();
            // Firestore's typed values ({"stringValue": ...}) flattened for display.
            let flat: serde_json::Map<String, Value> = fields
                .into_iter()
                .map(|(k, v)| {
                    let shown = v
                        .as_object()
                        .and_then(|o| o.values().next().cloned())
                        .unwrap_or(v);
                    (k, shown)
                })
                .collect();
            return Ok(Value::Object(flat));
        }
        if Instant::now() > deadline {
            bail!("no Firestore record jobs/{id}: {}", response.status());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
