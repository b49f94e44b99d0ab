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

use common_protocol::{
    CONNECT_TIMEOUT, Frame, HEARTBEAT_CLOSE_BOUND, Polling, Server, Ws, assert_sid_unknown,
    bounded, cases, engine_path, expect_refused, expect_ws_refused, start_node,
};

const BASE: &str = "/socket.io";

/// The two binary attachments of the binary test cases and their placeholders.
const PLACEHOLDERS: &str = r#"{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}"#;
const ATTACHMENT_0: [u8; 3] = [1, 2, 3];
const ATTACHMENT_1: [u8; 3] = [4, 5, 6];

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

/// The `auth` greeting of namespace `nsp` carrying `auth` (the JSON text of a CONNECT payload).
fn greeting(nsp: &str, auth: &str) -> String {
    if nsp == "/" {
        format!(r#"42["auth",{auth}]"#)
    } else {
        format!(r#"42{nsp},["auth",{auth}]"#)
    }
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
    ws.expect_text(&greeting(nsp, auth)).await;
    sid
}

/// A WebSocket session connected to `/`, greeted.
async fn ws_connected(node: &Server) -> Ws {
    let mut ws = ws_session(node).await;
    ws_connect(&mut ws, "40", "/", "{}").await;
    ws
}

/// [`ws_connect`] over polling: POSTs `connect` and checks the next two packets, the CONNECT
/// answer for `nsp` and the greeting carrying `auth`.
async fn polling_connect(session: &Polling, connect: &str, nsp: &str, auth: &str) {
    session.post_ok(connect).await;
    let packets = session.packets(2).await;
    check_connect_ok(&Frame::Text(packets[0].clone()), nsp);
    assert_eq!(packets[1], greeting(nsp, auth));
}

/// A polling session connected to `/`, greeted.
async fn polling_connected(node: &Server) -> Polling {
    let session = Polling::open(node.addr, BASE).await;
    polling_connect(&session, "40", "/", "{}").await;
    session
}

// =============================================================================================
// Engine.IO below /socket.io/ (the "Engine.IO protocol" part of the Socket.IO suite)
// =============================================================================================

// Where the Engine.IO suite runs the same case on `/engine.io`, it is written once, in
// `common_protocol::cases`.

#[tokio::test]
async fn eio_polling_handshake_sends_an_open_packet_with_the_reference_settings() {
    bounded(cases::polling_handshake_sends_an_open_packet_with_the_reference_settings(BASE)).await;
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
            let what = format!("{method} ?{query}");
            expect_refused(node.addr, method, &engine_path(BASE, query), code, &what).await;
        }
    })
    .await;
}

#[tokio::test]
async fn eio_websocket_handshake_sends_an_open_packet_without_upgrades() {
    bounded(cases::websocket_handshake_sends_an_open_packet_without_upgrades(BASE)).await;
}

#[tokio::test]
async fn eio_websocket_handshake_with_invalid_eio_or_transport_is_refused() {
    bounded(cases::websocket_handshake_without_a_valid_eio_or_transport_is_refused(BASE)).await;
}

#[tokio::test]
async fn eio_polling_heartbeat_pings_and_pongs() {
    // Nothing more to check afterwards: before a CONNECT, the session answers no message.
    bounded(cases::polling_heartbeat_pings_and_pongs(
        BASE,
        async |_, _| {},
    ))
    .await;
}

#[tokio::test]
async fn eio_polling_session_without_pong_is_closed_after_the_ping_timeout() {
    bounded(async {
        cases::polling_session_without_pong_is_closed_after_the_ping_timeout(BASE).await;
    })
    .await;
}

#[tokio::test]
async fn eio_websocket_heartbeat_pings_and_pongs() {
    // Nothing more to check afterwards: before a CONNECT, the session answers no message.
    bounded(cases::websocket_heartbeat_pings_and_pongs(
        BASE,
        async |_| {},
    ))
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
        assert_sid_unknown(node.addr, BASE, &sid).await;
    })
    .await;
}

#[tokio::test]
#[ignore = "known deviation of engineioxide 0.17.9 (pinned): its heartbeat starts with an immediate tick, so the first ping follows the handshake at once; see docs/node.md"]
async fn eio_websocket_first_ping_comes_one_ping_interval_after_the_handshake() {
    bounded(cases::websocket_first_ping_comes_one_ping_interval_after_the_handshake(BASE)).await;
}

#[tokio::test]
async fn eio_polling_close_packet_ends_the_session_and_the_pending_poll_with_a_noop() {
    bounded(cases::polling_close_packet_ends_the_session_and_the_pending_poll_with_a_noop(BASE))
        .await;
}

#[tokio::test]
async fn eio_websocket_close_packet_ends_the_session() {
    bounded(cases::websocket_close_packet_ends_the_session(BASE)).await;
}

#[tokio::test]
async fn eio_upgrade_to_websocket_then_polling_and_a_second_websocket_are_refused() {
    bounded(async {
        let node = start_node();
        let session = polling_connected(&node).await;
        let mut ws = session.probe_upgrade().await;
        ws.send_text("5").await;
        // The Socket.IO session moved along: the echo comes back over the WebSocket, which
        // also proves the server handled `5`.
        ws.send_text(r#"42["message","upgraded"]"#).await;
        ws.expect_text(r#"42["message-back","upgraded"]"#).await;

        let res = session.get().await;
        assert_eq!(res.status, 400, "poll after upgrade: {}", res.text());
        expect_ws_refused(&session.websocket_url()).await;

        ws.send_text(r#"42["message","still here"]"#).await;
        ws.expect_text(r#"42["message-back","still here"]"#).await;
        ws.close().await;
    })
    .await;
}

// =============================================================================================
// Socket.IO: connect
// =============================================================================================

/// Sends `connect` on a fresh WebSocket session and checks the CONNECT answer for `nsp` and the
/// greeting carrying `auth` ([`ws_connect`]).
async fn assert_ws_connects(connect: &str, nsp: &str, auth: &str) {
    let node = start_node();
    let mut ws = ws_session(&node).await;
    ws_connect(&mut ws, connect, nsp, auth).await;
    ws.close().await;
}

#[tokio::test]
async fn connect_to_the_main_namespace_answers_a_sid_and_greets_with_empty_auth() {
    bounded(assert_ws_connects("40", "/", "{}")).await;
}

#[tokio::test]
async fn connect_to_the_main_namespace_with_a_payload_greets_with_that_payload() {
    bounded(assert_ws_connects(
        r#"40{"token":"123"}"#,
        "/",
        r#"{"token":"123"}"#,
    ))
    .await;
}

#[tokio::test]
async fn connect_to_the_custom_namespace_answers_a_sid_and_greets_with_empty_auth() {
    bounded(assert_ws_connects("40/custom,", "/custom", "{}")).await;
}

#[tokio::test]
async fn connect_to_the_custom_namespace_with_a_payload_greets_with_that_payload() {
    bounded(assert_ws_connects(
        r#"40/custom,{"token":"abc"}"#,
        "/custom",
        r#"{"token":"abc"}"#,
    ))
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

/// Checks the time from just before the handshake to the close of a session that never sent
/// CONNECT: not less than the connect timeout.
fn assert_not_before_the_connect_timeout(elapsed: Duration) {
    assert!(
        elapsed >= CONNECT_TIMEOUT - Duration::from_millis(10),
        "closed after {elapsed:?}, before the {CONNECT_TIMEOUT:?} connect timeout"
    );
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
        assert_not_before_the_connect_timeout(elapsed);
        assert_sid_unknown(node.addr, BASE, &sid).await;
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
        assert_not_before_the_connect_timeout(elapsed);
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
        assert_sid_unknown(node.addr, BASE, &sid).await;
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

/// On a fresh WebSocket session connected to `/`, sends each packet of `exchanges` and checks
/// that the next packet is its answer.
async fn assert_ws_answers(exchanges: &[(&str, &str)]) {
    let node = start_node();
    let mut ws = ws_connected(&node).await;
    for (packet, answer) in exchanges {
        ws.send_text(packet).await;
        ws.expect_text(answer).await;
    }
    ws.close().await;
}

/// On a fresh WebSocket session connected to `/`, sends `packet` with the attachments
/// [`ATTACHMENT_0`] and [`ATTACHMENT_1`], and checks that the next packets are `answer` with the
/// same attachments.
async fn assert_ws_binary_answer(packet: &str, answer: &str) {
    let node = start_node();
    let mut ws = ws_connected(&node).await;
    ws.send_text(packet).await;
    ws.send_binary(&ATTACHMENT_0).await;
    ws.send_binary(&ATTACHMENT_1).await;
    ws.expect_frames(&[
        Frame::text(answer),
        Frame::Binary(ATTACHMENT_0.to_vec()),
        Frame::Binary(ATTACHMENT_1.to_vec()),
    ])
    .await;
    ws.close().await;
}

#[tokio::test]
async fn message_is_echoed_as_message_back_with_the_same_arguments() {
    bounded(assert_ws_answers(&[
        (
            r#"42["message",1,"2",{"3":[true]}]"#,
            r#"42["message-back",1,"2",{"3":[true]}]"#,
        ),
        // No arguments, and other JSON types, come back as they were.
        (r#"42["message"]"#, r#"42["message-back"]"#),
        (
            r#"42["message",null,false,-1.5,[],{}]"#,
            r#"42["message-back",null,false,-1.5,[],{}]"#,
        ),
    ]))
    .await;
}

#[tokio::test]
async fn message_with_binary_attachments_is_echoed_with_identical_attachments() {
    bounded(assert_ws_binary_answer(
        &format!(r#"452-["message",{PLACEHOLDERS}]"#),
        &format!(r#"452-["message-back",{PLACEHOLDERS}]"#),
    ))
    .await;
}

#[tokio::test]
async fn message_with_ack_is_acknowledged_with_the_same_arguments() {
    bounded(assert_ws_answers(&[(
        r#"42456["message-with-ack",1,"2",{"3":[false]}]"#,
        r#"43456[1,"2",{"3":[false]}]"#,
    )]))
    .await;
}

#[tokio::test]
async fn message_with_ack_and_binary_attachments_gets_a_binary_ack() {
    bounded(assert_ws_binary_answer(
        &format!(r#"452-789["message-with-ack",{PLACEHOLDERS}]"#),
        &format!(r#"462-789[{PLACEHOLDERS}]"#),
    ))
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
        polling_connect(
            &session,
            r#"40/custom,{"token":"abc"}"#,
            "/custom",
            r#"{"token":"abc"}"#,
        )
        .await;
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

/// On a fresh polling session connected to `/`, POSTs `payload` and checks that the next
/// packets are exactly `answer`.
async fn assert_polling_answer(payload: &str, answer: &[&str]) {
    let node = start_node();
    let session = polling_connected(&node).await;
    session.post_ok(payload).await;
    assert_eq!(session.packets(answer.len()).await, answer);
}

/// [`assert_polling_answer`] for `packet` with the attachments [`ATTACHMENT_0`] and
/// [`ATTACHMENT_1`] (base64 records `bAQID` and `bBAUG`): the answer must be `answer` with the
/// same attachments.
async fn assert_polling_binary_answer(packet: &str, answer: &str) {
    assert_polling_answer(
        &format!("{packet}\x1ebAQID\x1ebBAUG"),
        &[answer, "bAQID", "bBAUG"],
    )
    .await;
}

#[tokio::test]
async fn polling_message_is_echoed_as_message_back() {
    bounded(assert_polling_answer(
        r#"42["message",1,"2",{"3":[true]}]"#,
        &[r#"42["message-back",1,"2",{"3":[true]}]"#],
    ))
    .await;
}

#[tokio::test]
async fn polling_message_with_binary_attachments_is_echoed_as_base64_attachments() {
    bounded(assert_polling_binary_answer(
        &format!(r#"452-["message",1,{PLACEHOLDERS}]"#),
        &format!(r#"452-["message-back",1,{PLACEHOLDERS}]"#),
    ))
    .await;
}

#[tokio::test]
async fn polling_message_with_ack_is_acknowledged_with_the_same_arguments() {
    bounded(assert_polling_answer(
        r#"42456["message-with-ack",1,"2",{"3":[false]}]"#,
        &[r#"43456[1,"2",{"3":[false]}]"#],
    ))
    .await;
}

#[tokio::test]
async fn polling_message_with_ack_and_binary_attachments_gets_a_binary_ack() {
    bounded(assert_polling_binary_answer(
        &format!(r#"452-789["message-with-ack",1,{PLACEHOLDERS}]"#),
        &format!("462-789[1,{PLACEHOLDERS}]"),
    ))
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
        polling_connect(&session, "40", "/", "{}").await;
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
