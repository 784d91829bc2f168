//! The Firebase Auth emulator from the npm package firebase-tools (pinned in tools/firebase).
//!
//! It issues unsigned ID tokens (`alg: none`) with production-shaped `iss`/`aud`, so it proves
//! flows end to end; signature checks are tested with keys the tests make themselves.

use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::error::IoContext;
use crate::process::{Service, wait_ready};
use crate::{Error, Result, Tools, free_port};

const START_TIMEOUT: Duration = Duration::from_secs(90);

pub struct AuthEmulator {
    service: Service,
    client: AuthEmulatorClient,
    _dir: tempfile::TempDir,
}

/// The client SDK's and Admin SDK's REST calls against an Auth emulator at any address: the one
/// [`AuthEmulator`] started, or one running in a cluster behind a port-forward.
#[derive(Debug, Clone)]
pub struct AuthEmulatorClient {
    host: String,
    project: String,
    http: reqwest::Client,
}

/// A signed-up user: its uid and the tokens the emulator issued.
#[derive(Debug, Clone)]
pub struct SignedUpUser {
    pub uid: String,
    pub id_token: String,
    pub refresh_token: String,
}

impl AuthEmulator {
    /// Starts the emulator for `project`, which must start with `demo-` (offline-only projects).
    pub async fn start(project: &str) -> Result<Self> {
        if !project.starts_with("demo-") {
            return Err(Error::Other(format!(
                "Auth emulator project {project:?} must start with demo- so nothing reaches Google"
            )));
        }
        let bin = Tools::new().firebase()?;
        let dir = tempfile::Builder::new()
            .prefix("testenv-auth-")
            .tempdir()
            .context(|| "creating a temp dir".into())?;
        let port = free_port();
        // Hub and logging ports default to fixed numbers: give each instance its own.
        let config = json!({
            "emulators": {
                "auth": {"host": "127.0.0.1", "port": port},
                "hub": {"host": "127.0.0.1", "port": free_port()},
                "logging": {"host": "127.0.0.1", "port": free_port()},
                "ui": {"enabled": false},
                "singleProjectMode": true
            }
        });
        let config_path = dir.path().join("firebase.json");
        std::fs::write(&config_path, config.to_string())
            .context(|| "writing firebase.json".into())?;
        let mut cmd = Command::new(bin);
        cmd.args([
            "emulators:start",
            "--only",
            "auth",
            "--project",
            project,
            "--non-interactive",
        ])
        .current_dir(dir.path())
        // Its own config store, so parallel instances and CI never share state or prompt.
        .env("HOME", dir.path())
        .env("XDG_CONFIG_HOME", dir.path().join(".config"))
        .env("FIREBASE_CLI_DISABLE_UPDATE_CHECK", "true")
        .env("CI", "true");
        let mut service =
            Service::spawn("firebase-auth-emulator", cmd, &dir.path().join("auth.log"))?;
        let http = reqwest::Client::new();
        let url = format!("http://127.0.0.1:{port}/");
        wait_ready(&mut service, START_TIMEOUT, || {
            let req = http.get(&url).send();
            async move {
                let resp = req.await.map_err(|e| e.to_string())?;
                if resp.status().is_success() {
                    Ok(())
                } else {
                    Err(resp.status().to_string())
                }
            }
        })
        .await?;
        Ok(Self {
            service,
            client: AuthEmulatorClient::new(format!("127.0.0.1:{port}"), project),
            _dir: dir,
        })
    }

    /// `127.0.0.1:PORT`, the value for `FIREBASE_AUTH_EMULATOR_HOST`.
    pub fn host(&self) -> String {
        self.client.host.clone()
    }

    pub fn project(&self) -> &str {
        &self.client.project
    }

    pub fn client(&self) -> &AuthEmulatorClient {
        &self.client
    }

    /// Signs up a user with email and password (the client SDK's REST call).
    pub async fn sign_up(&self, email: &str, password: &str) -> Result<SignedUpUser> {
        self.client.sign_up(email, password).await
    }

    /// Signs in again, returning a fresh ID token (custom claims set since are included).
    pub async fn sign_in(&self, email: &str, password: &str) -> Result<SignedUpUser> {
        self.client.sign_in(email, password).await
    }

    /// Sets custom claims on a user, as the Admin SDK does.
    pub async fn set_custom_claims(&self, uid: &str, claims: &Value) -> Result<()> {
        self.client.set_custom_claims(uid, claims).await
    }

    pub fn service(&mut self) -> &mut Service {
        &mut self.service
    }
}

impl AuthEmulatorClient {
    /// `host` is `host:port` of the emulator; `project` the one it serves.
    pub fn new(host: impl Into<String>, project: impl Into<String>) -> Self {
        Self {
            host: host.into(),
            project: project.into(),
            http: reqwest::Client::new(),
        }
    }

    /// Signs up a user with email and password (the client SDK's REST call).
    pub async fn sign_up(&self, email: &str, password: &str) -> Result<SignedUpUser> {
        self.password_call("accounts:signUp", email, password).await
    }

    /// Signs in again, returning a fresh ID token (custom claims set since are included).
    pub async fn sign_in(&self, email: &str, password: &str) -> Result<SignedUpUser> {
        self.password_call("accounts:signInWithPassword", email, password)
            .await
    }

    async fn password_call(
        &self,
        method: &str,
        email: &str,
        password: &str,
    ) -> Result<SignedUpUser> {
        let path = format!("identitytoolkit.googleapis.com/v1/{method}?key=fake-api-key");
        let body = self
            .post(
                &path,
                json!({"email": email, "password": password, "returnSecureToken": true}),
                None,
            )
            .await?;
        let field = |name: &str| {
            body.get(name)
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| Error::Other(format!("{method} answer has no {name}: {body}")))
        };
        Ok(SignedUpUser {
            uid: field("localId")?,
            id_token: field("idToken")?,
            refresh_token: field("refreshToken")?,
        })
    }

    /// Sets custom claims on a user, as the Admin SDK does.
    pub async fn set_custom_claims(&self, uid: &str, claims: &Value) -> Result<()> {
        let path = format!(
            "identitytoolkit.googleapis.com/v1/projects/{}/accounts:update",
            self.project
        );
        self.post(
            &path,
            json!({"localId": uid, "customAttributes": claims.to_string()}),
            Some("owner"),
        )
        .await
        .map(|_| ())
    }

    async fn post(&self, path: &str, body: Value, bearer: Option<&str>) -> Result<Value> {
        let mut req = self
            .http
            .post(format!("http://{}/{path}", self.host))
            .json(&body);
        if let Some(token) = bearer {
            req = req.bearer_auth(token);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| Error::Other(format!("Auth emulator {path}: {e}")))?;
        let status = resp.status();
        let value: Value = resp
            .json()
            .await
            .map_err(|e| Error::Other(format!("Auth emulator {path}: {e}")))?;
        if status.is_success() {
            Ok(value)
        } else {
            Err(Error::Other(format!(
                "Auth emulator {path} answered {status}: {value}"
            )))
        }
    }
}
