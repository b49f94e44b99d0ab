//! What a run is asked to do: the scenario flags ([`RunArgs`], from the command line or a TOML
//! scenario file) and the resolved [`Settings`] with every default filled in.
//!
//! A scenario file holds the same keys as the flags, spelled the same way, plus `scenario`
//! and `[[fault]]` tables:
//!
//! ```toml
//! scenario = "chat"
//! url = ["http://127.0.0.1:3000"]
//! sessions = 500
//! rooms = 50
//! duration = "30s"
//! message-rate = 2
//! transport-mix = "polling=20,upgrade=50,websocket=30"
//! assert = "p99<100ms,completeness>=100%"
//!
//! [[fault]]
//! at = "10s"
//! run = "kill -TERM $(cat /tmp/node-2.pid)"
//! ```

use std::{fmt, path::PathBuf, str::FromStr, time::Duration};

use clap::ValueEnum;
use serde::{Deserialize, Deserializer, Serialize};

use crate::client::{SourceIps, Target, TransportMix};
use crate::report::{Assertion, parse_assertions};

/// The scenarios.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// Ramp to N sessions, hold them, report connect times and failures.
    Connect,
    /// Rooms of members that all publish at a fixed rate; end-to-end latency and completeness.
    Chat,
    /// One publisher, one room of N: fan-out latency to the last receiver.
    Broadcast,
    /// Ack round trips (`echo`) at a fixed rate per session.
    Echo,
    /// Drop every session at once and measure the time until all are back.
    ReconnectStorm,
}

impl Scenario {
    /// The name used on the command line, in files and in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Scenario::Connect => "connect",
            Scenario::Chat => "chat",
            Scenario::Broadcast => "broadcast",
            Scenario::Echo => "echo",
            Scenario::ReconnectStorm => "reconnect-storm",
        }
    }

    /// Whether the scenario publishes messages (and so has deliveries to account for).
    pub fn publishes(self) -> bool {
        matches!(self, Scenario::Chat | Scenario::Broadcast | Scenario::Echo)
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A command to run mid-test (`--at 30s --run 'CMD'`, or a `[[fault]]` table).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultSpec {
    /// When, from the start of the run (the first connection attempt).
    #[serde(deserialize_with = "de_duration", serialize_with = "ser_duration")]
    pub at: Duration,
    /// The command, run with `sh -c`.
    pub run: String,
}

/// The flags of a scenario. Every one is optional: what is not given comes from the scenario
/// file, then from the scenario's defaults (see [`Settings::resolve`]).
#[derive(Debug, Clone, Default, clap::Args, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct RunArgs {
    /// Server to load: a node or a gateway, `http://HOST:PORT`. Repeat it to spread sessions
    /// over several servers (session i goes to URL i mod N). Default http://127.0.0.1:3000 (the
    /// gateway of `corral up --app bench`).
    #[arg(long = "url", value_name = "URL")]
    #[serde(deserialize_with = "de_one_or_many")]
    pub url: Vec<String>,

    /// Sessions to open. Defaults: connect 1000, chat 100, broadcast 100, echo 10,
    /// reconnect-storm 500.
    #[arg(long, value_name = "N")]
    pub sessions: Option<u64>,

    /// How long the measured part lasts: the hold (connect), the publishing (chat, broadcast,
    /// echo), or the longest wait for sessions to come back (reconnect-storm). Default 10s.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    #[serde(deserialize_with = "de_opt_duration")]
    pub duration: Option<Duration>,

    /// New sessions per second while ramping up. Default 200.
    #[arg(long, value_name = "PER_SECOND")]
    pub rate: Option<f64>,

    /// Transports, as weights: `websocket`, `polling`, `upgrade` (polling then WebSocket, like
    /// a browser), or a mix such as `polling=20,upgrade=50,websocket=30`. Default websocket.
    #[arg(long, value_name = "MIX")]
    pub transport_mix: Option<String>,

    /// Local addresses to connect from, spread round-robin over sessions:
    /// `127.0.0.2-127.0.0.20,127.0.1.1`. Exercises address-based affinity from one machine and
    /// gives more than one address's ephemeral ports.
    #[arg(long, value_name = "ADDRS")]
    pub source_ip: Option<String>,

    /// Engine.IO path of the server. Default /socket.io/.
    #[arg(long, value_name = "PATH")]
    pub path: Option<String>,

    /// Socket.IO namespace. Default /.
    #[arg(long, value_name = "NS")]
    pub namespace: Option<String>,

    /// chat: rooms the sessions are spread over (session i joins room i mod R). Default one room
    /// per 10 sessions.
    #[arg(long, value_name = "R")]
    pub rooms: Option<u64>,

    /// Messages per second of each publisher (chat: every session; broadcast: the one
    /// publisher; echo: every session). Defaults: chat 1, broadcast 10, echo 10.
    #[arg(long, value_name = "PER_SECOND")]
    pub message_rate: Option<f64>,

    /// Bytes of padding added to every message (on top of its sequence number and
    /// timestamps). Default 0.
    #[arg(long, value_name = "BYTES")]
    pub payload_size: Option<usize>,

    /// How long to wait, after the last message was sent, for deliveries still in flight.
    /// Default 3s.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    #[serde(deserialize_with = "de_opt_duration")]
    pub settle: Option<Duration>,

    /// Time allowed for one connection attempt (handshake to namespace connected). Default 10s.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    #[serde(deserialize_with = "de_opt_duration")]
    pub connect_timeout: Option<Duration>,

    /// First delay before reconnecting a lost session; it doubles per failed attempt up to 5×,
    /// with ±50 % jitter, like socket.io-client. Default 1s (reconnect-storm: 0, all at once).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    #[serde(deserialize_with = "de_opt_duration")]
    pub reconnect_delay: Option<Duration>,

    /// Process id of the server: its resident memory is read before the sessions connect and
    /// at the end of the measured part, and the report shows the growth per session.
    #[arg(long, value_name = "PID")]
    pub server_pid: Option<u32>,

    /// When to run the matching --run command, from the start of the run: `--at 30s --run
    /// 'CMD'`. Repeat both for several faults.
    #[arg(long = "at", value_name = "DURATION", value_parser = parse_duration)]
    #[serde(skip)]
    pub at: Vec<Duration>,

    /// A command (`sh -c`) to run at the matching --at, e.g. killing a node; the report shows
    /// the sessions lost and re-homed, the time to recover and the messages lost after it.
    #[arg(long = "run", value_name = "CMD")]
    #[serde(skip)]
    pub run: Vec<String>,

    /// Faults of a scenario file (`[[fault]]` tables with `at` and `run`).
    #[arg(skip)]
    pub fault: Vec<FaultSpec>,

    /// Write the whole report, with the resolved settings, as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,

    /// Draw latency over time and the latency distribution to FILE (.svg or .png).
    #[arg(long, value_name = "FILE")]
    pub plot: Option<PathBuf>,

    /// Thresholds that must hold, comma separated (repeatable), e.g. `p99<50ms,completeness>=100%`;
    /// the exit status is 1 when one fails. Figures: see docs/loadtest.md.
    #[arg(long = "assert", value_name = "EXPR")]
    #[serde(deserialize_with = "de_one_or_many")]
    pub assert: Vec<String>,

    /// No progress on stderr (otherwise a live line on a terminal, a plain line every 5 s when
    /// stderr is not one).
    #[arg(long)]
    pub quiet: bool,
}

impl RunArgs {
    /// `self` where given, else `base` (a scenario file under command-line flags).
    pub fn over(self, base: RunArgs) -> RunArgs {
        fn vec<T>(mine: Vec<T>, base: Vec<T>) -> Vec<T> {
            if mine.is_empty() { base } else { mine }
        }
        RunArgs {
            url: vec(self.url, base.url),
            sessions: self.sessions.or(base.sessions),
            duration: self.duration.or(base.duration),
            rate: self.rate.or(base.rate),
            transport_mix: self.transport_mix.or(base.transport_mix),
            source_ip: self.source_ip.or(base.source_ip),
            path: self.path.or(base.path),
            namespace: self.namespace.or(base.namespace),
            rooms: self.rooms.or(base.rooms),
            message_rate: self.message_rate.or(base.message_rate),
            payload_size: self.payload_size.or(base.payload_size),
            settle: self.settle.or(base.settle),
            connect_timeout: self.connect_timeout.or(base.connect_timeout),
            reconnect_delay: self.reconnect_delay.or(base.reconnect_delay),
            server_pid: self.server_pid.or(base.server_pid),
            at: vec(self.at, base.at),
            run: vec(self.run, base.run),
            fault: vec(self.fault, base.fault),
            json: self.json.or(base.json),
            plot: self.plot.or(base.plot),
            assert: vec(self.assert, base.assert),
            quiet: self.quiet || base.quiet,
        }
    }
}

/// A scenario file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a valid scenario.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, with the line.
        message: String,
    },
    /// A setting is wrong.
    #[error("{0}")]
    Invalid(String),
}

/// Reads a TOML scenario file: its scenario and its flags.
pub fn read_scenario_file(path: &std::path::Path) -> Result<(Scenario, RunArgs), SettingsError> {
    let text = std::fs::read_to_string(path).map_err(|source| SettingsError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_scenario_file(&text).map_err(|message| SettingsError::Parse {
        path: path.to_owned(),
        message,
    })
}

/// Parses the text of a scenario file.
pub fn parse_scenario_file(text: &str) -> Result<(Scenario, RunArgs), String> {
    let mut table: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
    let scenario = table
        .remove("scenario")
        .ok_or("no `scenario = \"…\"` (connect, chat, broadcast, echo, reconnect-storm)")?;
    let scenario = Scenario::deserialize(scenario).map_err(|e| format!("scenario: {e}"))?;
    let args = RunArgs::deserialize(table).map_err(|e| e.to_string())?;
    Ok((scenario, args))
}

/// Everything a run needs, defaults filled in and checked. Serialized into the report.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    /// The scenario.
    pub scenario: Scenario,
    /// Servers, sessions spread round-robin.
    pub urls: Vec<String>,
    /// Sessions.
    pub sessions: u64,
    /// The measured part.
    #[serde(serialize_with = "ser_duration")]
    pub duration: Duration,
    /// New sessions per second while ramping.
    pub rate: f64,
    /// Transport weights.
    #[serde(serialize_with = "ser_display")]
    pub transport_mix: TransportMix,
    /// Source addresses, if any.
    #[serde(serialize_with = "ser_opt_source_ips")]
    pub source_ip: Option<SourceIps>,
    /// Engine.IO path.
    pub path: String,
    /// Socket.IO namespace.
    pub namespace: String,
    /// chat: rooms; broadcast: 1.
    pub rooms: u64,
    /// Messages per second per publisher.
    pub message_rate: f64,
    /// Padding bytes per message.
    pub payload_size: usize,
    /// Wait for in-flight deliveries.
    #[serde(serialize_with = "ser_duration")]
    pub settle: Duration,
    /// One connection attempt's limit.
    #[serde(serialize_with = "ser_duration")]
    pub connect_timeout: Duration,
    /// First reconnect delay.
    #[serde(serialize_with = "ser_duration")]
    pub reconnect_delay: Duration,
    /// Server process to measure.
    pub server_pid: Option<u32>,
    /// Faults, in time order.
    pub faults: Vec<FaultSpec>,
    /// Thresholds, as given.
    pub assert: Vec<String>,
    /// Parsed thresholds.
    #[serde(skip)]
    pub assertions: Vec<Assertion>,
    /// Parsed targets, one per URL.
    #[serde(skip)]
    pub targets: Vec<Target>,
    /// JSON output.
    #[serde(skip)]
    pub json: Option<PathBuf>,
    /// Plot output.
    #[serde(skip)]
    pub plot: Option<PathBuf>,
    /// No progress line.
    #[serde(skip)]
    pub quiet: bool,
}

/// Largest number of sessions one run may ask for.
const MAX_SESSIONS: u64 = 1_000_000;

impl Settings {
    /// Fills in the defaults of `scenario` and checks everything.
    pub fn resolve(scenario: Scenario, args: RunArgs) -> Result<Settings, SettingsError> {
        let bad = |m: String| Err(SettingsError::Invalid(m));
        let urls = if args.url.is_empty() {
            vec!["http://127.0.0.1:3000".to_owned()]
        } else {
            args.url
        };
        let targets = urls
            .iter()
            .map(|u| {
                Target::parse(u).map_err(|e| SettingsError::Invalid(format!("--url {u}: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;

        let sessions = args.sessions.unwrap_or(match scenario {
            Scenario::Connect => 1000,
            Scenario::Chat | Scenario::Broadcast => 100,
            Scenario::Echo => 10,
            Scenario::ReconnectStorm => 500,
        });
        if sessions == 0 || sessions > MAX_SESSIONS {
            return bad(format!(
                "--sessions must be 1 to {MAX_SESSIONS}, got {sessions}"
            ));
        }
        if scenario == Scenario::Broadcast && sessions < 2 {
            return bad("broadcast needs at least 2 sessions (a publisher and a receiver)".into());
        }
        let duration = args.duration.unwrap_or(Duration::from_secs(10));
        if duration.is_zero() || duration > Duration::from_secs(24 * 3600) {
            return bad(format!(
                "--duration must be more than 0 and at most 24h, got {}",
                humantime::format_duration(duration)
            ));
        }
        let rate = args.rate.unwrap_or(200.0);
        if !(rate.is_finite() && rate > 0.0) {
            return bad(format!("--rate must be a positive number, got {rate}"));
        }
        let transport_mix = match args.transport_mix.as_deref() {
            None => TransportMix::default(),
            Some(text) => TransportMix::from_str(text)
                .map_err(|e| SettingsError::Invalid(format!("--transport-mix: {e}")))?,
        };
        let source_ip = match args.source_ip.as_deref() {
            None => None,
            Some(text) => Some(
                SourceIps::from_str(text)
                    .map_err(|e| SettingsError::Invalid(format!("--source-ip: {e}")))?,
            ),
        };
        let rooms = match scenario {
            Scenario::Chat => args.rooms.unwrap_or(sessions.div_ceil(10)),
            _ => 1,
        };
        if rooms == 0 || rooms > sessions {
            return bad(format!(
                "--rooms must be 1 to the number of sessions ({sessions}), got {rooms}"
            ));
        }
        let message_rate = args.message_rate.unwrap_or(match scenario {
            Scenario::Chat => 1.0,
            _ => 10.0,
        });
        if !(message_rate.is_finite() && message_rate > 0.0 && message_rate <= 100_000.0) {
            return bad(format!(
                "--message-rate must be more than 0 and at most 100000, got {message_rate}"
            ));
        }
        let payload_size = args.payload_size.unwrap_or(0);
        if payload_size > 16 * 1024 * 1024 {
            return bad(format!(
                "--payload-size is at most 16 MiB, got {payload_size}"
            ));
        }
        if args.at.len() != args.run.len() {
            return bad(format!(
                "every --at needs one --run and the other way round (got {} --at, {} --run)",
                args.at.len(),
                args.run.len()
            ));
        }
        let mut faults = args.fault;
        faults.extend(
            args.at
                .into_iter()
                .zip(args.run)
                .map(|(at, run)| FaultSpec { at, run }),
        );
        if let Some(f) = faults.iter().find(|f| f.run.trim().is_empty()) {
            return bad(format!(
                "the fault at {} has an empty command",
                humantime::format_duration(f.at)
            ));
        }
        faults.sort_by_key(|f| f.at);
        let mut assertions = Vec::new();
        for text in &args.assert {
            assertions.extend(
                parse_assertions(text)
                    .map_err(|e| SettingsError::Invalid(format!("--assert {text:?}: {e}")))?,
            );
        }
        let connect_timeout = args.connect_timeout.unwrap_or(Duration::from_secs(10));
        if connect_timeout.is_zero() {
            return bad("--connect-timeout must be more than 0".into());
        }
        let reconnect_delay = args.reconnect_delay.unwrap_or(match scenario {
            Scenario::ReconnectStorm => Duration::ZERO,
            _ => Duration::from_secs(1),
        });
        if let Some(plot) = &args.plot {
            crate::report::PlotFormat::of(plot)
                .map_err(|e| SettingsError::Invalid(format!("--plot: {e}")))?;
        }
        Ok(Settings {
            scenario,
            urls,
            sessions,
            duration,
            rate,
            transport_mix,
            source_ip,
            path: args.path.unwrap_or_else(|| "/socket.io/".to_owned()),
            namespace: args.namespace.unwrap_or_else(|| "/".to_owned()),
            rooms,
            message_rate,
            payload_size,
            settle: args.settle.unwrap_or(Duration::from_secs(3)),
            connect_timeout,
            reconnect_delay,
            server_pid: args.server_pid,
            faults,
            assert: args.assert,
            assertions,
            targets,
            json: args.json,
            plot: args.plot,
            quiet: args.quiet,
        })
    }

    /// The settings as the report's `settings` object.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
}

/// `30s`, `1m30s`, `500ms`, or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if let Ok(secs) = text.parse::<f64>() {
        return Duration::try_from_secs_f64(secs)
            .map_err(|_| format!("{text:?} is not a duration of zero or more seconds"));
    }
    humantime::parse_duration(text)
        .map_err(|e| format!("{text:?} is not a duration like 30s, 500ms or 1m30s ({e})"))
}

fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Number(f64),
        Text(String),
    }
    match Raw::deserialize(d)? {
        Raw::Number(n) => parse_duration(&n.to_string()),
        Raw::Text(t) => parse_duration(&t),
    }
    .map_err(serde::de::Error::custom)
}

fn de_opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    de_duration(d).map(Some)
}

fn de_one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Raw::deserialize(d)? {
        Raw::One(s) => vec![s],
        Raw::Many(v) => v,
    })
}

fn ser_duration<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&humantime::format_duration(*d).to_string())
}

fn ser_display<S: serde::Serializer, T: fmt::Display>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

fn ser_opt_source_ips<S: serde::Serializer>(
    v: &Option<SourceIps>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match v {
        None => s.serialize_none(),
        Some(ips) => s.serialize_str(&format!("{} addresses", ips.len())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_make_a_short_meaningful_chat() {
        let s = Settings::resolve(Scenario::Chat, RunArgs::default()).unwrap();
        assert_eq!(s.urls, ["http://127.0.0.1:3000"]);
        assert_eq!((s.sessions, s.rooms), (100, 10));
        assert_eq!(s.duration, Duration::from_secs(10));
        assert_eq!(s.message_rate, 1.0);
        assert_eq!(s.reconnect_delay, Duration::from_secs(1));
        let storm = Settings::resolve(Scenario::ReconnectStorm, RunArgs::default()).unwrap();
        assert_eq!(storm.reconnect_delay, Duration::ZERO);
        assert_eq!(storm.rooms, 1);
    }

    #[test]
    fn a_file_under_flags() {
        let (scenario, file) = parse_scenario_file(
            r#"
            scenario = "chat"
            url = "http://127.0.0.1:4001"
            sessions = 40
            rooms = 4
            duration = "2s"
            settle = 1.5
            transport-mix = "polling=1,websocket=1"
            assert = ["p99<50ms", "completeness>=100%"]
            [[fault]]
            at = "1s"
            run = "true"
            "#,
        )
        .unwrap();
        assert_eq!(scenario, Scenario::Chat);
        let flags = RunArgs {
            sessions: Some(60),
            ..RunArgs::default()
        };
        let s = Settings::resolve(scenario, flags.over(file)).unwrap();
        assert_eq!(s.sessions, 60);
        assert_eq!(s.rooms, 4);
        assert_eq!(s.urls, ["http://127.0.0.1:4001"]);
        assert_eq!(s.duration, Duration::from_secs(2));
        assert_eq!(s.settle, Duration::from_millis(1500));
        assert_eq!(s.assertions.len(), 2);
        assert_eq!(s.faults.len(), 1);
        assert_eq!(s.faults[0].at, Duration::from_secs(1));
        let json = s.to_json();
        assert_eq!(json["scenario"], "chat");
        assert_eq!(json["duration"], "2s");
        assert_eq!(json["faults"][0]["run"], "true");
    }

    #[test]
    fn file_errors_name_the_problem() {
        let err = parse_scenario_file("scenario = \"chat\"\nsesions = 3\n").unwrap_err();
        assert!(err.contains("sesions"), "{err}");
        let err = parse_scenario_file("sessions = 3\n").unwrap_err();
        assert!(err.contains("scenario"), "{err}");
        let err = parse_scenario_file("scenario = \"gossip\"\n").unwrap_err();
        assert!(err.contains("gossip"), "{err}");
        let err = parse_scenario_file("scenario = \"chat\"\nduration = \"soon\"\n").unwrap_err();
        assert!(err.contains("soon"), "{err}");
    }

    #[test]
    fn bad_flags_are_refused_with_the_reason() {
        let check = |scenario, args: RunArgs, want: &str| {
            let err = Settings::resolve(scenario, args).unwrap_err().to_string();
            assert!(err.contains(want), "{err:?} should mention {want:?}");
        };
        let args = |f: fn(&mut RunArgs)| {
            let mut a = RunArgs::default();
            f(&mut a);
            a
        };
        check(Scenario::Chat, args(|a| a.sessions = Some(0)), "--sessions");
        check(
            Scenario::Chat,
            args(|a| a.url = vec!["ftp://x".into()]),
            "--url",
        );
        check(Scenario::Chat, args(|a| a.rooms = Some(1000)), "--rooms");
        check(Scenario::Chat, args(|a| a.rate = Some(-1.0)), "--rate");
        check(
            Scenario::Chat,
            args(|a| a.message_rate = Some(0.0)),
            "--message-rate",
        );
        check(
            Scenario::Chat,
            args(|a| a.transport_mix = Some("carrier-pigeon".into())),
            "--transport-mix",
        );
        check(
            Scenario::Chat,
            args(|a| a.source_ip = Some("nowhere".into())),
            "--source-ip",
        );
        check(
            Scenario::Chat,
            args(|a| a.at = vec![Duration::from_secs(1)]),
            "--run",
        );
        check(
            Scenario::Chat,
            args(|a| a.assert = vec!["p99<<3".into()]),
            "--assert",
        );
        check(
            Scenario::Chat,
            args(|a| a.plot = Some("x.gif".into())),
            "--plot",
        );
        check(
            Scenario::Broadcast,
            args(|a| a.sessions = Some(1)),
            "broadcast",
        );
    }

    /// `docs/loadtest.md` carries the flag table and the figure table rendered from the code.
    #[test]
    fn docs_list_every_flag_and_figure() {
        use clap::{CommandFactory, Parser};
        #[derive(Parser)]
        struct Wrapper {
            #[command(flatten)]
            args: RunArgs,
        }
        let dir = env!("CARGO_MANIFEST_DIR");
        let flags = corral_adapter_nats::doc_tables::flags_markdown(&Wrapper::command());
        corral_adapter_nats::doc_tables::check(dir, "docs/loadtest.md", "loadtest-flags", &flags);
        let figures = crate::report::figures_markdown();
        corral_adapter_nats::doc_tables::check(
            dir,
            "docs/loadtest.md",
            "loadtest-figures",
            &figures,
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert!(parse_duration("-1").is_err());
        assert!(parse_duration("later").is_err());
    }
}
