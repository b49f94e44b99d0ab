//! # corral-gateway
//!
//! The front door of a Corral cluster: a reverse proxy that sends every request of an
//! Engine.IO session to the node that holds it — by a signed session token, so any replica
//! routes any request with no shared state — and spreads new sessions over the nodes by an
//! affinity cookie, a consistent hash of the client's address, or load. WebSocket upgrades are
//! tunnelled byte for byte.
//!
//! ```no_run
//! use clap::Parser;
//! use corral_gateway::{Gateway, GatewayConfig};
//!
//! #[derive(Parser)]
//! struct Cli {
//!     #[command(flatten)]
//!     gateway: GatewayConfig,
//! }
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let cli = Cli::parse_from(["gw", "--node", "node-1=http://127.0.0.1:4001"]);
//! let gateway = Gateway::bind(cli.gateway).await?;
//! gateway.run(async { tokio::signal::ctrl_c().await.ok(); }).await;
//! # Ok(())
//! # }
//! ```
//!
//! Modules: [`route`] decides (policy), [`proxy`] forwards (mechanism), [`ring`] and [`token`]
//! are the two pieces routing rests on, [`nodes`] keeps the node table current, [`admin`] serves
//! the admin listener. `docs/gateway.md` explains the rules and flags.

pub mod admin;
pub mod config;
pub mod metrics;
pub mod nodes;
pub mod proxy;
pub mod ring;
pub mod route;
mod server;
pub mod token;

pub use config::GatewayConfig;
pub use server::{Gateway, GatewayError};
