//! `make demo`: the whole system on this machine, on embedded local defaults, narrated.
//!
//! It starts the local environment (a real control plane, Redis with Sentinel, the Firestore
//! and Firebase Auth emulators, fake-gcs-server as the bucket), then walks through what each
//! part does, printing every step.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use testenv::{DEMO_PROJECT, Environment};

mod api;
mod files;
mod jobs;
mod operator;

pub struct Options {
    /// Keep everything running after the journey until Ctrl-C.
    pub keep: bool,
}

fn step(text: &str) {
    println!("\n==> {text}");
}

fn show(text: impl AsRef<str>) {
    for line in text.as_ref().lines() {
        println!("    {line}");
    }
}

pub async fn run(options: Options) -> anyhow::Result<()> {
    step(
        "Starting the local environment (etcd, kube-apiserver, kube-controller-manager, Redis, Sentinel, Firebase emulators, fake-gcs-server)",
    );
    let started = Instant::now();
    let env = Environment::start()
        .await
        .context("starting the local environment")?;
    show(format!("up in {:.1} s", started.elapsed().as_secs_f64()));
    show(env.describe());

    step("Kubernetes control plane: readiness and version");
    let cp = &env.control_plane;
    show(format!(
        "/readyz: {}",
        cp.kubectl_run(&["get", "--raw", "/readyz"])?.trim()
    ));
    show(cp.kubectl_run(&["version"])?);
    show(cp.kubectl_run(&["get", "namespaces"])?);

    step("Redis Sentinel group: who is master");
    let master = env
        .sentinels
        .current_master()
        .await
        .context("the sentinels agree on no master")?;
    show(format!(
        "sentinels agree: master {} is 127.0.0.1:{master}; replicas on {:?}",
        env.sentinels.master_name(),
        env.sentinels
            .server_ports()
            .iter()
            .filter(|p| **p != master)
            .collect::<Vec<_>>()
    ));
    let client = redis::Client::open(env.redis.url())?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let pong: String = redis::cmd("PING").query_async(&mut conn).await?;
    show(format!(
        "standalone Redis {} answers {pong}",
        env.redis.url()
    ));

    step("Firebase Auth emulator: sign a user up");
    let user = env
        .auth
        .sign_up("demo@example.com", "demo-password")
        .await?;
    let claims = user
        .id_token
        .split('.')
        .nth(1)
        .and_then(|p| URL_SAFE_NO_PAD.decode(p).ok())
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .context("the emulator's ID token has no readable payload")?;
    show(format!(
        "uid {}; token iss {} aud {}",
        user.uid, claims["iss"], claims["aud"]
    ));

    step("Firestore emulator: write and read a document");
    #[derive(Debug, Serialize, Deserialize)]
    struct Profile {
        owner: String,
        display_name: String,
    }
    let db = env.firestore.admin_db(DEMO_PROJECT).await?;
    let written: Profile = db
        .fluent()
        .insert()
        .into("profiles")
        .document_id(&user.uid)
        .object(&Profile {
            owner: user.uid.clone(),
            display_name: "Demo User".into(),
        })
        .execute()
        .await?;
    let read: Option<Profile> = db
        .fluent()
        .select()
        .by_id_in("profiles")
        .obj()
        .one(&user.uid)
        .await?;
    match read {
        Some(p) if p.display_name == written.display_name => {
            show(format!("profiles/{} = {p:?}", user.uid))
        }
        other => bail!("read back {other:?}, wrote {written:?}"),
    }

    operator::journey(&env).await?;
    let api = api::journey(&env).await?;
    let workers = jobs::start_workers(&env, &api).await?;
    jobs::journey(&env, &api).await?;
    files::journey(&api).await?;
    drop(workers);

    step("Done: every component is up and answering");
    if options.keep {
        println!("\nEverything keeps running; Ctrl-C stops it.");
        tokio::signal::ctrl_c().await?;
    }
    drop(env);
    // Give the emulators' JVM and Node processes a moment to release their ports.
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok(())
}

/// A binary built next to this one (`make demo` builds the workspace first).
fn sibling_binary(name: &str) -> anyhow::Result<std::path::PathBuf> {
    let exe = std::env::current_exe()?;
    let bin = exe.with_file_name(name);
    anyhow::ensure!(
        bin.is_file(),
        "{} is missing: run `cargo build --workspace --bins`",
        bin.display()
    );
    Ok(bin)
}

/// Stops a child process when the demo ends, however it ends.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
