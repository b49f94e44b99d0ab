//! The running node: binding, the accept loop, and the drain.
//!
//! Drain order matters. On the drain signal the node first turns `/readyz` to 503 and refuses
//! new sessions, while it keeps accepting connections so probes and refused clients get an
//! answer. Then it runs every socket's disconnect logic and closes the Engine.IO transports
//! (clients see a transport close and reconnect, to another node behind a gateway), after an
//! optional grace period that lets routers notice the 503 first. Last, it
//! stops accepting and waits for in-flight HTTP requests, all within `--drain-timeout`.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use corral_adapter_nats::{
    AdapterMetrics, Cluster, ClusterAdapter, ClusterConfig, ClusterError, Driver, DynDriver,
};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use socketioxide::{
    SocketIo, SocketIoConfig, TransportType, adapter::Emitter, service::SocketIoService,
};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::watch,
    time::{Instant, sleep, sleep_until, timeout_at},
};
use tokio_util::task::TaskTracker;

use crate::{
    apps::{self, Pages, conformance},
    bus::{AdapterKind, BusError},
    config::{AppKind, ConfigError, NodeConfig, Transport},
    context::NodeContext,
    http::{Cors, Front, FrontConfig},
    metrics::NodeMetrics,
    session::SessionSeal,
};

/// How long a client may take to send a request's headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed `accept` (e.g. out of file descriptors) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Why a node could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The configuration was refused.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The operating system could not provide random bytes for the session seal.
    #[error("no randomness for the session seal: {0}")]
    Random(getrandom::Error),
    /// The bus could not be set up.
    #[error(transparent)]
    Bus(#[from] BusError),
    /// The cluster could not be joined.
    #[error("cluster: {0}")]
    Cluster(#[from] ClusterError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address from `--listen`.
        addr: SocketAddr,
        /// What the OS said.
        source: std::io::Error,
    },
}

/// The socketioxide adapter of a node: the cluster adapter on whatever bus was chosen.
pub type NodeAdapter = ClusterAdapter<Emitter, DynDriver>;
/// The Socket.IO handle of a node.
pub type Io = SocketIo<NodeAdapter>;

type Service = Front<SocketIoService<Pages, NodeAdapter>>;
type Register = Box<dyn FnOnce(&Io, &NodeContext) + Send>;

/// A bound node, ready to [`run`](Node::run).
pub struct Node {
    listener: TcpListener,
    local_addr: SocketAddr,
    io: Io,
    ctx: NodeContext,
    service: Service,
    closing: watch::Sender<bool>,
    drain_timeout: Duration,
    drain_grace: Duration,
}

/// Builds a [`Node`] with choices the command line does not offer: your own handlers, your
/// own bus driver.
pub struct NodeBuilder {
    config: NodeConfig,
    driver: Option<DynDriver>,
    register: Option<Register>,
}

impl NodeBuilder {
    /// Runs the cluster on `driver` instead of the bus `config.bus` describes (e.g. a driver
    /// for another broker, or a [`MemoryBus`](corral_adapter_nats::MemoryBus) shared by several
    /// nodes in one process).
    pub fn driver(mut self, driver: impl Driver) -> Self {
        self.driver = Some(DynDriver::new(driver));
        self
    }

    /// Registers your own Socket.IO handlers instead of the built-in app. `register` gets the
    /// `SocketIo` handle and the [`NodeContext`]; use [`NodeContext::on_disconnect`] for leave
    /// logic so it also runs when the node drains.
    pub fn handlers(mut self, register: impl FnOnce(&Io, &NodeContext) + Send + 'static) -> Self {
        self.register = Some(Box::new(register));
        self
    }

    /// Binds the listen address, joins the cluster and sets up the app.
    pub async fn bind(self) -> Result<Node, NodeError> {
        let NodeBuilder {
            config,
            driver,
            register,
        } = self;
        let config = config.validated()?;
        let app = register.is_none().then_some(config.app);
        let app_name = app.map_or("custom", AppKind::as_str);

        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| NodeError::Bind {
                    addr: config.listen,
                    source,
                })?;
        let local_addr = listener.local_addr().map_err(|source| NodeError::Bind {
            addr: config.listen,
            source,
        })?;
        let node_id = config.node_id(local_addr.port());
        let metrics = Arc::new(NodeMetrics::new(node_id.as_str(), app_name));

        let bus = match driver {
            Some(_) => "custom",
            None => match config.bus.adapter {
                AdapterKind::Memory => "memory",
                AdapterKind::Nats => "nats",
            },
        };
        let driver = match driver {
            Some(driver) => driver,
            None => config.bus.connect(node_id.as_str()).await?,
        };
        let (heartbeat_interval, heartbeat_timeout, request_timeout) = config.bus.timings();
        let cluster_config = ClusterConfig {
            prefix: config.bus.subject_prefix.clone(),
            uid: node_id.server_uid(),
            node_id: node_id.to_string(),
            address: config
                .bus
                .advertise_address
                .clone()
                .unwrap_or_else(|| advertised(local_addr)),
            heartbeat_interval,
            heartbeat_timeout,
            request_timeout,
        };
        let cluster = Cluster::start(
            driver,
            cluster_config,
            AdapterMetrics::new(metrics.registry()),
        )
        .await?;
        let ctx = NodeContext::new(node_id.clone(), metrics, cluster.clone());

        let mut sio_config = SocketIoConfig::default();
        sio_config.server_id = node_id.server_uid();
        let max_payload = usize::try_from(config.max_payload).unwrap_or(usize::MAX);
        let builder = SocketIo::builder()
            .with_config(sio_config)
            .req_path(config.path.clone())
            .ping_interval(*config.ping_interval)
            .ping_timeout(*config.ping_timeout)
            .connect_timeout(*config.connect_timeout)
            .max_payload(config.max_payload)
            .ws_max_message_size(max_payload)
            .ws_max_frame_size(max_payload)
            .ws_read_buffer_size(config.ws_read_buffer_size)
            .max_buffer_size(config.max_buffer_size)
            .with_adapter::<NodeAdapter>(cluster.clone());
        let builder = match config.transports.as_slice() {
            [Transport::Polling] => builder.transports([TransportType::Polling]),
            [Transport::Websocket] => builder.transports([TransportType::Websocket]),
            _ => builder.transports([TransportType::Polling, TransportType::Websocket]),
        };
        let (engine, io) = builder.build_with_inner_svc(Pages::new(app, &config));
        match (register, app) {
            (Some(register), _) => register(&io, &ctx),
            (None, Some(app)) => apps::install(app, &io, &ctx),
            (None, None) => {}
        }
        if let Some(ns) = &config.bench_namespace {
            apps::bench::install_at(&io, &ctx, ns);
        }
        let counted = io.clone();
        cluster.set_connection_counter(Arc::new(move || count_sockets(&counted).0 as u64));

        let mut engine_paths = vec![config.path.clone()];
        if app == Some(AppKind::Conformance) {
            engine_paths.push(conformance::ENGINE_PATH.to_owned());
        }
        let (closing, closing_rx) = watch::channel(false);
        let front = FrontConfig {
            engine_paths,
            cors: Cors::from_origins(&config.cors_origins),
            max_payload: config.max_payload,
            seal: SessionSeal::random().map_err(NodeError::Random)?,
            closing: closing_rx,
        };
        let service = Front::new(engine, io.clone(), ctx.clone(), front);
        tracing::info!(
            node_id = %node_id,
            listen = %local_addr,
            app = app_name,
            bus,
            path = config.path,
            "node listening"
        );
        Ok(Node {
            listener,
            local_addr,
            io,
            ctx,
            service,
            closing,
            drain_timeout: *config.drain_timeout,
            drain_grace: *config.drain_grace,
        })
    }
}

/// `local` as others should dial it: an unspecified IP becomes this host's name.
fn advertised(local: SocketAddr) -> String {
    if local.ip().is_unspecified() {
        format!(
            "{}:{}",
            gethostname::gethostname().to_string_lossy(),
            local.port()
        )
    } else {
        local.to_string()
    }
}

/// Sockets on this node: all of them, and how many are on WebSocket.
pub(crate) fn count_sockets(io: &Io) -> (usize, usize) {
    let (mut all, mut websocket) = (0, 0);
    for ns in io.nsps() {
        for socket in ns.sockets() {
            all += 1;
            if socket.transport_type() == TransportType::Websocket {
                websocket += 1;
            }
        }
    }
    (all, websocket)
}

impl Node {
    /// Binds the listen address, joins the cluster `config.bus` describes, and sets up the
    /// built-in app chosen by `config.app`.
    pub async fn bind(config: NodeConfig) -> Result<Node, NodeError> {
        Node::builder(config).bind().await
    }

    /// A builder, for your own handlers or bus driver.
    pub fn builder(config: NodeConfig) -> NodeBuilder {
        NodeBuilder {
            config,
            driver: None,
            register: None,
        }
    }

    /// The address the node actually listens on (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The node's shared context.
    pub fn context(&self) -> &NodeContext {
        &self.ctx
    }

    /// The Socket.IO handle, e.g. to emit from outside a handler.
    pub fn io(&self) -> &Io {
        &self.io
    }

    /// Serves until `drain` resolves, then drains (see the module docs) and returns within the
    /// drain timeout.
    pub async fn run(self, drain: impl Future<Output = ()>) {
        let Node {
            listener,
            io,
            ctx,
            service,
            closing,
            drain_timeout,
            drain_grace,
            ..
        } = self;
        let connections = Connections::new(service);

        tokio::pin!(drain);
        loop {
            tokio::select! {
                () = &mut drain => break,
                accepted = listener.accept() => connections.accept(accepted).await,
            }
        }

        let deadline = Instant::now() + drain_timeout;
        ctx.start_draining();
        let (sockets, _) = count_sockets(&io);
        tracing::info!(sockets, timeout = ?drain_timeout, "draining: refusing new sessions, handing clients off");

        let handoff = async {
            // Peers and gateways hear it from the bus, routers polling /readyz from the 503.
            ctx.cluster().set_draining().await;
            // Clients stay while routers learn that this node is leaving.
            sleep(drain_grace).await;
            ctx.run_disconnect_hooks(&io).await;
            io.close().await;
        };
        tokio::pin!(handoff);
        loop {
            tokio::select! {
                () = &mut handoff => {
                    tracing::info!("all clients handed off");
                    break;
                }
                () = sleep_until(deadline) => {
                    tracing::warn!("drain timeout reached before every client was handed off");
                    break;
                }
                accepted = listener.accept() => connections.accept(accepted).await,
            }
        }
        drop(listener);
        // Sessions that were in no namespace when the drain closed them (a client between
        // handshake and CONNECT, or one that left its namespaces) may still hold a long-poll.
        closing.send_replace(true);

        let open = connections.tracker.len();
        if timeout_at(deadline, connections.shutdown()).await.is_err() {
            tracing::warn!(
                open,
                "drain timeout reached with HTTP connections still open"
            );
        }
        // The others forget this node now rather than after the heartbeat timeout.
        if timeout_at(deadline, ctx.cluster().leave()).await.is_err() {
            tracing::warn!("drain timeout reached before the goodbye was sent");
        }
        tracing::info!("node stopped");
    }
}

/// The HTTP connections of a node, tracked so the drain can close them gracefully.
struct Connections {
    service: Service,
    tracker: TaskTracker,
    shutdown: watch::Sender<bool>,
}

impl Connections {
    fn new(service: Service) -> Self {
        Connections {
            service,
            tracker: TaskTracker::new(),
            shutdown: watch::channel(false).0,
        }
    }

    async fn accept(&self, accepted: std::io::Result<(TcpStream, SocketAddr)>) {
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(err) => {
                // Usually out of file descriptors: back off instead of spinning.
                tracing::warn!(%err, "accept failed");
                sleep(ACCEPT_BACKOFF).await;
                return;
            }
        };
        // Real-time traffic is many small frames: send them now, not after Nagle's delay.
        if let Err(err) = stream.set_nodelay(true) {
            tracing::debug!(%err, "could not set TCP_NODELAY");
        }
        let conn = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .serve_connection(TokioIo::new(stream), self.service.clone())
            .with_upgrades();
        let mut shutdown = self.shutdown.subscribe();
        self.tracker.spawn(async move {
            tokio::pin!(conn);
            let result = tokio::select! {
                result = conn.as_mut() => result,
                _ = shutdown.changed() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(err) = result {
                tracing::debug!(%err, "connection ended with an error");
            }
        });
    }

    /// Asks every connection to finish its current request and close, then waits for them.
    async fn shutdown(self) {
        self.shutdown.send_replace(true);
        self.tracker.close();
        self.tracker.wait().await;
    }
}
