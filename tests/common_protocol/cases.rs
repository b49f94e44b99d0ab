//! The Engine.IO cases both conformance suites run: the Engine.IO suite on its echo endpoint
//! `/engine.io`, the Socket.IO suite on `/socket.io` (the "Engine.IO protocol" part of its
//! suite). Each case takes the base path and starts its own node; where one suite checks more
//! than the other (an echo, a timing), the case hands the caller what those checks need.

use std::time::{Duration, Instant};

use super::{
    Frame, HEARTBEAT_CLOSE_BOUND, PING_INTERVAL_MS, Polling, SEP, Ws, assert_sid_unknown,
    check_open_packet, engine_path, expect_ws_refused, start_node,
};
use crate::common;

// ---------------------------------------------------------------------------------------------
// Handshake
// ---------------------------------------------------------------------------------------------

/// A polling handshake is answered with the open packet alone, with the reference settings.
pub async fn polling_handshake_sends_an_open_packet_with_the_reference_settings(base: &str) {
    let node = start_node();
    let res = common::get(node.addr, &engine_path(base, "EIO=4&transport=polling")).await;
    assert_eq!(res.status, 200, "{}", res.text());
    let body = res.text();
    // One packet only: no record separator, and the open packet is the whole payload.
    assert!(!body.contains(SEP), "more than the open packet: {body:?}");
    check_open_packet(&body, &["websocket"]);
}

/// A WebSocket handshake is answered with the open packet, with `upgrades: []`.
pub async fn websocket_handshake_sends_an_open_packet_without_upgrades(base: &str) {
    let node = start_node();
    // `Ws::open` checks the keys and values of the open packet, with `upgrades: []`.
    let (ws, sid) = Ws::open(&node, base).await;
    assert!(!sid.is_empty());
    ws.close().await;
}

/// A WebSocket handshake without a valid `EIO` or `transport` is refused.
pub async fn websocket_handshake_without_a_valid_eio_or_transport_is_refused(base: &str) {
    let node = start_node();
    for query in [
        "transport=websocket",
        "EIO=abc&transport=websocket",
        "EIO=4",
        "EIO=4&transport=abc",
    ] {
        expect_ws_refused(&node.ws_url(&engine_path(base, query))).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Heartbeat
// ---------------------------------------------------------------------------------------------

/// Three heartbeat rounds over polling: each poll is a lone ping, answered with a pong. Then
/// `then` gets the session, still open, and the time from the handshake to the third pong.
pub async fn polling_heartbeat_pings_and_pongs(
    base: &str,
    then: impl AsyncFnOnce(&Polling, Duration),
) {
    let node = start_node();
    let session = Polling::open(node.addr, base).await;
    let start = Instant::now();
    for round in 0..3 {
        let res = session.get().await;
        assert_eq!(res.status, 200, "round {round}: {}", res.text());
        assert_eq!(res.text(), "2", "round {round}: expected a ping");
        session.post_ok("3").await;
    }
    then(&session, start.elapsed()).await;
}

/// A polling session that leaves its first ping unanswered is closed, and sends nothing but a
/// close packet meanwhile. Returns the time from the ping to the close.
pub async fn polling_session_without_pong_is_closed_after_the_ping_timeout(base: &str) -> Duration {
    let node = start_node();
    let session = Polling::open(node.addr, base).await;
    let res = session.get().await;
    assert_eq!(res.status, 200);
    assert_eq!(res.text(), "2", "expected a ping");
    let pinged = Instant::now();
    // No pong: the next polls must end in a closed session (400, or a close packet `1`).
    let seen = session.wait_closed(HEARTBEAT_CLOSE_BOUND).await;
    assert!(
        seen.iter().all(|p| p == "1"),
        "the session sent {seen:?} while waiting for its pong"
    );
    pinged.elapsed()
}

/// Three heartbeat rounds over WebSocket: each frame is a ping, answered with a pong. Then `then`
/// gets the connection, still open, before it is closed.
pub async fn websocket_heartbeat_pings_and_pongs(base: &str, then: impl AsyncFnOnce(&mut Ws)) {
    let node = start_node();
    let (mut ws, _) = Ws::open(&node, base).await;
    for round in 0..3 {
        assert_eq!(
            ws.next_frame().await,
            Frame::text("2"),
            "round {round}: expected a ping"
        );
        ws.send_text("3").await;
    }
    then(&mut ws).await;
    ws.close().await;
}

/// The first ping of a polling session comes a ping interval after the handshake.
pub async fn polling_first_ping_comes_one_ping_interval_after_the_handshake(base: &str) {
    let node = start_node();
    let start = Instant::now();
    let session = Polling::open(node.addr, base).await;
    let res = session.get().await;
    let elapsed = start.elapsed();
    assert_eq!(res.status, 200);
    assert_eq!(res.text(), "2", "expected a ping");
    assert_first_ping_not_early(elapsed);
}

/// The first ping of a WebSocket session comes a ping interval after the handshake.
pub async fn websocket_first_ping_comes_one_ping_interval_after_the_handshake(base: &str) {
    let node = start_node();
    let start = Instant::now();
    let (mut ws, _) = Ws::open(&node, base).await;
    assert_eq!(ws.next_frame().await, Frame::text("2"), "expected a ping");
    assert_first_ping_not_early(start.elapsed());
    ws.close().await;
}

/// Checks the time from just before the handshake to the first ping.
fn assert_first_ping_not_early(elapsed: Duration) {
    // The server opened the session after the clock started, so a ping sent pingInterval after
    // the open cannot arrive earlier than this.
    assert!(
        elapsed >= Duration::from_millis(PING_INTERVAL_MS - 10),
        "first ping {elapsed:?} after the handshake, pingInterval is {PING_INTERVAL_MS} ms"
    );
}

// ---------------------------------------------------------------------------------------------
// Close
// ---------------------------------------------------------------------------------------------

/// A close packet over polling ends the session, and the poll pending at that moment with a
/// noop.
pub async fn polling_close_packet_ends_the_session_and_the_pending_poll_with_a_noop(base: &str) {
    let node = start_node();
    let session = Polling::open(node.addr, base).await;
    // After a heartbeat round the next ping is a whole interval away, so the poll below can only
    // end because of the close.
    session.heartbeat_round().await;
    let poller = session.clone();
    let pending = tokio::spawn(async move { poller.get().await });
    // The poll must be pending before the close packet; nothing observable says when the server
    // has taken it, so give it a moment (well under the 300 ms ping interval).
    tokio::time::sleep(Duration::from_millis(100)).await;
    session.post_ok("1").await;
    let res = pending.await.expect("poll task");
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.text(), "6");
    assert_sid_unknown(node.addr, base, &session.sid).await;
}

/// A close packet over WebSocket ends the session.
///
/// As in the suites, the client sends `1` and then stays silent. The reference JavaScript server
/// ignores a close packet over WebSocket and ends the session through the heartbeat (or, below
/// `/socket.io`, the connect timeout), so only "the session ends, within the heartbeat bound" is
/// reference behaviour here.
pub async fn websocket_close_packet_ends_the_session(base: &str) {
    let node = start_node();
    let (mut ws, sid) = Ws::open(&node, base).await;
    ws.send_text("1").await;
    let (seen, _) = ws.expect_close_ignoring_pings(HEARTBEAT_CLOSE_BOUND).await;
    assert!(
        seen.iter()
            .all(|f| *f == Frame::text("2") || *f == Frame::text("1")),
        "frames after the close packet: {seen:?}"
    );
    assert_sid_unknown(node.addr, base, &sid).await;
}
