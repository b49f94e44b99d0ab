//! The node's message bus: which [`Driver`](corral_adapter_nats::Driver) the cluster adapter runs on, chosen by `--adapter`,
//! and the flags of the NATS connection.

use std::time::Duration;

use clap::{Args, ValueEnum};
pub use corral_adapter_nats::NatsArgs;
use corral_adapter_nats::{
    DEFAULT_PREFIX, DynDriver, EmitError, Emitter, MemoryBus, NatsDriver, NatsError,
    subjects::PrefixError,
};

/// Which bus the nodes of a cluster share.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AdapterKind {
    /// No broker: this node alone (or several nodes in one process, embedded).
    Memory,
    /// NATS: nodes in any number of processes and hosts.
    Nats,
}

/// Flags of the cluster bus.
#[derive(Debug, Clone, Args)]
pub struct BusConfig {
    /// Bus that shares rooms and broadcasts with the other nodes: `memory` runs this node alone,
    /// `nats` joins the cluster on `--nats`.
    #[arg(long, env = "CORRAL_ADAPTER", value_enum, default_value_t = AdapterKind::Memory)]
    pub adapter: AdapterKind,

    /// How to reach NATS.
    #[command(flatten)]
    pub nats: NatsArgs,

    /// First token(s) of every subject, so several apps can share one NATS.
    #[arg(long, env = "CORRAL_SUBJECT_PREFIX", default_value = DEFAULT_PREFIX)]
    pub subject_prefix: String,

    /// How often the node announces itself to the cluster.
    #[arg(long, env = "CORRAL_HEARTBEAT_INTERVAL", default_value = "1s")]
    pub heartbeat_interval: humantime::Duration,

    /// How long a node that stopped announcing itself stays in the cluster (a node killed
    /// without goodbye is forgotten after this).
    #[arg(long, env = "CORRAL_HEARTBEAT_TIMEOUT", default_value = "2500ms")]
    pub heartbeat_timeout: humantime::Duration,

    /// How long cluster requests (`fetch_sockets`, `rooms`, server events) wait for answers.
    #[arg(long, env = "CORRAL_REQUEST_TIMEOUT", default_value = "5s")]
    pub request_timeout: humantime::Duration,

    /// Address other nodes and gateways use to reach this node (`host:port`). Defaults to
    /// `--listen`, with the hostname in place of an unspecified IP.
    #[arg(long, env = "CORRAL_ADVERTISE_ADDRESS")]
    pub advertise_address: Option<String>,
}

/// Why the bus could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// NATS refused the configuration.
    #[error(transparent)]
    Nats(#[from] NatsError),
}

impl BusConfig {
    /// Connects the bus chosen by `--adapter`. NATS connects in the background: this returns
    /// at once, and the node serves its own clients until NATS is reachable.
    pub async fn connect(&self, node_id: &str) -> Result<DynDriver, BusError> {
        Ok(match self.adapter {
            AdapterKind::Memory => DynDriver::new(MemoryBus::new().driver()),
            AdapterKind::Nats => {
                let config = self.nats.to_config(format!("corral-node {node_id}"))?;
                DynDriver::new(NatsDriver::connect(config).await?)
            }
        })
    }

    /// Heartbeat interval, heartbeat timeout and request timeout.
    pub fn timings(&self) -> (Duration, Duration, Duration) {
        (
            *self.heartbeat_interval,
            *self.heartbeat_timeout,
            *self.request_timeout,
        )
    }
}

/// `corral emit`: publish one event to the rooms of a cluster through NATS.
#[derive(Debug, Clone, Args)]
pub struct EmitConfig {
    /// How to reach NATS.
    #[command(flatten)]
    pub nats: NatsArgs,

    /// Subject prefix of the cluster (as the nodes' `--subject-prefix`).
    #[arg(long, env = "CORRAL_SUBJECT_PREFIX", default_value = DEFAULT_PREFIX)]
    pub subject_prefix: String,

    /// Namespace to emit in.
    #[arg(long, default_value = "/")]
    pub namespace: String,

    /// Room to emit to (repeatable: sockets in any of them); none means every socket.
    #[arg(long = "room")]
    pub rooms: Vec<String>,

    /// Room whose sockets are left out (repeatable).
    #[arg(long = "except")]
    pub except: Vec<String>,

    /// How long to wait for NATS before giving up.
    #[arg(long, default_value = "5s")]
    pub connect_timeout: humantime::Duration,

    /// Event name.
    pub event: String,

    /// The event's data as JSON (a JSON array sends several arguments only if you pass
    /// `--spread`).
    pub data: String,

    /// Send the elements of a JSON array as separate arguments.
    #[arg(long)]
    pub spread: bool,
}

/// Why `corral emit` failed.
#[derive(Debug, thiserror::Error)]
pub enum EmitFailure {
    /// The data is not JSON.
    #[error("the data is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// `--spread` with something else than an array.
    #[error("--spread needs a JSON array")]
    NotAnArray,
    /// The bus could not be reached.
    #[error(transparent)]
    Bus(#[from] BusError),
    /// NATS was not reachable in time.
    #[error("NATS not reachable within {0}")]
    Unreachable(humantime::Duration),
    /// The subject prefix is invalid.
    #[error("--subject-prefix: {0}")]
    Prefix(#[from] PrefixError),
    /// The emit was refused.
    #[error(transparent)]
    Emit(#[from] EmitError),
}

impl EmitConfig {
    /// Connects, publishes the event once, and returns.
    pub async fn run(&self) -> Result<(), EmitFailure> {
        let data: serde_json::Value = serde_json::from_str(&self.data)?;
        if self.spread && !data.is_array() {
            return Err(EmitFailure::NotAnArray);
        }
        let driver = NatsDriver::connect(
            self.nats
                .to_config("corral emit".into())
                .map_err(BusError::from)?,
        )
        .await
        .map_err(BusError::from)?;
        let emitter = Emitter::new(driver, &self.subject_prefix).map_err(EmitError::from)?;
        if !emitter.wait_connected(*self.connect_timeout).await {
            return Err(EmitFailure::Unreachable(self.connect_timeout));
        }
        let mut emit = emitter.of(self.namespace.clone());
        for room in &self.rooms {
            emit = emit.to(room.clone());
        }
        for room in &self.except {
            emit = emit.except(room.clone());
        }
        match (self.spread, data) {
            (true, serde_json::Value::Array(args)) => emit.emit(&self.event, &Spread(args)).await?,
            (true, _) => return Err(EmitFailure::NotAnArray),
            (false, data) => emit.emit(&self.event, &data).await?,
        }
        // Publishes are buffered by the client: make sure this one left before exiting.
        emitter.flush().await.map_err(EmitError::from)?;
        Ok(())
    }
}

/// Several arguments: socketioxide sends a tuple-like value as separate arguments.
struct Spread(Vec<serde_json::Value>);

impl serde::Serialize for Spread {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        let mut tuple = serializer.serialize_tuple(self.0.len())?;
        for value in &self.0 {
            tuple.serialize_element(value)?;
        }
        tuple.end()
    }
}
