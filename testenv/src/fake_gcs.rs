//! fake-gcs-server (built from its Go module): a Cloud Storage emulator serving the JSON API and
//! the XML API that signed URLs use. It accepts signed URLs without checking their signatures;
//! the signer is checked against Google's own client by api-server's differential test.

use std::process::Command;
use std::time::Duration;

use crate::error::IoContext;
use crate::process::{Service, wait_ready};
use crate::{Error, Result, Tools, free_port};

const START_TIMEOUT: Duration = Duration::from_secs(30);

pub struct FakeGcsServer {
    service: Service,
    port: u16,
    _dir: tempfile::TempDir,
}

impl FakeGcsServer {
    /// Starts an in-memory server on a free loopback port whose URLs point at itself.
    pub async fn start() -> Result<Self> {
        let bin = Tools::new().fake_gcs_server()?;
        let dir = tempfile::Builder::new()
            .prefix("testenv-fake-gcs-")
            .tempdir()
            .context(|| "creating a temp dir".into())?;
        let port = free_port();
        let mut cmd = Command::new(bin);
        cmd.args([
            "-scheme",
            "http",
            "-host",
            "127.0.0.1",
            "-backend",
            "memory",
        ])
        .args(["-port", &port.to_string()])
        // Upload Locations and media links name this server rather than Google.
        .args(["-public-host", &format!("127.0.0.1:{port}")])
        .args(["-log-level", "warn"])
        .current_dir(dir.path());
        let mut service = Service::spawn("fake-gcs-server", cmd, &dir.path().join("gcs.log"))?;
        let http = reqwest::Client::new();
        let url = format!("http://127.0.0.1:{port}/storage/v1/b");
        wait_ready(&mut service, START_TIMEOUT, || {
            let req = http.get(&url).send();
            async move {
                let status = req.await.map_err(|e| e.to_string())?.status();
                if status.is_success() {
                    Ok(())
                } else {
                    Err(format!("HTTP {status}"))
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

    /// `127.0.0.1:PORT`, the value for `STORAGE_EMULATOR_HOST`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.host())
    }

    /// Creates an empty bucket.
    pub async fn create_bucket(&self, name: &str) -> Result<()> {
        reqwest::Client::new()
            .post(format!("{}/storage/v1/b?project=testenv", self.url()))
            .json(&serde_json::json!({ "name": name }))
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| Error::Other(format!("creating bucket {name}: {e}")))?;
        Ok(())
    }

    pub fn service(&mut self) -> &mut Service {
        &mut self.service
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn serves_the_json_api_and_signed_style_xml_uploads()
    -> std::result::Result<(), Box<dyn std::error::Error>> {
        let gcs = FakeGcsServer::start().await?;
        gcs.create_bucket("bkt").await?;
        let http = reqwest::Client::new();
        // The XML API route is taken only for requests that look signed.
        let put = http
            .put(format!(
                "{}/bkt/a/b.txt?X-Goog-Algorithm=GOOG4-RSA-SHA256&X-Goog-Signature=00",
                gcs.url()
            ))
            .header("content-type", "text/plain")
            .body("hello")
            .send()
            .await?;
        assert!(put.status().is_success(), "{}", put.text().await?);
        let meta: serde_json::Value = http
            .get(format!("{}/storage/v1/b/bkt/o/a%2Fb.txt", gcs.url()))
            .send()
            .await?
            .json()
            .await?;
        assert_eq!(meta["size"], "5");
        assert_eq!(meta["contentType"], "text/plain");
        Ok(())
    }
}
