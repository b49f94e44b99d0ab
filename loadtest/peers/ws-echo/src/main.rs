//! The least a WebSocket server can do to answer `corral loadtest echo --transport-mix
//! websocket=1`: the practical limit the echo figure of `scripts/bench-peers` holds a Corral
//! node against. It is not a Socket.IO server. It speaks just enough Engine.IO v4 / Socket.IO v5
//! for the load tester: the open packet, the CONNECT answer, an ack for every event that asks
//! for one (its arguments sent back as they came, by string slicing, never parsed), pongs, and
//! a ping every `pingInterval` so that sessions outlive the tester's ping deadline. Everything
//! else (binary packets included) is ignored.
//!
//! Configured by environment:
//!   PORT  port to listen on (required; 0 lets the OS pick one)
//!   HOST  address to listen on (default 127.0.0.1)
//!
//! Once listening it prints one line on stdout, e.g. `listening on 127.0.0.1:40123`, and nothing
//! else there. SIGTERM (or SIGINT) exits 0.

use std::{
    hash::{BuildHasher, RandomState},
    io::Write as _,
    process::ExitCode,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use futures_util::{SinkExt as _, StreamExt as _};
use tokio::{
    net::{TcpListener, TcpStream},
    time::{Instant, MissedTickBehavior, interval_at},
};
use tokio_tungstenite::{
    accept_async_with_config,
    tungstenite::{Message, Utf8Bytes, protocol::WebSocketConfig},
};

/// The Engine.IO ping interval announced, and kept: the tester gives up on a session that hears
/// no ping for `pingInterval + pingTimeout`.
const PING_INTERVAL: Duration = Duration::from_secs(25);
/// The largest message taken, as announced in the open packet; a larger one ends the connection.
const MAX_PAYLOAD: usize = 1_000_000;
/// Bytes read from the socket at a time, as a Corral node's default `--ws-read-buffer-size`.
/// tungstenite zero-fills this much of its buffer before every read: its 128 KiB default
/// doubles the CPU of an echo.
const READ_BUFFER: usize = 1024;

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("ws-echo peer: {err}");
            ExitCode::from(2)
        }
    }
}

async fn run() -> Result<(), String> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let port: u16 = match var("PORT") {
        Some(raw) => raw
            .parse()
            .map_err(|_| format!("PORT must be an integer from 0 to 65535, not {raw:?}"))?,
        None => return Err("PORT is required".to_owned()),
    };
    let host = var("HOST").unwrap_or_else(|| "127.0.0.1".to_owned());
    let listener = TcpListener::bind((host.as_str(), port))
        .await
        .map_err(|err| format!("cannot listen on {host}:{port}: {err}"))?;
    let addr = listener
        .local_addr()
        .map_err(|err| format!("no local address: {err}"))?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "listening on {addr}")
        .and_then(|()| out.flush())
        .map_err(|err| format!("cannot write to stdout: {err}"))?;
    drop(out);

    let ids = Arc::new(Ids::default());
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    tokio::spawn(serve(stream, ids.clone()));
                }
                // Out of file descriptors and the like: wait a little rather than spin.
                Err(err) => {
                    eprintln!("ws-echo peer: accept failed: {err}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            signal = &mut shutdown => {
                return signal.map_err(|err| format!("cannot wait for signals: {err}"));
            }
        }
    }
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

/// One connection: the upgrade (on any path), the open packet, then an answer to each message.
/// Any error ends this connection only.
async fn serve(stream: TcpStream, ids: Arc<Ids>) {
    stream.set_nodelay(true).ok();
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .max_message_size(Some(MAX_PAYLOAD))
        .max_frame_size(Some(MAX_PAYLOAD));
    let Ok(mut ws) = accept_async_with_config(stream, Some(config)).await else {
        return;
    };
    let open = format!(
        r#"0{{"sid":"{}","upgrades":[],"pingInterval":{},"pingTimeout":20000,"maxPayload":{MAX_PAYLOAD}}}"#,
        ids.next(),
        PING_INTERVAL.as_millis()
    );
    if ws.send(Message::text(open)).await.is_err() {
        return;
    }
    let mut ping = interval_at(Instant::now() + PING_INTERVAL, PING_INTERVAL);
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        let reply = tokio::select! {
            message = ws.next() => match message {
                Some(Ok(Message::Text(text))) => match answer(&text, &ids) {
                    Answer::Nothing => continue,
                    Answer::Send(reply) => reply,
                    Answer::Close => return,
                },
                // Binary, WebSocket ping/pong (tungstenite answers pings itself) and close (its
                // answer goes out on the next read, which then ends the stream).
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return,
            },
            _ = ping.tick() => Utf8Bytes::from_static("2"),
        };
        if ws.send(Message::Text(reply)).await.is_err() {
            return;
        }
    }
}

/// Session ids: a counter hashed with a per-process random key, unique enough for one run.
#[derive(Default)]
struct Ids {
    key: RandomState,
    next: AtomicU64,
}

impl Ids {
    fn next(&self) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        format!("{:016x}", self.key.hash_one(n))
    }
}

/// What to do about one text message.
#[derive(Debug, PartialEq)]
enum Answer {
    Nothing,
    Send(Utf8Bytes),
    Close,
}

/// The answer to an Engine.IO packet: a pong to a ping, the close of a close, and for a
/// Socket.IO packet (`4…`) what [`socketio`] says.
fn answer(packet: &str, ids: &Ids) -> Answer {
    if let Some(data) = packet.strip_prefix('2') {
        // A pong carries the ping's data (`2probe` → `3probe`).
        return Answer::Send(Utf8Bytes::from(format!("3{data}")));
    }
    if packet == "1" {
        return Answer::Close;
    }
    match packet.strip_prefix('4') {
        Some(sio) => socketio(sio, ids),
        None => Answer::Nothing,
    }
}

/// CONNECT (`0[/nsp,]…`) is answered with a socket id; an event with an ack id
/// (`2[/nsp,]<id>["name",…args]`) with the ack `3[/nsp,]<id>[…args]`. Anything else, events
/// without an ack id included, needs no answer.
fn socketio(packet: &str, ids: &Ids) -> Answer {
    let Some((kind, rest)) = packet.split_at_checked(1) else {
        return Answer::Nothing;
    };
    let (ns, rest) = namespace(rest);
    let reply = match kind {
        "0" => {
            let sid = ids.next();
            let mut reply = String::with_capacity(ns.len() + sid.len() + 12);
            reply.push_str("40");
            push_namespace(&mut reply, ns);
            reply.push_str(r#"{"sid":""#);
            reply.push_str(&sid);
            reply.push_str(r#""}"#);
            reply
        }
        "2" => {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            let (Some(id), Some(data)) = (rest.get(..digits), rest.get(digits..)) else {
                return Answer::Nothing;
            };
            let Some(args) = args_after_name(data).filter(|_| !id.is_empty()) else {
                return Answer::Nothing;
            };
            let mut reply = String::with_capacity(ns.len() + id.len() + args.len() + 5);
            reply.push_str("43");
            push_namespace(&mut reply, ns);
            reply.push_str(id);
            reply.push('[');
            reply.push_str(args);
            reply
        }
        _ => return Answer::Nothing,
    };
    Answer::Send(Utf8Bytes::from(reply))
}

/// Splits off the namespace (`/nsp,` → `/nsp`; none or `/` → empty: the main one).
fn namespace(rest: &str) -> (&str, &str) {
    if !rest.starts_with('/') {
        return ("", rest);
    }
    let (ns, rest) = rest.split_once(',').unwrap_or((rest, ""));
    (if ns == "/" { "" } else { ns }, rest)
}

fn push_namespace(reply: &mut String, ns: &str) {
    if !ns.is_empty() {
        reply.push_str(ns);
        reply.push(',');
    }
}

/// The arguments of `["name", …args]` after the name, with the closing bracket (`…args]`, or
/// `]` for none); `None` if `data` does not start like an event. Only the name is scanned:
/// the arguments go back as they came.
fn args_after_name(data: &str) -> Option<&str> {
    let bytes = data.as_bytes();
    let skip_ws = |mut i: usize| {
        while bytes.get(i).is_some_and(u8::is_ascii_whitespace) {
            i += 1;
        }
        i
    };
    let mut i = skip_ws(0);
    if bytes.get(i) != Some(&b'[') {
        return None;
    }
    i = skip_ws(i + 1);
    if bytes.get(i) != Some(&b'"') {
        return None;
    }
    i += 1;
    loop {
        match bytes.get(i)? {
            b'"' => break,
            b'\\' => i += 2,
            _ => i += 1,
        }
    }
    i = skip_ws(i + 1);
    match bytes.get(i)? {
        b',' => data.get(i + 1..),
        b']' => data.get(i..),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(packet: &str) -> Option<String> {
        match answer(packet, &Ids::default()) {
            Answer::Send(reply) => Some(reply.as_str().to_owned()),
            Answer::Nothing | Answer::Close => None,
        }
    }

    #[test]
    fn an_echo_is_acked_with_its_arguments() {
        let echo = r#"4212["echo",{"s":1,"q":2,"t":3,"a":4,"p":"x,]"}]"#;
        assert_eq!(
            sent(echo).as_deref(),
            Some(r#"4312[{"s":1,"q":2,"t":3,"a":4,"p":"x,]"}]"#)
        );
        assert_eq!(sent(r#"427["echo"]"#).as_deref(), Some("437[]"));
        assert_eq!(
            sent(r#"42/chat,7[ "a\"b" , 1, 2 ]"#).as_deref(),
            Some("43/chat,7[ 1, 2 ]")
        );
    }

    #[test]
    fn connect_is_answered_in_its_namespace() {
        let main = sent("40").unwrap_or_default();
        assert!(
            main.starts_with(r#"40{"sid":""#) && main.ends_with(r#""}"#),
            "{main}"
        );
        let chat = sent(r#"40/chat,{"token":1}"#).unwrap_or_default();
        assert!(chat.starts_with(r#"40/chat,{"sid":""#), "{chat}");
    }

    #[test]
    fn pings_are_answered_and_the_rest_ignored() {
        assert_eq!(sent("2").as_deref(), Some("3"));
        assert_eq!(answer("1", &Ids::default()), Answer::Close);
        for packet in [
            "",
            "3",
            "4",
            "41",
            r#"42["echo",1]"#,
            "42x",
            "427",
            r#"427["echo""#,
            "427[1,2]",
            r#"451-3["echo",{"_placeholder":true,"num":0}]"#,
            "6",
            "4é",
        ] {
            assert_eq!(
                answer(packet, &Ids::default()),
                Answer::Nothing,
                "{packet:?}"
            );
        }
    }
}
