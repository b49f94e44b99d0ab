//! # corral-adapter-nats
//!
//! Share rooms and broadcasts between Socket.IO nodes. [`ClusterAdapter`] is a socketioxide
//! adapter: with it, `io.to("room").emit(…)` on one node reaches the room's sockets on every
//! node, and `fetch_sockets`, `rooms`, acks, `join`/`leave` of remote sockets and
//! `disconnect` work across the cluster as they would on one server.
//!
//! The cluster logic ([`Cluster`]: requests, responses, membership, server-to-server events)
//! is written once over a small [`Driver`] trait — publish, subscribe — with two drivers here:
//! [`NatsDriver`] for production and [`MemoryDriver`] for several nodes in one process.
//!
//! ```no_run
//! use corral_adapter_nats::{AdapterMetrics, Cluster, ClusterAdapter, ClusterConfig, MemoryBus};
//! use socketioxide::{SocketIo, SocketIoConfig, adapter::Emitter, extract::SocketRef};
//! use socketioxide_core::{Uid, adapter::Spawnable};
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let bus = MemoryBus::new(); // or NatsDriver::connect(config).await?
//! let uid = Uid::new();
//! let cluster = Cluster::start(
//!     bus.driver(),
//!     ClusterConfig::new(uid, "node-1", "127.0.0.1:4001"),
//!     AdapterMetrics::unregistered(),
//! )
//! .await?;
//! let mut config = SocketIoConfig::default();
//! config.server_id = uid; // the adapter and socketioxide must agree on the server id
//! let (_svc, io) = SocketIo::builder()
//!     .with_config(config)
//!     .with_adapter::<ClusterAdapter<Emitter, _>>(cluster)
//!     .build_svc();
//! io.ns("/", async |socket: SocketRef<ClusterAdapter<Emitter, _>>| {
//!     socket.join("lobby");
//! })
//! .spawn();
//! # Ok(())
//! # }
//! ```
//!
//! Subjects are laid out in [`subjects`]; `docs/custom-adapter.md` explains the wire format and
//! how to write a driver for another bus.

mod adapter;
mod cluster;
#[doc(hidden)]
pub mod doc_tables;
pub mod driver;
pub mod drivers;
mod emitter;
pub mod membership;
pub mod metrics;
mod server_events;
pub mod subjects;
pub mod trace;

pub use adapter::{ClusterAdapter, ClusterInit};
/// The payload type of [`Driver`], re-exported so drivers need no `bytes` dependency of their own.
pub use bytes::Bytes;
pub use cluster::{
    Cluster, ClusterConfig, ClusterError, ConnectionCounter, DEFAULT_HEARTBEAT_INTERVAL,
    DEFAULT_HEARTBEAT_TIMEOUT, DEFAULT_PREFIX, DEFAULT_REQUEST_TIMEOUT, Gathered,
};
pub use driver::{BusMessage, BusStatus, Driver, DynDriver, Subscription};
pub use drivers::{
    memory::{MemoryBus, MemoryDriver},
    nats::{NatsArgs, NatsConfig, NatsDriver, NatsError},
};
pub use emitter::{Emit, EmitError, Emitter};
pub use membership::{MemberWatch, NodeInfo, NodeState};
pub use metrics::AdapterMetrics;
pub use server_events::{ServerAnswers, ServerEvent};
