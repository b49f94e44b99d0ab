//! The running node: binding, the accept loop, and the drain.
//!
//! Drain order matters. On the drain signal the node first turns `/readyz` to 503 and refuses
//! new sessions, while it keeps accepting connections so probes and refused clients get an
//! answer. Then it runs every socket's disconnect logic and closes the Engine.IO transports
//! (clients see a transport close and reconnect, to another node behind a gateway), after an
//! optional grace period that lets routers notice the 503 first. Last, it
//! stops accepting and waits for in-flight HTTP requests, all within `--drain-timeout`.

use std::{future::Future, net::SocketAddr, time::Duration};

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use socketioxide::{SocketIo, SocketIoConfig, TransportType, adapter::LocalAdapter};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::watch,
    time::{Instant, sleep, sleep_until, timeout_at},
};
use tokio_util::task::TaskTracker;

use crate::{
    apps::{self, Pages, conformance},
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
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address from `--listen`.
        addr: SocketAddr,
        /// What the OS said.
        source: std::io::Error,
    },
}

type Service = Front<socketioxide::service::SocketIoService<Pages, LocalAdapter>, LocalAdapter>;

/// A bound node, ready to [`run`](Node::run).
pub struct Node {
    listener: TcpListener,
    local_addr: SocketAddr,
    io: SocketIo,
    ctx: NodeContext,
    service: Service,
    drain_timeout: Duration,
    drain_grace: Duration,
}

impl Node {
    /// Binds the listen address and sets up the built-in app chosen by `config.app`.
    pub async fn bind(config: NodeConfig) -> Result<Node, NodeError> {
        let app = config.app;
        Self::build(config, Some(app), |io, ctx| apps::install(app, io, ctx)).await
    }

    /// Binds the listen address with the caller's own Socket.IO handlers instead of a built-in
    /// app. `register` gets the `SocketIo` handle and the [`NodeContext`]; use
    /// [`NodeContext::on_disconnect`] for leave logic so it also runs when the node drains.
    pub async fn bind_with(
        config: NodeConfig,
        register: impl FnOnce(&SocketIo, &NodeContext),
    ) -> Result<Node, NodeError> {
        Self::build(config, None, register).await
    }

    async fn build(
        config: NodeConfig,
        app: Option<AppKind>,
        register: impl FnOnce(&SocketIo, &NodeContext),
    ) -> Result<Node, NodeError> {
        let config = config.validated()?;
        let node_id = config.node_id();
        let app_name = app.map_or("custom", AppKind::as_str);
        let metrics = std::sync::Arc::new(NodeMetrics::new(node_id.as_str(), app_name));
        let ctx = NodeContext::new(node_id.clone(), metrics);

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
            .max_buffer_size(config.max_buffer_size);
        let builder = match config.transports.as_slice() {
            [Transport::Polling] => builder.transports([TransportType::Polling]),
            [Transport::Websocket] => builder.transports([TransportType::Websocket]),
            _ => builder.transports([TransportType::Polling, TransportType::Websocket]),
        };
        let (engine, io) = builder.build_with_inner_svc(Pages::new(app, &config));
        register(&io, &ctx);

        let mut engine_paths = vec![config.path.clone()];
        if app == Some(AppKind::Conformance) {
            engine_paths.push(conformance::ENGINE_PATH.to_owned());
        }
        let front = FrontConfig {
            engine_paths,
            cors: Cors::from_origins(&config.cors_origins),
            max_payload: config.max_payload,
            seal: SessionSeal::random().map_err(NodeError::Random)?,
        };
        let service = Front::new(engine, io.clone(), ctx.clone(), front);
        tracing::info!(
            node_id = %node_id,
            listen = %local_addr,
            app = app_name,
            path = config.path,
            "node listening"
        );
        Ok(Node {
            listener,
            local_addr,
            io,
            ctx,
            service,
            drain_timeout: *config.drain_timeout,
            drain_grace: *config.drain_grace,
        })
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
    pub fn io(&self) -> &SocketIo {
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
        let sockets: usize = io.nsps().into_iter().map(|ns| ns.sockets().len()).sum();
        tracing::info!(sockets, timeout = ?drain_timeout, "draining: refusing new sessions, handing clients off");

        let handoff = async {
            // Clients stay while routers learn from /readyz that this node is leaving.
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

        let open = connections.tracker.len();
        if timeout_at(deadline, connections.shutdown()).await.is_err() {
            tracing::warn!(
                open,
                "drain timeout reached with HTTP connections still open"
            );
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
