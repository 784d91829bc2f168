//! Developer commands. `cargo xtask env up` runs the local environment until Ctrl-C.

mod demo;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "ScalableApp developer commands")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// The local environment of real services.
    Env {
        #[command(subcommand)]
        action: EnvAction,
    },
    /// Regenerate docs/crd-reference.md and docs/configuration.md from the code.
    Docs,
    /// The local demo of the whole system (what `make demo` runs).
    Demo {
        /// Keep everything running after the demo until Ctrl-C.
        #[arg(long)]
        keep: bool,
    },
}

#[derive(Subcommand)]
enum EnvAction {
    /// Start everything, print the addresses, stop it all on Ctrl-C.
    Up,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        // The harness polls services until they answer; the client's own error logs are noise.
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,kube_client=off")),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Cmd::Env {
            action: EnvAction::Up,
        } => env_up().await,
        Cmd::Demo { keep } => demo::run(demo::Options { keep }).await,
        Cmd::Docs => write_docs(),
    }
}

async fn env_up() -> anyhow::Result<()> {
    eprintln!("starting the local environment (control plane, Redis, Sentinel, emulators)...");
    let env = testenv::Environment::start()
        .await
        .context("starting the local environment")?;
    println!("{}", env.describe());
    eprintln!("running; Ctrl-C stops everything");
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    eprintln!("stopping");
    drop(env);
    Ok(())
}

fn write_docs() -> anyhow::Result<()> {
    let root = testenv::repo_root();
    let crd =
        std::fs::read_to_string(root.join("crds/scalableapp.yaml")).context("reading the CRD")?;
    std::fs::write(
        root.join("docs/crd-reference.md"),
        xtask::docs::crd_reference(&crd)?,
    )?;
    let bins = xtask::docs::bin_dir()?;
    std::fs::write(
        root.join("docs/configuration.md"),
        xtask::docs::configuration(&bins)?,
    )?;
    eprintln!("wrote docs/crd-reference.md and docs/configuration.md");
    Ok(())
}
