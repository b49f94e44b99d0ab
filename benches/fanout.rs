//! Cross-node room fan-out through NATS, against the same fan-out on one node.
//!
//! R receivers join one room (`--receivers`), a publisher on the first node sends M messages
//! (`--messages`, at most 32 unacknowledged) with the bench app's `publish`, and the run ends
//! when every receiver has every message. Two setups, measured in interleaved rounds:
//!
//! - **one node**: one `corral node --app bench` holds every receiver;
//! - **two nodes on NATS**: `nats-server` and two nodes, receivers split evenly, so half the
//!   deliveries cross the bus.
//!
//! Reported per setup (medians): deliveries per CPU-second of the servers (nodes plus
//! nats-server, from `/proc`), deliveries per second, and completeness (received / expected);
//! and the ratio of the cluster to the single node measured in the same run.
//!
//! Run: `cargo bench --bench fanout -- [--receivers R] [--messages M] [--rounds N]`

#![allow(clippy::print_stdout)] // a report is this program's output

mod support;

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use futures_util::{SinkExt, StreamExt};
use support::{Process, arg, median, start_nats, start_node};
use tokio::sync::{Semaphore, watch};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async, tungstenite::Message};

type Ws = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

const ROOM: &str = "fan";
const WINDOW: usize = 32;

/// Opens a Socket.IO session on `addr` and waits for the CONNECT answer.
async fn connect(addr: SocketAddr) -> Ws {
    let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
    let (mut ws, _) = connect_async(url).await.expect("websocket");
    ws.send(Message::text("40")).await.expect("send CONNECT");
    while let Some(Ok(msg)) = ws.next().await {
        if let Message::Text(text) = msg {
            if text.starts_with("40{") {
                return ws;
            }
            if text.as_str() == "2" {
                ws.send(Message::text("3")).await.ok();
            }
        }
    }
    panic!("no CONNECT answer");
}

/// A receiver: joins the room, then counts `message` events until told to stop.
async fn receiver(
    addr: SocketAddr,
    received: Arc<AtomicU64>,
    joined: tokio::sync::mpsc::Sender<()>,
    mut stop: watch::Receiver<bool>,
) {
    let mut ws = connect(addr).await;
    ws.send(Message::text(format!(r#"421["join","{ROOM}"]"#)))
        .await
        .expect("join");
    loop {
        tokio::select! {
            msg = ws.next() => match msg {
                Some(Ok(Message::Text(text))) => {
                    if text.starts_with("42[\"message\"") {
                        received.fetch_add(1, Ordering::Relaxed);
                    } else if text.starts_with("431") {
                        joined.send(()).await.ok();
                    } else if text.as_str() == "2" {
                        ws.send(Message::text("3")).await.ok();
                    }
                }
                Some(Ok(_)) => {}
                _ => return,
            },
            _ = stop.changed() => return,
        }
    }
}

/// Publishes `messages` messages on `addr`, at most [`WINDOW`] unacknowledged.
async fn publish(addr: SocketAddr, messages: u64) {
    let ws = connect(addr).await;
    let (mut tx, mut rx) = ws.split();
    let window = Arc::new(Semaphore::new(WINDOW));
    let acks = {
        let window = window.clone();
        tokio::spawn(async move {
            let mut acked = 0;
            while acked < messages {
                match rx.next().await {
                    Some(Ok(Message::Text(text))) if text.starts_with("43") => {
                        acked += 1;
                        window.add_permits(1);
                    }
                    Some(Ok(_)) => {}
                    _ => panic!("publisher lost its connection"),
                }
            }
        })
    };
    for seq in 0..messages {
        window.acquire().await.expect("semaphore").forget();
        let packet =
            format!(r#"42{seq}["publish","{ROOM}",{{"seq":{seq},"pad":"0123456789abcdef"}}]"#);
        tx.send(Message::text(packet)).await.expect("publish");
    }
    acks.await.expect("acks");
}

struct Outcome {
    per_cpu_second: f64,
    per_second: f64,
    completeness: f64,
}

async fn run(nodes: &[Process], bus: Option<&Process>, receivers: usize, messages: u64) -> Outcome {
    let received = Arc::new(AtomicU64::new(0));
    let (stop_tx, stop) = watch::channel(false);
    let (joined_tx, mut joined) = tokio::sync::mpsc::channel(receivers);
    let mut tasks = Vec::new();
    for i in 0..receivers {
        let addr = nodes[i % nodes.len()].addr;
        tasks.push(tokio::spawn(receiver(
            addr,
            received.clone(),
            joined_tx.clone(),
            stop.clone(),
        )));
    }
    for _ in 0..receivers {
        joined.recv().await.expect("receiver joined");
    }
    // Room membership must have reached every node before the first publish.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let cpu = |nodes: &[Process]| -> Duration {
        nodes.iter().map(Process::cpu).sum::<Duration>() + bus.map_or(Duration::ZERO, Process::cpu)
    };
    let cpu_before = cpu(nodes);
    let started = Instant::now();
    publish(nodes[0].addr, messages).await;
    let expected = messages * receivers as u64;
    let deadline = Instant::now() + Duration::from_secs(60);
    while received.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = started.elapsed();
    let cpu_used = cpu(nodes).saturating_sub(cpu_before);
    stop_tx.send_replace(true);
    for task in tasks {
        task.await.ok();
    }
    let delivered = received.load(Ordering::Relaxed) as f64;
    if delivered < expected as f64 {
        // Say where messages went missing: each node's bus counters.
        for node in nodes {
            let text = support::metrics_text(node.addr).await;
            for line in text
                .lines()
                .filter(|l| l.starts_with("corral_adapter_") && !l.contains("heartbeat"))
            {
                eprintln!("  {}: {line}", node.addr);
            }
        }
    }
    Outcome {
        per_cpu_second: delivered / cpu_used.as_secs_f64().max(0.001),
        per_second: delivered / elapsed.as_secs_f64(),
        completeness: delivered / expected as f64,
    }
}

fn main() {
    let receivers = arg("--receivers", 200);
    let messages = arg("--messages", 2000) as u64;
    let rounds = arg("--rounds", 3);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let mut single = Vec::new();
    let mut cluster = Vec::new();
    for round in 0..rounds {
        let node = start_node(&["--app", "bench"]);
        let outcome = runtime.block_on(run(std::slice::from_ref(&node), None, receivers, messages));
        eprintln!(
            "round {round}: one node        {:>10.0} deliveries/CPU-s {:>10.0}/s completeness {:.4}",
            outcome.per_cpu_second, outcome.per_second, outcome.completeness
        );
        single.push(outcome);
        drop(node);

        let nats = start_nats();
        let url = format!("nats://{}", nats.addr);
        let flags = [
            "--app",
            "bench",
            "--adapter",
            "nats",
            "--nats",
            &url,
            "--heartbeat-interval",
            "200ms",
            "--heartbeat-timeout",
            "1s",
        ];
        let nodes = [start_node(&flags), start_node(&flags)];
        // Let the nodes hear each other before the receivers join.
        std::thread::sleep(Duration::from_millis(500));
        let outcome = runtime.block_on(run(&nodes, Some(&nats), receivers, messages));
        eprintln!(
            "round {round}: two nodes, NATS {:>10.0} deliveries/CPU-s {:>10.0}/s completeness {:.4}",
            outcome.per_cpu_second, outcome.per_second, outcome.completeness
        );
        cluster.push(outcome);
    }
    let summary = |outcomes: &[Outcome]| {
        let pick = |f: fn(&Outcome) -> f64| median(&mut outcomes.iter().map(f).collect::<Vec<_>>());
        (
            pick(|o| o.per_cpu_second),
            pick(|o| o.per_second),
            pick(|o| o.completeness),
        )
    };
    let (s_cpu, s_rate, s_complete) = summary(&single);
    let (c_cpu, c_rate, c_complete) = summary(&cluster);
    println!(
        "\nroom fan-out: {receivers} receivers, {messages} messages, {rounds} interleaved rounds, medians\n"
    );
    println!("| setup | deliveries per CPU-second | deliveries per second | completeness |");
    println!("|---|---|---|---|");
    println!("| one node | {s_cpu:.0} | {s_rate:.0} | {s_complete:.4} |");
    println!("| two nodes on NATS | {c_cpu:.0} | {c_rate:.0} | {c_complete:.4} |");
    println!(
        "| ratio (two nodes / one node) | {:.2} | {:.2} | |",
        c_cpu / s_cpu,
        c_rate / s_rate
    );
}
