//! `corral node --app conformance` as the reference server of the Engine.IO v4 protocol test
//! suite (`socketio/engine.io-protocol`, `test-suite/`): the raw echo endpoint at `/engine.io/`,
//! spoken to over HTTP long-polling and WebSocket with the wire format of the protocol.
//!
//! Every test starts its own node and is bounded in time; where the behaviour is an event
//! (a packet, a close) the test waits for that event with a timeout instead of sleeping.

mod common;
mod common_protocol;

use std::time::Duration;

use common::{get, http};
use common_protocol::{
    Frame, HEARTBEAT_CLOSE_BOUND, MAX_PAYLOAD, PING_INTERVAL_MS, PING_TIMEOUT_MS, Polling, Server,
    Ws, assert_sid_unknown, bounded, cases, engine_path, error_code, expect_refused,
    expect_ws_refused, start_node, tolerant_request,
};

const BASE: &str = "/engine.io";

// Polling tests that check a payload byte for byte start with `Polling::heartbeat_round`: a ping
// may legally come at any time and would otherwise share the payload. When the first ping comes
// is checked on its own (`*_first_ping_comes_one_ping_interval_after_the_handshake`).
//
// The cases the Socket.IO suite also runs below `/socket.io` are written once, in
// `common_protocol::cases`, and called here with the base path `/engine.io`.

fn ws_url(node: &Server, query: &str) -> String {
    node.ws_url(&engine_path(BASE, query))
}

// ---------------------------------------------------------------------------------------------
// Handshake
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn polling_handshake_sends_an_open_packet_with_the_reference_settings() {
    bounded(cases::polling_handshake_sends_an_open_packet_with_the_reference_settings(BASE)).await;
}

#[tokio::test]
async fn polling_handshake_gives_each_session_its_own_sid() {
    bounded(async {
        let node = start_node();
        let a = Polling::open(node.addr, BASE).await;
        let b = Polling::open(node.addr, BASE).await;
        assert_ne!(a.sid, b.sid);
    })
    .await;
}

#[tokio::test]
async fn polling_handshake_without_a_valid_eio_is_refused_with_400() {
    bounded(async {
        let node = start_node();
        for query in [
            "transport=polling",
            "EIO=abc&transport=polling",
            "EIO=&transport=polling",
        ] {
            let what = format!("?{query}");
            let res = expect_refused(node.addr, "GET", &engine_path(BASE, query), 5, &what).await;
            assert_eq!(
                res.json()["message"],
                "Unsupported protocol version",
                "{what}"
            );
        }
    })
    .await;
}

#[tokio::test]
async fn polling_handshake_without_a_valid_transport_is_refused_with_400() {
    bounded(async {
        let node = start_node();
        for query in ["EIO=4", "EIO=4&transport=abc", "EIO=4&transport="] {
            let what = format!("?{query}");
            let res = expect_refused(node.addr, "GET", &engine_path(BASE, query), 0, &what).await;
            assert_eq!(res.json()["message"], "Transport unknown", "{what}");
        }
    })
    .await;
}

#[tokio::test]
async fn polling_handshake_with_post_or_put_is_refused_with_400() {
    bounded(async {
        let node = start_node();
        let path = engine_path(BASE, "EIO=4&transport=polling");
        for method in ["POST", "PUT"] {
            let res = expect_refused(node.addr, method, &path, 2, method).await;
            assert_eq!(res.json()["message"], "Bad handshake method", "{method}");
        }
    })
    .await;
}

#[tokio::test]
async fn polling_request_with_an_unknown_sid_is_refused_with_400() {
    bounded(async {
        let node = start_node();
        let path = engine_path(BASE, "EIO=4&transport=polling&sid=unknown-sid");
        let res = get(node.addr, &path).await;
        assert_eq!(res.status, 400, "{}", res.text());
        assert_eq!(
            res.json(),
            serde_json::json!({"code": 1, "message": "Session ID unknown"})
        );
        let res = http(node.addr, "POST", &path, &[], b"4hello").await;
        assert_eq!(res.status, 400, "{}", res.text());
        assert_eq!(error_code(&res), 1, "{}", res.text());
    })
    .await;
}

#[tokio::test]
async fn websocket_handshake_sends_an_open_packet_without_upgrades() {
    bounded(cases::websocket_handshake_sends_an_open_packet_without_upgrades(BASE)).await;
}

#[tokio::test]
async fn websocket_handshake_without_a_valid_eio_or_transport_is_refused() {
    bounded(cases::websocket_handshake_without_a_valid_eio_or_transport_is_refused(BASE)).await;
}

// ---------------------------------------------------------------------------------------------
// Messages
// ---------------------------------------------------------------------------------------------

/// POSTs `payload` on a fresh polling session and checks that the next poll answers exactly
/// that payload.
async fn assert_polling_echo(payload: &str) {
    let node = start_node();
    let session = Polling::open(node.addr, BASE).await;
    session.heartbeat_round().await;
    session.post_ok(payload).await;
    let res = session.get().await;
    assert_eq!(res.status, 200);
    assert_eq!(res.text(), payload);
}

#[tokio::test]
async fn polling_echoes_a_text_packet() {
    bounded(assert_polling_echo("4hello")).await;
}

#[tokio::test]
async fn polling_echoes_several_text_packets_of_one_payload_in_one_payload() {
    bounded(assert_polling_echo("4test1\x1e4test2\x1e4test3")).await;
}

#[tokio::test]
async fn polling_echoes_text_and_base64_binary_packets() {
    // `bAQIDBA==` is the binary packet [1, 2, 3, 4].
    bounded(assert_polling_echo("4hello\x1ebAQIDBA==")).await;
}

#[tokio::test]
async fn polling_invalid_packet_closes_the_session() {
    bounded(async {
        let node = start_node();
        let session = Polling::open(node.addr, BASE).await;
        // The suite accepts any answer to the POST itself (400, an aborted request, or the
        // reference JavaScript server's 200 `ok`): what matters is that the session is gone.
        tolerant_request(node.addr, "POST", &session.path(), &[], b"abc").await;
        assert_sid_unknown(node.addr, BASE, &session.sid).await;
    })
    .await;
}

#[tokio::test]
async fn polling_concurrent_polls_close_the_session() {
    bounded(async {
        let node = start_node();
        let session = Polling::open(node.addr, BASE).await;
        session.heartbeat_round().await;
        // Two polls at once: whichever the server takes second is refused (the reference says
        // 400, Node's implementation 500) and the session closes, ending the first with a close
        // packet. Both are sent together, so which one is first is up to the server.
        let (a, b) = tokio::join!(session.get(), session.get());
        let (first, second) = if a.status == 200 { (a, b) } else { (b, a) };
        assert_eq!(first.status, 200, "{first:?} / {second:?}");
        assert_eq!(first.text(), "1", "first poll must end with a close packet");
        assert!(
            [400, 500].contains(&second.status),
            "duplicate poll answered {} {}",
            second.status,
            second.text()
        );
        assert_sid_unknown(node.addr, BASE, &session.sid).await;
    })
    .await;
}

#[tokio::test]
async fn websocket_echoes_a_text_frame() {
    bounded(async {
        let node = start_node();
        let (mut ws, _) = Ws::open(&node, BASE).await;
        ws.send_text("4hello").await;
        ws.expect_text("4hello").await;
        ws.close().await;
    })
    .await;
}

#[tokio::test]
async fn websocket_echoes_a_binary_frame_as_binary() {
    bounded(async {
        let node = start_node();
        let (mut ws, _) = Ws::open(&node, BASE).await;
        ws.send_binary(&[1, 2, 3, 4]).await;
        assert_eq!(ws.next_packet().await, Frame::Binary(vec![1, 2, 3, 4]));
        ws.close().await;
    })
    .await;
}

#[tokio::test]
async fn websocket_invalid_packet_closes_the_session() {
    bounded(async {
        let node = start_node();
        let (mut ws, sid) = Ws::open(&node, BASE).await;
        ws.send_text("abc").await;
        // Pings are answered while waiting, so only the invalid packet can close it.
        let (seen, _) = ws.expect_close(Duration::from_secs(5)).await;
        assert!(
            seen.iter().all(|f| *f == Frame::text("1")),
            "unexpected frames before the close: {seen:?}"
        );
        assert_sid_unknown(node.addr, BASE, &sid).await;
    })
    .await;
}

#[tokio::test]
async fn polling_echoes_non_utf8_binary_as_base64() {
    // A polling session receives binary as a `b<base64>` record, bytes that are not valid
    // UTF-8 included.
    bounded(async {
        let node = start_node();
        let session = Polling::open(node.addr, BASE).await;
        session.post_ok("b/wABAgM=").await; // [0xff, 0x00, 0x01, 0x02, 0x03]
        assert_eq!(session.packets(1).await, ["b/wABAgM="]);
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Heartbeat
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn polling_heartbeat_pings_and_pongs_keep_the_session_alive() {
    bounded(cases::polling_heartbeat_pings_and_pongs(
        BASE,
        async |session, rounds| {
            // Three pings are at least two intervals apart from the first.
            assert!(
                rounds >= Duration::from_millis(2 * PING_INTERVAL_MS),
                "pings came faster than pingInterval: {rounds:?}"
            );
            // Well past pingInterval + pingTimeout, the session still echoes.
            session.post_ok("4still here").await;
            assert_eq!(session.packets(1).await, ["4still here"]);
        },
    ))
    .await;
}

#[tokio::test]
async fn polling_session_without_pong_is_closed_after_the_ping_timeout() {
    bounded(async {
        let waited =
            cases::polling_session_without_pong_is_closed_after_the_ping_timeout(BASE).await;
        assert_pong_was_awaited(waited);
    })
    .await;
}

#[tokio::test]
async fn websocket_heartbeat_pings_and_pongs_keep_the_session_alive() {
    bounded(cases::websocket_heartbeat_pings_and_pongs(
        BASE,
        async |ws| {
            ws.send_text("4still here").await;
            ws.expect_text("4still here").await;
        },
    ))
    .await;
}

#[tokio::test]
async fn websocket_session_without_pong_is_closed_after_the_ping_timeout() {
    bounded(async {
        let node = start_node();
        let (mut ws, sid) = Ws::open(&node, BASE).await;
        assert_eq!(ws.next_frame().await, Frame::text("2"), "expected a ping");
        let (seen, waited) = ws.expect_close_ignoring_pings(HEARTBEAT_CLOSE_BOUND).await;
        // No other ping while the server waits for the pong; a close packet may precede the close.
        assert!(
            seen.iter().all(|f| *f == Frame::text("1")),
            "frames after the unanswered ping: {seen:?}"
        );
        assert_pong_was_awaited(waited);
        assert_sid_unknown(node.addr, BASE, &sid).await;
    })
    .await;
}

/// Checks the time from an unanswered ping to the close of the session: the client had
/// pingTimeout to answer (less what the ping took to reach it).
fn assert_pong_was_awaited(waited: Duration) {
    assert!(
        waited >= Duration::from_millis(PING_TIMEOUT_MS / 2),
        "closed {waited:?} after the ping, pingTimeout is {PING_TIMEOUT_MS} ms"
    );
}

#[tokio::test]
#[ignore = "known deviation of engineioxide 0.17.9 (pinned): its heartbeat starts with an immediate tick, so the first ping follows the handshake at once; see docs/node.md"]
async fn polling_first_ping_comes_one_ping_interval_after_the_handshake() {
    bounded(cases::polling_first_ping_comes_one_ping_interval_after_the_handshake(BASE)).await;
}

#[tokio::test]
#[ignore = "known deviation of engineioxide 0.17.9 (pinned): its heartbeat starts with an immediate tick, so the first ping follows the handshake at once; see docs/node.md"]
async fn websocket_first_ping_comes_one_ping_interval_after_the_handshake() {
    bounded(cases::websocket_first_ping_comes_one_ping_interval_after_the_handshake(BASE)).await;
}

// ---------------------------------------------------------------------------------------------
// Close
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn polling_close_packet_ends_the_session_and_the_pending_poll_with_a_noop() {
    bounded(cases::polling_close_packet_ends_the_session_and_the_pending_poll_with_a_noop(BASE))
        .await;
}

#[tokio::test]
async fn websocket_close_packet_ends_the_session() {
    bounded(cases::websocket_close_packet_ends_the_session(BASE)).await;
}

// ---------------------------------------------------------------------------------------------
// Upgrade
// ---------------------------------------------------------------------------------------------

/// Upgrades a fresh polling session to WebSocket, runs `refusals` (the checks that the
/// upgraded session refuses another transport), and checks that the WebSocket still echoes.
async fn assert_upgraded_session_refuses(refusals: impl AsyncFnOnce(&Polling)) {
    let node = start_node();
    let session = Polling::open(node.addr, BASE).await;
    let mut ws = session.probe_upgrade().await;
    ws.send_text("5").await;
    // The echo comes after the server handled `5`: the upgrade is complete.
    ws.send_text("4sync").await;
    ws.expect_text("4sync").await;

    refusals(&session).await;

    ws.send_text("4hello").await;
    ws.expect_text("4hello").await;
    ws.close().await;
}

#[tokio::test]
async fn upgrade_from_polling_to_websocket_moves_the_session() {
    bounded(async {
        let node = start_node();
        let session = Polling::open(node.addr, BASE).await;
        let mut ws = session.probe_upgrade().await;
        ws.send_text("5").await;
        ws.send_text("4hello").await;
        ws.expect_text("4hello").await;
        ws.send_binary(&[9, 8, 7]).await;
        assert_eq!(ws.next_packet().await, Frame::Binary(vec![9, 8, 7]));
        ws.close().await;
    })
    .await;
}

#[tokio::test]
async fn upgrade_probe_ends_the_pending_poll_with_a_noop() {
    bounded(async {
        let node = start_node();
        let session = Polling::open(node.addr, BASE).await;
        // After a heartbeat round the next ping is a whole interval away, so the poll below
        // stays pending until the probe.
        session.heartbeat_round().await;

        let poller = session.clone();
        let pending = tokio::spawn(async move { poller.get().await });
        let mut ws = session.probe().await;
        let res = tokio::time::timeout(Duration::from_secs(5), pending)
            .await
            .expect("pending poll not ended by the probe")
            .expect("poll task");
        assert_eq!(res.status, 200, "{}", res.text());
        assert_eq!(res.text(), "6", "the pending poll must end with a noop");

        ws.send_text("5").await;
        ws.send_text("4hello").await;
        ws.expect_text("4hello").await;
        ws.close().await;
    })
    .await;
}

#[tokio::test]
async fn upgraded_session_refuses_polling_requests() {
    bounded(assert_upgraded_session_refuses(async |session| {
        let res = session.get().await;
        assert_eq!(res.status, 400, "poll after upgrade: {}", res.text());
        assert_eq!(error_code(&res), 3, "{}", res.text());
        let res = session.post(b"4hello").await;
        assert_eq!(res.status, 400, "post after upgrade: {}", res.text());
    }))
    .await;
}

#[tokio::test]
async fn upgraded_session_refuses_a_second_websocket() {
    bounded(assert_upgraded_session_refuses(async |session| {
        expect_ws_refused(&session.websocket_url()).await;
    }))
    .await;
}

#[tokio::test]
async fn websocket_with_an_unknown_sid_is_refused() {
    bounded(async {
        let node = start_node();
        expect_ws_refused(&ws_url(&node, "EIO=4&transport=websocket&sid=unknown-sid")).await;
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Limits and CORS
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn polling_payload_of_exactly_max_payload_is_accepted() {
    bounded(async {
        let node = start_node();
        let session = Polling::open(node.addr, BASE).await;
        let packet = format!("4{}", "a".repeat(MAX_PAYLOAD - 1));
        assert_eq!(packet.len(), MAX_PAYLOAD);
        session.post_ok(&packet).await;
        let echoed = session.packets(1).await;
        assert!(
            echoed[0] == packet,
            "echo of {} bytes differs",
            packet.len()
        );
    })
    .await;
}

#[tokio::test]
async fn polling_payload_above_max_payload_is_refused_with_413() {
    bounded(async {
        let node = start_node();
        let session = Polling::open(node.addr, BASE).await;
        let body = format!("4{}", "a".repeat(MAX_PAYLOAD));
        let answer = tolerant_request(node.addr, "POST", &session.path(), &[], body.as_bytes())
            .await
            .expect("an HTTP answer to the oversized POST");
        assert_eq!(answer.status, 413, "{answer:?}");
    })
    .await;
}

#[tokio::test]
async fn websocket_message_of_max_payload_is_echoed() {
    bounded(async {
        let node = start_node();
        let (mut ws, _) = Ws::open(&node, BASE).await;
        let packet = format!("4{}", "b".repeat(MAX_PAYLOAD - 1));
        ws.send_text(&packet).await;
        match ws.next_packet().await {
            Frame::Text(t) => assert!(t == packet, "echo of {} bytes differs", packet.len()),
            other => panic!("expected the echo, got {other:?}"),
        }
        ws.close().await;
    })
    .await;
}

#[tokio::test]
async fn websocket_message_above_max_payload_closes_the_connection() {
    bounded(async {
        let node = start_node();
        let (mut ws, _) = Ws::open(&node, BASE).await;
        ws.send_text(&format!("4{}", "b".repeat(MAX_PAYLOAD))).await;
        let (seen, _) = ws.expect_close(Duration::from_secs(5)).await;
        assert!(
            seen.iter().all(|f| *f == Frame::text("1")),
            "oversized message answered with {:?}",
            seen.iter().map(Frame::summary).collect::<Vec<_>>()
        );
    })
    .await;
}

#[tokio::test]
async fn cors_allows_any_origin() {
    bounded(async {
        let node = start_node();
        let origin = [("Origin", "http://example.test")];
        let handshake = engine_path(BASE, "EIO=4&transport=polling");

        let res = http(node.addr, "GET", &handshake, &origin, b"").await;
        assert_eq!(res.status, 200);
        assert_eq!(res.header("access-control-allow-origin"), Some("*"));
        let sid = common_protocol::check_open_packet(&res.text(), &["websocket"]);
        let session_path = engine_path(BASE, &format!("EIO=4&transport=polling&sid={sid}"));

        let res = http(node.addr, "POST", &session_path, &origin, b"4hi").await;
        assert_eq!(res.status, 200, "{}", res.text());
        assert_eq!(res.header("access-control-allow-origin"), Some("*"));

        let res = http(node.addr, "GET", &session_path, &origin, b"").await;
        assert_eq!(res.status, 200, "{}", res.text());
        assert!(
            common_protocol::records(&res.text()).contains(&"4hi".to_owned()),
            "{}",
            res.text()
        );
        assert_eq!(res.header("access-control-allow-origin"), Some("*"));

        // Refusals carry the header too, or a browser could not read them.
        let res = http(
            node.addr,
            "GET",
            &engine_path(BASE, "EIO=4&transport=abc"),
            &origin,
            b"",
        )
        .await;
        assert_eq!(res.status, 400);
        assert_eq!(res.header("access-control-allow-origin"), Some("*"));

        // A preflight for the POST of a session is allowed.
        let res = http(
            node.addr,
            "OPTIONS",
            &session_path,
            &[
                ("Origin", "http://example.test"),
                ("Access-Control-Request-Method", "POST"),
                ("Access-Control-Request-Headers", "content-type"),
            ],
            b"",
        )
        .await;
        assert!([200, 204].contains(&res.status), "preflight: {res:?}");
        assert_eq!(res.header("access-control-allow-origin"), Some("*"));
        let methods = res
            .header("access-control-allow-methods")
            .unwrap_or_default();
        assert!(methods.contains("POST"), "preflight allows {methods:?}");
    })
    .await;
}
