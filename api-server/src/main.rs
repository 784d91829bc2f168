//! api-server: the HTTP API binary. Each operational task is a subcommand so that one image
//! carries the server and its tools; `serve` and friends join [`Command`] as they arrive.

mod sign_url;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

// mimalloc's thread-local free lists: fewer cycles per allocation than glibc malloc on the
// request path (header maps, JSON buffers, futures), measured in docs/benchmarks.md.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(name = "api-server", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print a Cloud Storage V4 signed URL (like `gsutil signurl`), and nothing else, on stdout.
    SignUrl(sign_url::SignUrlArgs),
    /// Serve the HTTP API (public port) and health, readiness and metrics (admin port).
    Serve(Box<api_server::config::ServeArgs>),
}

fn serve(args: api_server::config::ServeArgs) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async {
            // Inside the runtime: the OTLP exporter's gRPC client needs it.
            // A JSON line per request: batched, so a request does not pay a write(2) for it.
            let telemetry = platform::telemetry::init_batched(
                "info",
                &args.service_name,
                args.otlp_endpoint.as_deref(),
            )?;
            let result = api_server::serve::run(args).await;
            telemetry.shutdown();
            result
        })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::SignUrl(args) => sign_url::run(args),
        Command::Serve(args) => serve(*args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // `{:#}` prints the whole cause chain on one line: "key file F: ... is missing".
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
