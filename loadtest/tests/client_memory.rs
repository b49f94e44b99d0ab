//! What an idle session costs the client: resident memory before and after thousands of
//! sessions connect to a node in another process (so the node's memory is not counted).
//!
//! ```sh
//! cargo test --release -p corral-loadtest --test client_memory -- --ignored --nocapture
//! CLIENT_MEMORY_SESSIONS=20000 cargo test --release …   # more sessions
//! ```
//!
//! It starts `target/debug/corral` (built with `cargo build --bin corral` if missing).

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use corral_loadtest::client::{Incoming, Session, SessionConfig, Target, TransportMode};
use tokio::sync::Semaphore;

struct NodeProcess(Child);

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn corral_binary() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf();
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let binary = target.join("debug").join("corral");
    if !binary.exists() {
        let status = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .args(["build", "--bin", "corral"])
            .current_dir(&root)
            .status()
            .expect("run cargo build");
        assert!(status.success(), "cargo build --bin corral failed");
    }
    binary
}

fn start_node() -> (NodeProcess, SocketAddr) {
    let mut child = Command::new(corral_binary())
        .args([
            "--log-format",
            "json",
            "node",
            "--app",
            "bench",
            "--listen",
            "127.0.0.1:0",
        ])
        .env("CORRAL_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn corral node");
    let stderr = child.stderr.take().expect("piped stderr");
    let node = NodeProcess(child);
    let mut lines = BufReader::new(stderr).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("the node logs its address")
            .expect("read the node's log");
        let Ok(json) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if json["message"] == "node listening" {
            break json["listen"]
                .as_str()
                .and_then(|a| a.parse().ok())
                .expect("listen address");
        }
    };
    // Keep reading so the node never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (node, addr)
}

fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmRSS")
        * 1024
}

async fn measure(addr: SocketAddr, transport: TransportMode, sessions: usize) -> f64 {
    let mut base = SessionConfig::new(Target::from_addr(addr));
    base.transport = transport;
    base.connect_timeout = Duration::from_secs(60);
    // Warm up: the runtime, the HTTP client and the allocator's arenas.
    let (warm, _) = Session::connect(base.clone())
        .await
        .expect("warm-up session");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = rss();

    let hellos = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(Semaphore::new(256));
    let mut connecting = tokio::task::JoinSet::new();
    for _ in 0..sessions {
        let (config, hellos, gate) = (base.clone(), hellos.clone(), gate.clone());
        connecting.spawn(async move {
            let _permit = gate.acquire_owned().await.expect("semaphore");
            Session::connect_with_handler(config, move |incoming| {
                if let Incoming::Event { event, .. } = incoming
                    && event == "hello"
                {
                    hellos.fetch_add(1, Ordering::Relaxed);
                }
            })
            .await
        });
    }
    let mut held = Vec::with_capacity(sessions);
    while let Some(done) = connecting.join_next().await {
        held.push(done.expect("task").expect("connect"));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while hellos.load(Ordering::Relaxed) < sessions {
        assert!(Instant::now() < deadline, "hellos missing");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(connecting);
    // Idle for a moment: pings come and go, buffers settle.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss();
    let per_session = (after.saturating_sub(before)) as f64 / sessions as f64;
    eprintln!(
        "{transport}: {sessions} idle sessions, RSS {:.1} MiB -> {:.1} MiB: {per_session:.0} bytes per session",
        before as f64 / 1048576.0,
        after as f64 / 1048576.0
    );
    futures_util::future::join_all(held.iter().map(Session::close)).await;
    warm.close().await;
    per_session
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run with --ignored --nocapture"]
async fn idle_session_memory() {
    let sessions = std::env::var("CLIENT_MEMORY_SESSIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5000);
    let (_node, addr) = start_node();
    let websocket = measure(addr, TransportMode::WebSocket, sessions).await;
    let polling = measure(addr, TransportMode::Polling, sessions / 2).await;
    assert!(
        websocket < 64.0 * 1024.0,
        "{websocket} bytes per WebSocket session"
    );
    assert!(
        polling < 128.0 * 1024.0,
        "{polling} bytes per polling session"
    );
}
