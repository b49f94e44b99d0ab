//! The client engine against a real node (in-process, `--app bench` or `--app conformance`),
//! and against scripted fake servers for what a good server never does.

use std::{
    collections::VecDeque,
    net::{IpAddr, SocketAddr},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use corral_loadtest::client::{
    AckPolicy, ConnectError, DisconnectReason, Events, Incoming, NO_ARGS, Prepared, Reply, Session,
    SessionConfig, SourceIps, Target, Transport, TransportMix, TransportMode,
};
use corral_node::{AppKind, Io, Node, NodeConfig};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{RwLock, Semaphore},
    task::JoinHandle,
};

const WAIT: Duration = Duration::from_secs(20);
const MODES: [TransportMode; 3] = [
    TransportMode::Polling,
    TransportMode::WebSocket,
    TransportMode::Upgrade,
];

/// The load check takes the write side; tests with tight server timings the read side, so
/// they do not run while thousands of sessions compete for the two cores.
static HEAVY: RwLock<()> = RwLock::const_new(());

async fn light() -> tokio::sync::RwLockReadGuard<'static, ()> {
    HEAVY.read().await
}

/// A node running in this process, stopped when dropped.
struct TestNode {
    addr: SocketAddr,
    io: Io,
    task: JoinHandle<()>,
}

impl Drop for TestNode {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestNode {
    async fn start(app: AppKind, tweak: impl FnOnce(&mut NodeConfig)) -> TestNode {
        let mut config = NodeConfig {
            listen: "127.0.0.1:0".parse().expect("test fixture"),
            app,
            ..NodeConfig::default()
        };
        tweak(&mut config);
        let node = Node::bind(config).await.expect("node binds");
        let addr = node.local_addr();
        let io = node.io().clone();
        let task = tokio::spawn(node.run(std::future::pending()));
        TestNode { addr, io, task }
    }

    async fn bench() -> TestNode {
        TestNode::start(AppKind::Bench, |_| {}).await
    }

    fn config(&self, transport: TransportMode) -> SessionConfig {
        let mut config = SessionConfig::new(Target::from_addr(self.addr));
        config.transport = transport;
        config
    }

    fn sockets(&self) -> usize {
        self.io.sockets().len()
    }
}

/// The next event called `name` (others are skipped); panics on a disconnect or timeout.
async fn event(events: &mut Events, name: &str) -> (Vec<Value>, Instant) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let next = tokio::time::timeout_at(deadline, events.recv())
            .await
            .unwrap_or_else(|_| panic!("no {name:?} event in time"));
        match next {
            Some(Incoming::Event {
                event,
                args,
                received_at,
                ..
            }) if event == name => return (args.values().expect("test fixture"), received_at),
            Some(Incoming::Disconnected { reason, .. }) => {
                panic!("disconnected ({reason}) while waiting for {name:?}")
            }
            None => panic!("events ended while waiting for {name:?}"),
            Some(_) => {}
        }
    }
}

/// Waits until an upgrading session is on WebSocket.
async fn upgraded(session: &Session) {
    let deadline = Instant::now() + WAIT;
    while session.transport() != Transport::WebSocket {
        assert!(Instant::now() < deadline, "not upgraded in time");
        assert!(session.is_connected(), "disconnected while upgrading");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits for the end: the disconnect reason, then the end of the events.
async fn disconnected(events: &mut Events) -> DisconnectReason {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Err(_) => panic!("no disconnect in time"),
            Ok(Some(Incoming::Disconnected { reason, .. })) => {
                let end = tokio::time::timeout(WAIT, events.recv()).await;
                assert!(matches!(end, Ok(None)), "nothing follows a disconnect");
                return reason;
            }
            Ok(Some(_)) => {}
            Ok(None) => panic!("events ended without a disconnect"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_transport_connects_gets_hello_and_closes() {
    let _light = light().await;
    let node = TestNode::bench().await;
    for mode in MODES {
        let (session, mut events) = Session::connect(node.config(mode)).await.unwrap();
        let (hello, _) = event(&mut events, "hello").await;
        assert!(hello[0]["node"].is_string(), "{mode}: {hello:?}");
        assert!(session.is_connected());
        assert!(!session.sid().is_empty());
        assert!(!session.socket_id().is_empty());
        match mode {
            TransportMode::Polling => assert_eq!(session.transport(), Transport::Polling),
            TransportMode::WebSocket => assert_eq!(session.transport(), Transport::WebSocket),
            TransportMode::Upgrade => {
                upgraded(&session).await;
                // Still works on the new transport.
                let ack = session
                    .emit_with_ack("echo", "after upgrade", WAIT)
                    .await
                    .unwrap();
                assert_eq!(ack.args.decode::<String>().unwrap(), "after upgrade");
            }
        }
        session.close().await;
        assert!(!session.is_connected());
        assert_eq!(
            disconnected(&mut events).await,
            DisconnectReason::ClientClose
        );
        assert!(session.emit("echo", "late").is_err());
    }
    // The node saw every session leave.
    let deadline = Instant::now() + WAIT;
    while node.sockets() > 0 {
        assert!(Instant::now() < deadline, "{} sockets left", node.sockets());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_acks_carry_several_arguments_and_binary() {
    let _light = light().await;
    let node = TestNode::bench().await;
    let blob = Bytes::from((0..=255u8).collect::<Vec<_>>());
    for mode in MODES {
        let (session, mut events) = Session::connect(node.config(mode)).await.unwrap();
        event(&mut events, "hello").await;
        let sent = (
            "text é".to_owned(),
            42u32,
            json!({"a": [1, 2], "b": null}),
            blob.clone(),
        );
        let ack = session.emit_with_ack("echo", &sent, WAIT).await.unwrap();
        let back: (String, u32, Value, Bytes) = ack.args.decode().unwrap();
        assert_eq!(back, sent, "{mode}");
        assert_eq!(ack.args.attachments().len(), 1);

        // No argument at all, and the answer delivered as an event.
        let id = session.emit_expecting_ack("echo", &NO_ARGS).unwrap();
        let got = tokio::time::timeout(WAIT, async {
            loop {
                if let Some(Incoming::Ack { id: got, args, .. }) = events.recv().await {
                    break (got, args.values().unwrap());
                }
            }
        })
        .await
        .unwrap();
        assert_eq!(got, (id, vec![]));

        // A prepared event is sent as is.
        let prepared = Prepared::event("/", "join", "prepared-room").unwrap();
        session.send(&prepared).unwrap();
        let wrong = Prepared::event("/other", "join", "x").unwrap();
        assert!(session.send(&wrong).is_err());

        // Acks that never come time out, and are forgotten.
        let silent = session
            .emit_with_ack("no-such-event", &1, Duration::from_millis(200))
            .await;
        assert_eq!(
            silent.unwrap_err(),
            corral_loadtest::client::AckError::Timeout
        );
        session.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_ack_requests_are_answered() {
    let _light = light().await;
    let node = TestNode::bench().await;
    for mode in MODES {
        // A handler.
        let mut config = node.config(mode);
        config.ack_policy = AckPolicy::handler(|event, args| {
            assert_eq!(event, "ask");
            let n: u32 = args.decode().ok()?;
            Reply::new(&("answered", n + 1)).ok()
        });
        let (session, mut events) = Session::connect(config).await.unwrap();
        event(&mut events, "hello").await;
        let ack = session.emit_with_ack("ask", &41, WAIT).await.unwrap();
        assert_eq!(
            ack.args.decode::<(String, u32)>().unwrap(),
            ("answered".into(), 42),
            "{mode}"
        );
        let (asked, _) = event(&mut events, "ask").await;
        assert_eq!(asked, vec![json!(41)]);
        session.close().await;

        // The default: echo, binary included.
        let (session, mut events) = Session::connect(node.config(mode)).await.unwrap();
        event(&mut events, "hello").await;
        let bin = Bytes::from_static(b"\x00bin\xff");
        let ack = session
            .emit_with_ack("ask", &("x", bin.clone()), WAIT)
            .await
            .unwrap();
        assert_eq!(
            ack.args.decode::<(String, Bytes)>().unwrap(),
            ("x".into(), bin)
        );
        session.close().await;

        // By hand.
        let mut config = node.config(mode);
        config.ack_policy = AckPolicy::Manual;
        let (session, mut events) = Session::connect(config).await.unwrap();
        event(&mut events, "hello").await;
        let asking = {
            let session = session.clone();
            tokio::spawn(async move { session.emit_with_ack("ask", "q", WAIT).await })
        };
        let id = tokio::time::timeout(WAIT, async {
            loop {
                if let Some(Incoming::Event {
                    event,
                    ack: Some(id),
                    ..
                }) = events.recv().await
                {
                    assert_eq!(event, "ask");
                    break id;
                }
            }
        })
        .await
        .unwrap();
        session.ack(id, &Reply::new("by hand").unwrap()).unwrap();
        let ack = asking.await.unwrap().unwrap();
        assert_eq!(ack.args.decode::<String>().unwrap(), "by hand");
        session.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_reaches_every_member_of_the_room() {
    let _light = light().await;
    let node = TestNode::bench().await;
    let mut members = Vec::new();
    let mut inboxes = Vec::new();
    for mode in MODES {
        let (session, mut events) = Session::connect(node.config(mode)).await.unwrap();
        event(&mut events, "hello").await;
        let ack = session.emit_with_ack("join", "r1", WAIT).await.unwrap();
        let joined: Value = ack.args.decode().unwrap();
        assert_eq!(joined["room"], "r1");
        members.push(session);
        inboxes.push(events);
    }
    let (_outsider, mut outsider_events) = Session::connect(node.config(TransportMode::WebSocket))
        .await
        .unwrap();
    event(&mut outsider_events, "hello").await;

    for (i, publisher) in members.iter().enumerate() {
        let sent_at = Instant::now();
        let payload = json!({"seq": i, "from": i});
        let ack = publisher
            .emit_with_ack("publish", &("r1", &payload), WAIT)
            .await
            .unwrap();
        assert!(ack.args.decode::<Value>().unwrap()["node"].is_string());
        for events in inboxes.iter_mut() {
            let (message, received_at) = event(events, "message").await;
            assert_eq!(message, vec![json!("r1"), payload.clone()]);
            assert!(received_at >= sent_at);
        }
    }
    // Not a member: nothing.
    let nothing = tokio::time::timeout(Duration::from_millis(300), outsider_events.recv()).await;
    assert!(nothing.is_err(), "{nothing:?}");

    // Leave: no more messages.
    members[0].emit_with_ack("leave", "r1", WAIT).await.unwrap();
    members[1]
        .emit_with_ack("publish", &("r1", "after leave"), WAIT)
        .await
        .unwrap();
    let nothing = tokio::time::timeout(Duration::from_millis(300), inboxes[0].recv()).await;
    assert!(nothing.is_err(), "{nothing:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaces_and_auth() {
    let _light = light().await;
    let node = TestNode::start(AppKind::Conformance, |_| {}).await;
    for mode in MODES {
        for (namespace, auth) in [
            ("/", Some(json!({"token": "abc"}))),
            ("/custom", Some(json!({"user": "é", "n": 1}))),
            ("custom", None),
        ] {
            let mut config = node.config(mode);
            config.namespace = namespace.into();
            config.auth = auth.clone();
            let (session, mut events) = Session::connect(config).await.unwrap();
            let (got, _) = event(&mut events, "auth").await;
            assert_eq!(got, vec![auth.unwrap_or(json!({}))], "{mode} {namespace}");
            let expected = if namespace.starts_with('/') {
                namespace.to_owned()
            } else {
                format!("/{namespace}")
            };
            assert_eq!(session.namespace(), expected);
            if namespace == "/" {
                let ack = session
                    .emit_with_ack("message-with-ack", &(1, "two"), WAIT)
                    .await
                    .unwrap();
                assert_eq!(
                    ack.args.decode::<(u8, String)>().unwrap(),
                    (1, "two".into())
                );
            }
            session.close().await;
        }
        let mut config = node.config(mode);
        config.namespace = "/nope".into();
        let err = Session::connect(config).await.unwrap_err();
        assert_eq!(err.kind(), "namespace", "{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pings_are_answered_on_every_transport() {
    let _light = light().await;
    let node = TestNode::start(AppKind::Bench, |c| {
        c.ping_interval = Duration::from_millis(200).into();
        c.ping_timeout = Duration::from_millis(1000).into();
    })
    .await;
    let mut sessions = Vec::new();
    for mode in MODES {
        let (session, mut events) = Session::connect(node.config(mode)).await.unwrap();
        event(&mut events, "hello").await;
        sessions.push((mode, session, events));
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    for (mode, session, events) in &mut sessions {
        while let Some(incoming) = events.try_recv() {
            assert!(
                !matches!(incoming, Incoming::Disconnected { .. }),
                "{mode}: {incoming:?}"
            );
        }
        assert!(session.is_connected(), "{mode}");
        let ack = session.emit_with_ack("echo", "alive", WAIT).await.unwrap();
        assert_eq!(ack.args.decode::<String>().unwrap(), "alive");
    }
    assert_eq!(node.sockets(), 3);
}

/// A TCP relay in front of `target` that records where its connections come from.
async fn relay(target: SocketAddr) -> (SocketAddr, Arc<Mutex<Vec<SocketAddr>>>) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("test fixture");
    let addr = listener.local_addr().expect("test fixture");
    let peers = Arc::new(Mutex::new(Vec::new()));
    let seen = peers.clone();
    tokio::spawn(async move {
        while let Ok((mut client, peer)) = listener.accept().await {
            seen.lock().expect("test fixture").push(peer);
            tokio::spawn(async move {
                if let Ok(mut server) = TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    });
    (addr, peers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_connect_from_their_source_address() {
    let _light = light().await;
    let node = TestNode::bench().await;
    let (relay_addr, peers) = relay(node.addr).await;
    let source: IpAddr = "127.0.0.2".parse().unwrap();
    let (plain, mut plain_events) = Session::connect(node.config(TransportMode::WebSocket))
        .await
        .unwrap();
    event(&mut plain_events, "hello").await;
    for mode in MODES {
        let mut config = SessionConfig::new(Target::from_addr(relay_addr));
        config.transport = mode;
        config.source_ip = Some(source);
        let (session, mut events) = Session::connect(config).await.unwrap();
        event(&mut events, "hello").await;
        if mode == TransportMode::Upgrade {
            upgraded(&session).await;
        }
        assert_eq!(session.local_addr().map(|a| a.ip()), Some(source), "{mode}");
        session
            .emit_with_ack("join", "sourced", WAIT)
            .await
            .unwrap();
        // The node's view: a session that is not behind the relay reaches it through the room.
        plain
            .emit_with_ack("publish", &("sourced", mode.as_str()), WAIT)
            .await
            .unwrap();
        let (message, _) = event(&mut events, "message").await;
        assert_eq!(message, vec![json!("sourced"), json!(mode.as_str())]);
        session.close().await;
    }
    let peers = peers.lock().unwrap().clone();
    assert!(!peers.is_empty());
    assert!(peers.iter().all(|p| p.ip() == source), "{peers:?}");

    // An address that is not local cannot be bound.
    let mut config = node.config(TransportMode::WebSocket);
    config.source_ip = Some("192.0.2.1".parse().unwrap());
    assert_eq!(Session::connect(config).await.unwrap_err().kind(), "bind");
    let mut config = node.config(TransportMode::Polling);
    config.source_ip = Some("192.0.2.1".parse().unwrap());
    assert_eq!(Session::connect(config).await.unwrap_err().kind(), "bind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_sessions_at_once() {
    let _heavy = HEAVY.write().await;
    const WEBSOCKET: usize = 2000;
    const POLLING: usize = 500;
    let node = TestNode::bench().await;
    let hellos = Arc::new(AtomicUsize::new(0));
    let ends = Arc::new(AtomicUsize::new(0));
    let base = node.config(TransportMode::WebSocket);
    let gate = Arc::new(Semaphore::new(256));
    let started = Instant::now();
    let mut connecting = tokio::task::JoinSet::new();
    for i in 0..WEBSOCKET + POLLING {
        let mut config = base.clone();
        config.connect_timeout = Duration::from_secs(60);
        if i % 5 == 0 {
            config.transport = TransportMode::Polling;
        }
        let (hellos, ends, gate) = (hellos.clone(), ends.clone(), gate.clone());
        connecting.spawn(async move {
            let _permit = gate.acquire_owned().await.unwrap();
            Session::connect_with_handler(config, move |incoming| match incoming {
                Incoming::Event { event, .. } if event == "hello" => {
                    hellos.fetch_add(1, Ordering::Relaxed);
                }
                Incoming::Disconnected { reason, .. } => {
                    assert_eq!(reason, DisconnectReason::ClientClose);
                    ends.fetch_add(1, Ordering::Relaxed);
                }
                _ => {}
            })
            .await
        });
    }
    let mut sessions = Vec::new();
    while let Some(done) = connecting.join_next().await {
        sessions.push(done.unwrap().unwrap());
    }
    let total = WEBSOCKET + POLLING;
    let deadline = Instant::now() + Duration::from_secs(60);
    while hellos.load(Ordering::Relaxed) < total {
        assert!(
            Instant::now() < deadline,
            "{} hellos",
            hellos.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let connected = started.elapsed();
    assert_eq!(node.sockets(), total);
    let polling = sessions
        .iter()
        .filter(|s| s.transport() == Transport::Polling)
        .count();
    assert_eq!(polling, POLLING);

    futures_util::future::join_all(sessions.iter().map(Session::close)).await;
    assert_eq!(ends.load(Ordering::Relaxed), total);
    let deadline = Instant::now() + Duration::from_secs(30);
    while node.sockets() > 0 {
        assert!(Instant::now() < deadline, "{} sockets left", node.sockets());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "{total} sessions connected in {connected:?}, all closed after {:?}",
        started.elapsed()
    );
}

#[test]
fn mixes_and_source_lists_parse() {
    let mix: TransportMix = "polling=20,upgrade=50,websocket=30".parse().unwrap();
    let picked: Vec<TransportMode> = (0..1000).map(|i| mix.pick(i)).collect();
    let count = |m| picked.iter().filter(|p| **p == m).count();
    assert_eq!(count(TransportMode::Polling), 200);
    assert_eq!(count(TransportMode::Upgrade), 500);
    assert_eq!(count(TransportMode::WebSocket), 300);
    assert!("polling=20,carrier=1".parse::<TransportMix>().is_err());

    let ips: SourceIps = "127.0.0.2-127.0.0.20".parse().unwrap();
    assert_eq!(ips.len(), 19);
    assert_eq!(ips.pick(19), "127.0.0.2".parse::<IpAddr>().unwrap());
    let ips: SourceIps = "::1, fe80::1-fe80::3".parse().unwrap();
    assert_eq!(ips.len(), 4);
    assert!("127.0.0.20-127.0.0.2".parse::<SourceIps>().is_err());
}

// ---------------------------------------------------------------------------------------------
// Fake servers: what a good server never sends.

/// What the fake polling server answers a GET with, in order; POSTs get `ok`.
enum Answer {
    Status(u16, &'static str),
    Ok(String),
    /// This answer to every GET from now on.
    Always(&'static str),
    Hang,
}

/// Polls (GETs that are not WebSocket upgrades) a fake polling server has answered.
static POLLS: AtomicUsize = AtomicUsize::new(0);

async fn fake_polling(answers: Vec<Answer>) -> SocketAddr {
    use http_body_util::Full;
    use hyper::{Request, Response, body::Incoming as Body, service::service_fn};
    use hyper_util::rt::TokioIo;

    let answers = Arc::new(Mutex::new(VecDeque::from(answers)));
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("test fixture");
    let addr = listener.local_addr().expect("test fixture");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let answers = answers.clone();
            let service = service_fn(move |req: Request<Body>| {
                let answers = answers.clone();
                async move {
                    let upgrade = req
                        .uri()
                        .query()
                        .unwrap_or_default()
                        .contains("transport=websocket");
                    let next = if req.method() == hyper::Method::POST {
                        Some(Answer::Ok("ok".into()))
                    } else if upgrade {
                        // No WebSocket here.
                        Some(Answer::Status(400, r#"{"code":3,"message":"Bad request"}"#))
                    } else {
                        POLLS.fetch_add(1, Ordering::Relaxed);
                        let mut answers = answers.lock().expect("test fixture");
                        match answers.front() {
                            Some(Answer::Always(body)) => Some(Answer::Ok((*body).to_owned())),
                            _ => answers.pop_front(),
                        }
                    };
                    let (status, body) = match next {
                        Some(Answer::Status(status, body)) => (status, body.to_owned()),
                        Some(Answer::Ok(body)) => (200, body),
                        Some(Answer::Always(body)) => (200, body.to_owned()),
                        Some(Answer::Hang) | None => {
                            std::future::pending::<()>().await;
                            unreachable!()
                        }
                    };
                    let mut res = Response::new(Full::new(Bytes::from(body)));
                    *res.status_mut() = hyper::StatusCode::from_u16(status).expect("test fixture");
                    Ok::<_, std::convert::Infallible>(res)
                }
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    addr
}

const OPEN: &str = r#"0{"sid":"gw-1.abc.tag","upgrades":["websocket"],"pingInterval":300,"pingTimeout":300,"maxPayload":1000}"#;

async fn fake_session(answers: Vec<Answer>) -> Result<(Session, Events), ConnectError> {
    let mut script = vec![
        Answer::Ok(OPEN.into()),
        Answer::Ok("40{\"sid\":\"s\"}".into()),
    ];
    script.extend(answers);
    let addr = fake_polling(script).await;
    let mut config = SessionConfig::new(Target::from_addr(addr));
    config.transport = TransportMode::Polling;
    config.connect_timeout = Duration::from_secs(5);
    Session::connect(config).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_reasons_from_a_fake_server() {
    let _light = light().await;
    let cases: Vec<(Vec<Answer>, &str)> = vec![
        (
            vec![Answer::Status(
                400,
                r#"{"code":1,"message":"Session ID unknown"}"#,
            )],
            "session_unknown",
        ),
        (vec![Answer::Status(500, "")], "transport_error"),
        (vec![Answer::Ok("41".into())], "server_disconnect"),
        (vec![Answer::Ok("1".into())], "transport_close"),
        (vec![Answer::Ok(String::new())], "transport_close"),
        (
            vec![Answer::Ok("2\u{1e}2".into()), Answer::Hang],
            "ping_timeout",
        ),
        (vec![Answer::Ok("4X".into())], "protocol"),
        (
            vec![Answer::Ok("42{\"not\":\"an array\"}".into())],
            "protocol",
        ),
        (vec![Answer::Ok("43".into())], "protocol"),
        (vec![Answer::Ok("b!!!".into())], "protocol"),
        (vec![Answer::Ok("bAQID".into())], "protocol"),
        (
            vec![Answer::Ok(
                "451-[\"e\",{\"_placeholder\":true,\"num\":0}]\u{1e}42[\"x\"]".into(),
            )],
            "protocol",
        ),
        (vec![Answer::Ok("0{}".into())], "protocol"),
    ];
    for (answers, kind) in cases {
        let (_session, mut events) = fake_session(answers).await.unwrap();
        let reason = disconnected(&mut events).await;
        assert_eq!(reason.kind(), kind, "{reason}");
    }
    // Other namespaces' packets are ignored, a binary event is assembled from its attachment.
    let (_session, mut events) = fake_session(vec![
        Answer::Ok("42/other,[\"ignored\"]\u{1e}451-[\"bin\",{\"_placeholder\":true,\"num\":0}]\u{1e}bAQID".into()),
        Answer::Ok("41".into()),
    ])
    .await
    .unwrap();
    match tokio::time::timeout(WAIT, events.recv()).await.unwrap() {
        Some(Incoming::Event { event, args, .. }) => {
            assert_eq!(event, "bin");
            assert_eq!(
                args.decode::<Bytes>().unwrap(),
                Bytes::from_static(&[1, 2, 3])
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        disconnected(&mut events).await,
        DisconnectReason::ServerDisconnect
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_errors_from_a_fake_server() {
    let _light = light().await;
    let connect = |answers: Vec<Answer>| async move {
        let addr = fake_polling(answers).await;
        let mut config = SessionConfig::new(Target::from_addr(addr));
        config.transport = TransportMode::Polling;
        config.connect_timeout = Duration::from_millis(1500);
        Session::connect(config).await.map(|_| ()).unwrap_err()
    };
    assert_eq!(
        connect(vec![Answer::Status(503, "draining")]).await.kind(),
        "http_5xx"
    );
    assert_eq!(
        connect(vec![Answer::Status(403, "")]).await.kind(),
        "http_4xx"
    );
    assert_eq!(
        connect(vec![Answer::Ok("0{\"sid\":".into())]).await.kind(),
        "protocol"
    );
    assert_eq!(
        connect(vec![Answer::Ok("40".into())]).await.kind(),
        "protocol"
    );
    assert_eq!(connect(vec![Answer::Hang]).await.kind(), "timeout");
    assert_eq!(
        connect(vec![
            Answer::Ok(OPEN.into()),
            Answer::Ok("44{\"message\":\"no\"}".into())
        ])
        .await
        .to_string(),
        "namespace refused: no"
    );
    assert_eq!(
        connect(vec![
            Answer::Ok(OPEN.into()),
            Answer::Status(400, r#"{"code":1,"message":"Session ID unknown"}"#)
        ])
        .await
        .kind(),
        "session_unknown"
    );

    // Nobody listening.
    let port = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    for mode in [TransportMode::Polling, TransportMode::WebSocket] {
        let mut config = SessionConfig::new(Target::from_addr(port));
        config.transport = mode;
        assert_eq!(
            Session::connect(config).await.unwrap_err().kind(),
            "refused"
        );
    }
}

/// A fake WebSocket server: the open packet, the namespace answer, then `then`.
async fn fake_ws(then: Vec<tokio_tungstenite::tungstenite::Message>) -> SocketAddr {
    use tokio_tungstenite::tungstenite::Message;
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("test fixture");
    let addr = listener.local_addr().expect("test fixture");
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.expect("test fixture");
        let mut ws = tokio_tungstenite::accept_async(stream)
            .await
            .expect("test fixture");
        ws.send(Message::text(OPEN)).await.expect("test fixture");
        let connect = ws
            .next()
            .await
            .expect("test fixture")
            .expect("test fixture");
        assert_eq!(connect.to_text().expect("test fixture"), "40");
        ws.send(Message::text("40{\"sid\":\"s\"}"))
            .await
            .expect("test fixture");
        for message in then {
            ws.send(message).await.expect("test fixture");
        }
        // Answer pings until the client goes.
        while let Some(Ok(message)) = ws.next().await {
            if message.to_text().ok() == Some("3") {
                continue;
            }
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_protocol_errors() {
    use tokio_tungstenite::tungstenite::Message;
    let _light = light().await;
    let cases = vec![
        (vec![Message::text("42[")], "protocol"),
        (vec![Message::binary(vec![1, 2])], "protocol"),
        (vec![Message::text("9")], "protocol"),
        (vec![Message::text("5")], "protocol"),
        (vec![Message::text("41")], "server_disconnect"),
        (vec![Message::Close(None)], "transport_close"),
        (vec![Message::text("2")], "ping_timeout"),
    ];
    for (then, kind) in cases {
        let addr = fake_ws(then).await;
        let mut config = SessionConfig::new(Target::from_addr(addr));
        config.transport = TransportMode::WebSocket;
        let (_session, mut events) = Session::connect(config).await.unwrap();
        let reason = disconnected(&mut events).await;
        assert_eq!(reason.kind(), kind, "{reason}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_every_handle_closes_the_session() {
    let _light = light().await;
    let node = TestNode::bench().await;
    for mode in MODES {
        let (session, mut events) = Session::connect(node.config(mode)).await.unwrap();
        event(&mut events, "hello").await;
        drop(session);
        assert_eq!(
            disconnected(&mut events).await,
            DisconnectReason::ClientClose
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_upgrade_stays_on_polling_without_hammering() {
    let _light = light().await;
    let addr = fake_polling(vec![
        Answer::Ok(OPEN.into()),
        Answer::Ok("40{\"sid\":\"s\"}".into()),
        Answer::Ok("42[\"still\",\"polling\"]".into()),
        // What a server stuck in an upgrade answers.
        Answer::Always("6"),
    ])
    .await;
    let mut config = SessionConfig::new(Target::from_addr(addr));
    config.transport = TransportMode::Upgrade;
    let (session, mut events) = Session::connect(config).await.unwrap();
    let failed = tokio::time::timeout(WAIT, async {
        loop {
            match events.recv().await {
                Some(Incoming::UpgradeFailed { error }) => break error,
                Some(Incoming::Disconnected { reason, .. }) => panic!("{reason}"),
                _ => {}
            }
        }
    })
    .await
    .unwrap();
    assert!(failed.contains("400"), "{failed}");
    assert_eq!(session.transport(), Transport::Polling);
    let before = POLLS.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let polls = POLLS.load(Ordering::Relaxed) - before;
    // About one every 100 ms (other tests may poll the fake servers too; far from thousands).
    assert!(polls <= 40, "{polls} polls in 500 ms");
    // The server never pings: the session ends on its ping deadline.
    assert_eq!(
        disconnected(&mut events).await,
        DisconnectReason::PingTimeout
    );
}

/// Every built-in app has its event handlers in place when the client learns it is connected:
/// an acked event sent the moment `connect` returns is always answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_sent_the_moment_a_session_connects_are_handled() {
    let _heavy = HEAVY.write().await;
    let apps: [(AppKind, &str, Value); 4] = [
        (AppKind::Bench, "echo", json!(1)),
        (AppKind::Conformance, "message-with-ack", json!(1)),
        (AppKind::ClusterCheck, "join", json!(["r"])),
        (AppKind::Chat, "join", json!({"nickname": "n", "room": "r"})),
    ];
    for (app, event, args) in apps {
        let node = TestNode::start(app, |_| {}).await;
        let gate = Arc::new(Semaphore::new(64));
        let mut asking = tokio::task::JoinSet::new();
        for i in 0..300 {
            let mut config = node.config(MODES[i % MODES.len()]);
            config.connect_timeout = Duration::from_secs(60);
            let (gate, args) = (gate.clone(), args.clone());
            asking.spawn(async move {
                let _permit = gate.acquire_owned().await.unwrap();
                let (session, _events) = Session::connect(config).await.unwrap();
                let answered = session
                    .emit_with_ack(event, &args, Duration::from_secs(10))
                    .await
                    .is_ok();
                session.close().await;
                answered
            });
        }
        let mut unanswered = 0;
        while let Some(answered) = asking.join_next().await {
            if !answered.unwrap() {
                unanswered += 1;
            }
        }
        assert_eq!(
            unanswered, 0,
            "{app:?}: {event} unanswered {unanswered} times of 300"
        );
    }
}
