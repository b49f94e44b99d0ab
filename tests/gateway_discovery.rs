//! Where a gateway finds its nodes besides `--node`: DNS (re-resolved, node ids learnt from each
//! address's `/readyz`) and the cluster's own membership on NATS (with the nodes' draining
//! state). Real `corral node`, `corral gateway` and `nats-server` processes.

mod common;
mod common_gateway;
mod common_nats;
mod common_protocol;

use std::{collections::BTreeSet, time::Duration};

use common_gateway::{GatewayProcess, STEP, Session, TestNode, wait_until};
use common_nats::{NatsServer, start_node};

const FAST: [&str; 4] = ["--health-interval", "200ms", "--health-timeout", "500ms"];

/// The node a new polling session lands on: the node id prefix of its token.
async fn landing(gateway: &GatewayProcess) -> String {
    Session::open(gateway.addr).await.token_parts().0
}

#[tokio::test]
async fn dns_discovery_learns_node_ids_and_routes_to_them() {
    let node = TestNode::start("dns-n1", &[]);
    let target = format!("dns:localhost:{}", node.addr.port());
    let mut args = vec!["--discover", target.as_str()];
    args.extend_from_slice(&FAST);
    let mut gateway = GatewayProcess::start(&[], &args);
    gateway.wait_ready_nodes(1).await;
    assert_eq!(landing(&gateway).await, "dns-n1");
    gateway.assert_healthy().await;
}

#[tokio::test]
async fn nats_discovery_follows_the_clusters_members_and_their_drain() {
    let nats = NatsServer::start();
    let a = start_node(&nats, "nats-a", "bench", &[]);
    let b = start_node(
        &nats,
        "nats-b",
        "bench",
        &["--drain-grace", "5s", "--drain-timeout", "10s"],
    );
    let url = nats.url();
    let mut args = vec![
        "--discover",
        "nats",
        "--nats",
        url.as_str(),
        "--affinity",
        "none",
    ];
    args.extend_from_slice(&FAST);
    let mut gateway = GatewayProcess::start(&[], &args);
    gateway.wait_ready_nodes(2).await;
    let mut seen = BTreeSet::new();
    for _ in 0..20 {
        seen.insert(landing(&gateway).await);
    }
    assert_eq!(
        seen,
        BTreeSet::from(["nats-a".to_owned(), "nats-b".to_owned()])
    );

    // nats-b drains: it tells the cluster at once, and the gateway stops sending it sessions
    // (its grace period keeps it up meanwhile).
    b.terminate();
    wait_until(
        "no new session lands on the draining node",
        STEP,
        async || {
            let mut sessions = Vec::new();
            for _ in 0..10 {
                sessions.push(landing(&gateway).await);
            }
            sessions.iter().all(|n| n == "nats-a")
        },
    )
    .await;
    drop(a);
    gateway.assert_healthy().await;
}

#[tokio::test]
async fn a_node_that_leaves_the_cluster_leaves_the_gateway() {
    let nats = NatsServer::start();
    let _a = start_node(&nats, "stay", "bench", &[]);
    let mut b = start_node(&nats, "go", "bench", &[]);
    let url = nats.url();
    let mut args = vec!["--discover", "nats", "--nats", url.as_str()];
    args.extend_from_slice(&FAST);
    let gateway = GatewayProcess::start(&[], &args);
    gateway.wait_ready_nodes(2).await;
    b.kill();
    wait_until(
        "the killed node is forgotten",
        Duration::from_secs(15),
        async || {
            gateway
                .metrics()
                .await
                .value("corral_gateway_nodes", &[("state", "preferred")])
                == 1.0
                && gateway
                    .metrics()
                    .await
                    .value("corral_gateway_nodes", &[("state", "no")])
                    == 0.0
        },
    )
    .await;
}
