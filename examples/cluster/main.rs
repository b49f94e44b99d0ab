//! Several Corral nodes in one process, sharing one bus driver: the quickest cluster to test
//! against, and the example of plugging a driver into the node library.
//!
//! ```text
//! cargo run --example cluster -- --nodes 3 --app cluster-check
//! cargo run --example cluster -- --nodes 3 --driver redis --redis-url redis://127.0.0.1:6379
//! ```
//!
//! With `--driver redis` every node has its own connection to Redis (see `redis.rs`, a driver
//! for another bus written outside the adapter crate), as nodes in separate processes would.
//!
//! Prints one JSON line per node (`{"node_id":…,"listen":…}`) once all listen, then serves until
//! SIGTERM or SIGINT (every node drains) or until standard input closes.

#![allow(clippy::print_stdout)] // the node addresses are this program's output

mod redis;

use std::time::Duration;

use clap::{Parser, ValueEnum};
use corral_adapter_nats::MemoryBus;
use corral_node::{AppKind, Node, NodeConfig};
use tokio::sync::{oneshot, watch};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum DriverKind {
    /// One in-process bus shared by the nodes.
    Memory,
    /// Redis pub/sub at `--redis-url`, one connection per node.
    Redis,
}

/// Several nodes in one process.
#[derive(Debug, Parser)]
struct Args {
    /// How many nodes.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// The bus the nodes share.
    #[arg(long, value_enum, default_value_t = DriverKind::Memory)]
    driver: DriverKind,
    /// The Redis server of `--driver redis`.
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    /// The app every node runs.
    #[arg(long, value_enum, default_value_t = AppKind::ClusterCheck)]
    app: AppKind,
    /// Prefix of the node ids (`<prefix>-1`, …).
    #[arg(long, default_value = "node")]
    id_prefix: String,
    /// Heartbeat interval and timeout of the cluster.
    #[arg(long, default_value = "200ms")]
    heartbeat_interval: humantime::Duration,
    /// See `--heartbeat-interval`.
    #[arg(long, default_value = "1s")]
    heartbeat_timeout: humantime::Duration,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let bus = MemoryBus::new();
    let (stop_tx, stop) = watch::channel(false);
    let mut running = Vec::new();
    // How long the nodes wait, together, for Redis before starting alone.
    let redis_deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    for i in 1..=args.nodes {
        let mut config = NodeConfig {
            listen: "127.0.0.1:0".parse()?,
            node_id: Some(format!("{}-{i}", args.id_prefix).parse()?),
            app: args.app,
            drain_timeout: Duration::from_secs(5).into(),
            ..NodeConfig::default()
        };
        config.bus.heartbeat_interval = args.heartbeat_interval;
        config.bus.heartbeat_timeout = args.heartbeat_timeout;
        let builder = Node::builder(config);
        let builder = match args.driver {
            DriverKind::Memory => builder.driver(bus.driver()),
            DriverKind::Redis => {
                let driver = redis::RedisDriver::connect(&args.redis_url)?;
                // Not fatal: the node serves alone and joins once Redis is reachable.
                let wait = redis_deadline.saturating_duration_since(tokio::time::Instant::now());
                if !driver.wait_connected(wait).await {
                    tracing::warn!("Redis is not reachable yet; the node starts alone");
                }
                builder.driver(driver)
            }
        };
        let node = builder.bind().await?;
        println!(
            "{}",
            serde_json::json!({ "node_id": node.context().node_id().as_str(), "listen": node.local_addr() })
        );
        let mut stop = stop.clone();
        running.push(tokio::spawn(node.run(async move {
            stop.wait_for(|s| *s).await.ok();
        })));
    }

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    // A plain thread, not `tokio::io::stdin()`: the runtime would wait for that blocking read
    // when it shuts down, so after SIGTERM the process would hang until stdin closed.
    let (stdin_closed, stdin_watch) = oneshot::channel::<()>();
    std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        let mut stdin = std::io::stdin();
        while std::io::Read::read(&mut stdin, &mut buf).is_ok_and(|n| n > 0) {}
        let _ = stdin_closed.send(());
    });
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
        // Standard input closed: the parent (a test) is gone.
        _ = stdin_watch => {}
    }
    stop_tx.send_replace(true);
    for node in running {
        node.await?;
    }
    Ok(())
}
