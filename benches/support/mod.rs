//! What the benchmarks share: real `corral node`, `corral gateway` and `nats-server` processes on
//! free ports, their CPU time and metrics, and the arithmetic of the report.

#![allow(dead_code, unreachable_pub)] // each benchmark uses a part; `pub` for the benchmarks beside

use std::{
    io::{BufRead, BufReader},
    net::{SocketAddr, TcpListener},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

/// A child process, killed when dropped.
pub struct Process {
    pub child: Child,
    pub addr: SocketAddr,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Process {
    /// User plus system CPU time the process has used so far.
    pub fn cpu(&self) -> Duration {
        cpu_time(self.child.id())
    }
}

/// Starts `corral node --listen 127.0.0.1:0 <args>` (this build) and waits until it listens.
pub fn start_node(args: &[&str]) -> Process {
    let mut command = Command::new(env!("CARGO_BIN_EXE_corral"));
    command
        .args(["--log-format", "json", "node", "--listen", "127.0.0.1:0"])
        .args(args)
        .env("CORRAL_LOG", "warn,corral_node::server=info");
    let (child, line) = spawn_logged(command, "node", |json| json["listen"].is_string());
    let addr = address(&line, "listen");
    Process { child, addr }
}

/// A `corral gateway` process: `process.addr` is where clients connect, `admin` its admin
/// listener (health, `/metrics`).
pub struct Gateway {
    pub process: Process,
    pub admin: SocketAddr,
}

/// Starts `corral gateway` (this build) on free ports in front of `nodes` (`(node id, address)`;
/// each node must run with that `--node-id`), with `args` added, and waits until its admin
/// `/readyz` says a node takes new sessions.
pub fn start_gateway(nodes: &[(&str, SocketAddr)], args: &[&str]) -> Gateway {
    let mut command = Command::new(env!("CARGO_BIN_EXE_corral"));
    command
        .args(["--log-format", "json", "gateway"])
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        // Fixed, so the gateway does not warn about a random one.
        .args(["--session-secret", "corral-bench-secret"])
        .args(
            nodes
                .iter()
                .flat_map(|(id, addr)| ["--node".to_owned(), format!("{id}=http://{addr}")]),
        )
        .args(args)
        .env("CORRAL_LOG", "warn,corral_gateway::server=info");
    let (child, line) = spawn_logged(command, "gateway", |json| {
        json["message"] == "gateway listening"
    });
    let process = Process {
        child,
        addr: address(&line, "listen"),
    };
    let admin = address(&line, "admin");
    let deadline = Instant::now() + Duration::from_secs(20);
    while http_status(admin, "/readyz") != Some(200) {
        assert!(Instant::now() < deadline, "the gateway found no ready node");
        std::thread::sleep(Duration::from_millis(20));
    }
    Gateway { process, admin }
}

/// Spawns `command` (JSON logs on stderr) and returns it with its first log line that `wanted`
/// accepts. Warnings and errors are echoed to this program's stderr as `[label] …` (the first
/// 20, then a note that more were left out), so a benchmark shows what went wrong in its servers.
fn spawn_logged(
    mut command: Command,
    label: &'static str,
    wanted: fn(&serde_json::Value) -> bool,
) -> (Child, serde_json::Value) {
    let mut child = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn corral {label}: {e}"));
    let stderr = child.stderr.take().expect("piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut echoed = 0;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let Ok(json) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if wanted(&json) {
                tx.send(json).ok();
            } else if matches!(json["level"].as_str(), Some("WARN" | "ERROR")) {
                echoed += 1;
                if echoed <= 20 {
                    eprintln!("  [{label}] {line}");
                } else if echoed == 21 {
                    eprintln!("  [{label}] (more warnings not shown)");
                }
            }
        }
    });
    let line = rx
        .recv_timeout(Duration::from_secs(20))
        .unwrap_or_else(|_| panic!("corral {label} did not start listening"));
    (child, line)
}

/// The socket address in field `key` of a log line.
fn address(line: &serde_json::Value, key: &str) -> SocketAddr {
    line[key]
        .as_str()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address {key:?} in {line}"))
}

/// The status of `GET path` on `addr` (blocking), or `None` if it could not be had.
pub fn http_status(addr: SocketAddr, path: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    text.split_whitespace().nth(1)?.parse().ok()
}

/// Starts `nats-server` (`$NATS_SERVER`, else the project's `.venv`) on a free port.
pub fn start_nats() -> Process {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let binary = std::env::var("NATS_SERVER").unwrap_or_else(|_| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/.venv/bin/nats-server").to_owned()
    });
    let child = Command::new(&binary)
        .args(["-a", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {binary} (run scripts/setup): {e}"));
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "nats-server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    Process { child, addr }
}

/// CPU time (user + system) of process `pid`, from `/proc`.
pub fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may contain spaces.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let total = ticks(11) + ticks(12);
    // The kernel reports in clock ticks; Linux uses 100 per second on every common platform.
    Duration::from_millis(total * 10)
}

/// The whole `/metrics` response of a node (or of a gateway's admin listener).
pub async fn metrics_text(addr: SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut text = String::new();
    stream.read_to_string(&mut text).await.expect("read");
    text
}

/// One sample of `name` from `/metrics` (a node's, or a gateway's admin listener's).
pub async fn metric(addr: SocketAddr, name: &str) -> f64 {
    let text = metrics_text(addr).await;
    let prefix = format!("{name} ");
    text.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or_else(|| panic!("{name} not in /metrics"))
}

/// The sum of every sample of metric `name`, whatever its labels (0 when there is none).
pub async fn metric_sum(addr: SocketAddr, name: &str) -> f64 {
    let text = metrics_text(addr).await;
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            let family = key.split('{').next()?;
            if family == name {
                value.trim().parse::<f64>().ok()
            } else {
                None
            }
        })
        .sum()
}

/// The median of `values` (sorted in place).
pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// The value of command-line option `name`, or `default`.
pub fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
