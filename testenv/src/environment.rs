//! Everything at once, for the demo and for `cargo xtask env up`.

use std::fmt::Write;

use crate::{
    AuthEmulator, ControlPlane, FakeGcsServer, FirestoreEmulator, Helm, Promtool, RedisServer,
    Result, SentinelGroup, Tools,
};

/// The Firebase project the emulators serve: `demo-` projects never reach Google.
pub const DEMO_PROJECT: &str = "demo-scalable";
/// The bucket the demo's uploads go to, on fake-gcs-server.
pub const DEMO_BUCKET: &str = "demo-scalable-uploads";

pub struct Environment {
    pub control_plane: ControlPlane,
    pub redis: RedisServer,
    pub sentinels: SentinelGroup,
    pub firestore: FirestoreEmulator,
    pub auth: AuthEmulator,
    /// Cloud Storage (fake-gcs-server) with [`DEMO_BUCKET`] created.
    pub storage: FakeGcsServer,
}

impl Environment {
    /// Starts every service concurrently; fails if any one fails (the others are stopped).
    pub async fn start() -> Result<Self> {
        // Fail fast on the tools that are only run on demand.
        Helm::new()?;
        Promtool::new()?;
        let (control_plane, redis, sentinels, firestore, auth, storage) = tokio::try_join!(
            ControlPlane::start(),
            RedisServer::start(),
            SentinelGroup::start(),
            FirestoreEmulator::start(),
            AuthEmulator::start(DEMO_PROJECT),
            FakeGcsServer::start(),
        )?;
        storage.create_bucket(DEMO_BUCKET).await?;
        Ok(Self {
            control_plane,
            redis,
            sentinels,
            firestore,
            auth,
            storage,
        })
    }

    /// Addresses and paths, one per line, ready to paste into a shell.
    pub fn describe(&self) -> String {
        let tools = Tools::new();
        let mut out = String::new();
        let cp = &self.control_plane;
        let _ = writeln!(out, "export KUBECONFIG={}", cp.kubeconfig_path().display());
        let _ = writeln!(
            out,
            "# kube-apiserver {} ({})",
            cp.server_url(),
            tools.kubernetes_version()
        );
        let _ = writeln!(out, "export REDIS_URL={}", self.redis.url());
        let _ = writeln!(
            out,
            "export REDIS_SENTINELS={} REDIS_MASTER_NAME={}",
            self.sentinels
                .sentinel_ports()
                .iter()
                .map(|p| format!("127.0.0.1:{p}"))
                .collect::<Vec<_>>()
                .join(","),
            self.sentinels.master_name()
        );
        let _ = writeln!(
            out,
            "export FIRESTORE_EMULATOR_HOST={}",
            self.firestore.host()
        );
        let _ = writeln!(
            out,
            "export FIREBASE_AUTH_EMULATOR_HOST={}",
            self.auth.host()
        );
        let _ = writeln!(out, "export GOOGLE_CLOUD_PROJECT={}", self.auth.project());
        let _ = writeln!(
            out,
            "export STORAGE_EMULATOR_HOST={} STORAGE_BUCKET={DEMO_BUCKET}",
            self.storage.host()
        );
        for (what, path) in [
            ("helm", tools.helm()),
            ("promtool", tools.promtool()),
            ("kubectl", tools.kubectl()),
        ] {
            if let Ok(path) = path {
                let _ = writeln!(out, "# {what}: {}", path.display());
            }
        }
        out
    }
}
