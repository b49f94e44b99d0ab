//! `corral up`: a gateway and several nodes in one process, the whole cluster in one command.
//! Nodes share an in-process bus, or NATS when `--nats` is given.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser};
use corral_adapter_nats::MemoryBus;
use corral_gateway::{Gateway, GatewayConfig};
use corral_node::{AppKind, Node, NodeConfig, bus::AdapterKind};
use tokio::sync::watch;

/// Flags of `corral up`.
#[derive(Debug, Clone, Args)]
pub(crate) struct UpArgs {
    /// How many nodes.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Where the gateway listens for clients.
    #[arg(long, default_value = "127.0.0.1:3000")]
    listen: SocketAddr,
    /// Where the gateway's admin listener is.
    #[arg(long, default_value = "127.0.0.1:3001")]
    admin_listen: SocketAddr,
    /// NATS URL: the nodes share rooms through NATS instead of an in-process bus.
    #[arg(long)]
    nats: Option<String>,
    /// The app every node runs.
    #[arg(long, value_enum, default_value_t = AppKind::Chat)]
    app: AppKind,
    /// The socket.io-client bundle the chat page loads.
    #[arg(
        long,
        default_value = "node_modules/socket.io-client/dist/socket.io.min.js"
    )]
    client_bundle: PathBuf,
}

/// Parses gateway flags the way `corral gateway` would.
fn gateway_config(args: &[String]) -> anyhow::Result<GatewayConfig> {
    #[derive(Parser)]
    struct Wrapper {
        #[command(flatten)]
        config: GatewayConfig,
    }
    let argv = std::iter::once("corral-up".to_owned()).chain(args.iter().cloned());
    Ok(Wrapper::try_parse_from(argv)?.config)
}

/// Runs the cluster until `shutdown` resolves; then the gateway drains, then the nodes.
pub(crate) async fn run(
    args: UpArgs,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    anyhow::ensure!(args.nodes > 0, "--nodes must be at least 1");
    let bus = MemoryBus::new();
    let (stop_tx, stop) = watch::channel(false);
    let mut gateway_args = Vec::new();
    let mut running = Vec::new();
    for i in 1..=args.nodes {
        let mut config = NodeConfig {
            listen: "127.0.0.1:0".parse()?,
            node_id: Some(format!("node-{i}").parse()?),
            app: args.app,
            client_bundle: args.client_bundle.clone(),
            drain_timeout: Duration::from_secs(5).into(),
            ..NodeConfig::default()
        };
        let builder = match &args.nats {
            Some(url) => {
                config.bus.adapter = AdapterKind::Nats;
                config.bus.nats.nats_servers = vec![url.clone()];
                Node::builder(config)
            }
            None => Node::builder(config).driver(bus.driver()),
        };
        let node = builder.bind().await?;
        let id = node.context().node_id().to_string();
        gateway_args.push("--node".to_owned());
        gateway_args.push(format!("{id}=http://{}", node.local_addr()));
        eprintln!("  node {id} on http://{}", node.local_addr());
        let mut stop = stop.clone();
        running.push(tokio::spawn(node.run(async move {
            stop.wait_for(|s| *s).await.ok();
        })));
    }
    // Every client is local here, so address affinity would send all of them to one node:
    // spread sessions by load instead.
    gateway_args.extend(
        [
            "--listen",
            &args.listen.to_string(),
            "--admin-listen",
            &args.admin_listen.to_string(),
            "--affinity",
            "none",
            "--drain-timeout",
            "5s",
        ]
        .map(str::to_owned),
    );
    let gateway = Gateway::bind(gateway_config(&gateway_args)?).await?;
    eprintln!(
        "\nCorral is up: open http://{}/ (gateway admin on http://{})\n",
        gateway.local_addr()?,
        gateway.admin_addr()?
    );
    gateway.run(shutdown).await;
    stop_tx.send_replace(true);
    for node in running {
        node.await?;
    }
    Ok(())
}
