//! `corral loadtest`: the command line. Parses the scenario and its flags (or a scenario
//! file), runs it with a live progress line on stderr, prints the report table on stdout,
//! writes `--json` and `--plot`, and checks `--assert`.
//!
//! Exit status: 0 when the run went through and every threshold held; 1 when a threshold
//! failed or no session could connect at all; 2 when the arguments, the scenario file or an
//! output file were unusable.

use std::{path::PathBuf, process::ExitCode};

use clap::Subcommand;

use crate::report::Report;
use crate::settings::{RunArgs, Scenario, Settings, read_scenario_file};

/// `corral loadtest …`.
#[derive(Debug, clap::Args)]
#[command(after_long_help = AFTER_HELP)]
pub struct LoadtestArgs {
    #[command(subcommand)]
    command: LoadtestCommand,
}

const AFTER_HELP: &str = "\
The target is any Socket.IO server speaking the bench protocol (docs/loadtest.md): `corral node \
--app bench`, a gateway in front of such nodes, or the Node.js peer in loadtest/peers/.

Examples:
  corral loadtest chat --url http://127.0.0.1:3000
  corral loadtest connect --sessions 10000 --rate 1000 --server-pid $(pidof corral)
  corral loadtest chat --duration 60s --at 20s --run 'kill $(cat node-2.pid)' --json run.json
  corral loadtest compare before.json after.json";

#[derive(Debug, Subcommand)]
enum LoadtestCommand {
    /// Ramp to --sessions at --rate and hold them for --duration: connect-time percentiles,
    /// failures by kind, and the server's memory per session with --server-pid.
    Connect(RunArgs),
    /// --rooms rooms of members that each publish at --message-rate (open loop): end-to-end
    /// latency, deliveries per second, completeness, duplicates and out-of-order deliveries.
    Chat(RunArgs),
    /// One publisher and a room of --sessions: fan-out latency to the last receiver, and
    /// completeness.
    Broadcast(RunArgs),
    /// Every session sends `echo` with an ack at --message-rate: ack round-trip latency.
    Echo(RunArgs),
    /// Connect --sessions, then drop them all at once and reconnect them at once: the time
    /// until each, and the last, is back.
    ReconnectStorm(RunArgs),
    /// Run a TOML scenario file (its keys are the flags' names, plus `scenario` and
    /// `[[fault]]` tables); flags given here override the file.
    Run {
        /// The scenario file.
        file: PathBuf,
        #[command(flatten)]
        args: RunArgs,
    },
    /// Print two JSON reports (--json) side by side with the ratio B/A of every figure.
    Compare {
        /// The baseline report.
        a: PathBuf,
        /// The report compared with it.
        b: PathBuf,
    },
}

/// Runs `corral loadtest`.
pub async fn execute(args: LoadtestArgs) -> ExitCode {
    let (scenario, run_args) = match args.command {
        LoadtestCommand::Connect(a) => (Scenario::Connect, a),
        LoadtestCommand::Chat(a) => (Scenario::Chat, a),
        LoadtestCommand::Broadcast(a) => (Scenario::Broadcast, a),
        LoadtestCommand::Echo(a) => (Scenario::Echo, a),
        LoadtestCommand::ReconnectStorm(a) => (Scenario::ReconnectStorm, a),
        LoadtestCommand::Run { file, args } => match read_scenario_file(&file) {
            Ok((scenario, from_file)) => (scenario, args.over(from_file)),
            Err(e) => return usage_error(e),
        },
        LoadtestCommand::Compare { a, b } => return compare(&a, &b),
    };
    let settings = match Settings::resolve(scenario, run_args) {
        Ok(s) => s,
        Err(e) => return usage_error(e),
    };
    let json = settings.json.clone();
    let plot = settings.plot.clone();
    let assertions = settings.assertions.clone();

    let report = crate::run::run(settings).await;
    write_stdout(&report.table());

    let mut status = ExitCode::SUCCESS;
    if let Some(path) = &json
        && let Err(e) = report.write_json(path)
    {
        eprintln!("error: {e}");
        status = ExitCode::from(2);
    }
    if let Some(path) = &plot
        && let Err(e) = report.plot(path)
    {
        eprintln!("error: {e}");
        status = ExitCode::from(2);
    }
    if status != ExitCode::SUCCESS {
        return status;
    }
    if report.sessions.connected == 0 {
        eprintln!(
            "error: no session could connect to {}",
            report.settings["urls"]
        );
        return ExitCode::FAILURE;
    }
    let failures = report.check(&assertions);
    for failure in &failures {
        eprintln!("{failure}");
    }
    if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn compare(a: &std::path::Path, b: &std::path::Path) -> ExitCode {
    match (Report::read_json(a), Report::read_json(b)) {
        (Ok(a), Ok(b)) => {
            write_stdout(&crate::report::compare(&a, &b));
            ExitCode::SUCCESS
        }
        (Err(e), _) | (_, Err(e)) => usage_error(e),
    }
}

/// The report goes to stdout (a closed pipe is not an error worth a message).
fn write_stdout(text: &str) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

fn usage_error(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::from(2)
}
