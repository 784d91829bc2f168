//! Metrics (Prometheus text on the admin port, OpenTelemetry semantic names), W3C trace
//! context, and the one-line-per-request JSON log.
//!
//! Metrics are plain values in [`Metrics`], cloned into whatever records them, so a test can read
//! the same counters the /metrics page shows (e.g. how many Firestore reads a stampede caused).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tracing::Instrument as _;

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub http_request_method: String,
    pub http_route: String,
    pub http_response_status_code: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabel {
    pub decision: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    pub operation: String,
    pub outcome: String,
}

#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    http: HistogramFamily<HttpLabels>,
    cache: Family<ResultLabel, Counter>,
    rate_limit: Family<DecisionLabel, Counter>,
    auth_failures: Family<ReasonLabel, Counter>,
    redis: HistogramFamily<CallLabels>,
    firestore: HistogramFamily<CallLabels>,
    key_fetches: Family<ResultLabel, Counter>,
    queue: platform::queue::QueueMetrics,
}

fn latency_histogram() -> Histogram {
    // 0.25 ms .. ~8 s.
    Histogram::new(exponential_buckets(0.00025, 2.0, 16))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let http = HistogramFamily::<HttpLabels>::new_with_constructor(latency_histogram as _);
        registry.register(
            "http_server_request_duration_seconds",
            "Duration of HTTP server requests",
            http.clone(),
        );
        let cache = Family::<ResultLabel, Counter>::default();
        registry.register(
            "api_cache_requests",
            "Document cache lookups by result (hit, miss, error)",
            cache.clone(),
        );
        let rate_limit = Family::<DecisionLabel, Counter>::default();
        registry.register(
            "api_rate_limit_decisions",
            "Rate-limit decisions (allowed, limited, fail_open, fail_closed)",
            rate_limit.clone(),
        );
        let auth_failures = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "api_auth_failures",
            "Rejected credentials by reason",
            auth_failures.clone(),
        );
        let redis = HistogramFamily::<CallLabels>::new_with_constructor(latency_histogram as _);
        registry.register(
            "api_redis_command_duration_seconds",
            "Duration of Redis calls by operation and outcome",
            redis.clone(),
        );
        let firestore = HistogramFamily::<CallLabels>::new_with_constructor(latency_histogram as _);
        registry.register(
            "api_firestore_call_duration_seconds",
            "Duration of Firestore calls by operation and outcome",
            firestore.clone(),
        );
        let key_fetches = Family::<ResultLabel, Counter>::default();
        registry.register(
            "api_auth_key_fetches",
            "HTTP fetches of token signing keys by result",
            key_fetches.clone(),
        );
        // The job queue's enqueue side (`queue_jobs_enqueued_total`, ...), same names as the
        // worker's, so one query covers both.
        let queue = platform::queue::QueueMetrics::register_publisher(&mut registry);
        Self {
            inner: Arc::new(Inner {
                queue,
                registry,
                http,
                cache,
                rate_limit,
                auth_failures,
                redis,
                firestore,
                key_fetches,
            }),
        }
    }

    /// The job queue's metrics, for the queue handle the server publishes with.
    pub fn queue(&self) -> &platform::queue::QueueMetrics {
        &self.inner.queue
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.inner.registry);
        out
    }

    pub fn http(&self, labels: HttpLabels, elapsed: Duration) {
        self.inner
            .http
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
    }

    pub fn cache(&self, result: &str) {
        self.inner
            .cache
            .get_or_create(&ResultLabel {
                result: result.into(),
            })
            .inc();
    }

    pub fn cache_count(&self, result: &str) -> u64 {
        self.inner
            .cache
            .get_or_create(&ResultLabel {
                result: result.into(),
            })
            .get()
    }

    pub fn rate_limit(&self, decision: &str) {
        self.inner
            .rate_limit
            .get_or_create(&DecisionLabel {
                decision: decision.into(),
            })
            .inc();
    }

    pub fn auth_failure(&self, reason: &str) {
        self.inner
            .auth_failures
            .get_or_create(&ReasonLabel {
                reason: reason.into(),
            })
            .inc();
    }

    pub fn auth_failure_count(&self, reason: &str) -> u64 {
        self.inner
            .auth_failures
            .get_or_create(&ReasonLabel {
                reason: reason.into(),
            })
            .get()
    }

    pub fn redis_duration(&self, operation: &str, ok: bool, elapsed: Duration) {
        self.inner
            .redis
            .get_or_create(&call_labels(operation, ok))
            .observe(elapsed.as_secs_f64());
    }

    pub fn firestore_duration(&self, operation: &str, ok: bool, elapsed: Duration) {
        self.inner
            .firestore
            .get_or_create(&call_labels(operation, ok))
            .observe(elapsed.as_secs_f64());
    }

    pub fn key_fetch(&self, result: &str) {
        self.inner
            .key_fetches
            .get_or_create(&ResultLabel {
                result: result.into(),
            })
            .inc();
    }

    pub fn key_fetch_count(&self, result: &str) -> u64 {
        self.inner
            .key_fetches
            .get_or_create(&ResultLabel {
                result: result.into(),
            })
            .get()
    }
}

fn call_labels(operation: &str, ok: bool) -> CallLabels {
    CallLabels {
        operation: operation.into(),
        outcome: if ok { "ok" } else { "error" }.into(),
    }
}

/// W3C trace context of the request: the caller's trace id when a valid `traceparent` came in,
/// else a new one; always a new span id for this server's span.
#[derive(Debug, Clone)]
pub struct TraceContext {
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: Option<String>,
    pub sampled: bool,
}

impl TraceContext {
    pub fn from_header(value: Option<&HeaderValue>) -> Self {
        let parsed = value
            .and_then(|v| v.to_str().ok())
            .and_then(parse_traceparent);
        match parsed {
            Some((trace_id, parent, flags)) => Self {
                trace_id,
                span_id: random_hex(8),
                parent_span_id: Some(parent),
                sampled: flags & 1 == 1,
            },
            None => Self {
                trace_id: random_hex(16),
                span_id: random_hex(8),
                parent_span_id: None,
                sampled: false,
            },
        }
    }

    /// The `traceparent` to send on outgoing calls made for this request.
    pub fn traceparent(&self) -> String {
        format!(
            "00-{}-{}-{:02x}",
            self.trace_id,
            self.span_id,
            u8::from(self.sampled)
        )
    }
}

/// `00-<32 hex>-<16 hex>-<2 hex>`, ids not all zero (W3C Trace Context §3.2).
fn parse_traceparent(s: &str) -> Option<(String, String, u8)> {
    let mut parts = s.trim().split('-');
    let (version, trace, parent, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |x: &str, n: usize| {
        x.len() == n
            && x.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    if version != "00" || parts.next().is_some() {
        return None;
    }
    if !hex(trace, 32) || !hex(parent, 16) || !hex(flags, 2) {
        return None;
    }
    if trace.bytes().all(|b| b == b'0') || parent.bytes().all(|b| b == b'0') {
        return None;
    }
    let flags = u8::from_str_radix(flags, 16).ok()?;
    Some((trace.to_string(), parent.to_string(), flags))
}

pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    // aws-lc's RNG fails only when the OS has no entropy source; a zero id is still unique
    // enough for logs, and W3C forbids only the all-zero id, which the time prefix avoids.
    if aws_lc_rs::rand::fill(&mut buf).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(1);
        for (i, b) in buf.iter_mut().enumerate() {
            *b = (nanos >> ((i % 16) * 8)) as u8;
        }
    }
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// The `traceparent` for an outgoing call made inside the current span, when spans are
/// exported (the propagator is a no-op otherwise).
pub fn current_traceparent() -> Option<String> {
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    let cx = tracing::Span::current().context();
    let mut carrier = std::collections::HashMap::new();
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&cx, &mut carrier));
    carrier.remove("traceparent")
}

/// Reads W3C headers for the OpenTelemetry propagator.
struct HeaderExtractor<'a>(&'a axum::http::HeaderMap);

impl opentelemetry::propagation::Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// The request span: a child of the caller's `traceparent`. With OTLP export on, the ids are
/// OpenTelemetry's (so logs and exported spans agree); without it, ours.
fn request_span(req: &Request, method: &str, route: &str) -> (tracing::Span, TraceContext) {
    use opentelemetry::trace::TraceContextExt as _;
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    let span = tracing::info_span!(
        "request",
        otel.name = %format!("{method} {route}"),
        otel.kind = "server",
        http.request.method = %method,
        http.route = %route,
        trace_id = tracing::field::Empty,
        span_id = tracing::field::Empty,
        parent_span_id = tracing::field::Empty,
        http.response.status_code = tracing::field::Empty,
    );
    let ours = TraceContext::from_header(req.headers().get("traceparent"));
    let parent = opentelemetry::global::get_text_map_propagator(|p| {
        p.extract(&HeaderExtractor(req.headers()))
    });
    let _ = span.set_parent(parent);
    let otel = span.context().span().span_context().clone();
    let trace = if otel.is_valid() {
        TraceContext {
            trace_id: otel.trace_id().to_string(),
            span_id: otel.span_id().to_string(),
            parent_span_id: ours.parent_span_id,
            sampled: otel.is_sampled(),
        }
    } else {
        ours
    };
    span.record("trace_id", trace.trace_id.as_str());
    span.record("span_id", trace.span_id.as_str());
    if let Some(parent) = &trace.parent_span_id {
        span.record("parent_span_id", parent.as_str());
    }
    (span, trace)
}

/// Per request: trace context into the extensions and span, the duration histogram, and one
/// JSON log line with method, route, status and latency.
pub async fn track_requests(
    State(metrics): State<Metrics>,
    mut req: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let method = req.method().as_str().to_string();
    // The route template, not the path: ids in paths would explode the label cardinality.
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let (span, trace) = request_span(&req, &method, &route);
    req.extensions_mut().insert(trace);
    let response = next.run(req).instrument(span.clone()).await;
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    metrics.http(
        HttpLabels {
            http_request_method: method.clone(),
            http_route: route.clone(),
            http_response_status_code: status,
        },
        elapsed,
    );
    span.record("http.response.status_code", status);
    span.in_scope(|| {
        tracing::info!(
            http.method = %method,
            http.route = %route,
            http.status = status,
            latency_ms = elapsed.as_secs_f64() * 1000.0,
            "request"
        );
    });
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_is_parsed_and_invalid_ones_are_replaced() {
        let v = HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        let t = TraceContext::from_header(Some(&v));
        assert_eq!(t.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(t.parent_span_id.as_deref(), Some("00f067aa0ba902b7"));
        assert!(t.sampled);
        assert_ne!(t.span_id, "00f067aa0ba902b7");
        assert!(
            t.traceparent()
                .starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-")
        );

        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "garbage",
        ] {
            let v = HeaderValue::from_static(bad);
            let t = TraceContext::from_header(Some(&v));
            assert!(t.parent_span_id.is_none(), "{bad} accepted");
            assert_eq!(t.trace_id.len(), 32);
        }
    }
}
