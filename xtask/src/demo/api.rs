//! The api-server part of the demo: three api-server processes behind nginx (the local load
//! balancer), and a user who signs up with the Auth emulator and works with documents through
//! the balancer.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use serde_json::{Value, json};
use testenv::{DEMO_BUCKET, DEMO_PROJECT, Environment, Service, Tools, free_port};

use super::{show, sibling_binary, step};

const API_SERVERS: usize = 3;

/// One api-server process and its admin address.
struct ApiServer {
    _service: Service,
    admin: String,
}

/// The running API tier, kept alive for the jobs part of the demo.
pub(super) struct ApiTier {
    _servers: Vec<ApiServer>,
    _nginx: Service,
    /// The load balancer's base URL.
    pub lb: String,
    /// A signed-up user's ID token.
    pub token: String,
    pub dir: tempfile::TempDir,
}

/// `host:port` of each sentinel: api-servers and workers find the Redis master through them.
pub(super) fn sentinels(env: &Environment) -> String {
    env.sentinels
        .sentinel_ports()
        .iter()
        .map(|p| format!("127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(",")
}

pub(super) async fn journey(env: &Environment) -> anyhow::Result<ApiTier> {
    let dir = tempfile::Builder::new().prefix("demo-api-").tempdir()?;

    step(
        "API: start three api-server processes (Redis through Sentinel, Firestore and Auth emulators)",
    );
    let mut servers = Vec::new();
    let mut upstreams = Vec::new();
    for i in 0..API_SERVERS {
        let (port, admin_port) = (free_port(), free_port());
        let mut cmd = Command::new(sibling_binary("api-server")?);
        cmd.arg("serve")
            .env("API_LISTEN", format!("127.0.0.1:{port}"))
            .env("API_ADMIN_LISTEN", format!("127.0.0.1:{admin_port}"))
            .env("REDIS_SENTINELS", sentinels(env))
            .env("REDIS_MASTER_NAME", env.sentinels.master_name())
            .env("GOOGLE_CLOUD_PROJECT", DEMO_PROJECT)
            .env("FIRESTORE_EMULATOR_HOST", env.firestore.host())
            // Emulator mode: accepts the emulator's unsigned tokens (and logs a warning).
            .env("FIREBASE_AUTH_EMULATOR_HOST", env.auth.host())
            .env("API_COLLECTIONS", "notes")
            // Files API: URLs signed for fake-gcs-server (with a throwaway key: it checks none).
            .env("STORAGE_BUCKET", DEMO_BUCKET)
            .env("STORAGE_EMULATOR_HOST", env.storage.host())
            .env("RUST_LOG", "warn");
        let log = dir.path().join(format!("api-server-{i}.log"));
        servers.push(ApiServer {
            _service: Service::spawn(format!("api-server-{i}"), cmd, &log)?,
            admin: format!("http://127.0.0.1:{admin_port}"),
        });
        upstreams.push(format!("127.0.0.1:{port}"));
    }
    let http = reqwest::Client::new();
    for server in &servers {
        wait_ready(&http, &format!("{}/readyz", server.admin)).await?;
    }
    show(format!("ready: {}", upstreams.join(", ")));

    step("API: nginx balances across them");
    let lb_port = free_port();
    let conf = dir.path().join("nginx.conf");
    std::fs::write(&conf, nginx_conf(dir.path(), lb_port, &upstreams))?;
    let mut nginx = Command::new(Tools::new().nginx()?);
    nginx
        .arg("-p")
        .arg(dir.path())
        .arg("-c")
        .arg(&conf)
        .args(["-g", "daemon off;"]);
    let nginx = Service::spawn("nginx", nginx, &dir.path().join("nginx.out"))?;
    let lb = format!("http://127.0.0.1:{lb_port}");
    wait_ready(&http, &format!("{lb}/openapi.json")).await?;
    show(format!("load balancer: {lb}"));

    step("API: a user signs up with the Auth emulator and calls the API through the balancer");
    let user = env.auth.sign_up("ada@example.com", "demo-password").await?;
    let token = user.id_token.as_str();
    let lb_url = lb.clone();
    let (status, served_by, me, _) =
        call(&http, "GET", &format!("{lb}/v1/me"), token, None, None).await?;
    ensure!(status == 200, "GET /v1/me answered {status}: {me}");
    show(format!(
        "GET /v1/me → {status} (served by {served_by}): uid {}",
        me["uid"]
    ));

    step("API: create, read (with ETag), and list documents");
    let mut ids = Vec::new();
    for title in ["Buy milk", "Ship the operator"] {
        let body = json!({"title": title, "done": false});
        let (status, served_by, doc, _) = call(
            &http,
            "POST",
            &format!("{lb}/v1/notes"),
            token,
            Some(&body),
            None,
        )
        .await?;
        ensure!(status == 201, "POST /v1/notes answered {status}: {doc}");
        let id = doc["id"]
            .as_str()
            .context("created document has no id")?
            .to_string();
        show(format!(
            "POST /v1/notes {body} → {status} (served by {served_by}): id {id}"
        ));
        ids.push(id);
    }
    let url = format!("{lb}/v1/notes/{}", ids[0]);
    let (status, served_by, doc, etag) = call(&http, "GET", &url, token, None, None).await?;
    ensure!(status == 200, "GET answered {status}: {doc}");
    show(format!(
        "GET /v1/notes/{} → {status} (served by {served_by}), ETag {etag}: {doc}",
        ids[0]
    ));
    let (status, served_by, _, _) = call(&http, "GET", &url, token, None, Some(&etag)).await?;
    ensure!(status == 304, "a conditional GET answered {status}");
    show(format!(
        "GET again with If-None-Match → {status} Not Modified (served by {served_by})"
    ));
    let (status, served_by, page, _) = call(
        &http,
        "GET",
        &format!("{lb}/v1/notes?limit=10"),
        token,
        None,
        None,
    )
    .await?;
    ensure!(status == 200, "list answered {status}: {page}");
    show(format!(
        "GET /v1/notes?limit=10 → {status} (served by {served_by}): {page}"
    ));
    Ok(ApiTier {
        _servers: servers,
        _nginx: nginx,
        lb: lb_url,
        token: user.id_token.clone(),
        dir,
    })
}

pub(super) async fn wait_ready(http: &reqwest::Client, url: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match http.get(url).send().await {
            Ok(r) if r.status().is_success() => return Ok(()),
            Ok(r) if Instant::now() > deadline => bail!("{url} answered {}", r.status()),
            Err(e) if Instant::now() > deadline => bail!("{url}: {e}"),
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Sends one request; returns status, the upstream nginx chose, the JSON body and the ETag.
pub(super) async fn call(
    http: &reqwest::Client,
    method: &str,
    url: &str,
    token: &str,
    body: Option<&Value>,
    if_none_match: Option<&str>,
) -> anyhow::Result<(u16, String, Value, String)> {
    let method = reqwest::Method::from_bytes(method.as_bytes())?;
    let mut request = http.request(method, url).bearer_auth(token);
    if let Some(body) = body {
        request = request.json(body);
    }
    if let Some(etag) = if_none_match {
        request = request.header("If-None-Match", etag);
    }
    let response = request.send().await.with_context(|| url.to_string())?;
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let (status, served_by, etag) = (
        response.status().as_u16(),
        header("x-upstream"),
        header("etag"),
    );
    let text = response.text().await?;
    let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Ok((status, served_by, json, etag))
}

fn nginx_conf(dir: &std::path::Path, port: u16, upstreams: &[String]) -> String {
    let d = dir.display();
    let servers: String = upstreams
        .iter()
        .map(|u| format!("    server {u};\n"))
        .collect();
    format!(
        "worker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/nginx-error.log warn;\n\
         events {{ worker_connections 256; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
           fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
           upstream api {{\n{servers}    keepalive 16;\n  }}\n\
           server {{\n    listen 127.0.0.1:{port};\n    location / {{\n      proxy_pass http://api;\n\
               proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n\
               proxy_set_header X-Forwarded-For $remote_addr;\n\
               add_header X-Upstream $upstream_addr always;\n    }}\n  }}\n}}\n"
    )
}
