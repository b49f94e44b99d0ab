//! Memory per idle WebSocket session on a node, for several buffer settings.
//!
//! Starts `corral node --app bench` (this build) once per setting and round, opens N Socket.IO
//! sessions over WebSocket (connected to `/`, answering pings), lets them idle, and reads the
//! node's resident memory from its own `/metrics` before and after. Settings are measured in
//! interleaved rounds (A B C A B C …) and reported as medians and as ratios to the first setting
//! (socketioxide's defaults), so machine noise hits every setting alike.
//!
//! Run: `cargo bench --bench idle_memory -- [--sessions N] [--rounds R]`

#![allow(clippy::print_stdout)] // a report is this program's output

mod support;

use std::{net::SocketAddr, time::Duration};

use support::{Process, arg, median};

use futures_util::{SinkExt, StreamExt, stream};
use tokio::{sync::oneshot, task::JoinSet};
use tokio_tungstenite::{connect_async, tungstenite::Message};

struct Setting {
    name: &'static str,
    ws_read_buffer: usize,
    socket_buffer: usize,
}

const SETTINGS: &[Setting] = &[
    Setting {
        name: "socketioxide defaults (4096 B read buffer, 128 packets)",
        ws_read_buffer: 4096,
        socket_buffer: 128,
    },
    Setting {
        name: "Corral defaults (1024 B read buffer, 128 packets)",
        ws_read_buffer: 1024,
        socket_buffer: 128,
    },
    Setting {
        name: "4096 B read buffer, 32 packets",
        ws_read_buffer: 4096,
        socket_buffer: 32,
    },
    Setting {
        name: "1024 B read buffer, 32 packets",
        ws_read_buffer: 1024,
        socket_buffer: 32,
    },
    Setting {
        name: "16384 B read buffer, 128 packets",
        ws_read_buffer: 16384,
        socket_buffer: 128,
    },
];

fn start_node(setting: &Setting) -> Process {
    support::start_node(&[
        "--app",
        "bench",
        "--ws-read-buffer-size",
        &setting.ws_read_buffer.to_string(),
        "--max-buffer-size",
        &setting.socket_buffer.to_string(),
    ])
}

/// The node's resident memory in bytes, read from its own metrics.
async fn rss(addr: SocketAddr) -> u64 {
    support::metric(addr, "process_resident_memory_bytes").await as u64
}

/// Opens one Socket.IO session over WebSocket and keeps it idle until `stop` fires.
async fn idle_session(
    addr: SocketAddr,
    connected: oneshot::Sender<()>,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
    let (mut ws, _) = connect_async(url).await.expect("websocket handshake");
    ws.send(Message::text("40")).await.expect("send CONNECT");
    let mut connected = Some(connected);
    let mut stop = stop;
    loop {
        tokio::select! {
            msg = ws.next() => match msg {
                Some(Ok(Message::Text(text))) => {
                    if text.as_str() == "2" {
                        ws.send(Message::text("3")).await.ok();
                    } else if text.starts_with("40{")
                        && let Some(tx) = connected.take()
                    {
                        tx.send(()).ok();
                    }
                }
                Some(Ok(_)) => {}
                _ => return,
            },
            _ = stop.changed() => return,
        }
    }
}

async fn measure(setting: &Setting, sessions: usize) -> f64 {
    let node = start_node(setting);
    // Let the node settle (allocator arenas, runtime threads) before the baseline reading.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = rss(node.addr).await;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = JoinSet::new();
    let mut ready = Vec::with_capacity(sessions);
    for _ in 0..sessions {
        let (tx, rx) = oneshot::channel();
        ready.push(rx);
        tasks.spawn(idle_session(node.addr, tx, stop_rx.clone()));
    }
    // Wait for every CONNECT answer, a few at a time.
    stream::iter(ready)
        .for_each_concurrent(256, |rx| async move {
            rx.await.expect("session connected");
        })
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss(node.addr).await;
    stop_tx.send_replace(true);
    while tasks.join_next().await.is_some() {}
    (after.saturating_sub(before)) as f64 / sessions as f64
}

fn main() {
    let sessions = arg("--sessions", 5000);
    let rounds = arg("--rounds", 3);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let mut results: Vec<Vec<f64>> = vec![Vec::new(); SETTINGS.len()];
    for round in 0..rounds {
        for (i, setting) in SETTINGS.iter().enumerate() {
            let per_session = runtime.block_on(measure(setting, sessions));
            eprintln!(
                "round {round}: {:>8.0} B/session  {}",
                per_session, setting.name
            );
            results[i].push(per_session);
        }
    }
    let baseline = median(&mut results[0].clone());
    println!(
        "\nidle WebSocket session on a node: {sessions} sessions, {rounds} interleaved rounds, medians\n"
    );
    println!("| setting | bytes per session | ratio to socketioxide defaults |");
    println!("|---|---|---|");
    for (setting, values) in SETTINGS.iter().zip(results.iter_mut()) {
        let m = median(values);
        println!("| {} | {:.0} | {:.2} |", setting.name, m, m / baseline);
    }
}
