//! The [`Cluster`]: one per node, shared by the adapters of all its namespaces. It owns the bus
//! connection's subscriptions, routes what arrives (requests to the namespace they address,
//! responses to the request waiting for them, membership, server events), announces the node,
//! and publishes on behalf of the adapters.
//!
//! Everything that arrives is handled by one task in arrival order, and all requests arrive on
//! one subscription, which keeps the bus's per-publisher ordering: the requests of one node
//! (broadcasts, joins, disconnects) take effect on another in the order they were sent.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, RwLock, Weak,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use futures_util::{StreamExt, stream::select_all};
use serde::{Serialize, de::DeserializeOwned};
use socketioxide_core::{
    Sid, Uid,
    adapter::{
        errors::AdapterError,
        remote_packet::{RequestIn, RequestOut, RequestTypeIn, Response, ResponseType},
        stream::{ResponseHandlers, insert_response_handler},
    },
};
use tokio::sync::{mpsc, watch};
use tracing::Instrument as _;

use crate::{
    driver::{BoxError, BusStatus, Driver},
    membership::{Announcement, BEAT_VERSION, Beat, Membership, NodeInfo, NodeState, Observed},
    metrics::{AdapterMetrics, MessageKind, observe},
    server_events::{self, ServerEventHandlers},
    subjects::{PrefixError, Route, Subjects},
};

/// Default subject prefix.
pub const DEFAULT_PREFIX: &str = "corral";
/// Default heartbeat interval.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
/// Default heartbeat timeout: a node killed without a goodbye is forgotten within 2.5 s.
pub const DEFAULT_HEARTBEAT_TIMEOUT: Duration = Duration::from_millis(2500);
/// Default time a cluster request waits for the other nodes' answers.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Who this node is and how the cluster behaves.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// Subject prefix, so several apps can share one bus.
    pub prefix: String,
    /// This node's socketioxide server id (`SocketIoConfig::server_id`).
    pub uid: Uid,
    /// This node's id, for humans and routers.
    pub node_id: String,
    /// Where clients and gateways reach this node.
    pub address: String,
    /// How often the node announces itself.
    pub heartbeat_interval: Duration,
    /// How long a silent node stays a member.
    pub heartbeat_timeout: Duration,
    /// How long a cluster request waits for answers.
    pub request_timeout: Duration,
}

impl ClusterConfig {
    /// A configuration with the defaults for node `node_id` with server id `uid`.
    pub fn new(uid: Uid, node_id: impl Into<String>, address: impl Into<String>) -> ClusterConfig {
        ClusterConfig {
            prefix: DEFAULT_PREFIX.to_owned(),
            uid,
            node_id: node_id.into(),
            address: address.into(),
            heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
            heartbeat_timeout: DEFAULT_HEARTBEAT_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        }
    }
}

/// What can go wrong in the cluster layer.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The subject prefix is not usable.
    #[error(transparent)]
    Prefix(#[from] PrefixError),
    /// Heartbeat timings that would forget live nodes.
    #[error(
        "heartbeat timeout ({timeout:?}) must be longer than the heartbeat interval ({interval:?})"
    )]
    Timing {
        /// The interval.
        interval: Duration,
        /// The timeout.
        timeout: Duration,
    },
    /// The message is over the bus's limit.
    #[error("message of {size} bytes is over the bus limit of {max} bytes")]
    TooLarge {
        /// Size of the message.
        size: usize,
        /// The bus's limit.
        max: usize,
    },
    /// The bus refused or could not take the message.
    #[error("bus: {0}")]
    Bus(BoxError),
    /// A message could not be encoded.
    #[error("encoding a bus message: {0}")]
    Encode(#[from] rmp_serde::encode::Error),
}

impl From<ClusterError> for AdapterError {
    fn from(err: ClusterError) -> Self {
        AdapterError(Box::new(err))
    }
}

/// Handles the requests of one namespace; implemented by the adapter.
pub(crate) trait NamespaceHandler: Send + Sync {
    fn on_request(self: Arc<Self>, req: RequestIn);
}

/// Answers gathered from the live nodes, and the nodes that did not answer in time.
#[derive(Debug)]
pub struct Gathered<T> {
    /// One answer per node that answered.
    pub answers: Vec<(Uid, T)>,
    /// Live nodes that did not answer before the timeout.
    pub missing: Vec<Uid>,
}

/// Counts the connections of this node, for its heartbeats.
pub type ConnectionCounter = Arc<dyn Fn() -> u64 + Send + Sync>;

pub(crate) struct Inner<D: Driver> {
    pub(crate) driver: D,
    pub(crate) subjects: Subjects,
    pub(crate) config: ClusterConfig,
    instance: u64,
    own_uid_text: String,
    membership: Membership,
    namespaces: RwLock<HashMap<String, Weak<dyn NamespaceHandler>>>,
    pub(crate) responses: Arc<Mutex<ResponseHandlers<Bytes>>>,
    pub(crate) server_events: ServerEventHandlers,
    draining: AtomicBool,
    connections: RwLock<Option<ConnectionCounter>>,
    pub(crate) metrics: AdapterMetrics,
    stop: watch::Sender<bool>,
}

/// A node's membership in a cluster; cheap to clone. Give it to socketioxide as the adapter
/// state (`SocketIo::builder().with_adapter::<ClusterAdapter<_, D>>(cluster)`).
pub struct Cluster<D: Driver> {
    pub(crate) inner: Arc<Inner<D>>,
}

impl<D: Driver> Clone for Cluster<D> {
    fn clone(&self) -> Self {
        Cluster {
            inner: self.inner.clone(),
        }
    }
}

impl<D: Driver> std::fmt::Debug for Cluster<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node_id", &self.inner.config.node_id)
            .field("uid", &self.inner.config.uid)
            .finish()
    }
}

impl<D: Driver> Drop for Inner<D> {
    fn drop(&mut self) {
        self.stop.send_replace(true);
    }
}

impl<D: Driver> Cluster<D> {
    /// Subscribes to the cluster's subjects on `driver`, starts announcing this node, and
    /// returns at once; the node works alone until it hears from the others (a second or so).
    pub async fn start(
        driver: D,
        config: ClusterConfig,
        metrics: AdapterMetrics,
    ) -> Result<Cluster<D>, ClusterError> {
        if config.heartbeat_timeout <= config.heartbeat_interval {
            return Err(ClusterError::Timing {
                interval: config.heartbeat_interval,
                timeout: config.heartbeat_timeout,
            });
        }
        let subjects = Subjects::new(&config.prefix)?;
        let mut subscriptions = Vec::new();
        for pattern in [
            subjects.requests_wildcard(),
            subjects.responses(config.uid),
            subjects.heartbeat(),
            subjects.server_event(),
        ] {
            let sub = driver
                .subscribe(pattern)
                .await
                .map_err(|e| ClusterError::Bus(Box::new(e)))?;
            subscriptions.push(sub);
        }
        let instance = random_u64();
        let (stop, stopped) = watch::channel(false);
        let inner = Arc::new(Inner {
            membership: Membership::new(config.uid, instance, config.heartbeat_timeout),
            own_uid_text: config.uid.to_string(),
            driver,
            subjects,
            config,
            instance,
            namespaces: RwLock::default(),
            responses: Arc::default(),
            server_events: ServerEventHandlers::default(),
            draining: AtomicBool::new(false),
            connections: RwLock::default(),
            metrics,
            stop,
        });
        tokio::spawn(dispatch(
            Arc::downgrade(&inner),
            select_all(subscriptions),
            stopped.clone(),
        ));
        tokio::spawn(announce(Arc::downgrade(&inner), stopped));
        Ok(Cluster { inner })
    }

    /// This node's server id.
    pub fn uid(&self) -> Uid {
        self.inner.config.uid
    }

    /// The driver, e.g. to check its [`BusStatus`].
    pub fn driver(&self) -> &D {
        &self.inner.driver
    }

    /// Every live node, this one first.
    pub fn nodes(&self) -> Vec<NodeInfo> {
        let mut nodes = vec![self.inner.own_info()];
        nodes.extend(self.inner.membership.live());
        self.inner.metrics.set_live_nodes(nodes.len());
        nodes
    }

    /// Marks this node as draining and tells the cluster at once.
    pub async fn set_draining(&self) {
        self.inner.draining.store(true, Ordering::Release);
        self.inner.announce(Announcement::Heartbeat).await;
    }

    /// Lets the heartbeats carry this node's connection count.
    pub fn set_connection_counter(&self, counter: ConnectionCounter) {
        *self
            .inner
            .connections
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Some(counter);
    }

    /// Says goodbye (the others forget this node at once) and stops the background tasks.
    pub async fn leave(&self) {
        self.inner.announce(Announcement::Goodbye).await;
        self.inner.stop.send_replace(true);
    }
}

impl<D: Driver> Inner<D> {
    fn own_info(&self) -> NodeInfo {
        let connections = self
            .connections
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map_or(0, |count| count());
        NodeInfo {
            uid: self.config.uid,
            node_id: self.config.node_id.clone(),
            address: self.config.address.clone(),
            state: if self.draining.load(Ordering::Acquire) {
                NodeState::Draining
            } else {
                NodeState::Ready
            },
            connections,
        }
    }

    pub(crate) fn live_uids(&self) -> Vec<Uid> {
        let uids = self.membership.live_uids();
        self.metrics.set_live_nodes(uids.len() + 1);
        uids
    }

    pub(crate) fn register_namespace(&self, path: &str, handler: Weak<dyn NamespaceHandler>) {
        self.namespaces
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(path.to_owned(), handler);
    }

    pub(crate) fn unregister_namespace(&self, path: &str) {
        self.namespaces
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(path);
    }

    /// Publishes `payload`, refusing what the bus cannot carry with a clear error.
    pub(crate) async fn publish(
        &self,
        subject: String,
        payload: Vec<u8>,
        kind: MessageKind,
    ) -> Result<(), ClusterError> {
        let size = payload.len();
        let max = self.driver.max_payload();
        if size > max {
            self.metrics.publish_failed("too_large");
            return Err(ClusterError::TooLarge { size, max });
        }
        let sent = if kind == MessageKind::Request {
            // Requests (broadcasts among them) carry the trace on to the nodes that act on them.
            let span = tracing::debug_span!(
                target: crate::trace::TARGET,
                "adapter publish",
                otel.kind = "producer",
                messaging.system = "corral",
                messaging.destination = %subject,
                messaging.message.body.size = size,
            );
            let headers = crate::trace::headers_of(&span);
            self.driver
                .publish_with_headers(subject, headers, Bytes::from(payload))
                .instrument(span)
                .await
        } else {
            self.driver.publish(subject, Bytes::from(payload)).await
        };
        match sent {
            Ok(()) => {
                self.metrics.message(true, kind, size);
                Ok(())
            }
            Err(err) => {
                let connected = *self.driver.status().borrow() == BusStatus::Connected;
                self.metrics
                    .publish_failed(if connected { "other" } else { "disconnected" });
                Err(ClusterError::Bus(Box::new(err)))
            }
        }
    }

    /// Sends a socketioxide request for namespace `ns` to one node or to all.
    pub(crate) async fn send_request(
        &self,
        ns: &str,
        req: &RequestOut<'_>,
        target: Option<Uid>,
    ) -> Result<(), ClusterError> {
        let payload =
            rmp_serde::to_vec(req).inspect_err(|_| self.metrics.publish_failed("encode"))?;
        let subject = match target {
            Some(uid) => self.subjects.node(ns, uid),
            None => self.subjects.broadcast(ns),
        };
        self.publish(subject, payload, MessageKind::Request).await
    }

    /// Sends `response` to request `req_id` of node `origin`.
    pub(crate) async fn send_response<T: Serialize>(
        &self,
        origin: Uid,
        req_id: Sid,
        response: &T,
    ) -> Result<(), ClusterError> {
        let payload = self.encode_response(req_id, response)?;
        self.send_encoded_response(origin, payload).await
    }

    /// A response as it travels: `(req_id, response)` in MessagePack.
    pub(crate) fn encode_response<T: Serialize>(
        &self,
        req_id: Sid,
        response: &T,
    ) -> Result<Vec<u8>, ClusterError> {
        rmp_serde::to_vec(&(req_id, response))
            .inspect_err(|_| self.metrics.publish_failed("encode"))
            .map_err(ClusterError::from)
    }

    /// Sends an encoded response to node `origin`.
    pub(crate) async fn send_encoded_response(
        &self,
        origin: Uid,
        payload: Vec<u8>,
    ) -> Result<(), ClusterError> {
        self.publish(
            self.subjects.responses(origin),
            payload,
            MessageKind::Response,
        )
        .await
    }

    /// Prepares to receive the responses of request `req_id` (before sending it, so none is
    /// missed); the handler is removed when the returned guard is dropped.
    pub(crate) fn expect_responses(&self, req_id: Sid, capacity: usize) -> ResponseGuard {
        let rx = insert_response_handler(&self.responses, req_id, capacity);
        ResponseGuard {
            rx: Some(rx),
            req_id,
            handlers: self.responses.clone(),
        }
    }

    /// Waits for one answer from each of `expected`, at most `timeout`; `decode` turns a
    /// response into its sender and value (or `None` for an answer of another kind).
    pub(crate) async fn gather<T>(
        &self,
        kind: &'static str,
        mut responses: ResponseGuard,
        expected: Vec<Uid>,
        timeout: Duration,
        decode: impl Fn(Bytes) -> Option<(Uid, T)>,
    ) -> Gathered<T> {
        let started = Instant::now();
        let mut waiting = expected;
        let mut answers = Vec::with_capacity(waiting.len());
        let deadline = tokio::time::Instant::now() + timeout;
        while !waiting.is_empty() {
            match tokio::time::timeout_at(deadline, responses.recv()).await {
                Ok(Some(bytes)) => match decode(bytes) {
                    Some((uid, value)) if waiting.contains(&uid) => {
                        waiting.retain(|w| *w != uid);
                        answers.push((uid, value));
                    }
                    Some(_) => {}
                    None => self.metrics.dropped("undecodable"),
                },
                Ok(None) | Err(_) => break,
            }
        }
        observe(&self.metrics.request_timer(kind), started.elapsed());
        let missing = waiting;
        if !missing.is_empty() {
            self.metrics.request_timed_out(kind);
            let names = self.describe(&missing);
            tracing::warn!(kind, missing = ?names, "cluster request: some nodes did not answer in time; the result is partial");
        }
        Gathered { answers, missing }
    }

    /// Node ids for server ids, for messages.
    pub(crate) fn describe(&self, uids: &[Uid]) -> Vec<String> {
        let live = self.membership.live();
        uids.iter()
            .map(|uid| {
                live.iter()
                    .find(|n| n.uid == *uid)
                    .map_or_else(|| uid.to_string(), |n| n.node_id.clone())
            })
            .collect()
    }

    async fn announce(&self, kind: Announcement) {
        let beat = Beat {
            version: BEAT_VERSION,
            kind,
            instance: self.instance,
            node: self.own_info(),
        };
        let payload = match rmp_serde::to_vec_named(&beat) {
            Ok(payload) => payload,
            Err(err) => {
                tracing::error!(%err, "encoding a heartbeat");
                return;
            }
        };
        if let Err(err) = self
            .publish(self.subjects.heartbeat(), payload, MessageKind::Heartbeat)
            .await
        {
            tracing::debug!(%err, ?kind, "heartbeat not sent");
        }
    }

    fn on_message(self: &Arc<Self>, subject: &str, headers: &[(String, String)], payload: Bytes) {
        let Some(route) = self.subjects.route(subject) else {
            self.metrics.dropped("foreign_subject");
            return;
        };
        match route {
            Route::Request { ns, target } => {
                self.metrics
                    .message(false, MessageKind::Request, payload.len());
                if target.is_some_and(|uid| uid != self.own_uid_text) {
                    // Addressed to another node; see `subjects` for why it arrives here.
                    return;
                }
                let handler = self
                    .namespaces
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(&ns)
                    .and_then(Weak::upgrade);
                let req = match rmp_serde::from_slice::<RequestIn>(&payload) {
                    Ok(req) => req,
                    Err(err) => {
                        self.metrics.dropped("undecodable");
                        tracing::debug!(%err, subject, "undecodable request dropped");
                        return;
                    }
                };
                if !packet_fits(&req) {
                    self.metrics.dropped("undecodable");
                    tracing::debug!(
                        subject,
                        "request with a packet socketioxide cannot send, dropped"
                    );
                    return;
                }
                let span = tracing::debug_span!(
                    target: crate::trace::TARGET,
                    "adapter receive",
                    otel.kind = "consumer",
                    messaging.system = "corral",
                    messaging.destination = %subject,
                    messaging.message.body.size = payload.len(),
                );
                crate::trace::adopt_pairs(&span, headers);
                let _entered = span.enter();
                match handler {
                    Some(handler) => handler.on_request(req),
                    None => self.answer_without_namespace(req),
                }
            }
            Route::Response => {
                self.metrics
                    .message(false, MessageKind::Response, payload.len());
                let Some(req_id) = response_id(&payload) else {
                    self.metrics.dropped("undecodable");
                    return;
                };
                let handlers = self.responses.lock().unwrap_or_else(|e| e.into_inner());
                match handlers.get(&req_id) {
                    // A full queue means the requester stopped reading; it times out anyway.
                    Some(tx) => {
                        if tx.try_send(payload).is_err() {
                            self.metrics.dropped("late_response");
                        }
                    }
                    None => self.metrics.dropped("late_response"),
                }
            }
            Route::Heartbeat => {
                self.metrics
                    .message(false, MessageKind::Heartbeat, payload.len());
                match rmp_serde::from_slice::<Beat>(&payload) {
                    Ok(beat) => self.on_beat(beat),
                    Err(err) => {
                        self.metrics.dropped("undecodable");
                        tracing::debug!(%err, "undecodable heartbeat dropped");
                    }
                }
            }
            Route::ServerEvent => {
                self.metrics
                    .message(false, MessageKind::ServerEvent, payload.len());
                server_events::on_event(self, &payload);
            }
        }
    }

    /// A request for a namespace this node does not serve (a dynamic namespace nobody here
    /// connected to): there is nothing to act on, but a requester waiting for answers gets an
    /// empty one at once instead of waiting for its timeout.
    fn answer_without_namespace(self: &Arc<Self>, req: RequestIn) {
        self.metrics.dropped("no_namespace");
        let node_id = self.config.uid;
        let payload = match req.r#type {
            RequestTypeIn::FetchSockets => self.encode_response(
                req.id,
                &Response::<()> {
                    node_id,
                    r#type: ResponseType::FetchSockets(Vec::new()),
                },
            ),
            RequestTypeIn::AllRooms => self.encode_response(
                req.id,
                &Response::<()> {
                    node_id,
                    r#type: ResponseType::AllRooms(Default::default()),
                },
            ),
            RequestTypeIn::BroadcastWithAck(_) => self.encode_response(
                req.id,
                &Response::<()> {
                    node_id,
                    r#type: ResponseType::BroadcastAckCount(0),
                },
            ),
            _ => return,
        };
        let Ok(payload) = payload else { return };
        let this = self.clone();
        tokio::spawn(async move {
            if let Err(err) = this.send_encoded_response(req.node_id, payload).await {
                tracing::debug!(%err, "could not answer a request for an absent namespace");
            }
        });
    }

    fn on_beat(self: &Arc<Self>, beat: Beat) {
        let (node_id, address, kind) = (
            beat.node.node_id.clone(),
            beat.node.address.clone(),
            beat.kind,
        );
        match self.membership.observe(beat) {
            Observed::Joined => {
                tracing::info!(node_id, address, "node joined the cluster");
                // A hello asks for an answer so the newcomer learns us without waiting.
                if kind == Announcement::Hello {
                    let this = self.clone();
                    tokio::spawn(async move { this.announce(Announcement::Heartbeat).await });
                }
            }
            Observed::Left => tracing::info!(node_id, "node left the cluster"),
            Observed::Alive => {
                if kind == Announcement::Hello {
                    let this = self.clone();
                    tokio::spawn(async move { this.announce(Announcement::Heartbeat).await });
                }
            }
            Observed::Impostor => {
                self.metrics.dropped("duplicate_node_id");
                tracing::error!(
                    node_id,
                    address,
                    "another process announces this node's id; node ids must be unique in a cluster"
                );
            }
        }
        self.metrics
            .set_live_nodes(self.membership.live().len() + 1);
    }
}

/// Holds the response queue of one request; removes its handler when dropped.
pub(crate) struct ResponseGuard {
    rx: Option<mpsc::Receiver<Bytes>>,
    req_id: Sid,
    handlers: Arc<Mutex<ResponseHandlers<Bytes>>>,
}

impl ResponseGuard {
    /// The next response, `None` once the queue is closed.
    async fn recv(&mut self) -> Option<Bytes> {
        self.rx.as_mut()?.recv().await
    }

    /// Hands the queue to socketioxide's ack stream, which removes the handler itself.
    pub(crate) fn into_parts(mut self) -> HandedOver {
        HandedOver {
            rx: self.rx.take(),
            req_id: self.req_id,
            handlers: self.handlers.clone(),
        }
    }
}

/// A response queue handed over to socketioxide's ack stream.
pub(crate) struct HandedOver {
    pub(crate) rx: Option<mpsc::Receiver<Bytes>>,
    pub(crate) req_id: Sid,
    pub(crate) handlers: Arc<Mutex<ResponseHandlers<Bytes>>>,
}

impl Drop for ResponseGuard {
    fn drop(&mut self) {
        // Handed over: the new owner removes the handler.
        if self.rx.is_none() {
            return;
        }
        self.handlers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.req_id);
    }
}

/// True when the packet of a request is one the nodes' parser can send. Corral nodes use
/// Socket.IO's common (JSON) parser, whose event data are always text; a packet carrying a bare
/// binary value decodes fine but would make the parser panic when sending it.
fn packet_fits(req: &RequestIn) -> bool {
    use socketioxide_core::{Value, packet::PacketData};
    let packet = match &req.r#type {
        RequestTypeIn::Broadcast(p) | RequestTypeIn::BroadcastWithAck(p) => p,
        _ => return true,
    };
    match &packet.inner {
        PacketData::Event(value, _)
        | PacketData::EventAck(value, _)
        | PacketData::BinaryEvent(value, _)
        | PacketData::BinaryAck(value, _) => matches!(value, Value::Str(..)),
        PacketData::Connect(_) | PacketData::Disconnect | PacketData::ConnectError(_) => true,
    }
}

/// The request id at the head of a response (`(req_id, response)` in MessagePack).
fn response_id(payload: &[u8]) -> Option<Sid> {
    rmp_serde::from_slice::<(Sid, serde::de::IgnoredAny)>(payload)
        .ok()
        .map(|(id, _)| id)
}

/// Decodes a `(req_id, response)` payload's response.
pub(crate) fn decode_response<T: DeserializeOwned>(payload: &[u8]) -> Option<T> {
    rmp_serde::from_slice::<(Sid, T)>(payload)
        .ok()
        .map(|(_, r)| r)
}

fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    // RandomState is seeded from the OS per process; good enough to tell processes apart.
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.finish()
}

/// Routes everything that arrives, in order, until the cluster stops or is dropped.
async fn dispatch<D: Driver>(
    inner: Weak<Inner<D>>,
    mut messages: futures_util::stream::SelectAll<crate::driver::Subscription>,
    mut stopped: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            message = messages.next() => {
                let Some(message) = message else { return };
                let Some(inner) = inner.upgrade() else { return };
                // Nothing from the bus may end this loop: a node that stops listening would
                // stay a member, silently deaf. Whatever panics is dropped and counted.
                let handled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    inner.on_message(&message.subject, &message.headers, message.payload)
                }));
                if handled.is_err() {
                    inner.metrics.dropped("handler_panic");
                    tracing::error!(subject = message.subject, "a bus message made its handler panic; dropped");
                }
            }
            _ = stopped.wait_for(|stop| *stop) => return,
        }
    }
}

/// Announces this node: a hello now and whenever the bus comes back, a heartbeat every interval.
async fn announce<D: Driver>(inner: Weak<Inner<D>>, mut stopped: watch::Receiver<bool>) {
    let (interval, mut status) = match inner.upgrade() {
        Some(inner) => (inner.config.heartbeat_interval, inner.driver.status()),
        None => return,
    };
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut kind = Announcement::Hello;
    // A driver may drop its status sender (a bus that is never down): then only the ticker wakes.
    let mut status_open = true;
    loop {
        let Some(this) = inner.upgrade() else { return };
        let connected = *status.borrow_and_update() == BusStatus::Connected;
        this.metrics.set_bus_connected(connected);
        if connected {
            this.announce(kind).await;
            kind = Announcement::Heartbeat;
        } else {
            // Say hello again once the bus is back.
            kind = Announcement::Hello;
        }
        this.metrics
            .set_live_nodes(this.membership.live().len() + 1);
        drop(this);
        tokio::select! {
            _ = ticker.tick() => {}
            changed = status.changed(), if status_open => status_open = changed.is_ok(),
            _ = stopped.wait_for(|stop| *stop) => return,
        }
    }
}
