//! Graceful drain on SIGTERM: readiness flips at once, new sessions are refused, connected
//! clients are closed at the transport level (so socket.io-client reconnects), and the process
//! exits within the drain timeout whatever its connections do.

mod common;

use std::time::{Duration, Instant};

use common::{NodeProcess, get};
use futures_util::{SinkExt, StreamExt};
use tokio::{io::AsyncWriteExt, net::TcpStream};
use tokio_tungstenite::{connect_async, tungstenite::Message};

#[tokio::test]
async fn sigterm_flips_readiness_refuses_new_sessions_and_hands_clients_off() {
    let mut node = NodeProcess::start(&[
        "--app",
        "bench",
        "--drain-grace",
        "1500ms",
        "--drain-timeout",
        "10s",
    ]);
    let (mut ws, _) = connect_async(node.ws_url("/socket.io/?EIO=4&transport=websocket"))
        .await
        .expect("websocket handshake");
    ws.send(Message::text("40")).await.unwrap();
    let mut seen = Vec::new();
    while !seen.iter().any(|m: &String| m.starts_with("42[\"hello\"")) {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => seen.push(text.to_string()),
            other => panic!("unexpected {other:?}"),
        }
    }

    let signalled = Instant::now();
    node.terminate();
    // Readiness turns at once; the grace keeps the node (and this client) up meanwhile.
    let ready = loop {
        let res = get(node.addr, "/readyz").await;
        if res.status == 503 {
            break res;
        }
        assert!(
            signalled.elapsed() < Duration::from_secs(1),
            "readyz still 200 after 1 s"
        );
    };
    assert_eq!(ready.json()["reason"], "draining");
    let refused = get(node.addr, "/socket.io/?EIO=4&transport=polling").await;
    assert_eq!(refused.status, 503);
    assert!(refused.text().contains("draining"), "{}", refused.text());
    let metrics = get(node.addr, "/metrics").await.text();
    assert!(metrics.contains("corral_node_draining 1"), "{metrics}");
    assert!(metrics.contains(r#"corral_node_handshakes_rejected_total{reason="draining"} 1"#));

    // The connected client keeps working during the grace period...
    ws.send(Message::text(r#"425["echo",1]"#)).await.unwrap();
    // ...and is then closed at the transport level: an Engine.IO close packet or a WebSocket
    // close, never a Socket.IO DISCONNECT (which would stop socket.io-client from reconnecting).
    let mut after_signal = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(8), async {
        while let Some(msg) = ws.next().await {
            match msg {
                Ok(Message::Text(text)) => {
                    if text.as_str() == "2" {
                        ws.send(Message::text("3")).await.ok();
                    }
                    after_signal.push(text.to_string());
                }
                Ok(Message::Close(_)) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "client was not closed during the drain");
    assert!(
        after_signal.iter().any(|m| m == "435[1]"),
        "echo during grace: {after_signal:?}"
    );
    assert!(
        !after_signal.iter().any(|m| m.starts_with("41")),
        "the node sent a Socket.IO disconnect: {after_signal:?}"
    );
    assert!(
        signalled.elapsed() >= Duration::from_millis(1400),
        "closed before the grace ended"
    );

    let status = node
        .wait_exit(Duration::from_secs(10))
        .expect("node exits after the drain");
    assert!(status.success(), "drain exit status {status:?}");
    assert!(
        node.logs()
            .iter()
            .any(|l| l.contains("all clients handed off"))
    );
}

#[tokio::test]
async fn drain_timeout_bounds_the_exit_even_with_a_stuck_connection() {
    let mut node = NodeProcess::start(&["--app", "bench", "--drain-timeout", "2s"]);
    // A client that sends half a request and then nothing: the connection stays open.
    let mut stuck = TcpStream::connect(node.addr).await.unwrap();
    stuck
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();

    let signalled = Instant::now();
    node.terminate();
    let status = node.wait_exit(Duration::from_secs(6)).expect("node exits");
    let took = signalled.elapsed();
    assert!(status.success(), "exit status {status:?}");
    assert!(
        took < Duration::from_secs(4),
        "exit took {took:?} with a 2 s drain timeout"
    );
    drop(stuck);
}

#[tokio::test]
async fn idle_node_stops_promptly() {
    let mut node = NodeProcess::start(&["--app", "chat"]);
    let signalled = Instant::now();
    node.terminate();
    let status = node.wait_exit(Duration::from_secs(5)).expect("node exits");
    assert!(status.success());
    assert!(
        signalled.elapsed() < Duration::from_secs(2),
        "idle drain took {:?}",
        signalled.elapsed()
    );
}
