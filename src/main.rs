//! `corral`: the command-line entry of a Corral cluster. It only parses arguments, sets up
//! logging and signals, and hands over to the library crates.

use std::{process::ExitCode, time::Duration};

use clap::{Parser, Subcommand, ValueEnum};
use corral_gateway::{Gateway, GatewayConfig};
use corral_node::{Node, NodeConfig, bus::EmitConfig};

mod probe;
mod telemetry;
mod up;
use tokio::{
    signal::unix::{Signal, SignalKind, signal},
    sync::oneshot,
};

/// Corral: a horizontally scaled Socket.IO cluster.
#[derive(Debug, Parser)]
#[command(name = "corral", version, about, long_about = None)]
struct Cli {
    /// Log output: `pretty` for people, `json` for log pipelines. Levels come from `CORRAL_LOG`
    /// or `RUST_LOG` (default `info`; `warn` for `emit` and `loadtest`).
    #[arg(long, env = "CORRAL_LOG_FORMAT", value_enum, default_value_t = LogFormat::Pretty, global = true)]
    log_format: LogFormat,

    /// Export traces to this OpenTelemetry collector over OTLP/HTTP (base URL, e.g.
    /// `http://collector:4318`; spans go to `/v1/traces`). Without it the standard
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` / `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` are used, and
    /// without those no traces are exported. `OTEL_TRACES_SAMPLER(_ARG)`, `OTEL_SERVICE_NAME`
    /// and `OTEL_EXPORTER_OTLP_PROTOCOL` (http/protobuf, http/json) apply. Services:
    /// corral-node, corral-gateway (corral-up for `up`).
    #[arg(long, env = "CORRAL_OTLP_ENDPOINT", global = true)]
    otlp_endpoint: Option<String>,

    #[command(subcommand)]
    command: Command,
}

/// How logs are written.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a Socket.IO worker node (chat demo, bench protocol or conformance server).
    ///
    /// Serves Socket.IO at /socket.io/ (long-polling and WebSocket), /healthz, /readyz and
    /// /metrics. On SIGTERM or SIGINT it drains: /readyz turns 503, new sessions are refused,
    /// connected clients are handed off so they reconnect, and the process exits within
    /// --drain-timeout. A second signal exits at once.
    Node(NodeConfig),

    /// Run a gateway: routes every Engine.IO session to its node, spreads new sessions.
    ///
    /// Clients connect to --listen; requests of a session follow a signed token (any replica
    /// with the same --session-secret routes them), new sessions go by --affinity. Health,
    /// metrics and the admin API are on --admin-listen. On SIGTERM or SIGINT it stops accepting,
    /// lets requests finish and closes WebSocket tunnels at --drain-rate.
    Gateway(GatewayConfig),

    /// Start a whole cluster in one process: a gateway and several nodes (the chat demo by
    /// default), sharing rooms in memory or through NATS with --nats.
    Up(up::UpArgs),

    /// Publish one event to the rooms of a cluster through NATS, without being a Socket.IO
    /// server (for backend jobs and scripts).
    ///
    /// Example: corral emit --nats nats://127.0.0.1:4222 --room lobby announcement '{"text":"hi"}'
    Emit(EmitConfig),

    /// Load-test any Socket.IO server that speaks the bench protocol: connect, chat,
    /// broadcast, echo and reconnect-storm scenarios, faults mid-run, reports and comparisons.
    ///
    /// Prints a table on stdout (progress on stderr), writes --json and --plot, and exits 1
    /// when an --assert threshold fails.
    Loadtest(corral_loadtest::cli::LoadtestArgs),

    /// GET a URL and exit 0 on a 2xx answer, 1 otherwise: a container health check that needs
    /// no curl or shell in the image.
    ///
    /// Example: corral probe http://127.0.0.1:4000/readyz
    Probe(probe::ProbeArgs),
}

/// Resolves on the next SIGTERM or SIGINT.
async fn next_signal(term: &mut Signal, int: &mut Signal) {
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}

/// A future that resolves on the first SIGTERM or SIGINT; a second signal exits at once.
fn drain_on_signal() -> anyhow::Result<(
    impl std::future::Future<Output = ()>,
    tokio::task::JoinHandle<()>,
)> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let (drain_tx, drain_rx) = oneshot::channel::<()>();
    let watcher = tokio::spawn(async move {
        next_signal(&mut term, &mut int).await;
        drain_tx.send(()).ok();
        next_signal(&mut term, &mut int).await;
        tracing::warn!("second signal: exiting without finishing the drain");
        std::process::exit(130);
    });
    Ok((
        async move {
            drain_rx.await.ok();
        },
        watcher,
    ))
}

async fn run_node(config: NodeConfig) -> anyhow::Result<()> {
    let (drain, _signals) = drain_on_signal()?;
    let node = Node::bind(config).await?;
    node.run(drain).await;
    Ok(())
}

async fn run_gateway(config: GatewayConfig) -> anyhow::Result<()> {
    let (drain, _signals) = drain_on_signal()?;
    let gateway = Gateway::bind(config).await?;
    gateway.run(drain).await;
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A one-shot command reports its result, not the connection's progress.
    let default_level = match cli.command {
        Command::Emit(_) | Command::Probe(_) => "warn",
        Command::Loadtest(_) => "warn,corral_loadtest=info",
        Command::Node(_) | Command::Gateway(_) | Command::Up(_) => "info",
    };
    // Traces belong to the long-running services; one-shot commands only log.
    let service = match cli.command {
        Command::Node(_) => Some("corral-node"),
        Command::Gateway(_) => Some("corral-gateway"),
        Command::Up(_) => Some("corral-up"),
        _ => None,
    };
    let telemetry = match telemetry::init(cli.log_format, default_level, service, cli.otlp_endpoint)
    {
        Ok(telemetry) => telemetry,
        Err(err) => {
            eprintln!("corral: cannot set up logging and tracing: {err:#}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            tracing::error!(%err, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    // The command runs as a task on the runtime's workers, not on this thread inside
    // `block_on`: an accept loop here would hand every new connection to a worker thread, a
    // wake-up and a context switch each.
    let result = runtime.block_on(async {
        let command = tokio::spawn(async move {
            match cli.command {
                Command::Node(config) => run_node(config).await,
                Command::Gateway(config) => run_gateway(config).await,
                Command::Up(args) => {
                    let (drain, _signals) = drain_on_signal()?;
                    up::run(args, drain).await
                }
                Command::Emit(config) => config.run().await.map_err(Into::into),
                Command::Loadtest(args) => return Ok(corral_loadtest::cli::execute(args).await),
                Command::Probe(args) => probe::run(args).await,
            }
            .map(|()| ExitCode::SUCCESS)
        });
        command
            .await
            .unwrap_or_else(|err| Err(anyhow::anyhow!("the command failed: {err}")))
    });
    // Do not wait for stray tasks (e.g. sockets still closing) after the node has stopped.
    runtime.shutdown_timeout(Duration::from_millis(100));
    telemetry.shutdown();
    match result {
        Ok(status) => status,
        Err(err) => {
            tracing::error!("{err:#}");
            ExitCode::FAILURE
        }
    }
}
