//! `corral loadtest` end to end: every scenario against a real `corral node --app bench` and
//! against the Node.js peer (`socket.io` from npm), a peer that drops messages on purpose (the
//! completeness check must fail), a node killed mid-run behind a gateway (the report must show
//! the sessions lost and re-homed), and the command line's own errors, scenario files and
//! comparisons. The reports are read back from `--json`.

mod common;
mod common_gateway;
mod common_nats;
mod common_protocol;

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::Duration,
};

use common::NodeProcess;
use common_gateway::GatewayProcess;
use common_nats::{NatsServer, start_node};
use corral_loadtest::report::Report;

/// A scratch directory for this test's files, emptied first.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("loadtest")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// Runs `corral loadtest <args> --quiet`.
fn corral_loadtest(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_corral"))
        .arg("loadtest")
        .args(args)
        .arg("--quiet")
        .stdin(Stdio::null())
        .output()
        .expect("run corral loadtest")
}

/// Runs a scenario with `--json` into `dir` and returns the exit status, the report and the
/// output; the run must have printed its table.
fn run_scenario(dir: &Path, name: &str, args: &[&str]) -> (Output, Report) {
    let json = dir.join(format!("{name}.json"));
    let mut all = args.to_vec();
    all.extend(["--json", json.to_str().expect("utf-8 path")]);
    let out = corral_loadtest(&all);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report = Report::read_json(&json).unwrap_or_else(|e| {
        panic!(
            "{name}: no report ({e}); stdout:\n{stdout}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(
        stdout.contains(&format!("corral loadtest: {}", report.scenario)),
        "{name}: the table is missing:\n{stdout}"
    );
    (out, report)
}

/// A report of a run that went through untroubled: exit 0, every session connected, no
/// failures, nothing dropped, no warnings.
fn assert_clean(name: &str, out: &Output, r: &Report) {
    let context = || {
        format!(
            "{name}: {}\nstderr:\n{}",
            r.table(),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    assert!(out.status.success(), "{}", context());
    assert_eq!(r.sessions.connected, r.sessions.target, "{}", context());
    assert!(r.sessions.failed.is_empty(), "{}", context());
    assert_eq!(r.sessions.dropped, 0, "{}", context());
    assert!(r.warnings.is_empty(), "{}", context());
    let connect = r.connect_ms.as_ref().expect("connect times");
    assert!(connect.count >= r.sessions.target, "{}", context());
}

/// Every delivery owed arrived, once, in order, and each has a latency sample.
fn assert_complete(name: &str, r: &Report, latency_samples: u64) {
    let d = r.deliveries.as_ref().expect("deliveries");
    assert!(d.published > 0, "{name}: nothing published\n{}", r.table());
    assert!(d.expected > 0, "{name}\n{}", r.table());
    assert_eq!(d.received, d.expected, "{name}\n{}", r.table());
    assert_eq!(d.completeness, 1.0, "{name}");
    assert_eq!((d.lost, d.duplicates, d.out_of_order), (0, 0, 0), "{name}");
    if r.scenario != "echo" {
        // No session was lost: every member is steady, and nothing is missing between them.
        assert_eq!(
            d.steady_sessions,
            r.sessions.target,
            "{name}\n{}",
            r.table()
        );
        assert_eq!(d.steady_lost, 0, "{name}");
    }
    let latency = r.latency_ms.as_ref().expect("latency");
    assert_eq!(latency.count, latency_samples, "{name}\n{}", r.table());
    assert!(latency.max < 10_000.0, "{name}: {latency:?}");
}

/// Runs every scenario briefly against `url` and checks each report.
fn every_scenario(dir: &Path, url: &str, server_pid: Option<u32>) {
    let pid = server_pid.map(|p| p.to_string());
    let mut connect = vec![
        "connect",
        "--url",
        url,
        "--sessions",
        "300",
        "--rate",
        "1000",
        "--duration",
        "1s",
        "--transport-mix",
        "polling=1,upgrade=1,websocket=1",
    ];
    if let Some(pid) = &pid {
        connect.extend(["--server-pid", pid]);
    }
    let (out, r) = run_scenario(dir, "connect", &connect);
    assert_clean("connect", &out, &r);
    assert_eq!(r.scenario, "connect");
    assert_eq!(r.settings["sessions"], 300);
    assert_eq!(r.sessions.by_transport["polling"], 100, "{}", r.table());
    assert_eq!(r.sessions.by_transport["websocket"], 200, "{}", r.table());
    assert!(r.latency_ms.is_none() && r.deliveries.is_none());
    // Every session was greeted by the one server.
    assert_eq!(
        r.sessions.by_node.values().sum::<u64>(),
        300,
        "{}",
        r.table()
    );
    assert_eq!(r.sessions.by_node.len(), 1, "{}", r.table());
    if let Some(pid) = server_pid {
        let memory = r.server_memory.as_ref().expect("server memory");
        assert_eq!(memory.pid, pid);
        assert!(memory.rss_before > 1 << 20, "{memory:?}");
        assert!(memory.per_session > 0.0, "{memory:?}");
    }
    assert!(r.tester.cores >= 1);

    let (out, r) = run_scenario(
        dir,
        "chat",
        &[
            "chat",
            "--url",
            url,
            "--sessions",
            "60",
            "--rooms",
            "6",
            "--duration",
            "2s",
            "--message-rate",
            "5",
            "--payload-size",
            "100",
            "--transport-mix",
            "polling=1,upgrade=1,websocket=1",
            "--assert",
            "completeness>=100%,lost==0,p99<5s",
        ],
    );
    assert_clean("chat", &out, &r);
    let d = r.deliveries.as_ref().expect("deliveries");
    // 60 members × 5 msg/s × 2 s, each message owed to its room of 10.
    assert!((540..=660).contains(&d.published), "{}", r.table());
    assert_eq!(d.expected, d.published * 10, "{}", r.table());
    assert_complete("chat", &r, d.expected);
    assert!(!r.timeline.is_empty());

    let (out, r) = run_scenario(
        dir,
        "broadcast",
        &[
            "broadcast",
            "--url",
            url,
            "--sessions",
            "40",
            "--duration",
            "2s",
        ],
    );
    assert_clean("broadcast", &out, &r);
    let d = r.deliveries.as_ref().expect("deliveries");
    assert_eq!(d.expected, d.published * 40, "{}", r.table());
    // One sample per message: the arrival at the last member.
    assert_complete("broadcast", &r, d.published);

    let (out, r) = run_scenario(
        dir,
        "echo",
        &[
            "echo",
            "--url",
            url,
            "--sessions",
            "5",
            "--duration",
            "2s",
            "--message-rate",
            "20",
        ],
    );
    assert_clean("echo", &out, &r);
    let d = r.deliveries.as_ref().expect("deliveries");
    assert_eq!(d.expected, d.published, "{}", r.table());
    assert_complete("echo", &r, d.published);

    let (out, r) = run_scenario(
        dir,
        "storm",
        &[
            "reconnect-storm",
            "--url",
            url,
            "--sessions",
            "150",
            "--transport-mix",
            "polling=1,websocket=2",
        ],
    );
    assert!(out.status.success(), "{}", r.table());
    assert!(r.warnings.is_empty(), "{}", r.table());
    // Every session dropped at once and came back; one sample each.
    assert_eq!(
        (r.sessions.dropped, r.sessions.reconnected),
        (150, 150),
        "{}",
        r.table()
    );
    assert_eq!(r.latency_ms.as_ref().expect("latency").count, 150);
    assert!(r.sessions.failed.is_empty(), "{}", r.table());
}

#[test]
fn every_scenario_against_a_bench_node() {
    let node = NodeProcess::start(&["--app", "bench"]);
    let dir = scratch("bench");
    every_scenario(&dir, &node.url(""), Some(node.pid()));
}

/// `--bench-namespace`: a node running the chat app measured through the bench protocol on
/// its own namespace; the chat app keeps the main one.
#[test]
fn the_bench_protocol_beside_the_chat_app() {
    let node = NodeProcess::start(&["--app", "chat", "--bench-namespace", "/bench"]);
    let dir = scratch("bench-ns");
    let (out, r) = run_scenario(
        &dir,
        "chat-ns",
        &[
            "chat",
            "--url",
            &node.url(""),
            "--namespace",
            "/bench",
            "--sessions",
            "20",
            "--duration",
            "1s",
            "--message-rate",
            "5",
        ],
    );
    assert_clean("chat", &out, &r);
    let d = r.deliveries.as_ref().expect("deliveries");
    assert_complete("chat", &r, d.expected);
    // On the main namespace the chat app still answers, and refuses the bench protocol's
    // `join`; a run that delivered nothing fails `completeness>=100%`.
    let (out, r) = run_scenario(
        &dir,
        "chat-main",
        &[
            "chat",
            "--url",
            &node.url(""),
            "--sessions",
            "2",
            "--duration",
            "1s",
            "--connect-timeout",
            "1s",
            "--assert",
            "completeness>=100%",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", r.table());
    assert!(
        r.sessions.failed.contains_key("join_refused"),
        "{}",
        r.table()
    );
    assert_eq!(r.deliveries.as_ref().expect("deliveries").completeness, 0.0);
}

/// `node loadtest/peers/node-socketio/server.mjs` on a free port, killed when dropped.
struct Peer {
    child: Child,
    url: String,
}

impl Peer {
    fn start(drop_every: u32) -> Peer {
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("loadtest/peers/node-socketio/server.mjs");
        let mut child = Command::new("node")
            .arg(&script)
            .env("PORT", "0")
            .env("HOST", "127.0.0.1")
            .env("DROP_EVERY", drop_every.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("run node (./scripts/setup --test installs the peer's packages)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped"))
            .read_line(&mut line)
            .expect("the peer's first line");
        let started: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| {
            panic!("the peer did not start ({e}): {line:?}; run ./scripts/setup --test")
        });
        let url = format!("http://{}", started["listen"].as_str().expect("listen"));
        Peer { child, url }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn every_scenario_against_the_node_js_peer() {
    let peer = Peer::start(0);
    let dir = scratch("peer");
    every_scenario(&dir, &peer.url, Some(peer.child.id()));
}

/// A server that acks every publish but skips every 10th delivery: the completeness check must
/// see it and `--assert` must fail the run.
#[test]
fn a_server_that_drops_messages_fails_the_completeness_check() {
    let peer = Peer::start(10);
    let dir = scratch("dropping");
    let (out, r) = run_scenario(
        &dir,
        "chat",
        &[
            "chat",
            "--url",
            &peer.url,
            "--sessions",
            "40",
            "--rooms",
            "4",
            "--duration",
            "2s",
            "--message-rate",
            "5",
            "--settle",
            "1s",
            "--assert",
            "completeness>=100%",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", r.table());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("completeness"), "{stderr}");
    let d = r.deliveries.as_ref().expect("deliveries");
    assert_eq!(d.lost, d.expected - d.received);
    // One in ten lost (the peer counts deliveries across the whole process).
    let lost_share = d.lost as f64 / d.expected as f64;
    assert!(
        (0.09..=0.11).contains(&lost_share),
        "{lost_share}\n{}",
        r.table()
    );
    assert!(d.completeness < 0.92, "{}", r.table());
    // Nobody lost a connection, so every loss is between steady sessions.
    assert_eq!(d.steady_lost, d.lost, "{}", r.table());
}

/// Two bench nodes sharing rooms through NATS behind a gateway; the tester kills one node with
/// `--at … --run 'kill -9 PID'`. Its sessions are lost, come back through the gateway on the
/// other node, and the report says how many, how fast, and that the run recovered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_node_mid_run_shows_the_sessions_lost_and_rehomed() {
    let nats = NatsServer::start();
    let n1 = start_node(&nats, "lt-n1", "bench", &[]);
    let n2 = start_node(&nats, "lt-n2", "bench", &[]);
    common_nats::wait_members(&[&n1, &n2], &["lt-n1", "lt-n2"], Duration::from_secs(20)).await;
    let gateway = GatewayProcess::start(
        &[("lt-n1", n1.addr), ("lt-n2", n2.addr)],
        &["--health-interval", "200ms"],
    );
    gateway.wait_ready_nodes(2).await;
    let url = format!("http://{}", gateway.addr);
    let kill = format!("kill -9 {}", n2.pid());
    let dir = scratch("fault");
    let json = dir.join("fault.json");
    let out = tokio::task::spawn_blocking({
        let (url, kill, json) = (url.clone(), kill.clone(), json.clone());
        move || {
            corral_loadtest(&[
                "chat",
                "--url",
                &url,
                "--sessions",
                "40",
                "--rooms",
                "4",
                "--duration",
                "6s",
                "--message-rate",
                "5",
                "--reconnect-delay",
                "200ms",
                "--transport-mix",
                "polling=1,websocket=1",
                "--source-ip",
                "127.0.0.2-127.0.0.21",
                "--at",
                "3s",
                "--run",
                &kill,
                "--json",
                json.to_str().expect("utf-8"),
            ])
        }
    })
    .await
    .expect("loadtest thread");
    let r = Report::read_json(&json)
        .unwrap_or_else(|e| panic!("no report ({e}): {}", String::from_utf8_lossy(&out.stderr)));
    assert!(
        out.status.success(),
        "{}\n{}",
        r.table(),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(r.faults.len(), 1, "{}", r.table());
    let fault = &r.faults[0];
    assert_eq!(fault.command, kill);
    assert_eq!(fault.exit_code, Some(0));
    assert!((2.5..4.5).contains(&fault.at_s), "{fault:?}");
    // The gateway spreads sessions over both nodes: some were on the one killed.
    assert!(fault.sessions_lost > 0, "{}", r.table());
    assert!(fault.sessions_lost < 40, "{}", r.table());
    assert_eq!(fault.sessions_rehomed, fault.sessions_lost, "{}", r.table());
    let recovery = fault.recovery_s.expect("a recovery time");
    assert!(recovery > 0.0 && recovery < 6.0, "{fault:?}");
    assert!(r.sessions.dropped >= fault.sessions_lost);
    assert_eq!(r.sessions.reconnected, r.sessions.dropped, "{}", r.table());
    // The survivor serves every session at the end.
    assert_eq!(
        r.sessions.by_node,
        std::collections::BTreeMap::from([("lt-n1".to_owned(), 40)]),
        "{}",
        r.table()
    );
    // Everyone was back once the fault was over.
    let back = r
        .timeline
        .iter()
        .filter(|s| s.t_s > fault.at_s + recovery + 1.0)
        .map(|s| s.sessions)
        .max();
    assert_eq!(back, Some(40), "{:?}", r.timeline);
    let d = r.deliveries.as_ref().expect("deliveries");
    assert_eq!(
        d.lost,
        fault.messages_lost,
        "every loss is charged to the fault\n{}",
        r.table()
    );
    assert_eq!(d.duplicates, 0);
    // The clients of the surviving node lost nothing.
    assert_eq!(d.steady_sessions, 40 - fault.sessions_lost, "{}", r.table());
    assert_eq!(d.steady_lost, 0, "{}", r.table());
}

#[test]
fn bad_arguments_exit_2_with_the_reason() {
    let cases: [(&[&str], &str); 5] = [
        (&["chat", "--rooms", "0"], "--rooms"),
        (&["chat", "--url", "ftp://x"], "--url"),
        (&["chat", "--at", "1s"], "--run"),
        (&["chat", "--assert", "p99<<1"], "--assert"),
        (&["run", "/nonexistent/scenario.toml"], "cannot read"),
    ];
    for (args, want) in cases {
        let out = corral_loadtest(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(want), "{args:?}: {stderr}");
    }
    // Nobody listening: the run ends with a report and exit status 1.
    let port = common_nats::free_port();
    let out = corral_loadtest(&[
        "connect",
        "--url",
        &format!("http://127.0.0.1:{port}"),
        "--sessions",
        "3",
        "--duration",
        "1s",
        "--connect-timeout",
        "1s",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("refused"), "{stdout}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("no session could connect"));
}

#[test]
fn a_scenario_file_under_flags_and_a_comparison() {
    let node = NodeProcess::start(&["--app", "bench"]);
    let dir = scratch("file");
    let file = dir.join("echo.toml");
    std::fs::write(
        &file,
        format!(
            "scenario = \"echo\"\nurl = \"{}\"\nsessions = 3\nduration = \"1s\"\nmessage-rate = 10\n",
            node.url("")
        ),
    )
    .expect("write scenario");
    let file = file.to_str().expect("utf-8");
    let (out, a) = run_scenario(&dir, "a", &["run", file]);
    assert_clean("file", &out, &a);
    assert_eq!((a.scenario.as_str(), a.sessions.target), ("echo", 3));
    let (out, b) = run_scenario(&dir, "b", &["run", file, "--sessions", "6"]);
    assert_clean("file with flags", &out, &b);
    assert_eq!(b.sessions.target, 6);

    let out = Command::new(env!("CARGO_BIN_EXE_corral"))
        .args(["loadtest", "compare"])
        .arg(dir.join("a.json"))
        .arg(dir.join("b.json"))
        .output()
        .expect("run compare");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("sessions.target"))
        .unwrap_or_else(|| panic!("no sessions.target line:\n{text}"));
    assert!(line.contains("2.00"), "B/A of 6 and 3: {line}");
    assert!(text.contains("settings that differ"), "{text}");
}
