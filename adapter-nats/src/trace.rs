//! Trace context across processes: W3C `traceparent` in and out of HTTP and bus headers, and
//! the spans Corral records for OpenTelemetry.
//!
//! Every span meant for traces uses the target [`TARGET`] at `DEBUG` level, so a process
//! without an OpenTelemetry layer (or whose log filter is `info`) never builds them: they cost
//! a disabled callsite check. The binary's OpenTelemetry layer enables this target alone.
//! Injection and extraction go through the global propagator, which is a no-op until the
//! binary installs the W3C one, so nothing is added to headers when tracing is off.

use std::sync::LazyLock;

use opentelemetry::propagation::{Extractor, Injector};
use prometheus::{IntCounterVec, Registry};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::metrics::{MetricDef, MetricKind};

/// The `tracing` target of every span that becomes an OpenTelemetry span.
pub const TARGET: &str = "corral_trace";

/// Spans of this process by what became of them.
pub const SPANS: MetricDef = MetricDef {
    name: "corral_trace_spans_total",
    kind: MetricKind::Counter,
    labels: &["outcome"],
    help: "Trace spans of this process (with --otlp-endpoint): outcome=ended (finished and queued), exported (accepted by the collector) or dropped (its export failed, e.g. the collector is down). ended minus exported minus dropped is what the export queue holds or discarded when full.",
};

static SPAN_COUNTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    let counts = IntCounterVec::new(SPANS.opts(), SPANS.labels)
        .unwrap_or_else(|e| panic!("{}: {e}", SPANS.name));
    for outcome in ["ended", "exported", "dropped"] {
        counts.with_label_values(&[outcome]);
    }
    counts
});

/// The process-wide span counters ([`SPANS`]), for the exporter to count into.
pub fn span_counts() -> &'static IntCounterVec {
    &SPAN_COUNTS
}

/// Adds the process-wide span counters to `registry` (a node's or a gateway's).
pub fn register_span_metrics(registry: &Registry) {
    if let Err(e) = registry.register(Box::new(SPAN_COUNTS.clone())) {
        panic!("{}: {e}", SPANS.name);
    }
}

/// Header pairs a bus message carries (see [`crate::BusMessage::headers`]).
pub type Headers = Vec<(String, String)>;

struct PairsInjector<'a>(&'a mut Headers);

impl Injector for PairsInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.push((key.to_owned(), value));
    }
}

struct PairsExtractor<'a>(&'a [(String, String)]);

impl Extractor for PairsExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| k.as_str()).collect()
    }
}

struct HttpInjector<'a>(&'a mut http::HeaderMap);

impl Injector for HttpInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

struct HttpExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HttpExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// The trace context of `span` as header pairs (empty when tracing is off or the span is not
/// recorded).
pub fn headers_of(span: &tracing::Span) -> Headers {
    let mut headers = Headers::new();
    if span.is_disabled() {
        return headers;
    }
    let cx = span.context();
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(&cx, &mut PairsInjector(&mut headers));
    });
    headers
}

/// Writes the trace context of `span` into HTTP `headers` (replacing any `traceparent` there).
pub fn inject_http(span: &tracing::Span, headers: &mut http::HeaderMap) {
    if span.is_disabled() {
        return;
    }
    let cx = span.context();
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(&cx, &mut HttpInjector(headers));
    });
}

/// Makes the trace context carried by HTTP `headers` (if any) the parent of `span`. Call it
/// before the span is first entered: a parent set later is ignored.
pub fn adopt_http(span: &tracing::Span, headers: &http::HeaderMap) {
    if span.is_disabled() || !headers.contains_key("traceparent") {
        return;
    }
    let cx = opentelemetry::global::get_text_map_propagator(|p| p.extract(&HttpExtractor(headers)));
    let _ = span.set_parent(cx);
}

/// Makes the trace context carried by bus `headers` (if any) the parent of `span`, as
/// [`adopt_http`] does for HTTP.
pub fn adopt_pairs(span: &tracing::Span, headers: &[(String, String)]) {
    if span.is_disabled() || headers.is_empty() {
        return;
    }
    let cx =
        opentelemetry::global::get_text_map_propagator(|p| p.extract(&PairsExtractor(headers)));
    let _ = span.set_parent(cx);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extractors_find_headers_case_insensitively() {
        let pairs = vec![("TraceParent".to_owned(), "00-abc".to_owned())];
        assert_eq!(PairsExtractor(&pairs).get("traceparent"), Some("00-abc"));
        assert_eq!(PairsExtractor(&pairs).keys(), ["TraceParent"]);
        let mut map = http::HeaderMap::new();
        HttpInjector(&mut map).set("traceparent", "00-def".into());
        HttpInjector(&mut map).set("bad\nname", "x".into());
        assert_eq!(HttpExtractor(&map).get("traceparent"), Some("00-def"));
        assert_eq!(map.len(), 1);
    }

    #[test]
    fn without_a_subscriber_nothing_is_injected() {
        let span = tracing::debug_span!(target: TARGET, "test");
        assert!(headers_of(&span).is_empty());
        let mut map = http::HeaderMap::new();
        inject_http(&span, &mut map);
        assert!(map.is_empty());
    }
}
