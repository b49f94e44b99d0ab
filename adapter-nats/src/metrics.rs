//! Metrics of the cluster adapter, and the metric catalog type the node shares.
//!
//! [`CATALOG`] lists every metric with its labels and help text; the node registers them in
//! its registry and `docs/metrics.md` renders them from here.

use std::time::Duration;

use prometheus::{Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry};

/// Kind of a Prometheus metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// A monotonically increasing count.
    Counter,
    /// A value that goes up and down.
    Gauge,
    /// A distribution of observations in buckets.
    Histogram,
}

/// One metric: its name, kind, labels and help text.
#[derive(Debug, Clone, Copy)]
pub struct MetricDef {
    /// Full Prometheus name.
    pub name: &'static str,
    /// Counter, gauge or histogram.
    pub kind: MetricKind,
    /// Label names, in order.
    pub labels: &'static [&'static str],
    /// What it measures, for `# HELP` and the docs.
    pub help: &'static str,
}

impl MetricDef {
    /// Registers a metric built from this definition. Fails only on a programming error in a
    /// catalog (an invalid or duplicate name), which unit tests rule out.
    pub fn register<M>(&self, registry: &Registry, metric: prometheus::Result<M>) -> M
    where
        M: prometheus::core::Collector + Clone + 'static,
    {
        let metric = metric.unwrap_or_else(|e| panic!("{}: {e}", self.name));
        registry
            .register(Box::new(metric.clone()))
            .unwrap_or_else(|e| panic!("{}: {e}", self.name));
        metric
    }

    /// Prometheus options of this metric.
    pub fn opts(&self) -> Opts {
        Opts::new(self.name, self.help)
    }
}

/// Renders a catalog as the Markdown table the docs embed.
pub fn catalog_markdown(catalog: &[MetricDef]) -> String {
    let mut out = String::from("| metric | type | labels | meaning |\n|---|---|---|---|\n");
    for def in catalog {
        let kind = match def.kind {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
            MetricKind::Histogram => "histogram",
        };
        let labels = if def.labels.is_empty() {
            "—".to_owned()
        } else {
            def.labels
                .iter()
                .map(|l| format!("`{l}`"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        out.push_str(&format!(
            "| `{}` | {kind} | {labels} | {} |\n",
            def.name, def.help
        ));
    }
    out
}

/// Messages on the bus.
pub const BUS_MESSAGES: MetricDef = MetricDef {
    name: "corral_adapter_bus_messages_total",
    kind: MetricKind::Counter,
    labels: &["direction", "kind"],
    help: "Messages published (direction=out) and received (direction=in) on the bus, by kind: request, response, heartbeat, server_event.",
};
/// Bytes on the bus.
pub const BUS_BYTES: MetricDef = MetricDef {
    name: "corral_adapter_bus_bytes_total",
    kind: MetricKind::Counter,
    labels: &["direction", "kind"],
    help: "Payload bytes published and received on the bus, by direction and kind.",
};
/// Time to gather the answers of a cluster request.
pub const REQUEST_DURATION: MetricDef = MetricDef {
    name: "corral_adapter_request_duration_seconds",
    kind: MetricKind::Histogram,
    labels: &["kind"],
    help: "Time from sending a cluster request to the last answer (or the timeout), by kind: rooms, fetch_sockets, server_event.",
};
/// Requests some node did not answer in time.
pub const REQUEST_TIMEOUTS: MetricDef = MetricDef {
    name: "corral_adapter_request_timeouts_total",
    kind: MetricKind::Counter,
    labels: &["kind"],
    help: "Cluster requests that ended with at least one live node not answering before the timeout (the caller got a partial result).",
};
/// Live nodes, this one included.
pub const LIVE_NODES: MetricDef = MetricDef {
    name: "corral_adapter_live_nodes",
    kind: MetricKind::Gauge,
    labels: &[],
    help: "Nodes of the cluster this node currently considers alive, itself included.",
};
/// 1 while the bus is reachable.
pub const BUS_CONNECTED: MetricDef = MetricDef {
    name: "corral_adapter_bus_connected",
    kind: MetricKind::Gauge,
    labels: &[],
    help: "1 while the bus (NATS) is reachable, else 0.",
};
/// Received messages that were not used.
pub const DROPPED: MetricDef = MetricDef {
    name: "corral_adapter_dropped_messages_total",
    kind: MetricKind::Counter,
    labels: &["reason"],
    help: "Received messages dropped, by reason: undecodable (garbage or an incompatible version), foreign_subject, no_namespace (no local socket could match), late_response (after its request ended), duplicate_node_id, handler_panic (a message that made its handler panic).",
};
/// Messages that could not be published.
pub const PUBLISH_FAILURES: MetricDef = MetricDef {
    name: "corral_adapter_publish_failures_total",
    kind: MetricKind::Counter,
    labels: &["reason"],
    help: "Messages that could not be published, by reason: disconnected (bus down), too_large (over the bus's max payload), encode, other.",
};
/// Broadcasts this node delivered to its sockets.
pub const BROADCASTS: MetricDef = MetricDef {
    name: "corral_adapter_broadcasts_total",
    kind: MetricKind::Counter,
    labels: &["origin"],
    help: "Broadcasts (emits to rooms or to all) this node handed to its own sockets, by origin: local (from this node) or remote (from another node, over the bus).",
};
/// Time to hand one broadcast to the local sockets.
pub const BROADCAST_DURATION: MetricDef = MetricDef {
    name: "corral_adapter_broadcast_duration_seconds",
    kind: MetricKind::Histogram,
    labels: &["origin"],
    help: "Time this node took to hand one broadcast to its sockets (find the recipients, encode once, queue to each socket; a remote one includes decoding), by origin: local or remote. The server-side part of delivery latency.",
};
/// Local recipients of a room broadcast.
pub const BROADCAST_FANOUT: MetricDef = MetricDef {
    name: "corral_adapter_broadcast_fanout",
    kind: MetricKind::Histogram,
    labels: &[],
    help: "Sockets of this node one room broadcast from this node reached (every 8th broadcast is measured, so counting costs little).",
};

/// Every metric of the adapter.
pub const CATALOG: &[MetricDef] = &[
    BUS_MESSAGES,
    BUS_BYTES,
    REQUEST_DURATION,
    REQUEST_TIMEOUTS,
    LIVE_NODES,
    BUS_CONNECTED,
    DROPPED,
    PUBLISH_FAILURES,
    BROADCASTS,
    BROADCAST_DURATION,
    BROADCAST_FANOUT,
];

/// What a bus message carried, for the `kind` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    /// A socketioxide adapter request.
    Request,
    /// A response to a request.
    Response,
    /// Membership.
    Heartbeat,
    /// A server-to-server event.
    ServerEvent,
}

impl MessageKind {
    fn label(self) -> &'static str {
        match self {
            MessageKind::Request => "request",
            MessageKind::Response => "response",
            MessageKind::Heartbeat => "heartbeat",
            MessageKind::ServerEvent => "server_event",
        }
    }
}

/// The adapter's metrics.
#[derive(Debug, Clone)]
pub struct AdapterMetrics {
    messages: IntCounterVec,
    bytes: IntCounterVec,
    request_duration: HistogramVec,
    request_timeouts: IntCounterVec,
    live_nodes: IntGauge,
    bus_connected: IntGauge,
    dropped: IntCounterVec,
    publish_failures: IntCounterVec,
    broadcasts: IntCounterVec,
    broadcast_duration: HistogramVec,
    fanout: Histogram,
    fanout_tick: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl AdapterMetrics {
    /// Registers every metric of [`CATALOG`] in `registry`.
    pub fn new(registry: &Registry) -> AdapterMetrics {
        let counter_vec =
            |def: &MetricDef| def.register(registry, IntCounterVec::new(def.opts(), def.labels));
        let buckets = vec![
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ];
        // Handing a broadcast over takes microseconds to milliseconds.
        let fast = vec![
            0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01,
            0.025, 0.05, 0.1,
        ];
        let sizes = vec![
            0.0, 1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0,
            10000.0,
        ];
        let broadcasts = counter_vec(&BROADCASTS);
        let broadcast_duration = BROADCAST_DURATION.register(
            registry,
            HistogramVec::new(
                HistogramOpts::from(BROADCAST_DURATION.opts()).buckets(fast),
                BROADCAST_DURATION.labels,
            ),
        );
        for origin in ["local", "remote"] {
            broadcasts.with_label_values(&[origin]);
            broadcast_duration.with_label_values(&[origin]);
        }
        AdapterMetrics {
            broadcasts,
            broadcast_duration,
            fanout: BROADCAST_FANOUT.register(
                registry,
                Histogram::with_opts(HistogramOpts::from(BROADCAST_FANOUT.opts()).buckets(sizes)),
            ),
            fanout_tick: Default::default(),
            messages: counter_vec(&BUS_MESSAGES),
            bytes: counter_vec(&BUS_BYTES),
            request_duration: REQUEST_DURATION.register(
                registry,
                HistogramVec::new(
                    HistogramOpts::from(REQUEST_DURATION.opts()).buckets(buckets),
                    REQUEST_DURATION.labels,
                ),
            ),
            request_timeouts: counter_vec(&REQUEST_TIMEOUTS),
            live_nodes: LIVE_NODES.register(registry, IntGauge::with_opts(LIVE_NODES.opts())),
            bus_connected: BUS_CONNECTED
                .register(registry, IntGauge::with_opts(BUS_CONNECTED.opts())),
            dropped: counter_vec(&DROPPED),
            publish_failures: counter_vec(&PUBLISH_FAILURES),
        }
        .with_known_labels()
    }

    /// Every label value known in advance starts at 0, so the first event is a visible
    /// increase.
    fn with_known_labels(self) -> Self {
        for direction in ["out", "in"] {
            for kind in [
                MessageKind::Request,
                MessageKind::Response,
                MessageKind::Heartbeat,
                MessageKind::ServerEvent,
            ] {
                self.messages.with_label_values(&[direction, kind.label()]);
                self.bytes.with_label_values(&[direction, kind.label()]);
            }
        }
        for kind in ["rooms", "fetch_sockets", "server_event"] {
            self.request_duration.with_label_values(&[kind]);
            self.request_timeouts.with_label_values(&[kind]);
        }
        for reason in [
            "undecodable",
            "foreign_subject",
            "no_namespace",
            "late_response",
            "duplicate_node_id",
            "handler_panic",
        ] {
            self.dropped.with_label_values(&[reason]);
        }
        for reason in ["disconnected", "too_large", "encode", "other"] {
            self.publish_failures.with_label_values(&[reason]);
        }
        self
    }

    /// Metrics registered nowhere, for a cluster nobody scrapes.
    pub fn unregistered() -> AdapterMetrics {
        AdapterMetrics::new(&Registry::new())
    }

    pub(crate) fn message(&self, out: bool, kind: MessageKind, bytes: usize) {
        let labels = [if out { "out" } else { "in" }, kind.label()];
        self.messages.with_label_values(&labels).inc();
        self.bytes
            .with_label_values(&labels)
            .inc_by(u64::try_from(bytes).unwrap_or(u64::MAX));
    }

    pub(crate) fn request_timer(&self, kind: &str) -> Histogram {
        self.request_duration.with_label_values(&[kind])
    }

    pub(crate) fn request_timed_out(&self, kind: &str) {
        self.request_timeouts.with_label_values(&[kind]).inc();
    }

    pub(crate) fn set_live_nodes(&self, n: usize) {
        self.live_nodes.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    pub(crate) fn set_bus_connected(&self, connected: bool) {
        self.bus_connected.set(i64::from(connected));
    }

    pub(crate) fn dropped(&self, reason: &str) {
        self.dropped.with_label_values(&[reason]).inc();
    }

    pub(crate) fn publish_failed(&self, reason: &str) {
        self.publish_failures.with_label_values(&[reason]).inc();
    }

    /// One broadcast handed to this node's sockets in `elapsed`; `remote` if another node sent it.
    pub(crate) fn broadcast(&self, remote: bool, elapsed: Duration) {
        let origin = if remote { "remote" } else { "local" };
        self.broadcasts.with_label_values(&[origin]).inc();
        self.broadcast_duration
            .with_label_values(&[origin])
            .observe(elapsed.as_secs_f64());
    }

    /// Whether to measure the fan-out of this broadcast (every 8th).
    pub(crate) fn sample_fanout(&self) -> bool {
        self.fanout_tick
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            .is_multiple_of(8)
    }

    pub(crate) fn fanout(&self, recipients: usize) {
        self.fanout.observe(recipients as f64);
    }
}

/// Observes `elapsed` on a request-duration histogram.
pub(crate) fn observe(histogram: &Histogram, elapsed: Duration) {
    histogram.observe(elapsed.as_secs_f64());
}
