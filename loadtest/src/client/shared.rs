//! State shared by a session's handles and its task, and the queue that carries what it
//! receives to the user.
//!
//! Both queues are a `Mutex<VecDeque>` with a [`Notify`]: an idle session holds no buffer at
//! all (a tokio channel preallocates a block of 32 slots per channel, several kilobytes for
//! two channels per session), and the deque keeps its capacity between bursts.

use std::{
    collections::VecDeque,
    net::SocketAddr,
    sync::{
        Arc, Mutex, MutexGuard, OnceLock,
        atomic::{AtomicBool, AtomicU8, Ordering},
    },
    time::Instant,
};

use bytes::{BufMut, Bytes, BytesMut};
use tokio::{sync::Notify, task::AbortHandle};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use super::{
    Incoming, Transport,
    error::EmitError,
    packet::{Args, Frames, encode_disconnect},
};

/// A deque whose capacity grew past this is shrunk once it is empty again.
const SHRINK_ABOVE: usize = 64;

/// Locks, ignoring poisoning: nothing here can be left half-updated by a panic.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One Engine.IO message to send.
#[derive(Debug)]
pub(crate) enum Frame {
    Text(Utf8Bytes),
    Binary(Bytes),
}

impl Frame {
    pub(crate) fn into_message(self) -> Message {
        match self {
            Frame::Text(text) => Message::Text(text),
            Frame::Binary(data) => Message::Binary(data),
        }
    }

    /// Bytes it takes in a polling payload.
    fn polling_len(&self) -> usize {
        match self {
            Frame::Text(text) => text.len(),
            Frame::Binary(data) => 1 + data.len().div_ceil(3) * 4,
        }
    }

    fn write_polling(self, out: &mut BytesMut) {
        match self {
            Frame::Text(text) => out.put_slice(text.as_bytes()),
            Frame::Binary(data) => {
                let packet = String::from(engineioxide_core::Packet::Binary(data));
                out.put_slice(packet.as_bytes());
            }
        }
    }
}

/// A pending ack: someone awaits it, or it is delivered as [`Incoming::Ack`].
pub(crate) enum Pending {
    Wait(tokio::sync::oneshot::Sender<(Args, Instant)>),
    Deliver,
}

const CONNECTING: u8 = 0;
const CONNECTED: u8 = 1;
const ENDED: u8 = 2;

struct Outbox {
    frames: VecDeque<Frame>,
    /// Close requested: no more emits, the task says goodbye.
    closing: bool,
    /// The task has ended.
    ended: bool,
}

struct Acks {
    next: u64,
    pending: Vec<(u64, Pending)>,
}

#[derive(Default)]
struct Info {
    sid: Box<str>,
    socket_id: Box<str>,
    local_addr: Option<SocketAddr>,
}

/// What a session's handles and its task share.
pub(crate) struct Shared {
    pub(crate) ns: Box<str>,
    out: Mutex<Outbox>,
    /// Wakes the task: something to send, or a close.
    pub(crate) wake: Notify,
    acks: Mutex<Acks>,
    state: AtomicU8,
    transport: AtomicU8,
    info: Mutex<Info>,
    /// Set once the end was reported (after `Disconnected` was delivered).
    done: AtomicBool,
    ended: Notify,
    pub(crate) abort: OnceLock<AbortHandle>,
}

impl Shared {
    pub(crate) fn new(ns: Box<str>) -> Shared {
        Shared {
            ns,
            out: Mutex::new(Outbox {
                frames: VecDeque::new(),
                closing: false,
                ended: false,
            }),
            wake: Notify::new(),
            acks: Mutex::new(Acks {
                next: 0,
                pending: Vec::new(),
            }),
            state: AtomicU8::new(CONNECTING),
            transport: AtomicU8::new(Transport::Polling as u8),
            info: Mutex::new(Info::default()),
            done: AtomicBool::new(false),
            ended: Notify::new(),
            abort: OnceLock::new(),
        }
    }

    /// Queues a user packet; refused once the session is closing.
    pub(crate) fn push(&self, frames: Frames) -> Result<(), EmitError> {
        {
            let mut out = lock(&self.out);
            if out.closing || out.ended {
                return Err(EmitError::Closed);
            }
            out.frames.push_back(Frame::Text(frames.text));
            out.frames
                .extend(frames.bins.into_iter().map(Frame::Binary));
        }
        self.wake.notify_one();
        Ok(())
    }

    /// Queues a protocol packet (pong, CONNECT, an ack answer).
    pub(crate) fn push_internal(&self, frames: Frames) {
        {
            let mut out = lock(&self.out);
            if out.ended {
                return;
            }
            out.frames.push_back(Frame::Text(frames.text));
            out.frames
                .extend(frames.bins.into_iter().map(Frame::Binary));
        }
        self.wake.notify_one();
    }

    pub(crate) fn push_text(&self, text: Utf8Bytes) {
        self.push_internal(Frames {
            text,
            bins: Vec::new(),
        });
    }

    pub(crate) fn pop(&self) -> Option<Frame> {
        let mut out = lock(&self.out);
        let frame = out.frames.pop_front();
        if frame.is_none() && out.frames.capacity() > SHRINK_ABOVE {
            out.frames = VecDeque::new();
        }
        frame
    }

    /// A polling payload of the queued frames, at most `max` bytes (or one frame), with
    /// `extra` (the Engine.IO close) at the end; `None` when there is nothing to send.
    pub(crate) fn take_payload(&self, max: usize, extra: Option<&str>) -> Option<Bytes> {
        let mut out = lock(&self.out);
        if out.frames.is_empty() && extra.is_none() {
            return None;
        }
        let mut body = BytesMut::new();
        while let Some(frame) = out.frames.front() {
            let len = frame.polling_len();
            if !body.is_empty() && body.len() + 1 + len > max {
                break;
            }
            let Some(frame) = out.frames.pop_front() else {
                break;
            };
            if !body.is_empty() {
                body.put_u8(0x1e);
            }
            frame.write_polling(&mut body);
        }
        if let Some(extra) = extra
            && out.frames.is_empty()
        {
            if !body.is_empty() {
                body.put_u8(0x1e);
            }
            body.put_slice(extra.as_bytes());
        }
        if out.frames.is_empty() && out.frames.capacity() > SHRINK_ABOVE {
            out.frames = VecDeque::new();
        }
        Some(body.freeze())
    }

    /// Asks the task to say goodbye (`DISCONNECT`, then the transport's close) and end.
    pub(crate) fn request_close(&self) {
        {
            let mut out = lock(&self.out);
            if out.closing || out.ended {
                return;
            }
            out.closing = true;
            if self.state.load(Ordering::Acquire) == CONNECTED {
                out.frames
                    .push_back(Frame::Text(encode_disconnect(&self.ns)));
            }
        }
        self.wake.notify_one();
    }

    pub(crate) fn is_closing(&self) -> bool {
        lock(&self.out).closing
    }

    pub(crate) fn register_ack(&self, pending: Pending) -> Result<u64, EmitError> {
        if self.state.load(Ordering::Acquire) == ENDED {
            return Err(EmitError::Closed);
        }
        let mut acks = lock(&self.acks);
        let id = acks.next;
        acks.next += 1;
        acks.pending.push((id, pending));
        Ok(id)
    }

    pub(crate) fn take_ack(&self, id: u64) -> Option<Pending> {
        let mut acks = lock(&self.acks);
        let index = acks.pending.iter().position(|(i, _)| *i == id)?;
        let (_, pending) = acks.pending.swap_remove(index);
        if acks.pending.is_empty() && acks.pending.capacity() > SHRINK_ABOVE {
            acks.pending = Vec::new();
        }
        Some(pending)
    }

    pub(crate) fn set_opened(&self, sid: &str) {
        lock(&self.info).sid = sid.into();
    }

    pub(crate) fn set_connected(&self, socket_id: &str) {
        lock(&self.info).socket_id = socket_id.into();
        self.state.store(CONNECTED, Ordering::Release);
    }

    pub(crate) fn set_transport(&self, transport: Transport, local_addr: Option<SocketAddr>) {
        self.transport.store(transport as u8, Ordering::Release);
        if local_addr.is_some() {
            lock(&self.info).local_addr = local_addr;
        }
    }

    pub(crate) fn set_local_addr(&self, local_addr: SocketAddr) {
        let mut info = lock(&self.info);
        if info.local_addr != Some(local_addr) {
            info.local_addr = Some(local_addr);
        }
    }

    pub(crate) fn transport(&self) -> Transport {
        if self.transport.load(Ordering::Acquire) == Transport::WebSocket as u8 {
            Transport::WebSocket
        } else {
            Transport::Polling
        }
    }

    pub(crate) fn local_addr(&self) -> Option<SocketAddr> {
        lock(&self.info).local_addr
    }

    pub(crate) fn sid(&self) -> String {
        lock(&self.info).sid.to_string()
    }

    pub(crate) fn socket_id(&self) -> String {
        lock(&self.info).socket_id.to_string()
    }

    pub(crate) fn is_connected(&self) -> bool {
        self.state.load(Ordering::Acquire) == CONNECTED && !lock(&self.out).closing
    }

    /// The task is ending: nothing more is sent, pending acks fail.
    pub(crate) fn finish(&self) {
        {
            let mut out = lock(&self.out);
            out.ended = true;
            out.frames = VecDeque::new();
        }
        self.state.store(ENDED, Ordering::Release);
        // Dropping the senders tells every awaiting `emit_with_ack` the session is gone.
        lock(&self.acks).pending = Vec::new();
    }

    /// The end has been reported: waiters wake.
    pub(crate) fn done(&self) {
        self.done.store(true, Ordering::Release);
        self.ended.notify_waiters();
    }

    /// Waits until the task has ended and reported it.
    pub(crate) async fn wait_ended(&self) {
        loop {
            let notified = self.ended.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.done.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }
}

/// Where a session's [`Incoming`] go.
pub(crate) enum Sink {
    Queue(Arc<Chan>),
    Handler(Arc<dyn Fn(Incoming) + Send + Sync>),
}

impl Sink {
    pub(crate) fn deliver(&self, incoming: Incoming) {
        match self {
            Sink::Queue(chan) => {
                {
                    let mut state = lock(&chan.state);
                    if state.receiver_gone {
                        return;
                    }
                    state.items.push_back(incoming);
                }
                chan.notify.notify_one();
            }
            Sink::Handler(handler) => handler(incoming),
        }
    }

    /// No more items: the receiver sees the end once it has taken the rest.
    pub(crate) fn finish(&self) {
        if let Sink::Queue(chan) = self {
            lock(&chan.state).sender_done = true;
            chan.notify.notify_one();
        }
    }
}

pub(crate) struct Chan {
    state: Mutex<ChanState>,
    notify: Notify,
}

struct ChanState {
    items: VecDeque<Incoming>,
    sender_done: bool,
    receiver_gone: bool,
}

impl Chan {
    pub(crate) fn new() -> Arc<Chan> {
        Arc::new(Chan {
            state: Mutex::new(ChanState {
                items: VecDeque::new(),
                sender_done: false,
                receiver_gone: false,
            }),
            notify: Notify::new(),
        })
    }
}

/// What a session receives, in order: events, acks delivered as events, upgrade news, and
/// finally [`Incoming::Disconnected`], after which [`recv`](Events::recv) returns `None`.
///
/// The queue is unbounded: read it, or use
/// [`Session::connect_with_handler`](super::Session::connect_with_handler). Dropping it
/// discards what the session receives from then on (the session stays connected).
pub struct Events {
    chan: Arc<Chan>,
}

impl Events {
    pub(crate) fn new(chan: Arc<Chan>) -> Events {
        Events { chan }
    }

    /// The next item; `None` after the session ended and everything was read.
    pub async fn recv(&mut self) -> Option<Incoming> {
        loop {
            let notified = self.chan.notify.notified();
            {
                let mut state = lock(&self.chan.state);
                if let Some(item) = pop_shrinking(&mut state.items) {
                    return Some(item);
                }
                if state.sender_done {
                    return None;
                }
            }
            notified.await;
        }
    }

    /// The next item if one is ready.
    pub fn try_recv(&mut self) -> Option<Incoming> {
        pop_shrinking(&mut lock(&self.chan.state).items)
    }

    /// Items waiting to be read.
    pub fn len(&self) -> usize {
        lock(&self.chan.state).items.len()
    }

    /// Whether no item is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn pop_shrinking(items: &mut VecDeque<Incoming>) -> Option<Incoming> {
    let item = items.pop_front();
    if item.is_none() && items.capacity() > SHRINK_ABOVE {
        *items = VecDeque::new();
    }
    item
}

impl Drop for Events {
    fn drop(&mut self) {
        let mut state = lock(&self.chan.state);
        state.receiver_gone = true;
        state.items = VecDeque::new();
    }
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events")
            .field("waiting", &self.len())
            .finish()
    }
}
