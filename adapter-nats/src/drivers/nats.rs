//! The production driver: NATS through `async-nats`.
//!
//! The connection is made in the background and kept forever (exponential backoff up to 4 s
//! between attempts), so a node starts and serves its local clients even while NATS is down;
//! [`Driver::status`] says when the bus is reachable, and publishing while it is not fails at
//! once instead of queueing without bound.

use std::{path::PathBuf, time::Duration};

use async_nats::{Client, ConnectOptions, Event, connection::State};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::watch;

use crate::driver::{BusMessage, BusStatus, Driver, Subscription, subscription};

/// How to reach and authenticate to NATS.
#[derive(Debug, Clone, Default)]
pub struct NatsConfig {
    /// Server URLs (`nats://host:4222`, `tls://…`); the client fails over between them.
    pub servers: Vec<String>,
    /// User name, with `password`.
    pub user: Option<String>,
    /// Password, with `user`.
    pub password: Option<String>,
    /// Authentication token.
    pub token: Option<String>,
    /// A `.creds` file (JWT and NKey seed), as `nsc` produces.
    pub credentials_file: Option<PathBuf>,
    /// An NKey seed (`SU…`) to sign the server's nonce with.
    pub nkey_seed: Option<String>,
    /// CA certificate (PEM) to verify the servers with.
    pub tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS, with `tls_key`.
    pub tls_cert: Option<PathBuf>,
    /// Client key (PEM) for mutual TLS, with `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Refuse plain-text connections.
    pub require_tls: bool,
    /// Connection name shown by `nats server report connections`.
    pub name: Option<String>,
}

/// How to reach and authenticate to NATS: shared by `corral node` and `corral emit`.
#[derive(Debug, Clone, clap::Args)]
pub struct NatsArgs {
    /// NATS server URL (repeatable, or comma separated); the client fails over between them.
    #[arg(
        long = "nats",
        env = "CORRAL_NATS",
        value_delimiter = ',',
        default_value = "nats://127.0.0.1:4222"
    )]
    pub nats_servers: Vec<String>,

    /// NATS user name (with `--nats-password`).
    #[arg(long, env = "CORRAL_NATS_USER")]
    pub nats_user: Option<String>,

    /// NATS password (prefer the environment variable to a flag visible in `ps`).
    #[arg(long, env = "CORRAL_NATS_PASSWORD", hide_env_values = true)]
    pub nats_password: Option<String>,

    /// NATS authentication token (prefer the environment variable).
    #[arg(long, env = "CORRAL_NATS_TOKEN", hide_env_values = true)]
    pub nats_token: Option<String>,

    /// NATS credentials file (`.creds`, JWT and NKey seed, as `nsc` writes it).
    #[arg(long, env = "CORRAL_NATS_CREDS")]
    pub nats_creds: Option<PathBuf>,

    /// File holding an NKey seed (`SU…`) to authenticate with.
    #[arg(long, env = "CORRAL_NATS_NKEY")]
    pub nats_nkey: Option<PathBuf>,

    /// CA certificate (PEM) that signed the NATS servers' certificates.
    #[arg(long, env = "CORRAL_NATS_TLS_CA")]
    pub nats_tls_ca: Option<PathBuf>,

    /// Client certificate (PEM) for mutual TLS with NATS (with `--nats-tls-key`).
    #[arg(long, env = "CORRAL_NATS_TLS_CERT")]
    pub nats_tls_cert: Option<PathBuf>,

    /// Client key (PEM) for mutual TLS with NATS (with `--nats-tls-cert`).
    #[arg(long, env = "CORRAL_NATS_TLS_KEY")]
    pub nats_tls_key: Option<PathBuf>,

    /// Refuse to talk to NATS without TLS.
    #[arg(long, env = "CORRAL_NATS_REQUIRE_TLS")]
    pub nats_require_tls: bool,
}

impl NatsArgs {
    /// The connection settings for NATS; `name` shows in the server's connection list.
    pub fn to_config(&self, name: String) -> Result<NatsConfig, NatsError> {
        let nkey_seed = match &self.nats_nkey {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .map_err(|source| NatsError::NkeyFile {
                        path: path.clone(),
                        source,
                    })?
                    .trim()
                    .to_owned(),
            ),
            None => None,
        };
        Ok(NatsConfig {
            servers: self.nats_servers.clone(),
            user: self.nats_user.clone(),
            password: self.nats_password.clone(),
            token: self.nats_token.clone(),
            credentials_file: self.nats_creds.clone(),
            nkey_seed,
            tls_ca: self.nats_tls_ca.clone(),
            tls_cert: self.nats_tls_cert.clone(),
            tls_key: self.nats_tls_key.clone(),
            require_tls: self.nats_require_tls,
            name: Some(name),
        })
    }
}

/// Why a NATS connection could not be set up or used.
#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    /// The configuration is incomplete or contradictory.
    #[error("NATS configuration: {0}")]
    Config(String),
    /// The credentials file could not be read.
    #[error("NATS credentials file {path}: {source}")]
    Credentials {
        /// The file.
        path: PathBuf,
        /// What the OS or the parser said.
        source: std::io::Error,
    },
    /// The NKey seed file could not be read.
    #[error("--nats-nkey {path}: {source}")]
    NkeyFile {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The client could not be created.
    #[error("NATS connect: {0}")]
    Connect(#[from] async_nats::ConnectError),
    /// NATS is unreachable right now; the driver keeps reconnecting.
    #[error("NATS is disconnected; the message was not sent")]
    Disconnected,
    /// The message is over the server's `max_payload`.
    #[error("message of {size} bytes is over the NATS max_payload of {max} bytes")]
    TooLarge {
        /// Size of the message.
        size: usize,
        /// The server's limit.
        max: usize,
    },
    /// Publishing failed.
    #[error("NATS publish: {0}")]
    Publish(#[from] async_nats::PublishError),
    /// Flushing failed.
    #[error("NATS flush: {0}")]
    Flush(String),
    /// Subscribing failed.
    #[error("NATS subscribe: {0}")]
    Subscribe(#[from] async_nats::SubscribeError),
}

/// A NATS connection shared by every clone.
#[derive(Clone, Debug)]
pub struct NatsDriver {
    client: Client,
    status: watch::Receiver<BusStatus>,
}

impl NatsDriver {
    /// Starts connecting to NATS and returns at once; the connection comes up (and comes back
    /// after failures) in the background.
    pub async fn connect(config: NatsConfig) -> Result<NatsDriver, NatsError> {
        if config.servers.is_empty() {
            return Err(NatsError::Config(
                "at least one server URL is needed".into(),
            ));
        }
        if config.user.is_some() != config.password.is_some() {
            return Err(NatsError::Config("user and password go together".into()));
        }
        if config.tls_cert.is_some() != config.tls_key.is_some() {
            return Err(NatsError::Config(
                "a TLS client certificate needs its key, and the other way round".into(),
            ));
        }
        let (status_tx, status) = watch::channel(BusStatus::Disconnected);
        let mut options = match &config.credentials_file {
            Some(path) => ConnectOptions::with_credentials_file(path)
                .await
                .map_err(|source| NatsError::Credentials {
                    path: path.clone(),
                    source,
                })?,
            None => ConnectOptions::new(),
        };
        if let (Some(user), Some(password)) = (&config.user, &config.password) {
            options = options.user_and_password(user.clone(), password.clone());
        }
        if let Some(token) = &config.token {
            options = options.token(token.clone());
        }
        if let Some(seed) = &config.nkey_seed {
            options = options.nkey(seed.clone());
        }
        if let Some(ca) = &config.tls_ca {
            options = options.add_root_certificates(ca.clone());
        }
        if let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        if config.require_tls {
            options = options.require_tls(true);
        }
        if let Some(name) = &config.name {
            options = options.name(name);
        }
        let events = status_tx.clone();
        let options = options
            // A node hears its own messages through its local adapter already.
            .no_echo()
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connection_timeout(Duration::from_secs(5))
            .event_callback(move |event| {
                let events = events.clone();
                async move {
                    match event {
                        Event::Connected => {
                            tracing::info!("NATS connected");
                            events.send_replace(BusStatus::Connected);
                        }
                        Event::Disconnected | Event::Closed => {
                            tracing::warn!("NATS {event}; reconnecting in the background");
                            events.send_replace(BusStatus::Disconnected);
                        }
                        Event::SlowConsumer(_) => {
                            tracing::warn!("NATS {event}: messages were dropped")
                        }
                        // Every failed reconnect attempt: the state changes above tell the story.
                        Event::ClientError(err) => tracing::debug!("NATS client error: {err}"),
                        other => tracing::info!("NATS {other}"),
                    }
                }
            });
        let client = options.connect(config.servers.clone()).await?;
        if client.connection_state() == State::Connected {
            status_tx.send_replace(BusStatus::Connected);
        }
        Ok(NatsDriver { client, status })
    }

    /// The underlying client.
    pub fn client(&self) -> &Client {
        &self.client
    }
}

impl Driver for NatsDriver {
    type Error = NatsError;

    async fn publish(&self, subject: String, payload: Bytes) -> Result<(), NatsError> {
        self.publish_with_headers(subject, Vec::new(), payload)
            .await
    }

    async fn publish_with_headers(
        &self,
        subject: String,
        headers: crate::trace::Headers,
        payload: Bytes,
    ) -> Result<(), NatsError> {
        // Queued publishes would wait without bound while NATS is away; refuse instead.
        if *self.status.borrow() != BusStatus::Connected {
            return Err(NatsError::Disconnected);
        }
        let max = self.client.max_payload();
        if payload.len() > max {
            return Err(NatsError::TooLarge {
                size: payload.len(),
                max,
            });
        }
        if headers.is_empty() {
            self.client.publish(subject, payload).await?;
        } else {
            let mut map = async_nats::HeaderMap::new();
            for (name, value) in &headers {
                map.insert(name.as_str(), value.as_str());
            }
            self.client
                .publish_with_headers(subject, map, payload)
                .await?;
        }
        Ok(())
    }

    async fn subscribe(&self, pattern: String) -> Result<Subscription, NatsError> {
        let subscriber = self.client.subscribe(pattern).await?;
        Ok(subscription(subscriber.map(|message| {
            BusMessage {
                subject: message.subject.to_string(),
                payload: message.payload,
                headers: message
                    .headers
                    .map(|h| {
                        h.iter()
                            .filter_map(|(name, values)| {
                                Some((name.to_string(), values.first()?.as_str().to_owned()))
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
            }
        })))
    }

    fn max_payload(&self) -> usize {
        self.client.max_payload()
    }

    fn status(&self) -> watch::Receiver<BusStatus> {
        self.status.clone()
    }

    async fn flush(&self) -> Result<(), NatsError> {
        self.client
            .flush()
            .await
            .map_err(|e| NatsError::Flush(e.to_string()))
    }
}
