//! The Files API through the real router against Redis (finalize jobs), the Firestore emulator
//! (metadata) and fake-gcs-server (the bucket). fake-gcs-server does not check signatures;
//! the signer itself is checked against Google's client in sign_url_differential.rs. The
//! upload → finalize → download round trip with the worker binary is in
//! worker/tests/worker_files.rs.

mod common;

use std::path::{Path, PathBuf};

use api_server::observability::Metrics;
use api_server::redis::Redis;
use api_server::state::AppState;
use aws_lc_rs::encoding::AsDer as _;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use base64::Engine as _;
use common::*;
use firestore::FirestoreDb;
use platform::storage::files::{FileRecord, FileState};
use platform::storage::objects::{ObjectClient, ObjectError};
use serde_json::{Value, json};

const PROJECT: &str = "demo-files";
const BUCKET: &str = "uploads";
const EMAIL: &str = "signer@demo-files.iam.gserviceaccount.com";
const MAX: u64 = 1000;

struct Fixture {
    redis: testenv::RedisServer,
    firestore: testenv::FirestoreEmulator,
    gcs: testenv::FakeGcsServer,
    dir: tempfile::TempDir,
    state: AppState,
    db: FirestoreDb,
}

/// A fresh RSA-2048 service-account key file.
fn write_key_file(dir: &Path) -> anyhow::Result<PathBuf> {
    let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
        .map_err(|e| anyhow::anyhow!("keygen: {e}"))?;
    let der = pair.as_der().map_err(|e| anyhow::anyhow!("pkcs8: {e}"))?;
    let body = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .filter_map(|l| std::str::from_utf8(l).ok())
        .collect();
    let pem = format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        lines.join("\n")
    );
    let key = json!({"type": "service_account", "client_email": EMAIL, "private_key": pem});
    let path = dir.join("key.json");
    std::fs::write(&path, key.to_string())?;
    Ok(path)
}

fn base_flags<'a>(redis: &'a str, firestore: &'a str) -> Vec<&'a str> {
    vec![
        "--project-id",
        PROJECT,
        "--redis-url",
        redis,
        "--firestore-emulator-host",
        firestore,
        "--auth-emulator-host",
        "127.0.0.1:9",
        "--jobs-queue",
        "files-jobs",
        "--jobs-durable-replicas",
        "0",
    ]
}

/// A server with the Files API on (`storage` true) or off.
async fn fixture(storage: bool) -> anyhow::Result<Fixture> {
    let (redis, firestore, gcs) = tokio::try_join!(
        testenv::RedisServer::start(),
        testenv::FirestoreEmulator::start(),
        testenv::FakeGcsServer::start()
    )?;
    gcs.create_bucket(BUCKET).await?;
    let dir = tempfile::tempdir()?;
    let key = write_key_file(dir.path())?.display().to_string();
    let (url, fs_host, gcs_host) = (redis.url(), firestore.host(), gcs.host());
    let mut flags = base_flags(&url, &fs_host);
    let max = MAX.to_string();
    if storage {
        flags.extend([
            "--storage-bucket",
            BUCKET,
            "--storage-emulator-host",
            &gcs_host,
            "--storage-signing-key-file",
            &key,
            "--storage-max-upload-bytes",
            &max,
            "--files-content-types",
            "text/plain,image/png",
        ]);
    }
    let args = serve_args(&flags)?;
    let metrics = Metrics::new();
    let r = Redis::connect(
        &args.redis.endpoint()?,
        args.redis_timeout(),
        metrics.clone(),
    )
    .await?;
    let db = platform::firestore::connect(PROJECT, "(default)", Some(&fs_host)).await?;
    let files = api_server::files::Files::from_args(&args.files, db.clone(), metrics.clone())?;
    assert_eq!(files.is_some(), storage);
    Ok(Fixture {
        redis,
        firestore,
        gcs,
        dir,
        state: AppState::with_files(&args, r, db.clone(), metrics, files),
        db,
    })
}

async fn call(
    state: &AppState,
    method: &str,
    uri: &str,
    uid: &str,
    body: Option<String>,
) -> anyhow::Result<Reply> {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header(
            "authorization",
            format!("Bearer {}", caller_token(PROJECT, uid)),
        )
        .header(header::CONTENT_TYPE, "application/json")
        .body(body.map(Body::from).unwrap_or_else(Body::empty))?;
    reply_of(state, req).await
}

async fn create(state: &AppState, uid: &str, body: Value) -> anyhow::Result<Reply> {
    call(state, "POST", "/v1/files", uid, Some(body.to_string())).await
}

async fn record(db: &FirestoreDb, id: &str) -> anyhow::Result<Option<FileRecord>> {
    Ok(db.fluent().select().by_id_in("files").obj().one(id).await?)
}

async fn record_count(db: &FirestoreDb) -> anyhow::Result<usize> {
    Ok(db.fluent().select().from("files").query().await?.len())
}

fn query_of(url: &reqwest::Url) -> std::collections::HashMap<String, String> {
    url.query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

#[tokio::test]
async fn a_file_is_registered_uploaded_completed_and_deleted_by_its_owner() -> anyhow::Result<()> {
    let f = fixture(true).await?;
    let s = &f.state;

    let created = create(
        s,
        "ann",
        json!({"fileName": "Notes 1.txt", "contentType": "Text/Plain", "size": 11}),
    )
    .await?;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let id = created.body["id"].as_str().unwrap_or_default().to_string();
    assert_eq!(id.len(), 28);
    assert_eq!(
        header_of(&created, header::LOCATION),
        format!("/v1/files/{id}")
    );
    assert_eq!(header_of(&created, header::CACHE_CONTROL), "no-store");
    assert_eq!(created.body["method"], "PUT");
    assert_eq!(created.body["state"], "pending");
    assert_eq!(
        created.body["requiredHeaders"],
        json!({
            "content-type": "text/plain",
            "x-goog-content-length-range": "0,11",
            "x-goog-if-generation-match": "0",
        })
    );
    let expires: jiff::Timestamp = created.body["expiresAt"]
        .as_str()
        .unwrap_or_default()
        .parse()?;
    let lifetime = expires.as_second() - jiff::Timestamp::now().as_second();
    assert!((890..=900).contains(&lifetime), "{lifetime}");

    // The URL: the emulator's host, the object under the owner's prefix, a V4 signature over
    // the required headers.
    let upload = reqwest::Url::parse(created.body["uploadUrl"].as_str().unwrap_or_default())?;
    assert_eq!(upload.scheme(), "http");
    assert_eq!(upload.host_str(), Some("127.0.0.1"));
    assert_eq!(
        upload.port(),
        Some(f.gcs.url().rsplit(':').next().unwrap_or("").parse()?)
    );
    let object = format!("users/ann/{id}/Notes 1.txt");
    assert_eq!(
        upload.path(),
        format!("/{BUCKET}/users/ann/{id}/Notes%201.txt")
    );
    let q = query_of(&upload);
    assert_eq!(q["X-Goog-Algorithm"], "GOOG4-RSA-SHA256");
    assert!(q["X-Goog-Credential"].starts_with(&format!("{EMAIL}/")));
    assert_eq!(q["X-Goog-Expires"], "900");
    assert_eq!(
        q["X-Goog-SignedHeaders"],
        "content-type;host;x-goog-content-length-range;x-goog-if-generation-match"
    );
    assert_eq!(q["X-Goog-Signature"].len(), 512, "RSA-2048 hex");

    // The record.
    let r = record(&f.db, &id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no record"))?;
    assert_eq!(r.owner, "ann");
    assert_eq!(r.bucket, BUCKET);
    assert_eq!(r.object, object);
    assert_eq!(r.file_name, "Notes 1.txt");
    assert_eq!(r.content_type, "text/plain");
    assert_eq!(r.declared_size, 11);
    assert_eq!(r.state, FileState::Pending);

    // Owner-only: others see nothing, and cannot complete or delete; admins read.
    let stranger = call(s, "GET", &format!("/v1/files/{id}"), "bob", None).await?;
    assert_problem(&stranger, 404);
    for (method, path) in [
        ("POST", format!("/v1/files/{id}/complete")),
        ("DELETE", format!("/v1/files/{id}")),
    ] {
        let r = call(s, method, &path, "bob", None).await?;
        assert_problem(&r, 404);
    }
    let admin = call(s, "GET", &format!("/v1/files/{id}"), "admin", None).await?;
    assert_eq!(admin.status, StatusCode::OK, "{}", admin.body);
    assert_eq!(admin.body["owner"], "ann");
    let own = call(s, "GET", &format!("/v1/files/{id}"), "ann", None).await?;
    assert_eq!(own.body["state"], "pending");
    assert!(own.body.get("downloadUrl").is_none(), "{}", own.body);

    // The client uploads with the required headers.
    let mut put = reqwest::Client::new()
        .put(upload.clone())
        .body("hello files");
    for (k, v) in created.body["requiredHeaders"]
        .as_object()
        .into_iter()
        .flatten()
    {
        put = put.header(k.as_str(), v.as_str().unwrap_or_default());
    }
    let put = put.send().await?;
    assert!(put.status().is_success(), "{}", put.text().await?);

    // Complete queues exactly one finalize job, however often it is called.
    let done = call(s, "POST", &format!("/v1/files/{id}/complete"), "ann", None).await?;
    assert_eq!(done.status, StatusCode::ACCEPTED, "{}", done.body);
    assert_eq!(done.body["state"], "finalizing");
    let again = call(s, "POST", &format!("/v1/files/{id}/complete"), "ann", None).await?;
    assert_eq!(again.status, StatusCode::ACCEPTED, "{}", again.body);
    let stats = s.jobs.queue.stats().await?;
    assert_eq!(stats.waiting, 1, "{stats:?}");
    let r = record(&f.db, &id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no record"))?;
    assert_eq!(r.state, FileState::Finalizing);

    // Delete removes the object and the record.
    let objects = ObjectClient::emulator(&f.gcs.host());
    assert_eq!(objects.metadata(BUCKET, &object).await?.size, 11);
    let deleted = call(s, "DELETE", &format!("/v1/files/{id}"), "ann", None).await?;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{}", deleted.body);
    assert!(matches!(
        objects.metadata(BUCKET, &object).await,
        Err(ObjectError::NotFound)
    ));
    assert!(record(&f.db, &id).await?.is_none());
    let gone = call(s, "GET", &format!("/v1/files/{id}"), "ann", None).await?;
    assert_problem(&gone, 404);
    // Deleting again is "not found", not an error.
    let twice = call(s, "DELETE", &format!("/v1/files/{id}"), "ann", None).await?;
    assert_problem(&twice, 404);
    Ok(())
}

#[tokio::test]
async fn bad_input_is_refused_and_nothing_is_written() -> anyhow::Result<()> {
    let f = fixture(true).await?;
    let s = &f.state;
    let ok = json!({"fileName": "a.txt", "contentType": "text/plain", "size": 10});
    let with = |key: &str, value: Value| {
        let mut b = ok.clone();
        b[key] = value;
        b
    };
    let long = "a".repeat(256);
    let unprocessable = [
        with("fileName", json!("")),
        with("fileName", json!("..")),
        with("fileName", json!("../../etc/passwd")),
        with("fileName", json!("a/b.txt")),
        with("fileName", json!("a\\b.txt")),
        with("fileName", json!("a\nb.txt")),
        with("fileName", json!("a\u{0}.txt")),
        with("fileName", json!("x\u{202E}txt.exe")),
        with("fileName", json!(long)),
        with("contentType", json!("text/html")),
        with("contentType", json!("text/plain; charset=utf-8")),
        with("size", json!(MAX + 1)),
        with("size", json!(u64::MAX)),
    ];
    for body in &unprocessable {
        let r = create(s, "ann", body.clone()).await?;
        assert_problem(&r, 422);
    }
    let bad_request = [
        with("size", json!(-1)),
        with("size", json!("10")),
        with("extra", json!(true)),
        json!({"fileName": "a.txt", "contentType": "text/plain"}),
        json!([1]),
    ];
    for body in &bad_request {
        let r = create(s, "ann", body.clone()).await?;
        assert_problem(&r, 400);
    }
    let not_json = call(s, "POST", "/v1/files", "ann", Some("{".into())).await?;
    assert_problem(&not_json, 400);
    let huge = call(s, "POST", "/v1/files", "ann", Some(" ".repeat(2 << 20))).await?;
    assert_problem(&huge, 413);
    assert_eq!(record_count(&f.db).await?, 0, "nothing was written");
    assert_eq!(s.jobs.queue.stats().await?.waiting, 0);

    // Ids that cannot exist are "not found" without a lookup.
    for path in ["/v1/files/..%2Fx", "/v1/files/a%20b", "/v1/files/A_b"] {
        let r = call(s, "GET", path, "ann", None).await?;
        assert_problem(&r, 404);
        let r = call(s, "POST", &format!("{path}/complete"), "ann", None).await?;
        assert!(r.status.is_client_error(), "{path}: {}", r.status);
    }
    // Clients cannot publish finalize jobs themselves (they would settle others' files).
    let job = call(
        s,
        "POST",
        "/v1/jobs",
        "ann",
        Some(json!({"type": "file.finalize", "payload": {"fileId": "x"}}).to_string()),
    )
    .await?;
    assert_problem(&job, 422);
    assert_eq!(s.jobs.queue.stats().await?.waiting, 0);

    // "files" is not a document collection.
    let doc = call(s, "GET", "/v1/files", "ann", None).await?;
    assert_problem(&doc, 405);

    // The server refuses URL lifetimes over the V4 maximum of 7 days.
    let (redis, fs) = ("redis://127.0.0.1:1", "127.0.0.1:1");
    for flag in ["--files-upload-url-seconds", "--files-download-url-seconds"] {
        let mut flags = base_flags(redis, fs);
        flags.extend([flag, "604801"]);
        let err = serve_args(&flags)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("604801"), "{flag}: {err}");
    }
    // A malformed signing key stops the server at start, naming the file.
    let bad_key = f.dir.path().join("bad.json");
    std::fs::write(
        &bad_key,
        r#"{"type": "service_account", "client_email": "a@b"}"#,
    )?;
    let bad_key = bad_key.display().to_string();
    let mut flags = base_flags(redis, fs);
    flags.extend([
        "--storage-bucket",
        BUCKET,
        "--storage-signing-key-file",
        &bad_key,
    ]);
    let args = serve_args(&flags)?;
    let err = api_server::files::Files::from_args(&args.files, f.db.clone(), Metrics::new())
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.contains("bad.json") && err.contains("private_key"),
        "{err}"
    );
    // A bucket with no way to sign (no key, no signBlob account, no emulator) is refused.
    if std::env::var_os("GOOGLE_APPLICATION_CREDENTIALS").is_none() {
        let mut flags = base_flags(redis, fs);
        flags.extend(["--storage-bucket", BUCKET]);
        let args = serve_args(&flags)?;
        let r = api_server::files::Files::from_args(&args.files, f.db.clone(), Metrics::new());
        assert!(
            matches!(r, Err(api_server::files::FilesSetupError::NoSigner)),
            "{:?}",
            r.err()
        );
    }
    Ok(())
}

#[tokio::test]
async fn settled_files_are_not_queued_again_and_ready_ones_get_a_pinned_download_url()
-> anyhow::Result<()> {
    let f = fixture(true).await?;
    let s = &f.state;
    let created = create(
        s,
        "ann",
        json!({"fileName": "p.png", "contentType": "image/png", "size": 4}),
    )
    .await?;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let id = created.body["id"].as_str().unwrap_or_default().to_string();

    // Settle the record as the worker would.
    let mut r = record(&f.db, &id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no record"))?;
    r.state = FileState::Ready;
    r.size = Some(4);
    r.generation = Some(1234);
    f.db.fluent()
        .update()
        .in_col("files")
        .document_id(&id)
        .object(&r)
        .execute::<FileRecord>()
        .await?;

    let done = call(s, "POST", &format!("/v1/files/{id}/complete"), "ann", None).await?;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    assert_eq!(done.body["state"], "ready");
    assert_eq!(s.jobs.queue.stats().await?.waiting, 0, "nothing queued");

    let got = call(s, "GET", &format!("/v1/files/{id}"), "ann", None).await?;
    assert_eq!(got.status, StatusCode::OK, "{}", got.body);
    assert_eq!(header_of(&got, header::CACHE_CONTROL), "no-store");
    assert_eq!(got.body["generation"], "1234");
    let url = reqwest::Url::parse(got.body["downloadUrl"].as_str().unwrap_or_default())?;
    assert_eq!(url.path(), format!("/{BUCKET}/users/ann/{id}/p.png"));
    let q = query_of(&url);
    assert_eq!(q["generation"], "1234");
    assert_eq!(q["X-Goog-Expires"], "300");
    assert_eq!(q["X-Goog-SignedHeaders"], "host");
    assert!(got.body["downloadExpiresAt"].is_string());
    Ok(())
}

#[tokio::test]
async fn without_a_bucket_the_files_api_answers_503() -> anyhow::Result<()> {
    let f = fixture(false).await?;
    let s = &f.state;
    let body = json!({"fileName": "a.txt", "contentType": "text/plain", "size": 1}).to_string();
    let id = "0123456789abcdef0123456789ab";
    for (method, path, body) in [
        ("POST", "/v1/files".to_string(), Some(body)),
        ("POST", format!("/v1/files/{id}/complete"), None),
        ("GET", format!("/v1/files/{id}"), None),
        ("DELETE", format!("/v1/files/{id}"), None),
    ] {
        let r = call(s, method, &path, "ann", body).await?;
        assert_problem(&r, 503);
        assert!(
            r.body["detail"]
                .as_str()
                .unwrap_or_default()
                .contains("STORAGE_BUCKET"),
            "{}",
            r.body
        );
    }
    assert_eq!(record_count(&f.db).await?, 0);

    // The binary: a bucket with no way to sign serves everything but files; a configured key
    // that is malformed stops it at start, naming the file.
    if std::env::var_os("GOOGLE_APPLICATION_CREDENTIALS").is_none() {
        let env = |extra: &[(&'static str, String)]| {
            let mut env = vec![
                ("REDIS_URL", f.redis.url()),
                ("GOOGLE_CLOUD_PROJECT", PROJECT.to_string()),
                ("FIRESTORE_EMULATOR_HOST", f.firestore.host()),
                ("FIREBASE_AUTH_EMULATOR_HOST", "127.0.0.1:9".to_string()),
                ("STORAGE_BUCKET", BUCKET.to_string()),
            ];
            env.extend_from_slice(extra);
            env
        };
        let server = ApiProcess::start(&env(&[])).await?;
        let r = reqwest::Client::new()
            .get(server.url(&format!("/v1/files/{id}")))
            .bearer_auth(caller_token(PROJECT, "ann"))
            .send()
            .await?;
        assert_eq!(r.status(), 503);
        let me = reqwest::Client::new()
            .get(server.url("/v1/me"))
            .bearer_auth(caller_token(PROJECT, "ann"))
            .send()
            .await?;
        assert_eq!(me.status(), 200);
        assert!(server.log_text().contains("the Files API is off"));
        drop(server);

        let bad_key = f.dir.path().join("broken-key.json");
        std::fs::write(&bad_key, "not json")?;
        let err = ApiProcess::start(&env(&[(
            "STORAGE_SIGNING_KEY_FILE",
            bad_key.display().to_string(),
        )]))
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(
            err.contains("exited") && err.contains("broken-key.json"),
            "{err}"
        );
    }
    Ok(())
}
