//! What every handler of a node can reach: the node's identity, its metrics, its readiness, and
//! the drain-aware disconnect hook.
//!
//! socketioxide's `SocketIo::close` closes every transport without running `on_disconnect`
//! handlers, yet an app's leave logic ("user left", room bookkeeping) must run when a node
//! drains. [`NodeContext::on_disconnect`] registers that logic so it runs exactly once: when the
//! client leaves, or when the drain closes the socket, whichever comes first.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
};

use socketioxide::{SocketIo, adapter::Adapter, extract::SocketRef, socket::DisconnectReason};

use corral_adapter_nats::{BusStatus, Cluster, Driver, DynDriver};

use crate::{identity::NodeId, metrics::NodeMetrics};

type BoxFuture = Pin<Box<dyn Future<Output = ()> + Send>>;
type Handler<A> = Box<dyn FnOnce(SocketRef<A>, DisconnectReason) -> BoxFuture + Send>;

/// The disconnect logic of one socket, stored in its extensions so the drain can find it.
struct Hook<A: Adapter> {
    handler: Mutex<Option<Handler<A>>>,
    metrics: Arc<NodeMetrics>,
}

/// A cheap, clonable handle to a [`Hook`] (socket extensions require `Clone`).
struct HookRef<A: Adapter>(Arc<Hook<A>>);

impl<A: Adapter> Clone for HookRef<A> {
    fn clone(&self) -> Self {
        HookRef(self.0.clone())
    }
}

impl<A: Adapter> HookRef<A> {
    /// Runs the handler unless it already ran; counts the disconnect once.
    async fn fire(&self, socket: SocketRef<A>, reason: DisconnectReason) {
        let handler = self.0.handler.lock().map(|mut h| h.take()).unwrap_or(None);
        if let Some(handler) = handler {
            self.0.metrics.disconnect(reason);
            handler(socket, reason).await;
        }
    }
}

/// Whether the node takes new sessions, and why not.
#[derive(Debug, Default)]
pub(crate) struct Readiness {
    draining: AtomicBool,
}

/// What `/readyz` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReadyState {
    /// Takes new sessions, connected to the cluster.
    Ready,
    /// Serves its own clients but the bus is down: broadcasts do not reach other nodes.
    BusDisconnected,
    /// Shutting down: refuses new sessions.
    Draining,
}

/// Shared state of a running node, handed to apps when they register their handlers.
#[derive(Clone, Debug)]
pub struct NodeContext {
    node_id: NodeId,
    metrics: Arc<NodeMetrics>,
    readiness: Arc<Readiness>,
    cluster: Cluster<DynDriver>,
}

impl NodeContext {
    pub(crate) fn new(
        node_id: NodeId,
        metrics: Arc<NodeMetrics>,
        cluster: Cluster<DynDriver>,
    ) -> Self {
        NodeContext {
            node_id,
            metrics,
            readiness: Arc::default(),
            cluster,
        }
    }

    /// The cluster this node belongs to: its live members, and server-to-server events
    /// ([`Cluster::emit_to_servers`], [`Cluster::ask_servers`], [`Cluster::on_server_event`]).
    pub fn cluster(&self) -> &Cluster<DynDriver> {
        &self.cluster
    }

    /// This node's id.
    pub fn node_id(&self) -> &NodeId {
        &self.node_id
    }

    /// This node's metrics, for apps that count their events.
    pub fn metrics(&self) -> &NodeMetrics {
        &self.metrics
    }

    /// True once the node has started draining.
    pub fn is_draining(&self) -> bool {
        self.readiness.draining.load(Ordering::Acquire)
    }

    /// How ready the node is.
    pub(crate) fn readiness(&self) -> ReadyState {
        if self.is_draining() {
            ReadyState::Draining
        } else if *self.cluster.driver().status().borrow() != BusStatus::Connected {
            ReadyState::BusDisconnected
        } else {
            ReadyState::Ready
        }
    }

    pub(crate) fn start_draining(&self) {
        self.readiness.draining.store(true, Ordering::Release);
        self.metrics.set_draining();
    }

    /// Registers `handler` as the socket's disconnect logic. It runs once: when the socket
    /// disconnects for any reason, or when the node drains (with
    /// [`DisconnectReason::ClosingServer`]). Every socket should get one, since it also counts
    /// disconnects in the metrics.
    pub fn on_disconnect<A, F, Fut>(&self, socket: &SocketRef<A>, handler: F)
    where
        A: Adapter,
        F: FnOnce(SocketRef<A>, DisconnectReason) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let hook = HookRef(Arc::new(Hook {
            handler: Mutex::new(Some(Box::new(move |s, r| Box::pin(handler(s, r))))),
            metrics: self.metrics.clone(),
        }));
        socket.extensions.insert(hook.clone());
        socket.on_disconnect(move |s: SocketRef<A>, reason: DisconnectReason| {
            let hook = hook.clone();
            async move { hook.fire(s, reason).await }
        });
    }

    /// Runs the disconnect logic of every socket on this node, as the drain does before it
    /// closes the transports.
    pub(crate) async fn run_disconnect_hooks<A: Adapter>(&self, io: &SocketIo<A>) {
        let sockets = io.nsps().into_iter().flat_map(|ns| ns.sockets());
        let hooks = sockets.filter_map(|s| {
            let hook = s.extensions.get::<HookRef<A>>()?;
            Some(async move { hook.fire(s, DisconnectReason::ClosingServer).await })
        });
        futures_util::future::join_all(hooks).await;
    }

    /// Counts connected sockets by their current transport and updates the gauges.
    pub(crate) fn refresh_connected(&self, io: &crate::Io) {
        let (all, websocket) = crate::server::count_sockets(io);
        self.metrics.set_connected(all - websocket, websocket);
    }
}
