//! Forwarding: one request at a time, decided by [`crate::route`], streamed both ways.
//!
//! Bodies are never buffered, except the small open packet of a polling handshake, whose `sid`
//! is replaced by a session token. A WebSocket upgrade is forwarded as a request; after the
//! node's 101 both connections are joined by a tunnel that copies bytes with small buffers
//! until either side closes, nothing moves for the idle timeout, or the gateway closes it
//! (drain). A client that goes away mid-request drops the upstream request with it.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{
    HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri, header,
    uri::{PathAndQuery, Scheme},
};
use http_body_util::{BodyExt, Empty, Full, Limited, combinators::UnsyncBoxBody};
use hyper::body::Incoming;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioIo},
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::{
    metrics::GatewayMetrics,
    nodes::{AdminState, Node, NodeTable},
    route::{Router, query_param},
};

/// How the gateway connects to nodes.
pub type Connector = HttpConnector;
/// Errors of bodies on their way through.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Every body the gateway sends.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// Largest open packet the gateway reads to rewrite.
const MAX_OPEN_PACKET: usize = 64 * 1024;
/// Headers that concern one connection, never forwarded (RFC 9110 §7.6.1).
/// Names built once: removing by a `&str` would parse the name on every request.
static HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// Settings of the forwarding path.
#[derive(Debug, Clone)]
pub struct ProxySettings {
    /// Largest request body.
    pub max_body: u64,
    /// Buffer per direction of a tunnel.
    pub tunnel_buffer: usize,
    /// Idle timeout of a tunnel.
    pub tunnel_idle: Duration,
    /// Sessions closed per second on a node drained with `close`.
    pub drain_rate: u32,
}

/// What kind of request, for routing and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Carries a session token.
    Session,
    /// Opens a session.
    Handshake,
    /// Anything else (pages, assets).
    Other,
}

impl Kind {
    fn label(self, upgrade: bool) -> &'static str {
        match (self, upgrade) {
            (_, true) => "upgrade",
            (Kind::Session, false) => "session",
            (Kind::Handshake, false) => "handshake",
            (Kind::Other, false) => "other",
        }
    }
}

/// The forwarding half of a gateway.
pub struct Proxy {
    client: Client<Connector, Body>,
    table: Arc<NodeTable>,
    router: Router,
    metrics: GatewayMetrics,
    settings: ProxySettings,
    drain_budget: Arc<DrainBudget>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("settings", &self.settings)
            .finish()
    }
}

/// A complete response with a small body.
pub(crate) fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut res = Response::new(
        Full::new(body.into())
            .map_err(|e| match e {})
            .boxed_unsync(),
    );
    *res.status_mut() = status;
    res.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    res
}

/// The Engine.IO answer that makes a client start a new session.
fn session_unknown() -> Response<Body> {
    respond(
        StatusCode::BAD_REQUEST,
        "application/json",
        r#"{"code":1,"message":"Session ID unknown"}"#,
    )
}

/// The head of a client request, kept to replay it to another node.
#[derive(Debug, Clone)]
struct Head {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
}

/// What travels with a request through forwarding.
struct Call {
    peer: SocketAddr,
    /// The client side of a WebSocket upgrade.
    on_upgrade: Option<hyper::upgrade::OnUpgrade>,
    /// The metric label of the request's kind.
    label: &'static str,
    /// The client connection's slot under `--max-connections`.
    slot: ConnectionSlot,
}

/// A client connection's slot under `--max-connections`, shared by its requests; a WebSocket
/// upgrade takes it into the tunnel, so tunnels keep counting after their connection ended.
pub type ConnectionSlot = Arc<std::sync::Mutex<Option<tokio::sync::OwnedSemaphorePermit>>>;

/// Why forwarding failed.
enum ForwardError {
    /// No connection to the node: it is down (or was, a moment ago).
    Connect,
    /// The body was over `--max-body`.
    TooLarge,
    /// Anything else between the gateway and the node.
    Upstream(String),
}

impl Proxy {
    /// A proxy over `table`'s nodes.
    pub fn new(
        connector: Connector,
        table: Arc<NodeTable>,
        router: Router,
        metrics: GatewayMetrics,
        settings: ProxySettings,
        drain_budget: Arc<DrainBudget>,
    ) -> Proxy {
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Proxy {
            client,
            table,
            router,
            metrics,
            settings,
            drain_budget,
        }
    }

    /// Answers one client request that came on a connection holding `slot`.
    pub async fn handle(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
        slot: ConnectionSlot,
    ) -> Response<Body> {
        let query = req.uri().query();
        // Engine.IO clients always send `EIO`; other parameters alone prove nothing.
        let engine = query_param(query, "EIO").is_some();
        let kind = match (engine, query_param(query, "sid").is_some()) {
            (true, true) => Kind::Session,
            (true, false) => Kind::Handshake,
            (false, _) => Kind::Other,
        };
        let upgrade = is_websocket_upgrade(req.headers());
        let label = kind.label(upgrade);
        // The request's span, continued on the node through the forwarded request's headers.
        // A trace started upstream is continued only from a trusted proxy: a client could
        // otherwise choose its trace id and force sampling.
        let span = tracing::debug_span!(
            target: corral_adapter_nats::trace::TARGET,
            "gateway request",
            otel.kind = "server",
            http.request.method = %req.method(),
            corral.request = label,
            corral.node = tracing::field::Empty,
            corral.route = tracing::field::Empty,
            http.response.status_code = tracing::field::Empty,
        );
        if self.router.is_trusted(peer.ip()) {
            corral_adapter_nats::trace::adopt_http(&span, req.headers());
        }
        let res = self
            .handle_in_span(req, peer, slot, kind, upgrade, label)
            .instrument(span.clone())
            .await;
        span.record("http.response.status_code", res.status().as_u16());
        res
    }

    /// [`handle`](Self::handle) within the request's span.
    async fn handle_in_span(
        &self,
        mut req: Request<Incoming>,
        peer: SocketAddr,
        slot: ConnectionSlot,
        kind: Kind,
        upgrade: bool,
        label: &'static str,
    ) -> Response<Body> {
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|len| len > self.settings.max_body) {
            self.metrics.error("payload_too_large");
            let res = too_large(self.settings.max_body);
            self.metrics.request(label, res.status());
            return res;
        }

        // The upgrade belongs to the client's request; take it before the request is consumed.
        let on_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
        let (parts, body) = req.into_parts();
        let head = Head {
            method: parts.method,
            uri: parts.uri,
            headers: parts.headers,
        };
        let limit = usize::try_from(self.settings.max_body).unwrap_or(usize::MAX);
        let body = Limited::new(body, limit).boxed_unsync();
        let call = Call {
            peer,
            on_upgrade,
            label,
            slot,
        };

        let res = match kind {
            Kind::Session => self.session(head, body, call).await,
            Kind::Handshake | Kind::Other => self.fresh(head, body, call, kind).await,
        };
        self.metrics.request(label, res.status());
        res
    }

    /// A request of an existing session: follow its token.
    async fn session(&self, head: Head, body: Body, call: Call) -> Response<Body> {
        let token = query_param(head.uri.query(), "sid").unwrap_or_default();
        let Some(session) = self.router.tokens().open(token) else {
            self.metrics.error("session_unknown");
            return session_unknown();
        };
        tracing::Span::current()
            .record("corral.node", session.node)
            .record("corral.route", "session");
        let node = match self.table.get(session.node) {
            Some(node) if node.serves_sessions() => node,
            _ => {
                self.metrics.error("session_unknown");
                return session_unknown();
            }
        };
        // On a node the operator drains with `close`, polling sessions are ended one poll at a
        // time, at the drain rate, with an Engine.IO close packet; a poll already waiting at
        // the node is answered the same way when its turn comes (dropping the upstream poll).
        let long_poll = head.method == Method::GET && call.on_upgrade.is_none();
        if call.on_upgrade.is_some() && node.admin_state() == AdminState::Closing {
            // No new tunnel to a node being emptied; the session's polls are closed instead.
            self.metrics.error("drained_session");
            return session_unknown();
        }
        let path = replace_sid(&head.uri, token, session.sid);
        let forwarded = self.forward(&node, head, body, path, call);
        let result = if long_poll {
            tokio::select! {
                result = forwarded => result,
                () = self.close_turn(&node) => {
                    self.metrics.error("drained_session");
                    return respond(StatusCode::OK, "text/plain; charset=UTF-8", "1");
                }
            }
        } else {
            forwarded.await
        };
        match result {
            Ok(res) => res,
            Err(ForwardError::Connect) => {
                node.eject();
                self.metrics.error("upstream_connect");
                session_unknown()
            }
            Err(err) => self.forward_failed(err),
        }
    }

    /// A request without a session: pick a node by the policy; when it cannot be reached, try
    /// the next one (only when the request has no body to replay and is no upgrade).
    async fn fresh(&self, head: Head, body: Body, mut call: Call, kind: Kind) -> Response<Body> {
        let replayable =
            matches!(head.method, Method::GET | Method::HEAD) && call.on_upgrade.is_none();
        let mut body = Some(body);
        for _ in 0..if replayable { 3 } else { 1 } {
            let snapshot = self.table.snapshot();
            let Some(choice) =
                self.router
                    .choose(&snapshot, &head.headers, head.uri.query(), call.peer.ip())
            else {
                self.metrics.error("no_node");
                return respond(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain; charset=utf-8",
                    "no node is ready to take new sessions; try again shortly\n",
                );
            };
            self.metrics.decision(&choice.node.id, choice.reason);
            tracing::Span::current()
                .record("corral.node", choice.node.id.as_str())
                .record("corral.route", choice.reason);
            // A GET has no body: every attempt sends an empty one.
            let attempt_body = match body.take() {
                Some(body) if !replayable => body,
                _ => Empty::new().map_err(|e| match e {}).boxed_unsync(),
            };
            let upgrade = call.on_upgrade.is_some();
            let attempt = Call {
                peer: call.peer,
                on_upgrade: call.on_upgrade.take(),
                label: call.label,
                slot: call.slot.clone(),
            };
            match self
                .forward(
                    &choice.node,
                    head.clone(),
                    attempt_body,
                    path_of(&head.uri),
                    attempt,
                )
                .await
            {
                // The node started draining after the last health check: mark it and try the
                // next one (a handshake carries no body, so it can be replayed).
                Ok(res)
                    if kind == Kind::Handshake
                        && replayable
                        && res.status() == StatusCode::SERVICE_UNAVAILABLE =>
                {
                    choice.node.refused_sessions();
                    self.metrics.error("node_draining");
                }
                Ok(res) if kind == Kind::Handshake => {
                    choice.node.assigned();
                    return self.finish_handshake(&choice.node, res, upgrade).await;
                }
                Ok(res) => return res,
                Err(ForwardError::Connect) => {
                    choice.node.eject();
                    self.metrics.error("upstream_connect");
                }
                Err(err) => return self.forward_failed(err),
            }
        }
        respond(
            StatusCode::BAD_GATEWAY,
            "text/plain; charset=utf-8",
            "no node could be reached\n",
        )
    }

    /// Resolves when `node` is being closed and the drain budget grants one session close.
    async fn close_turn(&self, node: &Node) {
        node.closing().await;
        let pause = Duration::from_secs(1) / self.drain_budget.rate.max(1);
        while !self.drain_budget.take() {
            tokio::time::sleep(pause).await;
        }
    }

    fn forward_failed(&self, err: ForwardError) -> Response<Body> {
        match err {
            ForwardError::TooLarge => {
                self.metrics.error("payload_too_large");
                too_large(self.settings.max_body)
            }
            ForwardError::Upstream(why) => {
                self.metrics.error("upstream");
                tracing::debug!(why, "forwarding failed");
                respond(
                    StatusCode::BAD_GATEWAY,
                    "text/plain; charset=utf-8",
                    "the node failed to answer\n",
                )
            }
            ForwardError::Connect => {
                self.metrics.error("upstream_connect");
                respond(
                    StatusCode::BAD_GATEWAY,
                    "text/plain; charset=utf-8",
                    "no node could be reached\n",
                )
            }
        }
    }

    /// Sends the request to `node` at `path` and returns the node's answer, streaming its body;
    /// for a WebSocket upgrade, starts the tunnel once the node switched protocols.
    async fn forward(
        &self,
        node: &Arc<Node>,
        head: Head,
        body: Body,
        path: PathAndQuery,
        call: Call,
    ) -> Result<Response<Body>, ForwardError> {
        let authority = node.authority().map_err(ForwardError::Upstream)?;
        let target = Uri::builder()
            .scheme(Scheme::HTTP)
            .authority(authority)
            .path_and_query(path)
            .build()
            .map_err(|e| ForwardError::Upstream(e.to_string()))?;
        let upgrade = call.on_upgrade.is_some();
        let mut upstream = Request::builder()
            .method(head.method)
            .uri(target)
            .version(http::Version::HTTP_11)
            .body(body)
            .map_err(|e| ForwardError::Upstream(e.to_string()))?;
        *upstream.headers_mut() = forwarded_headers(head.headers, call.peer, upgrade);
        corral_adapter_nats::trace::inject_http(&tracing::Span::current(), upstream.headers_mut());

        let started = Instant::now();
        let mut res = self.client.request(upstream).await.map_err(|err| {
            if err.is_connect() {
                ForwardError::Connect
            } else if is_too_large(&err) {
                ForwardError::TooLarge
            } else {
                ForwardError::Upstream(format!("{err:?}"))
            }
        })?;
        self.metrics.upstream(call.label, started.elapsed());

        if let Some(client_upgrade) = call.on_upgrade
            && res.status() == StatusCode::SWITCHING_PROTOCOLS
        {
            let node_upgrade = hyper::upgrade::on(&mut res);
            // The tunnel outlives the HTTP connection: it takes over its connection slot.
            let slot = call.slot.lock().unwrap_or_else(|e| e.into_inner()).take();
            self.spawn_tunnel(node.clone(), client_upgrade, node_upgrade, slot);
            let (parts, _) = res.into_parts();
            return Ok(Response::from_parts(
                parts,
                Empty::new().map_err(|e| match e {}).boxed_unsync(),
            ));
        }
        let (mut parts, body) = res.into_parts();
        strip_hop_by_hop(&mut parts.headers, false);
        Ok(Response::from_parts(
            parts,
            body.map_err(|e| Box::new(e) as BoxError).boxed_unsync(),
        ))
    }

    /// Seals the open packet of a polling handshake and sets the affinity cookie.
    async fn finish_handshake(
        &self,
        node: &Node,
        res: Response<Body>,
        upgrade: bool,
    ) -> Response<Body> {
        let cookie = self.router.sets_cookie().then(|| {
            format!(
                "{}={}; Path=/; HttpOnly; SameSite=Lax",
                self.router.cookie_name(),
                self.router.tokens().cookie(&node.id)
            )
        });
        let mut res = if !upgrade && res.status() == StatusCode::OK {
            self.seal_open_packet(node, res).await
        } else {
            res
        };
        if let Some(cookie) = cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
            res.headers_mut().append(header::SET_COOKIE, cookie);
        }
        res
    }

    async fn seal_open_packet(&self, node: &Node, res: Response<Body>) -> Response<Body> {
        let (mut parts, body) = res.into_parts();
        let body = match read_small(body, MAX_OPEN_PACKET).await {
            Some(body) => body,
            None => {
                self.metrics.error("upstream");
                return respond(
                    StatusCode::BAD_GATEWAY,
                    "text/plain; charset=utf-8",
                    "the node's handshake could not be read\n",
                );
            }
        };
        let sealed = std::str::from_utf8(&body).ok().and_then(|text| {
            let open: serde_json::Value = serde_json::from_str(text.strip_prefix('0')?).ok()?;
            let sid = open.get("sid")?.as_str()?;
            let token = self.router.tokens().seal(&node.id, sid)?;
            // Only the sid changes; every other byte (and key order) stays as the node sent it.
            Some(text.replacen(
                &format!(r#""sid":"{sid}""#),
                &format!(r#""sid":"{token}""#),
                1,
            ))
        });
        let Some(sealed) = sealed else {
            if !body.starts_with(b"0{") {
                // Not an open packet at all (an endpoint that merely takes an `EIO` parameter):
                // nothing to seal, pass it on.
                parts.headers.remove(header::CONTENT_LENGTH);
                return Response::from_parts(
                    parts,
                    Full::new(body).map_err(|e| match e {}).boxed_unsync(),
                );
            }
            self.metrics.error("upstream");
            tracing::error!(node = node.id, "an open packet the gateway cannot seal");
            return respond(
                StatusCode::BAD_GATEWAY,
                "text/plain; charset=utf-8",
                "the node's handshake could not be read\n",
            );
        };
        parts.headers.remove(header::CONTENT_LENGTH);
        Response::from_parts(
            parts,
            Full::new(Bytes::from(sealed))
                .map_err(|e| match e {})
                .boxed_unsync(),
        )
    }

    fn spawn_tunnel(
        &self,
        node: Arc<Node>,
        client: hyper::upgrade::OnUpgrade,
        upstream: hyper::upgrade::OnUpgrade,
        slot: Option<tokio::sync::OwnedSemaphorePermit>,
    ) {
        let metrics = self.metrics.clone();
        let (buffer, idle) = (self.settings.tunnel_buffer, self.settings.tunnel_idle);
        tokio::spawn(async move {
            let (client, upstream) = match tokio::try_join!(client, upstream) {
                Ok(pair) => pair,
                Err(err) => {
                    tracing::debug!(%err, "upgrade did not complete");
                    return;
                }
            };
            let guard = node.tunnels.open();
            metrics.tunnel_opened(&node.id);
            tunnel(
                TokioIo::new(client),
                TokioIo::new(upstream),
                buffer,
                idle,
                &guard.cancel,
            )
            .await;
            metrics.tunnel_closed(&node.id);
            drop(guard);
            drop(slot);
        });
    }
}

/// Copies bytes both ways until either side ends, nothing moves for `idle`, or `cancel` fires.
async fn tunnel<A, B>(a: A, b: B, buffer: usize, idle: Duration, cancel: &CancellationToken)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let start = Instant::now();
    let last = AtomicU64::new(0);
    let (mut a_read, mut a_write) = tokio::io::split(a);
    let (mut b_read, mut b_write) = tokio::io::split(b);
    let up = pump(&mut a_read, &mut b_write, buffer, start, &last);
    let down = pump(&mut b_read, &mut a_write, buffer, start, &last);
    let watchdog = async {
        loop {
            tokio::time::sleep(idle / 4).await;
            let quiet = start
                .elapsed()
                .saturating_sub(Duration::from_millis(last.load(Ordering::Relaxed)));
            if quiet >= idle {
                tracing::debug!(?idle, "tunnel idle; closing");
                return;
            }
        }
    };
    tokio::select! {
        _ = async { tokio::join!(up, down) } => {}
        () = watchdog => {}
        () = cancel.cancelled() => {}
    }
}

/// One direction of a tunnel; a read of 0 passes the end on.
async fn pump<R, W>(read: &mut R, write: &mut W, buffer: usize, start: Instant, last: &AtomicU64)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; buffer];
    loop {
        let n = match read.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if write.write_all(&buf[..n]).await.is_err() {
            break;
        }
        last.store(
            u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }
    let _ = write.shutdown().await;
}

/// A token bucket of `rate` closes per second, shared by everything that closes sessions on
/// purpose (polls and tunnels of a node drained with `close`), so clients reconnect gradually.
#[derive(Debug)]
pub struct DrainBudget {
    /// Closes per second.
    pub rate: u32,
    state: std::sync::Mutex<(f64, Instant)>,
}

impl DrainBudget {
    /// A budget of `rate` closes per second.
    pub fn new(rate: u32) -> DrainBudget {
        DrainBudget {
            rate,
            state: std::sync::Mutex::new((f64::from(rate), Instant::now())),
        }
    }

    /// Takes one close from the budget, if there is one now.
    pub fn take(&self) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (tokens, at) = *state;
        let refilled =
            (tokens + at.elapsed().as_secs_f64() * f64::from(self.rate)).min(f64::from(self.rate));
        if refilled >= 1.0 {
            *state = (refilled - 1.0, Instant::now());
            true
        } else {
            *state = (refilled, Instant::now());
            false
        }
    }
}

/// The whole of a small body, or `None` if it fails or exceeds `max` bytes.
async fn read_small(mut body: Body, max: usize) -> Option<Bytes> {
    let mut out = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.ok()?.into_data() {
            if out.len() + data.len() > max {
                return None;
            }
            out.extend_from_slice(&data);
        }
    }
    Some(out.freeze())
}

fn too_large(max: u64) -> Response<Body> {
    respond(
        StatusCode::PAYLOAD_TOO_LARGE,
        "text/plain; charset=utf-8",
        format!("request body over this gateway's limit of {max} bytes\n"),
    )
}

fn is_too_large(err: &hyper_util::client::legacy::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if e.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = e.source();
    }
    false
}

/// True for a WebSocket upgrade request.
fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// The path and query of `uri`, as forwarded.
fn path_of(uri: &Uri) -> PathAndQuery {
    uri.path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"))
}

/// The path and query of `uri` with its `sid=<token>` replaced by `sid=<node sid>`.
fn replace_sid(uri: &Uri, token: &str, node_sid: &str) -> PathAndQuery {
    let query = uri.query().unwrap_or_default();
    let mut rewritten = String::with_capacity(uri.path().len() + 1 + query.len());
    rewritten.push_str(uri.path());
    rewritten.push('?');
    for (i, pair) in query.split('&').enumerate() {
        if i > 0 {
            rewritten.push('&');
        }
        match pair.strip_prefix("sid=") {
            Some(sid) if sid == token => {
                rewritten.push_str("sid=");
                rewritten.push_str(node_sid);
            }
            _ => rewritten.push_str(pair),
        }
    }
    PathAndQuery::try_from(rewritten).unwrap_or_else(|_| path_of(uri))
}

/// Removes the headers of one connection; an upgrade keeps `Upgrade` and `Connection: upgrade`.
fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    // Headers named by `Connection` are hop-by-hop too.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .filter(|name| !(upgrade && name == header::UPGRADE))
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in &HOP_BY_HOP {
        if upgrade && (name == header::UPGRADE || name == header::CONNECTION) {
            continue;
        }
        headers.remove(name);
    }
    if upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// The request headers as the node sees them: without hop-by-hop headers, with the client's
/// address appended to `X-Forwarded-For` and `Forwarded`.
fn forwarded_headers(mut headers: HeaderMap, peer: SocketAddr, upgrade: bool) -> HeaderMap {
    strip_hop_by_hop(&mut headers, upgrade);
    let ip = peer.ip().to_string();
    // Each value is built in one string and handed over without another copy.
    let appended = |previous: Option<&HeaderValue>, parts: &[&str]| {
        let previous = previous.and_then(|v| v.to_str().ok());
        let len =
            previous.map_or(0, |p| p.len() + 2) + parts.iter().map(|p| p.len()).sum::<usize>();
        let mut value = String::with_capacity(len);
        if let Some(previous) = previous {
            value.push_str(previous);
            value.push_str(", ");
        }
        parts.iter().for_each(|part| value.push_str(part));
        HeaderValue::from_maybe_shared(Bytes::from(value)).ok()
    };
    let xff = appended(headers.get(&X_FORWARDED_FOR), &[&ip]);
    let forwarded = if peer.is_ipv6() {
        appended(
            headers.get(header::FORWARDED),
            &["for=\"[", &ip, "]\";proto=http"],
        )
    } else {
        appended(
            headers.get(header::FORWARDED),
            &["for=", &ip, ";proto=http"],
        )
    };
    if let Some(v) = xff {
        headers.insert(X_FORWARDED_FOR.clone(), v);
    }
    if let Some(v) = forwarded {
        headers.insert(header::FORWARDED, v);
    }
    headers
        .entry(X_FORWARDED_PROTO.clone())
        .or_insert(HeaderValue::from_static("http"));
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_swapped_for_the_node_sid_and_nothing_else() {
        let uri: Uri = "/socket.io/?EIO=4&transport=polling&sid=n1.abc.TAG&t=x"
            .parse()
            .unwrap();
        let out = replace_sid(&uri, "n1.abc.TAG", "abc");
        assert_eq!(out, "/socket.io/?EIO=4&transport=polling&sid=abc&t=x");
    }

    #[test]
    fn hop_by_hop_headers_go_and_forwarding_headers_come() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        headers.insert("x-secret", HeaderValue::from_static("1"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert("x-forwarded-for", HeaderValue::from_static("203.0.113.7"));
        headers.insert(header::COOKIE, HeaderValue::from_static("a=1"));
        let out = forwarded_headers(headers, "10.0.0.1:5000".parse().unwrap(), false);
        assert!(out.get("x-secret").is_none());
        assert!(out.get(header::CONNECTION).is_none());
        assert!(out.get("keep-alive").is_none());
        assert_eq!(out["x-forwarded-for"], "203.0.113.7, 10.0.0.1");
        assert_eq!(out[header::FORWARDED], "for=10.0.0.1;proto=http");
        assert_eq!(out["x-forwarded-proto"], "http");
        assert_eq!(out[header::COOKIE], "a=1");
    }

    #[test]
    fn an_upgrade_keeps_its_upgrade_headers() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        let out = forwarded_headers(headers, "[::1]:5000".parse().unwrap(), true);
        assert_eq!(out[header::UPGRADE], "websocket");
        assert_eq!(out[header::CONNECTION], "upgrade");
        assert_eq!(out[header::FORWARDED], "for=\"[::1]\";proto=http");
    }

    #[test]
    fn the_drain_budget_refills_at_its_rate() {
        let budget = DrainBudget::new(2);
        assert!(budget.take());
        assert!(budget.take());
        assert!(!budget.take(), "two per second");
    }
}
