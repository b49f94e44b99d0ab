//! How to reach a server and how a session behaves: [`Target`], [`SessionConfig`],
//! [`AckPolicy`].

use std::{
    fmt,
    net::{IpAddr, SocketAddr, ToSocketAddrs},
    str::FromStr,
    sync::Arc,
    time::Duration,
};

use http::{HeaderValue, uri::Authority};

use super::{
    packet::{Args, Reply, Text},
    plan::TransportMode,
    transport::HttpClients,
};

/// A bad target URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("target {url:?}: {why}")]
pub struct TargetError {
    url: String,
    why: String,
}

/// A server to connect to: a gateway or a node, as `http://host:port`. The host name is
/// resolved once, when the target is parsed; requests carry the name in `Host`.
#[derive(Clone)]
pub struct Target(Arc<TargetInner>);

struct TargetInner {
    url: String,
    authority: String,
    host: HeaderValue,
    addrs: Vec<SocketAddr>,
}

impl Target {
    /// Parses `http://host[:port][/]` (port 80 by default) and resolves the host. Only plain
    /// `http://` is supported; the Engine.IO path is [`SessionConfig::path`].
    pub fn parse(url: &str) -> Result<Target, TargetError> {
        let err = |why: &str| TargetError {
            url: url.to_owned(),
            why: why.to_owned(),
        };
        let trimmed = url.trim();
        let rest = match trimmed.get(..7) {
            Some(scheme) if scheme.eq_ignore_ascii_case("http://") => &trimmed[7..],
            _ => return Err(err("only http:// URLs are supported")),
        };
        let (authority, path) = match rest.find(['/', '?', '#']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if !path.is_empty() && path != "/" {
            return Err(err(
                "give the server only (http://host:port); the Engine.IO path is set separately",
            ));
        }
        let parsed = Authority::from_str(authority).map_err(|_| err("bad host or port"))?;
        if authority.contains('@') {
            return Err(err("user information is not supported"));
        }
        let port = parsed.port_u16().unwrap_or(80);
        let host = parsed.host().trim_start_matches('[').trim_end_matches(']');
        let addrs: Vec<SocketAddr> = match host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => (host, port)
                .to_socket_addrs()
                .map_err(|e| err(&format!("cannot resolve {host}: {e}")))?
                .collect(),
        };
        if addrs.is_empty() {
            return Err(err(&format!("{host} has no address")));
        }
        let header = HeaderValue::from_str(authority).map_err(|_| err("bad host"))?;
        Ok(Target(Arc::new(TargetInner {
            url: format!("http://{authority}"),
            authority: authority.to_owned(),
            host: header,
            addrs,
        })))
    }

    /// A target at a socket address (`http://addr`).
    pub fn from_addr(addr: SocketAddr) -> Target {
        let authority = addr.to_string();
        Target(Arc::new(TargetInner {
            url: format!("http://{authority}"),
            host: HeaderValue::from_str(&authority)
                .unwrap_or_else(|_| HeaderValue::from_static("localhost")),
            authority,
            addrs: vec![addr],
        }))
    }

    /// `http://host:port`.
    pub fn url(&self) -> &str {
        &self.0.url
    }

    /// The addresses the host resolved to.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.0.addrs
    }

    /// The address to dial from `source`: the first of the same family.
    pub(crate) fn addr_for(&self, source: Option<IpAddr>) -> SocketAddr {
        source
            .and_then(|ip| {
                self.0
                    .addrs
                    .iter()
                    .find(|a| a.is_ipv4() == ip.is_ipv4())
                    .copied()
            })
            .unwrap_or(self.0.addrs[0])
    }

    pub(crate) fn authority(&self) -> &str {
        &self.0.authority
    }

    pub(crate) fn host_header(&self) -> &HeaderValue {
        &self.0.host
    }
}

impl FromStr for Target {
    type Err = TargetError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Target::parse(s)
    }
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Target")
            .field("url", &self.0.url)
            .field("addrs", &self.0.addrs)
            .finish()
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.url)
    }
}

/// Decides the answer to a server's ack request: gets the event name and its arguments, and
/// returns the answer, or `None` to leave the request unanswered. It runs in the session's
/// task: keep it quick.
pub type AckHandler = Arc<dyn Fn(&Text, &Args) -> Option<Reply> + Send + Sync>;

/// How a session answers events the server emits with an ack (`emit_with_ack` on the server,
/// e.g. the bench protocol's `ask`). The event is delivered as [`Incoming::Event`] in every
/// case.
///
/// [`Incoming::Event`]: super::Incoming::Event
#[derive(Clone, Default)]
pub enum AckPolicy {
    /// Answer at once with the same arguments (the bench `ask` round trip).
    #[default]
    Echo,
    /// Answer with what the handler returns.
    Handler(AckHandler),
    /// Do not answer: the event comes with `ack: Some(id)`, answer it with
    /// [`Session::ack`](super::Session::ack).
    Manual,
}

impl AckPolicy {
    /// A [`AckPolicy::Handler`] from a closure.
    pub fn handler(f: impl Fn(&Text, &Args) -> Option<Reply> + Send + Sync + 'static) -> Self {
        AckPolicy::Handler(Arc::new(f))
    }
}

impl fmt::Debug for AckPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AckPolicy::Echo => "Echo",
            AckPolicy::Handler(_) => "Handler(..)",
            AckPolicy::Manual => "Manual",
        })
    }
}

/// Everything one session needs. Build one with [`SessionConfig::new`], adjust the fields,
/// and clone it per session (clones share the [`HttpClients`] and the [`Target`]).
#[derive(Clone, Debug)]
pub struct SessionConfig {
    /// The server (gateway or node).
    pub target: Target,
    /// HTTP path of the Engine.IO endpoint (default `/socket.io/`).
    pub path: String,
    /// Transport of this session.
    pub transport: TransportMode,
    /// Socket.IO namespace to connect (default `/`).
    pub namespace: String,
    /// Payload of the namespace `CONNECT` (socket.io-client's `auth`); a JSON object.
    pub auth: Option<serde_json::Value>,
    /// Extra query parameters appended to every request, already encoded (`room=a&k=v`), e.g.
    /// for a gateway's `--hash-key query:NAME`.
    pub query: Option<String>,
    /// Local address the session's TCP connections are bound to.
    pub source_ip: Option<IpAddr>,
    /// Time allowed from the first connection to the namespace's `CONNECT` answer (default 10 s).
    pub connect_timeout: Duration,
    /// Time allowed for a POST and for an upgrade probe (default 10 s).
    pub request_timeout: Duration,
    /// How server ack requests are answered (default [`AckPolicy::Echo`]).
    pub ack_policy: AckPolicy,
    /// Read buffer of a WebSocket connection, allocated per session (default 1024 bytes; larger
    /// messages take several reads).
    pub ws_read_buffer: usize,
    /// Largest WebSocket message or polling payload accepted (default 16 MiB).
    pub max_message: usize,
    /// The polling HTTP clients (shared by clones of this config).
    pub http: HttpClients,
}

impl SessionConfig {
    /// Defaults for `target`: WebSocket, `/socket.io/`, namespace `/`.
    pub fn new(target: Target) -> SessionConfig {
        SessionConfig {
            target,
            path: "/socket.io/".to_owned(),
            transport: TransportMode::WebSocket,
            namespace: "/".to_owned(),
            auth: None,
            query: None,
            source_ip: None,
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(10),
            ack_policy: AckPolicy::Echo,
            ws_read_buffer: 1024,
            max_message: 16 * 1024 * 1024,
            http: HttpClients::new(),
        }
    }

    /// `path?EIO=4&transport=…[&sid=…][&query]`.
    pub(crate) fn path_and_query(&self, transport: &str, sid: Option<&str>) -> String {
        let mut out = String::with_capacity(self.path.len() + 64);
        if !self.path.starts_with('/') {
            out.push('/');
        }
        out.push_str(&self.path);
        out.push_str("?EIO=4&transport=");
        out.push_str(transport);
        if let Some(sid) = sid {
            out.push_str("&sid=");
            percent_encode(sid, &mut out);
        }
        if let Some(query) = self.query.as_deref().filter(|q| !q.is_empty()) {
            out.push('&');
            out.push_str(query.trim_start_matches(['?', '&']));
        }
        out
    }
}

/// Escapes what is not an unreserved URL character (session tokens are opaque).
fn percent_encode(value: &str, out: &mut String) {
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let t = Target::parse("http://127.0.0.1:3000").unwrap();
        assert_eq!(
            t.addrs(),
            &["127.0.0.1:3000".parse::<SocketAddr>().unwrap()]
        );
        assert_eq!(t.url(), "http://127.0.0.1:3000");
        let t = Target::parse("HTTP://[::1]:4001/").unwrap();
        assert_eq!(t.addrs()[0], "[::1]:4001".parse::<SocketAddr>().unwrap());
        assert_eq!(t.host_header(), "[::1]:4001");
        let t = Target::parse("http://localhost:5").unwrap();
        assert!(
            t.addrs()
                .iter()
                .all(|a| a.port() == 5 && a.ip().is_loopback())
        );
        assert_eq!(
            Target::parse("http://10.0.0.1").unwrap().addrs()[0].port(),
            80
        );
        for bad in [
            "https://a:1",
            "ws://a:1",
            "127.0.0.1:3000",
            "http://a:1/socket.io/",
            "http://",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn request_paths() {
        let mut config = SessionConfig::new(Target::from_addr("127.0.0.1:1".parse().unwrap()));
        assert_eq!(
            config.path_and_query("polling", None),
            "/socket.io/?EIO=4&transport=polling"
        );
        config.path = "/custom".into();
        config.query = Some("room=a".into());
        assert_eq!(
            config.path_and_query("websocket", Some("node-1.abc.x/y")),
            "/custom?EIO=4&transport=websocket&sid=node-1.abc.x%2Fy&room=a"
        );
    }
}
