//! `worker`: runs queued jobs (`worker run`), and the operator commands `worker queue stats`,
//! `worker dlq list`, `worker dlq redrive`. Every flag can also be set by environment variable.

mod admin;
mod dispatch;
mod handlers;
mod ops;
mod run;

use clap::{Args, Parser, Subcommand};
use platform::config::RedisArgs;

#[derive(Debug, Parser)]
#[command(name = "worker", version, about)]
struct Cli {
    #[command(flatten)]
    redis: RedisArgs,
    /// OTLP/gRPC collector for spans (job spans link to the publishing request's trace).
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT", global = true)]
    otlp_endpoint: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run jobs until SIGTERM.
    Run(run::RunArgs),
    /// Queue inspection and settings.
    Queue {
        #[command(subcommand)]
        command: QueueCommand,
    },
    /// The dead-letter queue.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
}

#[derive(Debug, Subcommand)]
enum QueueCommand {
    /// Depth per state and the age of the oldest ready job, as JSON.
    Stats(QueuesArg),
    /// Set the queue's rate limit (job starts per window, across all workers), or remove it.
    RateLimit {
        #[command(flatten)]
        queue: QueueArg,
        /// Job starts allowed per window.
        #[arg(long, required_unless_present = "off")]
        max: Option<u64>,
        #[arg(long, default_value_t = 1000)]
        window_ms: u64,
        /// Remove the limit.
        #[arg(long, conflicts_with = "max")]
        off: bool,
    },
}

#[derive(Debug, Subcommand)]
enum DlqCommand {
    /// Dead-lettered jobs, newest first, one JSON object a line.
    List {
        #[command(flatten)]
        queue: QueueArg,
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[arg(long, default_value_t = 0)]
        offset: usize,
    },
    /// Put dead-lettered jobs back in their queue with a fresh attempt budget.
    Redrive {
        #[command(flatten)]
        queue: QueueArg,
        /// Job ids to re-drive.
        #[arg(long = "id", required_unless_present = "all")]
        ids: Vec<String>,
        /// Re-drive the oldest `--limit` dead letters instead.
        #[arg(long, conflicts_with = "ids")]
        all: bool,
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
}

#[derive(Debug, Args)]
struct QueuesArg {
    /// Queue names.
    #[arg(
        long = "queue",
        env = "WORKER_QUEUES",
        value_delimiter = ',',
        default_value = "jobs"
    )]
    queues: Vec<String>,
}

#[derive(Debug, Args)]
struct QueueArg {
    #[arg(long, default_value = "jobs")]
    queue: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let telemetry = platform::telemetry::init("info", "worker", cli.otlp_endpoint.as_deref())?;
    let target = cli.redis.endpoint()?.into();
    let result = dispatch(cli.command, target).await;
    telemetry.shutdown();
    result
}

async fn dispatch(command: Command, target: platform::queue::RedisTarget) -> anyhow::Result<()> {
    match command {
        Command::Run(args) => run::run(target, args).await,
        Command::Queue {
            command: QueueCommand::Stats(q),
        } => ops::stats(target, &q.queues).await,
        Command::Queue {
            command:
                QueueCommand::RateLimit {
                    queue,
                    max,
                    window_ms,
                    off: _,
                },
        } => {
            let limit = max.map(|max| platform::queue::RateLimit {
                max,
                window: std::time::Duration::from_millis(window_ms),
            });
            ops::set_rate_limit(target, &queue.queue, limit).await
        }
        Command::Dlq {
            command:
                DlqCommand::List {
                    queue,
                    limit,
                    offset,
                },
        } => ops::dlq_list(target, &queue.queue, offset, limit).await,
        Command::Dlq {
            command:
                DlqCommand::Redrive {
                    queue,
                    ids,
                    all,
                    limit,
                },
        } => {
            let which = if all {
                platform::queue::Redrive::Oldest(limit)
            } else {
                platform::queue::Redrive::Ids(ids)
            };
            ops::dlq_redrive(target, &queue.queue, which).await
        }
    }
}
