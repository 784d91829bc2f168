//! The files part of the demo: a user registers a file through the API, uploads the bytes
//! straight to the bucket (fake-gcs-server) with the signed URL, completes it, a worker checks
//! the object and marks it ready, and the signed download URL returns the same bytes.

use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use serde_json::json;

use super::api::{ApiTier, call};
use super::{show, step};

const CONTENT: &[u8] =
    b"Hello from the ScalableApp demo: these bytes went straight to the bucket.\n";

pub(super) async fn journey(api: &ApiTier) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let lb = &api.lb;

    step("Files: register an upload through the API and get a signed URL");
    let body = json!({"fileName": "hello.txt", "contentType": "text/plain", "size": CONTENT.len()});
    let (status, served_by, created, _) = call(
        &http,
        "POST",
        &format!("{lb}/v1/files"),
        &api.token,
        Some(&body),
        None,
    )
    .await?;
    ensure!(status == 201, "POST /v1/files answered {status}: {created}");
    let id = created["id"].as_str().context("no file id")?.to_string();
    let upload_url = created["uploadUrl"].as_str().context("no uploadUrl")?;
    show(format!(
        "POST /v1/files {body} → {status} (served by {served_by}): id {id}, state {}",
        created["state"]
    ));
    show(format!(
        "{} {upload_url}",
        created["method"].as_str().unwrap_or("PUT")
    ));
    show(format!("required headers: {}", created["requiredHeaders"]));

    step("Files: the client uploads the bytes straight to the bucket with that URL");
    let mut put = http.put(upload_url).body(CONTENT);
    for (name, value) in created["requiredHeaders"].as_object().into_iter().flatten() {
        put = put.header(name.as_str(), value.as_str().unwrap_or_default());
    }
    let uploaded = put.send().await.context("PUT to the signed URL")?;
    ensure!(
        uploaded.status().is_success(),
        "the bucket refused the upload: {} {}",
        uploaded.status(),
        uploaded.text().await.unwrap_or_default()
    );
    show(format!(
        "PUT {} bytes → {} (fake-gcs-server; real Cloud Storage checks the signature)",
        CONTENT.len(),
        uploaded.status()
    ));

    step("Files: complete it; a worker checks the object and marks the file ready");
    let file_url = format!("{lb}/v1/files/{id}");
    let (status, _, completing, _) = call(
        &http,
        "POST",
        &format!("{file_url}/complete"),
        &api.token,
        None,
        None,
    )
    .await?;
    ensure!(
        status == 202,
        "POST /v1/files/{id}/complete answered {status}: {completing}"
    );
    show(format!(
        "POST /v1/files/{id}/complete → {status}: state {}",
        completing["state"]
    ));
    let deadline = Instant::now() + Duration::from_secs(30);
    let file = loop {
        let (status, _, file, _) = call(&http, "GET", &file_url, &api.token, None, None).await?;
        ensure!(status == 200, "GET {file_url} answered {status}: {file}");
        match file["state"].as_str() {
            Some("ready") => break file,
            Some("rejected") => bail!("the worker rejected the upload: {}", file["reason"]),
            _ if Instant::now() > deadline => bail!("file {id} not finalized: {file}"),
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    show(format!(
        "GET /v1/files/{id} → state {}, size {}, md5 {}, crc32c {}, generation {}",
        file["state"], file["size"], file["md5Hash"], file["crc32c"], file["generation"]
    ));

    step("Files: download it back through the short-lived signed URL");
    let download_url = file["downloadUrl"]
        .as_str()
        .context("a ready file has no downloadUrl")?;
    let downloaded = http.get(download_url).send().await?;
    ensure!(
        downloaded.status().is_success(),
        "download answered {}",
        downloaded.status()
    );
    let bytes = downloaded.bytes().await?;
    ensure!(
        bytes.as_ref() == CONTENT,
        "downloaded {} bytes that differ from the {} uploaded",
        bytes.len(),
        CONTENT.len()
    );
    show(format!(
        "GET {download_url}\n→ the same {} bytes: {:?}",
        bytes.len(),
        String::from_utf8_lossy(&bytes).trim_end()
    ));
    Ok(())
}
