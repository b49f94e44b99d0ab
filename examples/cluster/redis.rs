//! A [`Driver`] over Redis pub/sub: the worked example of `docs/custom-adapter.md`, selected
//! with `--driver redis --redis-url redis://HOST:PORT`.
//!
//! # How the Driver rules map onto Redis
//!
//! - **Connections.** [`RedisDriver::connect`] makes one driver; its clones share two Redis
//!   connections: a multiplexed one for `PUBLISH` and a dedicated pub/sub one for `PSUBSCRIBE`.
//!   A background task connects, re-subscribes every live subscription after each (re)connect,
//!   pings the pub/sub connection every few seconds, and on any failure reconnects forever with
//!   exponential backoff (100 ms up to 4 s). [`Driver::status`] is `Connected` only while both
//!   connections are up and every subscription is in place.
//! - **Subjects.** A subject is used as the Redis channel name unchanged. A NATS pattern becomes
//!   a Redis glob that matches a superset of its subjects (`*` and a final `>` become `*`, the
//!   Redis glob specials `*?[]\` of literal tokens are escaped with `\`), and every message is
//!   checked with [`subject_matches`] before delivery, so a subscription receives exactly what
//!   NATS would deliver.
//! - **No echo.** Redis delivers a publish to every subscriber, the publishing client included,
//!   so each payload travels in a frame that names its sender:
//!
//!   ```text
//!   byte 0       frame version, 1
//!   bytes 1..17  origin: 16 random bytes, one value per connect() (shared by the clones)
//!   bytes 17..   the payload the cluster published, unchanged
//!   ```
//!
//!   The receiver drops frames carrying its own origin, and frames it does not understand
//!   (another version, too short: something else published on the channel).
//! - **Order.** Publishes go out in order on one connection, Redis pushes messages to a
//!   subscribing connection in the order it ran the publishes (whatever their channels), and one
//!   task hands them to the subscriptions, waiting when a subscription's buffer is full rather
//!   than dropping. So one publisher's order holds within a subscription, across subjects too.
//! - **Down bus.** While disconnected, `publish` fails at once with
//!   [`RedisDriverError::Disconnected`]; a publish that does not complete within 2 s fails too
//!   and makes the driver reconnect. Subscribing never fails: a subscription made while Redis is
//!   away starts receiving once the connection is back (as with NATS).
//! - **Size.** [`MAX_PAYLOAD`] (1 MiB, NATS's default) is the limit; bigger publishes are refused
//!   with [`RedisDriverError::TooLarge`] before anything is sent.

use std::{
    collections::BTreeSet,
    fmt,
    pin::Pin,
    sync::{Arc, Mutex, MutexGuard, Weak},
    task::{Context, Poll},
    time::Duration,
};

use ::redis::{
    AsyncConnectionConfig, Client, Msg, RedisError, Value,
    aio::{MultiplexedConnection, PubSubSink, PubSubStream},
};
use corral_adapter_nats::Bytes;
use corral_adapter_nats::{
    BusMessage, BusStatus, Driver, Subscription, driver::subscription, subjects::subject_matches,
};
use futures_util::{FutureExt, Stream, StreamExt};
use tokio::{
    sync::{Notify, mpsc, watch},
    time::{sleep, timeout},
};

/// The largest payload this driver publishes, in bytes (NATS's default).
pub(crate) const MAX_PAYLOAD: usize = 1024 * 1024;
/// Messages that may wait in one subscription before delivery waits for its reader.
const SUBSCRIPTION_BUFFER: usize = 4096;
/// How long opening a connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one command (PUBLISH, PSUBSCRIBE, PING) may take before the connection is
/// considered broken.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the idle pub/sub connection is checked.
const PING_INTERVAL: Duration = Duration::from_secs(5);
/// Reconnection backoff: first and longest wait.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(4);
/// A connection that lasted this long resets the backoff when it breaks.
const STABLE_CONNECTION: Duration = Duration::from_secs(10);

/// Version byte of the frame around every payload.
const FRAME_VERSION: u8 = 1;
/// Length of the origin id in a frame.
const ORIGIN_LEN: usize = 16;
/// Bytes a frame adds to a payload.
const HEADER_LEN: usize = 1 + ORIGIN_LEN;

/// Identifies one driver (and its clones) in the frames it publishes.
type Origin = [u8; ORIGIN_LEN];

/// What can go wrong with the Redis driver.
#[derive(Debug)]
pub(crate) enum RedisDriverError {
    /// The Redis URL is not usable.
    Url(RedisError),
    /// Redis is unreachable right now; the driver keeps reconnecting.
    Disconnected,
    /// The payload is over [`MAX_PAYLOAD`].
    TooLarge {
        /// Size of the payload.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// Redis refused or failed the publish.
    Publish(RedisError),
    /// Redis did not answer the publish in time.
    Timeout(Duration),
}

impl fmt::Display for RedisDriverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RedisDriverError::Url(err) => write!(f, "Redis URL: {err}"),
            RedisDriverError::Disconnected => {
                f.write_str("Redis is disconnected; the message was not sent")
            }
            RedisDriverError::TooLarge { size, max } => write!(
                f,
                "message of {size} bytes is over the Redis driver's limit of {max} bytes"
            ),
            RedisDriverError::Publish(err) => write!(f, "Redis PUBLISH: {err}"),
            RedisDriverError::Timeout(after) => {
                write!(f, "Redis PUBLISH got no answer within {after:?}")
            }
        }
    }
}

impl std::error::Error for RedisDriverError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RedisDriverError::Url(err) | RedisDriverError::Publish(err) => Some(err),
            _ => None,
        }
    }
}

/// A Redis pub/sub connection shared by every clone.
#[derive(Clone)]
pub(crate) struct RedisDriver {
    shared: Arc<Shared>,
}

impl fmt::Debug for RedisDriver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RedisDriver(..)")
    }
}

struct Shared {
    origin: Origin,
    status: watch::Receiver<BusStatus>,
    state: Mutex<State>,
    /// Serialises PSUBSCRIBE/PUNSUBSCRIBE with the re-subscription after a reconnect, so a
    /// subscription is never lost between the two.
    ops: tokio::sync::Mutex<()>,
    /// Asks the background task to drop the connection and reconnect.
    reconnect: Arc<Notify>,
    /// Dropped with the last clone (and subscription): the background task then stops.
    _alive: watch::Sender<()>,
}

#[derive(Default)]
struct State {
    next_id: u64,
    subscriptions: Vec<Sub>,
    /// Present while connected.
    connection: Option<Connection>,
    generation: u64,
}

struct Sub {
    id: u64,
    /// The NATS pattern asked for.
    pattern: String,
    /// The Redis glob subscribed for it.
    glob: String,
    tx: mpsc::Sender<BusMessage>,
}

struct Connection {
    /// Which connection this is, so a failure seen on an old one does not drop a new one.
    generation: u64,
    publisher: MultiplexedConnection,
    sink: PubSubSink,
}

impl RedisDriver {
    /// Starts connecting to the Redis server at `url` (`redis://[:password@]host:port[/db]`) and
    /// returns at once; the connection comes up, and comes back after failures, in the
    /// background. Call it inside a Tokio runtime.
    pub(crate) fn connect(url: &str) -> Result<RedisDriver, RedisDriverError> {
        let client = Client::open(url).map_err(RedisDriverError::Url)?;
        let (status_tx, status) = watch::channel(BusStatus::Disconnected);
        let (alive, alive_rx) = watch::channel(());
        let reconnect = Arc::new(Notify::new());
        let shared = Arc::new(Shared {
            origin: new_origin(),
            status,
            state: Mutex::default(),
            ops: tokio::sync::Mutex::new(()),
            reconnect: reconnect.clone(),
            _alive: alive,
        });
        tokio::spawn(supervise(
            Arc::downgrade(&shared),
            client,
            status_tx,
            alive_rx,
            reconnect,
        ));
        Ok(RedisDriver { shared })
    }

    /// Waits until Redis is reachable, at most `within`; false if it is not by then.
    pub(crate) async fn wait_connected(&self, within: Duration) -> bool {
        let mut status = self.shared.status.clone();
        timeout(within, status.wait_for(|s| *s == BusStatus::Connected))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A command failed on connection `generation`: reconnect, unless that connection is
    /// already gone.
    fn lost(&self, generation: u64) {
        let current = self.lock().connection.as_ref().map(|c| c.generation);
        if current == Some(generation) {
            self.reconnect.notify_one();
        }
    }

    /// Subscribes every live subscription on a new connection, then makes it the current one.
    async fn install(
        &self,
        publisher: MultiplexedConnection,
        mut sink: PubSubSink,
    ) -> Result<(), String> {
        let _ops = self.ops.lock().await;
        let globs: BTreeSet<String> = self
            .lock()
            .subscriptions
            .iter()
            .map(|s| s.glob.clone())
            .collect();
        if !globs.is_empty() {
            let globs: Vec<String> = globs.into_iter().collect();
            match timeout(COMMAND_TIMEOUT, sink.psubscribe(globs)).await {
                Ok(Ok(())) => {}
                Ok(Err(err)) => return Err(format!("PSUBSCRIBE: {err}")),
                Err(_) => return Err("PSUBSCRIBE timed out".into()),
            }
        }
        let mut state = self.lock();
        state.generation += 1;
        state.connection = Some(Connection {
            generation: state.generation,
            publisher,
            sink,
        });
        Ok(())
    }

    /// Drops the PSUBSCRIBE of `glob` if no subscription needs it any more.
    async fn unsubscribe_if_unused(&self, glob: String) {
        let _ops = self.ops.lock().await;
        let connection = {
            let state = self.lock();
            if state.subscriptions.iter().any(|s| s.glob == glob) {
                return;
            }
            state
                .connection
                .as_ref()
                .map(|c| (c.generation, c.sink.clone()))
        };
        // While disconnected there is nothing to undo: the next connection will not subscribe it.
        let Some((generation, mut sink)) = connection else {
            return;
        };
        match timeout(COMMAND_TIMEOUT, sink.punsubscribe(&glob)).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => {
                tracing::debug!(%err, glob, "Redis PUNSUBSCRIBE failed; reconnecting");
                self.lost(generation);
            }
            Err(_) => {
                tracing::debug!(glob, "Redis PUNSUBSCRIBE timed out; reconnecting");
                self.lost(generation);
            }
        }
    }

    /// Hands a received message to the subscriptions it is for.
    async fn deliver(&self, msg: &Msg) {
        // Everything is subscribed with PSUBSCRIBE, so every message names the glob it matched.
        let Ok(Some(glob)) = msg.get_pattern::<Option<String>>() else {
            return;
        };
        let Ok(subject) = msg.get_channel::<String>() else {
            return;
        };
        let Some((origin, body)) = unframe(msg.get_payload_bytes()) else {
            tracing::debug!(subject, "Redis message without a Corral frame dropped");
            return;
        };
        if origin == &self.origin {
            return; // our own publish: no echo
        }
        // Redis sends one message per matching glob; each subscription takes it only from its
        // own glob, so it gets every message once.
        let targets: Vec<mpsc::Sender<BusMessage>> = self
            .lock()
            .subscriptions
            .iter()
            .filter(|s| s.glob == glob && subject_matches(&s.pattern, &subject))
            .map(|s| s.tx.clone())
            .collect();
        if targets.is_empty() {
            return;
        }
        let payload = Bytes::copy_from_slice(body);
        for tx in targets {
            // Redis pub/sub has no headers: traces stop at this bus.
            let message = BusMessage::new(subject.clone(), payload.clone());
            // A subscription dropped meanwhile is simply gone.
            let _ = tx.send(message).await;
        }
    }
}

impl Driver for RedisDriver {
    type Error = RedisDriverError;

    async fn publish(&self, subject: String, payload: Bytes) -> Result<(), RedisDriverError> {
        if payload.len() > MAX_PAYLOAD {
            return Err(RedisDriverError::TooLarge {
                size: payload.len(),
                max: MAX_PAYLOAD,
            });
        }
        let Some((generation, mut publisher)) = self
            .shared
            .lock()
            .connection
            .as_ref()
            .map(|c| (c.generation, c.publisher.clone()))
        else {
            return Err(RedisDriverError::Disconnected);
        };
        let mut publish = ::redis::cmd("PUBLISH");
        publish
            .arg(subject)
            .arg(frame(&self.shared.origin, &payload));
        match timeout(COMMAND_TIMEOUT, publish.query_async::<i64>(&mut publisher)).await {
            // The answer is the number of receivers; nobody listening is not an error.
            Ok(Ok(_receivers)) => Ok(()),
            Ok(Err(err)) => {
                if err.is_io_error() || err.is_connection_dropped() || err.is_timeout() {
                    self.shared.lost(generation);
                }
                Err(RedisDriverError::Publish(err))
            }
            Err(_) => {
                self.shared.lost(generation);
                Err(RedisDriverError::Timeout(COMMAND_TIMEOUT))
            }
        }
    }

    async fn subscribe(&self, pattern: String) -> Result<Subscription, RedisDriverError> {
        let shared = &self.shared;
        let glob = redis_glob(&pattern);
        let (tx, rx) = mpsc::channel(SUBSCRIPTION_BUFFER);
        let ops = shared.ops.lock().await;
        let (id, connection) = {
            let mut state = shared.lock();
            let id = state.next_id;
            state.next_id += 1;
            state.subscriptions.push(Sub {
                id,
                pattern,
                glob: glob.clone(),
                tx,
            });
            let connection = state
                .connection
                .as_ref()
                .map(|c| (c.generation, c.sink.clone()));
            (id, connection)
        };
        // Connected: subscribe now, so what is published after this returns is received.
        // Disconnected: the next connection subscribes it.
        if let Some((generation, mut sink)) = connection {
            match timeout(COMMAND_TIMEOUT, sink.psubscribe(&glob)).await {
                Ok(Ok(())) => {}
                Ok(Err(err)) => {
                    tracing::warn!(%err, glob, "Redis PSUBSCRIBE failed; reconnecting");
                    shared.lost(generation);
                }
                Err(_) => {
                    tracing::warn!(glob, "Redis PSUBSCRIBE timed out; reconnecting");
                    shared.lost(generation);
                }
            }
        }
        drop(ops);
        Ok(subscription(RedisSubscription {
            rx,
            _guard: SubscriptionGuard {
                shared: shared.clone(),
                id,
            },
        }))
    }

    fn max_payload(&self) -> usize {
        MAX_PAYLOAD
    }

    fn status(&self) -> watch::Receiver<BusStatus> {
        self.shared.status.clone()
    }
}

/// The messages of one subscription.
struct RedisSubscription {
    rx: mpsc::Receiver<BusMessage>,
    _guard: SubscriptionGuard,
}

impl Stream for RedisSubscription {
    type Item = BusMessage;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<BusMessage>> {
        self.rx.poll_recv(cx)
    }
}

/// Ends a subscription when its stream is dropped.
struct SubscriptionGuard {
    shared: Arc<Shared>,
    id: u64,
}

impl Drop for SubscriptionGuard {
    fn drop(&mut self) {
        let glob = {
            let mut state = self.shared.lock();
            let Some(index) = state.subscriptions.iter().position(|s| s.id == self.id) else {
                return;
            };
            let removed = state.subscriptions.remove(index);
            if state.subscriptions.iter().any(|s| s.glob == removed.glob) {
                return;
            }
            removed.glob
        };
        // Delivery to this subscription stopped above; telling Redis is only an optimisation.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let shared = self.shared.clone();
            runtime.spawn(async move { shared.unsubscribe_if_unused(glob).await });
        }
    }
}

/// Why a connection ended.
enum Ended {
    /// Every clone of the driver is gone: stop.
    DriverDropped,
    /// The connection failed: reconnect.
    Lost(String),
}

/// Keeps the driver connected until every clone is dropped.
async fn supervise(
    shared: Weak<Shared>,
    client: Client,
    status: watch::Sender<BusStatus>,
    mut alive: watch::Receiver<()>,
    reconnect: Arc<Notify>,
) {
    let addr = client.get_connection_info().addr().to_string();
    let mut backoff = BACKOFF_MIN;
    let mut failures = 0u32;
    loop {
        let attempt = tokio::select! {
            attempt = open(&client) => attempt,
            _ = alive.changed() => return,
        };
        let installed = match attempt {
            Ok((publisher, sink, stream)) => {
                let Some(this) = shared.upgrade() else { return };
                let installed = this.install(publisher, sink.clone()).await;
                drop(this);
                installed.map(|()| (sink, stream))
            }
            Err(err) => Err(err),
        };
        match installed {
            Ok((sink, stream)) => {
                // A reconnect asked for on an earlier connection does not concern this one.
                let _ = reconnect.notified().now_or_never();
                status.send_replace(BusStatus::Connected);
                tracing::info!(addr, "Redis connected");
                failures = 0;
                let since = tokio::time::Instant::now();
                let ended = pump(&shared, stream, sink, &mut alive, &reconnect).await;
                if let Some(this) = shared.upgrade() {
                    this.lock().connection = None;
                }
                status.send_replace(BusStatus::Disconnected);
                match ended {
                    Ended::DriverDropped => return,
                    Ended::Lost(why) => tracing::warn!(
                        addr,
                        why,
                        "Redis connection lost; reconnecting in the background"
                    ),
                }
                // A connection that held a while starts the backoff over; one that breaks at
                // once (a server that accepts and drops us) keeps growing it.
                if since.elapsed() >= STABLE_CONNECTION {
                    backoff = BACKOFF_MIN;
                }
            }
            Err(err) => {
                failures = failures.saturating_add(1);
                if failures == 1 {
                    tracing::warn!(addr, err, "Redis unreachable; retrying in the background");
                } else {
                    tracing::debug!(addr, err, failures, "Redis still unreachable");
                }
            }
        }
        tokio::select! {
            _ = sleep(backoff) => {}
            _ = alive.changed() => return,
        }
        backoff = backoff.saturating_mul(2).min(BACKOFF_MAX);
    }
}

/// Opens the publishing and the subscribing connection.
async fn open(
    client: &Client,
) -> Result<(MultiplexedConnection, PubSubSink, PubSubStream), String> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(COMMAND_TIMEOUT));
    let publisher = client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(|e| e.to_string())?;
    let pubsub = match timeout(CONNECT_TIMEOUT, client.get_async_pubsub()).await {
        Ok(Ok(pubsub)) => pubsub,
        Ok(Err(err)) => return Err(err.to_string()),
        Err(_) => return Err("connecting timed out".into()),
    };
    let (sink, stream) = pubsub.split();
    Ok((publisher, sink, stream))
}

/// Delivers what arrives on one connection until it fails or the driver is dropped.
async fn pump(
    shared: &Weak<Shared>,
    mut stream: PubSubStream,
    mut sink: PubSubSink,
    alive: &mut watch::Receiver<()>,
    reconnect: &Notify,
) -> Ended {
    let mut ping =
        tokio::time::interval_at(tokio::time::Instant::now() + PING_INTERVAL, PING_INTERVAL);
    loop {
        tokio::select! {
            msg = stream.next() => {
                let Some(msg) = msg else {
                    return Ended::Lost("connection closed".into());
                };
                let Some(this) = shared.upgrade() else { return Ended::DriverDropped };
                this.deliver(&msg).await;
            }
            _ = ping.tick() => {
                match timeout(COMMAND_TIMEOUT, sink.ping::<Value>()).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(err)) => return Ended::Lost(format!("PING failed: {err}")),
                    Err(_) => return Ended::Lost("PING timed out".into()),
                }
            }
            () = reconnect.notified() => return Ended::Lost("a command failed".into()),
            _ = alive.changed() => return Ended::DriverDropped,
        }
    }
}

/// A Redis glob matching every subject the NATS `pattern` matches (and maybe more).
pub(crate) fn redis_glob(pattern: &str) -> String {
    let mut glob = String::with_capacity(pattern.len() + 4);
    for (i, token) in pattern.split('.').enumerate() {
        if i > 0 {
            glob.push('.');
        }
        match token {
            "*" => glob.push('*'),
            // `>` matches the rest of the subject, whatever follows it in the pattern.
            ">" => {
                glob.push('*');
                break;
            }
            literal => {
                for c in literal.chars() {
                    if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                        glob.push('\\');
                    }
                    glob.push(c);
                }
            }
        }
    }
    glob
}

/// `payload` in a frame naming its sender.
fn frame(origin: &Origin, payload: &[u8]) -> Vec<u8> {
    let mut framed = Vec::with_capacity(HEADER_LEN + payload.len());
    framed.push(FRAME_VERSION);
    framed.extend_from_slice(origin);
    framed.extend_from_slice(payload);
    framed
}

/// The sender and payload of a frame, or `None` for bytes that are not one.
fn unframe(data: &[u8]) -> Option<(&Origin, &[u8])> {
    let (&version, rest) = data.split_first()?;
    if version != FRAME_VERSION {
        return None;
    }
    let (origin, payload) = rest.split_at_checked(ORIGIN_LEN)?;
    Some((origin.try_into().ok()?, payload))
}

/// 16 bytes that differ between drivers, in this process and in others (not a secret: they
/// only tell a driver's own messages apart).
fn new_origin() -> Origin {
    use std::{
        hash::{BuildHasher, Hasher},
        sync::atomic::{AtomicU64, Ordering},
    };
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mut origin = [0u8; ORIGIN_LEN];
    for (i, chunk) in origin.chunks_mut(8).enumerate() {
        // RandomState is seeded from the OS, and differs on every call.
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(count);
        hasher.write_u128(nanos);
        hasher.write_u32(std::process::id());
        hasher.write_usize(i);
        chunk.copy_from_slice(&hasher.finish().to_le_bytes());
    }
    origin
}

#[cfg(test)]
mod tests {
    use std::process::{Child, Command, Stdio};

    use super::*;

    /// Redis glob matching for the patterns [`redis_glob`] makes (`*`, `\` escapes, literals),
    /// to check they cover what NATS matches.
    fn glob_matches(glob: &[u8], subject: &[u8]) -> bool {
        match glob.split_first() {
            None => subject.is_empty(),
            Some((b'*', rest)) => (0..=subject.len()).any(|i| glob_matches(rest, &subject[i..])),
            Some((b'\\', rest)) => match (rest.split_first(), subject.split_first()) {
                (Some((g, rest)), Some((s, subject))) if g == s => glob_matches(rest, subject),
                _ => false,
            },
            Some((g, rest)) => match subject.split_first() {
                Some((s, subject)) if g == s => glob_matches(rest, subject),
                _ => false,
            },
        }
    }

    #[test]
    fn globs_translate_wildcards_and_escape_specials() {
        // What a node subscribes (see corral_adapter_nats::subjects).
        assert_eq!(redis_glob("corral.ns.*.>"), "corral.ns.*.*");
        assert_eq!(redis_glob("corral.res.AbC-_1"), "corral.res.AbC-_1");
        assert_eq!(redis_glob("corral.ns.*.all"), "corral.ns.*.all");
        assert_eq!(
            redis_glob("corral.ns.*.node.AbC-_1"),
            "corral.ns.*.node.AbC-_1"
        );
        assert_eq!(redis_glob("corral.res.x"), "corral.res.x");
        assert_eq!(redis_glob("a.>"), "a.*");
        assert_eq!(redis_glob("a.>.ignored"), "a.*");
        assert_eq!(redis_glob(">"), "*");
        assert_eq!(redis_glob("a?.[b].c\\d.e*f"), "a\\?.\\[b\\].c\\\\d.e\\*f");
    }

    #[test]
    fn globs_cover_exactly_what_subject_matches_filters() {
        let patterns = [
            "corral.ns.*.>",
            "corral.ns.*.all",
            "corral.ns.*.node.u1",
            "corral.res.u1",
            "corral.cluster.heartbeat",
            "a.>",
            "a.*.c",
            ">",
            "*",
            "x?.[y]",
            "e*f.g",
        ];
        let subjects = [
            "corral.ns.Lw.all",
            "corral.ns.Lw.node.u1",
            "corral.ns.Lw.node.u2",
            "corral.ns.a.b.all",
            "corral.ns.Lw",
            "corral.res.Lw.all",
            "corral.res.u1",
            "corral.res.u10",
            "corral.cluster.heartbeat",
            "a",
            "a.b",
            "a.b.c",
            "a.b.d.c",
            "x?.[y]",
            "xz.y",
            "e*f.g",
            "eXf.g",
            "single",
        ];
        for pattern in patterns {
            let glob = redis_glob(pattern);
            for subject in subjects {
                if subject_matches(pattern, subject) {
                    assert!(
                        glob_matches(glob.as_bytes(), subject.as_bytes()),
                        "{pattern:?} matches {subject:?} but its glob {glob:?} does not"
                    );
                }
            }
        }
        // The glob is only a superset: the filter is what makes delivery exact.
        assert!(glob_matches(b"a.*.c", b"a.b.d.c"));
        assert!(!subject_matches("a.*.c", "a.b.d.c"));
        assert!(!glob_matches(b"e\\*f.g", b"eXf.g"));
    }

    #[test]
    fn frames_carry_the_origin_and_the_payload_unchanged() {
        let origin = new_origin();
        assert_ne!(origin, new_origin());
        for payload in [&b""[..], b"x", &[0u8; 300][..]] {
            let framed = frame(&origin, payload);
            assert_eq!(framed.len(), HEADER_LEN + payload.len());
            assert_eq!(framed[0], FRAME_VERSION);
            assert_eq!(unframe(&framed), Some((&origin, payload)));
        }
    }

    #[test]
    fn foreign_bytes_are_not_frames() {
        assert_eq!(unframe(b""), None);
        assert_eq!(unframe(&[FRAME_VERSION]), None);
        assert_eq!(unframe(&[FRAME_VERSION; HEADER_LEN - 1]), None);
        assert_eq!(unframe(&[2; 40]), None);
        assert_eq!(unframe(b"hello, not a frame"), None);
        // Exactly a header: an empty payload.
        assert!(unframe(&[FRAME_VERSION; HEADER_LEN]).is_some_and(|(_, p)| p.is_empty()));
    }

    /// A redis-server on `port`, killed when dropped.
    struct Server(Child);

    impl Server {
        fn start(port: u16) -> Option<Server> {
            Command::new("redis-server")
                .args([
                    "--port",
                    &port.to_string(),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .ok()
                .map(Server)
        }
    }

    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    async fn next(sub: &mut Subscription) -> Option<BusMessage> {
        timeout(Duration::from_millis(500), sub.next())
            .await
            .ok()
            .flatten()
    }

    async fn connected(driver: &RedisDriver) {
        assert!(driver.wait_connected(Duration::from_secs(10)).await);
    }

    /// Against a real redis-server (skipped when there is none): filtering, no echo, limits,
    /// failing fast while down, and re-subscribing after Redis comes back.
    #[tokio::test]
    async fn works_against_redis_and_survives_a_restart() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let Some(server) = Server::start(port) else {
            eprintln!("redis-server not found; skipping (scripts/setup --test installs it)");
            return;
        };
        let url = format!("redis://127.0.0.1:{port}");
        let (a, b) = (
            RedisDriver::connect(&url).unwrap(),
            RedisDriver::connect(&url).unwrap(),
        );
        let (a2, b2) = (a.clone(), b.clone());
        connected(&a).await;
        connected(&b).await;

        let mut one = b.subscribe("t.*.x".into()).await.unwrap();
        let mut rest = b2.subscribe("t.>".into()).await.unwrap();
        let mut special = b.subscribe("s[1].?".into()).await.unwrap();
        let mut own = a.subscribe("t.>".into()).await.unwrap();

        a.publish("t.1.x".into(), Bytes::from_static(b"hi"))
            .await
            .unwrap();
        a2.publish("t.1.2.x".into(), Bytes::from_static(b"deep"))
            .await
            .unwrap();
        a.publish("s[1].?".into(), Bytes::from_static(b"lit"))
            .await
            .unwrap();
        a.publish("s1.x".into(), Bytes::from_static(b"no"))
            .await
            .unwrap();
        let m = next(&mut one).await.unwrap();
        assert_eq!((m.subject.as_str(), &m.payload[..]), ("t.1.x", &b"hi"[..]));
        assert!(next(&mut one).await.is_none(), "t.*.x got t.1.2.x");
        assert_eq!(next(&mut rest).await.unwrap().payload, "hi");
        assert_eq!(next(&mut rest).await.unwrap().payload, "deep");
        assert_eq!(next(&mut special).await.unwrap().payload, "lit");
        assert!(next(&mut special).await.is_none());
        // A clone is the same connection: nothing comes back to `a`, but `b`'s publish does.
        assert!(next(&mut own).await.is_none(), "echo");
        b.publish("t.back".into(), Bytes::from_static(b"back"))
            .await
            .unwrap();
        assert_eq!(next(&mut own).await.unwrap().subject, "t.back");

        // Order from one publisher, across the subjects one subscription matches.
        for i in 0..200u32 {
            let subject = if i % 2 == 0 { "t.o" } else { "t.o.node.x" };
            a.publish(subject.into(), Bytes::from(i.to_string()))
                .await
                .unwrap();
        }
        for i in 0..200u32 {
            assert_eq!(next(&mut rest).await.unwrap().payload, i.to_string());
        }

        let err = a
            .publish("t.big".into(), Bytes::from(vec![0u8; MAX_PAYLOAD + 1]))
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("over the Redis driver's limit"),
            "{err}"
        );

        // Down: the status says so and publishing fails at once.
        drop(server);
        let mut status = a.status();
        timeout(
            Duration::from_secs(10),
            status.wait_for(|s| *s == BusStatus::Disconnected),
        )
        .await
        .unwrap()
        .unwrap();
        let started = std::time::Instant::now();
        let err = a
            .publish("t.1.x".into(), Bytes::from_static(b"lost"))
            .await
            .unwrap_err();
        assert!(matches!(err, RedisDriverError::Disconnected), "{err}");
        assert!(started.elapsed() < Duration::from_millis(50));
        // Subscribing while down works and takes effect once Redis is back.
        let mut late = b.subscribe("late.*".into()).await.unwrap();

        // Back: both reconnect and every subscription is in place again.
        let _server = Server::start(port).unwrap();
        connected(&a).await;
        connected(&b).await;
        a.publish("t.2.x".into(), Bytes::from_static(b"again"))
            .await
            .unwrap();
        a.publish("late.1".into(), Bytes::from_static(b"late"))
            .await
            .unwrap();
        assert_eq!(next(&mut one).await.unwrap().payload, "again");
        assert_eq!(next(&mut late).await.unwrap().payload, "late");

        // A dropped subscription receives nothing and the others go on.
        drop(one);
        a.publish("t.3.x".into(), Bytes::from_static(b"after"))
            .await
            .unwrap();
        assert_eq!(next(&mut rest).await.unwrap().payload, "again");
        assert_eq!(next(&mut rest).await.unwrap().payload, "after");
    }
}
