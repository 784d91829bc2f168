//! `operator`: run the reconciler, print the CRD, or render an app's children offline.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use operator::api::ScalableApp;
use operator::render::{self, Capabilities, RenderContext};

#[derive(Parser)]
#[command(
    version,
    about = "Reconciles ScalableApp resources into the ScalableApp architecture"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the operator (in-cluster, or with the kubeconfig from KUBECONFIG / ~/.kube/config).
    Run(operator::runner::RunArgs),
    /// Print the CustomResourceDefinition YAML.
    Crd,
    /// GET a URL and fail unless it answers 2xx (the image has no shell or curl; the Helm test
    /// hook runs this).
    Probe {
        url: String,
        #[arg(long, default_value_t = 5)]
        timeout_seconds: u64,
    },
    /// Print the ServiceAccount, ClusterRole and ClusterRoleBinding the operator needs
    /// (for installs without the Helm chart; the chart's RBAC grants the same).
    Rbac {
        /// Namespace the operator runs in.
        #[arg(long, default_value = "scalable-system")]
        namespace: String,
        /// ServiceAccount the operator runs as.
        #[arg(long, default_value = "scalable-operator")]
        service_account: String,
    },
    /// Print every child object of a ScalableApp as YAML, exactly as the operator applies it.
    Render {
        /// ScalableApp manifest.
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        /// Render as if the Prometheus Operator's PrometheusRule CRD were installed.
        #[arg(long)]
        prometheus_rules: bool,
        /// Render as if the Prometheus Operator's ServiceMonitor CRD were installed.
        #[arg(long)]
        service_monitors: bool,
        /// Render as if KEDA's ScaledObject CRD were installed.
        #[arg(long)]
        keda: bool,
        /// Cluster DNS domain.
        #[arg(long, default_value = "cluster.local")]
        cluster_domain: String,
    },
}

async fn probe(url: &str, timeout_seconds: u64) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(timeout_seconds))
        .build()
        .context("building the HTTP client")?;
    let response = client
        .get(url)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    let status = response.status();
    anyhow::ensure!(status.is_success(), "GET {url} answered {status}");
    println!("GET {url}: {status}");
    Ok(())
}

/// Stands in for the uid the apiserver assigns, which owner references need.
const PLACEHOLDER_UID: &str = "00000000-0000-0000-0000-000000000000";

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => {
            let runtime = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
            runtime.block_on(operator::runner::run_main(args))?;
        }
        Command::Crd => print!("{}", operator::crd::crd_yaml()?),
        Command::Probe {
            url,
            timeout_seconds,
        } => {
            let runtime = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
            runtime.block_on(probe(&url, timeout_seconds))?;
        }
        Command::Rbac {
            namespace,
            service_account,
        } => {
            let (sa, role, binding) = operator::rbac::objects(&namespace, &service_account);
            let docs = [
                serde_json::to_value(&sa)?,
                serde_json::to_value(&role)?,
                serde_json::to_value(&binding)?,
            ];
            print!("{}", serde_saphyr::to_string_multiple(&docs)?);
        }
        Command::Render {
            file,
            prometheus_rules,
            service_monitors,
            keda,
            cluster_domain,
        } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let mut app: ScalableApp = serde_saphyr::from_str(&text)
                .with_context(|| format!("parsing {} as a ScalableApp", file.display()))?;
            app.metadata
                .namespace
                .get_or_insert_with(|| "default".to_string());
            let placeholder = app.metadata.uid.is_none();
            app.metadata
                .uid
                .get_or_insert_with(|| PLACEHOLDER_UID.to_string());
            let ctx = RenderContext {
                capabilities: Capabilities {
                    prometheus_rules,
                    service_monitors,
                    keda,
                },
                cluster_domain,
                ..RenderContext::default()
            };
            let children = render::desired(&app, &ctx)?;
            if placeholder {
                println!(
                    "# ownerReferences carry a placeholder uid: the apiserver assigns the real one."
                );
            }
            print!("{}", render::to_yaml(&children)?);
        }
    }
    Ok(())
}
