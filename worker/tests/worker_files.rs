//! Files end to end: the API (in-process, on a real listener) hands out signed URLs, the client
//! PUTs bytes to fake-gcs-server with them, the `worker` binary finalizes the upload from the
//! bucket's metadata, and the signed download URL returns the same bytes. Uploads that break
//! their declaration are rejected and their objects deleted.
//!
//! fake-gcs-server checks no signature and enforces none of the signed headers (content type,
//! length range, if-generation-match), which is what lets this test upload bad files at all:
//! the worker's checks are the ones under test here.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use clap::Parser;
use platform::queue::{JobRecord, JobState, NewJob};
use serde_json::{Value, json};
use support::WorkerProcess;

const PROJECT: &str = "demo-files-e2e";
const BUCKET: &str = "e2e-uploads";
const QUEUE: &str = "files";
const MAX: u64 = 64;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: api_server::config::ServeArgs,
}

/// An unsigned ID token as the Auth emulator issues them.
fn token(uid: &str) -> String {
    let now = jiff::Timestamp::now().as_second();
    let claims = json!({
        "iss": format!("https://securetoken.google.com/{PROJECT}"),
        "aud": PROJECT, "sub": uid, "user_id": uid,
        "iat": now - 60, "exp": now + 3600, "auth_time": now - 120,
        "firebase": {"sign_in_provider": "password", "identities": {}},
    });
    let h = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let p = URL_SAFE_NO_PAD.encode(claims.to_string().as_bytes());
    format!("{h}.{p}.")
}

struct Api {
    base: String,
    http: reqwest::Client,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Api {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Api {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token("ann"));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await?;
        let status = r.status().as_u16();
        Ok((status, r.json().await.unwrap_or(Value::Null)))
    }

    /// Registers, uploads `bytes` as `upload_type`, completes; returns the file id.
    async fn upload(
        &self,
        name: &str,
        declared_type: &str,
        declared_size: usize,
        upload_type: &str,
        bytes: Option<&'static [u8]>,
    ) -> anyhow::Result<String> {
        let (status, created) = self
            .call(
                reqwest::Method::POST,
                "/v1/files",
                Some(
                    json!({"fileName": name, "contentType": declared_type, "size": declared_size}),
                ),
            )
            .await?;
        anyhow::ensure!(status == 201, "create: {status} {created}");
        let id = created["id"].as_str().unwrap_or_default().to_string();
        if let Some(bytes) = bytes {
            let mut put = self
                .http
                .put(created["uploadUrl"].as_str().unwrap_or_default())
                .body(bytes);
            for (k, v) in created["requiredHeaders"].as_object().into_iter().flatten() {
                if k != "content-type" {
                    put = put.header(k.as_str(), v.as_str().unwrap_or_default());
                }
            }
            // Possibly not the declared type: what a misbehaving client sends (real GCS would
            // refuse the request, as the type is signed).
            put = put.header("content-type", upload_type);
            let put = put.send().await?;
            anyhow::ensure!(put.status().is_success(), "upload: {}", put.text().await?);
        }
        let (status, done) = self
            .call(
                reqwest::Method::POST,
                &format!("/v1/files/{id}/complete"),
                None,
            )
            .await?;
        anyhow::ensure!(status == 202, "complete: {status} {done}");
        Ok(id)
    }

    /// Polls until the file is settled (bounded).
    async fn settled(&self, id: &str, worker: &WorkerProcess) -> anyhow::Result<Value> {
        let start = Instant::now();
        loop {
            let (status, file) = self
                .call(reqwest::Method::GET, &format!("/v1/files/{id}"), None)
                .await?;
            anyhow::ensure!(status == 200, "get: {status} {file}");
            if file["state"] == "ready" || file["state"] == "rejected" {
                return Ok(file);
            }
            if start.elapsed() > Duration::from_secs(30) {
                anyhow::bail!("{id} still {} after 30 s\n{}", file["state"], worker.log());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test]
async fn uploads_are_finalized_by_the_worker_and_download_through_signed_urls() -> anyhow::Result<()>
{
    let (redis, firestore, gcs) = tokio::try_join!(
        testenv::RedisServer::start(),
        testenv::FirestoreEmulator::start(),
        testenv::FakeGcsServer::start()
    )?;
    gcs.create_bucket(BUCKET).await?;
    let max = MAX.to_string();
    let (redis_url, fs_host, gcs_host) = (redis.url(), firestore.host(), gcs.host());

    // No signing key configured: against an emulator the server signs with a throwaway key.
    let args = Cli::try_parse_from([
        "api-server",
        "--project-id",
        PROJECT,
        "--redis-url",
        &redis_url,
        "--firestore-emulator-host",
        &fs_host,
        "--auth-emulator-host",
        "127.0.0.1:9",
        "--jobs-queue",
        QUEUE,
        "--jobs-durable-replicas",
        "0",
        "--storage-bucket",
        BUCKET,
        "--storage-emulator-host",
        &gcs_host,
        "--storage-max-upload-bytes",
        &max,
    ])?
    .args;
    let metrics = api_server::observability::Metrics::new();
    let r = api_server::redis::Redis::connect(
        &args.redis.endpoint()?,
        args.redis_timeout(),
        metrics.clone(),
    )
    .await?;
    let db = platform::firestore::connect(PROJECT, "(default)", Some(&fs_host)).await?;
    let files = api_server::files::Files::from_args(&args.files, db.clone(), metrics.clone())?;
    let state = api_server::state::AppState::with_files(&args, r, db, metrics, files);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = api_server::routes::public(state).into_make_service_with_connect_info::<SocketAddr>();
    let api = Api {
        base: format!("http://{addr}"),
        http: reqwest::Client::new(),
        task: tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        }),
    };

    let worker = WorkerProcess::start(
        "files-worker",
        &redis_url,
        &[],
        &[
            ("WORKER_QUEUES", QUEUE),
            ("GOOGLE_CLOUD_PROJECT", PROJECT),
            ("FIRESTORE_EMULATOR_HOST", &fs_host),
            ("STORAGE_BUCKET", BUCKET),
            ("STORAGE_EMULATOR_HOST", &gcs_host),
            ("STORAGE_MAX_UPLOAD_BYTES", &max),
        ],
    )
    .await?;

    // A good upload, and three that break their declaration, finalized side by side.
    let content: &'static [u8] = b"hello world";
    let (good, wrong_type, oversize, missing) = tokio::try_join!(
        api.upload(
            "hello.txt",
            "text/plain",
            content.len(),
            "text/plain",
            Some(content)
        ),
        api.upload(
            "pic.png",
            "image/png",
            11,
            "text/html",
            Some(b"<b>hi</b>!!")
        ),
        api.upload("small.txt", "text/plain", 3, "text/plain", Some(content)),
        api.upload("never.txt", "text/plain", 5, "text/plain", None),
    )?;

    let file = api.settled(&good, &worker).await?;
    assert_eq!(file["state"], "ready", "{file}");
    assert_eq!(file["size"], 11);
    // python3 -c 'import hashlib,base64; print(base64.b64encode(hashlib.md5(b"hello world").digest()))'
    assert_eq!(file["md5Hash"], "XrY7u+Ae7tCTyyK7j1rNww==");
    // CRC32C("hello world") = 0xc99465aa, big-endian, base64.
    assert_eq!(file["crc32c"], "yZRlqg==");
    assert!(
        file["generation"]
            .as_str()
            .is_some_and(|g| g.parse::<i64>().is_ok()),
        "{file}"
    );
    let url = file["downloadUrl"].as_str().unwrap_or_default();
    assert!(url.contains("X-Goog-Signature="), "{url}");
    let download = api.http.get(url).send().await?;
    assert_eq!(download.status(), 200);
    assert_eq!(download.bytes().await?.as_ref(), content);

    let objects = platform::storage::objects::ObjectClient::emulator(&gcs_host);
    for (id, reason) in [
        (
            &wrong_type,
            "content type \"text/html\" is not the declared \"image/png\"",
        ),
        (&oversize, "11 bytes, more than the declared 3"),
        (&missing, "nothing was uploaded"),
    ] {
        let file = api.settled(id, &worker).await?;
        assert_eq!(file["state"], "rejected", "{file}");
        let got = file["reason"].as_str().unwrap_or_default();
        assert!(got.contains(reason), "{id}: {got}");
        assert!(file.get("downloadUrl").is_none(), "{file}");
        // The rejected bytes are gone from the bucket.
        let object = format!(
            "users/ann/{id}/{}",
            file["fileName"].as_str().unwrap_or_default()
        );
        let meta = objects.metadata(BUCKET, &object).await;
        assert!(
            matches!(meta, Err(platform::storage::objects::ObjectError::NotFound)),
            "{object}: {meta:?}"
        );
    }

    // A second finalize run (at-least-once delivery) leaves a settled file as it is; one for a
    // deleted file completes without doing anything; a malformed one dead-letters.
    let q = support::queue(&redis_url, QUEUE).await?;
    let before = api
        .call(reqwest::Method::GET, &format!("/v1/files/{good}"), None)
        .await?
        .1;
    let mut ids = Vec::new();
    for payload in [
        json!({"fileId": good}),
        json!({"fileId": "0000000000000000000000000000"}),
        json!({}),
    ] {
        ids.push(q.enqueue(NewJob::new("file.finalize", payload)).await?.id);
    }
    let settled = |r: &JobRecord| matches!(r.state, JobState::Completed | JobState::Dead);
    let rerun = support::wait_record(&q, &ids[0], Duration::from_secs(30), settled).await?;
    assert_eq!(
        rerun.result,
        Some(json!({"fileId": good, "state": "ready"}))
    );
    let deleted = support::wait_record(&q, &ids[1], Duration::from_secs(30), settled).await?;
    assert_eq!(
        deleted.result.as_ref().map(|r| &r["state"]),
        Some(&json!("deleted"))
    );
    let malformed = support::wait_record(&q, &ids[2], Duration::from_secs(30), settled).await?;
    assert_eq!(malformed.state, JobState::Dead, "{malformed:?}");
    let after = api
        .call(reqwest::Method::GET, &format!("/v1/files/{good}"), None)
        .await?
        .1;
    assert_eq!(before["updatedAt"], after["updatedAt"]);
    assert_eq!(before["generation"], after["generation"]);

    // Completing a settled file again changes nothing.
    let (status, again) = api
        .call(
            reqwest::Method::POST,
            &format!("/v1/files/{good}/complete"),
            None,
        )
        .await?;
    assert_eq!((status, again["state"].as_str()), (200, Some("ready")));
    Ok(())
}
