//! Gateway configuration: every flag of `corral gateway`, its environment variable and default.

use std::{net::SocketAddr, str::FromStr};

use clap::{Args, ValueEnum};
use corral_adapter_nats::{DEFAULT_PREFIX, NatsArgs};
use ipnet::IpNet;

/// Everything a gateway needs to start.
#[derive(Debug, Clone, Args)]
pub struct GatewayConfig {
    /// Address clients connect to (Socket.IO, the app's pages).
    #[arg(long, env = "CORRAL_LISTEN", default_value = "127.0.0.1:3000")]
    pub listen: SocketAddr,

    /// Address of the admin listener: /healthz, /readyz, /metrics and the admin API.
    #[arg(long, env = "CORRAL_ADMIN_LISTEN", default_value = "127.0.0.1:3001")]
    pub admin_listen: SocketAddr,

    /// Bearer token of the admin API (list, drain and undrain nodes), at least 32 characters.
    /// Unset or empty: the admin API is disabled; health and metrics stay available.
    #[arg(long, env = "CORRAL_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// A node, as `ID=URL` (e.g. `node-1=http://10.0.0.5:4001`); repeatable, or comma separated.
    #[arg(long = "node", env = "CORRAL_NODE", value_delimiter = ',')]
    pub nodes: Vec<StaticNode>,

    /// Where else to find nodes: `dns:NAME:PORT` (re-resolved every health interval; a
    /// Kubernetes headless Service) or `nats` (the cluster's own membership, on `--nats`).
    #[arg(long, env = "CORRAL_DISCOVER")]
    pub discover: Option<Discovery>,

    /// How to reach NATS for `--discover nats`.
    #[command(flatten)]
    pub nats: NatsArgs,

    /// Subject prefix of the cluster (as the nodes' `--subject-prefix`).
    #[arg(long, env = "CORRAL_SUBJECT_PREFIX", default_value = DEFAULT_PREFIX)]
    pub subject_prefix: String,

    /// Key that signs session tokens and affinity cookies; every replica needs the same one, at
    /// least 32 characters (e.g. `openssl rand -hex 32`). Random when unset or empty (then
    /// sessions survive only on this replica).
    #[arg(long, env = "CORRAL_SESSION_SECRET", hide_env_values = true)]
    pub session_secret: Option<String>,

    /// How new sessions pick a node, in order: `cookie` (the affinity cookie's node, if ready),
    /// `address` (the consistent-hash ring on `--hash-key`), or `none` alone (least loaded).
    #[arg(
        long,
        env = "CORRAL_AFFINITY",
        value_enum,
        value_delimiter = ',',
        default_value = "cookie,address"
    )]
    pub affinity: Vec<Affinity>,

    /// Name of the affinity cookie set on handshakes.
    #[arg(long, env = "CORRAL_AFFINITY_COOKIE", default_value = "corral_node")]
    pub affinity_cookie: String,

    /// Key of the ring for `address` affinity: `address` (the client's address), `header:NAME`
    /// or `query:NAME`.
    #[arg(long, env = "CORRAL_HASH_KEY", default_value = "address")]
    pub hash_key: HashKey,

    /// Proxy whose `X-Forwarded-For`/`Forwarded` is believed (CIDR, repeatable). The client is
    /// then the first address from the right that is not a trusted proxy. Only such a proxy's
    /// `traceparent` is continued (others start a new trace).
    #[arg(
        long = "trusted-proxy",
        env = "CORRAL_TRUSTED_PROXY",
        value_delimiter = ','
    )]
    pub trusted_proxies: Vec<IpNet>,

    /// How new sessions are spread when no affinity applies: `p2c` (the less loaded of two
    /// random ready nodes) or `round-robin`.
    #[arg(long, env = "CORRAL_BALANCE", value_enum, default_value_t = Balance::P2c)]
    pub balance: Balance,

    /// How often each node's /readyz is checked.
    #[arg(long, env = "CORRAL_HEALTH_INTERVAL", default_value = "2s")]
    pub health_interval: humantime::Duration,

    /// How long a health check may take.
    #[arg(long, env = "CORRAL_HEALTH_TIMEOUT", default_value = "1s")]
    pub health_timeout: humantime::Duration,

    /// How long the gateway waits to connect to a node before trying another (or answering).
    #[arg(long, env = "CORRAL_CONNECT_TIMEOUT", default_value = "2s")]
    pub connect_timeout: humantime::Duration,

    /// Client connections at most; more are answered 503 and closed.
    #[arg(long, env = "CORRAL_MAX_CONNECTIONS", default_value_t = 20_000)]
    pub max_connections: usize,

    /// Largest request body in bytes (413 above).
    #[arg(long, env = "CORRAL_MAX_BODY", default_value_t = 1_000_000)]
    pub max_body: u64,

    /// Largest request head (line and headers) in bytes (431 above); at least 8192.
    #[arg(long, env = "CORRAL_MAX_HEADER_BYTES", default_value_t = 16_384)]
    pub max_header_bytes: usize,

    /// How long a client may take to send a request's headers.
    #[arg(long, env = "CORRAL_HEADER_READ_TIMEOUT", default_value = "10s")]
    pub header_read_timeout: humantime::Duration,

    /// A WebSocket tunnel without a byte either way for this long is closed (above the nodes'
    /// ping interval plus ping timeout).
    #[arg(long, env = "CORRAL_TUNNEL_IDLE_TIMEOUT", default_value = "60s")]
    pub tunnel_idle_timeout: humantime::Duration,

    /// Buffer per direction of a WebSocket tunnel, in bytes.
    #[arg(long, env = "CORRAL_TUNNEL_BUFFER", default_value_t = 4096)]
    pub tunnel_buffer: usize,

    /// Sessions per second closed on a node drained with `close` (and on shutdown), so their
    /// clients reconnect elsewhere without a stampede.
    #[arg(long, env = "CORRAL_DRAIN_RATE", default_value_t = 100)]
    pub drain_rate: u32,

    /// On SIGTERM/SIGINT: how long the gateway may take to let requests finish and close tunnels.
    #[arg(long, env = "CORRAL_DRAIN_TIMEOUT", default_value = "30s")]
    pub drain_timeout: humantime::Duration,
}

/// Shortest `--session-secret` and `--admin-token` accepted: a short key would let clients
/// forge session tokens, a short token be guessed.
pub const MIN_SECRET_LEN: usize = 32;

/// Smallest head limit: the HTTP parser's read buffer cannot be smaller.
pub const MIN_HEADER_BYTES: usize = 8192;

/// A statically configured node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticNode {
    /// Its node id (as the node's `--node-id`).
    pub id: String,
    /// Its base URL (`http://host:port`).
    pub url: String,
}

impl FromStr for StaticNode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (id, url) = s
            .split_once('=')
            .ok_or_else(|| format!("{s:?} is not ID=URL (e.g. node-1=http://10.0.0.5:4001)"))?;
        let url = url.trim_end_matches('/');
        if id.is_empty()
            || !id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(format!(
                "node id {id:?} may contain only letters, digits, '-' and '_'"
            ));
        }
        let authority = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("node URL {url:?} must start with http://"))?;
        if authority.is_empty() || authority.contains('/') {
            return Err(format!("node URL {url:?} must be http://host:port"));
        }
        Ok(StaticNode {
            id: id.to_owned(),
            url: url.to_owned(),
        })
    }
}

/// A source of nodes besides the static list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Discovery {
    /// Every address `name` resolves to, at `port`.
    Dns {
        /// The name.
        name: String,
        /// The nodes' port.
        port: u16,
    },
    /// The live members the nodes announce on NATS.
    Nats,
}

impl FromStr for Discovery {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "nats" {
            return Ok(Discovery::Nats);
        }
        let rest = s
            .strip_prefix("dns:")
            .ok_or_else(|| format!("{s:?} is neither nats nor dns:NAME:PORT"))?;
        let (name, port) = rest
            .rsplit_once(':')
            .ok_or_else(|| format!("{s:?} lacks the port: dns:NAME:PORT"))?;
        let port = port
            .parse()
            .map_err(|_| format!("{port:?} is not a port"))?;
        if name.is_empty() {
            return Err("dns: needs a name".into());
        }
        Ok(Discovery::Dns {
            name: name.to_owned(),
            port,
        })
    }
}

/// A rule that picks the node of a new session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Affinity {
    /// The node named by the client's affinity cookie.
    Cookie,
    /// The ring's node for the client's key (`--hash-key`).
    Address,
    /// No affinity: `--balance` spreads sessions.
    None,
}

/// What the ring hashes for a new session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    /// The client's address.
    Address,
    /// A request header.
    Header(String),
    /// A query parameter.
    Query(String),
}

impl FromStr for HashKey {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once(':') {
            None if s == "address" => Ok(HashKey::Address),
            Some(("header", name)) if !name.is_empty() => {
                Ok(HashKey::Header(name.to_ascii_lowercase()))
            }
            Some(("query", name)) if !name.is_empty() => Ok(HashKey::Query(name.to_owned())),
            _ => Err(format!("{s:?} is not address, header:NAME or query:NAME")),
        }
    }
}

/// How sessions without affinity are spread.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Balance {
    /// Power of two choices over the nodes' live session counts.
    P2c,
    /// Each ready node in turn.
    RoundRobin,
}

/// A configuration error found before anything starts.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Neither `--node` nor `--discover`.
    #[error("no nodes: give --node ID=URL (repeatable) or --discover dns:NAME:PORT|nats")]
    NoNodes,
    /// `none` mixed with other affinities.
    #[error("--affinity none stands alone (got {0})")]
    NoneNotAlone(String),
    /// A zero duration or size.
    #[error("{0} must be greater than zero")]
    Zero(&'static str),
    /// The cookie name is not a valid cookie name.
    #[error("--affinity-cookie {0:?} is not a valid cookie name")]
    CookieName(String),
    /// A head limit below what the HTTP parser can enforce.
    #[error("--max-header-bytes must be at least {MIN_HEADER_BYTES} (got {0})")]
    HeaderLimit(usize),
    /// The same node id twice.
    #[error("node id {0:?} is given twice")]
    DuplicateNode(String),
    /// A session secret or admin token too short to be unguessable.
    #[error(
        "{0} must be at least {MIN_SECRET_LEN} characters (got {1}); make one with `openssl rand -hex 32`"
    )]
    ShortSecret(&'static str, usize),
}

impl GatewayConfig {
    /// Checks what clap cannot check alone.
    pub fn validated(mut self) -> Result<GatewayConfig, ConfigError> {
        if self.nodes.is_empty() && self.discover.is_none() {
            return Err(ConfigError::NoNodes);
        }
        self.affinity.dedup();
        if self.affinity.contains(&Affinity::None) && self.affinity.len() > 1 {
            let list: Vec<String> = self
                .affinity
                .iter()
                .map(|a| format!("{a:?}").to_lowercase())
                .collect();
            return Err(ConfigError::NoneNotAlone(list.join(",")));
        }
        let cookie_ok = !self.affinity_cookie.is_empty()
            && self
                .affinity_cookie
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
        if !cookie_ok {
            return Err(ConfigError::CookieName(self.affinity_cookie));
        }
        for (name, zero) in [
            ("--health-interval", self.health_interval.is_zero()),
            ("--health-timeout", self.health_timeout.is_zero()),
            ("--connect-timeout", self.connect_timeout.is_zero()),
            ("--tunnel-idle-timeout", self.tunnel_idle_timeout.is_zero()),
            ("--max-connections", self.max_connections == 0),
            ("--tunnel-buffer", self.tunnel_buffer == 0),
            ("--drain-rate", self.drain_rate == 0),
        ] {
            if zero {
                return Err(ConfigError::Zero(name));
            }
        }
        if self.max_header_bytes < MIN_HEADER_BYTES {
            return Err(ConfigError::HeaderLimit(self.max_header_bytes));
        }
        // An empty value is how environments say "unset" (`CORRAL_SESSION_SECRET=`).
        for (flag, secret) in [
            ("--session-secret", &mut self.session_secret),
            ("--admin-token", &mut self.admin_token),
        ] {
            if secret.as_deref() == Some("") {
                *secret = None;
            }
            if let Some(secret) = secret
                && secret.len() < MIN_SECRET_LEN
            {
                return Err(ConfigError::ShortSecret(flag, secret.len()));
            }
        }
        let mut ids: Vec<&str> = self.nodes.iter().map(|n| n.id.as_str()).collect();
        ids.sort_unstable();
        if let Some(pair) = ids.windows(2).find(|w| w[0] == w[1]) {
            return Err(ConfigError::DuplicateNode(pair[0].to_owned()));
        }
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    #[derive(Parser)]
    struct Wrapper {
        #[command(flatten)]
        config: GatewayConfig,
    }

    /// `docs/gateway.md` carries the flag table rendered from the definitions above, and
    /// `docs/metrics.md` the gateway's metric catalog.
    #[test]
    fn docs_list_every_flag_and_metric() {
        let dir = env!("CARGO_MANIFEST_DIR");
        let flags = corral_adapter_nats::doc_tables::flags_markdown(&Wrapper::command());
        corral_adapter_nats::doc_tables::check(dir, "docs/gateway.md", "gateway-flags", &flags);
        let metrics = crate::metrics::catalog_markdown();
        corral_adapter_nats::doc_tables::check(dir, "docs/metrics.md", "gateway-metrics", &metrics);
    }

    #[test]
    fn flag_values_parse_or_explain() {
        assert_eq!(
            "n1=http://10.0.0.5:4001".parse::<StaticNode>().unwrap(),
            StaticNode {
                id: "n1".into(),
                url: "http://10.0.0.5:4001".into()
            }
        );
        assert!("n1".parse::<StaticNode>().unwrap_err().contains("ID=URL"));
        assert!("n.1=http://x:1".parse::<StaticNode>().is_err());
        assert!("n1=https://x:1".parse::<StaticNode>().is_err());
        assert_eq!("nats".parse::<Discovery>().unwrap(), Discovery::Nats);
        assert_eq!(
            "dns:nodes.corral.svc:4001".parse::<Discovery>().unwrap(),
            Discovery::Dns {
                name: "nodes.corral.svc".into(),
                port: 4001
            }
        );
        assert!("dns:nodes".parse::<Discovery>().is_err());
        assert_eq!(
            "header:X-User".parse::<HashKey>().unwrap(),
            HashKey::Header("x-user".into())
        );
        assert_eq!(
            "query:room".parse::<HashKey>().unwrap(),
            HashKey::Query("room".into())
        );
        assert!("cookie".parse::<HashKey>().is_err());
    }

    fn with_secret(secret: &str) -> Result<GatewayConfig, ConfigError> {
        with(&["--session-secret", secret])
    }

    fn with(args: &[&str]) -> Result<GatewayConfig, ConfigError> {
        Wrapper::try_parse_from(
            ["gateway", "--node", "n1=http://127.0.0.1:1"]
                .iter()
                .chain(args),
        )
        .unwrap()
        .config
        .validated()
    }

    #[test]
    fn session_secrets_are_long_or_unset() {
        assert_eq!(with_secret("").unwrap().session_secret, None);
        assert!(matches!(
            with_secret("hunter2"),
            Err(ConfigError::ShortSecret("--session-secret", 7))
        ));
        assert_eq!(with(&["--admin-token", ""]).unwrap().admin_token, None);
        assert!(matches!(
            with(&["--admin-token", "admin"]),
            Err(ConfigError::ShortSecret("--admin-token", 5))
        ));
        let long = "0123456789abcdef0123456789abcdef";
        assert_eq!(
            with_secret(long).unwrap().session_secret.as_deref(),
            Some(long)
        );
    }
}
