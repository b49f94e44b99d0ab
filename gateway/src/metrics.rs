//! Prometheus metrics of a gateway, from one catalog (rendered into `docs/metrics.md`).

use std::time::Duration;

use corral_adapter_nats::metrics::{MetricDef, MetricKind};
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Registry};

/// Requests handled.
pub const REQUESTS: MetricDef = MetricDef {
    name: "corral_gateway_requests_total",
    kind: MetricKind::Counter,
    labels: &["kind", "status"],
    help: "Requests handled, by kind (handshake, session, upgrade, other) and status class (2xx, 3xx, 4xx, 5xx, 101).",
};
/// Routing decisions for new sessions.
pub const DECISIONS: MetricDef = MetricDef {
    name: "corral_gateway_routing_decisions_total",
    kind: MetricKind::Counter,
    labels: &["node", "reason"],
    help: "Nodes chosen for new sessions and other requests without a session, by node and rule: cookie, address, header, query, p2c, round_robin, fallback (no node ready, a degraded or unchecked one used).",
};
/// Open WebSocket tunnels.
pub const TUNNELS: MetricDef = MetricDef {
    name: "corral_gateway_tunnels",
    kind: MetricKind::Gauge,
    labels: &["node"],
    help: "WebSocket tunnels open through this gateway, by node.",
};
/// Time to the node's response headers.
pub const UPSTREAM_DURATION: MetricDef = MetricDef {
    name: "corral_gateway_upstream_duration_seconds",
    kind: MetricKind::Histogram,
    labels: &["kind"],
    help: "Time from forwarding a request to the node's response headers, by kind (a long-poll waits for data, up to the ping interval).",
};
/// Refusals and failures.
pub const ERRORS: MetricDef = MetricDef {
    name: "corral_gateway_errors_total",
    kind: MetricKind::Counter,
    labels: &["kind"],
    help: "Requests the gateway refused or could not forward, by kind: session_unknown, no_node, upstream_connect, upstream, payload_too_large, too_many_connections, drained_session, node_draining (a node refused a handshake; the next one got it).",
};
/// Nodes by state.
pub const NODES: MetricDef = MetricDef {
    name: "corral_gateway_nodes",
    kind: MetricKind::Gauge,
    labels: &["state"],
    help: "Nodes this gateway knows, by whether they take new sessions: preferred (ready), fallback (degraded or unchecked), no.",
};

/// Every metric of the gateway.
pub const CATALOG: &[MetricDef] = &[
    REQUESTS,
    DECISIONS,
    TUNNELS,
    UPSTREAM_DURATION,
    ERRORS,
    NODES,
    corral_adapter_nats::trace::SPANS,
];

/// The gateway's metrics.
#[derive(Debug, Clone)]
pub struct GatewayMetrics {
    requests: IntCounterVec,
    decisions: IntCounterVec,
    tunnels: IntGaugeVec,
    upstream: HistogramVec,
    errors: IntCounterVec,
    nodes: IntGaugeVec,
}

impl GatewayMetrics {
    /// Registers every metric of [`CATALOG`] (and the process collector) in `registry`.
    pub fn new(registry: &Registry) -> GatewayMetrics {
        let counter =
            |def: &MetricDef| def.register(registry, IntCounterVec::new(def.opts(), def.labels));
        let gauge =
            |def: &MetricDef| def.register(registry, IntGaugeVec::new(def.opts(), def.labels));
        let buckets = vec![
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            30.0,
        ];
        #[cfg(target_os = "linux")]
        registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .unwrap_or_else(|e| panic!("process collector: {e}"));
        corral_adapter_nats::trace::register_span_metrics(registry);
        GatewayMetrics {
            requests: counter(&REQUESTS),
            decisions: counter(&DECISIONS),
            tunnels: gauge(&TUNNELS),
            upstream: UPSTREAM_DURATION.register(
                registry,
                HistogramVec::new(
                    HistogramOpts::from(UPSTREAM_DURATION.opts()).buckets(buckets),
                    UPSTREAM_DURATION.labels,
                ),
            ),
            errors: counter(&ERRORS),
            nodes: gauge(&NODES),
        }
        .with_known_labels()
    }

    /// Every label value known in advance starts at 0, so the first event is a visible
    /// increase (node ids are not known in advance).
    fn with_known_labels(self) -> Self {
        for kind in ["handshake", "session", "upgrade", "other"] {
            for class in ["101", "2xx", "3xx", "4xx", "5xx"] {
                self.requests.with_label_values(&[kind, class]);
            }
            self.upstream.with_label_values(&[kind]);
        }
        for kind in [
            "session_unknown",
            "no_node",
            "upstream_connect",
            "upstream",
            "payload_too_large",
            "too_many_connections",
            "drained_session",
            "node_draining",
        ] {
            self.errors.with_label_values(&[kind]);
        }
        self
    }

    pub(crate) fn request(&self, kind: &str, status: http::StatusCode) {
        let class = match status.as_u16() {
            101 => "101",
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        self.requests.with_label_values(&[kind, class]).inc();
    }

    pub(crate) fn decision(&self, node: &str, reason: &str) {
        self.decisions.with_label_values(&[node, reason]).inc();
    }

    pub(crate) fn tunnel_opened(&self, node: &str) {
        self.tunnels.with_label_values(&[node]).inc();
    }

    pub(crate) fn tunnel_closed(&self, node: &str) {
        self.tunnels.with_label_values(&[node]).dec();
    }

    pub(crate) fn upstream(&self, kind: &str, elapsed: Duration) {
        self.upstream
            .with_label_values(&[kind])
            .observe(elapsed.as_secs_f64());
    }

    pub(crate) fn error(&self, kind: &str) {
        self.errors.with_label_values(&[kind]).inc();
    }

    pub(crate) fn set_nodes(&self, preferred: usize, fallback: usize, no: usize) {
        for (state, n) in [("preferred", preferred), ("fallback", fallback), ("no", no)] {
            self.nodes
                .with_label_values(&[state])
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }
}

/// The Markdown table of [`CATALOG`].
pub fn catalog_markdown() -> String {
    corral_adapter_nats::metrics::catalog_markdown(CATALOG)
}
