//! Process-wide telemetry: JSON log lines on stdout (filtered by `RUST_LOG`, default given by
//! the caller) and, when an OTLP endpoint is configured, spans exported over OTLP/gRPC with W3C
//! trace context as the propagation format.
//!
//! JSON because the log pipeline parses fields (trace_id, route, status) instead of grepping
//! text; the current span's fields are flattened into every event so a request's identifiers
//! appear on each line it causes.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("a global tracing subscriber is already installed: {0}")]
    AlreadyInstalled(String),
    #[error("OTLP exporter for {endpoint}: {message}")]
    Exporter { endpoint: String, message: String },
}

/// Keeps the span exporter alive; [`Telemetry::shutdown`] flushes what is still buffered.
#[must_use = "dropping the guard without shutdown may lose the last spans"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(e) = provider.shutdown()
        {
            eprintln!("flushing spans at exit: {e}");
        }
    }
}

/// Installs the JSON subscriber only (no span export).
pub fn init_json_logs(default_filter: &str) -> Result<(), TelemetryError> {
    init(default_filter, "unknown", None).map(|_| ())
}

/// Installs logging, and span export to `otlp_endpoint` (`http://collector:4317`) when given.
/// Must run inside a Tokio runtime when exporting: the gRPC client needs one.
pub fn init(
    default_filter: &str,
    service_name: &str,
    otlp_endpoint: Option<&str>,
) -> Result<Telemetry, TelemetryError> {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let fmt = tracing_subscriber::fmt::layer()
        .json()
        .flatten_event(true)
        .with_current_span(true)
        .with_span_list(false)
        .with_target(true);
    let provider = match otlp_endpoint {
        Some(endpoint) => Some(provider(service_name, endpoint)?),
        None => None,
    };
    let otel = provider
        .as_ref()
        .map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer(service_name.to_string())));
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(otel)
        .try_init()
        .map_err(|e| TelemetryError::AlreadyInstalled(e.to_string()))?;
    if let Some(p) = &provider {
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        opentelemetry::global::set_tracer_provider(p.clone());
    }
    Ok(Telemetry { provider })
}

fn provider(service_name: &str, endpoint: &str) -> Result<SdkTracerProvider, TelemetryError> {
    use opentelemetry_otlp::WithExportConfig as _;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .map_err(|e| TelemetryError::Exporter {
            endpoint: endpoint.to_string(),
            message: e.to_string(),
        })?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(service_name.to_string())
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}
