//! Metrics (Prometheus text on the admin port, OpenTelemetry semantic names), W3C trace
//! context, and the one-line-per-request JSON log.
//!
//! Metrics are plain values in [`Metrics`], cloned into whatever records them, so a test can read
//! the same counters the /metrics page shows (e.g. how many Firestore reads a stampede caused).

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderValue, Method};
use axum::response::Response;
use futures::future::Either;
use platform::telemetry::TraceIds;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tracing::Instrument as _;

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

// Label values are `Cow<'static, str>`: on the request path they are borrowed constants (and
// interned route templates), so recording a metric allocates nothing.

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub http_request_method: Cow<'static, str>,
    pub http_route: Cow<'static, str>,
    pub http_response_status_code: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: Cow<'static, str>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabel {
    pub decision: Cow<'static, str>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: Cow<'static, str>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    pub operation: Cow<'static, str>,
    pub outcome: Cow<'static, str>,
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
    hot: Hot,
}

/// The series a cache-hit GET touches, looked up once: a family lookup takes the family's lock
/// and hashes the label set on every call, from every lane.
struct Hot {
    cache_hit: Counter,
    allowed: Counter,
    admit_ok: Histogram,
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
        let hot = Hot {
            cache_hit: cache.get_or_create(&result_label("hit")).clone(),
            allowed: rate_limit
                .get_or_create(&DecisionLabel {
                    decision: Cow::Borrowed("allowed"),
                })
                .clone(),
            admit_ok: redis
                .get_or_create(&call_labels(Cow::Borrowed("admit"), true))
                .clone(),
        };
        Self {
            inner: Arc::new(Inner {
                hot,
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

    pub fn cache(&self, result: &'static str) {
        if result == "hit" {
            self.inner.hot.cache_hit.inc();
            return;
        }
        self.inner.cache.get_or_create(&result_label(result)).inc();
    }

    pub fn cache_count(&self, result: &str) -> u64 {
        self.inner
            .cache
            .get_or_create(&ResultLabel {
                result: Cow::Owned(result.into()),
            })
            .get()
    }

    pub fn rate_limit(&self, decision: &'static str) {
        if decision == "allowed" {
            self.inner.hot.allowed.inc();
            return;
        }
        self.inner
            .rate_limit
            .get_or_create(&DecisionLabel {
                decision: Cow::Borrowed(decision),
            })
            .inc();
    }

    pub fn auth_failure(&self, reason: &'static str) {
        self.inner
            .auth_failures
            .get_or_create(&ReasonLabel {
                reason: Cow::Borrowed(reason),
            })
            .inc();
    }

    pub fn auth_failure_count(&self, reason: &str) -> u64 {
        self.inner
            .auth_failures
            .get_or_create(&ReasonLabel {
                reason: Cow::Owned(reason.into()),
            })
            .get()
    }

    pub fn redis_duration(&self, operation: &'static str, ok: bool, elapsed: Duration) {
        if ok && operation == "admit" {
            self.inner.hot.admit_ok.observe(elapsed.as_secs_f64());
            return;
        }
        self.inner
            .redis
            .get_or_create(&call_labels(Cow::Borrowed(operation), ok))
            .observe(elapsed.as_secs_f64());
    }

    pub fn firestore_duration(&self, operation: &str, ok: bool, elapsed: Duration) {
        self.inner
            .firestore
            .get_or_create(&call_labels(Cow::Owned(operation.into()), ok))
            .observe(elapsed.as_secs_f64());
    }

    pub fn key_fetch(&self, result: &'static str) {
        self.inner
            .key_fetches
            .get_or_create(&ResultLabel {
                result: Cow::Borrowed(result),
            })
            .inc();
    }

    pub fn key_fetch_count(&self, result: &str) -> u64 {
        self.inner
            .key_fetches
            .get_or_create(&ResultLabel {
                result: Cow::Owned(result.into()),
            })
            .get()
    }
}

fn result_label(result: &'static str) -> ResultLabel {
    ResultLabel {
        result: Cow::Borrowed(result),
    }
}

fn call_labels(operation: Cow<'static, str>, ok: bool) -> CallLabels {
    CallLabels {
        operation,
        outcome: Cow::Borrowed(if ok { "ok" } else { "error" }),
    }
}

/// The method as a label value: a constant for the standard methods.
fn method_label(method: &Method) -> Cow<'static, str> {
    Cow::Borrowed(match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => return Cow::Owned(method.as_str().to_string()),
    })
}

/// The route template as a `'static` string: templates come from the router, so there are few
/// of them, and each is leaked once instead of copied on every request.
fn route_label(route: &str) -> &'static str {
    static ROUTES: RwLock<Option<HashSet<&'static str>>> = RwLock::new(None);
    if let Some(found) = ROUTES
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
        .and_then(|set| set.get(route))
    {
        return found;
    }
    let mut routes = ROUTES.write().unwrap_or_else(|p| p.into_inner());
    let set = routes.get_or_insert_with(HashSet::new);
    if let Some(found) = set.get(route) {
        return found;
    }
    let leaked: &'static str = Box::leak(route.to_string().into_boxed_str());
    set.insert(leaked);
    leaked
}

/// W3C trace context of the request: the caller's trace id when a valid `traceparent` came in,
/// else a new one; always a new span id for this server's span.
/// The ids are shared with the request's log lines (`platform::telemetry::with_trace_ids`).
#[derive(Debug, Clone)]
pub struct TraceContext {
    pub ids: Arc<TraceIds>,
    pub sampled: bool,
}

impl std::ops::Deref for TraceContext {
    type Target = TraceIds;

    fn deref(&self) -> &TraceIds {
        &self.ids
    }
}

impl TraceContext {
    fn new(
        trace_id: String,
        span_id: String,
        parent_span_id: Option<String>,
        sampled: bool,
    ) -> Self {
        let ids = TraceIds {
            trace_id,
            span_id,
            parent_span_id,
        };
        Self {
            ids: Arc::new(ids),
            sampled,
        }
    }

    pub fn from_header(value: Option<&HeaderValue>) -> Self {
        let parsed = value
            .and_then(|v| v.to_str().ok())
            .and_then(parse_traceparent);
        match parsed {
            Some((trace_id, parent, flags)) => {
                Self::new(trace_id, trace_hex(8), Some(parent), flags & 1 == 1)
            }
            None => Self::new(trace_hex(16), trace_hex(8), None, false),
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
    hex_string(&buf)
}

/// A trace or span id of `bytes` random bytes, in hex, never all zeros. Ids need to be unique,
/// not secret: a per-thread fast generator (seeded from the OS) instead of the
/// cryptographic one, which cost about 1 % of a cache-hit GET for three ids.
fn trace_hex(bytes: usize) -> String {
    let mut buf = [0u8; 16];
    let buf = &mut buf[..bytes.min(16)];
    loop {
        fastrand::fill(buf);
        if buf.iter().any(|b| *b != 0) {
            return hex_string(buf);
        }
    }
}

fn hex_string(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut hex = vec![0; bytes.len() * 2];
    for (pair, b) in hex.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 0xf)];
    }
    // Hex digits are ASCII: never the empty default.
    String::from_utf8(hex).unwrap_or_default()
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

/// The request's trace context: a child of the caller's `traceparent`, with our own ids; and,
/// only when spans are exported, the request span with the OpenTelemetry attributes, whose
/// ids OpenTelemetry assigns (so logs and exported spans agree). Without export there is no
/// span ([`tracing::Span::none`]): the log lines get the ids from
/// [`platform::telemetry::with_trace_ids`].
fn request_trace(
    req: &Request,
    method: &str,
    route: &str,
    export: bool,
) -> (tracing::Span, TraceContext, bool) {
    use opentelemetry::trace::TraceContextExt as _;
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    let ours = TraceContext::from_header(req.headers().get("traceparent"));
    if !export {
        return (tracing::Span::none(), ours, false);
    }
    let span = tracing::info_span!(
        "request",
        otel.name = %format_args!("{method} {route}"),
        otel.kind = "server",
        http.request.method = method,
        http.route = route,
        http.response.status_code = tracing::field::Empty,
    );
    if span.is_disabled() {
        return (tracing::Span::none(), ours, false);
    }
    let parent = opentelemetry::global::get_text_map_propagator(|p| {
        p.extract(&HeaderExtractor(req.headers()))
    });
    let _ = span.set_parent(parent);
    let otel = span.context().span().span_context().clone();
    if !otel.is_valid() {
        return (span, ours, false);
    }
    let trace = TraceContext::new(
        otel.trace_id().to_string(),
        otel.span_id().to_string(),
        ours.parent_span_id.clone(),
        otel.is_sampled(),
    );
    (span, trace, true)
}

/// The request's log line, as the JSON layer would write `info!(http.method, http.route,
/// http.status, latency_ms, "request")` with the request's trace ids, written directly (see
/// [`platform::telemetry::write_line`]). It is not a `tracing` event, so an exported request
/// span has no "request" event; the span has the status (`http.response.status_code`) and its
/// duration.
struct RequestLine<'a> {
    method: &'a str,
    route: &'a str,
    status: u16,
    latency_ms: f64,
    trace_id: &'a str,
    span_id: &'a str,
    parent_span_id: Option<&'a str>,
}

impl RequestLine<'_> {
    /// The JSON object, keys in the JSON layer's order, the timestamp taken now.
    fn write(&self, out: &mut Vec<u8>) {
        use platform::telemetry::write_json_str;
        out.extend_from_slice(br#"{"timestamp":""#);
        platform::telemetry::write_timestamp(out);
        out.extend_from_slice(br#"","level":"INFO","message":"request","http.method":"#);
        write_json_str(out, self.method);
        out.extend_from_slice(br#","http.route":"#);
        write_json_str(out, self.route);
        out.extend_from_slice(br#","http.status":"#);
        out.extend_from_slice(itoa::Buffer::new().format(self.status).as_bytes());
        out.extend_from_slice(br#","latency_ms":"#);
        // serde_json's float format; writing into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, &self.latency_ms);
        out.extend_from_slice(br#","target":"#);
        write_json_str(out, module_path!());
        out.extend_from_slice(br#","trace_id":"#);
        write_json_str(out, self.trace_id);
        out.extend_from_slice(br#","span_id":"#);
        write_json_str(out, self.span_id);
        if let Some(parent) = self.parent_span_id {
            out.extend_from_slice(br#","parent_span_id":"#);
            write_json_str(out, parent);
        }
        out.push(b'}');
    }
}

/// Per request: trace context into the extensions and span, the duration histogram, and one
/// JSON log line with method, route, status and latency; `run` answers the request. Spans are
/// built for OpenTelemetry only when `export_spans`.
pub async fn track_request<F, Fut>(
    metrics: &Metrics,
    export_spans: bool,
    mut req: Request,
    run: F,
) -> Response
where
    F: FnOnce(Request) -> Fut,
    Fut: Future<Output = Response>,
{
    let started = Instant::now();
    let method = method_label(req.method());
    // The route template, not the path: ids in paths would explode the label cardinality.
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| route_label(p.as_str()));
    let (span, trace, exporting) = request_trace(&req, &method, route, export_spans);
    let ids = trace.ids.clone();
    req.extensions_mut().insert(trace);
    // A disabled span's enter and exit on every poll are not free: instrument only exported ones.
    let run = if exporting {
        Either::Left(run(req).instrument(span.clone()))
    } else {
        Either::Right(run(req))
    };
    let response = platform::telemetry::with_trace_ids(ids.clone(), run).await;
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    // An exported span carries the status; the log line has it as `http.status` anyway.
    if exporting {
        span.record("http.response.status_code", status);
    }
    if tracing::enabled!(tracing::Level::INFO) {
        let line = RequestLine {
            method: &method,
            route,
            status,
            latency_ms: elapsed.as_secs_f64() * 1000.0,
            trace_id: &ids.trace_id,
            span_id: &ids.span_id,
            parent_span_id: ids.parent_span_id.as_deref(),
        };
        platform::telemetry::write_line(|out| line.write(out));
    }
    metrics.http(
        HttpLabels {
            http_request_method: method,
            http_route: Cow::Borrowed(route),
            http_response_status_code: status,
        },
        elapsed,
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_line_is_json_with_the_json_layer_s_keys() {
        for (route, parent) in [
            ("/v1/{collection}/{id}", Some("00f067aa0ba902b7")),
            ("odd \"route\"\n", None),
        ] {
            let line = RequestLine {
                method: "GET",
                route,
                status: 304,
                latency_ms: 1.25,
                trace_id: "4bf92f3577b34da6a3ce929d0e0e4736",
                span_id: "a3ce929d0e0e4736",
                parent_span_id: parent,
            };
            let mut out = Vec::new();
            line.write(&mut out);
            let text = String::from_utf8(out).expect("UTF-8");
            let mut v: serde_json::Value = serde_json::from_str(&text).expect(&text);
            let at: jiff::Timestamp = v["timestamp"]
                .as_str()
                .expect("timestamp")
                .parse()
                .expect("RFC 3339");
            assert!(
                (jiff::Timestamp::now() - at).get_seconds().abs() < 5,
                "{at}"
            );
            v.as_object_mut().expect("object").remove("timestamp");
            let mut expected = serde_json::json!({
                "level": "INFO", "message": "request", "http.method": "GET",
                "http.route": route, "http.status": 304, "latency_ms": 1.25,
                "target": "api_server::observability",
                "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "span_id": "a3ce929d0e0e4736",
            });
            if let Some(p) = parent {
                expected["parent_span_id"] = p.into();
            }
            assert_eq!(v, expected);
            assert!(text.starts_with(r#"{"timestamp":""#), "{text}");
        }
    }

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
