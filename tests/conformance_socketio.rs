//! `corral node --app conformance` as the reference server of the Socket.IO v5 protocol test
//! suite (`socketio/socket.io-protocol`, `test-suite/`): Engine.IO v4 below `/socket.io/`, the
//! namespaces `/` and `/custom`, the `auth` greeting, the `message` echo and the
//! `message-with-ack` acknowledgement, over WebSocket and long-polling.
//!
//! Every test starts its own node and is bounded in time. Engine.IO pings may come at any time,
//! so Socket.IO exchanges skip (and answer) them; when the first ping comes is a test of its own.

mod common;
mod common_protocol;

use std::time::{Duration, Instant};

use common::{get, http};
use common_protocol::{
    CONNECT_TIMEOUT, Frame, PING_INTERVAL_MS, Polling, Server, Ws, bounded, engine_path,
    error_code, expect_ws_refused, start_node,
};

const BASE: &str = "/socket.io";

/// How long a session that stopped answering pings may take to be closed (reference: 200 ms
/// after the ping), with room for a busy machine.
const HEARTBEAT_CLOSE_BOUND: Duration = Duration::from_secs(3);

/// The two binary attachments of the binary test cases and their placeholders.
const PLACEHOLDERS: &str = r#"{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}"#;
const ATTACHMENT_0: [u8; 3] = [1, 2, 3];
const ATTACHMENT_1: [u8; 3] = [4, 5, 6];

fn ws_url(node: &Server, query: &str) -> String {
    node.ws_url(&engine_path(BASE, query))
}

/// Checks that `sid` no longer names an Engine.IO session: 400 `Session ID unknown`.
async fn assert_sid_unknown(addr: std::net::SocketAddr, sid: &str) {
    let res = get(
        addr,
        &engine_path(BASE, &format!("EIO=4&transport=polling&sid={sid}")),
    )
    .await;
    assert_eq!(res.status, 400, "sid {sid} still accepted: {}", res.text());
    assert_eq!(error_code(&res), 1, "{}", res.text());
}

/// Checks a successful CONNECT answer, `40{"sid":"..."}` or `40<nsp>,{"sid":"..."}`: its only
/// key is a non-empty string `sid`, which is returned.
fn check_connect_ok(packet: &Frame, nsp: &str) -> String {
    let Frame::Text(packet) = packet else {
        panic!("expected a CONNECT answer, got {packet:?}");
    };
    let prefix = if nsp == "/" {
        "40".to_owned()
    } else {
        format!("40{nsp},")
    };
    let json = packet
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("expected a CONNECT answer for {nsp}, got {packet:?}"));
    let value: serde_json::Value = serde_json::from_str(json)
        .unwrap_or_else(|e| panic!("CONNECT payload is not JSON ({e}): {packet}"));
    let object = value.as_object().expect("CONNECT payload is an object");
    assert_eq!(
        object.keys().collect::<Vec<_>>(),
        ["sid"],
        "CONNECT payload keys: {packet}"
    );
    let sid = value["sid"].as_str().expect("sid is a string");
    assert!(!sid.is_empty(), "{packet}");
    sid.to_owned()
}

/// A WebSocket Engine.IO session on `/socket.io/`, not yet connected to a namespace.
async fn ws_session(node: &Server) -> Ws {
    Ws::open(node, BASE).await.0
}

/// Sends `connect` (a CONNECT packet to `nsp`) and checks the answer and the `auth` greeting
/// carrying `auth` (the JSON text of the CONNECT payload, `{}` when none). Returns the sid.
async fn ws_connect(ws: &mut Ws, connect: &str, nsp: &str, auth: &str) -> String {
    ws.send_text(connect).await;
    let sid = check_connect_ok(&ws.next_packet().await, nsp);
    let greeting = if nsp == "/" {
        format!(r#"42["auth",{auth}]"#)
    } else {
        format!(r#"42{nsp},["auth",{auth}]"#)
    };
    ws.expect_text(&greeting).await;
    sid
}

/// A WebSocket session connected to `/`, greeted.
async fn ws_connected(node: &Server) -> Ws {
    let mut ws = ws_session(node).await;
    ws_connect(&mut ws, "40", "/", "{}").await;
    ws
}

/// A polling session connected to `/`, greeted.
async fn polling_connected(node: &Server) -> Polling {
    let session = Polling::open(node.addr, BASE).await;
    session.post_ok("40").await;
    let packets = session.packets(2).await;
    check_connect_ok(&Frame::Text(packets[0].clone()), "/");
    assert_eq!(packets[1], r#"42["auth",{}]"#);
    session
}

// =============================================================================================
// Engine.IO below /socket.io/ (the "Engine.IO protocol" part of the Socket.IO suite)
// =============================================================================================

#[tokio::test]
async fn eio_polling_handshake_sends_an_open_packet_with_the_reference_settings() {
    bounded(async {
        let node = start_node();
        let res = get(node.addr, &engine_path(BASE, "EIO=4&transport=polling")).await;
        assert_eq!(res.status, 200, "{}", res.text());
        common_protocol::check_open_packet(&res.text(), &["websocket"]);
    })
    .await;
}

#[tokio::test]
async fn eio_polling_handshake_with_invalid_eio_transport_or_method_is_refused_with_400() {
    bounded(async {
        let node = start_node();
        for (method, query, code) in [
            ("GET", "transport=polling", 5),
            ("GET", "EIO=abc&transport=polling", 5),
            ("GET", "EIO=4", 0),
            ("GET", "EIO=4&transport=abc", 0),
            ("POST", "EIO=4&transport=polling", 2),
            ("PUT", "EIO=4&transport=polling", 2),
        ] {
            let res = http(node.addr, method, &engine_path(BASE, query), &[], b"").await;
            assert_eq!(res.status, 400, "{method} ?{query}: {}", res.text());
            assert_eq!(error_code(&res), code, "{method} ?{query}: {}", res.text());
        }
    })
    .await;
}

#[tokio::test]
async fn eio_websocket_handshake_sends_an_open_packet_without_upgrades() {
    bounded(async {
        let node = start_node();
        let (ws, sid) = Ws::open(&node, BASE).await;
        assert!(!sid.is_empty());
        ws.close().await;
    })
    .await;
}

#[tokio::test]
async fn eio_websocket_handshake_with_invalid_eio_or_transport_is_refused() {
    bounded(async {
        let node = start_node();
        for query in [
            "transport=websocket",
            "EIO=abc&transport=websocket",
            "EIO=4",
            "EIO=4&transport=abc",
        ] {
            expect_ws_refused(&ws_url(&node, query)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn eio_polling_heartbeat_pings_and_pongs() {
    bounded(async {
        let node = start_node();
        let session = Polling::open(node.addr, BASE).await;
        for round in 0..3 {
            let res = session.get().await;
            assert_eq!(res.status, 200, "round {round}: {}", res.text());
            assert_eq!(res.text(), "2", "round {round}: expected a ping");
            session.post_ok("3").await;
        }
    })
    .await;
}

#[tokio::test]
async fn eio_polling_session_without_pong_is_closed_after_the_ping_timeout() {
    bounded(async {
        let node = start_node();
        let session = Polling::open(node.addr, BASE).await;
        let res = session.get().await;
        assert_eq!(res.text(), "2", "expected a ping");
        let seen = session.wait_closed(HEARTBEAT_CLOSE_BOUND).await;
        assert!(
            seen.iter().all(|p| p == "1"),
            "sent {seen:?} while waiting for the pong"
        );
    })
    .await;
}

#[tokio::test]
async fn eio_websocket_heartbeat_pings_and_pongs() {
    bounded(async {
        let node = start_node();
        let mut ws = ws_session(&node).await;
        for round in 0..3 {
            assert_eq!(
                ws.next_frame().await,
                Frame::text("2"),
                "round {round}: expected a ping"
            );
            ws.send_text("3").await;
        }
        ws.close().await;
    })
    .await;
}

#[tokio::test]
async fn eio_websocket_session_without_pong_is_closed_after_the_ping_timeout() {
    bounded(async {
        let node = start_node();
        let (mut ws, sid) = Ws::open(&node, BASE).await;
        let (seen, _) = ws.expect_close_ignoring_pings(HEARTBEAT_CLOSE_BOUND).await;
        assert_eq!(
            seen.first(),
            Some(&Frame::text("2")),
            "no ping before the close"
        );
        assert!(
            seen[1..].iter().all(|f| *f == Frame::text("1")),
            "frames after the unanswered ping: {seen:?}"
        );
        assert_sid_unknown(node.addr, &sid).await;
    })
    .await;
}

#[tokio::test]
#[ignore = "known deviation of engineioxide 0.17.9 (pinned): its heartbeat starts with an immediate tick, so the first ping follows the handshake at once; see docs/node.md"]
async fn eio_websocket_first_ping_comes_one_ping_interval_after_the_handshake() {
    bounded(async {
        let node = start_node();
        let start = Instant::now();
        let mut ws = ws_session(&node).await;
        assert_eq!(ws.next_frame().await, Frame::text("2"), "expected a ping");
        let elapsed = start.elapsed();
        assert!(
            elapsed >= Duration::from_millis(PING_INTERVAL_MS - 10),
            "first ping {elapsed:?} after the handshake, pingInterval is {PING_INTERVAL_MS} ms"
        );
        ws.close().await;
    })
    .await;
}

#[tokio::test]
async fn eio_polling_close_packet_ends_the_session_and_the_pending_poll_with_a_noop() {
    bounded(async {
        let node = start_node();
        let session = Polling::open(node.addr, BASE).await;
        // After a heartbeat round the next ping is a whole interval away, so the poll below
        // can only end because of the close.
        session.heartbeat_round().await;
        let poller = session.clone();
        let pending = tokio::spawn(async move { poller.get().await });
        // The poll must be pending before the close packet; nothing observable says when the
        // server has taken it, so give it a moment (well under the 300 ms ping interval).
        tokio::time::sleep(Duration::from_millis(100)).await;
        session.post_ok("1").await;
        let res = pending.await.expect("poll task");
        assert_eq!(res.status, 200, "{}", res.text());
        assert_eq!(res.text(), "6");
        assert_sid_unknown(node.addr, &session.sid).await;
    })
    .await;
}

#[tokio::test]
async fn eio_websocket_close_packet_ends_the_session() {
    // As in the suite: `1`, then silence. The reference JavaScript server ignores a close
    // packet over WebSocket (the heartbeat or the connect timeout ends the session), so only
    // "the session ends, within a bound" is reference behaviour here.
    bounded(async {
        let node = start_node();
        let (mut ws, sid) = Ws::open(&node, BASE).await;
        ws.send_text("1").await;
        let (seen, _) = ws.expect_close_ignoring_pings(HEARTBEAT_CLOSE_BOUND).await;
        assert!(
            seen.iter()
                .all(|f| *f == Frame::text("2") || *f == Frame::text("1")),
            "frames after the close packet: {seen:?}"
        );
        assert_sid_unknown(node.addr, &sid).await;
    })
    .await;
}

/// Upgrades `session` to WebSocket (`2probe`/`3probe`, then `5`) and waits until the server has
/// completed it (a round trip that can only be answered over the new transport).
async fn upgrade(node: &Server, session: &Polling) -> Ws {
    let mut ws = Ws::connect(&ws_url(
        node,
        &format!("EIO=4&transport=websocket&sid={}", session.sid),
    ))
    .await;
    ws.send_text("2probe").await;
    assert_eq!(ws.next_frame().await, Frame::text("3probe"));
    let res = session.get().await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(
        res.text(),
        "6",
        "a poll during the upgrade must end with a noop"
    );
    ws.send_text("5").await;
    ws
}

#[tokio::test]
async fn eio_upgrade_to_websocket_then_polling_and_a_second_websocket_are_refused() {
    bounded(async {
        let node = start_node();
        let session = polling_connected(&node).await;
        let mut ws = upgrade(&node, &session).await;
        // The Socket.IO session moved along: the echo comes back over the WebSocket, which
        // also proves the server handled `5`.
        ws.send_text(r#"42["message","upgraded"]"#).await;
        ws.expect_text(r#"42["message-back","upgraded"]"#).await;

        let res = session.get().await;
        assert_eq!(res.status, 400, "poll after upgrade: {}", res.text());
        expect_ws_refused(&ws_url(
            &node,
            &format!("EIO=4&transport=websocket&sid={}", session.sid),
        ))
        .await;

        ws.send_text(r#"42["message","still here"]"#).await;
        ws.expect_text(r#"42["message-back","still here"]"#).await;
        ws.close().await;
    })
    .await;
}

// =============================================================================================
// Socket.IO: connect
// =============================================================================================

#[tokio::test]
async fn connect_to_the_main_namespace_answers_a_sid_and_greets_with_empty_auth() {
    bounded(async {
        let node = start_node();
        let mut ws = ws_session(&node).await;
        ws_connect(&mut ws, "40", "/", "{}").await;
        ws.close().await;
    })
    .await;
}

#[tokio::test]
async fn connect_to_the_main_namespace_with_a_payload_greets_with_that_payload() {
    bounded(async {
        let node = start_node();
        let mut ws = ws_session(&node).await;
        ws_connect(&mut ws, r#"40{"token":"123"}"#, "/", r#"{"token":"123"}"#).await;
        ws.close().await;
    })
    .await;
}

#[tokio::test]
async fn connect_to_the_custom_namespace_answers_a_sid_and_greets_with_empty_auth() {
    bounded(async {
        let node = start_node();
        let mut ws = ws_session(&node).await;
        ws_connect(&mut ws, "40/custom,", "/custom", "{}").await;
        ws.close().await;
    })
    .await;
}

#[tokio::test]
async fn connect_to_the_custom_namespace_with_a_payload_greets_with_that_payload() {
    bounded(async {
        let node = start_node();
        let mut ws = ws_session(&node).await;
        ws_connect(
            &mut ws,
            r#"40/custom,{"token":"abc"}"#,
            "/custom",
            r#"{"token":"abc"}"#,
        )
        .await;
        ws.close().await;
    })
    .await;
}

#[tokio::test]
async fn connect_to_an_unknown_namespace_is_refused_with_invalid_namespace() {
    bounded(async {
        let node = start_node();
        let mut ws = ws_session(&node).await;
        ws.send_text("40/random").await;
        ws.expect_text(r#"44/random,{"message":"Invalid namespace"}"#)
            .await;
        ws.close().await;
    })
    .await;
}

#[tokio::test]
async fn connect_with_an_invalid_packet_closes_the_connection() {
    bounded(async {
        let node = start_node();
        let mut ws = ws_session(&node).await;
        ws.send_text("4abc").await;
        let (seen, waited) = ws.expect_close(Duration::from_secs(5)).await;
        assert!(
            seen.iter().all(|f| *f == Frame::text("1")),
            "answered the invalid packet with {seen:?}"
        );
        // Well before the connect timeout would close it.
        assert!(waited < CONNECT_TIMEOUT, "closed only after {waited:?}");
    })
    .await;
}

#[tokio::test]
#[ignore = "known deviation of socketioxide 0.18.9 (pinned): every namespace's socket id is the Engine.IO session id; the node seals the id clients must present (tests/bad_input.rs proves a socket id cannot take a session over), but the ids are not distinct; see docs/node.md"]
async fn connect_answers_a_socket_sid_distinct_from_the_engine_sid() {
    // Socket.IO v5 ("Difference between v5 and v4" in the protocol): the sid in the CONNECT
    // answer identifies the socket of that namespace and differs from the Engine.IO sid, which
    // is the credential of the underlying session and must not leak through `socket.id`.
    bounded(async {
        let node = start_node();
        let (mut ws, engine_sid) = Ws::open(&node, BASE).await;
        let main = ws_connect(&mut ws, "40", "/", "{}").await;
        let custom = ws_connect(&mut ws, "40/custom,", "/custom", "{}").await;
        assert_ne!(main, engine_sid, "the / socket sid is the Engine.IO sid");
        assert_ne!(
            custom, engine_sid,
            "the /custom socket sid is the Engine.IO sid"
        );
        assert_ne!(main, custom, "two namespaces, one socket sid");
        ws.close().await;
    })
    .await;
}

#[tokio::test]
async fn session_without_connect_is_closed_after_the_connect_timeout_over_websocket() {
    bounded(async {
        let node = start_node();
        let start = Instant::now();
        let (mut ws, sid) = Ws::open(&node, BASE).await;
        // Pings are answered: only the missing CONNECT can close the session.
        let (seen, _) = ws.expect_close(Duration::from_secs(5)).await;
        let elapsed = start.elapsed();
        assert!(
            seen.iter().all(|f| *f == Frame::text("1")),
            "frames before the close: {seen:?}"
        );
        assert!(
            elapsed >= CONNECT_TIMEOUT - Duration::from_millis(10),
            "closed after {elapsed:?}, before the {CONNECT_TIMEOUT:?} connect timeout"
        );
        assert_sid_unknown(node.addr, &sid).await;
    })
    .await;
}

#[tokio::test]
async fn session_without_connect_is_closed_after_the_connect_timeout_over_polling() {
    bounded(async {
        let node = start_node();
        let start = Instant::now();
        let session = Polling::open(node.addr, BASE).await;
        let seen = session
            .wait_closed_answering_pings(Duration::from_secs(5))
            .await;
        let elapsed = start.elapsed();
        assert!(
            seen.iter().all(|p| p == "1"),
            "packets before the close: {seen:?}"
        );
        assert!(
            elapsed >= CONNECT_TIMEOUT - Duration::from_millis(10),
            "closed after {elapsed:?}, before the {CONNECT_TIMEOUT:?} connect timeout"
        );
    })
    .await;
}

#[tokio::test]
async fn connected_session_outlives_the_connect_timeout() {
    bounded(async {
        let node = start_node();
        let start = Instant::now();
        let mut ws = ws_connected(&node).await;
        // Answer pings until well past the connect timeout; nothing else may come.
        let quiet_until = CONNECT_TIMEOUT + Duration::from_millis(500);
        let extra = ws
            .next_packet_within(quiet_until.saturating_sub(start.elapsed()))
            .await;
        assert_eq!(extra, None, "unexpected frame while connected and idle");
        ws.send_text(r#"42["message","alive"]"#).await;
        ws.expect_text(r#"42["message-back","alive"]"#).await;
        ws.close().await;
    })
    .await;
}

#[tokio::test]
async fn connected_session_without_pong_is_closed_after_the_ping_timeout() {
    bounded(async {
        let node = start_node();
        let (mut ws, sid) = Ws::open(&node, BASE).await;
        // Connect while ignoring pings: the ping may come before or after the answers.
        ws.send_text("40").await;
        let (seen, _) = ws.expect_close_ignoring_pings(HEARTBEAT_CLOSE_BOUND).await;
        let non_pings: Vec<&Frame> = seen
            .iter()
            .filter(|f| **f != Frame::text("2") && **f != Frame::text("1"))
            .collect();
        assert_eq!(
            non_pings.len(),
            2,
            "expected CONNECT answer and greeting: {seen:?}"
        );
        check_connect_ok(non_pings[0], "/");
        assert_eq!(*non_pings[1], Frame::text(r#"42["auth",{}]"#));
        assert_eq!(
            seen.iter().filter(|f| **f == Frame::text("2")).count(),
            1,
            "one unanswered ping, then the close: {seen:?}"
        );
        assert_sid_unknown(node.addr, &sid).await;
    })
    .await;
}

// =============================================================================================
// Socket.IO: disconnect
// =============================================================================================

#[tokio::test]
async fn disconnect_from_the_main_namespace_keeps_the_connection_open() {
    bounded(async {
        let node = start_node();
        let mut ws = ws_connected(&node).await;
        ws.send_text("41").await;
        // Nothing is sent back for the DISCONNECT; the next frame is the next ping.
        assert_eq!(ws.next_frame().await, Frame::text("2"));
        ws.send_text("3").await;
        // The connection still works: connect again.
        ws_connect(&mut ws, "40", "/", "{}").await;
        ws.close().await;
    })
    .await;
}

#[tokio::test]
async fn disconnect_from_the_custom_namespace_keeps_the_main_one() {
    bounded(async {
        let node = start_node();
        let mut ws = ws_connected(&node).await;
        ws_connect(&mut ws, "40/custom", "/custom", "{}").await;
        ws.send_text("41/custom").await;
        ws.send_text(r#"42["message","message to main namespace",1,2]"#)
            .await;
        ws.expect_text(r#"42["message-back","message to main namespace",1,2]"#)
            .await;
        ws.close().await;
    })
    .await;
}

// =============================================================================================
// Socket.IO: messages
// =============================================================================================

#[tokio::test]
async fn message_is_echoed_as_message_back_with_the_same_arguments() {
    bounded(async {
        let node = start_node();
        let mut ws = ws_connected(&node).await;
        ws.send_text(r#"42["message",1,"2",{"3":[true]}]"#).await;
        ws.expect_text(r#"42["message-back",1,"2",{"3":[true]}]"#)
            .await;
        // No arguments, and other JSON types, come back as they were.
        ws.send_text(r#"42["message"]"#).await;
        ws.expect_text(r#"42["message-back"]"#).await;
        ws.send_text(r#"42["message",null,false,-1.5,[],{}]"#).await;
        ws.expect_text(r#"42["message-back",null,false,-1.5,[],{}]"#)
            .await;
        ws.close().await;
    })
    .await;
}

#[tokio::test]
async fn message_with_binary_attachments_is_echoed_with_identical_attachments() {
    bounded(async {
        let node = start_node();
        let mut ws = ws_connected(&node).await;
        ws.send_text(&format!(r#"452-["message",{PLACEHOLDERS}]"#))
            .await;
        ws.send_binary(&ATTACHMENT_0).await;
        ws.send_binary(&ATTACHMENT_1).await;
        ws.expect_frames(&[
            Frame::Text(format!(r#"452-["message-back",{PLACEHOLDERS}]"#)),
            Frame::Binary(ATTACHMENT_0.to_vec()),
            Frame::Binary(ATTACHMENT_1.to_vec()),
        ])
        .await;
        ws.close().await;
    })
    .await;
}

#[tokio::test]
async fn message_with_ack_is_acknowledged_with_the_same_arguments() {
    bounded(async {
        let node = start_node();
        let mut ws = ws_connected(&node).await;
        ws.send_text(r#"42456["message-with-ack",1,"2",{"3":[false]}]"#)
            .await;
        ws.expect_text(r#"43456[1,"2",{"3":[false]}]"#).await;
        ws.close().await;
    })
    .await;
}

#[tokio::test]
async fn message_with_ack_and_binary_attachments_gets_a_binary_ack() {
    bounded(async {
        let node = start_node();
        let mut ws = ws_connected(&node).await;
        ws.send_text(&format!(r#"452-789["message-with-ack",{PLACEHOLDERS}]"#))
            .await;
        ws.send_binary(&ATTACHMENT_0).await;
        ws.send_binary(&ATTACHMENT_1).await;
        ws.expect_frames(&[
            Frame::Text(format!(r#"462-789[{PLACEHOLDERS}]"#)),
            Frame::Binary(ATTACHMENT_0.to_vec()),
            Frame::Binary(ATTACHMENT_1.to_vec()),
        ])
        .await;
        ws.close().await;
    })
    .await;
}

#[tokio::test]
async fn message_to_the_custom_namespace_is_not_echoed() {
    // `/custom` only greets: a `message` there must not be answered (least of all on `/`).
    bounded(async {
        let node = start_node();
        let mut ws = ws_connected(&node).await;
        ws_connect(&mut ws, "40/custom,", "/custom", "{}").await;
        ws.send_text(r#"42/custom,["message","hi"]"#).await;
        ws.send_text(r#"42["message","on main"]"#).await;
        ws.expect_text(r#"42["message-back","on main"]"#).await;
        ws.close().await;
    })
    .await;
}

async fn assert_invalid_packet_closes(packet: &str) {
    let node = start_node();
    let mut ws = ws_connected(&node).await;
    ws.send_text(packet).await;
    // Pings are answered while waiting, so only the invalid packet can close it.
    let (seen, _) = ws.expect_close(Duration::from_secs(5)).await;
    assert!(
        seen.iter().all(|f| *f == Frame::text("1")),
        "answered {packet:?} with {seen:?}"
    );
}

#[tokio::test]
async fn unknown_packet_type_closes_the_connection() {
    bounded(assert_invalid_packet_closes("4abc")).await;
}

#[tokio::test]
async fn event_payload_that_is_not_an_array_closes_the_connection() {
    bounded(assert_invalid_packet_closes("42{}")).await;
}

#[tokio::test]
async fn invalid_ack_id_closes_the_connection() {
    bounded(assert_invalid_packet_closes(
        r#"42abc["message-with-ack",1,"2",{"3":[false]}]"#,
    ))
    .await;
}

// =============================================================================================
// Socket.IO over HTTP long-polling
// =============================================================================================

#[tokio::test]
async fn polling_connect_to_the_main_namespace_answers_a_sid_and_greets_with_empty_auth() {
    bounded(async {
        let node = start_node();
        // `polling_connected` checks the CONNECT answer and the greeting.
        polling_connected(&node).await;
    })
    .await;
}

#[tokio::test]
async fn polling_connect_to_the_custom_namespace_with_a_payload_greets_with_that_payload() {
    bounded(async {
        let node = start_node();
        let session = Polling::open(node.addr, BASE).await;
        session.post_ok(r#"40/custom,{"token":"abc"}"#).await;
        let packets = session.packets(2).await;
        check_connect_ok(&Frame::Text(packets[0].clone()), "/custom");
        assert_eq!(packets[1], r#"42/custom,["auth",{"token":"abc"}]"#);
    })
    .await;
}

#[tokio::test]
async fn polling_connect_to_an_unknown_namespace_is_refused_with_invalid_namespace() {
    bounded(async {
        let node = start_node();
        let session = Polling::open(node.addr, BASE).await;
        session.post_ok("40/random,").await;
        assert_eq!(
            session.packets(1).await,
            [r#"44/random,{"message":"Invalid namespace"}"#]
        );
    })
    .await;
}

#[tokio::test]
async fn polling_message_is_echoed_as_message_back() {
    bounded(async {
        let node = start_node();
        let session = polling_connected(&node).await;
        session.post_ok(r#"42["message",1,"2",{"3":[true]}]"#).await;
        assert_eq!(
            session.packets(1).await,
            [r#"42["message-back",1,"2",{"3":[true]}]"#]
        );
    })
    .await;
}

#[tokio::test]
async fn polling_message_with_binary_attachments_is_echoed_as_base64_attachments() {
    bounded(async {
        let node = start_node();
        let session = polling_connected(&node).await;
        // `bAQID` = [1, 2, 3], `bBAUG` = [4, 5, 6].
        session
            .post_ok(&format!(
                "452-[\"message\",1,{PLACEHOLDERS}]\x1ebAQID\x1ebBAUG"
            ))
            .await;
        assert_eq!(
            session.packets(3).await,
            [
                format!(r#"452-["message-back",1,{PLACEHOLDERS}]"#),
                "bAQID".to_owned(),
                "bBAUG".to_owned(),
            ]
        );
    })
    .await;
}

#[tokio::test]
async fn polling_message_with_ack_is_acknowledged_with_the_same_arguments() {
    bounded(async {
        let node = start_node();
        let session = polling_connected(&node).await;
        session
            .post_ok(r#"42456["message-with-ack",1,"2",{"3":[false]}]"#)
            .await;
        assert_eq!(session.packets(1).await, [r#"43456[1,"2",{"3":[false]}]"#]);
    })
    .await;
}

#[tokio::test]
async fn polling_message_with_ack_and_binary_attachments_gets_a_binary_ack() {
    bounded(async {
        let node = start_node();
        let session = polling_connected(&node).await;
        session
            .post_ok(&format!(
                "452-789[\"message-with-ack\",1,{PLACEHOLDERS}]\x1ebAQID\x1ebBAUG"
            ))
            .await;
        assert_eq!(
            session.packets(3).await,
            [
                format!("462-789[1,{PLACEHOLDERS}]"),
                "bAQID".to_owned(),
                "bBAUG".to_owned(),
            ]
        );
    })
    .await;
}

#[tokio::test]
async fn polling_disconnect_from_the_main_namespace_keeps_the_session_open() {
    bounded(async {
        let node = start_node();
        let session = polling_connected(&node).await;
        session.post_ok("41").await;
        // Nothing comes back for the DISCONNECT but the heartbeat; the session still works.
        let res = session.get().await;
        assert_eq!(res.status, 200, "{}", res.text());
        assert_eq!(res.text(), "2", "expected only the next ping");
        session.post_ok("3").await;
        session.post_ok("40").await;
        let packets = session.packets(2).await;
        check_connect_ok(&Frame::Text(packets[0].clone()), "/");
        assert_eq!(packets[1], r#"42["auth",{}]"#);
    })
    .await;
}

#[tokio::test]
async fn polling_connected_session_without_pong_is_closed_after_the_ping_timeout() {
    bounded(async {
        let node = start_node();
        let session = Polling::open(node.addr, BASE).await;
        session.post_ok("40").await;
        // Read without answering pings: the CONNECT answer, the greeting and one ping, in some
        // order, then the close.
        let seen = session.wait_closed(HEARTBEAT_CLOSE_BOUND).await;
        let pings = seen.iter().filter(|p| *p == "2").count();
        let others: Vec<&String> = seen.iter().filter(|p| *p != "2" && *p != "1").collect();
        assert_eq!(pings, 1, "one unanswered ping, then the close: {seen:?}");
        assert_eq!(others.len(), 2, "{seen:?}");
        check_connect_ok(&Frame::Text(others[0].clone()), "/");
        assert_eq!(others[1], r#"42["auth",{}]"#);
    })
    .await;
}
