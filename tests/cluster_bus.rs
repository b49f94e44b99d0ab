//! The cluster's connection to NATS and the tools around it, against a real `nats-server`:
//! `corral emit`, authentication (user and password, token, TLS with a client certificate),
//! and the default heartbeat timings.

mod common;
mod common_nats;

use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use common::NodeProcess;
use common_nats::{NatsServer, SioClient, members, readyz, start_node, wait_members};
use serde_json::json;

/// Runs `corral emit <args>` and returns its exit status and standard error.
fn corral_emit(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_corral"))
        .arg("emit")
        .args(args)
        .output()
        .expect("run corral emit");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn corral_emit_reaches_the_rooms_members_on_every_node_and_no_one_else() {
    let nats = NatsServer::start();
    let a = start_node(&nats, "emit-a", "cluster-check", &[]);
    let b = start_node(&nats, "emit-b", "cluster-check", &[]);
    wait_members(&[&a, &b], &["emit-a", "emit-b"], Duration::from_secs(10)).await;
    let (mut on_a, _) = SioClient::connect_cluster_check(a.addr).await;
    let (mut on_b, _) = SioClient::connect_cluster_check(b.addr).await;
    let (mut outsider, _) = SioClient::connect_cluster_check(b.addr).await;
    on_a.call("join", json!([["news"]])).await;
    on_b.call("join", json!([["news"]])).await;
    outsider.call("join", json!([["other"]])).await;

    let url = nats.url();
    let (ok, stderr) = corral_emit(&[
        "--nats",
        &url,
        "--room",
        "news",
        "headline",
        r#"{"text":"hi"}"#,
    ]);
    assert!(ok, "corral emit failed: {stderr}");
    for client in [&mut on_a, &mut on_b] {
        let event = client
            .expect_event("headline", Duration::from_secs(5))
            .await;
        assert_eq!(event.args, vec![json!({"text": "hi"})]);
    }
    // Several arguments, to everyone: the outsider's first event must be this one, so the
    // headline never reached it.
    let (ok, stderr) = corral_emit(&["--nats", &url, "--spread", "all", r#"[1, "two"]"#]);
    assert!(ok, "corral emit --spread failed: {stderr}");
    let event = outsider.expect_event("all", Duration::from_secs(5)).await;
    assert_eq!(event.args, vec![json!(1), json!("two")]);
    assert!(
        outsider.next_event(Duration::ZERO).await.is_none(),
        "the outsider got more than the broadcast"
    );
}

#[test]
fn corral_emit_explains_what_is_wrong() {
    let (ok, stderr) = corral_emit(&["--nats", "nats://127.0.0.1:1", "x", "{not json"]);
    assert!(!ok);
    assert!(stderr.contains("not valid JSON"), "{stderr}");

    let started = Instant::now();
    let (ok, stderr) = corral_emit(&[
        "--nats",
        "nats://127.0.0.1:1",
        "--connect-timeout",
        "500ms",
        "x",
        "1",
    ]);
    assert!(!ok);
    assert!(stderr.contains("not reachable within 500ms"), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(10));

    let (ok, stderr) = corral_emit(&["--nats", "nats://127.0.0.1:1", "--spread", "x", "{}"]);
    assert!(!ok);
    assert!(stderr.contains("--spread needs a JSON array"), "{stderr}");
}

/// A node on `nats` with exactly these bus flags (no defaults from the helper).
fn node_with(flags: &[&str]) -> NodeProcess {
    let mut args = vec![
        "--app",
        "bench",
        "--adapter",
        "nats",
        "--heartbeat-interval",
        "200ms",
        "--heartbeat-timeout",
        "1s",
    ];
    args.extend_from_slice(flags);
    NodeProcess::start(&args)
}

/// Waits until `/readyz` says `status` (bounded), returning what it said last.
async fn readiness_becomes(node: &NodeProcess, status: u16) -> (u16, String) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (code, body) = readyz(node).await;
        if code == status || Instant::now() > deadline {
            return (code, body);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn user_and_password_authenticate_and_a_wrong_password_leaves_the_node_degraded() {
    let nats = NatsServer::start_with(&["--user", "corral", "--pass", "s3cret"]);
    let url = nats.url();
    let good = node_with(&[
        "--nats",
        &url,
        "--nats-user",
        "corral",
        "--nats-password",
        "s3cret",
    ]);
    assert_eq!(readiness_becomes(&good, 200).await.0, 200);

    let mut bad = node_with(&[
        "--nats",
        &url,
        "--nats-user",
        "corral",
        "--nats-password",
        "wrong",
    ]);
    // Give it time to try; it must stay up, degraded, and keep trying.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let (code, body) = readyz(&bad).await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("bus_disconnected"), "{body}");
    assert!(bad.is_running());
    assert_eq!(members(&good).await, vec![good.node_id()]);
}

#[tokio::test]
async fn a_token_authenticates() {
    let nats = NatsServer::start_with(&["--auth", "t0ken"]);
    let url = nats.url();
    let node = node_with(&["--nats", &url, "--nats-token", "t0ken"]);
    assert_eq!(readiness_becomes(&node, 200).await.0, 200);
    let tokenless = node_with(&["--nats", &url]);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(readyz(&tokenless).await.0, 503);
}

/// Writes a CA, a server certificate for 127.0.0.1 and a client certificate into `dir`.
fn make_certificates(dir: &Path) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("run openssl (scripts/setup --test installs it)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    // Extensions make v3 certificates, which rustls insists on.
    std::fs::write(dir.join("server.ext"), "subjectAltName=IP:127.0.0.1\n")
        .expect("write server.ext");
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n")
        .expect("write client.ext");
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=corral-test-ca",
    ]);
    for name in ["server", "client"] {
        let (key, csr, pem) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
        );
        run(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            &format!("/CN={name}"),
        ]);
        let mut sign = vec![
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            "2",
        ];
        let ext = format!("{name}.ext");
        sign.extend(["-extfile", &ext]);
        run(&sign);
    }
}

#[tokio::test]
async fn mutual_tls_with_the_configured_ca_and_client_certificate() {
    let dir = std::env::temp_dir().join(format!("corral-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    make_certificates(&dir);
    let path = |f: &str| dir.join(f).to_string_lossy().into_owned();
    let (cert, key, ca) = (path("server.pem"), path("server.key"), path("ca.pem"));
    let nats = NatsServer::start_with(&[
        "--tls",
        "--tlscert",
        &cert,
        "--tlskey",
        &key,
        "--tlsverify",
        "--tlscacert",
        &ca,
    ]);
    let url = format!("tls://127.0.0.1:{}", nats.port);
    let (client_cert, client_key) = (path("client.pem"), path("client.key"));
    let node = node_with(&[
        "--nats",
        &url,
        "--nats-tls-ca",
        &ca,
        "--nats-tls-cert",
        &client_cert,
        "--nats-tls-key",
        &client_key,
        "--nats-require-tls",
    ]);
    let (code, body) = readiness_becomes(&node, 200).await;
    assert_eq!(code, 200, "{body}\n{}", node.logs().join("\n"));

    // Without a client certificate the server refuses the node, which stays up, degraded.
    let anonymous = node_with(&["--nats", &url, "--nats-tls-ca", &ca]);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(readyz(&anonymous).await.0, 503);
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn with_default_heartbeats_a_killed_node_is_forgotten_within_three_seconds() {
    let nats = NatsServer::start();
    let url = nats.url();
    let defaults = |id: &'static str| {
        NodeProcess::start(&[
            "--app",
            "bench",
            "--adapter",
            "nats",
            "--nats",
            &url,
            "--node-id",
            id,
        ])
    };
    let survivor = defaults("keeps");
    let mut victim = defaults("dies");
    wait_members(
        &[&survivor, &victim],
        &["dies", "keeps"],
        Duration::from_secs(10),
    )
    .await;
    victim.kill();
    let killed = Instant::now();
    while members(&survivor).await.contains(&"dies".to_owned()) {
        assert!(
            killed.elapsed() < Duration::from_secs(3),
            "a SIGKILLed node was still a member after 3 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
