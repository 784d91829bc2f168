//! The Firestore emulator shipped with the Google Cloud SDK (a JVM behind a launcher script).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::error::IoContext;
use crate::process::{Service, wait_ready};
use crate::{Result, Tools, free_port};

const START_TIMEOUT: Duration = Duration::from_secs(90);

pub struct FirestoreEmulator {
    service: Service,
    port: u16,
    _dir: tempfile::TempDir,
}

impl FirestoreEmulator {
    pub async fn start() -> Result<Self> {
        Self::start_with_rules(None).await
    }

    /// Starts with security rules loaded, so client-token access can be tested.
    pub async fn start_with_rules(rules: Option<&Path>) -> Result<Self> {
        const ATTEMPTS: usize = 3;
        for _ in 1..ATTEMPTS {
            match Self::start_on_free_port(rules).await {
                Err(e) if e.is_port_taken() => continue,
                started => return started,
            }
        }
        Self::start_on_free_port(rules).await
    }

    async fn start_on_free_port(rules: Option<&Path>) -> Result<Self> {
        let bin = Tools::new().firestore_emulator()?;
        let dir = tempfile::Builder::new()
            .prefix("testenv-firestore-")
            .tempdir()
            .context(|| "creating a temp dir".into())?;
        let port = free_port();
        let mut cmd = Command::new(bin);
        cmd.arg("start")
            .arg("--host=127.0.0.1")
            .arg(format!("--port={port}"))
            .current_dir(dir.path());
        if let Some(rules) = rules {
            cmd.arg(format!("--rules={}", rules.display()));
        }
        let mut service =
            Service::spawn("firestore-emulator", cmd, &dir.path().join("firestore.log"))?;
        let http = reqwest::Client::new();
        let url = format!("http://127.0.0.1:{port}/");
        wait_ready(&mut service, START_TIMEOUT, || {
            let req = http.get(&url).send();
            async move {
                let body = req
                    .await
                    .map_err(|e| e.to_string())?
                    .text()
                    .await
                    .map_err(|e| e.to_string())?;
                if body.trim() == "Ok" {
                    Ok(())
                } else {
                    Err(body)
                }
            }
        })
        .await?;
        Ok(Self {
            service,
            port,
            _dir: dir,
        })
    }

    /// `127.0.0.1:PORT`, the value for `FIRESTORE_EMULATOR_HOST`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Deletes every document of `project`'s default database.
    pub async fn reset(&self, project: &str) -> Result<()> {
        let url = format!(
            "http://127.0.0.1:{}/emulator/v1/projects/{project}/databases/(default)/documents",
            self.port
        );
        reqwest::Client::new()
            .delete(url)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| crate::Error::Other(format!("resetting the Firestore emulator: {e}")))?;
        Ok(())
    }

    pub fn service(&mut self) -> &mut Service {
        &mut self.service
    }
}

impl FirestoreEmulator {
    /// A client with the emulator's admin token (`Bearer owner`), which bypasses security rules.
    pub async fn admin_db(&self, project: &str) -> Result<firestore::FirestoreDb> {
        self.db_with_bearer(project, "owner").await
    }

    /// A client that presents `token` as its bearer token, as a mobile or web client would
    /// (security rules apply to it).
    pub async fn db_with_bearer(
        &self,
        project: &str,
        token: &str,
    ) -> Result<firestore::FirestoreDb> {
        let options = firestore::FirestoreDbOptions::new(project.to_string())
            .with_firebase_api_url(format!("http://{}", self.host()));
        let header = http::HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|e| crate::Error::Other(format!("bearer token: {e}")))?;
        firestore::FirestoreDb::with_options_auth(options, StaticBearer::new(header))
            .await
            .map_err(|e| crate::Error::Other(format!("Firestore client: {e}")))
    }
}

/// Credentials that always send one Authorization header: what the emulator expects, since it
/// verifies no signature.
#[derive(Debug)]
struct StaticBearer {
    header: http::HeaderValue,
    tag: EntityTag,
}

use firestore::gcloud_sdk::google_cloud_auth::credentials::{
    CacheableResource, Credentials, CredentialsProvider, EntityTag,
};
use firestore::gcloud_sdk::google_cloud_auth::errors::CredentialsError;

impl StaticBearer {
    fn new(header: http::HeaderValue) -> Self {
        Self {
            header,
            tag: EntityTag::new(),
        }
    }
}

impl CredentialsProvider for StaticBearer {
    async fn headers(
        &self,
        extensions: http::Extensions,
    ) -> std::result::Result<CacheableResource<http::HeaderMap>, CredentialsError> {
        if extensions.get::<EntityTag>() == Some(&self.tag) {
            return Ok(CacheableResource::NotModified);
        }
        let mut headers = http::HeaderMap::new();
        headers.insert(http::header::AUTHORIZATION, self.header.clone());
        Ok(CacheableResource::New {
            entity_tag: self.tag.clone(),
            data: headers,
        })
    }

    async fn universe_domain(&self) -> Option<String> {
        None
    }
}

impl From<StaticBearer> for firestore::gcloud_sdk::GoogleAuthHeaders {
    fn from(credentials: StaticBearer) -> Self {
        Self::from(Credentials::from(credentials))
    }
}
