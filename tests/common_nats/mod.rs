//! Helpers of the tests that run a cluster on a real NATS server: spawn (and kill, and restart
//! on the same port) `nats-server`, start `corral node` processes that join it with short
//! heartbeats, read their `/cluster/nodes`, `/readyz` and `/metrics`, and a raw Socket.IO
//! client over WebSocket whose reader runs in the background, so a test can send requests and
//! wait for acks while events keep arriving.
//!
//! The server binary is `$NATS_SERVER`, else `<repo>/.venv/bin/nats-server` (installed by
//! `scripts/setup`). Every wait has a deadline.
//!
//! Needs `mod common;` next to `mod common_nats;` in the test crate.

#![allow(dead_code, unreachable_pub)]

use std::{
    collections::HashMap,
    io::{BufRead, BufReader, Read},
    net::{SocketAddr, TcpListener, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::{connect_async, tungstenite::Message};

use crate::common::{self, NodeProcess};

/// `--heartbeat-interval` of the nodes started here.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_millis(200);
/// `--heartbeat-timeout` of the nodes started here.
pub const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(1);
/// `--request-timeout` of the nodes started here.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Room for a slow, busy machine on top of a bound the nodes promise.
pub const SLACK: Duration = Duration::from_millis(1500);
/// How long any single expected step (an ack, an event, a cluster forming) may take.
pub const STEP: Duration = Duration::from_secs(10);

/// The `nats-server` binary: `$NATS_SERVER`, else the one `scripts/setup` installs.
pub fn nats_server_bin() -> PathBuf {
    let path = std::env::var_os("NATS_SERVER").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/nats-server"),
        PathBuf::from,
    );
    assert!(
        path.is_file(),
        "nats-server not found at {} (run scripts/setup, or set NATS_SERVER)",
        path.display()
    );
    path
}

/// A TCP port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A `nats-server` child process on 127.0.0.1, killed when dropped.
pub struct NatsServer {
    child: Option<Child>,
    /// The port it listens on (the same after a restart).
    pub port: u16,
    extra: Vec<String>,
    logs: Arc<Mutex<Vec<String>>>,
}

impl NatsServer {
    /// Starts a server on a free port and waits until it accepts clients.
    pub fn start() -> NatsServer {
        NatsServer::start_with(&[])
    }

    /// Starts a server with extra command-line options (authentication, TLS).
    pub fn start_with(extra: &[&str]) -> NatsServer {
        let mut server = NatsServer {
            child: None,
            port: free_port(),
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
            logs: Arc::default(),
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "nats-server is already running");
        let mut child = Command::new(nats_server_bin())
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string()])
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn nats-server");
        let stderr = child.stderr.take().expect("stderr is piped");
        let sink = self.logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().expect("log lock").push(line);
            }
        });
        self.child = Some(child);
        let deadline = Instant::now() + STEP;
        while !self.accepts_clients() {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "nats-server exited ({status}) on port {}; its log:\n{}",
                    self.port,
                    self.logs().join("\n")
                );
            }
            assert!(
                Instant::now() < deadline,
                "nats-server did not accept clients on port {} within {STEP:?}; its log:\n{}",
                self.port,
                self.logs().join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// True when a client connecting now gets the server's `INFO` greeting.
    fn accepts_clients(&self) -> bool {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
        let mut greeting = [0u8; 4];
        stream.read_exact(&mut greeting).is_ok() && &greeting == b"INFO"
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL: no goodbye to its clients) and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Every log line so far.
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().expect("log lock").clone()
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts `corral node --app <app> --node-id <id>` in the cluster on `nats`, with the short
/// heartbeat and request timings of this module, plus `extra` flags.
pub fn start_node(nats: &NatsServer, id: &str, app: &str, extra: &[&str]) -> NodeProcess {
    start_node_env(nats, id, app, extra, &[])
}

/// [`start_node`] with extra environment variables.
pub fn start_node_env(
    nats: &NatsServer,
    id: &str,
    app: &str,
    extra: &[&str],
    envs: &[(&str, &str)],
) -> NodeProcess {
    let interval = humantime::format_duration(HEARTBEAT_INTERVAL).to_string();
    let timeout = humantime::format_duration(HEARTBEAT_TIMEOUT).to_string();
    let request = humantime::format_duration(REQUEST_TIMEOUT).to_string();
    let url = nats.url();
    let mut args = vec![
        "--app",
        app,
        "--node-id",
        id,
        "--adapter",
        "nats",
        "--nats",
        &url,
        "--heartbeat-interval",
        &interval,
        "--heartbeat-timeout",
        &timeout,
        "--request-timeout",
        &request,
    ];
    args.extend_from_slice(extra);
    NodeProcess::start_env("127.0.0.1:0", "info,corral_node=debug", &args, envs)
}

/// The node ids `/cluster/nodes` of `node` lists, sorted.
pub async fn members(node: &NodeProcess) -> Vec<String> {
    let res = common::get(node.addr, "/cluster/nodes").await;
    assert_eq!(res.status, 200, "/cluster/nodes: {}", res.text());
    let mut ids: Vec<String> = res
        .json()
        .as_array()
        .expect("/cluster/nodes is an array")
        .iter()
        .map(|n| n["node_id"].as_str().expect("node_id").to_owned())
        .collect();
    ids.sort();
    ids
}

/// Waits until every node in `nodes` lists exactly `expected` (any order), at most `within`;
/// returns the time it took.
pub async fn wait_members(nodes: &[&NodeProcess], expected: &[&str], within: Duration) -> Duration {
    let mut expected: Vec<String> = expected.iter().map(|s| (*s).to_owned()).collect();
    expected.sort();
    let start = Instant::now();
    for node in nodes {
        loop {
            let seen = members(node).await;
            if seen == expected {
                break;
            }
            assert!(
                start.elapsed() < within,
                "node {} lists {seen:?}, not {expected:?}, after {within:?}",
                node.addr
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    start.elapsed()
}

/// `/readyz` of `node`: status and body.
/// `/readyz` of `node`: its status code and `status`/`reason` fields as compact JSON
/// (`{"status":"degraded","reason":"bus_disconnected"}`), leaving out the node id and load.
pub async fn readyz(node: &NodeProcess) -> (u16, String) {
    let res = common::get(node.addr, "/readyz").await;
    let json = res.json();
    let summary = match &json["reason"] {
        serde_json::Value::Null => format!(r#"{{"status":{}}}"#, json["status"]),
        reason => format!(r#"{{"status":{},"reason":{reason}}}"#, json["status"]),
    };
    (res.status, summary)
}

/// The value of the sample `series` (a metric name with its labels exactly as the node writes
/// them, e.g. `corral_adapter_publish_failures_total{reason="too_large"}`) in `/metrics`.
pub async fn metric(node: &NodeProcess, series: &str) -> Option<f64> {
    let res = common::get(node.addr, "/metrics").await;
    assert_eq!(res.status, 200, "/metrics: {}", res.text());
    res.text().lines().find_map(|line| {
        let (name, value) = line.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok()).flatten()
    })
}

/// Waits until `check` passes, at most `within`; returns the time it took, or panics with the
/// last reason it gave.
pub async fn eventually(
    within: Duration,
    what: &str,
    mut check: impl AsyncFnMut() -> Result<(), String>,
) -> Duration {
    let start = Instant::now();
    loop {
        match check().await {
            Ok(()) => return start.elapsed(),
            Err(why) if start.elapsed() > within => {
                panic!("{what}: not within {within:?}: {why}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(25)).await,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// A raw Socket.IO client over WebSocket
// ---------------------------------------------------------------------------------------------

/// An event the server emitted to the client.
#[derive(Debug, Clone)]
pub struct Event {
    /// Its name.
    pub name: String,
    /// Its arguments (binary ones as `{"_placeholder":true,"num":n}`).
    pub args: Vec<Value>,
    /// The binary attachments, in order.
    pub attachments: Vec<Vec<u8>>,
}

/// The answer to a request with an ack.
#[derive(Debug, Clone)]
pub struct Ack {
    /// The arguments of the ack.
    pub args: Vec<Value>,
    /// Its binary attachments.
    pub attachments: Vec<Vec<u8>>,
}

impl Ack {
    /// The first argument (most acks have one).
    pub fn first(&self) -> &Value {
        self.args.first().unwrap_or(&Value::Null)
    }
}

/// Why a request got no ack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// Nothing within the time allowed.
    Timeout,
    /// The connection closed first.
    Closed,
}

/// A Socket.IO packet being received: its text part, waiting for its attachments.
struct Partial {
    kind: u8,
    id: Option<u64>,
    data: Value,
    attachments: usize,
    received: Vec<Vec<u8>>,
}

type PendingAcks = Arc<Mutex<HashMap<u64, oneshot::Sender<Ack>>>>;

/// A Socket.IO v5 client on namespace `/` over one WebSocket (Engine.IO v4). A background task
/// reads: it answers pings, completes acks and queues events.
pub struct SioClient {
    /// The socket id the server gave on CONNECT.
    pub sid: String,
    out: mpsc::UnboundedSender<Message>,
    pending: PendingAcks,
    /// Set when the reader saw the connection end.
    closed: Arc<AtomicBool>,
    next_id: AtomicU64,
    events: mpsc::UnboundedReceiver<Event>,
}

impl SioClient {
    /// Opens a WebSocket session to the node at `addr` and connects to namespace `/`.
    pub async fn connect(addr: SocketAddr) -> SioClient {
        let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
        let (mut ws, _) = tokio::time::timeout(STEP, connect_async(&url))
            .await
            .unwrap_or_else(|_| panic!("no WebSocket handshake from {url} within {STEP:?}"))
            .unwrap_or_else(|e| panic!("WebSocket to {url}: {e}"));
        let open = next_text(&mut ws, &url).await;
        assert!(open.starts_with("0{"), "not an open packet: {open}");
        ws.send(Message::text("40")).await.expect("send CONNECT");
        let connect = loop {
            let frame = next_text(&mut ws, &url).await;
            if frame != "2" {
                break frame;
            }
        };
        let sid = connect
            .strip_prefix("40")
            .and_then(|json| serde_json::from_str::<Value>(json).ok())
            .and_then(|v| v["sid"].as_str().map(str::to_owned))
            .unwrap_or_else(|| panic!("expected a CONNECT answer, got {connect}"));

        let (mut sink, mut stream) = ws.split();
        let (out, mut outgoing) = mpsc::unbounded_channel::<Message>();
        tokio::spawn(async move {
            while let Some(message) = outgoing.recv().await {
                if sink.send(message).await.is_err() {
                    break;
                }
            }
            let _ = sink.close().await;
        });
        let pending: PendingAcks = Arc::default();
        let (events_tx, events) = mpsc::unbounded_channel();
        let closed = Arc::new(AtomicBool::new(false));
        let (acks, pong, sid_for_log, ended) =
            (pending.clone(), out.clone(), sid.clone(), closed.clone());
        tokio::spawn(async move {
            let mut partial: Option<Partial> = None;
            while let Some(Ok(message)) = stream.next().await {
                let done = match message {
                    Message::Text(t) if t.as_str() == "2" => {
                        let _ = pong.send(Message::text("3"));
                        None
                    }
                    Message::Text(t) => match t.as_str().strip_prefix('4') {
                        Some(packet) => match parse_packet(packet) {
                            Some(p) if p.attachments > 0 => {
                                partial = Some(p);
                                None
                            }
                            Some(p) => Some(p),
                            None => {
                                eprintln!("client {sid_for_log}: unparsable packet {t}");
                                None
                            }
                        },
                        None => None,
                    },
                    Message::Binary(b) => match partial.as_mut() {
                        Some(p) => {
                            p.received.push(b.to_vec());
                            if p.received.len() == p.attachments {
                                partial.take()
                            } else {
                                None
                            }
                        }
                        None => {
                            eprintln!("client {sid_for_log}: a binary frame out of place");
                            None
                        }
                    },
                    Message::Close(_) => break,
                    _ => None,
                };
                let Some(p) = done else { continue };
                let mut args = match p.data {
                    Value::Array(args) => args,
                    other => vec![other],
                };
                match (p.kind, p.id) {
                    (b'2' | b'5', _) => {
                        let name = match args.first() {
                            Some(Value::String(_)) => match args.remove(0) {
                                Value::String(s) => s,
                                _ => unreachable!(),
                            },
                            _ => String::new(),
                        };
                        let _ = events_tx.send(Event {
                            name,
                            args,
                            attachments: p.received,
                        });
                    }
                    (b'3' | b'6', Some(id)) => {
                        let waiting = acks.lock().expect("acks lock").remove(&id);
                        if let Some(tx) = waiting {
                            let _ = tx.send(Ack {
                                args,
                                attachments: p.received,
                            });
                        }
                    }
                    _ => {}
                }
            }
            // Closed: every pending request fails at once, and every later one.
            ended.store(true, Ordering::SeqCst);
            acks.lock().expect("acks lock").clear();
        });
        SioClient {
            sid,
            out,
            pending,
            closed,
            next_id: AtomicU64::new(0),
            events,
        }
    }

    /// Connects, reads the cluster-check greeting `hello {node, id}` and returns the client
    /// and the node it is on.
    pub async fn connect_cluster_check(addr: SocketAddr) -> (SioClient, String) {
        let mut client = SioClient::connect(addr).await;
        let hello = client.expect_event("hello", STEP).await;
        assert_eq!(hello.args[0]["id"], client.sid.as_str(), "{hello:?}");
        let node = hello.args[0]["node"].as_str().expect("node").to_owned();
        (client, node)
    }

    /// Emits `event` with `args` (a JSON array) without asking for an ack.
    pub fn emit(&self, event: &str, args: Value) {
        let mut all = vec![json!(event)];
        all.extend(args.as_array().expect("args is an array").iter().cloned());
        let _ = self
            .out
            .send(Message::text(format!("42{}", Value::Array(all))));
    }

    /// Emits `event` with `args` (a JSON array, binary arguments as placeholders numbered in
    /// `attachments`' order) and waits at most `within` for the ack.
    pub async fn call_with(
        &self,
        event: &str,
        args: Value,
        attachments: Vec<Vec<u8>>,
        within: Duration,
    ) -> Result<Ack, CallError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending.lock().expect("acks lock").insert(id, tx);
        // After the insert: a reader that ended before it will not clear this one.
        if self.closed.load(Ordering::SeqCst) {
            self.pending.lock().expect("acks lock").remove(&id);
            return Err(CallError::Closed);
        }
        let mut all = vec![json!(event)];
        all.extend(args.as_array().expect("args is an array").iter().cloned());
        let data = Value::Array(all);
        let text = if attachments.is_empty() {
            format!("42{id}{data}")
        } else {
            format!("45{}-{id}{data}", attachments.len())
        };
        if self.out.send(Message::text(text)).is_err() {
            return Err(CallError::Closed);
        }
        for bytes in attachments {
            if self.out.send(Message::binary(bytes)).is_err() {
                return Err(CallError::Closed);
            }
        }
        match tokio::time::timeout(within, rx).await {
            Ok(Ok(ack)) => Ok(ack),
            Ok(Err(_)) => Err(CallError::Closed),
            Err(_) => {
                self.pending.lock().expect("acks lock").remove(&id);
                Err(CallError::Timeout)
            }
        }
    }

    /// Emits `event` with `args` (a JSON array) and waits at most [`STEP`] for the ack.
    pub async fn call(&self, event: &str, args: Value) -> Ack {
        self.call_with(event, args, Vec::new(), STEP)
            .await
            .unwrap_or_else(|e| panic!("{event}: no ack ({e:?})"))
    }

    /// The next event, `None` when nothing arrives within `within` or the connection closed.
    pub async fn next_event(&mut self, within: Duration) -> Option<Event> {
        tokio::time::timeout(within, self.events.recv())
            .await
            .ok()
            .flatten()
    }

    /// The next event named `name`, skipping others; fails after `within`.
    pub async fn expect_event(&mut self, name: &str, within: Duration) -> Event {
        let deadline = Instant::now() + within;
        let mut skipped = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_event(left).await {
                Some(event) if event.name == name => return event,
                Some(event) => skipped.push(event.name),
                None => panic!("no {name:?} event within {within:?} (skipped {skipped:?})"),
            }
        }
    }

    /// Closes the connection.
    pub fn close(self) {
        let _ = self.out.send(Message::Close(None));
    }
}

/// The next text frame of a WebSocket being set up.
async fn next_text(
    ws: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    url: &str,
) -> String {
    loop {
        match tokio::time::timeout(STEP, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => return t.as_str().to_owned(),
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            other => panic!("expected a text frame from {url}, got {other:?}"),
        }
    }
}

/// Parses a Socket.IO packet (the Engine.IO message without its `4`): type, attachment count,
/// namespace (must be `/`), ack id and data.
fn parse_packet(packet: &str) -> Option<Partial> {
    let mut rest = packet;
    let kind = *rest.as_bytes().first()?;
    rest = &rest[1..];
    let mut attachments = 0;
    if kind == b'5' || kind == b'6' {
        let (count, after) = rest.split_once('-')?;
        attachments = count.parse().ok()?;
        rest = after;
    }
    if rest.starts_with('/') {
        // Another namespace: these tests use `/` only.
        return None;
    }
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let id = (digits > 0).then(|| rest[..digits].parse().ok()).flatten();
    rest = &rest[digits..];
    let data = if rest.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(rest).ok()?
    };
    Some(Partial {
        kind,
        id,
        data,
        attachments,
        received: Vec::new(),
    })
}
