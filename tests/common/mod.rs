//! Shared helpers of the integration tests: start `corral` as a real process ([`CorralProcess`]:
//! any subcommand, its JSON log collected, ready once it logs a given message; `corral node` as
//! [`NodeProcess`], on a free port unless given an address), and speak raw HTTP and WebSocket to
//! it.

#![allow(dead_code, unreachable_pub)]

use std::{
    ffi::OsStr,
    fmt::Debug,
    io::{BufRead, BufReader},
    net::SocketAddr,
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex, mpsc},
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// How long a `corral` process may take to log that it is ready.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A `corral` child process whose JSON log (stderr) is collected; killed when dropped.
pub struct CorralProcess {
    child: Child,
    logs: Arc<Mutex<Vec<String>>>,
}

impl CorralProcess {
    /// Runs `corral --log-format json <subcommand> <args>` with `CORRAL_LOG=<log_spec>` and
    /// waits until it logs a line whose message is `ready`; returns the process and that line
    /// (which is in [`CorralProcess::logs`] by then). Fails the test, with the log, if it does
    /// not within 20 s.
    pub fn start<S: AsRef<OsStr> + Debug>(
        subcommand: &str,
        args: &[S],
        log_spec: &str,
        ready: &str,
    ) -> (CorralProcess, serde_json::Value) {
        CorralProcess::start_env(subcommand, args, &[], log_spec, ready)
    }

    /// [`CorralProcess::start`] with extra environment variables.
    pub fn start_env<S: AsRef<OsStr> + Debug>(
        subcommand: &str,
        args: &[S],
        envs: &[(&str, &str)],
        log_spec: &str,
        ready: &str,
    ) -> (CorralProcess, serde_json::Value) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_corral"))
            .args(["--log-format", "json", subcommand])
            .args(args)
            .envs(envs.iter().copied())
            .env("CORRAL_LOG", log_spec)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn corral {subcommand}: {e}"));
        let stderr = child.stderr.take().expect("stderr is piped");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let sink = logs.clone();
        let wanted = ready.to_owned();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let json = serde_json::from_str::<serde_json::Value>(&line)
                    .ok()
                    .filter(|json| json["message"] == wanted.as_str());
                // Logged before the line is handed over, so `logs()` has it by then.
                sink.lock().expect("log lock").push(line);
                if let Some(json) = json {
                    tx.send(json).ok();
                }
            }
        });
        match rx.recv_timeout(START_TIMEOUT) {
            Ok(line) => (CorralProcess { child, logs }, line),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "corral {subcommand} {args:?} did not log {ready:?}; its log:\n{}",
                    logs.lock().expect("log lock").join("\n")
                );
            }
        }
    }

    /// Every log line so far.
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().expect("log lock").clone()
    }

    /// Sends SIGTERM, as an orchestrator stopping the process would.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
    }

    /// Kills the process with SIGKILL (no drain, no goodbye) and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for CorralProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The address in field `field` of log line `line`; fails the test if there is none.
pub fn addr_field(line: &serde_json::Value, field: &str) -> SocketAddr {
    line[field]
        .as_str()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address {field:?} in {line}"))
}

/// A `corral node` child process, killed when dropped.
pub struct NodeProcess {
    process: CorralProcess,
    /// The address it listens on.
    pub addr: SocketAddr,
    node_id: Option<String>,
}

impl NodeProcess {
    /// Starts `corral node --listen 127.0.0.1:0 <args>` and waits until it listens. The port is
    /// picked by the OS and read back from the node's JSON log, so tests never collide.
    pub fn start(args: &[&str]) -> NodeProcess {
        NodeProcess::start_with("127.0.0.1:0", "info,corral_node=debug", args)
    }

    /// Starts `corral node --listen <listen> <args>` with `CORRAL_LOG=<log_spec>` and waits
    /// until it listens.
    pub fn start_with(listen: &str, log_spec: &str, args: &[&str]) -> NodeProcess {
        NodeProcess::start_env(listen, log_spec, args, &[])
    }

    /// [`NodeProcess::start_with`] with extra environment variables.
    pub fn start_env(
        listen: &str,
        log_spec: &str,
        args: &[&str],
        envs: &[(&str, &str)],
    ) -> NodeProcess {
        let mut argv = vec!["--listen", listen];
        argv.extend_from_slice(args);
        let (process, line) =
            CorralProcess::start_env("node", &argv, envs, log_spec, "node listening");
        NodeProcess {
            process,
            addr: addr_field(&line, "listen"),
            node_id: line["node_id"].as_str().map(str::to_owned),
        }
    }

    /// `http://<addr><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// `ws://<addr><path>`.
    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }

    /// Sends SIGTERM, as an orchestrator stopping the node would.
    pub fn terminate(&self) {
        self.process.terminate();
    }

    /// Kills the process with SIGKILL (no drain, no goodbye) and waits for it.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.process.wait_exit(timeout)
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        self.process.is_running()
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// The node id it reported when it started listening.
    pub fn node_id(&self) -> String {
        self.node_id
            .clone()
            .expect("the node logged its id when it started listening")
    }

    /// Every log line so far.
    pub fn logs(&self) -> Vec<String> {
        self.process.logs()
    }
}

/// A parsed HTTP response.
#[derive(Debug)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Header names (lower case) and values.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body parsed as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.text()))
    }
}

/// Sends one request on a fresh connection (`Connection: close`) and reads the whole response.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpResponse {
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    )
    .into_bytes();
    for (name, value) in headers {
        request.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    request.extend_from_slice(b"\r\n");
    request.extend_from_slice(body);
    raw(addr, &request).await
}

/// GET `path`.
pub async fn get(addr: SocketAddr, path: &str) -> HttpResponse {
    http(addr, "GET", path, &[], b"").await
}

/// POST `body` to `path` as text.
pub async fn post(addr: SocketAddr, path: &str, body: &[u8]) -> HttpResponse {
    http(
        addr,
        "POST",
        path,
        &[("Content-Type", "text/plain;charset=UTF-8")],
        body,
    )
    .await
}

/// Writes `bytes` on a fresh connection and parses what comes back until the server closes.
pub async fn raw(addr: SocketAddr, bytes: &[u8]) -> HttpResponse {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream.write_all(bytes).await.expect("write request");
        let mut buf = Vec::new();
        stream.read_to_end(&mut buf).await.expect("read response");
        buf
    };
    let buf = tokio::time::timeout(Duration::from_secs(15), exchange)
        .await
        .expect("response within 15 s");
    parse_response(&buf)
}

fn parse_response(buf: &[u8]) -> HttpResponse {
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(buf)));
    let head = String::from_utf8_lossy(&buf[..split]);
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = buf[split + 4..].to_vec();
    if headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"))
    {
        body = dechunk(&body);
    }
    HttpResponse {
        status,
        headers,
        body,
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(line_end) = data.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size = usize::from_str_radix(String::from_utf8_lossy(&data[..line_end]).trim(), 16)
            .unwrap_or(0);
        if size == 0 {
            return out;
        }
        let start = line_end + 2;
        out.extend_from_slice(&data[start..start + size]);
        data = &data[start + size + 2..];
    }
}

/// Opens an Engine.IO polling session and returns its `sid` and the open packet's JSON.
pub async fn polling_handshake(addr: SocketAddr, path: &str) -> (String, serde_json::Value) {
    let res = get(addr, &format!("{path}/?EIO=4&transport=polling")).await;
    assert_eq!(res.status, 200, "handshake failed: {}", res.text());
    let text = res.text();
    let open = text
        .strip_prefix('0')
        .unwrap_or_else(|| panic!("not an open packet: {text}"));
    let json: serde_json::Value = serde_json::from_str(open).expect("open packet JSON");
    let sid = json["sid"].as_str().expect("sid").to_owned();
    (sid, json)
}

/// One Engine.IO long-polling session, driven by hand.
pub struct PollingSession {
    addr: SocketAddr,
    path: String,
    /// The session id.
    pub sid: String,
}

impl PollingSession {
    /// Handshakes at `path` (e.g. `/socket.io`).
    pub async fn open(addr: SocketAddr, path: &str) -> PollingSession {
        let (sid, _) = polling_handshake(addr, path).await;
        PollingSession {
            addr,
            path: path.to_owned(),
            sid,
        }
    }

    fn query(&self) -> String {
        format!("{}/?EIO=4&transport=polling&sid={}", self.path, self.sid)
    }

    /// POSTs `payload` as is and returns the response.
    pub async fn send(&self, payload: &[u8]) -> HttpResponse {
        post(self.addr, &self.query(), payload).await
    }

    /// One polling GET, split into packets; answers pings on the way.
    pub async fn poll(&self) -> HttpResponse {
        get(self.addr, &self.query()).await
    }

    /// Polls until a packet satisfying `want` arrives (answering pings), or panics after 10 s.
    pub async fn recv_until(&self, want: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let res = self.poll().await;
            assert_eq!(res.status, 200, "poll failed: {}", res.text());
            for packet in res.text().split('\u{1e}') {
                if packet == "2" {
                    self.send(b"3").await;
                } else if want(packet) {
                    return packet.to_owned();
                }
            }
        }
        panic!("expected packet did not arrive within 10 s");
    }

    /// Connects to the main namespace and waits for the CONNECT answer.
    pub async fn connect_main(&self) {
        assert_eq!(self.send(b"40").await.status, 200);
        self.recv_until(|p| p.starts_with("40{")).await;
    }

    /// True when the node no longer knows this session.
    pub async fn is_closed(&self) -> bool {
        let res = self.poll().await;
        res.status == 400 && res.text().contains("Session ID unknown")
    }
}

/// Asserts the node is alive, healthy, and never panicked.
pub async fn assert_healthy(node: &mut NodeProcess) {
    assert!(
        node.is_running(),
        "node exited; log:\n{}",
        node.logs().join("\n")
    );
    assert_eq!(get(node.addr, "/healthz").await.status, 200);
    let logs = node.logs();
    assert!(
        !logs.iter().any(|l| l.contains("panicked")),
        "node panicked:\n{}",
        logs.join("\n")
    );
}
