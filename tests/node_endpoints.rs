//! `corral node` as a real process: health, readiness, metrics, the app pages, CORS and the
//! command line's answers to bad flags.

mod common;

use std::process::Command;

use common::{NodeProcess, PollingSession, get, http, polling_handshake};

#[tokio::test]
async fn health_and_readiness_answer_while_running() {
    let node = NodeProcess::start(&["--app", "bench"]);
    let health = get(node.addr, "/healthz").await;
    assert_eq!(health.status, 200);
    let ready = get(node.addr, "/readyz").await;
    assert_eq!(ready.status, 200);
    assert_eq!(ready.json()["status"], "ready");
}

#[tokio::test]
async fn metrics_count_handshakes_events_and_sockets_by_transport() {
    let node = NodeProcess::start(&["--app", "bench", "--node-id", "metrics-node"]);
    let session = PollingSession::open(node.addr, "/socket.io").await;
    session.connect_main().await;
    // An event with an ack: echo.
    assert_eq!(session.send(br#"421["echo","x"]"#).await.status, 200);
    let ack = session.recv_until(|p| p.starts_with("431")).await;
    assert_eq!(ack, r#"431["x"]"#);
    // An unknown session, refused and counted.
    let unknown = get(
        node.addr,
        "/socket.io/?EIO=4&transport=polling&sid=AAAAAAAAAAAAAAAA",
    )
    .await;
    assert_eq!(unknown.status, 400);

    let metrics = get(node.addr, "/metrics").await;
    assert_eq!(metrics.status, 200);
    assert!(
        metrics
            .header("content-type")
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = metrics.text();
    for expected in [
        r#"corral_node_handshakes_total{transport="polling"} 1"#,
        r#"corral_node_connected_sockets{transport="polling"} 1"#,
        r#"corral_node_connected_sockets{transport="websocket"} 0"#,
        r#"corral_node_session_requests_rejected_total{reason="unknown_session"} 1"#,
        r#"corral_node_events_received_total 1"#,
        r#"corral_node_info{app="bench",node_id="metrics-node",version="#,
        "process_resident_memory_bytes ",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }
}

#[tokio::test]
async fn chat_page_is_served_with_its_assets() {
    let bundle = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/node_modules/socket.io-client/dist/socket.io.min.js"
    );
    let node = NodeProcess::start(&["--app", "chat", "--client-bundle", bundle]);
    let page = get(node.addr, "/").await;
    assert_eq!(page.status, 200, "{}", page.text());
    assert!(
        page.text()
            .contains(r#"<script src="/assets/socket.io.min.js">"#)
    );
    for (path, kind) in [
        ("/chat.js", "text/javascript"),
        ("/chat.css", "text/css"),
        ("/assets/socket.io.min.js", "text/javascript"),
    ] {
        let res = get(node.addr, path).await;
        assert_eq!(res.status, 200, "{path}");
        assert!(
            res.header("content-type").unwrap().starts_with(kind),
            "{path}"
        );
    }
    let bundle_bytes = std::fs::read(bundle).expect("npm ci installed socket.io-client");
    assert_eq!(
        get(node.addr, "/assets/socket.io.min.js").await.body,
        bundle_bytes
    );
    assert_eq!(get(node.addr, "/nope").await.status, 404);
}

#[tokio::test]
async fn chat_page_explains_a_missing_client_bundle() {
    let node = NodeProcess::start(&[
        "--app",
        "chat",
        "--client-bundle",
        "/nonexistent/socket.io.min.js",
    ]);
    let page = get(node.addr, "/").await;
    assert_eq!(page.status, 503);
    assert!(page.text().contains("npm ci"), "{}", page.text());
    assert_eq!(get(node.addr, "/assets/socket.io.min.js").await.status, 503);
}

#[tokio::test]
async fn cors_is_same_origin_by_default_and_follows_the_allow_list() {
    let closed = NodeProcess::start(&["--app", "bench"]);
    let origin = [("Origin", "https://other.example")];
    let res = http(
        closed.addr,
        "GET",
        "/socket.io/?EIO=4&transport=polling",
        &origin,
        b"",
    )
    .await;
    assert_eq!(res.status, 200);
    assert_eq!(res.header("access-control-allow-origin"), None);

    let open = NodeProcess::start(&["--app", "bench", "--cors-origin", "https://app.example"]);
    let allowed = [("Origin", "https://app.example")];
    let res = http(
        open.addr,
        "GET",
        "/socket.io/?EIO=4&transport=polling",
        &allowed,
        b"",
    )
    .await;
    assert_eq!(
        res.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    assert_eq!(res.header("access-control-allow-credentials"), Some("true"));
    let res = http(
        open.addr,
        "GET",
        "/socket.io/?EIO=4&transport=polling",
        &origin,
        b"",
    )
    .await;
    assert_eq!(res.header("access-control-allow-origin"), None);

    let preflight = [
        ("Origin", "https://app.example"),
        ("Access-Control-Request-Method", "POST"),
        ("Access-Control-Request-Headers", "content-type"),
    ];
    let res = http(
        open.addr,
        "OPTIONS",
        "/socket.io/?EIO=4&transport=polling",
        &preflight,
        b"",
    )
    .await;
    assert_eq!(res.status, 204);
    assert_eq!(
        res.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    assert_eq!(
        res.header("access-control-allow-headers"),
        Some("content-type")
    );
}

#[tokio::test]
async fn websocket_only_nodes_refuse_polling() {
    let node = NodeProcess::start(&["--app", "bench", "--transports", "websocket"]);
    let res = get(node.addr, "/socket.io/?EIO=4&transport=polling").await;
    assert_eq!(res.status, 400);
    assert!(res.json()["code"].is_u64(), "{}", res.text());
}

#[tokio::test]
async fn custom_socketio_path_is_honoured() {
    let node = NodeProcess::start(&["--app", "bench", "--path", "/rt/"]);
    let (_, open) = polling_handshake(node.addr, "/rt").await;
    assert_eq!(open["upgrades"], serde_json::json!(["websocket"]));
    assert_eq!(
        get(node.addr, "/socket.io/?EIO=4&transport=polling")
            .await
            .status,
        404
    );
}

#[test]
fn bad_flags_are_refused_with_a_clear_message() {
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_corral"))
            .arg("node")
            .args(args)
            .output()
            .expect("run corral")
    };
    let out = run(&["--transports", "carrier-pigeon"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("carrier-pigeon"));

    let out = run(&["--node-id", "has.dot", "--listen", "127.0.0.1:0"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("node id may contain only"));

    let out = run(&["--listen", "127.0.0.1:0", "--drain-grace", "40s"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--drain-grace"));
}

#[test]
fn help_lists_the_node_subcommand_and_its_environment_variables() {
    let out = Command::new(env!("CARGO_BIN_EXE_corral"))
        .arg("--help")
        .output()
        .expect("run");
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("node"), "{help}");
    let out = Command::new(env!("CARGO_BIN_EXE_corral"))
        .args(["node", "--help"])
        .output()
        .expect("run");
    let help = String::from_utf8_lossy(&out.stdout);
    for env in [
        "CORRAL_LISTEN",
        "CORRAL_NODE_ID",
        "CORRAL_DRAIN_TIMEOUT",
        "CORRAL_WS_READ_BUFFER_SIZE",
    ] {
        assert!(help.contains(env), "{env} missing from node --help");
    }
}

#[test]
fn default_node_ids_use_the_port_actually_bound() {
    let a = NodeProcess::start(&["--app", "bench"]);
    let b = NodeProcess::start(&["--app", "bench"]);
    let (id_a, id_b) = (a.node_id(), b.node_id());
    assert_ne!(id_a, id_b, "two nodes on port 0 got one id");
    assert!(id_a.ends_with(&format!("-{}", a.addr.port())), "{id_a}");
}
