//! What a load test found: the [`Report`] every scenario fills in, and what is done with it —
//! the final table, JSON (`--json`), plots (`--plot`), comparisons (`corral loadtest compare`)
//! and threshold checks (`--assert`).
//!
//! The report is plain data (serde): the JSON file is the report, and `compare` reads two of
//! them back. Times are milliseconds, rates per second, sizes bytes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

mod assert;
mod compare;
mod figures;
mod fill;
mod format;
mod json;
mod plot;
mod table;
#[cfg(test)]
mod testdata;

pub use assert::{AssertError, Assertion, AssertionFailure, Op, parse_assertions};
pub use compare::compare;
pub use figures::{
    Figure, Unit, figures_markdown, known_names as figure_names, resolve as resolve_figure,
};
pub use json::ReportError;
pub use plot::{FONT_CANDIDATES, FONT_ENV, PlotFormat};

/// Format version of the JSON report; bump when a field changes meaning.
pub const REPORT_VERSION: u32 = 1;

/// Everything a run measured.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// [`REPORT_VERSION`].
    pub version: u32,
    /// Scenario name (`connect`, `chat`, `broadcast`, `echo`, `reconnect-storm`).
    pub scenario: String,
    /// The scenario's resolved settings (URLs, sessions, rates, transport mix, …), as given.
    pub settings: serde_json::Value,
    /// When the run started, milliseconds since the Unix epoch.
    pub started_at_ms: u64,
    /// How long the measured part lasted, in seconds.
    pub duration_s: f64,
    /// Sessions: wanted, made, failed.
    pub sessions: SessionStats,
    /// Time to a connected Socket.IO session (handshake and namespace CONNECT).
    pub connect_ms: Option<Latency>,
    /// The scenario's main latency: end-to-end delivery (chat, broadcast), ack round trip
    /// (echo), or time until every session is back (reconnect-storm: one sample per session).
    pub latency_ms: Option<Latency>,
    /// Messages: expected, received, lost, duplicated, out of order.
    pub deliveries: Option<Deliveries>,
    /// Server memory, when `--server-pid` was given.
    pub server_memory: Option<ServerMemory>,
    /// What each `--at … --run …` fault cost.
    pub faults: Vec<Fault>,
    /// One sample per second of the run.
    pub timeline: Vec<Sample>,
    /// How busy the load generator itself was.
    pub tester: TesterLoad,
    /// Anything that makes the numbers less trustworthy, in words.
    pub warnings: Vec<String>,
}

/// Sessions of a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SessionStats {
    /// Sessions the scenario wanted.
    pub target: u64,
    /// Sessions that connected at least once.
    pub connected: u64,
    /// Connection failures by kind (`refused`, `timeout`, `http_4xx`, `http_5xx`,
    /// `session_unknown`, `protocol`, …).
    pub failed: BTreeMap<String, u64>,
    /// Sessions that lost their connection during the run.
    pub dropped: u64,
    /// Dropped sessions that connected again.
    pub reconnected: u64,
    /// Sessions by the transport they ended on (`polling`, `websocket`).
    pub by_transport: BTreeMap<String, u64>,
    /// Sessions by the node that greeted them last (the bench protocol's `hello`), when the
    /// run ended: how a gateway spread them.
    #[serde(default)]
    pub by_node: BTreeMap<String, u64>,
}

/// A latency distribution, in milliseconds (from an HDR histogram).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// Samples.
    pub count: u64,
    /// Smallest.
    pub min: f64,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest.
    pub max: f64,
    /// `(percentile, value)` points of the whole distribution, for plots.
    pub distribution: Vec<(f64, f64)>,
}

/// Message accounting of a publishing scenario.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Deliveries {
    /// Deliveries the protocol promises (each message × the room members, sender included).
    pub expected: u64,
    /// Distinct deliveries received.
    pub received: u64,
    /// Deliveries received more than once (counted once in `received`).
    pub duplicates: u64,
    /// Deliveries that arrived before an earlier message of the same sender.
    pub out_of_order: u64,
    /// `expected - received`.
    pub lost: u64,
    /// `received / expected`; 0 when nothing was expected: a run that delivered nothing
    /// proves nothing, so `completeness>=100%` must not pass on it.
    pub completeness: f64,
    /// Received deliveries per second over the run.
    pub per_second: f64,
    /// Messages published.
    pub published: u64,
    /// chat, broadcast: sessions in their room before the measured part began that never lost
    /// their connection.
    #[serde(default)]
    pub steady_sessions: u64,
    /// chat, broadcast: deliveries lost between steady sessions (both sender and receiver
    /// steady): what a fault cost the clients it did not touch; 0 on a sound cluster.
    #[serde(default)]
    pub steady_lost: u64,
}

/// Server memory before and after the sessions connected.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServerMemory {
    /// The process measured.
    pub pid: u32,
    /// Resident memory before, bytes.
    pub rss_before: u64,
    /// Resident memory with every session connected, bytes.
    pub rss_after: u64,
    /// `(rss_after - rss_before) / sessions`.
    pub per_session: f64,
}

/// A command run mid-test and what it cost.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Fault {
    /// When it ran, seconds into the run.
    pub at_s: f64,
    /// The command.
    pub command: String,
    /// Its exit code (`None` if it could not run or was killed).
    pub exit_code: Option<i32>,
    /// Sessions that lost their connection after it.
    pub sessions_lost: u64,
    /// Of those, sessions that connected again (possibly to another node).
    pub sessions_rehomed: u64,
    /// Seconds from the fault until every lost session that came back was back.
    pub recovery_s: Option<f64>,
    /// Deliveries lost in the window the fault opened.
    pub messages_lost: u64,
}

/// One second of the run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Seconds since the start.
    pub t_s: f64,
    /// Connected sessions.
    pub sessions: u64,
    /// Deliveries (or acks) in this second.
    pub per_second: f64,
    /// p50 latency of this second, ms.
    pub p50_ms: f64,
    /// p99 latency of this second, ms.
    pub p99_ms: f64,
}

/// The load generator's own CPU use.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TesterLoad {
    /// CPU used over the run, as a share of all cores (0–100).
    pub cpu_percent: f64,
    /// Cores available.
    pub cores: u32,
    /// True when the tester was near saturation: the numbers may describe the tester.
    pub saturated: bool,
}
