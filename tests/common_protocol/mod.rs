//! Helpers of the protocol conformance tests (`conformance_engineio.rs`,
//! `conformance_socketio.rs`): an Engine.IO polling client and a WebSocket client that speak the
//! raw wire format, answer heartbeats when asked to, and never wait without a bound. The
//! WebSocket client [`Ws`] also serves the gateway tests (through `common_gateway`), with their
//! own bound for each step.
//!
//! [`cases`] holds the Engine.IO cases both suites run, each written once for a base path.
//!
//! Needs `mod common;` next to `mod common_protocol;` in the test crate.

#![allow(dead_code, unreachable_pub)]

use std::{
    future::Future,
    net::SocketAddr,
    time::{Duration, Instant},
};

use futures_util::{SinkExt, StreamExt};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream, connect_async,
    tungstenite::{self, Message},
};

use crate::common::{self, HttpResponse, NodeProcess};

pub mod cases;

/// `pingInterval` the reference server announces (ms).
pub const PING_INTERVAL_MS: u64 = 300;
/// `pingTimeout` the reference server announces (ms).
pub const PING_TIMEOUT_MS: u64 = 200;
/// `maxPayload` the reference server announces (bytes).
pub const MAX_PAYLOAD: usize = 1_000_000;
/// Socket.IO connect timeout of the reference server.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(1000);

/// How long any single expected event (a frame, a response, a close) may take. Generous: the
/// machine running the tests may be slow and busy.
pub const STEP: Duration = Duration::from_secs(5);
/// Upper bound of a whole test.
pub const TEST_BOUND: Duration = Duration::from_secs(60);
/// How long a session that stopped answering pings may take to be closed: the reference closes
/// it `pingTimeout` (200 ms) after the ping; the bound leaves room for a busy machine.
pub const HEARTBEAT_CLOSE_BOUND: Duration = Duration::from_secs(3);

/// Engine.IO record separator in polling payloads.
pub const SEP: char = '\x1e';

/// The server under test: a `corral node --app conformance` started for the test (and killed
/// with it), or, when `CONFORMANCE_TARGET=host:port` is set, a server already running there.
///
/// The latter checks the tests themselves against the reference JavaScript implementation:
/// `socket.io` 4 configured as the Socket.IO suite's README says (pingInterval 300, pingTimeout
/// 200, maxHttpBufferSize 1e6, connectTimeout 1000, CORS `*`, the `auth` greeting, `message` →
/// `message-back`, `message-with-ack` → ack, `/custom` greeting), plus an `engine.io` 6 server
/// attached on the same port at `/engine.io` with the same settings, echoing every message.
pub struct Server {
    /// The address it listens on.
    pub addr: SocketAddr,
    /// Held only so the node lives as long as the test.
    _node: Option<NodeProcess>,
}

impl Server {
    /// `ws://<addr><path>`.
    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }
}

/// Starts a node running the conformance app (see [`Server`]).
pub fn start_node() -> Server {
    if let Ok(target) = std::env::var("CONFORMANCE_TARGET") {
        let addr = target
            .parse()
            .unwrap_or_else(|e| panic!("CONFORMANCE_TARGET={target:?} is not host:port: {e}"));
        return Server { addr, _node: None };
    }
    let node = NodeProcess::start(&["--app", "conformance"]);
    Server {
        addr: node.addr,
        _node: Some(node),
    }
}

/// Runs a test body, failing it if it does not finish within [`TEST_BOUND`].
pub async fn bounded(body: impl Future<Output = ()>) {
    tokio::time::timeout(TEST_BOUND, body)
        .await
        .unwrap_or_else(|_| panic!("test did not finish within {TEST_BOUND:?}"));
}

/// Checks an Engine.IO open packet (`0{...}`): exactly the reference keys with the reference
/// values, and returns its `sid`.
pub fn check_open_packet(packet: &str, upgrades: &[&str]) -> String {
    let json = packet
        .strip_prefix('0')
        .unwrap_or_else(|| panic!("not an open packet: {packet:?}"));
    let value: serde_json::Value = serde_json::from_str(json)
        .unwrap_or_else(|e| panic!("open packet is not JSON ({e}): {json}"));
    let object = value.as_object().expect("open packet is a JSON object");
    let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "maxPayload",
            "pingInterval",
            "pingTimeout",
            "sid",
            "upgrades"
        ],
        "open packet keys: {packet}"
    );
    let sid = value["sid"].as_str().expect("sid is a string");
    assert!(!sid.is_empty(), "empty sid: {packet}");
    assert_eq!(value["upgrades"], serde_json::json!(upgrades), "{packet}");
    assert_eq!(value["pingInterval"], PING_INTERVAL_MS, "{packet}");
    assert_eq!(value["pingTimeout"], PING_TIMEOUT_MS, "{packet}");
    assert_eq!(value["maxPayload"], MAX_PAYLOAD, "{packet}");
    sid.to_owned()
}

/// The records of a polling payload.
pub fn records(payload: &str) -> Vec<String> {
    if payload.is_empty() {
        return Vec::new();
    }
    payload.split(SEP).map(str::to_owned).collect()
}

/// `path?query` of an Engine.IO request below `base` (`/engine.io` or `/socket.io`).
pub fn engine_path(base: &str, query: &str) -> String {
    format!("{base}/?{query}")
}

/// What came back on a connection that the server may cut short.
#[derive(Debug)]
pub struct RawAnswer {
    /// Status code of the response.
    pub status: u16,
    /// Everything after the response head (not de-chunked).
    pub body: String,
}

/// Sends a request and returns the answer, or `None` when the server closed the connection
/// without a complete status line. Unlike [`common::http`] it tolerates the server answering and
/// closing before the whole body was written (as it may for refused payloads), and connections
/// the server aborts (which the reference suites accept where it may happen).
pub async fn tolerant_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Option<RawAnswer> {
    let exchange = async {
        let stream = TcpStream::connect(addr).await.expect("connect");
        let (mut reader, mut writer) = stream.into_split();
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
             Content-Type: text/plain;charset=UTF-8\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        // Read while writing: the server may answer before taking the whole body, and a failed
        // write (it answered early and closed) still leaves its answer to read.
        let write = async {
            if writer.write_all(head.as_bytes()).await.is_ok() {
                let _ = writer.write_all(body).await;
            }
        };
        let mut buf = Vec::new();
        // A reset after a partial response still leaves what came before it in `buf`.
        let read = async {
            let mut chunk = [0u8; 8192];
            while let Ok(n) = reader.read(&mut chunk).await {
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
        };
        tokio::join!(write, read);
        let text = String::from_utf8_lossy(&buf).into_owned();
        let (head, body) = text.split_once("\r\n\r\n")?;
        let status = head.lines().next()?.split(' ').nth(1)?.parse().ok()?;
        Some(RawAnswer {
            status,
            body: body.to_owned(),
        })
    };
    tokio::time::timeout(STEP, exchange)
        .await
        .unwrap_or_else(|_| panic!("no answer to {method} {path} within {STEP:?}"))
}

/// The `code` of an Engine.IO error body.
pub fn error_code(res: &HttpResponse) -> serde_json::Value {
    res.json()["code"].clone()
}

/// Sends `method` to `path` without a body and checks the Engine.IO refusal: 400 with the error
/// `code`. `what` names the request in failure messages. Returns the answer for further checks.
pub async fn expect_refused(
    addr: SocketAddr,
    method: &str,
    path: &str,
    code: i64,
    what: &str,
) -> HttpResponse {
    let res = common::http(addr, method, path, &[], b"").await;
    assert_eq!(res.status, 400, "{what}: {}", res.text());
    assert_eq!(error_code(&res), code, "{what}: {}", res.text());
    res
}

/// Checks that `sid` no longer names an Engine.IO session below `base`: 400 `Session ID
/// unknown`.
pub async fn assert_sid_unknown(addr: SocketAddr, base: &str, sid: &str) {
    let res = common::get(
        addr,
        &engine_path(base, &format!("EIO=4&transport=polling&sid={sid}")),
    )
    .await;
    assert_eq!(res.status, 400, "sid {sid} still accepted: {}", res.text());
    assert_eq!(error_code(&res), 1, "{}", res.text());
}

/// An Engine.IO session over HTTP long-polling.
#[derive(Debug, Clone)]
pub struct Polling {
    /// The node's address.
    pub addr: SocketAddr,
    /// `/engine.io` or `/socket.io`.
    pub base: String,
    /// The session id.
    pub sid: String,
}

impl Polling {
    /// Opens a session with a polling handshake, checking the open packet.
    pub async fn open(addr: SocketAddr, base: &str) -> Polling {
        let res = common::get(addr, &engine_path(base, "EIO=4&transport=polling")).await;
        assert_eq!(res.status, 200, "handshake refused: {}", res.text());
        let sid = check_open_packet(&res.text(), &["websocket"]);
        Polling {
            addr,
            base: base.to_owned(),
            sid,
        }
    }

    /// The request path of this session.
    pub fn path(&self) -> String {
        engine_path(
            &self.base,
            &format!("EIO=4&transport=polling&sid={}", self.sid),
        )
    }

    /// One GET (a long poll: returns when the server has something to send).
    pub async fn get(&self) -> HttpResponse {
        common::get(self.addr, &self.path()).await
    }

    /// One POST of `body`.
    pub async fn post(&self, body: &[u8]) -> HttpResponse {
        common::post(self.addr, &self.path(), body).await
    }

    /// `ws://` URL of a WebSocket for this session (the transport of an upgrade).
    pub fn websocket_url(&self) -> String {
        let path = engine_path(
            &self.base,
            &format!("EIO=4&transport=websocket&sid={}", self.sid),
        );
        format!("ws://{}{path}", self.addr)
    }

    /// Opens a WebSocket for this session and probes it: `2probe` answered with `3probe`.
    pub async fn probe(&self) -> Ws {
        let mut ws = Ws::connect(&self.websocket_url()).await;
        ws.send_text("2probe").await;
        assert_eq!(ws.next_frame().await, Frame::text("3probe"));
        ws
    }

    /// Probes a WebSocket for this session, then checks that the next poll is ended with a noop,
    /// as the reference suites do. The upgrade is not completed (no `5` sent).
    pub async fn probe_upgrade(&self) -> Ws {
        let ws = self.probe().await;
        let res = self.get().await;
        assert_eq!(res.status, 200, "{}", res.text());
        assert_eq!(
            res.text(),
            "6",
            "a poll during the upgrade must end with a noop"
        );
        ws
    }

    /// POSTs `body` and checks the reference answer, 200 `ok`.
    pub async fn post_ok(&self, body: &str) {
        let res = self.post(body.as_bytes()).await;
        assert_eq!(res.status, 200, "POST {body:?} refused: {}", res.text());
        assert_eq!(res.text(), "ok", "POST {body:?}");
    }

    /// One heartbeat round: the next poll must be a lone ping, answered with a pong. Afterwards
    /// the next ping is a whole ping interval away, so the session can be driven without one
    /// interleaving.
    pub async fn heartbeat_round(&self) {
        let res = self.get().await;
        assert_eq!(res.status, 200, "{}", res.text());
        assert_eq!(res.text(), "2", "expected a lone ping");
        self.post_ok("3").await;
    }

    /// Polls until `n` packets other than pings arrived (pings are answered with pongs so the
    /// session stays alive) and returns them in order. Fails on a non-200 answer.
    pub async fn packets(&self, n: usize) -> Vec<String> {
        let deadline = Instant::now() + STEP;
        let mut packets = Vec::new();
        while packets.len() < n {
            assert!(
                Instant::now() < deadline,
                "only {packets:?} of {n} packets within {STEP:?}"
            );
            let res = self.get().await;
            assert_eq!(
                res.status,
                200,
                "poll failed after {packets:?}: {}",
                res.text()
            );
            for record in records(&res.text()) {
                if record == "2" {
                    self.post_ok("3").await;
                } else {
                    packets.push(record);
                }
            }
        }
        assert_eq!(packets.len(), n, "more packets than expected: {packets:?}");
        packets
    }

    /// Polls until the session is gone, without answering pings, and returns what the polls
    /// saw. A closed session answers a poll with 400, or the poll pending at the close ends with
    /// a close packet `1` (both accepted by the reference suites); afterwards the sid must be
    /// refused with 400 `Session ID unknown`.
    pub async fn wait_closed(&self, within: Duration) -> Vec<String> {
        self.wait_closed_inner(within, false).await
    }

    /// Like [`Polling::wait_closed`], but answers pings (and leaves them out of the returned
    /// records), so the heartbeat cannot be what closes the session.
    pub async fn wait_closed_answering_pings(&self, within: Duration) -> Vec<String> {
        self.wait_closed_inner(within, true).await
    }

    async fn wait_closed_inner(&self, within: Duration, pong: bool) -> Vec<String> {
        let deadline = Instant::now() + within;
        let mut seen = Vec::new();
        loop {
            assert!(
                Instant::now() < deadline,
                "session still open after {within:?}; polls saw {seen:?}"
            );
            let res = self.get().await;
            if res.status == 400 {
                assert_eq!(error_code(&res), 1, "{}", res.text());
                return seen;
            }
            assert_eq!(res.status, 200, "unexpected poll answer: {}", res.text());
            let mut recs = records(&res.text());
            let closed = recs.iter().any(|r| r == "1");
            if pong && !closed && recs.iter().any(|r| r == "2") {
                recs.retain(|r| r != "2");
                let res = self.post(b"3").await;
                if res.status == 400 {
                    // Closed between the poll and the pong.
                    assert_eq!(error_code(&res), 1, "{}", res.text());
                    seen.extend(recs);
                    return seen;
                }
                assert_eq!(res.status, 200, "pong refused: {}", res.text());
            }
            seen.extend(recs);
            if closed {
                let res = self.get().await;
                assert_eq!(
                    res.status,
                    400,
                    "sid still accepted after close: {}",
                    res.text()
                );
                assert_eq!(error_code(&res), 1, "{}", res.text());
                return seen;
            }
        }
    }
}

/// A frame received on a WebSocket, or its end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A text frame.
    Text(String),
    /// A binary frame.
    Binary(Vec<u8>),
    /// A close frame, the end of the stream, or a transport error.
    Closed,
}

impl Frame {
    /// Shorthand for a text frame.
    pub fn text(s: &str) -> Frame {
        Frame::Text(s.to_owned())
    }

    /// A short description, for messages about large frames.
    pub fn summary(&self) -> String {
        match self {
            Frame::Text(t) if t.len() > 80 => format!("Text({:?}... {} bytes)", &t[..80], t.len()),
            Frame::Binary(b) if b.len() > 80 => format!("Binary({} bytes)", b.len()),
            other => format!("{other:?}"),
        }
    }
}

/// A WebSocket connection speaking raw Engine.IO frames.
pub struct Ws {
    stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// How long the handshake and each expected frame may take: [`STEP`] unless connected with
    /// [`Ws::connect_within`].
    step: Duration,
}

impl Ws {
    /// Connects, failing the test if the server refuses the upgrade.
    pub async fn connect(url: &str) -> Ws {
        Ws::connect_within(url, STEP).await
    }

    /// Like [`Ws::connect`], with `step` instead of [`STEP`] as the bound of the handshake and
    /// of every expected frame afterwards.
    pub async fn connect_within(url: &str, step: Duration) -> Ws {
        match Ws::try_connect_within(url, step).await {
            Ok(ws) => ws,
            Err(e) => panic!("WebSocket to {url} refused: {e}"),
        }
    }

    /// Connects and returns the error if the server refuses.
    pub async fn try_connect(url: &str) -> Result<Ws, tungstenite::Error> {
        Ws::try_connect_within(url, STEP).await
    }

    async fn try_connect_within(url: &str, step: Duration) -> Result<Ws, tungstenite::Error> {
        let (stream, _) = tokio::time::timeout(step, connect_async(url))
            .await
            .unwrap_or_else(|_| {
                panic!("no WebSocket handshake answer from {url} within {step:?}")
            })?;
        Ok(Ws { stream, step })
    }

    /// Opens a fresh Engine.IO session over WebSocket on `base` and checks the open packet.
    pub async fn open(node: &Server, base: &str) -> (Ws, String) {
        let mut ws =
            Ws::connect(&node.ws_url(&engine_path(base, "EIO=4&transport=websocket"))).await;
        let sid = match ws.next_frame().await {
            Frame::Text(open) => check_open_packet(&open, &[]),
            other => panic!("expected the open packet, got {other:?}"),
        };
        (ws, sid)
    }

    /// Sends a text frame.
    pub async fn send_text(&mut self, text: &str) {
        self.stream
            .send(Message::text(text))
            .await
            .unwrap_or_else(|e| panic!("send {text:?}: {e}"));
    }

    /// Sends a text frame; false if the connection is gone.
    pub async fn try_send_text(&mut self, text: &str) -> bool {
        self.stream.send(Message::text(text)).await.is_ok()
    }

    /// Sends a binary frame.
    pub async fn send_binary(&mut self, bytes: &[u8]) {
        self.stream
            .send(Message::binary(bytes.to_vec()))
            .await
            .unwrap_or_else(|e| panic!("send binary {bytes:?}: {e}"));
    }

    /// The next data frame (WebSocket control frames skipped), or [`Frame::Closed`]. Fails if
    /// nothing arrives within the connection's step ([`STEP`] unless set).
    pub async fn next_frame(&mut self) -> Frame {
        self.next_frame_within(self.step)
            .await
            .unwrap_or_else(|| panic!("no frame within {:?}", self.step))
    }

    /// Like [`Ws::next_frame`], `None` when nothing arrives within `within`.
    pub async fn next_frame_within(&mut self, within: Duration) -> Option<Frame> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let next = tokio::time::timeout_at(deadline, self.stream.next())
                .await
                .ok()?;
            return Some(match next {
                Some(Ok(Message::Text(t))) => Frame::Text(t.as_str().to_owned()),
                Some(Ok(Message::Binary(b))) => Frame::Binary(b.to_vec()),
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                Some(Ok(Message::Close(_)) | Err(_)) | None => Frame::Closed,
            });
        }
    }

    /// The next frame that is not an Engine.IO ping; pings are answered with a pong. Fails if
    /// nothing but pings arrives within the connection's step.
    pub async fn next_packet(&mut self) -> Frame {
        self.next_packet_within(self.step)
            .await
            .unwrap_or_else(|| panic!("no packet but pings within {:?}", self.step))
    }

    /// Like [`Ws::next_packet`], `None` when nothing but pings arrives within `within`.
    pub async fn next_packet_within(&mut self, within: Duration) -> Option<Frame> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_frame_within(left).await? {
                Frame::Text(t) if t == "2" => self.send_pong().await,
                other => return Some(other),
            }
        }
    }

    /// The next `n` frames that are not pings (answering pings).
    pub async fn next_packets(&mut self, n: usize) -> Vec<Frame> {
        let mut frames = Vec::with_capacity(n);
        for _ in 0..n {
            frames.push(self.next_packet().await);
        }
        frames
    }

    /// Checks that the next non-ping frame is the text `expected`.
    pub async fn expect_text(&mut self, expected: &str) {
        let step = self.step;
        match self.next_packet_within(step).await {
            Some(frame) => assert_eq!(frame, Frame::text(expected)),
            None => panic!("expected {expected:?}, nothing but pings within {step:?}"),
        }
    }

    /// Checks that the next non-ping frames are exactly `expected`.
    pub async fn expect_frames(&mut self, expected: &[Frame]) {
        let step = self.step;
        let mut got = Vec::new();
        for want in expected {
            match self.next_packet_within(step).await {
                Some(frame) => got.push(frame),
                None => panic!(
                    "expected {expected:?}, got only {got:?} (then nothing but pings within \
                     {step:?}); waiting for {want:?}"
                ),
            }
        }
        assert_eq!(got, expected);
    }

    /// Sends a pong, ignoring a transport already closed (the close is then seen on read).
    async fn send_pong(&mut self) {
        let _ = self.stream.send(Message::text("3")).await;
    }

    /// Waits until the connection is closed, answering pings so the heartbeat cannot be what
    /// closes it. Returns the other frames seen meanwhile and the time waited. Fails if the
    /// connection is still open after `within`.
    pub async fn expect_close(&mut self, within: Duration) -> (Vec<Frame>, Duration) {
        self.wait_close(within, true).await
    }

    /// Waits until the connection is closed without answering pings (a heartbeat failure).
    /// Returns every frame seen meanwhile (pings included) and the time waited.
    pub async fn expect_close_ignoring_pings(
        &mut self,
        within: Duration,
    ) -> (Vec<Frame>, Duration) {
        self.wait_close(within, false).await
    }

    /// Waits up to `within` for the connection to end, skipping Engine.IO pings (unanswered);
    /// true if it ended. Any other frame fails the test.
    pub async fn closed_within(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_frame_within(left).await {
                None => return false,
                Some(Frame::Closed) => return true,
                Some(Frame::Text(ping)) if ping == "2" => {}
                Some(other) => panic!("expected the end of the connection, got {other:?}"),
            }
        }
    }

    /// Text frames until one satisfies `want` (which is returned), pings included and not
    /// answered; fails on a close or after the connection's step.
    pub async fn text_until(&mut self, want: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + self.step;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_frame_within(left).await {
                Some(Frame::Text(t)) if want(&t) => return t,
                Some(Frame::Text(_) | Frame::Binary(_)) => {}
                other => panic!("expected frame did not arrive: {other:?}"),
            }
        }
    }

    async fn wait_close(&mut self, within: Duration, pong: bool) -> (Vec<Frame>, Duration) {
        let start = Instant::now();
        let mut seen = Vec::new();
        loop {
            let left = within.saturating_sub(start.elapsed());
            match self.next_frame_within(left).await {
                None => panic!("connection still open after {within:?}; frames seen: {seen:?}"),
                Some(Frame::Closed) => return (seen, start.elapsed()),
                Some(Frame::Text(t)) if pong && t == "2" => self.send_pong().await,
                Some(frame) => seen.push(frame),
            }
        }
    }

    /// Closes the connection from the client side.
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(self.step, self.stream.close(None)).await;
    }
}

/// Expects a WebSocket upgrade to `url` to be refused with an HTTP 400 (or the connection to be
/// closed before any Engine.IO packet arrives), and returns the refusal body when there is one.
pub async fn expect_ws_refused(url: &str) -> Option<String> {
    match Ws::try_connect(url).await {
        Err(tungstenite::Error::Http(res)) => {
            assert_eq!(res.status().as_u16(), 400, "refusal of {url}");
            res.body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
        }
        Err(e) => panic!("unexpected WebSocket failure for {url}: {e}"),
        Ok(mut ws) => {
            let frame = ws.next_frame().await;
            assert_eq!(frame, Frame::Closed, "{url} accepted and sent {frame:?}");
            None
        }
    }
}
