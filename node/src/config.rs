//! Node configuration: every flag of `corral node`, its environment variable and its default.
//!
//! The clap attributes below are the one place where flags and defaults are defined; `Default`
//! parses an empty command line through them, so the CLI, the library and `docs/node.md` cannot
//! drift apart.

use std::{net::SocketAddr, path::PathBuf};

use clap::{Args, CommandFactory, FromArgMatches, Parser, ValueEnum};

use crate::{bus::BusConfig, identity::NodeId};

/// Everything a node needs to start. Build it from the command line (it is a clap [`Args`]) or
/// from [`NodeConfig::default`] and adjust fields.
#[derive(Debug, Clone, Args)]
pub struct NodeConfig {
    /// Address the node listens on for Socket.IO, the app page, health and metrics.
    #[arg(long, env = "CORRAL_LISTEN", default_value = "127.0.0.1:4001")]
    pub listen: SocketAddr,

    /// Stable identity of this node in the cluster (letters, digits, `-`, `_`; at most 64).
    /// Defaults to `<hostname>-<port>`, which is stable across restarts on the same host.
    #[arg(long, env = "CORRAL_NODE_ID")]
    pub node_id: Option<NodeId>,

    /// Which built-in app handles Socket.IO events.
    #[arg(long, env = "CORRAL_APP", value_enum, default_value_t = AppKind::Chat)]
    pub app: AppKind,

    /// Also serve the bench protocol on this namespace (e.g. `/bench`), beside the app, so
    /// `corral loadtest --namespace /bench` can measure a deployment that runs another app.
    /// Its rooms are apart from the app's. Unset or empty: off.
    #[arg(long, env = "CORRAL_BENCH_NAMESPACE")]
    pub bench_namespace: Option<String>,

    /// HTTP path of the Socket.IO endpoint.
    #[arg(long, env = "CORRAL_PATH", default_value = "/socket.io")]
    pub path: String,

    /// How often the server pings each client (Engine.IO `pingInterval`).
    #[arg(long, env = "CORRAL_PING_INTERVAL", default_value = "25s")]
    pub ping_interval: humantime::Duration,

    /// How long the server waits for a pong before closing the session (`pingTimeout`).
    #[arg(long, env = "CORRAL_PING_TIMEOUT", default_value = "20s")]
    pub ping_timeout: humantime::Duration,

    /// Largest accepted Engine.IO payload in bytes: one polling POST body or one WebSocket message.
    #[arg(long, env = "CORRAL_MAX_PAYLOAD", default_value_t = 100_000)]
    pub max_payload: u64,

    /// How long a client may take to join a namespace after the Engine.IO handshake.
    #[arg(long, env = "CORRAL_CONNECT_TIMEOUT", default_value = "45s")]
    pub connect_timeout: humantime::Duration,

    /// Transports offered to clients, comma separated. `websocket` alone disables long-polling.
    #[arg(
        long,
        env = "CORRAL_TRANSPORTS",
        value_enum,
        value_delimiter = ',',
        default_value = "polling,websocket"
    )]
    pub transports: Vec<Transport>,

    /// Origin allowed to reach the node from a browser on another origin (repeatable, or comma
    /// separated in the environment; `*` allows any). Without it only same-origin pages connect.
    #[arg(
        long = "cors-origin",
        env = "CORRAL_CORS_ORIGIN",
        value_delimiter = ','
    )]
    pub cors_origins: Vec<String>,

    /// On SIGTERM/SIGINT: how long the node may take to hand its clients off and exit.
    #[arg(long, env = "CORRAL_DRAIN_TIMEOUT", default_value = "30s")]
    pub drain_timeout: humantime::Duration,

    /// On SIGTERM/SIGINT: how long the node keeps its clients while `/readyz` already says 503,
    /// so load balancers and gateways stop sending new sessions before the clients reconnect.
    /// Part of `--drain-timeout`, and must be shorter.
    #[arg(long, env = "CORRAL_DRAIN_GRACE", default_value = "0s")]
    pub drain_grace: humantime::Duration,

    /// Bytes of the read buffer each WebSocket connection allocates. Smaller saves memory per idle
    /// connection (1024 B costs ~4 KB less per session than socketioxide's 4096 B); larger saves
    /// system calls when most messages are bigger than the buffer.
    #[arg(long, env = "CORRAL_WS_READ_BUFFER_SIZE", default_value_t = 1024)]
    pub ws_read_buffer_size: usize,

    /// Packets that may queue for one client before emits to it fail (per-socket buffer). The
    /// queue grows in blocks of 32 packets as it fills (one block, ~5 KiB, from the start), so a
    /// deep limit costs an idle session nothing more.
    #[arg(long, env = "CORRAL_MAX_BUFFER_SIZE", default_value_t = 128)]
    pub max_buffer_size: usize,

    /// The cluster bus.
    #[command(flatten)]
    pub bus: BusConfig,

    /// The `socket.io-client` browser bundle served at `/assets/socket.io.min.js` for the chat page
    /// (installed by `npm ci`).
    #[arg(
        long,
        env = "CORRAL_CLIENT_BUNDLE",
        default_value = "node_modules/socket.io-client/dist/socket.io.min.js"
    )]
    pub client_bundle: PathBuf,
}

/// The built-in Socket.IO applications a node can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AppKind {
    /// The chat demo: rooms, nicknames, messages to the room, typing indicators.
    Chat,
    /// The bench protocol used by `corral loadtest` and the cross-node checks (`docs/loadtest.md`).
    Bench,
    /// The reference server of the Socket.IO v5 and Engine.IO v4 protocol test suites.
    Conformance,
    /// A test fixture that performs any cluster operation a client asks for; never expose it.
    ClusterCheck,
}

impl AppKind {
    /// Name used on the command line, in logs and in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            AppKind::Chat => "chat",
            AppKind::Bench => "bench",
            AppKind::Conformance => "conformance",
            AppKind::ClusterCheck => "cluster-check",
        }
    }
}

/// An Engine.IO transport a node can offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Transport {
    /// HTTP long-polling.
    Polling,
    /// WebSocket.
    Websocket,
}

/// Settings the protocol test suites require of their reference server; `--app conformance`
/// applies them over whatever the flags say.
pub mod conformance {
    use std::time::Duration;

    /// `pingInterval` of the reference server.
    pub const PING_INTERVAL: Duration = Duration::from_millis(300);
    /// `pingTimeout` of the reference server.
    pub const PING_TIMEOUT: Duration = Duration::from_millis(200);
    /// `maxPayload` of the reference server.
    pub const MAX_PAYLOAD: u64 = 1_000_000;
    /// `connectTimeout` of the reference server.
    pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(1000);
}

/// A configuration error found before anything starts.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// `--transports` was empty.
    #[error("--transports needs at least one of: polling, websocket")]
    NoTransport,
    /// `--path` does not start with `/` or is the root.
    #[error("--path must start with '/' and name a path below the root, got {0:?}")]
    BadPath(String),
    /// A timing flag was zero.
    #[error("{0} must be greater than zero")]
    ZeroDuration(&'static str),
    /// `--max-payload` is too small to carry a handshake or an event.
    #[error("--max-payload must be at least 1024 bytes, got {0}")]
    TinyPayload(u64),
    /// `--drain-grace` leaves no time to hand clients off.
    #[error("--drain-grace ({grace}) must be shorter than --drain-timeout ({timeout})")]
    GraceTooLong {
        /// The grace period.
        grace: humantime::Duration,
        /// The drain timeout.
        timeout: humantime::Duration,
    },
    /// Heartbeats too sparse for their timeout.
    #[error(
        "--heartbeat-timeout ({timeout}) must be longer than --heartbeat-interval ({interval})"
    )]
    HeartbeatTiming {
        /// The interval.
        interval: humantime::Duration,
        /// The timeout.
        timeout: humantime::Duration,
    },
    /// The subject prefix is not a valid NATS subject.
    #[error("--subject-prefix: {0}")]
    SubjectPrefix(#[from] corral_adapter_nats::subjects::PrefixError),
    /// A size flag was zero.
    #[error("{0} must be greater than zero")]
    ZeroSize(&'static str),
    /// A `--cors-origin` value is neither `*` nor an `scheme://host[:port]` origin.
    #[error("--cors-origin {0:?} is not an origin like https://example.com or *")]
    BadOrigin(String),
    /// `--bench-namespace` is not a namespace below the root, or the app cannot share.
    #[error(
        "--bench-namespace must be a namespace like /bench (not /, the app's), for the chat or bench app; got {0:?}"
    )]
    BenchNamespace(String),
}

impl Default for NodeConfig {
    fn default() -> Self {
        // Parse an empty command line with the environment switched off, so the defaults come
        // from the attributes above and nowhere else.
        #[derive(Parser)]
        struct Wrapper {
            #[command(flatten)]
            config: NodeConfig,
        }
        let cmd = Wrapper::command().mut_args(|arg| arg.env(None::<&str>));
        let matches = cmd
            .try_get_matches_from(["corral-node"])
            .unwrap_or_else(|err| panic!("node flag defaults must parse: {err}"));
        Wrapper::from_arg_matches(&matches)
            .unwrap_or_else(|err| panic!("node flag defaults must parse: {err}"))
            .config
    }
}

impl NodeConfig {
    /// Checks the values clap cannot check alone and applies the conformance overrides.
    pub fn validated(mut self) -> Result<Self, ConfigError> {
        self.transports.sort_by_key(|t| *t as u8);
        self.transports.dedup();
        if self.transports.is_empty() {
            return Err(ConfigError::NoTransport);
        }
        let path = self.path.trim_end_matches('/');
        if !path.starts_with('/') || path.is_empty() {
            return Err(ConfigError::BadPath(self.path));
        }
        self.path = path.to_owned();
        for (name, value) in [
            ("--ping-interval", *self.ping_interval),
            ("--ping-timeout", *self.ping_timeout),
            ("--connect-timeout", *self.connect_timeout),
        ] {
            if value.is_zero() {
                return Err(ConfigError::ZeroDuration(name));
            }
        }
        if *self.drain_grace >= *self.drain_timeout {
            return Err(ConfigError::GraceTooLong {
                grace: self.drain_grace,
                timeout: self.drain_timeout,
            });
        }
        let (interval, timeout, request) = self.bus.timings();
        if interval.is_zero() || request.is_zero() {
            return Err(ConfigError::ZeroDuration(
                "--heartbeat-interval and --request-timeout",
            ));
        }
        if timeout <= interval {
            return Err(ConfigError::HeartbeatTiming {
                interval: self.bus.heartbeat_interval,
                timeout: self.bus.heartbeat_timeout,
            });
        }
        corral_adapter_nats::subjects::Subjects::new(&self.bus.subject_prefix)?;
        if self.max_payload < 1024 {
            return Err(ConfigError::TinyPayload(self.max_payload));
        }
        for (name, value) in [
            ("--ws-read-buffer-size", self.ws_read_buffer_size),
            ("--max-buffer-size", self.max_buffer_size),
        ] {
            if value == 0 {
                return Err(ConfigError::ZeroSize(name));
            }
        }
        for origin in &self.cors_origins {
            if !is_origin(origin) {
                return Err(ConfigError::BadOrigin(origin.clone()));
            }
        }
        if self.bench_namespace.as_deref() == Some("") {
            self.bench_namespace = None;
        }
        if let Some(ns) = &self.bench_namespace {
            let well_formed = ns.len() > 1
                && ns.starts_with('/')
                && ns[1..]
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b));
            if !well_formed || !matches!(self.app, AppKind::Chat | AppKind::Bench) {
                return Err(ConfigError::BenchNamespace(ns.clone()));
            }
        }
        if self.app == AppKind::Conformance {
            self.ping_interval = conformance::PING_INTERVAL.into();
            self.ping_timeout = conformance::PING_TIMEOUT.into();
            self.max_payload = conformance::MAX_PAYLOAD;
            self.connect_timeout = conformance::CONNECT_TIMEOUT.into();
            self.cors_origins = vec!["*".to_owned()];
        }
        Ok(self)
    }

    /// The node id: the configured one, or `<hostname>-<port>` with the port the node actually
    /// listens on (`--listen` may ask for port 0).
    pub fn node_id(&self, bound_port: u16) -> NodeId {
        self.node_id
            .clone()
            .unwrap_or_else(|| NodeId::from_host(bound_port))
    }
}

/// `*` or `scheme://host[:port]` without a path: what browsers send in `Origin`.
fn is_origin(value: &str) -> bool {
    if value == "*" {
        return true;
    }
    let Some((scheme, rest)) = value.split_once("://") else {
        return false;
    };
    !scheme.is_empty()
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'-' || b == b'.')
        && !rest.is_empty()
        && !rest.contains(['/', '?', '#', ' '])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn defaults_come_from_the_flag_definitions() {
        let config = NodeConfig::default();
        assert_eq!(config.listen, "127.0.0.1:4001".parse().unwrap());
        assert_eq!(*config.ping_interval, Duration::from_secs(25));
        assert_eq!(*config.ping_timeout, Duration::from_secs(20));
        assert_eq!(*config.drain_timeout, Duration::from_secs(30));
        assert_eq!(
            config.transports,
            [Transport::Polling, Transport::Websocket]
        );
        assert!(config.cors_origins.is_empty());
        assert_eq!(config.app, AppKind::Chat);
    }

    #[test]
    fn conformance_applies_the_reference_timings() {
        let config = NodeConfig {
            app: AppKind::Conformance,
            ..NodeConfig::default()
        }
        .validated()
        .unwrap();
        assert_eq!(*config.ping_interval, Duration::from_millis(300));
        assert_eq!(*config.ping_timeout, Duration::from_millis(200));
        assert_eq!(config.max_payload, 1_000_000);
        assert_eq!(*config.connect_timeout, Duration::from_millis(1000));
        assert_eq!(config.cors_origins, ["*"]);
    }

    #[test]
    fn bad_values_are_refused_with_the_flag_name() {
        let err = NodeConfig {
            transports: vec![],
            ..NodeConfig::default()
        }
        .validated()
        .unwrap_err();
        assert!(err.to_string().contains("--transports"), "{err}");

        let err = NodeConfig {
            cors_origins: vec!["example.com/x".into()],
            ..NodeConfig::default()
        }
        .validated()
        .unwrap_err();
        assert!(err.to_string().contains("--cors-origin"), "{err}");

        let err = NodeConfig {
            path: "socket".into(),
            ..NodeConfig::default()
        }
        .validated()
        .unwrap_err();
        assert!(err.to_string().contains("--path"), "{err}");

        let err = NodeConfig {
            drain_grace: Duration::from_secs(30).into(),
            ..NodeConfig::default()
        }
        .validated()
        .unwrap_err();
        assert!(err.to_string().contains("--drain-grace"), "{err}");

        let bench_ns = |app, ns: &str| {
            NodeConfig {
                app,
                bench_namespace: Some(ns.into()),
                ..NodeConfig::default()
            }
            .validated()
            .map(|c| c.bench_namespace)
        };
        assert_eq!(
            bench_ns(AppKind::Chat, "/bench").unwrap().as_deref(),
            Some("/bench")
        );
        assert_eq!(bench_ns(AppKind::Chat, "").unwrap(), None);
        for (app, ns) in [
            (AppKind::Chat, "/"),
            (AppKind::Chat, "bench"),
            (AppKind::Chat, "/be nch"),
            (AppKind::Conformance, "/bench"),
        ] {
            let err = bench_ns(app, ns).unwrap_err();
            assert!(err.to_string().contains("--bench-namespace"), "{err}");
        }
    }

    /// `docs/node.md` carries the flag table rendered from the clap definitions above.
    #[test]
    fn docs_list_every_flag() {
        #[derive(Parser)]
        struct Wrapper {
            #[command(flatten)]
            config: NodeConfig,
        }
        let table = corral_adapter_nats::doc_tables::flags_markdown(&Wrapper::command());
        corral_adapter_nats::doc_tables::check(
            env!("CARGO_MANIFEST_DIR"),
            "docs/node.md",
            "node-flags",
            &table,
        );
    }

    #[test]
    fn origins_are_recognised() {
        assert!(is_origin("*"));
        assert!(is_origin("http://localhost:3000"));
        assert!(is_origin("https://chat.example.com"));
        assert!(!is_origin("chat.example.com"));
        assert!(!is_origin("https://chat.example.com/path"));
        assert!(!is_origin("https://"));
    }
}
