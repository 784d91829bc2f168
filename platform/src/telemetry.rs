//! Process-wide telemetry: JSON log lines on stdout (filtered by `RUST_LOG`, default given by
//! the caller) and, when an OTLP endpoint is configured, spans exported over OTLP/gRPC with W3C
//! trace context as the propagation format.
//!
//! JSON because the log pipeline parses fields (trace_id, route, status) instead of grepping
//! text. Every line logged while a request is served carries its trace ids as top-level
//! `trace_id`, `span_id` and `parent_span_id` (see [`with_trace_ids`]); the current span's
//! fields, when there is a span, go under `span`.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use std::io::Write;
use std::sync::{Arc, Condvar, Mutex};

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::writer::EitherWriter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("a global tracing subscriber is already installed: {0}")]
    AlreadyInstalled(String),
    #[error("starting the log writer thread: {0}")]
    LogWriter(String),
    #[error("OTLP exporter for {endpoint}: {message}")]
    Exporter { endpoint: String, message: String },
}

/// Keeps the span exporter alive; [`Telemetry::shutdown`] flushes what is still buffered.
#[must_use = "dropping the guard without shutdown may lose the last spans"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
    logs: Option<BatchedStdout>,
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
        if let Some(logs) = self.logs {
            logs.close();
        }
    }
}

/// Log lines appended to a shared buffer and written to stdout by one thread, for servers
/// that log a line per request: while that thread writes, the lines of other requests gather
/// and go out in the next `write(2)`, and request threads never wait on the stdout lock or the
/// disk. No line is dropped: past [`BatchedStdout::MAX_PENDING`] bytes, loggers wait for the
/// writer. After an idle moment the first line is written at once; while lines keep coming,
/// they go out every [`GATHER`].
#[derive(Clone)]
pub struct BatchedStdout(Arc<Batch>);

struct Batch {
    pending: Mutex<Pending>,
    /// Signalled when lines arrive while the writer waits, and when the writer closes.
    arrived: Condvar,
    /// Signalled when the writer has taken the pending lines (room again, or flushed).
    taken: Condvar,
}

/// How long the writer lets lines gather after a write while they keep coming. Each pause is
/// a sleep and a wake-up of this thread: at 200 µs they were most of the api-server's context
/// switches beyond the bare floor's (0.185 against 0.108 per request under wrk; 0.129 at 2 ms).
const GATHER: std::time::Duration = std::time::Duration::from_millis(2);

#[derive(Default)]
struct Pending {
    buf: Vec<u8>,
    writer_waiting: bool,
    closed: bool,
    /// Batches taken so far, so `close` can wait for the last one to be written.
    taken: u64,
    written: u64,
}

impl BatchedStdout {
    pub const MAX_PENDING: usize = 4 << 20;

    /// Starts the writer thread, writing to stdout.
    pub fn start() -> std::io::Result<Self> {
        Self::start_to(Box::new(std::io::stdout()))
    }

    /// Starts the writer thread, writing to `out`.
    pub fn start_to(out: Box<dyn Write + Send>) -> std::io::Result<Self> {
        let batch = Arc::new(Batch {
            pending: Mutex::new(Pending::default()),
            arrived: Condvar::new(),
            taken: Condvar::new(),
        });
        let b = batch.clone();
        std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || b.run(out))?;
        Ok(Self(batch))
    }

    /// Writes what is pending and stops the writer; later lines go to stdout directly.
    pub fn close(&self) {
        let mut p = self.0.lock();
        p.closed = true;
        self.0.arrived.notify_all();
        let target = p.taken + u64::from(!p.buf.is_empty());
        while p.written < target {
            p = self.0.taken.wait(p).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn append(&self, line: &[u8]) {
        let mut p = self.0.lock();
        if p.closed {
            drop(p);
            let _ = std::io::stdout().write_all(line);
            return;
        }
        while p.buf.len() > Self::MAX_PENDING && !p.closed {
            p = self.0.taken.wait(p).unwrap_or_else(|e| e.into_inner());
        }
        p.buf.extend_from_slice(line);
        if p.writer_waiting {
            p.writer_waiting = false;
            self.0.arrived.notify_one();
        }
    }
}

impl Batch {
    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn run(&self, mut out: Box<dyn Write + Send>) {
        let mut spare = Vec::new();
        loop {
            let mut p = self.lock();
            while p.buf.is_empty() && !p.closed {
                p.writer_waiting = true;
                p = self.arrived.wait(p).unwrap_or_else(|e| e.into_inner());
            }
            if p.buf.is_empty() {
                return;
            }
            std::mem::swap(&mut p.buf, &mut spare);
            p.taken += 1;
            drop(p);
            self.taken.notify_all();
            // Nowhere to report a failed log write; keep serving.
            let _ = out.write_all(&spare);
            let _ = out.flush();
            spare.clear();
            let mut p = self.lock();
            p.written += 1;
            let closed = p.closed;
            drop(p);
            self.taken.notify_all();
            // Lines are coming in: let the next ones gather for a moment instead of being
            // woken for each (a futex call per line). Idle, the writer sleeps on `arrived`
            // and the first line wakes it at once.
            if !closed {
                std::thread::sleep(GATHER);
            }
        }
    }
}

/// The trace ids of the request being served, which every log line written while serving it
/// carries as top-level `trace_id`, `span_id` and `parent_span_id` (see [`with_trace_ids`]).
#[derive(Debug, Clone)]
pub struct TraceIds {
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: Option<String>,
}

tokio::task_local! {
    static TRACE_IDS: Arc<TraceIds>;
}

/// Runs `f` with `ids` on its log lines. A task-local rather than fields of a `tracing` span:
/// a span per request (created, entered and left on every poll, closed) cost about 5,500
/// instructions of a cache-hit GET, and only exported spans need one. Not an `async fn`: that
/// would keep `f` twice in its future (as an argument and inside the scope).
pub fn with_trace_ids<F: Future>(ids: Arc<TraceIds>, f: F) -> impl Future<Output = F::Output> {
    TRACE_IDS.scope(ids, f)
}

/// The trace ids of the current request, if any.
pub fn trace_ids<R>(f: impl FnOnce(&TraceIds) -> R) -> Option<R> {
    TRACE_IDS.try_with(|ids| f(ids)).ok()
}

/// Stdout, batched or not.
#[derive(Clone)]
struct LogWriter(Option<BatchedStdout>);

/// The JSON layer's writer, for [`write_line`].
static LINES: std::sync::OnceLock<LogWriter> = std::sync::OnceLock::new();

/// Writes one log line, which `render` writes into the buffer it is given as a JSON object
/// (no newline), through the installed writer (nothing before [`init`]): for a line a server
/// writes on every request, where going through `tracing` (field visitors, JSON values,
/// dispatch) cost about 16,000 instructions per line and serialising a struct with serde_json
/// about 4,000 (callgrind, api-server/tests/bench.rs). Give it the shape of the other lines:
/// `timestamp` (see [`write_timestamp`]), `level`, `message`, fields, `target`, and the ids of
/// [`trace_ids`]; [`write_json_str`] writes a string value.
pub fn write_line(render: impl FnOnce(&mut Vec<u8>)) {
    thread_local! {
        static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    let Some(writer) = LINES.get() else {
        return;
    };
    BUF.with(|buf| {
        let Ok(mut buf) = buf.try_borrow_mut() else {
            return;
        };
        buf.clear();
        render(&mut buf);
        buf.push(b'\n');
        // Nowhere to report a failed log write; keep serving.
        let _ = writer.make_writer().write_all(&buf);
    });
}

/// `s` as a JSON string, as serde_json writes it. Labels and ids need no escaping, and
/// checking that is much cheaper than serde_json's escaping loop, which is only run for the
/// strings that need it.
pub fn write_json_str(out: &mut Vec<u8>, s: &str) {
    // A fold without an early exit, which the compiler vectorises (`all` went byte by byte).
    let plain = s.bytes().fold(true, |plain, b| {
        plain & (b >= 0x20) & (b != b'"') & (b != b'\\')
    });
    if plain {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        // Writing a string into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, s);
    }
}

/// The current time as the JSON layer writes it (RFC 3339, UTC, microseconds:
/// `2026-11-26T14:10:03.123456Z`, without quotes). The date and time of day are formatted
/// once a second per thread.
pub fn write_timestamp(out: &mut Vec<u8>) {
    thread_local! {
        static SECOND: std::cell::RefCell<(u64, String)> =
            const { std::cell::RefCell::new((u64::MAX, String::new())) };
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let seconds = now.as_secs();
    SECOND.with(|cached| {
        let mut cached = cached.borrow_mut();
        if cached.0 != seconds {
            let formatted = i64::try_from(seconds)
                .ok()
                .and_then(|s| jiff::Timestamp::from_second(s).ok())
                .map(|t| t.strftime("%Y-%m-%dT%H:%M:%S").to_string())
                .unwrap_or_default();
            *cached = (seconds, formatted);
        }
        out.extend_from_slice(cached.1.as_bytes());
    });
    // `.` and six digits, zero-padded.
    let micros = now.subsec_micros() + 1_000_000;
    let mut digits = itoa::Buffer::new();
    let digits = digits.format(micros).as_bytes();
    out.push(b'.');
    out.extend_from_slice(&digits[1..]);
    out.push(b'Z');
}

impl<'a> MakeWriter<'a> for LogWriter {
    type Writer = EitherWriter<BatchedLine<'a>, std::io::Stdout>;

    fn make_writer(&'a self) -> Self::Writer {
        match &self.0 {
            Some(batched) => EitherWriter::A(BatchedLine(batched)),
            None => EitherWriter::B(std::io::stdout()),
        }
    }
}

/// One log line (the fmt layer writes each event with a single `write_all`).
pub struct BatchedLine<'a>(&'a BatchedStdout);

impl Write for BatchedLine<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.append(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for BatchedStdout {
    type Writer = BatchedLine<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        BatchedLine(self)
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
    install(default_filter, service_name, otlp_endpoint, None)
}

/// [`init`], with log lines written through a [`BatchedStdout`]: for a server that logs every
/// request. [`Telemetry::shutdown`] writes the last lines.
pub fn init_batched(
    default_filter: &str,
    service_name: &str,
    otlp_endpoint: Option<&str>,
) -> Result<Telemetry, TelemetryError> {
    let logs = BatchedStdout::start().map_err(|e| TelemetryError::LogWriter(e.to_string()))?;
    install(default_filter, service_name, otlp_endpoint, Some(logs))
}

fn install(
    default_filter: &str,
    service_name: &str,
    otlp_endpoint: Option<&str>,
    logs: Option<BatchedStdout>,
) -> Result<Telemetry, TelemetryError> {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let writer = LogWriter(logs.clone());
    let mut fmt = json_subscriber::fmt::layer()
        .flatten_event(true)
        .with_current_span(true)
        .with_span_list(false)
        .with_target(true)
        .with_writer(writer);
    fmt.inner_layer_mut()
        .add_multiple_dynamic_fields(|_event, _context, out| {
            trace_ids(|ids| {
                let _ = out.write_field("trace_id", &ids.trace_id);
                let _ = out.write_field("span_id", &ids.span_id);
                if let Some(parent) = &ids.parent_span_id {
                    let _ = out.write_field("parent_span_id", parent);
                }
            });
        });
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
    let _ = LINES.set(LogWriter(logs.clone()));
    if let Some(p) = &provider {
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        opentelemetry::global::set_tracer_provider(p.clone());
    }
    Ok(Telemetry { provider, logs })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn timestamp() -> String {
        let mut out = Vec::new();
        write_timestamp(&mut out);
        String::from_utf8(out).expect("UTF-8")
    }

    #[test]
    fn json_strings_are_written_as_serde_json_writes_them() {
        for s in [
            "",
            "GET",
            "/v1/{collection}/{id}",
            "a\"b",
            "back\\slash",
            "tab\t",
            "\u{1}",
            "é\u{7f}",
        ] {
            let mut ours = Vec::new();
            write_json_str(&mut ours, s);
            assert_eq!(
                String::from_utf8(ours).expect("UTF-8"),
                serde_json::to_string(s).expect("json"),
                "{s:?}"
            );
        }
    }

    #[test]
    fn timestamps_are_the_json_layers_format_and_current() {
        use tracing_subscriber::fmt::time::FormatTime as _;
        let mut theirs = String::new();
        tracing_subscriber::fmt::time::SystemTime
            .format_time(&mut tracing_subscriber::fmt::format::Writer::new(
                &mut theirs,
            ))
            .expect("format");
        let ours = timestamp();
        assert_eq!(ours.len(), theirs.len(), "{ours} vs {theirs}");
        assert_eq!(ours.as_bytes()[19], b'.');
        assert!(ours.ends_with('Z'));
        let parsed: jiff::Timestamp = ours.parse().expect("RFC 3339");
        let theirs: jiff::Timestamp = theirs.parse().expect("RFC 3339");
        let apart = (parsed.as_microsecond() - theirs.as_microsecond()).abs();
        assert!(apart < 2_000_000, "{parsed} vs {theirs}");
        // Within one second the cached part is reused; the fraction still moves.
        let a = timestamp();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = timestamp();
        assert_ne!(a, b);
    }

    #[test]
    fn batched_lines_arrive_whole_in_order_and_close_writes_the_rest() {
        let sink = Sink::default();
        let logs = BatchedStdout::start_to(Box::new(sink.clone())).expect("writer thread");
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let logs = logs.clone();
                std::thread::spawn(move || {
                    for i in 0..2000 {
                        let line = format!("{{\"t\":{t},\"i\":{i}}}\n");
                        logs.make_writer()
                            .write_all(line.as_bytes())
                            .expect("append");
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("logger thread");
        }
        logs.close();
        let text = String::from_utf8(sink.0.lock().expect("sink").clone()).expect("utf8");
        let mut next = [0; 4];
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line).expect("a whole JSON line");
            let t = v["t"].as_u64().expect("t") as usize;
            assert_eq!(v["i"].as_u64(), Some(next[t]), "thread {t} out of order");
            next[t] += 1;
        }
        assert_eq!(next, [2000; 4]);
    }
}
