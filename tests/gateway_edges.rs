//! The gateway at its edges, against real `corral gateway` and `corral node` processes: tokens
//! that are forged, altered, foreign or bare; the handshake it rewrites; the limits on heads,
//! bodies, slow and surplus connections and garbage; nodes that are down, come late or die
//! mid-session; idle WebSocket tunnels; a client that abandons its long-poll; and the graceful
//! shutdown on SIGTERM. Every test ends by checking that the gateway still runs, answers
//! `/healthz` and never panicked.

mod common;
mod common_gateway;
mod common_protocol;

use std::time::{Duration, Instant};

use common::HttpResponse;
use common_gateway::{
    Conn, FAST_HEALTH, Frame, GatewayProcess, Metrics, QUIET_NODE, SEP, SESSION_UNKNOWN, STEP,
    Session, TestNode, free_port, gateway_on_quiet_node, get, request, send, upgrade_request,
    wait_until,
};
use common_protocol::bounded;
use corral_gateway::token::Tokens;
use tokio::net::TcpStream;

fn assert_session_unknown(res: &HttpResponse, what: &str) {
    assert_eq!(
        (res.status, res.text().as_str()),
        (400, SESSION_UNKNOWN),
        "{what}"
    );
    assert_eq!(
        res.header("content-type"),
        Some("application/json"),
        "{what}"
    );
}

/// Case 1: forged, altered, foreign, bare and unknown-node tokens all get the Engine.IO
/// "Session ID unknown" answer on polling GET, POST and a WebSocket upgrade, and the real session
/// next to them is untouched.
#[tokio::test]
async fn bad_tokens_get_session_unknown_and_the_real_session_goes_on() {
    bounded(async {
        let n1 = TestNode::quiet("n1");
        let n2 = TestNode::quiet("n2");
        let mut gw = GatewayProcess::start_fast(
            &[&n1, &n2],
            &["--session-secret", "secret-one-0123456789abcdef0123456789"],
        );
        let mut other = GatewayProcess::start_fast(
            &[&n1],
            &["--session-secret", "secret-two-0123456789abcdef0123456789"],
        );
        gw.wait_ready_nodes(2).await;
        other.wait_ready_nodes(1).await;

        let real = Session::open(gw.addr).await;
        let (node, node_sid) = real.token_parts();
        let tag = real.sid.rsplit('.').next().expect("tag").to_owned();
        let tokens = Tokens::new(b"secret-one-0123456789abcdef0123456789");
        assert!(
            tokens.open(&real.sid).is_some(),
            "the test signs tokens as the gateway does"
        );
        let other_node = if node == "n1" { "n2" } else { "n1" };
        let foreign = Session::open(other.addr).await;

        let bad = [
            (
                "a forged tag",
                format!("{node}.{node_sid}.{}", "A".repeat(tag.len())),
            ),
            (
                "a forged sid with the real tag",
                format!("{node}.{}.{tag}", "B".repeat(node_sid.len())),
            ),
            ("another node id", format!("{other_node}.{node_sid}.{tag}")),
            ("the bare node sid", node_sid.clone()),
            ("another secret's token", foreign.sid.clone()),
            (
                "a node the gateway does not know",
                tokens.seal("n9", &node_sid).expect("sealable"),
            ),
        ];
        for (what, token) in &bad {
            let session = Session::with_sid(gw.addr, token);
            assert_session_unknown(&session.poll().await, &format!("GET with {what}"));
            assert_session_unknown(&session.post(b"40").await, &format!("POST with {what}"));
            let upgrade = send(
                gw.addr,
                &upgrade_request(&format!(
                    "/socket.io/?EIO=4&transport=websocket&sid={token}"
                )),
            )
            .await;
            assert_session_unknown(&upgrade, &format!("WebSocket upgrade with {what}"));
        }
        let errors = gw.metrics().await.errors("session_unknown");
        assert!(
            errors >= (bad.len() * 3) as f64,
            "every refusal is counted: {errors}"
        );

        // The real sessions, on both gateways, never noticed.
        real.post_ok("40").await;
        let hello = real.recv_until(|r| r.starts_with("42")).await;
        assert_eq!(hello, format!(r#"42["hello",{{"node":"{node}"}}]"#));
        foreign.connect_hello().await;

        gw.assert_healthy().await;
        other.assert_healthy().await;
    })
    .await;
}

/// Case 2: the polling open packet is the node's, byte for byte, but for the sid (a token that
/// starts with the node id and a dot); a WebSocket-only handshake and an upgrade from polling
/// work through the tunnel.
#[tokio::test]
async fn the_handshake_is_the_nodes_but_for_the_sid_and_websockets_work() {
    bounded(async {
        const SECRET: &str = "a-secret-of-thirty-two-characters";
        let (n1, mut gw) = gateway_on_quiet_node(&["--session-secret", SECRET]).await;

        let direct = Session::open(n1.addr).await;
        let via = Session::open(gw.addr).await;
        let keys = |packet: &str| {
            let json: serde_json::Value =
                serde_json::from_str(&packet[1..]).expect("open packet JSON");
            let mut keys: Vec<String> = json.as_object().expect("object").keys().cloned().collect();
            keys.sort();
            keys
        };
        assert_eq!(
            keys(&via.open_packet),
            [
                "maxPayload",
                "pingInterval",
                "pingTimeout",
                "sid",
                "upgrades"
            ],
            "{}",
            via.open_packet
        );
        assert_eq!(
            via.open_packet.replace(&via.sid, "SID"),
            direct.open_packet.replace(&direct.sid, "SID"),
            "only the sid differs from the node's own open packet"
        );
        assert!(via.sid.starts_with("n1."), "{}", via.sid);
        let (node, node_sid) = via.token_parts();
        assert_eq!(node, "n1");
        let opened = Tokens::new(SECRET.as_bytes())
            .open(&via.sid)
            .map(|r| (r.node, r.sid));
        assert_eq!(opened, Some(("n1", node_sid.as_str())));

        // WebSocket only: the node's open packet over the tunnel, then Socket.IO.
        let (mut ws, open) = gw.open_tunnel().await;
        assert_eq!(
            keys(&open),
            [
                "maxPayload",
                "pingInterval",
                "pingTimeout",
                "sid",
                "upgrades"
            ]
        );
        assert!(ws.try_send_text("40").await);
        ws.text_until(|t| t.starts_with("40{")).await;
        ws.text_until(|t| t == r#"42["hello",{"node":"n1"}]"#).await;

        // Polling upgraded to WebSocket with the token.
        let mut upgraded = via.websocket().await;
        assert!(upgraded.try_send_text("2probe").await);
        assert_eq!(upgraded.next_frame().await, Frame::Text("3probe".into()));
        assert!(upgraded.try_send_text("5").await);
        assert!(upgraded.try_send_text("40").await);
        upgraded.text_until(|t| t.starts_with("40{")).await;

        gw.assert_healthy().await;
    })
    .await;
}

/// Case 3 (and 9): heads over the limit, bodies over the limit (declared and chunked), a
/// slowloris client and garbage; the gateway answers each as it should, serves others meanwhile
/// and survives.
#[tokio::test]
async fn limits_cut_big_slow_and_garbage_requests_and_the_gateway_survives() {
    bounded(async {
        let (_n1, mut gw) = gateway_on_quiet_node(&[
            "--max-header-bytes",
            "16384",
            "--max-body",
            "1000",
            "--header-read-timeout",
            "1s",
        ])
        .await;
        let handshake = "/socket.io/?EIO=4&transport=polling";

        // Heads: under the limit passes, over it is 431.
        let small = "a".repeat(12_000);
        let res = send(
            gw.addr,
            &request("GET", handshake, &[("Connection", "close"), ("X-Pad", &small)], b""),
        )
        .await;
        assert_eq!(res.status, 200, "a 12 kB head is under 16 kB: {}", res.text());
        let big = "a".repeat(20_000);
        let mut conn = Conn::open(gw.addr).await;
        conn.write(&request("GET", handshake, &[("X-Pad", &big)], b"")).await;
        let res = conn.response().await.expect("an answer to a big head");
        assert_eq!(res.status, 431, "a 20 kB head: {}", res.text());

        // Bodies: a declared length over the limit is refused before any byte is read.
        let victim = Session::open(gw.addr).await;
        let mut conn = Conn::open(gw.addr).await;
        conn.write(
            format!(
                "POST {} HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 5000\r\n\r\n",
                victim.path()
            )
            .as_bytes(),
        )
        .await;
        let res = conn.response().await.expect("an answer to a declared big body");
        assert_eq!(res.status, 413, "{}", res.text());
        assert!(res.text().contains("1000"), "names the limit: {}", res.text());

        // Bodies within the limit go through: a namespace connect and 499 pongs make exactly
        // 1000 bytes (declared); 500 pongs make 999 (chunked).
        let at_limit = format!("40{}", "\u{1e}3".repeat(499));
        assert_eq!(at_limit.len(), 1000);
        let fits = Session::open(gw.addr).await;
        fits.post_ok(&at_limit).await;
        let mut chunked = format!(
            "POST {} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n",
            fits.path()
        )
        .into_bytes();
        let pongs = format!("3{}", "\u{1e}3".repeat(499));
        for part in [&pongs[..500], &pongs[500..]] {
            chunked.extend_from_slice(format!("{:x}\r\n{part}\r\n", part.len()).as_bytes());
        }
        chunked.extend_from_slice(b"0\r\n\r\n");
        let res = send(gw.addr, &chunked).await;
        assert_eq!((res.status, res.text().as_str()), (200, "ok"), "999 chunked bytes");

        // A chunked body with no length is cut when it passes the limit.
        let mut chunked = format!(
            "POST {} HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n",
            victim.path()
        )
        .into_bytes();
        for _ in 0..3 {
            chunked.extend_from_slice(format!("{:x}\r\n{}\r\n", 800, "4".repeat(800)).as_bytes());
        }
        chunked.extend_from_slice(b"0\r\n\r\n");
        let mut conn = Conn::open(gw.addr).await;
        conn.write(&chunked).await;
        let res = conn.response().await.expect("an answer to a chunked big body");
        assert_eq!(res.status, 413, "{}", res.text());
        assert!(res.text().contains("1000"), "names the limit: {}", res.text());
        let too_large = gw.metrics().await.errors("payload_too_large");
        assert!(too_large >= 2.0, "both refusals counted: {too_large}");

        // Slowloris: half a head, then nothing. Others are served meanwhile; it is cut after
        // the header read timeout.
        let mut slow = Conn::open(gw.addr).await;
        slow.write(format!("GET {handshake} HTTP/1.1\r\nHost: x\r\nX-Slow:").as_bytes())
            .await;
        let started = Instant::now();
        let served = Session::open(gw.addr).await;
        assert!(served.sid.starts_with("n1."));
        assert!(
            slow.closed_within(Duration::ZERO).await.is_none(),
            "the slow client is still connected while another is served"
        );
        let cut = slow.closed_within(Duration::from_secs(5)).await;
        let waited = started.elapsed();
        let sent = cut.unwrap_or_else(|| panic!("slowloris still connected after 5 s"));
        assert!(
            waited >= Duration::from_millis(800) && waited < Duration::from_secs(4),
            "cut after about the 1 s header read timeout, not {waited:?}"
        );
        let sent = String::from_utf8_lossy(&sent);
        assert!(
            sent.is_empty() || sent.starts_with("HTTP/1.1 408"),
            "nothing or a 408 before the close: {sent:?}"
        );

        // Garbage: a 400 or a close, never a hang or a panic.
        for garbage in [
            &b"\x00\xff\x16\x03\x01garbage\r\n\r\n"[..],
            b"NOT HTTP AT ALL\r\n\r\n",
            b"GET / HTTP/9.9\r\n\r\n",
            b"GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
            b"\r\n\r\n\r\n\r\n",
            b"POST /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
            b"POST /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
            b"GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nX-Bad\x00Name: 1\r\n\r\n",
        ] {
            let mut conn = Conn::open(gw.addr).await;
            conn.write(garbage).await;
            let answer = conn
                .closed_within(STEP)
                .await
                .unwrap_or_else(|| panic!("{garbage:?}: connection left open"));
            let answer = String::from_utf8_lossy(&answer);
            assert!(
                answer.is_empty() || answer.starts_with("HTTP/1.1 400"),
                "{garbage:?} answered {answer:?}"
            );
        }

        // Case 9: after all the abuse the gateway is up, healthy and never panicked, and still
        // serves sessions.
        Session::open(gw.addr).await.connect_hello().await;
        gw.assert_healthy().await;
    })
    .await;
}

/// Case 3: a head limit below what the HTTP parser can enforce (8192 bytes) is refused when
/// the gateway starts, rather than silently raised.
#[test]
fn a_head_limit_below_the_parsers_minimum_is_refused_at_start() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_corral"))
        .args([
            "gateway",
            "--node",
            "n1=http://127.0.0.1:1",
            "--listen",
            "127.0.0.1:0",
        ])
        .args([
            "--admin-listen",
            "127.0.0.1:0",
            "--max-header-bytes",
            "4096",
        ])
        .output()
        .expect("run corral gateway");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--max-header-bytes must be at least 8192"),
        "{stderr}"
    );
}

/// Case 3: `--max-connections 5`: the sixth concurrent connection gets a 503 and is closed,
/// the five keep working, and a slot freed is taken again.
#[tokio::test]
async fn the_sixth_connection_is_refused_and_the_five_go_on() {
    bounded(async {
        let (_n1, mut gw) = gateway_on_quiet_node(&["--max-connections", "5"]).await;

        let mut five = Vec::new();
        for _ in 0..5 {
            let mut conn = Conn::open(gw.addr).await;
            conn.expect_healthz().await;
            five.push(conn);
        }
        let mut sixth = Conn::open(gw.addr).await;
        let refused = sixth.response().await.expect("a refusal");
        assert_eq!(refused.status, 503, "{}", refused.text());
        assert_eq!(refused.text(), "too many connections\n");
        assert!(
            sixth.closed_within(STEP).await.is_some(),
            "the sixth connection is closed"
        );
        for conn in &mut five {
            conn.expect_healthz().await;
        }

        // One of the five goes; its slot is free again.
        drop(five.pop());
        wait_until("a freed slot is served", STEP, async || {
            let mut conn = Conn::open(gw.addr).await;
            conn.write(&request("GET", "/healthz", &[("Connection", "close")], b""))
                .await;
            conn.response().await.is_some_and(|res| res.status == 200)
        })
        .await;
        for conn in &mut five {
            conn.expect_healthz().await;
        }
        gw.assert_healthy().await;
    })
    .await;
}

/// Case 4: with no node reachable a new session gets a short 503; a node that comes up later
/// on a configured address takes sessions after a health interval.
#[tokio::test]
async fn no_ready_node_is_a_503_until_a_node_comes_up() {
    bounded(async {
        let port = free_port();
        let ghost_addr = format!("127.0.0.1:{port}");
        // A real node, configured under another id: the gateway must not trust it.
        let liar = TestNode::quiet("real-id");
        let mut gw = GatewayProcess::start(
            &[
                ("ghost", ghost_addr.parse().expect("address")),
                ("liar", liar.addr),
            ],
            &FAST_HEALTH,
        );
        wait_until("readyz turns 503", STEP, async || {
            get(gw.admin, "/readyz").await.status == 503
        })
        .await;

        let res = get(gw.addr, "/socket.io/?EIO=4&transport=polling").await;
        assert_eq!(res.status, 503, "{}", res.text());
        assert!(
            !res.body.is_empty() && res.body.len() < 200,
            "a short body: {:?}",
            res.text()
        );
        let metrics = gw.metrics().await;
        assert!(metrics.errors("no_node") >= 1.0);
        assert!(
            gw.logs()
                .iter()
                .any(|l| l.contains("the address answers with another node id")),
            "the id mismatch is logged"
        );

        let ghost = TestNode::start_at("ghost", &ghost_addr, &QUIET_NODE);
        let came = Instant::now();
        wait_until(
            "the late node takes a session",
            Duration::from_secs(5),
            async || {
                let res = get(gw.addr, "/socket.io/?EIO=4&transport=polling").await;
                match res.status {
                    503 => false,
                    200 => {
                        assert!(res.text().contains(r#""sid":"ghost."#), "{}", res.text());
                        true
                    }
                    other => panic!("unexpected {other}: {}", res.text()),
                }
            },
        )
        .await;
        assert!(
            came.elapsed() < Duration::from_secs(3),
            "within a few health intervals: {:?}",
            came.elapsed()
        );
        assert_eq!(get(gw.admin, "/readyz").await.status, 200);
        drop(ghost);
        gw.assert_healthy().await;
    })
    .await;
}

/// Case 5: a node killed mid-session: its session's next request is told to start over, new
/// sessions go to the live node, and the admin metrics count both.
#[tokio::test]
async fn a_killed_nodes_sessions_start_over_and_new_ones_go_to_the_live_node() {
    bounded(async {
        let mut n1 = TestNode::quiet("n1");
        let n2 = TestNode::quiet("n2");
        let mut gw = GatewayProcess::start_ready(
            &[&n1, &n2],
            &["--affinity", "none", "--balance", "round-robin"],
        )
        .await;

        let mut on = std::collections::BTreeMap::new();
        for _ in 0..6 {
            let session = Session::open(gw.addr).await;
            on.entry(session.token_parts().0).or_insert(session);
        }
        let doomed = on.remove("n1").expect("round robin used n1");
        let survivor = on.remove("n2").expect("round robin used n2");
        doomed.post_ok("40").await;
        survivor.post_ok("40").await;
        doomed.recv_until(|r| r.starts_with("42[\"hello\"")).await;
        let (_, doomed_sid) = doomed.token_parts();
        let taken = n1.polls_taken(&doomed_sid);
        // A long-poll waiting at n1 when it dies must end, not hang.
        let pending = doomed.spawn_poll();
        n1.wait_polls_taken(&doomed_sid, taken + 1).await;
        let before = gw.metrics().await;

        n1.kill();
        let cut = pending.await.expect("the pending poll");
        // The node failed mid-answer: a 502 (or the start-over answer); both make a client
        // start over.
        assert!(
            cut.status == 502 || (cut.status == 400 && cut.text() == SESSION_UNKNOWN),
            "the poll pending at the dead node ends with an error: {} {}",
            cut.status,
            cut.text()
        );
        assert_session_unknown(
            &doomed.poll().await,
            "the next poll of a dead node's session",
        );
        assert_session_unknown(&doomed.post(b"3").await, "a POST of a dead node's session");

        // The live node's session goes on (its hello was waiting for this poll).
        survivor
            .recv_until(|r| r == r#"42["hello",{"node":"n2"}]"#)
            .await;
        for _ in 0..4 {
            let fresh = Session::open(gw.addr).await;
            assert!(fresh.sid.starts_with("n2."), "{}", fresh.sid);
        }

        let after = gw.metrics().await;
        let errors = |m: &Metrics| m.errors("session_unknown") + m.errors("upstream_connect");
        assert!(
            errors(&after) >= errors(&before) + 2.0,
            "the refused requests are counted:\n{}",
            after.0
        );
        let decisions = |m: &Metrics, node| {
            m.value("corral_gateway_routing_decisions_total", &[("node", node)])
        };
        assert!(
            decisions(&after, "n2") >= decisions(&before, "n2") + 4.0,
            "the new sessions' decisions are counted:\n{}",
            after.0
        );
        assert!(decisions(&before, "n1") >= 1.0, "{}", before.0);
        gw.assert_healthy().await;
    })
    .await;
}

/// Case 6: a WebSocket tunnel with no byte either way for `--tunnel-idle-timeout` is closed;
/// one with traffic stays open; the tunnel gauge follows.
#[tokio::test]
async fn idle_tunnels_close_and_busy_ones_stay() {
    bounded(async {
        let (_n1, mut gw) = gateway_on_quiet_node(&["--tunnel-idle-timeout", "1s"]).await;
        let tunnels = |gw: &GatewayProcess| {
            let admin = gw.admin;
            async move {
                let res = get(admin, "/metrics").await;
                Metrics(res.text()).value("corral_gateway_tunnels", &[("node", "n1")])
            }
        };

        // The busy one: a pong-sized packet every 200 ms for 3 s (three idle timeouts). The
        // node sends its first ping at once, then none for 30 s.
        let (mut busy, _) = gw.open_tunnel().await;
        let busy_task = tokio::spawn(async move {
            let until = Instant::now() + Duration::from_secs(3);
            while Instant::now() < until {
                assert!(busy.try_send_text("3").await, "the busy tunnel broke");
                match busy.next_frame_within(Duration::from_millis(200)).await {
                    None => {}
                    Some(Frame::Text(ping)) if ping == "2" => {}
                    Some(frame) => panic!("the busy tunnel got {frame:?}"),
                }
            }
            busy
        });

        // The idle one answers nothing: after the open packet and the first ping, no byte moves.
        let (mut idle, _) = gw.open_tunnel().await;
        let mut last_byte = Instant::now();
        wait_until("two tunnels counted", STEP, async || {
            tunnels(&gw).await == 2.0
        })
        .await;
        loop {
            match idle.next_frame_within(Duration::from_secs(5)).await {
                Some(Frame::Text(ping)) if ping == "2" => last_byte = Instant::now(),
                Some(Frame::Closed) => break,
                other => panic!("the idle tunnel is not closed: {other:?}"),
            }
        }
        let after = last_byte.elapsed();
        assert!(
            after >= Duration::from_millis(700) && after < Duration::from_millis(3500),
            "closed after about 1 s of silence, not {after:?}"
        );
        wait_until("the idle tunnel uncounted", STEP, async || {
            tunnels(&gw).await == 1.0
        })
        .await;

        let mut busy = busy_task.await.expect("the busy client");
        assert!(busy.try_send_text("40").await);
        busy.text_until(|t| t.starts_with("40{")).await;
        drop(busy);
        wait_until("no tunnel counted", STEP, async || {
            tunnels(&gw).await == 0.0
        })
        .await;
        gw.assert_healthy().await;
    })
    .await;
}

/// Case 7: on SIGTERM the gateway stops accepting at once, lets a pending long-poll end with
/// the node's answer, closes WebSocket tunnels and exits 0 within the drain timeout.
#[tokio::test]
async fn sigterm_refuses_new_connections_finishes_polls_closes_tunnels_and_exits_zero() {
    bounded(async {
        let (n1, mut gw) = gateway_on_quiet_node(&["--drain-timeout", "3s"]).await;
        let gw_addr = gw.addr;

        let session = Session::open(gw.addr).await;
        let (_, node_sid) = session.token_parts();
        // The node pings at once; answered, the next ping is 30 s away.
        session.answer_first_ping().await;
        // A long-poll, waiting at the node.
        let pending = session.spawn_poll();
        n1.wait_polls_taken(&node_sid, 2).await;
        let (mut ws, _) = gw.open_tunnel().await;

        // An idle kept-alive connection, which has nothing left to finish.
        let mut idle = Conn::open(gw.addr).await;
        idle.expect_healthz().await;

        let signalled = Instant::now();
        gw.terminate();
        wait_until(
            "new connections refused",
            Duration::from_secs(1),
            async || TcpStream::connect(gw_addr).await.is_err(),
        )
        .await;
        assert!(
            idle.closed_within(Duration::from_secs(1)).await.is_some(),
            "the idle connection is closed at once"
        );
        assert!(!pending.is_finished(), "the poll is still pending");

        // The node answers the poll (a client's namespace connect, sent to the node directly).
        let direct = Session::with_sid(n1.addr, &node_sid);
        direct.post_ok("40").await;
        let res = pending.await.expect("the poll task");
        assert_eq!(res.status, 200, "{}", res.text());
        assert!(
            res.text().split(SEP).any(|r| r.starts_with("40{")),
            "the node's answer: {}",
            res.text()
        );

        assert!(
            ws.closed_within(Duration::from_secs(3)).await,
            "the tunnel is closed"
        );
        gw.expect_exit_zero(Duration::from_secs(4));
        let took = signalled.elapsed();
        assert!(
            took < Duration::from_millis(2500),
            "exited once the poll was answered and the tunnel closed, well within the 3 s drain \
             timeout: {took:?}"
        );
        assert!(gw.logs().iter().any(|l| l.contains("gateway stopped")));
        gw.assert_never_panicked();
    })
    .await;
}

/// Case 8: a client that drops its pending long-poll must not leave the poll hanging at the
/// node: the next poll is taken, not refused as a second concurrent poll (which would close the
/// session).
#[tokio::test]
async fn a_dropped_poll_does_not_block_the_next_one() {
    bounded(async {
        let n1 = TestNode::start(
            "n1",
            &[
                "--app",
                "bench",
                "--ping-interval",
                "1500ms",
                "--ping-timeout",
                "5s",
            ],
        );
        let mut gw = GatewayProcess::start_ready(&[&n1], &[]).await;
        let session = Session::open(gw.addr).await;
        let (_, node_sid) = session.token_parts();

        // Answer the ping first, so the next one is a whole interval away.
        session.answer_first_ping().await;

        let taken = n1.polls_taken(&node_sid);
        let abandoned = session.start_poll().await;
        n1.wait_polls_taken(&node_sid, taken + 1).await;
        drop(abandoned);
        // The gateway passes the abort on: the node lets go of the poll (a poll sent before it
        // did would be a second concurrent one, which Engine.IO refuses).
        n1.wait_polls_abandoned(1).await;

        let next = session.poll().await;
        assert_eq!(
            (next.status, next.text().as_str()),
            (200, "2"),
            "the next poll is taken and gets the next ping"
        );
        assert_eq!(n1.polls_taken(&node_sid), taken + 2);
        session.post_ok("3").await;
        session.connect_hello().await;
        assert!(
            !n1.logs().iter().any(|l| l.contains("MultipleHttpPolling")),
            "no concurrent poll at the node"
        );
        gw.assert_healthy().await;
    })
    .await;
}

/// Case 7, the bound: a long-poll that never gets an answer cannot hold the gateway past
/// `--drain-timeout`; it still exits 0.
#[tokio::test]
async fn sigterm_exits_zero_within_the_drain_timeout_even_with_a_poll_left_pending() {
    bounded(async {
        let (n1, mut gw) = gateway_on_quiet_node(&["--drain-timeout", "3s"]).await;
        let session = Session::open(gw.addr).await;
        let (_, node_sid) = session.token_parts();
        session.answer_first_ping().await;
        let mut stuck = session.start_poll().await;
        n1.wait_polls_taken(&node_sid, 2).await;

        let signalled = Instant::now();
        gw.terminate();
        gw.expect_exit_zero(Duration::from_secs(6));
        let took = signalled.elapsed();
        assert!(
            took >= Duration::from_millis(2500) && took < Duration::from_secs(4),
            "the pending poll was given the 3 s drain timeout, no more: {took:?}"
        );
        assert!(
            stuck.closed_within(STEP).await.is_some(),
            "the stuck client's connection ends with the gateway"
        );
        gw.assert_never_panicked();
    })
    .await;
}

/// Connections refused over `--max-connections` are counted, as the metric's help says
/// (`corral_gateway_errors_total{kind="too_many_connections"}`).
#[tokio::test]
async fn refused_connections_are_counted() {
    bounded(async {
        let (_n1, mut gw) = gateway_on_quiet_node(&["--max-connections", "1"]).await;
        let mut held = Conn::open(gw.addr).await;
        held.expect_healthz().await;
        let mut refused = Conn::open(gw.addr).await;
        let res = refused.response().await.expect("a refusal");
        assert_eq!(res.status, 503);
        let counted = gw.metrics().await.errors("too_many_connections");
        assert_eq!(counted, 1.0, "the refusal is counted");
        gw.assert_healthy().await;
    })
    .await;
}

/// `--max-connections` counts client connections; a WebSocket tunnel is one for as long as it
/// is open, so tunnels must not let more connections in than the limit.
#[tokio::test]
async fn websocket_tunnels_count_against_the_connection_limit() {
    bounded(async {
        let (_n1, mut gw) = gateway_on_quiet_node(&["--max-connections", "2"]).await;
        let mut tunnels = Vec::new();
        for _ in 0..2 {
            tunnels.push(gw.open_tunnel().await.0);
        }
        wait_until("two tunnels open", STEP, async || {
            gw.metrics().await.value("corral_gateway_tunnels", &[]) == 2.0
        })
        .await;
        let mut third = Conn::open(gw.addr).await;
        third
            .write(&request("GET", "/healthz", &[("Connection", "close")], b""))
            .await;
        let res = third.response().await.expect("an answer");
        assert_eq!(
            res.status,
            503,
            "a third connection while two tunnels are open (--max-connections 2): {}",
            res.text()
        );
        gw.assert_healthy().await;
    })
    .await;
}
