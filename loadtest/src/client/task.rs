//! The session task: one per session. It opens the transport, connects the namespace, then
//! loops: sends what the handles queued, answers pings, delivers what arrives, watches the
//! ping deadline and, for an upgrading session, moves from polling to WebSocket.
//!
//! WebSocket: one task and one TCP connection per session, nothing else. Polling: the task
//! keeps one long poll pending and at most one POST in flight (both on the shared, pooled
//! hyper client of its source address). Upgrade: polling plus a probe on a new WebSocket;
//! once the server answered `3probe`, no new poll or post starts, the pending ones end (the
//! server answers the poll with a `noop`), `5` goes out on the WebSocket and the session
//! carries on there with whatever was queued meanwhile.

use std::{
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use futures_util::{
    FutureExt, SinkExt, StreamExt,
    future::{BoxFuture, Fuse, FusedFuture},
};
use http::{Method, Uri};
use serde::Deserialize;
use tokio::{
    sync::oneshot,
    time::{Sleep, sleep},
};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use super::{
    Incoming, Transport,
    config::{AckPolicy, SessionConfig},
    error::{ConnectError, Failure},
    packet::{
        Args, Engine, Open, Reply, Text, encode_connect, encode_reply, parse_engine, parse_event,
        parse_open, parse_sio,
    },
    plan::TransportMode,
    shared::{Pending, Shared, Sink},
    transport::{Polling, Ws, WsSetup, request, ws_connect},
};

/// Until the open packet says otherwise, no ping deadline (the connect timeout applies).
const NO_DEADLINE: Duration = Duration::from_secs(24 * 3600);
/// How long a closing WebSocket waits for the server to close the TCP connection first (so
/// that TIME_WAIT, and its port, stays on the server's side).
const WS_CLOSE_WAIT: Duration = Duration::from_secs(2);
/// How long a closing polling session waits for its pending poll to end.
const GOODBYE_WAIT: Duration = Duration::from_secs(1);
/// Pause between polls answered `noop` outside an upgrade.
const NOOP_PAUSE: Duration = Duration::from_millis(100);

/// The namespace connection outcome, for [`Session::connect`](super::Session::connect).
pub(crate) type Ready = oneshot::Sender<Result<(), ConnectError>>;

/// A binary packet waiting for its attachments.
struct Partial {
    /// `Some(name)` for an event, `None` for an ack.
    name: Option<Text>,
    args: Args,
    ack: Option<u64>,
    expected: usize,
}

/// What the task knows besides its transport.
struct Core {
    shared: Arc<Shared>,
    sink: Sink,
    ack_policy: AckPolicy,
    ready: Option<Ready>,
    partial: Option<Partial>,
    ping_window: Duration,
    ping: Pin<Box<Sleep>>,
    /// The server's `maxPayload`: the largest POST body it takes.
    max_payload: usize,
    /// Why the task ended; unset if it was aborted.
    end: Option<Failure>,
}

/// Runs a session to its end. The namespace outcome goes to `ready`; afterwards the end is
/// delivered as [`Incoming::Disconnected`].
pub(crate) async fn run(config: Box<SessionConfig>, shared: Arc<Shared>, sink: Sink, ready: Ready) {
    let mut core = Core {
        shared,
        sink,
        ack_policy: config.ack_policy.clone(),
        ready: Some(ready),
        partial: None,
        ping_window: NO_DEADLINE,
        ping: Box::pin(sleep(NO_DEADLINE)),
        max_payload: 100_000,
        end: None,
    };
    let result = drive(&mut core, config).await;
    core.end = Some(result.err().unwrap_or(Failure::ClientClose));
    // Dropping the core reports the end (also when the task is aborted).
}

impl Drop for Core {
    fn drop(&mut self) {
        self.shared.finish();
        match self.ready.take() {
            Some(ready) => {
                let err = self
                    .end
                    .take()
                    .map_or(ConnectError::Timeout, Failure::into_connect_error);
                let _ = ready.send(Err(err));
            }
            None => {
                let reason = self
                    .end
                    .take()
                    .unwrap_or(Failure::ClientClose)
                    .into_reason();
                self.sink.deliver(Incoming::Disconnected {
                    reason,
                    at: Instant::now(),
                });
            }
        }
        self.sink.finish();
        self.shared.done();
    }
}

// The task's future is as big as its largest state, for every session: what only polling and
// upgrading sessions need is boxed, and so is what is needed only once (handshakes, the close).
// `config` is boxed too, as arguments stay in an async fn's state for its whole life.
async fn drive(core: &mut Core, config: Box<SessionConfig>) -> Result<(), Failure> {
    let ws_setup = WsSetup {
        addr: config.target.addr_for(config.source_ip),
        source: config.source_ip,
        read_buffer: config.ws_read_buffer.max(128),
        max_message: config.max_message,
    };
    core.shared
        .push_text(encode_connect(&core.shared.ns, config.auth.as_ref()));
    if let Some(ip) = config.source_ip
        && ip.is_ipv4() != ws_setup.addr.is_ipv4()
    {
        return Err(Failure::Bind(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "source {ip} cannot reach {}: another address family",
                ws_setup.addr
            ),
        )));
    }
    if config.transport != TransportMode::WebSocket {
        return Box::pin(drive_polling(core, config, ws_setup)).await;
    }
    let path = config.path_and_query("websocket", None);
    let target = config.target.clone();
    drop(config);
    let (mut ws, local) = Box::pin(ws_connect(&ws_setup, target.authority(), &path)).await?;
    drop((path, target));
    core.shared.set_transport(Transport::WebSocket, Some(local));
    let open = Box::pin(read_open(&mut ws)).await?;
    core.opened(&open);
    run_ws(core, &mut ws).await
}

/// A polling session, and an upgrading one until (and after) its upgrade.
async fn drive_polling(
    core: &mut Core,
    config: Box<SessionConfig>,
    ws_setup: WsSetup,
) -> Result<(), Failure> {
    let client = config.http.get(config.source_ip);
    let host = config.target.host_header().clone();
    let addr = ws_setup.addr;
    let uri = |sid: Option<&str>| {
        format!("http://{addr}{}", config.path_and_query("polling", sid))
            .parse::<Uri>()
            .map_err(|e| Failure::protocol(format!("bad request URI: {e}")))
    };
    let (body, at, local) = Box::pin(request(
        &client,
        Method::GET,
        &uri(None)?,
        &host,
        Bytes::new(),
        config.max_message,
    ))
    .await?;
    core.shared.set_transport(Transport::Polling, local);
    let text = payload_text(body)?;
    let mut packets = split_payload(&text);
    let open = match packets.next().map(|p| parse_engine(&p)) {
        Some(Ok(Engine::Open(open))) => parse_open(&open)?,
        Some(Err(err)) => return Err(err),
        _ => {
            return Err(Failure::protocol(
                "the handshake did not start with an open packet",
            ));
        }
    };
    core.opened(&open);
    for packet in packets.filter(|p| !p.is_empty()) {
        core.on_engine(parse_engine(&packet)?, at)?;
    }
    let polling = Polling {
        client,
        uri: uri(Some(&open.sid))?,
        host,
        max_body: config.max_message,
        post_timeout: config.request_timeout,
    };
    let probe_to = if config.transport != TransportMode::Upgrade {
        None
    } else if open.upgrades.iter().any(|u| u == "websocket") {
        Some(Probe {
            host: config.target.authority().to_owned(),
            path: config.path_and_query("websocket", Some(&open.sid)),
        })
    } else {
        core.sink.deliver(Incoming::UpgradeFailed {
            error: "the server offers no WebSocket upgrade".into(),
        });
        None
    };
    let probe_timeout = config.request_timeout;
    drop((config, open, text));
    let (mut ws, local) = run_polling(core, &polling, probe_to, ws_setup, probe_timeout).await?;
    drop(polling);
    ws.send(Message::Text(Utf8Bytes::from_static("5")))
        .await
        .map_err(Failure::ws)?;
    core.shared.set_transport(Transport::WebSocket, Some(local));
    core.sink.deliver(Incoming::Upgraded { at: Instant::now() });
    run_ws(core, &mut ws).await
}

/// The first message of a WebSocket-only session: the open packet.
async fn read_open(ws: &mut Ws) -> Result<Open, Failure> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => {
                return match parse_engine(&Text::new(text))? {
                    Engine::Open(open) => parse_open(&open),
                    other => Err(Failure::protocol(format!(
                        "expected the open packet, got {}",
                        engine_name(&other)
                    ))),
                };
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
            Some(Ok(Message::Binary(_))) => {
                return Err(Failure::protocol("expected the open packet, got binary"));
            }
            Some(Ok(Message::Close(_))) | None => return Err(Failure::Closed),
            Some(Err(err)) => return Err(Failure::ws(err)),
        }
    }
}

fn engine_name(packet: &Engine) -> &'static str {
    match packet {
        Engine::Open(_) => "open",
        Engine::Close => "close",
        Engine::Ping => "ping",
        Engine::Pong => "pong",
        Engine::PongProbe => "pong probe",
        Engine::Message(_) => "message",
        Engine::Upgrade => "upgrade",
        Engine::Noop => "noop",
        Engine::Binary(_) => "binary",
    }
}

/// The WebSocket loop: until the connection ends, the ping deadline passes or the session is
/// closed (then `Ok`).
async fn run_ws(core: &mut Core, ws: &mut Ws) -> Result<(), Failure> {
    let failure = loop {
        // Read before draining: a close queues its DISCONNECT before it is seen here.
        let closing = core.shared.is_closing();
        if let Err(failure) = flush_ws(core, ws).await {
            break failure;
        }
        if closing {
            break Failure::ClientClose;
        }
        tokio::select! {
            biased;
            message = ws.next() => {
                let at = Instant::now();
                let handled = match message {
                    Some(Ok(Message::Text(text))) => {
                        parse_engine(&Text::new(text)).and_then(|p| core.on_engine(p, at).map(drop))
                    }
                    Some(Ok(Message::Binary(data))) => core.on_binary(data, at),
                    Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => Ok(()),
                    Some(Ok(Message::Close(_))) | None => Err(Failure::Closed),
                    Some(Err(err)) => Err(Failure::ws(err)),
                };
                if let Err(failure) = handled {
                    break failure;
                }
            }
            () = core.shared.wake.notified() => {}
            () = core.ping.as_mut() => break Failure::PingTimeout,
        }
    };
    if says_goodbye(&failure) {
        Box::pin(close_ws(ws)).await;
    }
    Err(failure)
}

/// Writes what is queued.
async fn flush_ws(core: &Core, ws: &mut Ws) -> Result<(), Failure> {
    let mut wrote = false;
    while let Some(frame) = core.shared.pop() {
        ws.feed(frame.into_message()).await.map_err(Failure::ws)?;
        wrote = true;
    }
    if wrote {
        ws.flush().await.map_err(Failure::ws)?;
    }
    Ok(())
}

/// Sends the WebSocket close and waits a little for the server to close the connection.
async fn close_ws(ws: &mut Ws) {
    let _ = ws.close(None).await;
    let drain = async { while let Some(Ok(_)) = ws.next().await {} };
    let _ = tokio::time::timeout(WS_CLOSE_WAIT, drain).await;
}

/// A finished future of the type `make` would return (never called): an idle slot.
fn idle<F: Future>(_make: impl FnOnce() -> F) -> Fuse<F> {
    Fuse::terminated()
}

/// The polling loop. Ends with the WebSocket once an upgrade went through, or with the
/// reason the session ended.
async fn run_polling(
    core: &mut Core,
    http: &Polling,
    probe_to: Option<Probe>,
    ws_setup: WsSetup,
    probe_timeout: Duration,
) -> Result<(Ws, SocketAddr), Failure> {
    let get = http.get(Duration::ZERO).fuse();
    let post = idle(|| http.post(Bytes::new()));
    tokio::pin!(get, post);
    let mut probe: Fuse<BoxFuture<'static, Result<(Ws, SocketAddr), Failure>>> = match probe_to {
        Some(to) => probe(ws_setup, to, probe_timeout).boxed().fuse(),
        None => Fuse::terminated(),
    };
    let mut probed: Option<(Ws, SocketAddr)> = None;
    // A poll ended with `noop` while the probe runs: the server is upgrading, and every new
    // poll would be answered `noop` at once. Wait for the probe instead.
    let mut hold = false;
    // A poll ended with `noop` and no probe runs (e.g. after a failed upgrade): pause before
    // the next one rather than hammer the server.
    let mut pause = Duration::ZERO;
    let failure = loop {
        if core.shared.is_closing() {
            if post.is_terminated() {
                break Failure::ClientClose;
            }
        } else if probed.is_some() {
            if get.is_terminated()
                && post.is_terminated()
                && let Some(ws) = probed.take()
            {
                return Ok(ws);
            }
        } else {
            if post.is_terminated()
                && let Some(body) = core.shared.take_payload(core.max_payload, None)
            {
                post.set(http.post(body).fuse());
            }
            if get.is_terminated() && !hold {
                get.set(http.get(pause).fuse());
            }
        }
        tokio::select! {
            biased;
            result = get.as_mut(), if !get.is_terminated() => {
                let (body, at, local) = match result {
                    Ok(polled) => polled,
                    Err(failure) => break failure,
                };
                if let Some(local) = local {
                    core.shared.set_local_addr(local);
                }
                let noop = match core.on_payload(body, at) {
                    Ok(noop) => noop,
                    Err(failure) => break failure,
                };
                let probing = !probe.is_terminated();
                hold = noop && probing;
                pause = if noop && !probing && probed.is_none() {
                    NOOP_PAUSE
                } else {
                    Duration::ZERO
                };
            }
            result = post.as_mut(), if !post.is_terminated() => {
                if let Err(failure) = result {
                    break failure;
                }
            }
            result = &mut probe, if !probe.is_terminated() => match result {
                Ok(ws) => probed = Some(ws),
                Err(err) => {
                    hold = false;
                    core.sink.deliver(Incoming::UpgradeFailed {
                        error: err.into_reason().to_string(),
                    });
                }
            },
            () = core.shared.wake.notified() => {}
            () = core.ping.as_mut() => break Failure::PingTimeout,
        }
    };
    if says_goodbye(&failure) {
        // One POST at a time, then what is queued (a close: the DISCONNECT) and the
        // Engine.IO close.
        if !post.is_terminated() {
            let _ = post.as_mut().await;
        }
        let body = match failure {
            Failure::ClientClose => core.shared.take_payload(core.max_payload, Some("1")),
            _ => Some(Bytes::from_static(b"1")),
        };
        if let Some(body) = body {
            let _ = http.post(body).await;
        }
        // The server ends the pending poll when the session closes: let it, so that its
        // connection goes back to the pool instead of being cut (and left in TIME_WAIT here).
        if !get.is_terminated() {
            let _ = tokio::time::timeout(GOODBYE_WAIT, get.as_mut()).await;
        }
    }
    Err(failure)
}

/// Whether the server should be told the session is over (it may not know yet).
fn says_goodbye(failure: &Failure) -> bool {
    matches!(
        failure,
        Failure::ClientClose | Failure::ServerDisconnect | Failure::Protocol(_)
    )
}

/// Where an upgrading session probes: `Host` and the WebSocket request's path and query.
struct Probe {
    host: String,
    path: String,
}

/// The upgrade probe: a WebSocket with the session's sid, `2probe`, and the server's `3probe`.
async fn probe(setup: WsSetup, to: Probe, limit: Duration) -> Result<(Ws, SocketAddr), Failure> {
    let attempt = async {
        let (mut ws, local) = ws_connect(&setup, &to.host, &to.path).await?;
        ws.send(Message::Text(Utf8Bytes::from_static("2probe")))
            .await
            .map_err(Failure::ws)?;
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(text))) if text.as_str() == "3probe" => {
                    return Ok((ws, local));
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Text(_) | Message::Binary(_))) => {
                    return Err(Failure::protocol(
                        "the upgrade probe was not answered 3probe",
                    ));
                }
                Some(Ok(Message::Close(_))) | None => return Err(Failure::Closed),
                Some(Err(err)) => return Err(Failure::ws(err)),
            }
        }
    };
    tokio::time::timeout(limit, attempt)
        .await
        .unwrap_or(Err(Failure::Timeout))
}

/// A polling payload as text (it is UTF-8: binary packets are base64).
fn payload_text(body: Bytes) -> Result<Text, Failure> {
    if body.is_empty() {
        // What an Engine.IO server answers a poll of a session it closed meanwhile.
        return Err(Failure::Closed);
    }
    let text = Utf8Bytes::try_from(body).map_err(|_| Failure::protocol("payload is not UTF-8"))?;
    Ok(Text::new(text))
}

/// The packets of a polling payload (`\x1e`-separated; the separator never occurs inside a
/// UTF-8 character).
fn split_payload(text: &Text) -> impl Iterator<Item = Text> + '_ {
    let bytes = text.as_bytes();
    let mut start = 0;
    std::iter::from_fn(move || {
        if start > bytes.len() {
            return None;
        }
        let end = bytes[start..]
            .iter()
            .position(|&b| b == 0x1e)
            .map_or(bytes.len(), |i| start + i);
        let packet = text.slice(start..end);
        start = end + 1;
        Some(packet)
    })
}

#[derive(Deserialize)]
struct ConnectAck {
    #[serde(default)]
    sid: Option<String>,
}

#[derive(Deserialize)]
struct ConnectErrorData {
    message: String,
}

impl Core {
    fn opened(&mut self, open: &Open) {
        self.shared.set_opened(&open.sid);
        self.ping_window =
            Duration::from_millis(open.ping_interval.saturating_add(open.ping_timeout))
                .min(NO_DEADLINE);
        self.max_payload = usize::try_from(open.max_payload)
            .unwrap_or(usize::MAX)
            .max(1024);
        self.reset_ping();
    }

    fn reset_ping(&mut self) {
        self.ping
            .as_mut()
            .reset(tokio::time::Instant::now() + self.ping_window);
    }

    /// The packets of a poll's payload. True if one was a `noop`.
    fn on_payload(&mut self, body: Bytes, at: Instant) -> Result<bool, Failure> {
        let text = payload_text(body)?;
        let mut noop = false;
        for packet in split_payload(&text).filter(|p| !p.is_empty()) {
            noop |= self.on_engine(parse_engine(&packet)?, at)?;
        }
        Ok(noop)
    }

    /// One Engine.IO packet. True if it was a `noop`.
    fn on_engine(&mut self, packet: Engine, at: Instant) -> Result<bool, Failure> {
        match packet {
            Engine::Ping => {
                self.shared.push_text(Utf8Bytes::from_static("3"));
                self.reset_ping();
            }
            Engine::Message(text) => self.on_socketio(text, at)?,
            Engine::Binary(data) => self.on_binary(data, at)?,
            Engine::Noop => return Ok(true),
            Engine::Pong | Engine::PongProbe => {}
            Engine::Close => return Err(Failure::Closed),
            Engine::Open(_) | Engine::Upgrade => {
                return Err(Failure::protocol(format!(
                    "unexpected {} packet",
                    engine_name(&packet)
                )));
            }
        }
        Ok(false)
    }

    fn on_socketio(&mut self, text: Text, at: Instant) -> Result<(), Failure> {
        if self.partial.is_some() {
            return Err(Failure::protocol(
                "a packet came before the attachments of the previous one",
            ));
        }
        let packet = parse_sio(&text)?;
        if packet.ns != *self.shared.ns {
            // Another namespace of the same connection: not ours.
            return Ok(());
        }
        match packet.kind {
            b'0' => {
                if let Some(ready) = self.ready.take() {
                    let socket_id = serde_json::from_str::<ConnectAck>(&packet.data)
                        .ok()
                        .and_then(|ack| ack.sid)
                        .unwrap_or_default();
                    self.shared.set_connected(&socket_id);
                    let _ = ready.send(Ok(()));
                }
                Ok(())
            }
            b'1' => Err(Failure::ServerDisconnect),
            b'4' => {
                let message = serde_json::from_str::<ConnectErrorData>(&packet.data)
                    .map(|data| data.message)
                    .unwrap_or_else(|_| packet.data.to_string());
                Err(Failure::Namespace(message))
            }
            b'2' | b'5' => {
                let (name, args) = parse_event(packet.data)?;
                self.received(Some(name), args, packet.ack, packet.attachments, at)
            }
            b'3' | b'6' => {
                let Some(id) = packet.ack else {
                    return Err(Failure::protocol("ack without id"));
                };
                if !packet.data.trim_start().starts_with('[') {
                    return Err(Failure::protocol("ack arguments are not an array"));
                }
                let args = Args::ack(packet.data);
                self.received(None, args, Some(id), packet.attachments, at)
            }
            _ => Err(Failure::protocol("bad packet type")),
        }
    }

    /// An event (`name`) or an ack, complete or waiting for `attachments`.
    fn received(
        &mut self,
        name: Option<Text>,
        args: Args,
        ack: Option<u64>,
        attachments: usize,
        at: Instant,
    ) -> Result<(), Failure> {
        if attachments > 0 {
            self.partial = Some(Partial {
                name,
                args,
                ack,
                expected: attachments,
            });
            return Ok(());
        }
        self.dispatch(name, args, ack, at);
        Ok(())
    }

    fn on_binary(&mut self, data: Bytes, at: Instant) -> Result<(), Failure> {
        let Some(partial) = self.partial.as_mut() else {
            return Err(Failure::protocol("a binary packet nobody waits for"));
        };
        partial.args.push_attachment(data);
        if partial.args.attachment_count() >= partial.expected
            && let Some(Partial {
                name, args, ack, ..
            }) = self.partial.take()
        {
            self.dispatch(name, args, ack, at);
        }
        Ok(())
    }

    fn dispatch(&mut self, name: Option<Text>, args: Args, ack: Option<u64>, at: Instant) {
        let Some(event) = name else {
            // An answer to one of our emits.
            let Some(id) = ack else { return };
            match self.shared.take_ack(id) {
                Some(Pending::Wait(waiter)) => {
                    let _ = waiter.send((args, at));
                }
                Some(Pending::Deliver) => self.sink.deliver(Incoming::Ack {
                    id,
                    args,
                    received_at: at,
                }),
                // Late (the emitter gave up) or never asked.
                None => {}
            }
            return;
        };
        let ack = match (ack, &self.ack_policy) {
            (None, _) => None,
            (Some(id), AckPolicy::Echo) => {
                self.answer(id, &Reply::echo(&args));
                None
            }
            (Some(id), AckPolicy::Handler(handler)) => {
                if let Some(reply) = handler(&event, &args) {
                    self.answer(id, &reply);
                }
                None
            }
            (Some(id), AckPolicy::Manual) => Some(id),
        };
        self.sink.deliver(Incoming::Event {
            event,
            args,
            received_at: at,
            ack,
        });
    }

    fn answer(&self, id: u64, reply: &Reply) {
        self.shared
            .push_internal(encode_reply(&self.shared.ns, id, reply));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_split_on_the_separator() {
        let text = Text::from("4a\u{1e}2\u{1e}bAQ==\u{1e}".to_owned());
        let parts: Vec<String> = split_payload(&text).map(|t| t.to_string()).collect();
        assert_eq!(parts, ["4a", "2", "bAQ==", ""]);
        let text = Text::from("0{}".to_owned());
        assert_eq!(split_payload(&text).count(), 1);
    }
}

#[cfg(test)]
mod size {
    use super::*;
    use crate::client::{Target, shared::Chan};

    /// Every session carries its task's future: keep it small.
    #[test]
    fn the_task_future_stays_small() {
        let config = Box::new(SessionConfig::new(Target::from_addr(
            "127.0.0.1:1".parse().unwrap(),
        )));
        let shared = Arc::new(Shared::new("/".into()));
        let (ready, _outcome) = oneshot::channel();
        let fut = run(config, shared, Sink::Queue(Chan::new()), ready);
        let size = std::mem::size_of_val(&fut);
        assert!(size <= 1536, "the session task's future takes {size} bytes");
    }
}
