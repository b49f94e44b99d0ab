//! Faults of a real cluster: `corral node` processes (the `cluster-check` app) on a real
//! `nats-server` spawned per test, with short heartbeats (200 ms, forgotten after 1 s) and a
//! 2 s request timeout. A node killed with SIGKILL, the NATS server killed and restarted on the
//! same port, a broadcast near and over the NATS payload limit, and a malformed message on the
//! bus.
//!
//! Every test starts its own server and nodes and is bounded in time; waits are for conditions,
//! with deadlines.

mod common;
mod common_nats;

use std::{
    collections::BTreeMap,
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use common_nats::{
    HEARTBEAT_TIMEOUT, NatsServer, REQUEST_TIMEOUT, SLACK, STEP, SioClient, eventually, members,
    metric, readyz, start_node, wait_members,
};
use serde_json::{Value, json};

/// Upper bound of a whole test.
const TEST_BOUND: Duration = Duration::from_secs(90);
/// How long the nodes may take to come back after NATS does: the client retries with a backoff
/// of up to 4 s, then the nodes say hello and answer each other.
const RECOVERY: Duration = Duration::from_secs(15);
/// NATS's default `max_payload`.
const NATS_MAX_PAYLOAD: usize = 1024 * 1024;

async fn bounded(body: impl Future<Output = ()>) {
    tokio::time::timeout(TEST_BOUND, body)
        .await
        .unwrap_or_else(|_| panic!("test did not finish within {TEST_BOUND:?}"));
}

/// Sockets in `room` across the cluster, as the `fetch` of the client on `asker`'s node sees
/// them: socket id → node id. Also the time the request took.
async fn fetch(
    asker: &SioClient,
    room: &str,
    within: Duration,
) -> (BTreeMap<String, String>, Duration) {
    let start = Instant::now();
    let ack = asker
        .call_with("fetch", json!([{ "rooms": [room] }]), Vec::new(), within)
        .await
        .unwrap_or_else(|e| panic!("fetch: no answer within {within:?} ({e:?})"));
    let took = start.elapsed();
    let sockets = ack
        .first()
        .as_array()
        .unwrap_or_else(|| panic!("fetch answered {ack:?}"))
        .iter()
        .map(|s| {
            (
                s["id"].as_str().expect("id").to_owned(),
                s["node"].as_str().expect("node").to_owned(),
            )
        })
        .collect();
    (sockets, took)
}

/// Every room in the cluster, as `rooms` answers, and the time it took.
async fn rooms(asker: &SioClient, within: Duration) -> (Vec<String>, Duration) {
    let start = Instant::now();
    let ack = asker
        .call_with("rooms", json!([]), Vec::new(), within)
        .await
        .unwrap_or_else(|e| panic!("rooms: no answer within {within:?} ({e:?})"));
    let took = start.elapsed();
    let rooms = ack
        .first()
        .as_array()
        .unwrap_or_else(|| panic!("rooms answered {ack:?}"))
        .iter()
        .map(|r| r.as_str().expect("room").to_owned())
        .collect();
    (rooms, took)
}

/// `emit {rooms: [room], event, data}` through the cluster-check app; the ack.
async fn emit(client: &SioClient, room: &str, event: &str, data: Value) -> Value {
    client
        .call(
            "emit",
            json!([{ "rooms": [room], "event": event, "data": data }]),
        )
        .await
        .first()
        .clone()
}

fn expected_sockets(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(id, node)| ((*id).to_owned(), (*node).to_owned()))
        .collect()
}

/// Bytes that are not all the same, from a seed.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn first_difference(got: &[u8], want: &[u8]) -> String {
    match got.iter().zip(want).position(|(g, w)| g != w) {
        Some(i) => format!("first difference at byte {i}"),
        None => format!("{} bytes instead of {}", got.len(), want.len()),
    }
}

// ---------------------------------------------------------------------------------------------
// A node killed without goodbye
// ---------------------------------------------------------------------------------------------

/// Publishes `seq {from, seq}` to room `feed` every few milliseconds, one at a time (each waits
/// for its ack, so the order is the publisher's), until `stop`; then `end {from}`. Returns the
/// last sequence number, or why it could not go on.
fn publisher(
    client: SioClient,
    from: &'static str,
    stop: Arc<AtomicBool>,
) -> (Arc<AtomicU64>, tokio::task::JoinHandle<Result<u64, String>>) {
    let sent = Arc::new(AtomicU64::new(0));
    let progress = sent.clone();
    let task = tokio::spawn(async move {
        let mut seq = 0;
        while !stop.load(Ordering::Relaxed) {
            seq += 1;
            let data = json!({ "from": from, "seq": seq });
            let args = json!([{ "rooms": ["feed"], "event": "seq", "data": data }]);
            match client.call_with("emit", args, Vec::new(), STEP).await {
                Ok(ack) if ack.first()["ok"] == true => progress.store(seq, Ordering::Relaxed),
                Ok(ack) => return Err(format!("{from} seq {seq}: {ack:?}")),
                Err(e) => return Err(format!("{from} seq {seq}: {e:?}")),
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let ack = emit(&client, "feed", "end", json!({ "from": from })).await;
        assert_eq!(ack["ok"], true, "{from} end: {ack}");
        Ok(seq)
    });
    (sent, task)
}

/// Collects the `seq` events of `client` as `(from, seq)` until it got `end` from each of
/// `ends`.
fn subscriber(
    mut client: SioClient,
    ends: &'static [&'static str],
) -> tokio::task::JoinHandle<Vec<(String, u64)>> {
    tokio::spawn(async move {
        let mut got = Vec::new();
        let mut ended = Vec::new();
        while ended.len() < ends.len() {
            let Some(event) = client.next_event(TEST_BOUND).await else {
                panic!(
                    "subscriber {}: closed; got {} messages",
                    client.sid,
                    got.len()
                );
            };
            let from = event.args[0]["from"].as_str().unwrap_or("?").to_owned();
            match event.name.as_str() {
                "seq" => got.push((from, event.args[0]["seq"].as_u64().expect("seq"))),
                "end" if ends.contains(&from.as_str()) => ended.push(from),
                _ => {}
            }
        }
        got
    })
}

/// The sequence numbers `got` holds from `from`, in arrival order.
fn from(got: &[(String, u64)], from: &str) -> Vec<u64> {
    got.iter()
        .filter(|(f, _)| f == from)
        .map(|(_, s)| *s)
        .collect()
}

/// Checks that `seqs` is exactly `1..=last`: nothing lost, nothing twice, in order.
fn assert_exact(seqs: &[u64], last: u64, what: &str) {
    let want: Vec<u64> = (1..=last).collect();
    if seqs != want {
        let position = seqs
            .iter()
            .zip(&want)
            .position(|(g, w)| g != w)
            .unwrap_or(seqs.len().min(want.len()));
        panic!(
            "{what}: {} messages instead of 1..={last}; from position {position}: {:?}",
            seqs.len(),
            &seqs[position.saturating_sub(2)..(position + 5).min(seqs.len())]
        );
    }
}

/// Three nodes; one is killed with SIGKILL while every node publishes a numbered stream to a
/// room with a member on each node. The survivors forget it within the heartbeat timeout, a
/// cluster request made at once still answers within the request timeout, later ones answer
/// at once without its sockets, and the members on the survivors get every message of every
/// live publisher exactly once and in order (and those of the killed one, up to the kill).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_is_forgotten_in_time_and_the_survivors_lose_no_broadcast() {
    bounded(async {
        let nats = NatsServer::start();
        let a = start_node(&nats, "node-a", "cluster-check", &[]);
        let b = start_node(&nats, "node-b", "cluster-check", &[]);
        let c = start_node(&nats, "node-c", "cluster-check", &[]);
        wait_members(&[&a, &b, &c], &["node-a", "node-b", "node-c"], STEP).await;

        // A member of `feed` on each node (C's also in `only-c`), a publisher on each node,
        // and a client on A asking the cluster.
        let mut subs = Vec::new();
        for (node, rooms) in [
            (&a, json!(["feed"])),
            (&b, json!(["feed"])),
            (&c, json!(["feed", "only-c"])),
        ] {
            let (client, _) = SioClient::connect_cluster_check(node.addr).await;
            client.call("join", json!([rooms])).await;
            subs.push(client);
        }
        let ids: Vec<String> = subs.iter().map(|s| s.sid.clone()).collect();
        let (asker, _) = SioClient::connect_cluster_check(a.addr).await;

        let (sockets, _) = fetch(&asker, "feed", STEP).await;
        assert_eq!(
            sockets,
            expected_sockets(&[
                (&ids[0], "node-a"),
                (&ids[1], "node-b"),
                (&ids[2], "node-c")
            ])
        );
        let (all_rooms, _) = rooms(&asker, STEP).await;
        assert!(
            all_rooms.contains(&"only-c".to_owned()),
            "rooms before the kill: {all_rooms:?}"
        );

        let sub_c = subs.pop().expect("C's member");
        let sub_b = subscriber(subs.pop().expect("B's member"), &["node-a", "node-b"]);
        let sub_a = subscriber(subs.pop().expect("A's member"), &["node-a", "node-b"]);
        let stop = Arc::new(AtomicBool::new(false));
        let mut publishers = Vec::new();
        for (node, name) in [(&a, "node-a"), (&b, "node-b"), (&c, "node-c")] {
            let (client, _) = SioClient::connect_cluster_check(node.addr).await;
            publishers.push(publisher(client, name, stop.clone()));
        }
        let sent = |i: usize| publishers[i].0.load(Ordering::Relaxed);
        eventually(STEP, "every publisher under way", async || {
            match (0..3).map(sent).min() {
                Some(n) if n >= 20 => Ok(()),
                _ => Err(format!("sent {:?}", (0..3).map(sent).collect::<Vec<_>>())),
            }
        })
        .await;

        // SIGKILL, and wait until the process is gone.
        drop(c);
        let c_acked = sent(2);

        // At once: a cluster request still counts on C, so it waits for the request timeout,
        // but no longer; meanwhile the survivors forget C.
        let meanwhile = async {
            let within = REQUEST_TIMEOUT + SLACK;
            let ((sockets, fetch_took), (all_rooms, rooms_took)) =
                tokio::join!(fetch(&asker, "feed", within), rooms(&asker, within));
            assert_eq!(
                sockets,
                expected_sockets(&[(&ids[0], "node-a"), (&ids[1], "node-b")]),
                "fetch right after the kill"
            );
            assert!(!all_rooms.contains(&"only-c".to_owned()), "{all_rooms:?}");
            (fetch_took, rooms_took)
        };
        let survivors = [&a, &b];
        let forget = wait_members(&survivors, &["node-a", "node-b"], HEARTBEAT_TIMEOUT + SLACK);
        let ((fetch_took, rooms_took), forgotten_after) = tokio::join!(meanwhile, forget);
        eprintln!(
            "after the kill: fetch answered in {fetch_took:?}, rooms in {rooms_took:?}; \
             node-c forgotten by both survivors within {forgotten_after:?}"
        );

        // Now C is forgotten: requests answer at once, without C's sockets and rooms.
        let at_once = REQUEST_TIMEOUT / 2;
        let (sockets, took) = fetch(&asker, "feed", STEP).await;
        assert!(took < at_once, "fetch after C was forgotten took {took:?}");
        assert_eq!(
            sockets,
            expected_sockets(&[(&ids[0], "node-a"), (&ids[1], "node-b")])
        );
        let (all_rooms, took) = rooms(&asker, STEP).await;
        assert!(took < at_once, "rooms after C was forgotten took {took:?}");
        assert!(
            all_rooms.contains(&"feed".to_owned()) && !all_rooms.contains(&"only-c".to_owned()),
            "rooms after C was forgotten: {all_rooms:?}"
        );
        assert_eq!(
            metric(&a, "corral_adapter_live_nodes").await,
            Some(2.0),
            "live nodes on A"
        );

        // The survivors keep publishing a while, then stop.
        let (mark_a, mark_b) = (sent(0), sent(1));
        eventually(STEP, "publishing after the kill", async || {
            if sent(0) >= mark_a + 20 && sent(1) >= mark_b + 20 {
                Ok(())
            } else {
                Err(format!("sent {} and {}", sent(0), sent(1)))
            }
        })
        .await;
        stop.store(true, Ordering::Relaxed);
        let mut results = Vec::new();
        for (_, task) in publishers {
            results.push(task.await.expect("publisher task"));
        }
        let last_a = results[0].clone().expect("A's publisher");
        let last_b = results[1].clone().expect("B's publisher");
        assert!(
            results[2].is_err(),
            "C's publisher went on after the kill: {:?}",
            results[2]
        );
        drop(sub_c);

        for (name, task) in [("A", sub_a), ("B", sub_b)] {
            let got = task.await.expect("subscriber task");
            assert_exact(&from(&got, "node-a"), last_a, &format!("{name} from A"));
            assert_exact(&from(&got, "node-b"), last_b, &format!("{name} from B"));
            // C's stream stops at the kill, with nothing missing or repeated before.
            let c_seqs = from(&got, "node-c");
            let received = c_seqs.len() as u64;
            assert_exact(&c_seqs, received, &format!("{name} from C"));
            assert!(
                received >= 10 && received <= c_acked + 1,
                "{name} got {received} of C's messages; C had {c_acked} acked at the kill"
            );
            eprintln!(
                "member on {name}: {last_a} from A, {last_b} from B, {received} from C \
                 ({c_acked} acked by C before the kill)"
            );
        }
        assert!(
            forgotten_after <= HEARTBEAT_TIMEOUT + SLACK,
            "{forgotten_after:?}"
        );
        assert!(fetch_took <= REQUEST_TIMEOUT + SLACK, "{fetch_took:?}");
        if fetch_took >= REQUEST_TIMEOUT {
            // It waited for C: the partial answer is counted.
            let timeouts = metric(
                &a,
                r#"corral_adapter_request_timeouts_total{kind="fetch_sockets"}"#,
            )
            .await;
            assert!(timeouts >= Some(1.0), "request timeouts on A: {timeouts:?}");
        }
        for mut node in [a, b] {
            common::assert_healthy(&mut node).await;
        }
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// NATS restarts
// ---------------------------------------------------------------------------------------------

const DEGRADED: &str = r#"{"status":"degraded","reason":"bus_disconnected"}"#;
const READY: &str = r#"{"status":"ready"}"#;

/// Reads `client`'s events until one named `m` whose data `n` is `want` arrives; fails on one
/// whose `n` is in `never`.
async fn expect_m(client: &mut SioClient, want: &str, never: &[&str], within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(event) = client.next_event(left).await else {
            panic!("client {}: no m {want:?} within {within:?}", client.sid);
        };
        let n = event
            .args
            .first()
            .map(|d| d["n"].clone())
            .unwrap_or_default();
        let n = n.as_str().unwrap_or_default();
        assert!(!never.contains(&n), "client {} got {n:?}", client.sid);
        if event.name == "m" && n == want {
            return;
        }
    }
}

/// Emits `m {n: probe-k}` from `sender` until `listener` gets one (the subscriptions of the
/// other node may come back a little after its status says connected), then 10 more, which
/// must all arrive in order. Returns how long it took for the first to arrive.
async fn cross_node_broadcasts_resume(
    sender: &SioClient,
    listener: &mut SioClient,
    tag: &str,
) -> Duration {
    let start = Instant::now();
    let mut k = 0;
    'probing: loop {
        assert!(
            start.elapsed() < RECOVERY,
            "{tag}: no broadcast crossed within {RECOVERY:?}"
        );
        k += 1;
        let ack = emit(sender, "r", "m", json!({ "n": format!("{tag}-probe-{k}") })).await;
        assert_eq!(ack["ok"], true, "{tag} probe {k}: {ack}");
        let wait_until = Instant::now() + Duration::from_millis(300);
        while let Some(event) = listener
            .next_event(wait_until.saturating_duration_since(Instant::now()))
            .await
        {
            let n = event.args[0]["n"].as_str().unwrap_or_default().to_owned();
            assert!(!n.starts_with("down-"), "{tag}: {n} was to stay local");
            if n.starts_with(&format!("{tag}-probe-")) {
                break 'probing;
            }
        }
    }
    let first = start.elapsed();
    for i in 0..10 {
        let ack = emit(sender, "r", "m", json!({ "n": format!("{tag}-{i}") })).await;
        assert_eq!(ack["ok"], true, "{tag} {i}: {ack}");
    }
    for i in 0..10 {
        let want = format!("{tag}-{i}");
        loop {
            let Some(event) = listener.next_event(STEP).await else {
                panic!("{tag}: {want} did not arrive");
            };
            let n = event.args[0]["n"].as_str().unwrap_or_default().to_owned();
            if n.starts_with(&format!("{tag}-probe-")) {
                continue; // a late probe
            }
            assert_eq!(n, want, "{tag}: out of order");
            break;
        }
    }
    first
}

/// NATS is killed under two nodes and restarted on the same port. Meanwhile the nodes stay up
/// (`/healthz` 200), say they are degraded (`/readyz` 503, `corral_adapter_bus_connected` 0),
/// keep delivering locally, and forget each other; once NATS is back they are ready again,
/// see each other and broadcast to each other, without any restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_ride_out_a_nats_restart() {
    bounded(async {
        let mut nats = NatsServer::start();
        let mut a = start_node(&nats, "node-a", "cluster-check", &[]);
        let mut b = start_node(&nats, "node-b", "cluster-check", &[]);
        wait_members(&[&a, &b], &["node-a", "node-b"], STEP).await;

        // On each node a sender and a member of room `r`.
        let (send_a, _) = SioClient::connect_cluster_check(a.addr).await;
        let (send_b, _) = SioClient::connect_cluster_check(b.addr).await;
        let (mut on_a, _) = SioClient::connect_cluster_check(a.addr).await;
        let (mut on_b, _) = SioClient::connect_cluster_check(b.addr).await;
        for client in [&on_a, &on_b] {
            client.call("join", json!([["r"]])).await;
        }
        assert_eq!(
            emit(&send_a, "r", "m", json!({"n": "before"})).await["ok"],
            true
        );
        expect_m(&mut on_a, "before", &[], STEP).await;
        expect_m(&mut on_b, "before", &[], STEP).await;
        for node in [&a, &b] {
            assert_eq!(
                metric(node, "corral_adapter_bus_connected").await,
                Some(1.0)
            );
        }

        nats.kill();
        let killed_at = Instant::now();
        for node in [&a, &b] {
            eventually(STEP, "degraded", async || {
                let (status, body) = readyz(node).await;
                if (status, body.as_str()) == (503, DEGRADED) {
                    Ok(())
                } else {
                    Err(format!("/readyz {status} {body}"))
                }
            })
            .await;
            assert_eq!(common::get(node.addr, "/healthz").await.status, 200);
            assert_eq!(
                metric(node, "corral_adapter_bus_connected").await,
                Some(0.0)
            );
        }
        eprintln!(
            "both nodes degraded {:?} after NATS died",
            killed_at.elapsed()
        );

        // A cluster request answers at once (with an error or the local sockets), not hangs.
        let within = REQUEST_TIMEOUT + SLACK;
        let start = Instant::now();
        let answer = send_a
            .call_with("fetch", json!([{ "rooms": ["r"] }]), Vec::new(), within)
            .await
            .unwrap_or_else(|e| {
                panic!("fetch while NATS is down: no answer in {within:?} ({e:?})")
            });
        eprintln!(
            "fetch while NATS is down answered in {:?}: {}",
            start.elapsed(),
            answer.first()
        );

        // Local delivery goes on; the caller hears that the other nodes were not reached.
        for (sender, member, tag, other) in [
            (&send_a, &mut on_a, "down-a", "down-b"),
            (&send_b, &mut on_b, "down-b", "down-a"),
        ] {
            let ack = emit(sender, "r", "m", json!({ "n": tag })).await;
            assert_eq!(ack["ok"], false, "{tag}: {ack}");
            let error = ack["error"].as_str().unwrap_or_default();
            assert!(error.contains("disconnected"), "{tag}: {ack}");
            expect_m(member, tag, &[other], STEP).await;
        }
        // Without heartbeats they forget each other.
        wait_members(&[&a], &["node-a"], HEARTBEAT_TIMEOUT + SLACK).await;
        wait_members(&[&b], &["node-b"], HEARTBEAT_TIMEOUT + SLACK).await;

        nats.restart();
        let restarted_at = Instant::now();
        for node in [&a, &b] {
            eventually(RECOVERY, "ready again", async || {
                let (status, body) = readyz(node).await;
                if (status, body.as_str()) == (200, READY) {
                    Ok(())
                } else {
                    Err(format!("/readyz {status} {body}"))
                }
            })
            .await;
        }
        let ready_after = restarted_at.elapsed();
        wait_members(&[&a, &b], &["node-a", "node-b"], RECOVERY).await;
        let members_after = restarted_at.elapsed();
        for node in [&a, &b] {
            assert_eq!(
                metric(node, "corral_adapter_bus_connected").await,
                Some(1.0)
            );
        }
        let a_to_b = cross_node_broadcasts_resume(&send_a, &mut on_b, "a-to-b").await;
        let b_to_a = cross_node_broadcasts_resume(&send_b, &mut on_a, "b-to-a").await;
        eprintln!(
            "after the NATS restart: ready in {ready_after:?}, members in {members_after:?}; \
             first broadcast crossed A→B {a_to_b:?} and B→A {b_to_a:?} after probing"
        );
        let (a_after, b_after) = (members(&a).await, members(&b).await);
        assert_eq!(a_after, b_after);
        common::assert_healthy(&mut a).await;
        common::assert_healthy(&mut b).await;
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Payload limits
// ---------------------------------------------------------------------------------------------

/// A binary broadcast of 900 KB (under NATS's 1 MiB `max_payload`) reaches a member on another
/// node byte for byte; one of 1.5 MB is refused with an error that names the bus limit (the
/// sender's node still delivers it to its own members), the other node never sees it, and the
/// cluster keeps working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_binary_broadcast_crosses_intact_and_one_over_the_bus_limit_is_refused() {
    bounded(async {
        let nats = NatsServer::start();
        let big_frames = ["--max-payload", "3000000"];
        let mut a = start_node(&nats, "node-a", "cluster-check", &big_frames);
        let mut b = start_node(&nats, "node-b", "cluster-check", &big_frames);
        wait_members(&[&a, &b], &["node-a", "node-b"], STEP).await;
        let (sender, _) = SioClient::connect_cluster_check(a.addr).await;
        let (mut on_a, _) = SioClient::connect_cluster_check(a.addr).await;
        let (mut on_b, _) = SioClient::connect_cluster_check(b.addr).await;
        for client in [&on_a, &on_b] {
            client.call("join", json!([["big"]])).await;
        }
        let blob = json!([{
            "rooms": ["big"],
            "event": "blob",
            "data": { "_placeholder": true, "num": 0 },
        }]);

        let fits = pattern(900_000, 7);
        let ack = sender
            .call_with("emit", blob.clone(), vec![fits.clone()], STEP)
            .await
            .expect("ack of the 900 KB emit");
        assert_eq!(ack.first()["ok"], true, "{:?}", ack.first());
        for (member, name) in [(&mut on_a, "A"), (&mut on_b, "B")] {
            let event = member.expect_event("blob", STEP).await;
            assert_eq!(event.args, vec![json!({"_placeholder": true, "num": 0})]);
            assert_eq!(event.attachments.len(), 1, "member on {name}");
            let got = &event.attachments[0];
            assert!(
                *got == fits,
                "member on {name}: {}",
                first_difference(got, &fits)
            );
        }

        let too_big = pattern(1_500_000, 11);
        let ack = sender
            .call_with("emit", blob, vec![too_big.clone()], STEP)
            .await
            .expect("ack of the 1.5 MB emit");
        let answer = ack.first();
        assert_eq!(answer["ok"], false, "{answer}");
        let error = answer["error"].as_str().unwrap_or_default();
        assert!(
            error.contains("over the bus limit") && error.contains(&NATS_MAX_PAYLOAD.to_string()),
            "the error must name the bus limit ({NATS_MAX_PAYLOAD} bytes): {answer}"
        );
        // The sender's own node delivers it.
        let event = on_a.expect_event("blob", STEP).await;
        assert!(
            event.attachments.first() == Some(&too_big),
            "member on A: {}",
            first_difference(event.attachments.first().map_or(&[][..], |v| v), &too_big)
        );
        // B never gets it: the next thing B gets is a small broadcast sent after it.
        assert_eq!(
            emit(&sender, "big", "small", json!("after")).await["ok"],
            true
        );
        let next = on_b.next_event(STEP).await.expect("an event on B");
        assert_eq!(
            (next.name.as_str(), next.args.clone()),
            ("small", vec![json!("after")]),
            "B's next event"
        );
        assert_eq!(
            metric(
                &a,
                r#"corral_adapter_publish_failures_total{reason="too_large"}"#
            )
            .await,
            Some(1.0)
        );
        assert_eq!(readyz(&a).await.0, 200);
        wait_members(&[&a, &b], &["node-a", "node-b"], STEP).await;
        common::assert_healthy(&mut a).await;
        common::assert_healthy(&mut b).await;
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// A malformed message on the bus
// ---------------------------------------------------------------------------------------------

/// A real broadcast request from A, taken off NATS, with one byte changed so that its packet
/// data says "binary value" (`Value::Bytes`): valid MessagePack, a valid request, but a packet
/// the common parser cannot encode. Published to NATS, it must not cost B its cluster: B keeps
/// receiving A's broadcasts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_broadcast_on_the_bus_does_not_cut_a_node_off() {
    use corral_adapter_nats::{BusStatus, Driver, NatsConfig, NatsDriver};
    use futures_util::StreamExt;

    bounded(async {
        let nats = NatsServer::start();
        let a = start_node(&nats, "node-a", "cluster-check", &[]);
        let mut b = start_node(&nats, "node-b", "cluster-check", &[]);
        wait_members(&[&a, &b], &["node-a", "node-b"], STEP).await;
        let (sender, _) = SioClient::connect_cluster_check(a.addr).await;
        let (mut on_b, _) = SioClient::connect_cluster_check(b.addr).await;
        on_b.call("join", json!([["r"]])).await;

        let config = NatsConfig {
            servers: vec![nats.url()],
            ..NatsConfig::default()
        };
        let spy = NatsDriver::connect(config).await.expect("spy connects");
        let mut status = spy.status();
        tokio::time::timeout(STEP, status.wait_for(|s| *s == BusStatus::Connected))
            .await
            .expect("spy connected in time")
            .expect("status");
        let mut requests = spy
            .subscribe("corral.ns.*.all".to_owned())
            .await
            .expect("spy subscribes");
        spy.flush().await.expect("subscription registered");

        assert_eq!(emit(&sender, "r", "m", json!("x")).await["ok"], true);
        expect_event_data(&mut on_b, "m", json!("x")).await;
        let data = br#"["m","x"]"#;
        let request = loop {
            let message = tokio::time::timeout(STEP, requests.next())
                .await
                .expect("the spy saw the broadcast")
                .expect("subscription open");
            if message.payload.windows(data.len()).any(|w| w == data) {
                break message;
            }
        };
        // The packet data is a `Value`, `(type, bytes, attachments)`: 0x93, type 0 (text),
        // then the bytes as an array of small integers.
        let mut text = vec![0x93, 0x00, 0x90 + data.len() as u8];
        text.extend_from_slice(data);
        let at = request
            .payload
            .windows(text.len())
            .position(|w| w == text)
            .expect("the packet data in the request");
        let mut forged = request.payload.to_vec();
        forged[at + 1] = 0x01;
        spy.publish(request.subject.clone(), forged.into())
            .await
            .expect("publish");
        spy.flush().await.expect("flushed");

        // B must still hear A.
        assert_eq!(emit(&sender, "r", "m", json!("after")).await["ok"], true);
        let got = on_b.next_event(Duration::from_secs(3)).await;
        if got.as_ref().map(|e| e.args.clone()) != Some(vec![json!("after")]) {
            let panics: Vec<String> = b
                .logs()
                .into_iter()
                .filter(|l| l.contains("panicked"))
                .collect();
            panic!(
                "B no longer gets A's broadcasts (got {got:?}); meanwhile A lists {:?}, B's \
                 /readyz is {:?}; B's log: {panics:?}",
                members(&a).await,
                readyz(&b).await
            );
        }
        common::assert_healthy(&mut b).await;
    })
    .await;
}

/// The next event of `client`, which must be `name` with the single argument `data`.
async fn expect_event_data(client: &mut SioClient, name: &str, data: Value) {
    let event = client.expect_event(name, STEP).await;
    assert_eq!(event.args, vec![data], "{name}");
}
