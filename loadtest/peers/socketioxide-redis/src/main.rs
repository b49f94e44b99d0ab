//! A socketioxide server speaking Corral's bench protocol (docs/loadtest.md), its rooms shared
//! between processes by the published Redis adapter (socketioxide-redis), so that the load tester
//! can measure the stock socketioxide + Redis stack side by side with Corral.
//!
//! Configured by environment:
//!   PORT       port to listen on; 0 (the default) lets the OS pick one
//!   HOST       address to listen on (default 127.0.0.1)
//!   NODE_ID    the id reported in `hello`, `join` and `publish` answers (default sx-<port>)
//!   REDIS_URL  e.g. redis://127.0.0.1:6379: share rooms through Redis (7 or later: the adapter
//!              needs RESP3, which this server asks for whatever the URL says). Unset: the local
//!              adapter, every process on its own.
//!
//! Once listening it prints one line on stdout, e.g.
//!   listening on 127.0.0.1:40123 adapter=redis node=sx-40123
//! and nothing else there (diagnostics go to stderr). SIGTERM (or SIGINT) closes every
//! connection and exits 0.

use std::{
    convert::Infallible, error::Error as StdError, fmt, future::ready, io::Write as _,
    net::SocketAddr, process::ExitCode, sync::Arc, time::Duration,
};

use hyper::{
    Request, Response,
    body::{Body, Incoming},
    server::conn::http1,
    service::Service,
};
use hyper_util::rt::TokioIo;
use serde::{
    Deserialize, Deserializer, Serialize, Serializer,
    de::{SeqAccess, Visitor},
    ser::SerializeTuple,
};
use socketioxide::{
    SocketIo,
    adapter::Adapter,
    extract::{AckSender, Data, SocketRef, TryData},
    handler::ConnectHandler,
};
use socketioxide_redis::{
    RedisAdapter, RedisAdapterCtr,
    drivers::redis::redis_client::{self as redis, IntoConnectionInfo, ProtocolVersion},
};
use tokio::net::TcpListener;

/// How long `ask` waits for the client's answer (the protocol says 5 s).
const ASK_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a shutdown may take before the process exits anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

type BoxError = Box<dyn StdError + Send + Sync>;

/// The id this process answers with.
type NodeId = Arc<str>;

struct Config {
    host: String,
    port: u16,
    node_id: Option<String>,
    redis_url: Option<String>,
}

impl Config {
    fn from_env() -> Result<Config, String> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let port = match var("PORT") {
            None => 0,
            Some(raw) => raw
                .parse()
                .map_err(|_| format!("PORT must be an integer from 0 to 65535, not {raw:?}"))?,
        };
        Ok(Config {
            host: var("HOST").unwrap_or_else(|| "127.0.0.1".to_owned()),
            port,
            node_id: var("NODE_ID"),
            redis_url: var("REDIS_URL"),
        })
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    // The adapter reports trouble (e.g. messages dropped when a channel is full) only this way.
    tracing::subscriber::set_global_default(StderrWarnings).ok();
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("socketioxide-redis peer: {err}");
            ExitCode::from(2)
        }
    }
}

async fn run() -> Result<(), BoxError> {
    let config = Config::from_env()?;
    let listener = TcpListener::bind((config.host.as_str(), config.port))
        .await
        .map_err(|err| format!("cannot listen on {}:{}: {err}", config.host, config.port))?;
    let addr = listener.local_addr()?;
    let node: NodeId = config
        .node_id
        .unwrap_or_else(|| format!("sx-{}", addr.port()))
        .into();

    match config.redis_url {
        Some(url) => {
            let ctr = RedisAdapterCtr::new_with_redis(&redis_client(&url)?)
                .await
                .map_err(|err| format!("cannot connect to Redis at {url}: {err}"))?;
            let (svc, io) = SocketIo::builder()
                .with_adapter::<RedisAdapter<_>>(ctr)
                .build_svc();
            // The Redis adapter subscribes to its channels here; wait so that nothing is
            // announced before this process can hear the others.
            io.ns("/", bench_handler(node.clone()))
                .await
                .map_err(|err| format!("cannot set up the Redis adapter: {err}"))?;
            announce(addr, "redis", &node)?;
            serve(listener, svc, io).await
        }
        None => {
            let (svc, io) = SocketIo::new_svc();
            io.ns("/", bench_handler(node.clone()));
            announce(addr, "local", &node)?;
            serve(listener, svc, io).await
        }
    }
}

/// A client for `url` that speaks RESP3: the adapter's pub/sub needs push messages.
fn redis_client(url: &str) -> Result<redis::Client, String> {
    let bad = |err: redis::RedisError| format!("REDIS_URL {url:?} is unusable: {err}");
    let info = url.into_connection_info().map_err(bad)?;
    let settings = info
        .redis_settings()
        .clone()
        .set_protocol(ProtocolVersion::RESP3);
    redis::Client::open(info.set_redis_settings(settings)).map_err(bad)
}

/// The one line the scripts and the harness wait for.
fn announce(addr: SocketAddr, adapter: &str, node: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "listening on {addr} adapter={adapter} node={node}")?;
    out.flush()
}

/// Serves HTTP/1.1 (long-polling, and WebSocket through the upgrade) until SIGTERM or SIGINT.
async fn serve<S, B, A>(listener: TcpListener, svc: S, io: SocketIo<A>) -> Result<(), BoxError>
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
    A: Adapter,
{
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                // Out of file descriptors and the like: wait a little rather than spin.
                Err(err) => {
                    eprintln!("socketioxide-redis peer: accept failed: {err}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            signal = &mut shutdown => { signal?; break; }
        };
        stream.set_nodelay(true).ok();
        let svc = svc.clone();
        tokio::spawn(async move {
            let conn = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .with_upgrades();
            // A client that goes away mid-request is no news.
            conn.await.ok();
        });
    }
    // Disconnects every socket (and unsubscribes from Redis); bounded, then exit anyway.
    tokio::time::timeout(SHUTDOWN_GRACE, io.close()).await.ok();
    Ok(())
}

async fn shutdown_signal() -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}

#[derive(Serialize)]
struct NodeReply<'a> {
    node: &'a str,
}

#[derive(Serialize)]
struct RoomReply<'a> {
    room: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    node: Option<&'a str>,
}

#[derive(Serialize)]
struct ErrorReply<'a> {
    error: &'a str,
}

/// Acks a malformed request with `{"error": why}` rather than leaving the client waiting.
fn refuse<A: Adapter>(ack: AckSender<A>, why: &str) {
    ack.send(&ErrorReply { error: why }).ok();
}

/// The connect handler of the main namespace. The event handlers go in a connect middleware:
/// socketioxide runs it before it answers CONNECT, while the handler itself runs as a task
/// after, so handlers registered there could miss an event sent right on connection. The
/// handler only says `hello`, which the client may receive once connected.
fn bench_handler<A: Adapter>(node: NodeId) -> impl ConnectHandler<A, (SocketRef<A>,)> {
    let for_setup = node.clone();
    let setup = move |socket: SocketRef<A>| {
        register(&socket, &for_setup);
        ready(Ok::<(), Infallible>(()))
    };
    let hello = move |socket: SocketRef<A>| {
        socket.emit("hello", &NodeReply { node: &node }).ok();
        ready(())
    };
    hello.with(setup)
}

/// The protocol's event handlers on one socket.
fn register<A: Adapter>(socket: &SocketRef<A>, node: &NodeId) {
    let id = node.clone();
    socket.on(
        "join",
        move |s: SocketRef<A>, TryData(room): TryData<String>, ack: AckSender<A>| {
            match room {
                Ok(room) => {
                    s.join(room.clone());
                    let node = Some(&*id);
                    ack.send(&RoomReply { room: &room, node }).ok();
                }
                Err(_) => refuse(ack, "join takes one argument: the room name (a string)"),
            }
            ready(())
        },
    );

    socket.on(
        "leave",
        |s: SocketRef<A>, TryData(room): TryData<String>, ack: AckSender<A>| {
            match room {
                Ok(room) => {
                    s.leave(room.clone());
                    ack.send(&RoomReply {
                        room: &room,
                        node: None,
                    })
                    .ok();
                }
                Err(_) => refuse(ack, "leave takes one argument: the room name (a string)"),
            }
            ready(())
        },
    );

    let id = node.clone();
    socket.on(
        "publish",
        move |s: SocketRef<A>, TryData(args): TryData<(String, rmpv::Value)>, ack: AckSender<A>| {
            let id = id.clone();
            async move {
                let Ok((room, payload)) = args else {
                    return refuse(
                        ack,
                        "publish takes two arguments: the room name and a payload",
                    );
                };
                // Every member of the room on every process, the sender included; handed to the
                // adapter (and so to Redis) before the ack goes out.
                let sent = s
                    .within(room.clone())
                    .emit("message", &(&room, &payload))
                    .await;
                if let Err(err) = sent {
                    // Still acked: the tester then counts the missing messages as lost.
                    eprintln!("socketioxide-redis peer: publish to {room:?} failed: {err}");
                }
                ack.send(&NodeReply { node: &id }).ok();
            }
        },
    );

    socket.on("echo", |Data(args): Data<Args>, ack: AckSender<A>| {
        ack.send(&args).ok();
        ready(())
    });

    // A server-to-client ack round trip: ask the sender, relay whatever it answers.
    socket.on(
        "ask",
        |s: SocketRef<A>, Data(args): Data<Args>, ack: AckSender<A>| async move {
            let asked = s
                .timeout(ASK_TIMEOUT)
                .emit_with_ack::<_, Args>("ask", &args);
            match asked {
                Ok(answer) => match answer.await {
                    Ok(answer) => {
                        ack.send(&answer).ok();
                    }
                    Err(err) => refuse(ack, &format!("the client did not answer: {err}")),
                },
                Err(err) => refuse(ack, &format!("could not ask the client: {err}")),
            }
        },
    );
}

/// All the arguments of an event, whatever their number and type (binary included: `rmpv`
/// keeps attachments as bytes). socketioxide passes a handler the whole argument list only when
/// the target deserializes as a tuple, and sends several arguments only when the data
/// serializes as one, hence the hand-written impls.
struct Args(Vec<rmpv::Value>);

impl Serialize for Args {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut tuple = serializer.serialize_tuple(self.0.len())?;
        for arg in &self.0 {
            tuple.serialize_element(arg)?;
        }
        tuple.end()
    }
}

impl<'de> Deserialize<'de> for Args {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Args, D::Error> {
        struct ArgsVisitor;
        impl<'de> Visitor<'de> for ArgsVisitor {
            type Value = Args;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("the arguments of an event")
            }
            fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<Args, S::Error> {
                let mut args = Vec::new();
                while let Some(arg) = seq.next_element()? {
                    args.push(arg);
                }
                Ok(Args(args))
            }
        }
        // Any length will do: the length of a tuple is only a hint to the JSON parser.
        deserializer.deserialize_tuple(usize::MAX, ArgsVisitor)
    }
}

/// The smallest `tracing` subscriber: warnings and errors of the libraries, one line each on
/// stderr. socketioxide-redis tells of dropped messages and failed requests only through
/// `tracing`; without a subscriber they would go unseen.
struct StderrWarnings;

impl tracing::Subscriber for StderrWarnings {
    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        Some(tracing::level_filters::LevelFilter::WARN)
    }
    fn enabled(&self, metadata: &tracing::Metadata<'_>) -> bool {
        *metadata.level() <= tracing::Level::WARN
    }
    // Spans are not shown: one id serves them all.
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        struct Line(String);
        impl tracing::field::Visit for Line {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
                use fmt::Write as _;
                let _ = match field.name() {
                    "message" => write!(self.0, " {value:?}"),
                    name => write!(self.0, " {name}={value:?}"),
                };
            }
        }
        let meta = event.metadata();
        let mut line = Line(format!(
            "socketioxide-redis peer: {} {}:",
            meta.level(),
            meta.target()
        ));
        event.record(&mut line);
        eprintln!("{}", line.0);
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}
