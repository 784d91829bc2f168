//! Property-based run of the served OpenAPI document with schemathesis (PyPI, pinned in
//! tools/python/requirements.txt): no 5xx, and responses match the documented status codes,
//! content types and schemas. Runs against a real api-server process on real Redis and the
//! Firestore emulator; callers use emulator-mode tokens.
//!
//! Needs the venv from tools/python/setup.sh (or SCALABLE_PYTHON's bin dir); without it the
//! test fails on purpose, as a skipped fuzz run proves nothing.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::*;

const PROJECT: &str = "demo-fuzz";

fn schemathesis() -> PathBuf {
    let bin = match std::env::var_os("SCALABLE_PYTHON") {
        Some(python) => PathBuf::from(python).with_file_name("schemathesis"),
        None => std::env::var_os("SCALABLE_CACHE")
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/scalableapp"))
            })
            .unwrap_or_default()
            .join("venv/bin/schemathesis"),
    };
    assert!(
        bin.exists(),
        "{} is missing: run tools/python/setup.sh",
        bin.display()
    );
    bin
}

#[tokio::test]
async fn schemathesis_finds_no_server_errors_or_schema_violations() -> anyhow::Result<()> {
    let redis = testenv::RedisServer::start().await?;
    let firestore = testenv::FirestoreEmulator::start().await?;
    // The real Auth emulator, so that fuzzing POST /v1/auth/revoke reaches Identity Toolkit.
    let auth = testenv::AuthEmulator::start(PROJECT).await?;
    let gcs = testenv::FakeGcsServer::start().await?;
    gcs.create_bucket("fuzz-uploads").await?;
    let server = ApiProcess::start(&[
        ("REDIS_URL", redis.url()),
        ("GOOGLE_CLOUD_PROJECT", PROJECT.to_string()),
        ("FIRESTORE_EMULATOR_HOST", firestore.host()),
        ("FIREBASE_AUTH_EMULATOR_HOST", auth.host()),
        ("API_RATE_LIMIT", "1000000".to_string()),
        // A standalone Redis has no replica to confirm jobs (every POST /v1/jobs would be 503).
        ("API_JOBS_DURABLE_REPLICAS", "0".to_string()),
        // The Files API on fake-gcs-server, signing with the emulator's throwaway key.
        ("STORAGE_BUCKET", "fuzz-uploads".to_string()),
        ("STORAGE_EMULATOR_HOST", gcs.host()),
    ])
    .await?;
    // Revoking one's own tokens is a valid request: the fuzzer gets a user of its own for
    // that operation, so the other operations keep a live token.
    let documents = run(
        &server,
        &auth,
        "fuzzer",
        &["--exclude-path-regex", "^/v1/(auth/revoke|jobs|files)"],
    )
    .await?;
    assert!(documents.contains("/v1/{collection}"), "{documents}");
    // Every run on one worker: on two, CPython 3.11.7's thread-unsafe `ast.parse` (hypothesis
    // describing a filter lambda) intermittently aborted the coverage phase with "AST
    // constructor recursion depth mismatch", a fuzzer crash rather than a finding (seen on the
    // documents run too). The jobs routes get a run of their own.
    let jobs = run(
        &server,
        &auth,
        "publisher",
        // No stateful phase: the links it infers from Location lead to the excluded
        // `/v1/{collection}/{id}`; tests/jobs.rs reads published jobs back.
        &[
            "--include-path-regex",
            "^/v1/jobs",
            "--phases",
            "examples,coverage,fuzzing",
        ],
    )
    .await?;
    // Both jobs operations were selected and exercised.
    assert!(jobs.contains("Tested: 2\n"), "{jobs}");
    // The files routes on their own too, for the same reason. The stateful phase follows the
    // Location of created files into get, complete and delete.
    let files = run(
        &server,
        &auth,
        "uploader",
        &["--include-path-regex", "^/v1/files"],
    )
    .await?;
    assert!(files.contains("Tested: 4\n"), "{files}");
    run(
        &server,
        &auth,
        "revoker",
        &["--include-path", "/v1/auth/revoke"],
    )
    .await?;
    Ok(())
}

/// One schemathesis run as `user`; returns its output, failing the test when it fails.
async fn run(
    server: &ApiProcess,
    auth: &testenv::AuthEmulator,
    user: &str,
    filter: &[&str],
) -> anyhow::Result<String> {
    let bin = schemathesis();
    let signed_up = auth
        .sign_up(&format!("{user}@example.com"), "fuzz fuzz fuzz")
        .await?;
    let token = signed_up.id_token;
    let filter: Vec<String> = filter.iter().map(|s| s.to_string()).collect();
    let dir = tempfile::tempdir()?;
    // Path parameters: the allow-listed collection, so operations get past the 404.
    let config = dir.path().join("schemathesis.toml");
    std::fs::write(
        &config,
        "[parameters]\n\"path.collection\" = \"notes\"\n\n[generation]\nallow-x00 = false\n",
    )?;
    let bin2 = bin.clone();
    let url = server.url("/openapi.json");
    let config2 = config.clone();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(bin2)
            .arg("--config-file")
            .arg(&config2)
            .args(["run", &url])
            .args(["--checks", "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance"])
            .args(["--max-examples", "30", "--seed", "4", "--no-color"])
            // One worker: see the comment in the test above.
            .args(["--workers", "1"])
            .args(["--header", &format!("Authorization: Bearer {token}")])
            .args(&filter)
            .env("SCHEMATHESIS_HOOKS", "")
            .current_dir(dir.path())
            .output()
    })
    .await??;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}\n{stderr}");
    let log = server.log_text();
    let tail: Vec<&str> = log.lines().rev().take(20).collect();
    assert!(
        output.status.success(),
        "schemathesis failed:\n{stdout}\n{stderr}\nserver log tail:\n{}",
        tail.join("\n")
    );
    assert!(
        !stdout.contains("Authentication failed"),
        "the fuzzer's token was refused:\n{stdout}"
    );
    Ok(stdout)
}
