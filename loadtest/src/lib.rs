//! # corral-loadtest
//!
//! `corral loadtest`: a load tester for any Socket.IO server that speaks the bench protocol
//! (`docs/loadtest.md`). A lean Socket.IO v5 / Engine.IO v4 client holds many sessions from one
//! process (polling, WebSocket, or the upgrade between them); scenarios drive them and record
//! connect times, latencies, throughput and delivery completeness into a [`report::Report`].

pub mod cli;
pub mod client;
pub mod measure;
pub mod report;
mod run;
pub mod settings;

pub use run::{rss_of, run};
