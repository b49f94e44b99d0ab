//! Helpers of the gateway tests: start `corral gateway` and `corral node` as real processes
//! (through `common`'s process starter; the node optionally on a fixed address, and with the
//! Engine.IO debug log that shows when a long-poll is pending), a quiet node and a gateway on it
//! ready in one call, speak raw HTTP/1.1 on connections that may be kept alive, refused or cut,
//! drive Engine.IO polling sessions and WebSocket tunnels (`common_protocol`'s [`Ws`], with this
//! module's [`STEP`]), read the gateway's Prometheus metrics, and wait for conditions with
//! deadlines.
//!
//! Needs `mod common;` and `mod common_protocol;` next to `mod common_gateway;` in the test
//! crate.

#![allow(dead_code, unreachable_pub)]

use std::{
    net::SocketAddr,
    process::ExitStatus,
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    task::JoinHandle,
};

use crate::common::{CorralProcess, HttpResponse, NodeProcess, addr_field};
pub use crate::common_protocol::{Frame, Ws};

/// How long one expected step (a response, a frame, a close) may take on a busy machine.
pub const STEP: Duration = Duration::from_secs(10);

/// The Engine.IO answer that makes a client start over.
pub const SESSION_UNKNOWN: &str = r#"{"code":1,"message":"Session ID unknown"}"#;

/// Engine.IO record separator of polling payloads.
pub const SEP: char = '\u{1e}';

/// Health checks every 200 ms, so nodes are known (and lost) quickly.
pub const FAST_HEALTH: [&str; 2] = ["--health-interval", "200ms"];

/// Node settings for tests where no heartbeat should interfere: the bench app, pings 30 s apart.
pub const QUIET_NODE: [&str; 6] = [
    "--app",
    "bench",
    "--ping-interval",
    "30s",
    "--ping-timeout",
    "20s",
];

/// A `corral node` with a given node id, logging Engine.IO's debug lines (so a test can see a
/// long-poll waiting at the node).
pub struct TestNode {
    node: NodeProcess,
    /// Its node id.
    pub id: String,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl TestNode {
    /// `corral node --listen 127.0.0.1:0 --node-id <id> <args>`.
    pub fn start(id: &str, args: &[&str]) -> TestNode {
        TestNode::start_at(id, "127.0.0.1:0", args)
    }

    /// `corral node --node-id <id>` with [`QUIET_NODE`]'s settings.
    pub fn quiet(id: &str) -> TestNode {
        TestNode::start(id, &QUIET_NODE)
    }

    /// Like [`TestNode::start`], on a given address (e.g. one a gateway already points at).
    pub fn start_at(id: &str, listen: &str, args: &[&str]) -> TestNode {
        let mut argv = vec!["--node-id", id];
        argv.extend_from_slice(args);
        let node =
            NodeProcess::start_with(listen, "info,corral_node=debug,engineioxide=debug", &argv);
        TestNode {
            id: id.to_owned(),
            addr: node.addr,
            node,
        }
    }

    /// Every log line so far.
    pub fn logs(&self) -> Vec<String> {
        self.node.logs()
    }

    /// How many polling GETs of node session `sid` the node has taken up (each logged once it
    /// holds the session's poll, i.e. while it waits for data to send). `sid` is the id the
    /// node gave the client (the plain Engine.IO id, as logged, followed by the node's seal).
    pub fn polls_taken(&self, sid: &str) -> usize {
        self.logs()
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|l| {
                l["message"] == "polling request"
                    && l["sid"]
                        .as_str()
                        .is_some_and(|plain| !plain.is_empty() && sid.starts_with(plain))
            })
            .count()
    }

    /// Waits (up to [`STEP`]) until the node has taken `n` polls of node session `sid` (see
    /// [`TestNode::polls_taken`]): the last one is waiting at the node.
    pub async fn wait_polls_taken(&self, sid: &str, n: usize) {
        wait_until(
            &format!("the poll waits at {}", self.id),
            STEP,
            async || self.polls_taken(sid) == n,
        )
        .await;
    }

    /// How many long-polls the node has seen abandoned before it answered them.
    pub fn polls_abandoned(&self) -> usize {
        self.logs()
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|l| l["message"] == "long-poll abandoned before an answer")
            .count()
    }

    /// Waits (up to [`STEP`]) until the node has seen `n` long-polls abandoned.
    pub async fn wait_polls_abandoned(&self, n: usize) {
        wait_until(
            &format!("{} sees the poll abandoned", self.id),
            STEP,
            async || self.polls_abandoned() == n,
        )
        .await;
    }

    /// SIGKILL: no drain, no goodbye.
    pub fn kill(&mut self) {
        self.node.kill();
    }
}

/// A quiet node `n1` ([`QUIET_NODE`]) and a gateway on it with [`FAST_HEALTH`] and `args`,
/// once the gateway found the node ready.
pub async fn gateway_on_quiet_node(args: &[&str]) -> (TestNode, GatewayProcess) {
    let n1 = TestNode::quiet("n1");
    let gw = GatewayProcess::start_ready(&[&n1], args).await;
    (n1, gw)
}

/// A `corral gateway` child process on OS-picked ports, killed when dropped.
pub struct GatewayProcess {
    process: CorralProcess,
    /// Where clients connect.
    pub addr: SocketAddr,
    /// The admin listener (health, metrics).
    pub admin: SocketAddr,
}

impl GatewayProcess {
    /// `corral gateway --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --node ID=http://ADDR…
    /// <args>`, waiting until it logs `gateway listening`.
    pub fn start(nodes: &[(&str, SocketAddr)], args: &[&str]) -> GatewayProcess {
        GatewayProcess::start_env(nodes, args, &[])
    }

    /// [`GatewayProcess::start`] with extra environment variables.
    pub fn start_env(
        nodes: &[(&str, SocketAddr)],
        args: &[&str],
        envs: &[(&str, &str)],
    ) -> GatewayProcess {
        let mut argv: Vec<String> = ["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        for (id, addr) in nodes {
            argv.push("--node".to_owned());
            argv.push(format!("{id}=http://{addr}"));
        }
        argv.extend(args.iter().map(|s| (*s).to_owned()));
        let (process, line) =
            CorralProcess::start_env("gateway", &argv, envs, "info", "gateway listening");
        GatewayProcess {
            process,
            addr: addr_field(&line, "listen"),
            admin: addr_field(&line, "admin"),
        }
    }

    /// A gateway in front of `nodes` with [`FAST_HEALTH`] and `args` (its health check may not
    /// have found them yet).
    pub fn start_fast(nodes: &[&TestNode], args: &[&str]) -> GatewayProcess {
        let ids: Vec<(&str, SocketAddr)> = nodes.iter().map(|n| (n.id.as_str(), n.addr)).collect();
        let mut argv = FAST_HEALTH.to_vec();
        argv.extend_from_slice(args);
        GatewayProcess::start(&ids, &argv)
    }

    /// [`GatewayProcess::start_fast`], once its health check found every node ready.
    pub async fn start_ready(nodes: &[&TestNode], args: &[&str]) -> GatewayProcess {
        let gateway = GatewayProcess::start_fast(nodes, args);
        gateway.wait_ready_nodes(nodes.len()).await;
        gateway
    }

    /// Every log line so far.
    pub fn logs(&self) -> Vec<String> {
        self.process.logs()
    }

    /// Sends SIGTERM (graceful shutdown).
    pub fn terminate(&self) {
        self.process.terminate();
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.process.wait_exit(timeout)
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        self.process.is_running()
    }

    /// Waits up to `within` for the process to exit (after [`GatewayProcess::terminate`]) and
    /// asserts it exited 0.
    pub fn expect_exit_zero(&mut self, within: Duration) {
        let status = self
            .wait_exit(within)
            .unwrap_or_else(|| panic!("gateway still running {within:?} after SIGTERM"));
        assert!(status.success(), "exit status {status:?}");
    }

    /// Asserts that no log line so far tells of a panic.
    pub fn assert_never_panicked(&self) {
        let logs = self.logs();
        assert!(
            !logs.iter().any(|l| l.contains("panicked")),
            "gateway panicked:\n{}",
            logs.join("\n")
        );
    }

    /// The `ws://` URL of a WebSocket-only Engine.IO handshake through the gateway.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/socket.io/?EIO=4&transport=websocket", self.addr)
    }

    /// Opens a WebSocket-only session through the gateway (a tunnel); returns it and the open
    /// packet it got first.
    pub async fn open_tunnel(&self) -> (Ws, String) {
        let mut ws = Ws::connect_within(&self.ws_url(), STEP).await;
        match ws.next_frame().await {
            Frame::Text(open) => {
                assert!(open.starts_with('0'), "{open}");
                (ws, open)
            }
            other => panic!("expected the open packet, got {other:?}"),
        }
    }

    /// The Prometheus text of the admin listener.
    pub async fn metrics(&self) -> Metrics {
        let res = send(
            self.admin,
            &request("GET", "/metrics", &[("Connection", "close")], b""),
        )
        .await;
        assert_eq!(res.status, 200, "metrics: {}", res.text());
        Metrics(res.text())
    }

    /// Waits until `n` nodes are ready (health-checked) to take new sessions.
    pub async fn wait_ready_nodes(&self, n: usize) {
        let want = n as f64;
        wait_until(&format!("{n} ready nodes"), STEP, async || {
            self.metrics()
                .await
                .value("corral_gateway_nodes", &[("state", "preferred")])
                == want
        })
        .await;
    }

    /// Asserts the gateway still runs, answers `/healthz` with 200 and never panicked.
    pub async fn assert_healthy(&mut self) {
        assert!(
            self.is_running(),
            "gateway exited; log:\n{}",
            self.logs().join("\n")
        );
        let res = send(
            self.admin,
            &request("GET", "/healthz", &[("Connection", "close")], b""),
        )
        .await;
        assert_eq!(res.status, 200, "healthz: {}", res.text());
        self.assert_never_panicked();
    }
}

/// A Prometheus text exposition.
#[derive(Debug, Clone)]
pub struct Metrics(pub String);

impl Metrics {
    /// `corral_gateway_errors_total` of error kind `kind`.
    pub fn errors(&self, kind: &str) -> f64 {
        self.value("corral_gateway_errors_total", &[("kind", kind)])
    }

    /// The sum of every sample of `name` whose labels include `labels` (0 when none).
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.0
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|line| {
                let (series, value) = line.rsplit_once(' ')?;
                let (metric, rest) = match series.split_once('{') {
                    Some((metric, rest)) => (metric, rest.trim_end_matches('}')),
                    None => (series, ""),
                };
                if metric != name {
                    return None;
                }
                let have: Vec<(&str, &str)> = rest
                    .split(',')
                    .filter_map(|pair| {
                        let (k, v) = pair.split_once('=')?;
                        Some((k.trim(), v.trim().trim_matches('"')))
                    })
                    .collect();
                labels
                    .iter()
                    .all(|want| have.contains(want))
                    .then(|| value.parse::<f64>().ok())
                    .flatten()
            })
            .sum::<f64>()
            // An empty sum is -0.0; say 0.
            + 0.0
    }
}

/// Polls `condition` every 20 ms until it holds; panics naming `what` after `within`.
pub async fn wait_until(what: &str, within: Duration, mut condition: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + within;
    loop {
        if condition().await {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A free port on 127.0.0.1 right now (bound and released), for a node started later.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free port")
        .port()
}

/// The bytes of one HTTP/1.1 request; `Content-Length` is added for a non-empty body unless a
/// `Transfer-Encoding` header is given.
pub fn request(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("{method} {path} HTTP/1.1\r\nHost: corral.test\r\n");
    let chunked = headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("transfer-encoding"));
    if !chunked && (!body.is_empty() || method == "POST") {
        out.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}

/// The head of a WebSocket upgrade request for `path` (no body).
pub fn upgrade_request(path: &str) -> Vec<u8> {
    request(
        "GET",
        path,
        &[
            ("Connection", "Upgrade"),
            ("Upgrade", "websocket"),
            ("Sec-WebSocket-Version", "13"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ],
        b"",
    )
}

/// Sends `bytes` on a fresh connection and reads one complete response (by its length, its
/// chunks or the connection's end), within [`STEP`].
pub async fn send(addr: SocketAddr, bytes: &[u8]) -> HttpResponse {
    let mut conn = Conn::open(addr).await;
    conn.write(bytes).await;
    conn.response()
        .await
        .unwrap_or_else(|| panic!("connection closed without a response"))
}

/// GET `path` on a fresh connection.
pub async fn get(addr: SocketAddr, path: &str) -> HttpResponse {
    send(addr, &request("GET", path, &[("Connection", "close")], b"")).await
}

/// POST `body` to `path` on a fresh connection.
pub async fn post(addr: SocketAddr, path: &str, body: &[u8]) -> HttpResponse {
    send(
        addr,
        &request(
            "POST",
            path,
            &[
                ("Connection", "close"),
                ("Content-Type", "text/plain;charset=UTF-8"),
            ],
            body,
        ),
    )
    .await
}

/// One client connection, possibly kept alive over several requests.
pub struct Conn {
    /// The socket.
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    /// Connects (within [`STEP`]).
    pub async fn open(addr: SocketAddr) -> Conn {
        let stream = tokio::time::timeout(STEP, TcpStream::connect(addr))
            .await
            .expect("connect within the step")
            .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        Conn {
            stream,
            buf: Vec::new(),
        }
    }

    /// Writes `bytes`.
    pub async fn write(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write request");
    }

    /// Reads the next complete response; `None` if the connection ends (or is reset) first.
    /// Fails if nothing complete arrives within [`STEP`].
    pub async fn response(&mut self) -> Option<HttpResponse> {
        tokio::time::timeout(STEP, read_response(&mut self.stream, &mut self.buf))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "no complete response within {STEP:?}; got {:?}",
                    String::from_utf8_lossy(&self.buf)
                )
            })
    }

    /// One keep-alive request and its response.
    pub async fn exchange(&mut self, bytes: &[u8]) -> HttpResponse {
        self.write(bytes).await;
        self.response()
            .await
            .expect("a response on the kept-alive connection")
    }

    /// One keep-alive `GET /healthz`, which must answer 200.
    pub async fn expect_healthz(&mut self) {
        let res = self.exchange(&request("GET", "/healthz", &[], b"")).await;
        assert_eq!(res.status, 200, "{}", res.text());
    }

    /// Waits up to `within` for the server to close the connection; returns what it sent
    /// before, or `None` if it is still open. A reset counts as closed.
    pub async fn closed_within(&mut self, within: Duration) -> Option<Vec<u8>> {
        let deadline = tokio::time::Instant::now() + within;
        let mut chunk = [0u8; 4096];
        loop {
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Err(_) => return None,
                Ok(Ok(0) | Err(_)) => return Some(std::mem::take(&mut self.buf)),
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }
}

/// Reads one response from `stream`, `buf` holding bytes already read (and keeping what
/// follows the response). `None` when the stream ends or fails before a complete response.
pub async fn read_response<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut Vec<u8>,
) -> Option<HttpResponse> {
    let mut chunk = [0u8; 8192];
    loop {
        if let Some((res, used)) = parse_complete(buf, false) {
            buf.drain(..used);
            return Some(res);
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => {
                // A response delimited by the connection's end is complete now.
                let (res, used) = parse_complete(buf, true)?;
                buf.drain(..used);
                return Some(res);
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// A complete response at the start of `buf` and its length in bytes.
fn parse_complete(buf: &[u8], at_eof: bool) -> Option<(HttpResponse, usize)> {
    let split = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buf[..split]);
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let start = split + 4;
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    let (body, end) = if status == 101 || status == 204 || status == 304 {
        (Vec::new(), start)
    } else if let Some(len) = header("content-length").and_then(|v| v.parse::<usize>().ok()) {
        if buf.len() < start + len {
            return None;
        }
        (buf[start..start + len].to_vec(), start + len)
    } else if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        dechunk(&buf[start..]).map(|(body, used)| (body, start + used))?
    } else if at_eof {
        (buf[start..].to_vec(), buf.len())
    } else {
        return None;
    };
    Some((
        HttpResponse {
            status,
            headers,
            body,
        },
        end,
    ))
}

/// A whole chunked body and the bytes it took, or `None` while incomplete.
fn dechunk(data: &[u8]) -> Option<(Vec<u8>, usize)> {
    let mut out = Vec::new();
    let mut at = 0;
    loop {
        let line_end = at + data[at..].windows(2).position(|w| w == b"\r\n")?;
        let size_text = String::from_utf8_lossy(&data[at..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        let start = line_end + 2;
        if size == 0 {
            // No trailers from these servers: the final CRLF follows at once.
            return (data.len() >= start + 2).then_some((out, start + 2));
        }
        if data.len() < start + size + 2 {
            return None;
        }
        out.extend_from_slice(&data[start..start + size]);
        at = start + size + 2;
    }
}

/// An Engine.IO polling session through the gateway (or directly at a node).
#[derive(Debug, Clone)]
pub struct Session {
    /// Where requests go.
    pub addr: SocketAddr,
    /// The sid (a session token, through the gateway).
    pub sid: String,
    /// The handshake's body as sent.
    pub open_packet: String,
}

impl Session {
    /// Handshakes at `/socket.io/`, failing the test unless it is accepted.
    pub async fn open(addr: SocketAddr) -> Session {
        let res = get(addr, "/socket.io/?EIO=4&transport=polling").await;
        assert_eq!(res.status, 200, "handshake refused: {}", res.text());
        let open_packet = res.text();
        let json: serde_json::Value = serde_json::from_str(
            open_packet
                .strip_prefix('0')
                .unwrap_or_else(|| panic!("not an open packet: {open_packet}")),
        )
        .expect("open packet JSON");
        let sid = json["sid"].as_str().expect("sid").to_owned();
        Session {
            addr,
            sid,
            open_packet,
        }
    }

    /// The session with sid `sid` at `addr`.
    pub fn with_sid(addr: SocketAddr, sid: &str) -> Session {
        Session {
            addr,
            sid: sid.to_owned(),
            open_packet: String::new(),
        }
    }

    /// `(node id, node sid)` of a gateway token `<node>.<sid>.<tag>`.
    pub fn token_parts(&self) -> (String, String) {
        let mut parts = self.sid.split('.');
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(node), Some(sid), Some(_tag), None) => (node.to_owned(), sid.to_owned()),
            _ => panic!("not a session token: {}", self.sid),
        }
    }

    /// The polling path of this session.
    pub fn path(&self) -> String {
        format!("/socket.io/?EIO=4&transport=polling&sid={}", self.sid)
    }

    /// The `ws://` URL of this session's WebSocket (an upgrade).
    pub fn ws_url(&self) -> String {
        format!(
            "ws://{}/socket.io/?EIO=4&transport=websocket&sid={}",
            self.addr, self.sid
        )
    }

    /// Opens this session's WebSocket (not probed yet).
    pub async fn websocket(&self) -> Ws {
        Ws::connect_within(&self.ws_url(), STEP).await
    }

    /// One polling GET.
    pub async fn poll(&self) -> HttpResponse {
        get(self.addr, &self.path()).await
    }

    /// One polling GET in a task of its own (to leave it pending while the test goes on).
    pub fn spawn_poll(&self) -> JoinHandle<HttpResponse> {
        let session = self.clone();
        tokio::spawn(async move { session.poll().await })
    }

    /// Sends one polling GET on a connection of its own and returns the connection without
    /// reading the answer (a poll a client may then abandon).
    pub async fn start_poll(&self) -> Conn {
        let mut conn = Conn::open(self.addr).await;
        conn.write(&request("GET", &self.path(), &[], b"")).await;
        conn
    }

    /// Polls the node's first ping, alone, and answers it: the next one is a whole ping
    /// interval away.
    pub async fn answer_first_ping(&self) {
        let res = self.poll().await;
        assert_eq!((res.status, res.text().as_str()), (200, "2"));
        self.post_ok("3").await;
    }

    /// Connects to the main namespace and waits for the bench app's `hello`; returns it.
    pub async fn connect_hello(&self) -> String {
        self.post_ok("40").await;
        self.recv_until(|r| r.starts_with("42[\"hello\"")).await
    }

    /// One POST of `body`.
    pub async fn post(&self, body: &[u8]) -> HttpResponse {
        post(self.addr, &self.path(), body).await
    }

    /// POSTs `body`, expecting the node's `200 ok`.
    pub async fn post_ok(&self, body: &str) {
        let res = self.post(body.as_bytes()).await;
        assert_eq!(
            (res.status, res.text().as_str()),
            (200, "ok"),
            "POST {body:?}"
        );
    }

    /// Polls until a record satisfying `want` arrives, answering pings; fails on a non-200
    /// answer or after [`STEP`].
    pub async fn recv_until(&self, want: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + STEP;
        loop {
            assert!(
                Instant::now() < deadline,
                "the expected record did not arrive"
            );
            let res = self.poll().await;
            assert_eq!(res.status, 200, "poll failed: {}", res.text());
            for record in res.text().split(SEP) {
                if record == "2" {
                    self.post_ok("3").await;
                } else if want(record) {
                    return record.to_owned();
                }
            }
        }
    }
}
