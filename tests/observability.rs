//! Observability across processes. Traces: a client publishes to a room through the gateway
//! (polling) on node A, a member of the room sits on node B; the spans the gateway, node A and
//! node B export over OTLP to a receiver in this test form one trace with the right parent
//! links. Metrics: after the same traffic, every `/metrics` passes `promtool check metrics`
//! and its counters moved.

mod common;
mod common_gateway;
mod common_nats;
mod common_protocol;

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use common::NodeProcess;
use common_gateway::GatewayProcess;
use common_nats::NatsServer;
use common_protocol::{bounded, records};
use http_body_util::{BodyExt as _, Full};
use hyper::{Request, Response, body::Bytes, service::service_fn};
use hyper_util::rt::TokioIo;

/// One exported span, as the OTLP/JSON body carries it.
#[derive(Debug, Clone)]
struct SpanSeen {
    service: String,
    name: String,
    trace_id: String,
    span_id: String,
    parent: String,
    attributes: HashMap<String, String>,
}

/// An OTLP/HTTP receiver (JSON encoding) on a free port, keeping every span it is sent.
struct Receiver {
    addr: SocketAddr,
    spans: Arc<Mutex<Vec<SpanSeen>>>,
}

impl Receiver {
    async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let spans = Arc::new(Mutex::new(Vec::new()));
        let sink = spans.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let sink = sink.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                        let sink = sink.clone();
                        async move {
                            let path = req.uri().path().to_owned();
                            let body = req.into_body().collect().await?.to_bytes();
                            if path == "/v1/traces" {
                                let json: serde_json::Value =
                                    serde_json::from_slice(&body).unwrap_or_default();
                                sink.lock().expect("spans").extend(spans_in(&json));
                            }
                            Ok::<_, hyper::Error>(Response::new(Full::new(Bytes::from_static(
                                b"{}",
                            ))))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Receiver { addr, spans }
    }

    fn spans(&self) -> Vec<SpanSeen> {
        self.spans.lock().expect("spans").clone()
    }
}

fn string_attributes(list: &serde_json::Value) -> HashMap<String, String> {
    list.as_array()
        .into_iter()
        .flatten()
        .filter_map(|kv| {
            let value = &kv["value"];
            let text = value["stringValue"]
                .as_str()
                .map(str::to_owned)
                .or_else(|| value["intValue"].as_str().map(str::to_owned))
                .or_else(|| value["intValue"].as_i64().map(|i| i.to_string()))?;
            Some((kv["key"].as_str()?.to_owned(), text))
        })
        .collect()
}

/// The spans of an OTLP `ExportTraceServiceRequest` in JSON.
fn spans_in(json: &serde_json::Value) -> Vec<SpanSeen> {
    let mut out = Vec::new();
    for rs in json["resourceSpans"].as_array().into_iter().flatten() {
        let resource = string_attributes(&rs["resource"]["attributes"]);
        let service = resource.get("service.name").cloned().unwrap_or_default();
        for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
            for span in ss["spans"].as_array().into_iter().flatten() {
                let text = |k: &str| span[k].as_str().unwrap_or_default().to_owned();
                out.push(SpanSeen {
                    service: service.clone(),
                    name: text("name"),
                    trace_id: text("traceId"),
                    span_id: text("spanId"),
                    parent: text("parentSpanId"),
                    attributes: string_attributes(&span["attributes"]),
                });
            }
        }
    }
    out
}

/// Environment of every traced process: JSON export, batches sent every 100 ms.
const TRACE_ENV: &[(&str, &str)] = &[
    ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
    ("OTEL_BSP_SCHEDULE_DELAY", "100"),
];

fn traced_node(nats: &NatsServer, id: &str, otlp: &str) -> NodeProcess {
    common_nats::start_node_env(nats, id, "bench", &["--otlp-endpoint", otlp], TRACE_ENV)
}

/// A Socket.IO client over HTTP long-polling, as bare as the test needs.
struct Polling {
    addr: SocketAddr,
    sid: String,
}

impl Polling {
    async fn open(addr: SocketAddr) -> Polling {
        let res = common::get(addr, "/socket.io/?EIO=4&transport=polling").await;
        assert_eq!(res.status, 200, "{}", res.text());
        let text = res.text();
        let open: serde_json::Value = serde_json::from_str(&text[1..]).expect("open packet");
        let sid = open["sid"].as_str().expect("sid").to_owned();
        Polling { addr, sid }
    }

    fn path(&self) -> String {
        format!("/socket.io/?EIO=4&transport=polling&sid={}", self.sid)
    }

    /// Sends `packet` and returns the packets that come back until one starts with `until`
    /// (pings answered on the way).
    async fn exchange(&self, packet: &str, until: &str) -> Vec<String> {
        let res = common::post(self.addr, &self.path(), packet.as_bytes()).await;
        assert_eq!(res.status, 200, "{packet}: {}", res.text());
        let mut seen: Vec<String> = Vec::new();
        while !seen.iter().any(|p| p.starts_with(until)) {
            let res = common::get(self.addr, &self.path()).await;
            assert_eq!(res.status, 200, "after {seen:?}: {}", res.text());
            for record in records(&res.text()) {
                if record == "2" {
                    common::post(self.addr, &self.path(), b"3").await;
                } else {
                    seen.push(record);
                }
            }
        }
        seen
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_through_the_gateway_to_another_node_is_one_trace() {
    bounded(async {
        let receiver = Receiver::start().await;
        let otlp = format!("http://{}", receiver.addr);
        let nats = NatsServer::start();
        let a = traced_node(&nats, "trace-a", &otlp);
        let b = traced_node(&nats, "trace-b", &otlp);
        common_nats::wait_members(&[&a, &b], &["trace-a", "trace-b"], Duration::from_secs(20))
            .await;
        let gateway = GatewayProcess::start_env(
            &[("trace-a", a.addr)],
            &["--health-interval", "200ms", "--otlp-endpoint", &otlp],
            TRACE_ENV,
        );
        gateway.wait_ready_nodes(1).await;

        publish_across_nodes(gateway.addr, b.addr).await;

        // The publish's trace: gateway request → node A request → event → adapter publish →
        // node B's receive.
        let deadline = Instant::now() + Duration::from_secs(15);
        let chain = loop {
            let spans = receiver.spans();
            if let Some(chain) = publish_chain(&spans) {
                break chain;
            }
            assert!(
                Instant::now() < deadline,
                "no complete trace of the publish; spans seen:\n{:#?}",
                spans
                    .iter()
                    .map(|s| (&s.service, &s.name, &s.trace_id, &s.span_id, &s.parent))
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let [gw, node_a, event, publish, receive] = chain;
        assert_eq!(gw.service, "corral-gateway");
        assert_eq!(
            gw.attributes.get("corral.node").map(String::as_str),
            Some("trace-a")
        );
        assert_eq!(node_a.service, "corral-node");
        assert_eq!(
            node_a.attributes.get("corral.node").map(String::as_str),
            Some("trace-a")
        );
        assert_eq!(
            event.attributes.get("corral.event").map(String::as_str),
            Some("publish")
        );
        assert_eq!(publish.service, "corral-node");
        assert_eq!(receive.service, "corral-node");
        for span in [&node_a, &event, &publish, &receive] {
            assert_eq!(span.trace_id, gw.trace_id, "{span:?}");
        }
        assert!(
            gw.parent.is_empty(),
            "the gateway's span is the root: {gw:?}"
        );
        // A client cannot choose its trace: the gateway continues only a trusted proxy's.
        let forged = "4bf92f3577b34da6a3ce929d0e0e4736";
        let traceparent = format!("00-{forged}-00f067aa0ba902b7-01");
        let handshakes = |spans: &[SpanSeen]| {
            spans
                .iter()
                .filter(|s| {
                    s.name == "gateway request"
                        && s.attributes.get("corral.request").map(String::as_str)
                            == Some("handshake")
                })
                .count()
        };
        let before = handshakes(&receiver.spans());
        let deadline = Instant::now() + Duration::from_secs(15);
        let res = common::http(
            gateway.addr,
            "GET",
            "/socket.io/?EIO=4&transport=polling",
            &[("traceparent", traceparent.as_str())],
            b"",
        )
        .await;
        assert_eq!(res.status, 200);
        while handshakes(&receiver.spans()) == before {
            assert!(
                Instant::now() < deadline,
                "the forged handshake's span never came"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            receiver.spans().iter().all(|s| s.trace_id != forged),
            "a client-chosen trace id was continued"
        );
        // No payload reaches a span.
        for span in receiver.spans() {
            assert!(
                !span.attributes.values().any(|v| v.contains("hi")),
                "{span:?}"
            );
        }
    })
    .await;
}

/// The member on node B, straight to the node; the sender through the gateway (node A), who
/// joins the member's room and publishes to it; returns once the member got the message.
async fn publish_across_nodes(gateway: SocketAddr, node_b: SocketAddr) {
    let member = Polling::open(node_b).await;
    member.exchange("40", "40").await;
    member.exchange(r#"420["join","traced"]"#, "430").await;
    let sender = Polling::open(gateway).await;
    sender.exchange("40", "40").await;
    sender.exchange(r#"420["join","traced"]"#, "430").await;
    sender
        .exchange(r#"421["publish","traced",{"text":"hi"}]"#, "431")
        .await;
    // A pong is harmless filler to POST while polling for the delivery.
    let delivered = member.exchange("3", r#"42["message","traced""#).await;
    assert!(
        delivered.iter().any(|p| p.contains(r#""text":"hi""#)),
        "{delivered:?}"
    );
}

/// The five spans of the publish, each the child of the one before, if all were exported.
fn publish_chain(spans: &[SpanSeen]) -> Option<[SpanSeen; 5]> {
    let child_of = |parent: &SpanSeen, name: &str| {
        spans
            .iter()
            .find(|s| s.name == name && s.parent == parent.span_id && s.trace_id == parent.trace_id)
            .cloned()
    };
    spans
        .iter()
        .filter(|s| s.name == "gateway request")
        .find_map(|gw| {
            let node_a = child_of(gw, "node request")?;
            let event = child_of(&node_a, "socket.io event").filter(|e| {
                e.attributes.get("corral.event").map(String::as_str) == Some("publish")
            })?;
            let publish = child_of(&event, "adapter publish")?;
            let receive = child_of(&publish, "adapter receive")?;
            Some([gw.clone(), node_a, event, publish, receive])
        })
}

/// `promtool check metrics` on `text`: the exposition format and the naming conventions.
fn promtool_check(what: &str, text: &str) {
    use std::io::Write as _;
    let promtool = std::env::var("PROMTOOL").unwrap_or_else(|_| "promtool".to_owned());
    let mut child = std::process::Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run {promtool} ({e}): ./scripts/setup --test installs it (Debian's prometheus)")
        });
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write metrics");
    let out = child.wait_with_output().expect("promtool");
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "{what}: promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The value of the sample `name{labels}` (labels as rendered, without braces; "" for none).
fn sample(text: &str, name: &str, labels: &str) -> f64 {
    let key = if labels.is_empty() {
        name.to_owned()
    } else {
        format!("{name}{{{labels}}}")
    };
    text.lines()
        .find_map(|l| l.strip_prefix(&key)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no sample {key}:\n{text}"))
}

async fn metrics_of(addr: SocketAddr) -> String {
    let res = common::get(addr, "/metrics").await;
    assert_eq!(res.status, 200);
    res.text()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_valid_prometheus_text_and_move_with_traffic() {
    bounded(async {
        let nats = NatsServer::start();
        let a = common_nats::start_node(&nats, "metrics-a", "bench", &[]);
        let b = common_nats::start_node(&nats, "metrics-b", "bench", &[]);
        common_nats::wait_members(
            &[&a, &b],
            &["metrics-a", "metrics-b"],
            Duration::from_secs(20),
        )
        .await;
        let gateway =
            GatewayProcess::start(&[("metrics-a", a.addr)], &["--health-interval", "200ms"]);
        gateway.wait_ready_nodes(1).await;
        let before_a = metrics_of(a.addr).await;
        let before_b = metrics_of(b.addr).await;

        publish_across_nodes(gateway.addr, b.addr).await;

        let (after_a, after_b) = (metrics_of(a.addr).await, metrics_of(b.addr).await);
        let after_gw = metrics_of(gateway.admin).await;
        for (what, text) in [
            ("node a", &after_a),
            ("node b", &after_b),
            ("gateway", &after_gw),
        ] {
            promtool_check(what, text);
        }
        let moved = |before: &str, after: &str, name: &str, labels: &str| {
            sample(after, name, labels) - sample(before, name, labels)
        };
        // Node A: the sender's handshake and events, its broadcast handed to local sockets.
        let handshakes = r#"transport="polling""#;
        assert_eq!(
            moved(
                &before_a,
                &after_a,
                "corral_node_handshakes_total",
                handshakes
            ),
            1.0
        );
        assert_eq!(
            moved(&before_a, &after_a, "corral_node_events_received_total", ""),
            2.0
        );
        let local = r#"origin="local""#;
        assert_eq!(
            moved(
                &before_a,
                &after_a,
                "corral_adapter_broadcasts_total",
                local
            ),
            1.0
        );
        let out = r#"direction="out",kind="request""#;
        assert!(
            moved(
                &before_a,
                &after_a,
                "corral_adapter_bus_messages_total",
                out
            ) >= 1.0
        );
        // Node B: the member's session, and the broadcast that came over the bus.
        let remote = r#"origin="remote""#;
        assert_eq!(
            moved(
                &before_b,
                &after_b,
                "corral_adapter_broadcasts_total",
                remote
            ),
            1.0
        );
        let remote_count = "corral_adapter_broadcast_duration_seconds_count";
        assert_eq!(moved(&before_b, &after_b, remote_count, remote), 1.0);
        assert_eq!(sample(&after_b, "corral_adapter_live_nodes", ""), 2.0);
        // The gateway: the handshake routed to node A, and the session's requests.
        let routed: f64 = after_gw
            .lines()
            .filter(|l| {
                l.starts_with(r#"corral_gateway_routing_decisions_total{node="metrics-a","#)
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        assert_eq!(routed, 1.0, "{after_gw}");
        assert_eq!(
            sample(
                &after_gw,
                "corral_gateway_requests_total",
                r#"kind="handshake",status="2xx""#
            ),
            1.0
        );
        assert!(
            sample(
                &after_gw,
                "corral_gateway_requests_total",
                r#"kind="session",status="2xx""#
            ) >= 4.0
        );
    })
    .await;
}
