//! Connections: the HTTP clients of long-polling (one pooled hyper client per source address,
//! shared by every session that uses it) and WebSocket connections (a `TcpSocket` bound to the
//! source address, then the WebSocket handshake).

use std::{
    collections::HashMap,
    fmt,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Uri, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::{
    client::legacy::{
        Client,
        connect::{HttpConnector, HttpInfo},
    },
    rt::{TokioExecutor, TokioTimer},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpSocket, TcpStream},
};
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{
        handshake::{client::generate_key, derive_accept_key},
        protocol::{Role, WebSocketConfig},
    },
};

use super::error::Failure;

/// How long an unused pooled connection stays open.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

pub(crate) type HttpClient = Client<HttpConnector, Full<Bytes>>;
pub(crate) type Ws = WebSocketStream<TcpStream>;

/// The HTTP clients of long-polling sessions, one per source address, each with its own
/// connection pool. Clones share the clients; a [`SessionConfig`](super::SessionConfig) and
/// its clones share one `HttpClients`, so sessions built from one config reuse connections
/// (a polling session holds one for its pending poll and borrows another to post).
#[derive(Clone, Default)]
pub struct HttpClients {
    clients: Arc<Mutex<HashMap<Option<IpAddr>, HttpClient>>>,
}

impl HttpClients {
    /// No client yet; they are made on first use.
    pub fn new() -> HttpClients {
        HttpClients::default()
    }

    pub(crate) fn get(&self, source: Option<IpAddr>) -> HttpClient {
        let mut clients = self
            .clients
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        clients
            .entry(source)
            .or_insert_with(|| {
                let mut connector = HttpConnector::new();
                connector.set_nodelay(true);
                connector.set_local_address(source);
                // Lets the kernel share a local port between connections to different
                // servers once the ephemeral ports of a source address run out.
                connector.set_reuse_address(source.is_some());
                Client::builder(TokioExecutor::new())
                    .pool_timer(TokioTimer::new())
                    .pool_idle_timeout(POOL_IDLE_TIMEOUT)
                    .build(connector)
            })
            .clone()
    }
}

impl fmt::Debug for HttpClients {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sources = self.clients.lock().map(|c| c.len()).unwrap_or_default();
        f.debug_struct("HttpClients")
            .field("sources", &sources)
            .finish()
    }
}

/// One HTTP request of a polling session; the body is read whole (at most `max` bytes).
pub(crate) async fn request(
    client: &HttpClient,
    method: Method,
    uri: &Uri,
    host: &HeaderValue,
    body: Bytes,
    max: usize,
) -> Result<(Bytes, Instant, Option<SocketAddr>), Failure> {
    let mut req = Request::builder()
        .method(method.clone())
        .uri(uri.clone())
        .header(header::HOST, host.clone());
    if method == Method::POST {
        req = req.header(header::CONTENT_TYPE, "text/plain;charset=UTF-8");
    }
    let req = req
        .body(Full::new(body))
        .map_err(|e| Failure::protocol(format!("cannot build the request: {e}")))?;
    let res = client.request(req).await.map_err(Failure::hyper)?;
    let status = res.status();
    let local = res.extensions().get::<HttpInfo>().map(HttpInfo::local_addr);
    let body = Limited::new(res.into_body(), max)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                Failure::protocol(format!("response larger than {max} bytes"))
            } else {
                Failure::Io(std::io::Error::other(e.to_string()))
            }
        })?
        .to_bytes();
    let at = Instant::now();
    if !status.is_success() {
        return Err(Failure::http(status, &body));
    }
    Ok((body, at, local))
}

/// What a polling session needs for its requests once it has a sid.
pub(crate) struct Polling {
    pub(crate) client: HttpClient,
    pub(crate) uri: Uri,
    pub(crate) host: HeaderValue,
    pub(crate) max_body: usize,
    pub(crate) post_timeout: Duration,
}

impl Polling {
    /// A long poll (after a pause of `after`): the packets, when they came, and the local
    /// address it used.
    pub(crate) async fn get(
        &self,
        after: Duration,
    ) -> Result<(Bytes, Instant, Option<SocketAddr>), Failure> {
        if !after.is_zero() {
            tokio::time::sleep(after).await;
        }
        request(
            &self.client,
            Method::GET,
            &self.uri,
            &self.host,
            Bytes::new(),
            self.max_body,
        )
        .await
    }

    pub(crate) async fn post(&self, body: Bytes) -> Result<(), Failure> {
        let sent = request(
            &self.client,
            Method::POST,
            &self.uri,
            &self.host,
            body,
            1024,
        );
        match tokio::time::timeout(self.post_timeout, sent).await {
            Ok(result) => result.map(|_| ()),
            Err(_) => Err(Failure::Timeout),
        }
    }
}

/// Where and how a session opens WebSocket connections.
#[derive(Clone)]
pub(crate) struct WsSetup {
    pub(crate) addr: SocketAddr,
    pub(crate) source: Option<IpAddr>,
    pub(crate) read_buffer: usize,
    pub(crate) max_message: usize,
}

/// A TCP connection from the source address (if any), then the WebSocket handshake:
/// `GET path_and_query` with `Host: host`.
pub(crate) async fn ws_connect(
    setup: &WsSetup,
    host: &str,
    path_and_query: &str,
) -> Result<(Ws, SocketAddr), Failure> {
    let socket = match setup.addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    if let Some(ip) = setup.source {
        if ip.is_ipv4() != setup.addr.is_ipv4() {
            return Err(Failure::Bind(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!(
                    "source {ip} and target {} are of different families",
                    setup.addr
                ),
            )));
        }
        socket.set_reuseaddr(true).map_err(Failure::Bind)?;
        socket.bind(SocketAddr::new(ip, 0)).map_err(Failure::Bind)?;
    }
    let mut stream = socket.connect(setup.addr).await?;
    stream.set_nodelay(true)?;
    let local = stream.local_addr()?;
    let tail = upgrade(&mut stream, host, path_and_query).await?;
    let config = WebSocketConfig::default()
        .read_buffer_size(setup.read_buffer)
        .max_message_size(Some(setup.max_message))
        .max_frame_size(Some(setup.max_message));
    let ws = WebSocketStream::from_partially_read(stream, tail, Role::Client, Some(config)).await;
    Ok((ws, local))
}

/// Largest head of a `101 Switching Protocols` answer accepted.
const MAX_UPGRADE_HEAD: usize = 16 * 1024;

/// The HTTP/1.1 upgrade to WebSocket, by hand: tungstenite's client handshake would leave its
/// 4 KiB handshake buffer behind as the connection's read buffer, whatever
/// [`WsSetup::read_buffer`] says. Returns the bytes read past the answer's head (the server may
/// send its first frames right away), in a vector of their exact size.
async fn upgrade(
    stream: &mut TcpStream,
    host: &str,
    path_and_query: &str,
) -> Result<Vec<u8>, Failure> {
    let key = generate_key();
    let request = format!(
        "GET {path_and_query} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\n\
         Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut buf = Vec::with_capacity(512);
    let head_end = loop {
        if stream.read_buf(&mut buf).await? == 0 {
            return Err(Failure::Closed);
        }
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > MAX_UPGRADE_HEAD {
            return Err(Failure::protocol("upgrade answer head too large"));
        }
    };
    let head = std::str::from_utf8(&buf[..head_end])
        .map_err(|_| Failure::protocol("upgrade answer is not text"))?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.strip_prefix("HTTP/1.1 "))
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse::<u16>().ok())
        .and_then(|code| http::StatusCode::from_u16(code).ok())
        .ok_or_else(|| Failure::protocol("bad upgrade answer status line"))?;
    let header = |name: &str| {
        head.split("\r\n").skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    };
    if status != http::StatusCode::SWITCHING_PROTOCOLS {
        // Enough of the body to tell a `Session ID unknown` from other refusals.
        let length = header("content-length")
            .and_then(|l| l.parse::<usize>().ok())
            .unwrap_or(0)
            .min(1024);
        let wanted = head_end + length;
        let read_body = async {
            while buf.len() < wanted {
                if stream.read_buf(&mut buf).await? == 0 {
                    break;
                }
            }
            Ok::<_, std::io::Error>(())
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), read_body).await;
        let end = wanted.min(buf.len());
        return Err(Failure::http(status, &buf[head_end..end]));
    }
    let upgraded = header("upgrade").is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let accepted =
        header("sec-websocket-accept") == Some(derive_accept_key(key.as_bytes()).as_str());
    if !upgraded || !accepted {
        return Err(Failure::protocol("bad WebSocket upgrade answer"));
    }
    Ok(buf[head_end..].to_vec())
}
