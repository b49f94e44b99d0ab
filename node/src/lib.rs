//! # corral-node
//!
//! The worker of a Corral cluster: a Socket.IO v5 / Engine.IO v4 server on
//! [socketioxide](https://docs.rs/socketioxide) with what production needs around it —
//! a stable node identity, `/healthz`, `/readyz`, Prometheus `/metrics`, and a graceful drain
//! that hands every client off (they reconnect) before the process exits.
//!
//! A node runs one of the built-in apps ([`AppKind`]: the chat demo, the bench protocol of the
//! load tester, the protocol conformance server) or your own handlers:
//!
//! ```no_run
//! use corral_node::{Node, NodeAdapter, NodeConfig};
//! use socketioxide::extract::{Data, SocketRef};
//! use socketioxide_core::adapter::Spawnable;
//!
//! # async fn example() -> Result<(), corral_node::NodeError> {
//! let config = NodeConfig { listen: "127.0.0.1:0".parse().unwrap(), ..NodeConfig::default() };
//! let node = Node::builder(config)
//!     .handlers(|io, ctx| {
//!         let ctx = ctx.clone();
//!         io.ns("/", move |socket: SocketRef<NodeAdapter>| {
//!             ctx.on_disconnect(&socket, |_, reason| async move { println!("left: {reason}") });
//!             socket.on("ping", |socket: SocketRef<NodeAdapter>, Data(n): Data<u32>| async move {
//!                 socket.emit("pong", &n).ok();
//!             });
//!             async {}
//!         })
//!         .spawn();
//!     })
//!     .bind()
//!     .await?;
//! node.run(async { tokio::signal::ctrl_c().await.ok(); }).await;
//! # Ok(())
//! # }
//! ```
//!
//! Flags, endpoints and the drain are described in `docs/node.md`; metrics in `docs/metrics.md`.

mod apps;
pub mod bus;
pub mod config;
mod context;
mod http;
pub mod identity;
pub mod metrics;
mod server;
mod session;

pub use config::{AppKind, NodeConfig, Transport};
pub use context::NodeContext;
pub use identity::NodeId;
pub use metrics::NodeMetrics;
pub use server::{Io, Node, NodeAdapter, NodeBuilder, NodeError};
