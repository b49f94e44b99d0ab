//! The running gateway: two listeners (clients, admin), the background tasks that keep the
//! node table current, and the graceful shutdown.

use std::{convert::Infallible, future::Future, net::SocketAddr, sync::Arc, time::Duration};

use corral_adapter_nats::{MemberWatch, NatsDriver};
use hyper::{server::conn::http1, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus::Registry;
use tokio::{
    io::AsyncWriteExt,
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore, watch},
    time::{Instant, sleep, timeout_at},
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    admin::Admin,
    config::{ConfigError, Discovery, GatewayConfig},
    metrics::GatewayMetrics,
    nodes::{Member, NodeTable, Source, check_health},
    proxy::{ConnectionSlot, Connector, DrainBudget, Proxy, ProxySettings},
    route::Router,
    token::Tokens,
};

/// Why a gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The configuration was refused.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// What the OS said.
        source: std::io::Error,
    },
    /// No randomness for a session secret.
    #[error("no randomness for the session secret: {0}")]
    Random(getrandom::Error),
    /// NATS discovery could not start.
    #[error("NATS discovery: {0}")]
    Nats(String),
}

/// A bound gateway, ready to [`run`](Gateway::run).
pub struct Gateway {
    listener: TcpListener,
    admin_listener: TcpListener,
    proxy: Arc<Proxy>,
    admin: Arc<Admin>,
    table: Arc<NodeTable>,
    stop: CancellationToken,
    limit: Arc<Semaphore>,
    header_read_timeout: Duration,
    max_header_bytes: usize,
    drain_timeout: Duration,
    drain_rate: u32,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("listen", &self.listener.local_addr().ok())
            .finish()
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, GatewayError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| GatewayError::Bind { addr, source })
}

impl Gateway {
    /// Binds both listeners, learns the nodes (static list; DNS and NATS discovery run in the
    /// background) and starts health checking.
    pub async fn bind(config: GatewayConfig) -> Result<Gateway, GatewayError> {
        let config = config.validated()?;
        let tokens = match &config.session_secret {
            Some(secret) => Tokens::new(secret.as_bytes()),
            None => {
                tracing::warn!(
                    "no --session-secret: using a random one; sessions will not survive on other gateway replicas or a restart"
                );
                Tokens::random().map_err(GatewayError::Random)?
            }
        };
        let mut connector = Connector::new();
        connector.set_connect_timeout(Some(*config.connect_timeout));
        connector.set_nodelay(true);

        let table = Arc::new(NodeTable::default());
        let statics = config
            .nodes
            .iter()
            .map(|n| Member {
                id: n.id.clone(),
                address: n.url.trim_start_matches("http://").to_owned(),
                draining: false,
            })
            .collect();
        table.update(Source::Static, statics);

        let registry = Registry::new();
        let metrics = GatewayMetrics::new(&registry);
        let stop = CancellationToken::new();
        let dns = match &config.discover {
            Some(Discovery::Dns { name, port }) => Some((name.clone(), *port)),
            _ => None,
        };
        if config.discover == Some(Discovery::Nats) {
            let nats = config
                .nats
                .to_config("corral gateway".into())
                .map_err(|e| GatewayError::Nats(e.to_string()))?;
            let driver = NatsDriver::connect(nats)
                .await
                .map_err(|e| GatewayError::Nats(e.to_string()))?;
            let watch =
                MemberWatch::start(&driver, &config.subject_prefix, *config.health_interval * 2)
                    .await
                    .map_err(|e| GatewayError::Nats(e.to_string()))?;
            tokio::spawn(follow_members(
                table.clone(),
                watch,
                driver,
                *config.health_interval / 4,
                stop.clone(),
            ));
        }
        tokio::spawn(check_health(
            table.clone(),
            connector.clone(),
            dns,
            *config.health_interval,
            *config.health_timeout,
            stop.clone(),
        ));

        let router = Router::new(&config, tokens);
        let settings = ProxySettings {
            max_body: config.max_body,
            tunnel_buffer: config.tunnel_buffer,
            tunnel_idle: *config.tunnel_idle_timeout,
            drain_rate: config.drain_rate,
        };
        let limit = Arc::new(Semaphore::new(config.max_connections));
        let drain_budget = Arc::new(DrainBudget::new(config.drain_rate));
        let proxy = Arc::new(Proxy::new(
            connector,
            table.clone(),
            router,
            metrics.clone(),
            settings,
            drain_budget.clone(),
        ));
        let admin = Arc::new(Admin {
            table: table.clone(),
            registry,
            metrics,
            token: config.admin_token.clone(),
            drain_budget,
        });
        let listener = bind(config.listen).await?;
        let admin_listener = bind(config.admin_listen).await?;
        tracing::info!(
            listen = %listener.local_addr().map_err(|source| GatewayError::Bind { addr: config.listen, source })?,
            admin = %admin_listener.local_addr().map_err(|source| GatewayError::Bind { addr: config.admin_listen, source })?,
            nodes = table.snapshot().nodes.len(),
            "gateway listening"
        );
        Ok(Gateway {
            listener,
            admin_listener,
            proxy,
            admin,
            table,
            stop,
            limit,
            header_read_timeout: *config.header_read_timeout,
            max_header_bytes: config.max_header_bytes,
            drain_timeout: *config.drain_timeout,
            drain_rate: config.drain_rate,
        })
    }

    /// Where clients connect.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Where the admin listener is.
    pub fn admin_addr(&self) -> std::io::Result<SocketAddr> {
        self.admin_listener.local_addr()
    }

    /// The node table, e.g. for `corral up` to show which nodes exist.
    pub fn table(&self) -> &Arc<NodeTable> {
        &self.table
    }

    /// Serves until `shutdown` resolves, then stops accepting, lets in-flight requests finish
    /// and closes tunnels at the drain rate, all within the drain timeout.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let Gateway {
            listener,
            admin_listener,
            proxy,
            admin,
            table,
            stop,
            limit,
            header_read_timeout,
            max_header_bytes,
            drain_timeout,
            drain_rate,
        } = self;
        let tracker = TaskTracker::new();
        let (closing, closing_rx) = watch::channel(false);
        let settings = ConnSettings {
            header_read_timeout,
            max_header_bytes,
        };

        let admin_task = {
            let admin = admin.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        accepted = admin_listener.accept() => {
                            let Ok((stream, _)) = accepted else { continue };
                            let admin = admin.clone();
                            tokio::spawn(async move {
                                let service = service_fn(move |req| {
                                    let admin = admin.clone();
                                    async move { Ok::<_, Infallible>(admin.handle(req).await) }
                                });
                                let _ = http1::Builder::new()
                                    .serve_connection(TokioIo::new(stream), service)
                                    .await;
                            });
                        }
                        () = stop.cancelled() => return,
                    }
                }
            })
        };

        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => match limit.clone().try_acquire_owned() {
                        Ok(permit) => {
                            let proxy = proxy.clone();
                            let closing = closing_rx.clone();
                            tracker.spawn(serve(stream, peer, proxy, closing, settings, permit));
                        }
                        Err(_) => {
                            admin.metrics.error("too_many_connections");
                            tracker.spawn(refuse_connection(stream));
                        }
                    },
                    Err(err) => {
                        tracing::warn!(%err, "accept failed");
                        sleep(Duration::from_millis(50)).await;
                    }
                },
            }
        }
        let deadline = Instant::now() + drain_timeout;
        drop(listener);
        tracing::info!(timeout = ?drain_timeout, "gateway draining: no new connections; finishing requests, closing tunnels");
        closing.send_replace(true);
        tracker.close();
        // Tunnels are closed at the drain rate so their clients do not reconnect all at once.
        let close_tunnels = async {
            loop {
                let open: usize = table
                    .snapshot()
                    .nodes
                    .values()
                    .map(|n| n.tunnels.len())
                    .sum();
                if open == 0 {
                    return;
                }
                let mut budget = drain_rate.max(1) as usize / 10 + 1;
                for node in table.snapshot().nodes.values() {
                    budget -= node.tunnels.close(budget);
                    if budget == 0 {
                        break;
                    }
                }
                sleep(Duration::from_millis(100)).await;
            }
        };
        let _ = timeout_at(deadline, async {
            tokio::join!(close_tunnels, tracker.wait())
        })
        .await;
        stop.cancel();
        admin_task.abort();
        tracing::info!("gateway stopped");
    }
}

#[derive(Clone, Copy)]
struct ConnSettings {
    header_read_timeout: Duration,
    max_header_bytes: usize,
}

/// Serves one client connection; on shutdown, finishes the current request and closes.
async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    proxy: Arc<Proxy>,
    closing: watch::Receiver<bool>,
    settings: ConnSettings,
    permit: OwnedSemaphorePermit,
) {
    let _ = stream.set_nodelay(true);
    // Held for the connection's life, unless a WebSocket tunnel takes it over.
    let slot: ConnectionSlot = Arc::new(std::sync::Mutex::new(Some(permit)));
    let service = service_fn(move |req| {
        let proxy = proxy.clone();
        let slot = slot.clone();
        async move { Ok::<_, Infallible>(proxy.handle(req, peer, slot).await) }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        .max_buf_size(settings.max_header_bytes)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        () = until_true(closing) => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(err) = result {
        tracing::debug!(%err, "client connection ended with an error");
    }
}

/// Resolves once the watched flag is true (or its sender is gone).
async fn until_true(mut flag: watch::Receiver<bool>) {
    while !*flag.borrow_and_update() {
        if flag.changed().await.is_err() {
            return;
        }
    }
}

/// Over `--max-connections`: a short 503 and close.
async fn refuse_connection(mut stream: TcpStream) {
    let body = "too many connections\n";
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\nRetry-After: 1\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// Copies the cluster's live members into the table.
async fn follow_members(
    table: Arc<NodeTable>,
    watch: MemberWatch,
    driver: NatsDriver,
    every: Duration,
    stop: CancellationToken,
) {
    let _keep = driver;
    loop {
        let members = watch
            .live()
            .into_iter()
            .map(|n| Member {
                id: n.node_id,
                address: n.address,
                draining: n.state == corral_adapter_nats::NodeState::Draining,
            })
            .collect();
        table.update(Source::Nats, members);
        tokio::select! {
            () = sleep(every) => {}
            () = stop.cancelled() => return,
        }
    }
}
