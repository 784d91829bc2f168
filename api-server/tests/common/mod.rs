//! Shared test fixtures: a stand-in for Google's x509 key endpoint, token minting, server
//! configuration, and api-server child processes.
//!
//! Only Google's production endpoints are replaced: the key endpoint is a local axum server
//! serving certificates for RSA keys the test generates (Google's real keys cannot sign test
//! tokens). Redis, Firestore and the Auth emulator are the real thing, from `testenv`.

#![allow(dead_code)] // each test binary uses a different part

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, anyhow};
use aws_lc_rs::encoding::AsDer as _;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::IntoResponse;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use clap::Parser;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Map, Value, json};

pub const BIN: &str = env!("CARGO_BIN_EXE_api-server");

/// One RSA key with its self-signed certificate, as Google publishes them.
pub struct TestKey {
    pub kid: String,
    pub cert_pem: String,
    pub encoding: EncodingKey,
}

impl TestKey {
    pub fn generate(kid: &str) -> anyhow::Result<Self> {
        let rsa = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
            .map_err(|e| anyhow!("RSA keygen: {e}"))?;
        let pkcs8 = rsa.as_der().map_err(|e| anyhow!("PKCS#8: {e}"))?;
        let kp = rcgen::KeyPair::try_from(pkcs8.as_ref())?;
        let cert = rcgen::CertificateParams::new(Vec::<String>::new())?.self_signed(&kp)?;
        Ok(Self {
            kid: kid.to_string(),
            cert_pem: cert.pem(),
            encoding: EncodingKey::from_rsa_pem(kp.serialize_pem().as_bytes())?,
        })
    }

    pub fn sign(&self, claims: &Value) -> anyhow::Result<String> {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(self.kid.clone());
        Ok(jsonwebtoken::encode(&header, claims, &self.encoding)?)
    }
}

/// The stand-in for `https://www.googleapis.com/robot/v1/metadata/x509/...`.
pub struct KeyServer {
    pub addr: SocketAddr,
    pub hits: Arc<AtomicU64>,
    pub down: Arc<AtomicBool>,
    /// The `traceparent` header of the last fetch, if any.
    pub traceparent: Arc<std::sync::Mutex<Option<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl KeyServer {
    pub async fn start(keys: &[&TestKey], max_age: u64) -> anyhow::Result<Self> {
        let certs: HashMap<String, String> = keys
            .iter()
            .map(|k| (k.kid.clone(), k.cert_pem.clone()))
            .collect();
        let body = serde_json::to_string(&certs)?;
        let hits = Arc::new(AtomicU64::new(0));
        let down = Arc::new(AtomicBool::new(false));
        let traceparent = Arc::new(std::sync::Mutex::new(None));
        let (h, d, tp) = (hits.clone(), down.clone(), traceparent.clone());
        let app = axum::Router::new().route(
            "/keys",
            axum::routing::get(move |headers: axum::http::HeaderMap| {
                let (h, d, tp, body) = (h.clone(), d.clone(), tp.clone(), body.clone());
                async move {
                    h.fetch_add(1, Ordering::SeqCst);
                    let seen = headers
                        .get("traceparent")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string);
                    *tp.lock().unwrap_or_else(|p| p.into_inner()) = seen;
                    if d.load(Ordering::SeqCst) {
                        return StatusCode::SERVICE_UNAVAILABLE.into_response();
                    }
                    let mut r = body.into_response();
                    r.headers_mut().insert(
                        header::CACHE_CONTROL,
                        HeaderValue::from_str(&format!(
                            "public, max-age={max_age}, must-revalidate"
                        ))
                        .unwrap_or(HeaderValue::from_static("max-age=60")),
                    );
                    r
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            addr,
            hits,
            down,
            traceparent,
            task,
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}/keys", self.addr)
    }

    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for KeyServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Claims of a valid ID token for `uid` in `project`.
pub fn id_claims(project: &str, uid: &str) -> Value {
    let now = now();
    json!({
        "iss": format!("https://securetoken.google.com/{project}"),
        "aud": project,
        "sub": uid,
        "user_id": uid,
        "iat": now - 60,
        "exp": now + 3600,
        "auth_time": now - 120,
        "firebase": {"sign_in_provider": "password", "identities": {}},
    })
}

/// An unsigned token like the Auth emulator's (`alg: none`).
/// An emulator-mode (unsigned) ID token for `uid` of `project`; the uid `admin` carries the
/// `admin` claim.
pub fn caller_token(project: &str, uid: &str) -> String {
    let mut claims = id_claims(project, uid);
    if uid == "admin" {
        claims["admin"] = serde_json::json!(true);
    }
    unsigned(&claims)
}

pub fn unsigned(claims: &Value) -> String {
    let h = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let p = URL_SAFE_NO_PAD.encode(claims.to_string().as_bytes());
    format!("{h}.{p}.")
}

pub fn edit(mut v: Value, f: impl FnOnce(&mut Map<String, Value>)) -> Value {
    if let Some(m) = v.as_object_mut() {
        f(m);
    }
    v
}

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: api_server::config::ServeArgs,
}

/// `ServeArgs` as the command line would give them.
pub fn serve_args(flags: &[&str]) -> anyhow::Result<api_server::config::ServeArgs> {
    let mut argv = vec!["api-server"];
    argv.extend_from_slice(flags);
    Ok(Cli::try_parse_from(argv)?.args)
}

/// `program` run by `wrapper` (a command and its arguments), or by itself when it is empty.
pub fn command_under(wrapper: &[String], program: impl AsRef<std::ffi::OsStr>) -> Command {
    match wrapper.split_first() {
        Some((run, args)) => {
            let mut cmd = Command::new(run);
            cmd.args(args).arg(program);
            cmd
        }
        None => Command::new(program),
    }
}

/// An api-server child process, SIGKILLed on drop if still running.
pub struct ApiProcess {
    pub child: Child,
    pub public: SocketAddr,
    pub admin: SocketAddr,
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

impl ApiProcess {
    /// Starts `api-server serve` with `env`, and waits for /healthz.
    pub async fn start(env: &[(&str, String)]) -> anyhow::Result<Self> {
        Self::start_under(&[], env).await
    }

    /// [`Self::start`], the server run by `wrapper` (a command and its arguments, such as
    /// `valgrind --tool=callgrind`) when it is not empty.
    pub async fn start_under(wrapper: &[String], env: &[(&str, String)]) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let log = dir.path().join("api-server.log");
        let out = std::fs::File::create(&log)?;
        let public: SocketAddr = format!("127.0.0.1:{}", testenv::free_port()).parse()?;
        let admin: SocketAddr = format!("127.0.0.1:{}", testenv::free_port()).parse()?;
        // API_SERVER_BIN: another build of the server (the benchmark compares builds with it).
        let bin = std::env::var("API_SERVER_BIN").unwrap_or_else(|_| BIN.to_string());
        let mut cmd = command_under(wrapper, bin);
        cmd.arg("serve")
            .env("API_LISTEN", public.to_string())
            .env("API_ADMIN_LISTEN", admin.to_string())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().context("spawning api-server")?;
        let mut p = Self {
            child,
            public,
            admin,
            log,
            _dir: dir,
        };
        p.wait_healthy(Duration::from_secs(if wrapper.is_empty() {
            60
        } else {
            180
        }))
        .await?;
        Ok(p)
    }

    async fn wait_healthy(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let started = Instant::now();
        let http = reqwest::Client::new();
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Err(anyhow!(
                    "api-server exited ({status}):\n{}",
                    self.log_text()
                ));
            }
            let ok = http
                .get(format!("http://{}/healthz", self.admin))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ok {
                return Ok(());
            }
            if started.elapsed() > timeout {
                return Err(anyhow!("api-server not healthy:\n{}", self.log_text()));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.public)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The log once `complete` says it has what the caller expects, or after 5 s: lines reach
    /// the file a few milliseconds after the request they belong to is answered.
    pub async fn log_text_when(&self, complete: impl Fn(&str) -> bool) -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let log = self.log_text();
            if complete(&log) || std::time::Instant::now() > deadline {
                return log;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    pub fn sigterm(&self) -> anyhow::Result<()> {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id())?);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)?;
        Ok(())
    }
}

impl Drop for ApiProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// An in-process response: status, headers and the JSON body (`Null` when not JSON).
pub struct Reply {
    pub status: axum::http::StatusCode,
    pub headers: axum::http::HeaderMap,
    pub body: serde_json::Value,
}

/// Sends `req` through the public router of `state` and reads the whole response.
pub async fn reply_of(
    state: &api_server::state::AppState,
    req: axum::http::Request<axum::body::Body>,
) -> anyhow::Result<Reply> {
    use tower::ServiceExt as _;
    let response = api_server::routes::public(state.clone())
        .oneshot(req)
        .await?;
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), 4 << 20).await?;
    let body = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    Ok(Reply {
        status,
        headers,
        body,
    })
}

pub fn header_of(r: &Reply, name: header::HeaderName) -> &str {
    r.headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

/// The reply is an `application/problem+json` document for `status`.
pub fn assert_problem(r: &Reply, status: u16) {
    assert_eq!(r.status.as_u16(), status, "{}", r.body);
    assert_eq!(
        header_of(r, header::CONTENT_TYPE),
        "application/problem+json"
    );
    assert_eq!(r.body["status"], status);
}
