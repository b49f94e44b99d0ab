//! Bad input from the network: it gets a clear refusal, closes at most the offending session,
//! and never takes the node down.

mod common;

use std::time::Duration;

use common::{NodeProcess, PollingSession, assert_healthy, get, raw};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::{connect_async, tungstenite::Message};

/// A bench node and a healthy session on it, to prove bad input elsewhere leaves it alone.
async fn node_with_bystander(extra: &[&str]) -> (NodeProcess, PollingSession) {
    let mut args = vec!["--app", "bench"];
    args.extend_from_slice(extra);
    let node = NodeProcess::start(&args);
    let bystander = PollingSession::open(node.addr, "/socket.io").await;
    bystander.connect_main().await;
    (node, bystander)
}

/// The bystander still gets its echo acknowledged.
async fn assert_bystander_works(bystander: &PollingSession) {
    assert_eq!(
        bystander.send(br#"4277["echo","still here"]"#).await.status,
        200
    );
    let ack = bystander.recv_until(|p| p.starts_with("4377")).await;
    assert_eq!(ack, r#"4377["still here"]"#);
}

#[tokio::test]
async fn malformed_engineio_packet_closes_only_that_session() {
    let (mut node, bystander) = node_with_bystander(&[]).await;
    let victim = PollingSession::open(node.addr, "/socket.io").await;
    victim.connect_main().await;

    let res = victim.send(b"9not-a-packet-type").await;
    assert_eq!(res.status, 400);
    assert!(
        victim.is_closed().await,
        "a session that sent garbage must be closed"
    );

    assert_bystander_works(&bystander).await;
    assert_healthy(&mut node).await;
}

#[tokio::test]
async fn malformed_socketio_packet_closes_only_that_session() {
    let (mut node, bystander) = node_with_bystander(&[]).await;
    for garbage in [
        &b"42garbage["[..],
        b"4/unknown-format",
        b"4\xff\xfe",
        b"47[\"x\"]",
    ] {
        let victim = PollingSession::open(node.addr, "/socket.io").await;
        victim.connect_main().await;
        let status = victim.send(garbage).await.status;
        assert!(status == 200 || status == 400, "unexpected status {status}");
        // The parse error closes the session as soon as the node reads the packet.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !victim.is_closed().await {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{garbage:?} did not close the session"
            );
        }
    }
    assert_bystander_works(&bystander).await;
    assert_healthy(&mut node).await;
}

#[tokio::test]
async fn oversized_post_is_refused_with_413_and_a_reason() {
    let (mut node, bystander) = node_with_bystander(&["--max-payload", "10000"]).await;
    let victim = PollingSession::open(node.addr, "/socket.io").await;
    let mut big = b"4".to_vec();
    big.resize(50_000, b'x');
    let res = victim.send(&big).await;
    assert_eq!(res.status, 413);
    assert!(res.text().contains("at most 10000 bytes"), "{}", res.text());

    assert_bystander_works(&bystander).await;
    assert_healthy(&mut node).await;
    let metrics = get(node.addr, "/metrics").await.text();
    assert!(
        metrics.contains(
            r#"corral_node_session_requests_rejected_total{reason="payload_too_large"} 1"#
        )
    );
}

#[tokio::test]
async fn oversized_websocket_message_closes_that_socket() {
    let (mut node, bystander) = node_with_bystander(&["--max-payload", "10000"]).await;
    let (mut ws, _) = connect_async(node.ws_url("/socket.io/?EIO=4&transport=websocket"))
        .await
        .expect("websocket handshake");
    ws.send(Message::text("40")).await.expect("send connect");
    ws.send(Message::text(format!("4{}", "x".repeat(50_000))))
        .await
        .ok();
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(msg) = ws.next().await {
            match msg {
                Ok(Message::Close(_)) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "the node kept a socket that sent an oversized message"
    );

    assert_bystander_works(&bystander).await;
    assert_healthy(&mut node).await;
}

#[tokio::test]
async fn garbage_http_and_bad_queries_get_clear_refusals() {
    let (mut node, bystander) = node_with_bystander(&[]).await;

    // Not HTTP at all.
    let res = raw(
        node.addr,
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n",
    )
    .await;
    assert_eq!(res.status, 400);
    // Headers far beyond any sane size.
    let huge = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(1 << 20)
    );
    let res = raw(node.addr, huge.as_bytes()).await;
    assert_eq!(res.status, 431);
    // Engine.IO queries that cannot name a session.
    for query in [
        "/socket.io/?EIO=4&transport=polling&sid=%ZZ",
        "/socket.io/?EIO=4&transport=polling&sid=",
        "/socket.io/?EIO=4&transport=polling&sid=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        "/socket.io/?EIO=99&transport=polling",
        "/socket.io/?EIO=4&transport=carrier-pigeon",
        "/socket.io/",
    ] {
        let res = get(node.addr, query).await;
        assert_eq!(res.status, 400, "{query}: {}", res.text());
        assert!(res.json()["message"].is_string(), "{query}: {}", res.text());
    }

    assert_bystander_works(&bystander).await;
    assert_healthy(&mut node).await;
}

/// A small deterministic generator, so a failure replays exactly.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn pick<'a>(&mut self, items: &[&'a [u8]]) -> &'a [u8] {
        items[(self.next() % items.len() as u64) as usize]
    }
}

#[tokio::test]
async fn random_packets_never_take_the_node_down() {
    let (mut node, bystander) = node_with_bystander(&[]).await;
    let pieces: &[&[u8]] = &[
        b"4",
        b"2",
        b"3",
        b"5",
        b"6",
        b"40",
        b"41",
        b"42",
        b"43",
        b"45",
        b"451-",
        b"b",
        b"[",
        b"]",
        b"{",
        b"}",
        b"\"",
        b",",
        b"\x1e",
        b"\xff",
        b"\x00",
        b"/custom,",
        b"99999999999999999999",
        b"[\"echo\"",
        b"{\"_placeholder\":true,\"num\":0}",
        b"null",
        b"-1",
        b"\"publish\"",
    ];
    let mut rng = XorShift(0x5eed_c0ff_ee15_900d);
    let (mut ws, _) = connect_async(node.ws_url("/socket.io/?EIO=4&transport=websocket"))
        .await
        .expect("websocket handshake");
    for round in 0..300 {
        let mut packet = Vec::new();
        for _ in 0..(1 + rng.next() % 8) {
            packet.extend_from_slice(rng.pick(pieces));
        }
        if round % 2 == 0 {
            // Over polling, on a fresh session each time (garbage closes sessions).
            let session = PollingSession::open(node.addr, "/socket.io").await;
            let status = session.send(&packet).await.status;
            assert!(
                matches!(status, 200 | 400),
                "status {status} for {packet:?}"
            );
        } else {
            let message = match String::from_utf8(packet.clone()) {
                Ok(text) => Message::text(text),
                Err(_) => Message::binary(packet),
            };
            if ws.send(message).await.is_err() {
                // Closed by the node for bad input: open another one.
                ws = connect_async(node.ws_url("/socket.io/?EIO=4&transport=websocket"))
                    .await
                    .expect("websocket handshake")
                    .0;
            }
        }
    }
    assert_bystander_works(&bystander).await;
    assert_healthy(&mut node).await;
}

#[tokio::test]
async fn a_socket_id_cannot_take_over_its_session() {
    let (mut node, victim) = node_with_bystander(&[]).await;
    // What another client could learn from an app that shows socket ids: the CONNECT answer's sid.
    let other_ns = PollingSession::open(node.addr, "/socket.io").await;
    assert_eq!(other_ns.send(b"40").await.status, 200);
    let connect = other_ns.recv_until(|p| p.starts_with("40{")).await;
    let socket_id = serde_json::from_str::<serde_json::Value>(&connect[2..]).unwrap()["sid"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(
        socket_id, other_ns.sid,
        "the client's session credential is not its socket id"
    );

    let as_attacker = format!("/socket.io/?EIO=4&transport=polling&sid={socket_id}");
    let stolen_poll = get(node.addr, &as_attacker).await;
    assert_eq!(stolen_poll.status, 400);
    assert_eq!(
        stolen_poll.json(),
        serde_json::json!({"code": 1, "message": "Session ID unknown"})
    );
    let forged_post = common::post(node.addr, &as_attacker, br#"42["publish","r",1]"#).await;
    assert_eq!(forged_post.status, 400);
    let upgrade = connect_async(node.ws_url(&format!(
        "/socket.io/?EIO=4&transport=websocket&sid={socket_id}"
    )))
    .await;
    assert!(
        upgrade.is_err(),
        "a WebSocket upgrade with a socket id must be refused"
    );

    // The real owner is untouched: nothing was stolen from its queue.
    assert_eq!(other_ns.send(br#"429["echo","mine"]"#).await.status, 200);
    assert_eq!(
        other_ns.recv_until(|p| p.starts_with("439")).await,
        r#"439["mine"]"#
    );
    assert_bystander_works(&victim).await;
    assert_healthy(&mut node).await;
}
