//! Trace context across the queue. The publisher stores its W3C `traceparent` in the job; the
//! worker's job span gets a *link* to it rather than becoming its child: a job can run long after
//! the request ended, more than once, and batched with others, so it starts a trace of its own
//! that points back at the request that caused it.

use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState,
};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// Parses `00-<trace id>-<span id>-<flags>`; `None` if malformed or all-zero.
pub fn parse_traceparent(s: &str) -> Option<SpanContext> {
    if !crate::queue::job::valid_traceparent(s) {
        return None;
    }
    let mut parts = s.split('-').skip(1);
    let trace_id = TraceId::from_hex(parts.next()?).ok()?;
    let span_id = SpanId::from_hex(parts.next()?).ok()?;
    let flags = u8::from_str_radix(parts.next()?, 16).ok()?;
    let cx = SpanContext::new(
        trace_id,
        span_id,
        TraceFlags::new(flags),
        true,
        TraceState::default(),
    );
    cx.is_valid().then_some(cx)
}

pub fn format_traceparent(cx: &SpanContext) -> String {
    format!(
        "00-{:032x}-{:016x}-{:02x}",
        u128::from_be_bytes(cx.trace_id().to_bytes()),
        u64::from_be_bytes(cx.span_id().to_bytes()),
        cx.trace_flags().to_u8()
    )
}

/// The `traceparent` of the current tracing span, when an OpenTelemetry layer is installed and
/// the span is being traced. What a publisher passes to [`crate::queue::NewJob::with_traceparent`].
pub fn current_traceparent() -> Option<String> {
    let cx = tracing::Span::current().context();
    let span = cx.span();
    let sc = span.span_context();
    sc.is_valid().then(|| format_traceparent(sc))
}

/// Links `span` to the publisher's span (a no-op without an OpenTelemetry layer).
pub(crate) fn link(span: &tracing::Span, traceparent: Option<&str>) {
    if let Some(cx) = traceparent.and_then(parse_traceparent) {
        span.add_link(cx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_round_trips() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let cx = parse_traceparent(tp);
        assert!(cx.as_ref().is_some_and(|c| c.is_sampled() && c.is_remote()));
        assert_eq!(cx.map(|c| format_traceparent(&c)).as_deref(), Some(tp));
        assert!(
            parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01").is_none()
        );
        assert!(parse_traceparent("garbage").is_none());
    }

    #[test]
    fn no_current_trace_without_an_otel_layer() {
        assert_eq!(current_traceparent(), None);
    }
}
