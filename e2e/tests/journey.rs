//! The e2e user journey (step 8 of the suite, which needs pods on kind) run here against the
//! same binaries as processes: an api-server and a worker on a Sentinel-managed Redis with the
//! Firestore and Auth emulators. What kind adds on top is only the port-forwards.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::bail;
use testenv::{AuthEmulator, DEMO_PROJECT, FirestoreEmulator, SentinelGroup, Service, free_port};

#[tokio::test]
async fn user_journey_against_local_processes() -> anyhow::Result<()> {
    let (sentinels, firestore, auth) = tokio::try_join!(
        SentinelGroup::start(),
        FirestoreEmulator::start(),
        AuthEmulator::start(DEMO_PROJECT),
    )?;
    let dir = tempfile::Builder::new().prefix("e2e-journey-").tempdir()?;
    let sentinel_addrs = sentinels
        .sentinel_ports()
        .iter()
        .map(|p| format!("127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(",");
    let common = |cmd: &mut Command| {
        cmd.env("REDIS_SENTINELS", &sentinel_addrs)
            .env("REDIS_MASTER_NAME", sentinels.master_name())
            .env("GOOGLE_CLOUD_PROJECT", DEMO_PROJECT)
            .env("FIRESTORE_EMULATOR_HOST", firestore.host())
            .env("RUST_LOG", "warn");
    };

    let (port, admin_port, worker_admin_port) = (free_port(), free_port(), free_port());
    let mut api = Command::new(e2e::workspace_binary("api-server")?);
    api.arg("serve")
        .env("API_LISTEN", format!("127.0.0.1:{port}"))
        .env("API_ADMIN_LISTEN", format!("127.0.0.1:{admin_port}"))
        .env("FIREBASE_AUTH_EMULATOR_HOST", auth.host())
        .env("API_COLLECTIONS", "notes");
    common(&mut api);
    let mut api = Service::spawn("api-server", api, &dir.path().join("api-server.log"))?;

    let mut worker = Command::new(e2e::workspace_binary("worker")?);
    worker
        .arg("run")
        .env("WORKER_ADMIN_ADDR", "127.0.0.1")
        .env("WORKER_ADMIN_PORT", worker_admin_port.to_string())
        .env("WORKER_ID", "e2e-journey-worker");
    common(&mut worker);
    let mut worker = Service::spawn("worker", worker, &dir.path().join("worker.log"))?;

    ready(&mut api, &format!("http://127.0.0.1:{admin_port}/readyz")).await?;
    ready(
        &mut worker,
        &format!("http://127.0.0.1:{worker_admin_port}/readyz"),
    )
    .await?;

    let endpoints = e2e::journey::Endpoints {
        api: format!("http://127.0.0.1:{port}"),
        auth: auth.client().clone(),
        collection: "notes".to_string(),
    };
    let seen = match e2e::journey::run(&endpoints).await {
        Ok(seen) => seen,
        Err(e) => bail!(
            "{e:#}\napi-server log:\n{}\nworker log:\n{}",
            api.log_tail(40),
            worker.log_tail(40)
        ),
    };
    assert!(seen.job_attempts >= 1, "{seen:?}");
    assert!(
        seen.document_url
            .starts_with(&format!("http://127.0.0.1:{port}/v1/notes/")),
        "{seen:?}"
    );
    Ok(())
}

async fn ready(service: &mut Service, url: &str) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        service.check_running()?;
        match http.get(url).send().await {
            Ok(r) if r.status().is_success() => return Ok(()),
            _ if Instant::now() > deadline => {
                bail!("{url} not ready in 60 s:\n{}", service.log_tail(40))
            }
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}
