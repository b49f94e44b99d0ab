//! The nodes a gateway routes to: where they come from (the static list, DNS, the cluster's
//! own membership on NATS), how healthy they are (active checks of `/readyz`, passive ejection
//! when a connection fails), and whether they may take new sessions.
//!
//! Routing reads an immutable [`Snapshot`] (the nodes and the ring built over them); a new
//! snapshot replaces it whenever the set of nodes changes. Health and load live inside each
//! [`Node`] and change in place.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::{
    proxy::Connector,
    ring::{HashRing, NodeRing},
};

/// Longest ejection after repeated connection failures.
const MAX_EJECTION: Duration = Duration::from_secs(30);

/// What the last `/readyz` check said.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// Not checked yet.
    Unknown,
    /// Takes new sessions.
    Ready,
    /// Serves, but its cluster bus is down: used only when no node is ready.
    Degraded,
    /// Shutting down.
    Draining,
    /// Did not answer.
    Down,
}

/// Whether the operator drained the node through the admin API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AdminState {
    /// In service.
    Active,
    /// No new sessions; existing ones go on.
    Drained,
    /// No new sessions, and existing ones are closed at `--drain-rate`.
    Closing,
}

/// How a node may take a new session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Eligibility {
    /// Not at all.
    No,
    /// Only if no node is ready.
    Fallback,
    /// Yes.
    Preferred,
}

#[derive(Debug)]
struct Status {
    health: Health,
    /// Sockets the node reported at its last check.
    sessions: u64,
    /// The cluster membership says it drains.
    announced_draining: bool,
    admin: AdminState,
    failures: u32,
    ejected_until: Option<Instant>,
}

/// One node.
#[derive(Debug)]
pub struct Node {
    /// Its node id.
    pub id: String,
    /// `host:port` to connect to.
    pub address: String,
    /// `address` parsed once, for the URI of every forwarded request.
    authority: Result<http::uri::Authority, String>,
    status: Mutex<Status>,
    /// New sessions routed here since its last check, so consecutive choices see the load.
    assigned: AtomicU64,
    /// Open WebSocket tunnels to it, and the means to close them.
    pub tunnels: Tunnels,
    /// The operator's drain state, for waiters.
    admin_changes: tokio::sync::watch::Sender<AdminState>,
}

/// The node as the admin API shows it.
#[derive(Debug, Serialize)]
pub struct NodeView {
    /// Node id.
    pub id: String,
    /// Address.
    pub address: String,
    /// Last health check.
    pub health: Health,
    /// Operator's drain state.
    pub admin: AdminState,
    /// Sockets it reported.
    pub sessions: u64,
    /// WebSocket tunnels through this gateway.
    pub tunnels: usize,
    /// Whether it is ejected after connection failures.
    pub ejected: bool,
}

impl Node {
    fn new(id: String, address: String) -> Node {
        let authority = http::uri::Authority::try_from(address.as_str())
            .map_err(|e| format!("node {id} has a bad address {address:?}: {e}"));
        Node {
            id,
            address,
            authority,
            status: Mutex::new(Status {
                health: Health::Unknown,
                sessions: 0,
                announced_draining: false,
                admin: AdminState::Active,
                failures: 0,
                ejected_until: None,
            }),
            assigned: AtomicU64::new(0),
            tunnels: Tunnels::default(),
            admin_changes: tokio::sync::watch::channel(AdminState::Active).0,
        }
    }

    /// `address` as a URI authority, or why it is none.
    pub(crate) fn authority(&self) -> Result<http::uri::Authority, String> {
        self.authority.clone()
    }

    fn status(&self) -> std::sync::MutexGuard<'_, Status> {
        self.status.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// May it take a new session now?
    pub fn eligibility(&self) -> Eligibility {
        let status = self.status();
        let ejected = status
            .ejected_until
            .is_some_and(|until| Instant::now() < until);
        if ejected || status.admin != AdminState::Active || status.announced_draining {
            return Eligibility::No;
        }
        match status.health {
            Health::Ready => Eligibility::Preferred,
            Health::Unknown | Health::Degraded => Eligibility::Fallback,
            Health::Draining | Health::Down => Eligibility::No,
        }
    }

    /// May requests of its existing sessions go to it? Not while it is ejected (a connection
    /// to it just failed): its clients had better start over elsewhere. A failed health check
    /// alone (a slow `/readyz`) keeps new sessions away but leaves existing ones alone.
    pub fn serves_sessions(&self) -> bool {
        let status = self.status();
        status
            .ejected_until
            .is_none_or(|until| Instant::now() >= until)
    }

    /// Live sessions as far as this gateway knows: the last report plus what it sent since.
    pub fn load(&self) -> u64 {
        self.status().sessions + self.assigned.load(Ordering::Relaxed)
    }

    /// Counts a new session routed here.
    pub fn assigned(&self) {
        self.assigned.fetch_add(1, Ordering::Relaxed);
    }

    /// The operator's drain state.
    pub fn admin_state(&self) -> AdminState {
        self.status().admin
    }

    pub(crate) fn set_admin(&self, admin: AdminState) {
        self.status().admin = admin;
        self.admin_changes.send_replace(admin);
    }

    /// Resolves once the operator drains the node with `close` (at once if already so).
    pub async fn closing(&self) {
        let mut changes = self.admin_changes.subscribe();
        while *changes.borrow_and_update() != AdminState::Closing {
            if changes.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    }

    /// The node refused a new session (it drains): no new sessions until a check says otherwise.
    pub fn refused_sessions(&self) {
        self.checked(Health::Draining, None);
    }

    /// A connection to the node failed: keep new sessions away for a while, longer each time.
    pub fn eject(&self) {
        let mut status = self.status();
        status.failures = status.failures.saturating_add(1);
        let backoff = Duration::from_secs(1)
            .saturating_mul(1 << status.failures.saturating_sub(1).min(5))
            .min(MAX_EJECTION);
        status.ejected_until = Some(Instant::now() + backoff);
        tracing::warn!(
            node = self.id,
            ?backoff,
            "node ejected after a connection failure"
        );
    }

    fn checked(&self, health: Health, sessions: Option<u64>) {
        let mut status = self.status();
        if health != status.health {
            tracing::info!(node = self.id, ?health, "node health changed");
        }
        status.health = health;
        if let Some(sessions) = sessions {
            status.sessions = sessions;
            self.assigned.store(0, Ordering::Relaxed);
        }
        if health != Health::Down {
            status.failures = 0;
            status.ejected_until = None;
        }
    }

    /// What the admin API shows.
    pub fn view(&self) -> NodeView {
        let status = self.status();
        NodeView {
            id: self.id.clone(),
            address: self.address.clone(),
            health: status.health,
            admin: status.admin,
            sessions: status.sessions,
            tunnels: self.tunnels.len(),
            ejected: status
                .ejected_until
                .is_some_and(|until| Instant::now() < until),
        }
    }
}

/// The WebSocket tunnels open to one node, each closable from outside.
#[derive(Debug, Default)]
pub struct Tunnels {
    open: Mutex<BTreeMap<u64, CancellationToken>>,
    next: AtomicU64,
}

/// Removes its tunnel from the set when the tunnel ends.
#[derive(Debug)]
pub struct TunnelGuard<'a> {
    tunnels: &'a Tunnels,
    id: u64,
    /// Cancelled when the gateway wants the tunnel closed.
    pub cancel: CancellationToken,
}

impl Tunnels {
    /// Registers a new tunnel.
    pub fn open(&self) -> TunnelGuard<'_> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let cancel = CancellationToken::new();
        self.open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, cancel.clone());
        TunnelGuard {
            tunnels: self,
            id,
            cancel,
        }
    }

    /// Open tunnels.
    pub fn len(&self) -> usize {
        self.open.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// True when none is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Closes up to `n` tunnels (the oldest first); how many it closed.
    pub fn close(&self, n: usize) -> usize {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let mut closed = 0;
        for cancel in open.values().filter(|c| !c.is_cancelled()).take(n) {
            cancel.cancel();
            closed += 1;
        }
        closed
    }
}

impl Drop for TunnelGuard<'_> {
    fn drop(&mut self) {
        self.tunnels
            .open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
    }
}

/// The nodes at one moment, and the ring over them.
pub struct Snapshot {
    /// Every node, by id.
    pub nodes: BTreeMap<String, Arc<Node>>,
    /// The consistent-hash ring over their ids.
    pub ring: Box<dyn NodeRing>,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("nodes", &self.nodes.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Snapshot {
    fn build(nodes: BTreeMap<String, Arc<Node>>) -> Snapshot {
        let ring = HashRing::new(nodes.keys().map(|id| (id.as_str(), 1)));
        Snapshot {
            nodes,
            ring: Box::new(ring),
        }
    }
}

/// Where a node was learnt from; sources are merged by node id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Source {
    /// `--node`.
    Static,
    /// `--discover dns:…`.
    Dns,
    /// `--discover nats`.
    Nats,
}

/// A node as a source describes it.
#[derive(Debug, Clone)]
pub struct Member {
    /// Node id.
    pub id: String,
    /// `host:port`.
    pub address: String,
    /// The membership says it drains.
    pub draining: bool,
}

/// Every node the gateway knows.
pub struct NodeTable {
    snapshot: RwLock<Arc<Snapshot>>,
    members: Mutex<BTreeMap<Source, Vec<Member>>>,
}

impl std::fmt::Debug for NodeTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeTable")
            .field("snapshot", &self.snapshot())
            .finish()
    }
}

impl Default for NodeTable {
    fn default() -> Self {
        NodeTable {
            snapshot: RwLock::new(Arc::new(Snapshot::build(BTreeMap::new()))),
            members: Mutex::default(),
        }
    }
}

impl NodeTable {
    /// The current nodes.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The node with id `id`.
    pub fn get(&self, id: &str) -> Option<Arc<Node>> {
        self.snapshot().nodes.get(id).cloned()
    }

    /// Replaces what `source` says; rebuilds the ring if the set of nodes changed. Nodes keep
    /// their health and tunnels across updates.
    pub fn update(&self, source: Source, members: Vec<Member>) {
        let mut all = self.members.lock().unwrap_or_else(|e| e.into_inner());
        all.insert(source, members);
        let current = self.snapshot();
        let mut nodes = BTreeMap::new();
        for member in all.values().flatten() {
            let node = match current.nodes.get(&member.id) {
                Some(node) if node.address == member.address => node.clone(),
                _ => Arc::new(Node::new(member.id.clone(), member.address.clone())),
            };
            node.status().announced_draining = member.draining;
            nodes.entry(member.id.clone()).or_insert(node);
        }
        let changed = nodes.len() != current.nodes.len()
            || nodes.iter().any(|(id, node)| {
                current
                    .nodes
                    .get(id)
                    .is_none_or(|old| !Arc::ptr_eq(old, node))
            });
        if changed {
            let ids: Vec<&String> = nodes.keys().collect();
            tracing::info!(nodes = ?ids, "node set changed");
            *self.snapshot.write().unwrap_or_else(|e| e.into_inner()) =
                Arc::new(Snapshot::build(nodes));
        }
    }
}

/// What a node's `/readyz` says.
#[derive(Debug, serde::Deserialize)]
struct Readyz {
    status: String,
    node_id: Option<String>,
    connections: Option<u64>,
}

/// Asks `address`'s `/readyz` (bounded by `timeout`).
async fn probe(
    client: &Client<Connector, Empty<Bytes>>,
    address: &str,
    timeout: Duration,
) -> Option<(Health, Option<String>, Option<u64>)> {
    let uri: http::Uri = format!("http://{address}/readyz").parse().ok()?;
    let res = tokio::time::timeout(timeout, client.get(uri))
        .await
        .ok()?
        .ok()?;
    let body = tokio::time::timeout(timeout, res.into_body().collect())
        .await
        .ok()?
        .ok()?
        .to_bytes();
    let readyz: Readyz = serde_json::from_slice(&body).ok()?;
    let health = match readyz.status.as_str() {
        "ready" => Health::Ready,
        "degraded" => Health::Degraded,
        _ => Health::Draining,
    };
    Some((health, readyz.node_id, readyz.connections))
}

/// Checks every node every `interval` until `stop` is cancelled; with a DNS source, resolves it
/// each round and learns the node id behind each address from its `/readyz`.
pub(crate) async fn check_health(
    table: Arc<NodeTable>,
    connector: Connector,
    dns: Option<(String, u16)>,
    interval: Duration,
    timeout: Duration,
    stop: CancellationToken,
) {
    let client = Client::builder(hyper_util::rt::TokioExecutor::new()).build(connector);
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = stop.cancelled() => return,
        }
        if let Some((name, port)) = &dns {
            let members = resolve(&client, name, *port, timeout).await;
            table.update(Source::Dns, members);
        }
        let snapshot = table.snapshot();
        let checks = snapshot.nodes.values().map(|node| {
            let client = &client;
            async move {
                match probe(client, &node.address, timeout).await {
                    Some((_, Some(reported), _)) if reported != node.id => {
                        tracing::error!(
                            node = node.id,
                            reported,
                            address = node.address,
                            "the address answers with another node id"
                        );
                        node.checked(Health::Down, None);
                    }
                    Some((health, _, sessions)) => node.checked(health, sessions),
                    None => node.checked(Health::Down, None),
                }
            }
        });
        futures_util::future::join_all(checks).await;
    }
}

/// The nodes behind DNS name `name`: each address, named by the node id its `/readyz` reports.
async fn resolve(
    client: &Client<Connector, Empty<Bytes>>,
    name: &str,
    port: u16,
    timeout: Duration,
) -> Vec<Member> {
    let addresses: Vec<SocketAddr> = match tokio::net::lookup_host((name, port)).await {
        Ok(addresses) => addresses.collect(),
        Err(err) => {
            tracing::warn!(%err, name, "DNS discovery failed; keeping no DNS nodes this round");
            return Vec::new();
        }
    };
    let probes = addresses.into_iter().map(|addr| async move {
        let address = addr.to_string();
        let (_, id, _) = probe(client, &address, timeout).await?;
        Some(Member {
            id: id?,
            address,
            draining: false,
        })
    });
    futures_util::future::join_all(probes)
        .await
        .into_iter()
        .flatten()
        .collect()
}

#[cfg(test)]
impl Node {
    /// Marks the node ready, as a successful check would.
    pub(crate) fn checked_for_test(&self) {
        self.checked(Health::Ready, Some(0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str, address: &str) -> Member {
        Member {
            id: id.into(),
            address: address.into(),
            draining: false,
        }
    }

    #[test]
    fn sources_merge_by_id_and_nodes_keep_their_state() {
        let table = NodeTable::default();
        table.update(Source::Static, vec![member("a", "127.0.0.1:1")]);
        let a = table.get("a").unwrap();
        a.checked(Health::Ready, Some(3));
        table.update(
            Source::Nats,
            vec![member("a", "127.0.0.1:1"), member("b", "127.0.0.1:2")],
        );
        assert_eq!(table.snapshot().nodes.len(), 2);
        let same = table.get("a").unwrap();
        assert!(
            Arc::ptr_eq(&a, &same),
            "a node's state survives a membership update"
        );
        assert_eq!(same.load(), 3);
        table.update(Source::Nats, vec![]);
        assert_eq!(table.snapshot().nodes.keys().collect::<Vec<_>>(), ["a"]);
    }

    #[test]
    fn eligibility_follows_health_drain_and_ejection() {
        let node = Node::new("a".into(), "x:1".into());
        assert_eq!(node.eligibility(), Eligibility::Fallback, "unchecked");
        node.checked(Health::Ready, Some(0));
        assert_eq!(node.eligibility(), Eligibility::Preferred);
        node.checked(Health::Degraded, None);
        assert_eq!(node.eligibility(), Eligibility::Fallback);
        node.checked(Health::Down, None);
        assert_eq!(node.eligibility(), Eligibility::No);
        assert!(
            node.serves_sessions(),
            "a failed check alone leaves sessions alone"
        );
        node.checked(Health::Ready, None);
        node.eject();
        assert_eq!(node.eligibility(), Eligibility::No);
        assert!(!node.serves_sessions());
        node.checked(Health::Ready, None);
        assert_eq!(
            node.eligibility(),
            Eligibility::Preferred,
            "a good check ends the ejection"
        );
        node.set_admin(AdminState::Drained);
        assert_eq!(node.eligibility(), Eligibility::No);
        assert!(node.serves_sessions(), "a drained node keeps its sessions");
    }

    #[test]
    fn tunnels_close_oldest_first_and_leave_when_done() {
        let tunnels = Tunnels::default();
        let first = tunnels.open();
        let second = tunnels.open();
        assert_eq!(tunnels.close(1), 1);
        assert!(first.cancel.is_cancelled());
        assert!(!second.cancel.is_cancelled());
        drop(first);
        assert_eq!(tunnels.len(), 1);
    }
}
