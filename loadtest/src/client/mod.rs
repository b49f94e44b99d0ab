//! The client engine: a lean Socket.IO v5 / Engine.IO v4 client that holds tens of thousands
//! of sessions from one process.
//!
//! # Using it
//!
//! ```no_run
//! use std::time::Duration;
//! use corral_loadtest::client::{Incoming, Session, SessionConfig, Target, TransportMode};
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let mut config = SessionConfig::new(Target::parse("http://127.0.0.1:4001")?);
//! config.transport = TransportMode::Upgrade;
//! let (session, mut events) = Session::connect(config.clone()).await?;
//! session.emit("join", "room-1")?;
//! let ack = session
//!     .emit_with_ack("echo", &("hello", 42), Duration::from_secs(5))
//!     .await?;
//! let (text, n): (String, u32) = ack.args.decode()?;
//! while let Some(incoming) = events.recv().await {
//!     match incoming {
//!         Incoming::Event { event, args, received_at, .. } if event == "message" => {
//!             let (room, payload): (String, serde_json::Value) = args.decode()?;
//!         }
//!         Incoming::Disconnected { reason, .. } => println!("ended: {}", reason.kind()),
//!         _ => {}
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! - [`Session::connect`] returns once the namespace is connected (its `CONNECT` answered), with
//!   an [`Events`] queue; [`Session::connect_with_handler`] calls a function instead (no queue,
//!   no task to read it: the function runs in the session's task).
//! - Everything received is [`Incoming`], stamped with the [`Instant`] it was read from the
//!   socket. Arguments stay raw ([`Args`]) until decoded with serde.
//! - A [`ConnectError`] and a [`DisconnectReason`] each have a `kind()` for reports.
//! - Server ack requests are answered by the [`AckPolicy`]: echo (the bench `ask`), a handler,
//!   or by hand.
//! - [`TransportMix`] and [`SourceIps`] spread transports and local addresses over sessions;
//!   [`Target`] is one server (a scenario gives each session one of several).
//!
//! # Cost
//!
//! A WebSocket session is one task and one TCP connection; what it holds while idle is the
//! WebSocket read buffer ([`SessionConfig::ws_read_buffer`], 1 KiB), the connection's write
//! buffer once something was written, and a few hundred bytes of state. Queues are allocated
//! only when something is queued. Received text is never copied (events and their arguments
//! are ranges of the frame they came in); a sent event is serialized once.
//!
//! A polling session has its task and one pooled connection for its pending poll; posts borrow
//! another pooled connection of the shared client of its source address.
//!
//! # Limits
//!
//! `http://` only, Engine.IO v4 only, one namespace per session, the common (JSON) parser.
//! Each source address gives at most ~28 000 connections to one server address (its ephemeral
//! ports).

mod config;
mod error;
mod packet;
mod plan;
mod shared;
mod task;
mod transport;

use std::{
    fmt,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use serde::Serialize;
use tokio::{sync::oneshot, task::AbortHandle};

pub use config::{AckHandler, AckPolicy, SessionConfig, Target, TargetError};
pub use error::{AckError, ConnectError, DecodeError, DisconnectReason, EmitError};
pub use packet::{Args, NO_ARGS, Prepared, Reply, Text};
pub use plan::{MixError, SourceIpError, SourceIps, TransportMix, TransportMode};
pub use shared::Events;
pub use transport::HttpClients;

use packet::{encode_event, encode_reply, normalize_namespace};
use shared::{Chan, Pending, Shared, Sink};

/// How long [`Session::close`] waits for the goodbye before it cuts the connection.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// The transport a session is on now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Transport {
    /// HTTP long-polling.
    Polling = 0,
    /// WebSocket.
    WebSocket = 1,
}

impl Transport {
    /// `polling` or `websocket` (the report's `by_transport` keys).
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Polling => "polling",
            Transport::WebSocket => "websocket",
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a session receives.
#[derive(Debug)]
pub enum Incoming {
    /// The server emitted an event.
    Event {
        /// Its name.
        event: Text,
        /// Its arguments.
        args: Args,
        /// When it was read from the socket (for a binary event: its last attachment).
        received_at: Instant,
        /// The server asked for an answer and the [`AckPolicy`] is `Manual`: answer with
        /// [`Session::ack`]. (Other policies answered already; this is then `None`.)
        ack: Option<u64>,
    },
    /// The answer to an [`Session::emit_expecting_ack`].
    Ack {
        /// The id `emit_expecting_ack` returned.
        id: u64,
        /// The answer's arguments.
        args: Args,
        /// When it was read from the socket.
        received_at: Instant,
    },
    /// An upgrading session is now on WebSocket.
    Upgraded {
        /// When the switch was made.
        at: Instant,
    },
    /// An upgrading session could not upgrade and stays on polling.
    UpgradeFailed {
        /// Why.
        error: String,
    },
    /// The session ended; nothing follows.
    Disconnected {
        /// Why.
        reason: DisconnectReason,
        /// When it was noticed.
        at: Instant,
    },
}

/// The answer to [`Session::emit_with_ack`].
#[derive(Debug, Clone)]
pub struct Ack {
    /// Its arguments.
    pub args: Args,
    /// When it was read from the socket.
    pub received_at: Instant,
}

/// A connected session. Clones are handles to the same session; when the last one is dropped
/// the session is closed (as by [`close`](Session::close), without waiting).
#[derive(Clone)]
pub struct Session {
    handle: Arc<Handle>,
}

struct Handle {
    shared: Arc<Shared>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.request_close();
    }
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("sid", &self.sid())
            .field("namespace", &self.namespace())
            .field("transport", &self.transport())
            .field("connected", &self.is_connected())
            .finish()
    }
}

/// Aborts the session task when connecting is given up (timeout, or the caller dropped the
/// `connect` future).
struct AbortOnDrop(Option<AbortHandle>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(abort) = self.0.take() {
            abort.abort();
        }
    }
}

/// Removes an awaited ack that will not be awaited any more (timeout, caller gone).
struct ForgetAck<'a> {
    shared: &'a Shared,
    id: Option<u64>,
}

impl Drop for ForgetAck<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            self.shared.take_ack(id);
        }
    }
}

impl Session {
    /// Opens a session: the transport, the Engine.IO handshake, the namespace `CONNECT`.
    /// Returns once the server accepted the namespace, within `config.connect_timeout`.
    pub async fn connect(config: SessionConfig) -> Result<(Session, Events), ConnectError> {
        let chan = Chan::new();
        let events = Events::new(chan.clone());
        let session = Session::start(config, Sink::Queue(chan)).await?;
        Ok((session, events))
    }

    /// Like [`connect`](Session::connect), but every [`Incoming`] is given to `handler`, called
    /// in the session's task (keep it quick; it must not block). Saves the queue and a reader
    /// task per session.
    pub async fn connect_with_handler(
        config: SessionConfig,
        handler: impl Fn(Incoming) + Send + Sync + 'static,
    ) -> Result<Session, ConnectError> {
        Session::start(config, Sink::Handler(Arc::new(handler))).await
    }

    async fn start(config: SessionConfig, sink: Sink) -> Result<Session, ConnectError> {
        let shared = Arc::new(Shared::new(
            normalize_namespace(&config.namespace).into_boxed_str(),
        ));
        let limit = config.connect_timeout;
        let (ready, outcome) = oneshot::channel();
        let task = tokio::spawn(task::run(Box::new(config), shared.clone(), sink, ready));
        let abort = task.abort_handle();
        let _ = shared.abort.set(abort.clone());
        let mut guard = AbortOnDrop(Some(abort));
        match tokio::time::timeout(limit, outcome).await {
            Ok(Ok(Ok(()))) => {
                guard.0 = None;
                Ok(Session {
                    handle: Arc::new(Handle { shared }),
                })
            }
            Ok(Ok(Err(err))) => Err(err),
            Ok(Err(_)) => Err(ConnectError::Closed("the session task stopped".into())),
            Err(_) => Err(ConnectError::Timeout),
        }
    }

    fn shared(&self) -> &Shared {
        &self.handle.shared
    }

    /// Emits `event` with `args`: a tuple is several arguments (`&("room", payload)`), any other
    /// value one argument, [`NO_ARGS`] none; `bytes::Bytes` values travel as binary
    /// attachments. Queued for the session's task; fails only if the session is closed.
    pub fn emit<T: Serialize + ?Sized>(&self, event: &str, args: &T) -> Result<(), EmitError> {
        let frames = encode_event(&self.shared().ns, event, args, None)?;
        self.shared().push(frames)
    }

    /// Emits a [`Prepared`] event (encoded once for many sessions). It must have been prepared
    /// for this session's namespace.
    pub fn send(&self, prepared: &Prepared) -> Result<(), EmitError> {
        if *prepared.namespace != *self.shared().ns {
            return Err(EmitError::Encode(format!(
                "prepared for namespace {}, the session is on {}",
                prepared.namespace,
                self.shared().ns
            )));
        }
        self.shared().push(prepared.frames.clone())
    }

    /// Emits `event` asking for an ack and waits for it, at most `timeout`.
    pub async fn emit_with_ack<T: Serialize + ?Sized>(
        &self,
        event: &str,
        args: &T,
        timeout: Duration,
    ) -> Result<Ack, AckError> {
        let (tx, rx) = oneshot::channel();
        let shared = self.shared();
        let id = shared.register_ack(Pending::Wait(tx))?;
        let mut forget = ForgetAck {
            shared,
            id: Some(id),
        };
        let frames = encode_event(&shared.ns, event, args, Some(id))?;
        shared.push(frames)?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok((args, received_at))) => {
                forget.id = None;
                Ok(Ack { args, received_at })
            }
            Ok(Err(_)) => Err(AckError::Closed),
            Err(_) => Err(AckError::Timeout),
        }
    }

    /// Emits `event` asking for an ack, without waiting: the answer arrives as
    /// [`Incoming::Ack`] with the returned id (no timeout: an unanswered id is simply never
    /// delivered). Cheaper than [`emit_with_ack`](Session::emit_with_ack) when the reader of
    /// the events measures the round trip.
    pub fn emit_expecting_ack<T: Serialize + ?Sized>(
        &self,
        event: &str,
        args: &T,
    ) -> Result<u64, EmitError> {
        let shared = self.shared();
        let id = shared.register_ack(Pending::Deliver)?;
        let sent = encode_event(&shared.ns, event, args, Some(id)).and_then(|f| shared.push(f));
        if let Err(err) = sent {
            shared.take_ack(id);
            return Err(err);
        }
        Ok(id)
    }

    /// Answers the server's ack request `id` (from an [`Incoming::Event`] under
    /// [`AckPolicy::Manual`]).
    pub fn ack(&self, id: u64, reply: &Reply) -> Result<(), EmitError> {
        self.shared()
            .push(encode_reply(&self.shared().ns, id, reply))
    }

    /// The transport the session is on now.
    pub fn transport(&self) -> Transport {
        self.shared().transport()
    }

    /// The local address of the session's current TCP connection (for polling: of the last
    /// poll).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.shared().local_addr()
    }

    /// The Engine.IO session id the server (or gateway) gave, as given.
    pub fn sid(&self) -> String {
        self.shared().sid()
    }

    /// The Socket.IO socket id from the namespace's `CONNECT` answer.
    pub fn socket_id(&self) -> String {
        self.shared().socket_id()
    }

    /// The namespace.
    pub fn namespace(&self) -> &str {
        &self.shared().ns
    }

    /// True until the session ends or a close is requested.
    pub fn is_connected(&self) -> bool {
        self.shared().is_connected()
    }

    /// Closes the session: `DISCONNECT` for the namespace, then the transport's close (an
    /// Engine.IO `close` for polling, a WebSocket close for WebSocket). Waits until the session
    /// has ended (at most a few seconds; then the connection is cut).
    pub async fn close(&self) {
        let shared = self.shared();
        shared.request_close();
        if tokio::time::timeout(CLOSE_TIMEOUT, shared.wait_ended())
            .await
            .is_err()
        {
            if let Some(abort) = shared.abort.get() {
                abort.abort();
            }
            shared.wait_ended().await;
        }
    }

    /// Waits until the session has ended, whatever the reason.
    pub async fn closed(&self) {
        self.shared().wait_ended().await;
    }
}
