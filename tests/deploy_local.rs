//! `deploy/local`: the compose topology (NATS, three nodes, two gateways, the same settings)
//! brought up as processes, load-tested through both gateways, hit by a node failure mid-run
//! (the clients of the surviving nodes must lose nothing), and torn down.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
};

use corral_loadtest::report::Report;

/// The ports of the local cluster before `CORRAL_LOCAL_PORT_OFFSET`: gateways, nodes, NATS.
const BASE_PORTS: [u16; 9] = [3000, 3001, 3010, 3011, 4001, 4002, 4003, 4222, 8222];

/// An offset at which every port of the cluster is free now: from 20 000 up in steps of 100,
/// below the ephemeral range and away from a demo cluster on the default ports.
fn free_offset() -> u16 {
    (0..40u16)
        .map(|k| 20_000 + k * 100)
        .find(|offset| {
            BASE_PORTS
                .iter()
                .all(|port| std::net::TcpListener::bind(("127.0.0.1", port + offset)).is_ok())
        })
        .expect("no port offset with all the local cluster's ports free")
}

/// A running `deploy/local/cluster`, stopped when dropped.
struct LocalCluster {
    state: PathBuf,
    offset: u16,
}

impl LocalCluster {
    fn script() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/local/cluster")
    }

    /// The environment the script (and a fault command run by the load tester) needs.
    fn env(state: &Path, offset: u16) -> [(&'static str, String); 3] {
        [
            ("CORRAL_LOCAL_STATE", state.display().to_string()),
            ("CORRAL_LOCAL_PORT_OFFSET", offset.to_string()),
            ("CORRAL_BIN", env!("CARGO_BIN_EXE_corral").to_owned()),
        ]
    }

    fn run(state: &Path, offset: u16, args: &[&str]) -> Output {
        Command::new(Self::script())
            .args(args)
            .envs(Self::env(state, offset))
            .env_remove("CORRAL_LOG")
            .stdin(Stdio::null())
            .output()
            .expect("run deploy/local/cluster")
    }

    fn up() -> LocalCluster {
        let state = Path::new(env!("CARGO_TARGET_TMPDIR")).join("deploy-local");
        // A cluster a failed earlier run left behind (stopped by the pids in its state).
        Self::run(&state, 0, &["down"]);
        let _ = std::fs::remove_dir_all(&state);
        let offset = free_offset();
        let out = Self::run(&state, offset, &["up"]);
        let cluster = LocalCluster { state, offset };
        assert!(out.status.success(), "up failed:\n{}", text(&out.stderr));
        cluster
    }

    fn command(&self, args: &[&str]) -> Output {
        Self::run(&self.state, self.offset, args)
    }

    fn gateway_url(&self, n: u16) -> String {
        format!("http://127.0.0.1:{}", 3000 + (n - 1) * 10 + self.offset)
    }

    /// `corral loadtest chat` through both gateways on the nodes' bench namespace, the
    /// sessions spread over 30 source addresses (the gateways route by address), plus `extra`.
    fn loadtest(&self, name: &str, extra: &[&str]) -> (Output, Report) {
        let json = self.state.join(format!("{name}.json"));
        let out = Command::new(env!("CARGO_BIN_EXE_corral"))
            .args(["loadtest", "chat", "--url", &self.gateway_url(1), "--url"])
            .arg(self.gateway_url(2))
            .args(["--namespace", "/bench", "--sessions", "60", "--rooms", "6"])
            .args(["--message-rate", "4", "--source-ip", "127.0.0.2-127.0.0.31"])
            .args(["--transport-mix", "polling=1,upgrade=1,websocket=1"])
            .args(["--reconnect-delay", "200ms", "--quiet", "--json"])
            .arg(&json)
            .args(extra)
            .envs(Self::env(&self.state, self.offset))
            .stdin(Stdio::null())
            .output()
            .expect("run corral loadtest");
        let report = Report::read_json(&json)
            .unwrap_or_else(|e| panic!("{name}: no report ({e}):\n{}", text(&out.stderr)));
        (out, report)
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        self.command(&["down"]);
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn the_local_cluster_serves_through_both_gateways_and_survives_a_node_failure() {
    let cluster = LocalCluster::up();
    let status = text(&cluster.command(&["status"]).stdout);
    for name in [
        "nats",
        "node-1",
        "node-2",
        "node-3",
        "gateway-1",
        "gateway-2",
    ] {
        assert!(
            status
                .lines()
                .any(|l| l.starts_with(name) && l.ends_with("ready")),
            "{name} is not ready:\n{status}"
        );
    }

    // Healthy: every message reaches every member of its room, across all three nodes.
    let (out, r) = cluster.loadtest(
        "healthy",
        &["--duration", "3s", "--assert", "completeness>=100%"],
    );
    assert!(out.status.success(), "{}\n{}", r.table(), text(&out.stderr));
    assert!(r.warnings.is_empty(), "{}", r.table());
    let nodes: Vec<&str> = r.sessions.by_node.keys().map(String::as_str).collect();
    assert_eq!(nodes, ["node-1", "node-2", "node-3"], "{}", r.table());
    let d = r.deliveries.as_ref().expect("deliveries");
    assert!(d.expected > 0 && d.received == d.expected, "{}", r.table());

    // node-2 dies 3 s in: its clients come back on the others, nobody else loses a message.
    let kill = format!("{} kill node-2", LocalCluster::script().display());
    let (out, r) = cluster.loadtest(
        "node-killed",
        &[
            "--duration",
            "8s",
            "--at",
            "3s",
            "--run",
            &kill,
            "--assert",
            "steady_lost==0",
        ],
    );
    assert!(out.status.success(), "{}\n{}", r.table(), text(&out.stderr));
    let fault = r.faults.first().expect("the fault ran");
    assert_eq!(fault.exit_code, Some(0), "{}", r.table());
    assert!(
        fault.sessions_lost > 0,
        "node-2 had sessions\n{}",
        r.table()
    );
    assert_eq!(fault.sessions_rehomed, fault.sessions_lost, "{}", r.table());
    let d = r.deliveries.as_ref().expect("deliveries");
    assert_eq!(d.steady_sessions, 60 - fault.sessions_lost, "{}", r.table());
    assert_eq!(d.steady_lost, 0, "{}", r.table());
    assert_eq!(d.duplicates, 0, "{}", r.table());
    let expected_nodes: BTreeMap<String, u64> = r
        .sessions
        .by_node
        .iter()
        .filter(|(node, _)| node.as_str() != "node-2")
        .map(|(node, n)| (node.clone(), *n))
        .collect();
    assert_eq!(r.sessions.by_node, expected_nodes, "{}", r.table());
    assert_eq!(
        r.sessions.by_node.values().sum::<u64>(),
        60,
        "{}",
        r.table()
    );

    let out = cluster.command(&["down"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        !text(&out.stderr).contains("SIGKILL"),
        "every process stopped on SIGTERM:\n{}",
        text(&out.stderr)
    );
    let status = text(&cluster.command(&["status"]).stdout);
    assert_eq!(
        status.lines().filter(|l| l.ends_with("stopped")).count(),
        6,
        "{status}"
    );
}
