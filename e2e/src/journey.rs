//! The user journey through the public API: two signed-up users, a document one of them
//! creates and reads back (and the other cannot see), and a job the first publishes that a
//! worker completes. It talks to base URLs only, so the same code runs on kind (through
//! port-forwards) and against processes started on this machine.

use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use testenv::{AuthEmulatorClient, SignedUpUser};

/// Where the journey finds the system.
pub struct Endpoints {
    /// The public API, e.g. `http://127.0.0.1:18080`.
    pub api: String,
    /// The Auth emulator the api-servers trust.
    pub auth: AuthEmulatorClient,
    /// The collection the users write to (one of the api-server's `API_COLLECTIONS`).
    pub collection: String,
}

/// What the journey saw, for the caller to print.
#[derive(Debug)]
pub struct Seen {
    pub document_url: String,
    pub job_id: String,
    pub job_attempts: u64,
}

const JOB_TIMEOUT: Duration = Duration::from_secs(90);

pub async fn run(endpoints: &Endpoints) -> anyhow::Result<Seen> {
    let http = reqwest::Client::new();
    let api = endpoints.api.trim_end_matches('/');
    // Unique per run, so a kept cluster can run the journey again.
    let run_id = format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis()
    );
    let alice = sign_up(&endpoints.auth, &format!("alice-{run_id}@e2e.test")).await?;
    let bob = sign_up(&endpoints.auth, &format!("bob-{run_id}@e2e.test")).await?;

    let me = call(&http, Method::GET, &format!("{api}/v1/me"), &alice, None).await?;
    ensure!(
        me.status == StatusCode::OK && me.body["uid"] == alice.uid.as_str(),
        "GET /v1/me answered {} {}",
        me.status,
        me.body
    );

    let note = json!({"title": "e2e", "body": format!("written by run {run_id}")});
    let created = call(
        &http,
        Method::POST,
        &format!("{api}/v1/{}", endpoints.collection),
        &alice,
        Some(&note),
    )
    .await?;
    ensure!(
        created.status == StatusCode::CREATED,
        "creating a document answered {} {}",
        created.status,
        created.body
    );
    let location = created.location.context("201 without a Location header")?;
    let document_url = absolute(api, &location);
    let read = call(&http, Method::GET, &document_url, &alice, None).await?;
    ensure!(
        read.status == StatusCode::OK,
        "reading the document back answered {} {}",
        read.status,
        read.body
    );
    ensure!(
        read.body["data"] == note && read.body["owner"] == alice.uid.as_str(),
        "the document read back differs: wrote {note} as {}, read {}",
        alice.uid,
        read.body
    );
    ensure!(
        read.etag.is_some() && read.etag == created.etag,
        "ETag changed between create ({:?}) and read ({:?}) with no write",
        created.etag,
        read.etag
    );
    let foreign = call(&http, Method::GET, &document_url, &bob, None).await?;
    ensure!(
        foreign.status == StatusCode::NOT_FOUND,
        "another user reading the document answered {} (must be 404)",
        foreign.status
    );
    println!("        document {location} created and read back; another user gets 404");

    let published = call(
        &http,
        Method::POST,
        &format!("{api}/v1/jobs"),
        &alice,
        Some(&json!({"type": "noop", "payload": {"run": run_id}})),
    )
    .await?;
    ensure!(
        published.status == StatusCode::ACCEPTED,
        "publishing a job answered {} {}",
        published.status,
        published.body
    );
    let job_id = published.body["id"]
        .as_str()
        .context("202 without a job id")?
        .to_string();
    let job_url = format!("{api}/v1/jobs/{job_id}");
    let deadline = Instant::now() + JOB_TIMEOUT;
    let job = loop {
        let job = call(&http, Method::GET, &job_url, &alice, None).await?;
        ensure!(
            job.status == StatusCode::OK,
            "GET {job_url} answered {} {}",
            job.status,
            job.body
        );
        match job.body["state"].as_str() {
            Some("completed") => break job.body,
            Some("failed" | "dead") => bail!("the job failed: {}", job.body),
            _ if Instant::now() > deadline => {
                bail!(
                    "no worker completed the job within {JOB_TIMEOUT:?}: {}",
                    job.body
                )
            }
            _ => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    };
    let foreign = call(&http, Method::GET, &job_url, &bob, None).await?;
    ensure!(
        foreign.status == StatusCode::NOT_FOUND,
        "another user reading the job answered {} (must be 404)",
        foreign.status
    );
    let job_attempts = job["attempts"].as_u64().unwrap_or_default();
    println!("        job {job_id} completed by a worker after {job_attempts} attempt(s)");
    Ok(Seen {
        document_url,
        job_id,
        job_attempts,
    })
}

async fn sign_up(auth: &AuthEmulatorClient, email: &str) -> anyhow::Result<SignedUpUser> {
    auth.sign_up(email, "e2e-password-1")
        .await
        .with_context(|| format!("signing up {email} with the Auth emulator"))
}

struct Answer {
    status: StatusCode,
    body: Value,
    etag: Option<String>,
    location: Option<String>,
}

async fn call(
    http: &reqwest::Client,
    method: Method,
    url: &str,
    user: &SignedUpUser,
    body: Option<&Value>,
) -> anyhow::Result<Answer> {
    let mut request = http
        .request(method.clone(), url)
        .bearer_auth(&user.id_token)
        .timeout(Duration::from_secs(30));
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request
        .send()
        .await
        .with_context(|| format!("{method} {url}"))?;
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let (status, etag, location) = (response.status(), header("etag"), header("location"));
    let text = response.text().await?;
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    Ok(Answer {
        status,
        body,
        etag,
        location,
    })
}

fn absolute(api: &str, location: &str) -> String {
    if location.starts_with("http://") || location.starts_with("https://") {
        location.to_string()
    } else {
        format!("{api}{location}")
    }
}
