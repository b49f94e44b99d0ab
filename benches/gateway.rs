//! The gateway's overhead: the same load straight to a node and through `corral gateway`.
//!
//! One `corral node --app bench` (this build) and one `corral gateway` in front of it. Each
//! load runs in interleaved rounds (direct, gateway, direct, gateway …) after one unreported
//! warm-up round per path, and is reported as medians, with ratios measured in the same run:
//!
//! 1. **polling echo**: N long-polling sessions over raw HTTP/1.1 (one keep-alive connection
//!    each) do closed-loop `echo` round trips: POST `42<i>["echo",<i>]`, then GET until the ack
//!    `43<i>[<i>]`, answering pings `2` with a POST `3`. Reported: HTTP requests per CPU-second
//!    of the servers (the node; through the gateway, node plus gateway, from `/proc`), each
//!    server's CPU per request, round trips per second and round-trip latency (p50, p99, max).
//! 2. **WebSocket echo**: the same over N WebSocket sessions (`transport=websocket`), per
//!    WebSocket frame (both directions counted).
//! 3. **idle tunnels**: M idle WebSocket sessions on fresh processes each round, straight to the
//!    node and through the gateway: the gateway's resident memory per tunnel and the node's per
//!    session, both from the processes' own `/metrics` before and after.
//!
//! Oddities (a session that stalls or fails, packets that should not be there, requests the
//! gateway refused, an echo the node never saw) are printed to stderr as they happen and counted
//! in the tables.
//!
//! Closed-loop latency under load includes queueing for the CPU; `--sessions 1` shows what the
//! extra hop adds on its own. `--idle-rounds 0` skips the idle measurement.
//!
//! Run: `cargo bench --bench gateway -- [--sessions N] [--polling-round-trips R]
//! [--ws-round-trips R] [--rounds K] [--idle M] [--idle-rounds K]`

#![allow(clippy::print_stdout)] // a report is this program's output

mod support;

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use futures_util::{SinkExt, StreamExt, future::join_all};
use support::{Gateway, Process, arg, median, metric, metric_sum, start_gateway, start_node};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::TcpStream,
    sync::{Semaphore, oneshot, watch},
    task::JoinSet,
    time::timeout,
};
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream, connect_async_with_config, tungstenite::Message,
};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The node id the gateway is told about (`--node ID=URL`) and the node runs with.
const NODE_ID: &str = "bench-node";
/// Longest wait for any one answer; a session that waits longer is counted as failed.
const PATIENCE: Duration = Duration::from_secs(20);
/// Idle sessions connecting at once.
const CONNECTING: usize = 100;

fn start_bench_node() -> Process {
    start_node(&["--app", "bench", "--node-id", NODE_ID])
}

fn start_bench_gateway(node: &Process) -> Gateway {
    start_gateway(&[(NODE_ID, node.addr)], &[])
}

/// The servers of one measurement: the node, and the gateway when the load goes through it.
#[derive(Clone, Copy)]
struct Servers<'a> {
    node: &'a Process,
    gateway: Option<&'a Gateway>,
}

impl Servers<'_> {
    /// Where clients connect.
    fn entry(&self) -> SocketAddr {
        self.gateway.map_or(self.node.addr, |g| g.process.addr)
    }

    /// CPU used so far by the node and by the gateway.
    fn cpu(&self) -> (Duration, Duration) {
        (
            self.node.cpu(),
            self.gateway.map_or(Duration::ZERO, |g| g.process.cpu()),
        )
    }

    fn name(&self) -> &'static str {
        if self.gateway.is_some() {
            "gateway"
        } else {
            "direct "
        }
    }
}

/// A minimal HTTP/1.1 client on one keep-alive connection (reopened if the server closes it).
struct Http {
    addr: SocketAddr,
    conn: Option<BufReader<TcpStream>>,
}

impl Http {
    fn new(addr: SocketAddr) -> Http {
        Http { addr, conn: None }
    }

    /// Sends one request and reads the whole response: status and body.
    async fn request(
        &mut self,
        method: &str,
        target: &str,
        body: &str,
    ) -> Result<(u16, String), String> {
        match timeout(PATIENCE, self.exchange(method, target, body)).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(err)) => {
                self.conn = None;
                Err(format!("{method} {target}: {err}"))
            }
            Err(_) => {
                self.conn = None;
                Err(format!("{method} {target}: no answer within {PATIENCE:?}"))
            }
        }
    }

    async fn exchange(
        &mut self,
        method: &str,
        target: &str,
        body: &str,
    ) -> std::io::Result<(u16, String)> {
        use std::io::{Error, ErrorKind};
        let bad = |what: &str| Error::new(ErrorKind::InvalidData, what.to_owned());
        if self.conn.is_none() {
            let stream = TcpStream::connect(self.addr).await?;
            stream.set_nodelay(true)?;
            self.conn = Some(BufReader::new(stream));
        }
        let conn = self.conn.as_mut().expect("connected above");
        let mut request = format!("{method} {target} HTTP/1.1\r\nHost: {}\r\n", self.addr);
        if method == "POST" {
            request.push_str("Content-Type: text/plain; charset=UTF-8\r\n");
            request.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        request.push_str("\r\n");
        request.push_str(body);
        conn.get_mut().write_all(request.as_bytes()).await?;

        let mut line = String::new();
        if conn.read_line(&mut line).await? == 0 {
            return Err(Error::new(
                ErrorKind::UnexpectedEof,
                "connection closed before the response",
            ));
        }
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("no status line"))?;
        let (mut length, mut chunked, mut close) = (None, false, false);
        loop {
            line.clear();
            if conn.read_line(&mut line).await? == 0 {
                return Err(bad("connection closed in the response head"));
            }
            let Some((name, value)) = line.trim_end().split_once(':') else {
                break; // the empty line
            };
            let value = value.trim().to_ascii_lowercase();
            match name.trim().to_ascii_lowercase().as_str() {
                "content-length" => length = value.parse::<usize>().ok(),
                "transfer-encoding" => chunked = value.contains("chunked"),
                "connection" => close = value.contains("close"),
                _ => {}
            }
        }
        let mut body = Vec::new();
        if chunked {
            loop {
                line.clear();
                conn.read_line(&mut line).await?;
                let size = line.trim().split(';').next().unwrap_or_default();
                let size = usize::from_str_radix(size, 16).map_err(|_| bad("bad chunk size"))?;
                let start = body.len();
                body.resize(start + size + 2, 0); // the chunk and its CRLF
                conn.read_exact(&mut body[start..]).await?;
                body.truncate(start + size);
                if size == 0 {
                    break; // no trailers from these servers
                }
            }
        } else if let Some(length) = length {
            body.resize(length, 0);
            conn.read_exact(&mut body).await?;
        } else {
            close = true;
            conn.read_to_end(&mut body).await?;
        }
        if close {
            self.conn = None;
        }
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }
}

/// What one session saw during the measured part of a round.
#[derive(Default)]
struct Tally {
    /// HTTP requests (polling) or WebSocket frames, both directions (WebSocket).
    units: u64,
    /// Echoes sent.
    sent: u64,
    /// Round-trip times, in microseconds.
    latencies: Vec<u32>,
    /// Packets that are neither the awaited ack nor a ping.
    unexpected: u64,
    /// Why the session stopped early.
    failure: Option<String>,
}

fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

/// A long-polling Socket.IO session.
struct Polling {
    http: Http,
    /// `/socket.io/?EIO=4&transport=polling&sid=<sid>`.
    target: String,
    /// Requests made so far.
    requests: u64,
}

impl Polling {
    /// Handshake, CONNECT to `/`, and wait for its answer and the `hello` event.
    async fn open(addr: SocketAddr) -> Result<Polling, String> {
        let mut http = Http::new(addr);
        let (status, body) = http
            .request("GET", "/socket.io/?EIO=4&transport=polling", "")
            .await?;
        let sid = body
            .strip_prefix('0')
            .and_then(|open| serde_json::from_str::<serde_json::Value>(open).ok())
            .and_then(|open| open["sid"].as_str().map(str::to_owned))
            .ok_or_else(|| format!("handshake answered {status} {body:?}"))?;
        let mut session = Polling {
            http,
            target: format!("/socket.io/?EIO=4&transport=polling&sid={sid}"),
            requests: 0,
        };
        session.post("40").await?;
        let (mut connected, mut hello) = (false, false);
        while !(connected && hello) {
            let payload = session.get().await?;
            let mut pong = false;
            for packet in payload.split('\x1e') {
                connected |= packet.starts_with("40{");
                hello |= packet.starts_with(r#"42["hello""#);
                pong |= packet == "2";
                if packet.starts_with("44") || packet == "1" {
                    return Err(format!("refused: {packet}"));
                }
            }
            if pong {
                session.post("3").await?;
            }
        }
        Ok(session)
    }

    async fn post(&mut self, body: &str) -> Result<(), String> {
        self.requests += 1;
        let (status, answer) = self.http.request("POST", &self.target, body).await?;
        if status != 200 || answer != "ok" {
            return Err(format!("POST {body:?} answered {status} {answer:?}"));
        }
        Ok(())
    }

    async fn get(&mut self) -> Result<String, String> {
        self.requests += 1;
        let (status, payload) = self.http.request("GET", &self.target, "").await?;
        if status != 200 {
            return Err(format!("GET answered {status} {payload:?}"));
        }
        Ok(payload)
    }

    /// `round_trips` closed-loop echoes.
    async fn echo(&mut self, round_trips: u32, tally: &mut Tally) -> Result<(), String> {
        for i in 0..round_trips {
            let expected = format!("43{i}[{i}]");
            let started = Instant::now();
            tally.sent += 1;
            self.post(&format!(r#"42{i}["echo",{i}]"#)).await?;
            let mut pong = false;
            loop {
                let payload = self.get().await?;
                let mut acked = false;
                for packet in payload.split('\x1e') {
                    match packet {
                        "2" => pong = true,
                        "6" => {}
                        "1" => return Err("the server closed the session".into()),
                        p if p == expected => acked = true,
                        p => {
                            tally.unexpected += 1;
                            eprintln!("  unexpected polling packet {p:?} awaiting {expected}");
                        }
                    }
                }
                if acked {
                    tally.latencies.push(micros(started.elapsed()));
                    break;
                }
            }
            if pong {
                self.post("3").await?;
            }
        }
        Ok(())
    }
}

/// Opens a WebSocket session, CONNECTs to `/` and waits for its answer and the `hello` event.
async fn ws_open(addr: SocketAddr) -> Result<Ws, String> {
    let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
    let (mut ws, _) = timeout(PATIENCE, connect_async_with_config(url, None, true))
        .await
        .map_err(|_| "WebSocket handshake timed out".to_owned())?
        .map_err(|e| format!("WebSocket handshake: {e}"))?;
    ws_send(&mut ws, "40").await?;
    let (mut connected, mut hello) = (false, false);
    while !(connected && hello) {
        let text = ws_next(&mut ws).await?;
        connected |= text.starts_with("40{");
        hello |= text.starts_with(r#"42["hello""#);
        if text == "2" {
            ws_send(&mut ws, "3").await?;
        } else if text.starts_with("44") || text == "1" {
            return Err(format!("refused: {text}"));
        }
    }
    Ok(ws)
}

async fn ws_send(ws: &mut Ws, text: &str) -> Result<(), String> {
    ws.send(Message::text(text))
        .await
        .map_err(|e| format!("send: {e}"))
}

/// The next text frame.
async fn ws_next(ws: &mut Ws) -> Result<String, String> {
    loop {
        match timeout(PATIENCE, ws.next()).await {
            Err(_) => return Err(format!("nothing received within {PATIENCE:?}")),
            Ok(Some(Ok(Message::Text(text)))) => return Ok(text.as_str().to_owned()),
            Ok(Some(Ok(Message::Close(frame)))) => return Err(format!("closed: {frame:?}")),
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(e))) => return Err(format!("receive: {e}")),
            Ok(None) => return Err("connection ended".into()),
        }
    }
}

/// `round_trips` closed-loop echoes over WebSocket.
async fn ws_echo(ws: &mut Ws, round_trips: u32, tally: &mut Tally) -> Result<(), String> {
    for i in 0..round_trips {
        let expected = format!("43{i}[{i}]");
        let started = Instant::now();
        tally.sent += 1;
        tally.units += 1;
        ws_send(ws, &format!(r#"42{i}["echo",{i}]"#)).await?;
        loop {
            let text = ws_next(ws).await?;
            tally.units += 1;
            if text == expected {
                tally.latencies.push(micros(started.elapsed()));
                break;
            } else if text == "2" {
                tally.units += 1;
                ws_send(ws, "3").await?;
            } else {
                tally.unexpected += 1;
                eprintln!("  unexpected WebSocket frame {text:?} awaiting {expected}");
            }
        }
    }
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Transport {
    Polling,
    WebSocket,
}

enum Session {
    Polling(Box<Polling>),
    WebSocket(Box<Ws>),
}

impl Session {
    async fn open(transport: Transport, addr: SocketAddr) -> Result<Session, String> {
        Ok(match transport {
            Transport::Polling => Session::Polling(Box::new(Polling::open(addr).await?)),
            Transport::WebSocket => Session::WebSocket(Box::new(ws_open(addr).await?)),
        })
    }

    async fn echo(mut self, round_trips: u32) -> (Session, Tally) {
        let mut tally = Tally::default();
        let result = match &mut self {
            Session::Polling(session) => {
                let before = session.requests;
                let result = session.echo(round_trips, &mut tally).await;
                tally.units = session.requests - before;
                result
            }
            Session::WebSocket(ws) => ws_echo(ws, round_trips, &mut tally).await,
        };
        tally.failure = result.err();
        (self, tally)
    }

    /// Ends the session the way a client would (an Engine.IO close; a WebSocket close).
    async fn close(self) {
        match self {
            Session::Polling(mut session) => {
                session.post("1").await.ok();
            }
            Session::WebSocket(mut ws) => {
                let _ = timeout(Duration::from_secs(2), ws.close()).await;
            }
        }
    }
}

/// One echo round on one path.
struct Outcome {
    /// Requests or frames.
    units: f64,
    round_trips: f64,
    seconds: f64,
    node_cpu: f64,
    gateway_cpu: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    failed_sessions: usize,
    unexpected: u64,
    /// Requests the gateway refused or failed to forward.
    gateway_errors: f64,
    /// Echoes sent but never counted by the node.
    unseen_by_node: f64,
}

impl Outcome {
    fn per_cpu_second(&self) -> f64 {
        self.units / (self.node_cpu + self.gateway_cpu).max(0.001)
    }
    fn node_us(&self) -> f64 {
        self.node_cpu * 1e6 / self.units.max(1.0)
    }
    fn gateway_us(&self) -> f64 {
        self.gateway_cpu * 1e6 / self.units.max(1.0)
    }
    fn per_second(&self) -> f64 {
        self.round_trips / self.seconds
    }
}

/// The `q`-quantile of sorted `values`.
fn quantile(sorted: &[u32], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * q) as usize).min(sorted.len() - 1);
    f64::from(sorted[i])
}

async fn echo_round(
    transport: Transport,
    servers: Servers<'_>,
    sessions: usize,
    round_trips: u32,
) -> Outcome {
    let entry = servers.entry();
    let opened = join_all((0..sessions).map(|_| Session::open(transport, entry))).await;
    let opened: Vec<Session> = opened
        .into_iter()
        .enumerate()
        .map(|(i, s)| s.unwrap_or_else(|e| panic!("session {i} via {}: {e}", servers.name())))
        .collect();
    let node_events = metric(servers.node.addr, "corral_node_events_received_total").await;
    let gateway_errors = match servers.gateway {
        Some(g) => metric_sum(g.admin, "corral_gateway_errors_total").await,
        None => 0.0,
    };

    let (node_before, gateway_before) = servers.cpu();
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for session in opened {
        tasks.spawn(session.echo(round_trips));
    }
    let mut results = Vec::with_capacity(sessions);
    while let Some(result) = tasks.join_next().await {
        results.push(result.expect("echo task"));
    }
    let seconds = started.elapsed().as_secs_f64();
    let (node_after, gateway_after) = servers.cpu();

    let node_events =
        metric(servers.node.addr, "corral_node_events_received_total").await - node_events;
    let gateway_errors = match servers.gateway {
        Some(g) => metric_sum(g.admin, "corral_gateway_errors_total").await - gateway_errors,
        None => 0.0,
    };
    let mut latencies = Vec::new();
    let (mut units, mut sent, mut unexpected, mut failed) = (0, 0, 0, 0);
    let mut closing = Vec::with_capacity(sessions);
    for (session, tally) in results {
        units += tally.units;
        sent += tally.sent;
        unexpected += tally.unexpected;
        latencies.extend(tally.latencies);
        if let Some(why) = tally.failure {
            failed += 1;
            eprintln!("  a session via {} failed: {why}", servers.name());
        }
        closing.push(session.close());
    }
    join_all(closing).await;
    // The next round starts on an empty node.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = metric_sum(servers.node.addr, "corral_node_connected_sockets").await;
        if left == 0.0 {
            break;
        }
        if Instant::now() > deadline {
            eprintln!("  {left} sockets still connected on the node after closing every session");
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if gateway_errors > 0.0 {
        eprintln!("  the gateway counted {gateway_errors} errors this round");
    }
    let node_cpu = node_after.saturating_sub(node_before).as_secs_f64();
    if node_cpu < 0.2 {
        eprintln!(
            "  the node used only {node_cpu:.2} CPU-s this round: too little for /proc's 10 ms ticks; use more round trips"
        );
    }
    let unseen_by_node = sent as f64 - node_events;
    if unseen_by_node != 0.0 {
        eprintln!("  {sent} echoes sent, the node counted {node_events}");
    }
    latencies.sort_unstable();
    Outcome {
        units: units as f64,
        round_trips: latencies.len() as f64,
        seconds,
        node_cpu,
        gateway_cpu: gateway_after.saturating_sub(gateway_before).as_secs_f64(),
        p50_ms: quantile(&latencies, 0.50) / 1000.0,
        p99_ms: quantile(&latencies, 0.99) / 1000.0,
        max_ms: quantile(&latencies, 1.0) / 1000.0,
        failed_sessions: failed,
        unexpected,
        gateway_errors,
        unseen_by_node,
    }
}

/// The medians of a set of rounds, and what went wrong in any of them.
struct Summary {
    per_cpu_second: f64,
    node_us: f64,
    gateway_us: f64,
    per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    /// Median over rounds of gateway CPU / node CPU (same round).
    gateway_to_node: f64,
    anomalies: String,
}

fn summarize(outcomes: &[Outcome]) -> Summary {
    let pick =
        |f: &dyn Fn(&Outcome) -> f64| median(&mut outcomes.iter().map(f).collect::<Vec<_>>());
    let failed: usize = outcomes.iter().map(|o| o.failed_sessions).sum();
    let unexpected: u64 = outcomes.iter().map(|o| o.unexpected).sum();
    let errors: f64 = outcomes.iter().map(|o| o.gateway_errors).sum();
    let unseen: f64 = outcomes.iter().map(|o| o.unseen_by_node).sum();
    let mut anomalies = Vec::new();
    if failed > 0 {
        anomalies.push(format!("{failed} failed sessions"));
    }
    if unexpected > 0 {
        anomalies.push(format!("{unexpected} unexpected packets"));
    }
    if errors > 0.0 {
        anomalies.push(format!("{errors} gateway errors"));
    }
    if unseen != 0.0 {
        anomalies.push(format!("{unseen} echoes not counted by the node"));
    }
    Summary {
        per_cpu_second: pick(&Outcome::per_cpu_second),
        node_us: pick(&Outcome::node_us),
        gateway_us: pick(&Outcome::gateway_us),
        per_second: pick(&Outcome::per_second),
        p50_ms: pick(&|o| o.p50_ms),
        p99_ms: pick(&|o| o.p99_ms),
        max_ms: pick(&|o| o.max_ms),
        gateway_to_node: pick(&|o| o.gateway_cpu / o.node_cpu.max(0.001)),
        anomalies: if anomalies.is_empty() {
            "none".into()
        } else {
            anomalies.join(", ")
        },
    }
}

/// Warm-up, then `rounds` interleaved rounds of `transport` echo; prints progress.
fn echo_rounds(
    runtime: &tokio::runtime::Runtime,
    transport: Transport,
    node: &Process,
    gateway: &Gateway,
    sessions: usize,
    round_trips: u32,
    rounds: usize,
) -> (Vec<Outcome>, Vec<Outcome>) {
    let direct = Servers {
        node,
        gateway: None,
    };
    let proxied = Servers {
        node,
        gateway: Some(gateway),
    };
    let unit = match transport {
        Transport::Polling => "requests",
        Transport::WebSocket => "frames",
    };
    for servers in [direct, proxied] {
        runtime.block_on(echo_round(
            transport,
            servers,
            sessions,
            (round_trips / 4).max(1),
        ));
    }
    let (mut direct_outcomes, mut proxied_outcomes) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        for servers in [direct, proxied] {
            let o = runtime.block_on(echo_round(transport, servers, sessions, round_trips));
            eprintln!(
                "round {round}: {} {:>7.0} {unit}/CPU-s (node {:>5.1} µs, gateway {:>5.1} µs; {:.2} per round trip) {:>6.0} round trips/s  p50 {:>5.2} ms  p99 {:>5.2} ms  max {:>6.2} ms",
                servers.name(),
                o.per_cpu_second(),
                o.node_us(),
                o.gateway_us(),
                o.units / o.round_trips.max(1.0),
                o.per_second(),
                o.p50_ms,
                o.p99_ms,
                o.max_ms,
            );
            if servers.gateway.is_some() {
                proxied_outcomes.push(o);
            } else {
                direct_outcomes.push(o);
            }
        }
    }
    (direct_outcomes, proxied_outcomes)
}

fn print_echo(
    title: &str,
    unit: &str,
    direct: &[Outcome],
    proxied: &[Outcome],
    sessions: usize,
    round_trips: u32,
) {
    let d = summarize(direct);
    let g = summarize(proxied);
    println!(
        "\n{title}: {sessions} sessions × {round_trips} closed-loop round trips, {} interleaved rounds, medians\n",
        direct.len()
    );
    println!(
        "| path | {unit}s per server CPU-second | node CPU per {unit} | gateway CPU per {unit} | round trips per second | p50 round trip | p99 round trip | max round trip | anomalies, all rounds |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    println!(
        "| direct to the node | {:.0} | {:.1} µs | — | {:.0} | {:.2} ms | {:.2} ms | {:.2} ms | {} |",
        d.per_cpu_second, d.node_us, d.per_second, d.p50_ms, d.p99_ms, d.max_ms, d.anomalies
    );
    println!(
        "| through the gateway | {:.0} | {:.1} µs | {:.1} µs | {:.0} | {:.2} ms | {:.2} ms | {:.2} ms | {} |",
        g.per_cpu_second,
        g.node_us,
        g.gateway_us,
        g.per_second,
        g.p50_ms,
        g.p99_ms,
        g.max_ms,
        g.anomalies
    );
    println!(
        "| gateway vs direct | {:.2}× | {:.2}× | {:.2}× the node's | {:.2}× | {:+.2} ms | {:+.2} ms | {:+.2} ms | |",
        g.per_cpu_second / d.per_cpu_second,
        g.node_us / d.node_us,
        g.gateway_to_node,
        g.per_second / d.per_second,
        g.p50_ms - d.p50_ms,
        g.p99_ms - d.p99_ms,
        g.max_ms - d.max_ms,
    );
}

/// One idle session: connects (at most [`CONNECTING`] at once), reports, answers pings, and
/// holds the connection until `stop`.
async fn idle_session(
    addr: SocketAddr,
    connecting: Arc<Semaphore>,
    connected: oneshot::Sender<Result<(), String>>,
    mut stop: watch::Receiver<bool>,
) {
    let permit = connecting.acquire_owned().await.expect("semaphore");
    let mut ws = match ws_open(addr).await {
        Ok(ws) => ws,
        Err(e) => {
            connected.send(Err(e)).ok();
            return;
        }
    };
    drop(permit);
    connected.send(Ok(())).ok();
    loop {
        tokio::select! {
            msg = ws.next() => match msg {
                Some(Ok(Message::Text(text))) if text.as_str() == "2" => {
                    ws.send(Message::text("3")).await.ok();
                }
                Some(Ok(_)) => {}
                _ => return,
            },
            _ = stop.changed() => return,
        }
    }
}

/// Resident memory added per idle session: (node, gateway).
struct IdleOutcome {
    node_per_session: f64,
    gateway_per_tunnel: f64,
}

async fn rss(addr: SocketAddr) -> f64 {
    metric(addr, "process_resident_memory_bytes").await
}

async fn idle_round(servers: Servers<'_>, sessions: usize) -> IdleOutcome {
    // Let the fresh processes settle (allocator arenas, runtime threads) before the baseline.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let node_before = rss(servers.node.addr).await;
    let gateway_before = match servers.gateway {
        Some(g) => rss(g.admin).await,
        None => 0.0,
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let connecting = Arc::new(Semaphore::new(CONNECTING));
    let mut tasks = JoinSet::new();
    let mut ready = Vec::with_capacity(sessions);
    for _ in 0..sessions {
        let (tx, rx) = oneshot::channel();
        ready.push(rx);
        tasks.spawn(idle_session(
            servers.entry(),
            connecting.clone(),
            tx,
            stop_rx.clone(),
        ));
    }
    let mut failed = 0;
    for rx in ready {
        if let Err(why) = rx.await.unwrap_or_else(|_| Err("task ended".into())) {
            failed += 1;
            if failed <= 5 {
                eprintln!("  an idle session via {} failed: {why}", servers.name());
            }
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let node_after = rss(servers.node.addr).await;
    let connected = metric_sum(servers.node.addr, "corral_node_connected_sockets").await;
    let (gateway_after, tunnels) = match servers.gateway {
        Some(g) => (
            rss(g.admin).await,
            metric_sum(g.admin, "corral_gateway_tunnels").await,
        ),
        None => (0.0, 0.0),
    };
    let open = (sessions - failed) as f64;
    if failed > 0 || connected != open || (servers.gateway.is_some() && tunnels != open) {
        eprintln!(
            "  idle via {}: {failed} sessions failed; the node has {connected} sockets{}",
            servers.name(),
            if servers.gateway.is_some() {
                format!(", the gateway {tunnels} tunnels")
            } else {
                String::new()
            }
        );
    }
    stop_tx.send_replace(true);
    while tasks.join_next().await.is_some() {}
    IdleOutcome {
        node_per_session: (node_after - node_before) / open.max(1.0),
        gateway_per_tunnel: (gateway_after - gateway_before) / open.max(1.0),
    }
}

fn main() {
    let sessions = arg("--sessions", 50);
    let polling_round_trips = arg("--polling-round-trips", 2000) as u32;
    let ws_round_trips = arg("--ws-round-trips", 4000) as u32;
    let rounds = arg("--rounds", 5).max(1);
    let idle = arg("--idle", 2000);
    let idle_rounds = arg("--idle-rounds", 3);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");

    let node = start_bench_node();
    let gateway = start_bench_gateway(&node);
    eprintln!(
        "node {} and gateway {} (admin {})",
        node.addr, gateway.process.addr, gateway.admin
    );
    eprintln!("polling echo: {sessions} sessions × {polling_round_trips} round trips");
    let (polling_direct, polling_proxied) = echo_rounds(
        &runtime,
        Transport::Polling,
        &node,
        &gateway,
        sessions,
        polling_round_trips,
        rounds,
    );
    eprintln!("WebSocket echo: {sessions} sessions × {ws_round_trips} round trips");
    let (ws_direct, ws_proxied) = echo_rounds(
        &runtime,
        Transport::WebSocket,
        &node,
        &gateway,
        sessions,
        ws_round_trips,
        rounds,
    );
    drop(gateway);
    drop(node);

    if idle_rounds > 0 {
        eprintln!("idle: {idle} WebSocket sessions, fresh processes each round");
    }
    let (mut idle_direct, mut idle_node, mut idle_gateway, mut idle_ratio) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..idle_rounds {
        let node = start_bench_node();
        let direct = runtime.block_on(idle_round(
            Servers {
                node: &node,
                gateway: None,
            },
            idle,
        ));
        drop(node);
        eprintln!(
            "round {round}: direct  node {:>7.0} B/session",
            direct.node_per_session
        );
        idle_direct.push(direct.node_per_session);

        let node = start_bench_node();
        let gateway = start_bench_gateway(&node);
        let proxied = runtime.block_on(idle_round(
            Servers {
                node: &node,
                gateway: Some(&gateway),
            },
            idle,
        ));
        drop(gateway);
        drop(node);
        eprintln!(
            "round {round}: gateway node {:>7.0} B/session, gateway {:>7.0} B/tunnel",
            proxied.node_per_session, proxied.gateway_per_tunnel
        );
        idle_node.push(proxied.node_per_session);
        idle_gateway.push(proxied.gateway_per_tunnel);
        idle_ratio.push(proxied.gateway_per_tunnel / proxied.node_per_session);
    }

    print_echo(
        "polling echo",
        "request",
        &polling_direct,
        &polling_proxied,
        sessions,
        polling_round_trips,
    );
    print_echo(
        "WebSocket echo",
        "frame",
        &ws_direct,
        &ws_proxied,
        sessions,
        ws_round_trips,
    );
    if idle_rounds == 0 {
        return;
    }
    let direct = median(&mut idle_direct);
    let node = median(&mut idle_node);
    let gateway = median(&mut idle_gateway);
    println!(
        "\nidle WebSocket sessions: {idle} sessions, {idle_rounds} interleaved rounds on fresh processes, medians (resident memory from /metrics)\n"
    );
    println!("| path | node bytes per session | gateway bytes per tunnel |");
    println!("|---|---|---|");
    println!("| direct to the node | {direct:.0} | — |");
    println!("| through the gateway | {node:.0} | {gateway:.0} |");
    println!(
        "| gateway vs direct | {:.2}× | {:.2}× the node's per session (same round) |",
        node / direct,
        median(&mut idle_ratio)
    );
}
