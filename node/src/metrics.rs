//! Prometheus metrics of a node.
//!
//! [`CATALOG`] is the one list of metric names, types, labels and help texts: registration reads
//! it, and `docs/metrics.md` carries a table rendered from it (a test keeps the two equal).

use prometheus::{
    Encoder, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Registry, TextEncoder,
};
use socketioxide::{TransportType, socket::DisconnectReason};

pub use corral_adapter_nats::metrics::{MetricDef, MetricKind};

/// Socket.IO sockets connected to this node (one per namespace a client joined).
pub const CONNECTED_SOCKETS: MetricDef = MetricDef {
    name: "corral_node_connected_sockets",
    kind: MetricKind::Gauge,
    labels: &["transport"],
    help: "Socket.IO sockets connected to this node, by current transport (polling, websocket); a client on two namespaces counts twice.",
};
/// Engine.IO handshakes accepted.
pub const HANDSHAKES: MetricDef = MetricDef {
    name: "corral_node_handshakes_total",
    kind: MetricKind::Counter,
    labels: &["transport"],
    help: "Engine.IO handshakes (new sessions) accepted, by the transport they opened with.",
};
/// Engine.IO handshakes refused.
pub const HANDSHAKES_REJECTED: MetricDef = MetricDef {
    name: "corral_node_handshakes_rejected_total",
    kind: MetricKind::Counter,
    labels: &["reason"],
    help: "Engine.IO handshakes refused: reason=draining (node shutting down) or bad_request (malformed handshake).",
};
/// Requests of existing sessions refused.
pub const REQUESTS_REJECTED: MetricDef = MetricDef {
    name: "corral_node_session_requests_rejected_total",
    kind: MetricKind::Counter,
    labels: &["reason"],
    help: "Requests of existing sessions refused: reason=unknown_session, payload_too_large or bad_request.",
};
/// Events received by the app's handlers.
pub const EVENTS_RECEIVED: MetricDef = MetricDef {
    name: "corral_node_events_received_total",
    kind: MetricKind::Counter,
    labels: &[],
    help: "Socket.IO events received from clients and handled by the app.",
};
/// Events emitted by the app.
pub const EVENTS_EMITTED: MetricDef = MetricDef {
    name: "corral_node_events_emitted_total",
    kind: MetricKind::Counter,
    labels: &[],
    help: "Socket.IO events emitted by the app (one per emit or broadcast call, not per receiver).",
};
/// Sockets that left, by reason.
pub const DISCONNECTS: MetricDef = MetricDef {
    name: "corral_node_disconnects_total",
    kind: MetricKind::Counter,
    labels: &["reason"],
    help: "Sockets disconnected, by reason: transport_close, transport_error, heartbeat_timeout, packet_parsing_error, multiple_http_polling, client_disconnect, server_disconnect, closing_server.",
};
/// 1 while the node drains.
pub const DRAINING: MetricDef = MetricDef {
    name: "corral_node_draining",
    kind: MetricKind::Gauge,
    labels: &[],
    help: "1 while the node is draining (refusing new sessions, handing clients off), else 0.",
};
/// Constant 1 with the node's identity in labels.
pub const INFO: MetricDef = MetricDef {
    name: "corral_node_info",
    kind: MetricKind::Gauge,
    labels: &["node_id", "app", "version"],
    help: "Always 1; labels carry the node id, the app and the Corral version.",
};

/// Every metric a node exports besides the standard `process_*` ones.
pub const CATALOG: &[MetricDef] = &[
    CONNECTED_SOCKETS,
    HANDSHAKES,
    HANDSHAKES_REJECTED,
    REQUESTS_REJECTED,
    EVENTS_RECEIVED,
    EVENTS_EMITTED,
    DISCONNECTS,
    DRAINING,
    INFO,
    corral_adapter_nats::trace::SPANS,
];

/// The node's metrics and the registry that exports them.
#[derive(Debug)]
pub struct NodeMetrics {
    registry: Registry,
    connected: IntGaugeVec,
    handshakes: IntCounterVec,
    handshakes_rejected: IntCounterVec,
    requests_rejected: IntCounterVec,
    events_received: IntCounter,
    events_emitted: IntCounter,
    disconnects: IntCounterVec,
    draining: IntGauge,
}

fn counter_vec(registry: &Registry, def: &MetricDef) -> IntCounterVec {
    def.register(registry, IntCounterVec::new(def.opts(), def.labels))
}

fn gauge_vec(registry: &Registry, def: &MetricDef) -> IntGaugeVec {
    def.register(registry, IntGaugeVec::new(def.opts(), def.labels))
}

impl NodeMetrics {
    /// Registers every metric of [`CATALOG`] (and the process collector) in a fresh registry.
    ///
    /// Panics only on a programming error in the catalog (an invalid or duplicate name), which
    /// the unit tests rule out.
    pub fn new(node_id: &str, app: &str) -> Self {
        let registry = Registry::new();
        let info = gauge_vec(&registry, &INFO);
        info.with_label_values(&[node_id, app, env!("CARGO_PKG_VERSION")])
            .set(1);
        let connected = gauge_vec(&registry, &CONNECTED_SOCKETS);
        for transport in ["polling", "websocket"] {
            connected.with_label_values(&[transport]).set(0);
        }
        #[cfg(target_os = "linux")]
        registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .unwrap_or_else(|e| panic!("process collector: {e}"));
        corral_adapter_nats::trace::register_span_metrics(&registry);
        NodeMetrics {
            connected,
            handshakes: counter_vec(&registry, &HANDSHAKES),
            handshakes_rejected: counter_vec(&registry, &HANDSHAKES_REJECTED),
            requests_rejected: counter_vec(&registry, &REQUESTS_REJECTED),
            events_received: EVENTS_RECEIVED
                .register(&registry, IntCounter::with_opts(EVENTS_RECEIVED.opts())),
            events_emitted: EVENTS_EMITTED
                .register(&registry, IntCounter::with_opts(EVENTS_EMITTED.opts())),
            disconnects: counter_vec(&registry, &DISCONNECTS),
            draining: DRAINING.register(&registry, IntGauge::with_opts(DRAINING.opts())),
            registry,
        }
        .with_known_labels()
    }

    /// Every label value known in advance starts at 0, so the first event is a visible
    /// increase (rates over a series that appears with its first event miss that event).
    fn with_known_labels(self) -> Self {
        for transport in ["polling", "websocket"] {
            self.handshakes.with_label_values(&[transport]);
        }
        for reason in ["draining", "bad_request"] {
            self.handshakes_rejected.with_label_values(&[reason]);
        }
        for reason in ["unknown_session", "payload_too_large", "bad_request"] {
            self.requests_rejected.with_label_values(&[reason]);
        }
        for reason in [
            "transport_close",
            "transport_error",
            "heartbeat_timeout",
            "packet_parsing_error",
            "multiple_http_polling",
            "client_disconnect",
            "server_disconnect",
            "closing_server",
        ] {
            self.disconnects.with_label_values(&[reason]);
        }
        self
    }

    /// Counts an accepted handshake.
    pub(crate) fn handshake(&self, transport: TransportType) {
        self.handshakes
            .with_label_values(&[transport_label(transport)])
            .inc();
    }

    /// Counts a refused handshake.
    pub(crate) fn handshake_rejected(&self, reason: &str) {
        self.handshakes_rejected.with_label_values(&[reason]).inc();
    }

    /// Counts a refused request of an existing session.
    pub(crate) fn request_rejected(&self, reason: &str) {
        self.requests_rejected.with_label_values(&[reason]).inc();
    }

    /// Counts an event handled by the app.
    pub fn event_received(&self) {
        self.events_received.inc();
    }

    /// Counts an event emitted by the app.
    pub fn event_emitted(&self) {
        self.events_emitted.inc();
    }

    /// Counts a socket that left.
    pub(crate) fn disconnect(&self, reason: DisconnectReason) {
        self.disconnects
            .with_label_values(&[reason_label(reason)])
            .inc();
    }

    /// Marks the node as draining.
    pub(crate) fn set_draining(&self) {
        self.draining.set(1);
    }

    /// Sets the connected-socket gauges; called at scrape time with a fresh count.
    pub(crate) fn set_connected(&self, polling: usize, websocket: usize) {
        let as_gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        self.connected
            .with_label_values(&["polling"])
            .set(as_gauge(polling));
        self.connected
            .with_label_values(&["websocket"])
            .set(as_gauge(websocket));
    }

    /// The registry, for other parts of the node (the cluster adapter) to register in.
    pub(crate) fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Renders every metric in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = Vec::with_capacity(8 * 1024);
        // Encoding into a Vec only fails on metric families that break the format, which the
        // registry refuses at registration.
        if let Err(err) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(%err, "encoding metrics");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

/// Label value for a transport.
pub(crate) fn transport_label(transport: TransportType) -> &'static str {
    match transport {
        TransportType::Polling => "polling",
        TransportType::Websocket => "websocket",
    }
}

/// Label value for a disconnect reason; the set is closed, so the label cannot explode.
pub(crate) fn reason_label(reason: DisconnectReason) -> &'static str {
    use DisconnectReason::*;
    match reason {
        TransportClose => "transport_close",
        MultipleHttpPollingError => "multiple_http_polling",
        PacketParsingError => "packet_parsing_error",
        TransportError => "transport_error",
        HeartbeatTimeout => "heartbeat_timeout",
        ClientNSDisconnect => "client_disconnect",
        ServerNSDisconnect => "server_disconnect",
        ClosingServer => "closing_server",
    }
}

/// The Markdown table of [`CATALOG`] that `docs/metrics.md` embeds.
pub fn catalog_markdown() -> String {
    corral_adapter_nats::metrics::catalog_markdown(CATALOG)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_catalog_metric_is_exported() {
        let metrics = NodeMetrics::new("n1", "chat");
        metrics.handshake(TransportType::Polling);
        metrics.handshake_rejected("draining");
        metrics.request_rejected("unknown_session");
        metrics.disconnect(DisconnectReason::TransportClose);
        metrics.event_received();
        metrics.event_emitted();
        let text = metrics.render();
        for def in CATALOG {
            assert!(
                text.contains(&format!("# TYPE {} ", def.name)),
                "{} missing:\n{text}",
                def.name
            );
        }
        assert!(
            text.contains(r#"corral_node_info{app="chat",node_id="n1""#),
            "{text}"
        );
        assert!(text.contains(r#"corral_node_disconnects_total{reason="transport_close"} 1"#));
    }

    #[test]
    fn names_follow_prometheus_conventions() {
        for def in CATALOG {
            // The process-wide trace counters are shared by nodes and gateways.
            let shared = def.name == corral_adapter_nats::trace::SPANS.name;
            assert!(
                def.name.starts_with("corral_node_") || shared,
                "{}",
                def.name
            );
            assert_eq!(
                def.kind == MetricKind::Counter,
                def.name.ends_with("_total"),
                "{}",
                def.name
            );
        }
    }

    /// `docs/metrics.md` must carry the table rendered from the catalog.
    #[test]
    fn docs_list_every_metric() {
        corral_adapter_nats::doc_tables::check(
            env!("CARGO_MANIFEST_DIR"),
            "docs/metrics.md",
            "node-metrics",
            &catalog_markdown(),
        );
        let adapter =
            corral_adapter_nats::metrics::catalog_markdown(corral_adapter_nats::metrics::CATALOG);
        corral_adapter_nats::doc_tables::check(
            env!("CARGO_MANIFEST_DIR"),
            "docs/metrics.md",
            "adapter-metrics",
            &adapter,
        );
    }
}
