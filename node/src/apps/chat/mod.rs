//! The chat demo: the seed example of the Socket.IO guide, made real. Users pick a nickname and
//! a room; messages go to everyone else in the room, on every node; the page shows which node and
//! which transport it is on.
//!
//! Events (client → server): `join {nickname, room}` (ack `{room, members}`), `chat message text`
//! (ack `{ok}`), `typing bool` (volatile). Server → client: `welcome {node}`, `chat message
//! {nickname, text, time}`, `user joined` / `user left` `{nickname, room, members}`, `typing
//! {nickname, typing}`.

pub(crate) mod pages;

use std::{
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};
use tracing::Instrument as _;

use serde::{Deserialize, Serialize};
use socketioxide::{
    SocketIo,
    adapter::Adapter,
    extract::{AckSender, SocketRef, TryData},
    socket::DisconnectReason,
};
use socketioxide_core::adapter::{DefinedAdapter, Spawnable};

use super::{on_connect, reply_error};
use crate::context::NodeContext;

/// Room a user lands in when they name none.
pub(crate) const DEFAULT_ROOM: &str = "lobby";
/// Longest nickname, in characters.
pub(crate) const MAX_NICKNAME: usize = 32;
/// Longest room name, in characters.
pub(crate) const MAX_ROOM: usize = 64;
/// Longest message, in characters.
pub(crate) const MAX_MESSAGE: usize = 2000;

/// Who a socket is in the chat, kept in its extensions once it joined.
#[derive(Debug, Clone)]
struct Member {
    nickname: Arc<str>,
    room: Arc<str>,
}

#[derive(Deserialize)]
struct JoinRequest {
    nickname: String,
    #[serde(default)]
    room: Option<String>,
}

#[derive(Serialize)]
struct Welcome<'a> {
    node: &'a str,
}

#[derive(Serialize)]
struct Presence<'a> {
    nickname: &'a str,
    room: &'a str,
    members: usize,
}

#[derive(Serialize)]
struct Joined<'a> {
    room: &'a str,
    members: usize,
}

#[derive(Serialize)]
struct ChatMessage<'a> {
    nickname: &'a str,
    text: &'a str,
    /// Server time, milliseconds since the Unix epoch.
    time: u64,
}

#[derive(Serialize)]
struct Typing<'a> {
    nickname: &'a str,
    typing: bool,
}

#[derive(Serialize)]
struct Ok {
    ok: bool,
}

/// Registers the chat handlers on the main namespace.
pub(crate) fn install<A: Adapter + DefinedAdapter>(io: &SocketIo<A>, ctx: &NodeContext) {
    let (c, greeter) = (ctx.clone(), ctx.clone());
    io.ns(
        "/",
        on_connect(
            move |socket, io| setup(socket, io, &c),
            move |socket| {
                let welcome = Welcome {
                    node: greeter.node_id().as_str(),
                };
                if socket.emit("welcome", &welcome).is_ok() {
                    greeter.metrics().event_emitted();
                }
            },
        ),
    )
    .spawn();
}

/// Installs the chat's handlers on a new socket.
fn setup<A: Adapter>(socket: &SocketRef<A>, io: &SocketIo<A>, ctx: &NodeContext) {
    let (c, io) = (ctx.clone(), io.clone());
    ctx.on_disconnect(socket, move |s, reason| on_leave(s, io, c, reason));
    let c = ctx.clone();
    socket.on(
        "join",
        move |s: SocketRef<A>,
              io: SocketIo<A>,
              TryData(req): TryData<JoinRequest>,
              ack: AckSender<A>| {
            let ctx = c.clone();
            let span = super::event_span(&s, "join");
            async move {
                ctx.metrics().event_received();
                let member = match req
                    .map_err(|_| "join takes {nickname, room}".to_owned())
                    .and_then(validate)
                {
                    Ok(member) => member,
                    Err(why) => return reply_error(ack, &why),
                };
                // Swapped in at once: a second join racing this one sees this member and
                // takes the "same room" path instead of announcing the user twice.
                if let Some(previous) = s.extensions.insert(member.clone()) {
                    if previous.room == member.room {
                        // Same room again (a rename, or a page that re-sent its join).
                        let members = room_size(&io, &member.room).await;
                        ack.send(&Joined {
                            room: &member.room,
                            members,
                        })
                        .ok();
                        return;
                    }
                    announce_departure(&s, &io, &ctx, &previous).await;
                    s.leave(previous.room.to_string());
                }
                s.join(member.room.to_string());
                let members = room_size(&io, &member.room).await;
                let presence = Presence {
                    nickname: &member.nickname,
                    room: &member.room,
                    members,
                };
                if s.to(member.room.to_string())
                    .emit("user joined", &presence)
                    .await
                    .is_ok()
                {
                    ctx.metrics().event_emitted();
                }
                ack.send(&Joined {
                    room: &member.room,
                    members,
                })
                .ok();
            }
            .instrument(span)
        },
    );

    let c = ctx.clone();
    socket.on(
        "chat message",
        move |s: SocketRef<A>, TryData(text): TryData<String>, ack: AckSender<A>| {
            let ctx = c.clone();
            let span = super::event_span(&s, "chat message");
            async move {
                ctx.metrics().event_received();
                let Some(member) = s.extensions.get::<Member>() else {
                    return reply_error(ack, "join a room before sending messages");
                };
                let Ok(text) = text else {
                    return reply_error(ack, "chat message takes one argument: the text");
                };
                let text = text.trim();
                if text.is_empty() || text.chars().count() > MAX_MESSAGE {
                    return reply_error(
                        ack,
                        &format!("a message has 1 to {MAX_MESSAGE} characters"),
                    );
                }
                let message = ChatMessage {
                    nickname: &member.nickname,
                    text,
                    time: now_millis(),
                };
                // Everyone in the room but the sender, who shows its own message at once.
                match s
                    .to(member.room.to_string())
                    .emit("chat message", &message)
                    .await
                {
                    Ok(()) => {
                        ctx.metrics().event_emitted();
                        ack.send(&Ok { ok: true }).ok();
                    }
                    Err(err) => {
                        // Members on this node got it; the rest of the cluster may not have.
                        tracing::warn!(%err, "chat broadcast failed");
                        reply_error(ack, "the message may not have reached everyone in the room");
                    }
                }
            }
            .instrument(span)
        },
    );

    let c = ctx.clone();
    socket.on(
        "typing",
        move |s: SocketRef<A>, TryData(typing): TryData<bool>| {
            let ctx = c.clone();
            let span = super::event_span(&s, "typing");
            async move {
                ctx.metrics().event_received();
                let (Some(member), Ok(typing)) = (s.extensions.get::<Member>(), typing) else {
                    return;
                };
                let typing = Typing {
                    nickname: &member.nickname,
                    typing,
                };
                // Volatile: a lost typing hint is harmless, a queued stale one is not.
                if s.to(member.room.to_string())
                    .volatile()
                    .emit("typing", &typing)
                    .await
                    .is_ok()
                {
                    ctx.metrics().event_emitted();
                }
            }
            .instrument(span)
        },
    );
}

/// Runs when the socket leaves for good, or when the node drains.
async fn on_leave<A: Adapter>(
    socket: SocketRef<A>,
    io: SocketIo<A>,
    ctx: NodeContext,
    reason: DisconnectReason,
) {
    tracing::debug!(?reason, "chat member left");
    if let Some(member) = socket.extensions.get::<Member>() {
        announce_departure(&socket, &io, &ctx, &member).await;
    }
}

/// Tells the rest of `member.room` that this socket left it.
async fn announce_departure<A: Adapter>(
    socket: &SocketRef<A>,
    io: &SocketIo<A>,
    ctx: &NodeContext,
    member: &Member,
) {
    // The leaving socket is still in the room here, so it is not counted.
    let members = room_size(io, &member.room).await.saturating_sub(1);
    let presence = Presence {
        nickname: &member.nickname,
        room: &member.room,
        members,
    };
    if socket
        .to(member.room.to_string())
        .emit("user left", &presence)
        .await
        .is_ok()
    {
        ctx.metrics().event_emitted();
    }
}

/// Sockets in `room` across the cluster (on one node, the local count).
async fn room_size<A: Adapter>(io: &SocketIo<A>, room: &str) -> usize {
    match io.to(room.to_owned()).fetch_sockets().await {
        Ok(sockets) => sockets.len(),
        Err(err) => {
            tracing::warn!(%err, room, "counting room members failed");
            0
        }
    }
}

fn validate(req: JoinRequest) -> Result<Member, String> {
    let nickname = req.nickname.trim();
    if nickname.is_empty() || nickname.chars().count() > MAX_NICKNAME {
        return Err(format!("a nickname has 1 to {MAX_NICKNAME} characters"));
    }
    let room = req.room.as_deref().map(str::trim).filter(|r| !r.is_empty());
    let room = room.unwrap_or(DEFAULT_ROOM);
    if room.chars().count() > MAX_ROOM {
        return Err(format!("a room name has at most {MAX_ROOM} characters"));
    }
    Ok(Member {
        nickname: nickname.into(),
        room: room.into(),
    })
}

fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn join(nickname: &str, room: Option<&str>) -> JoinRequest {
        JoinRequest {
            nickname: nickname.into(),
            room: room.map(Into::into),
        }
    }

    #[test]
    fn join_requests_are_trimmed_and_defaulted() {
        let member = validate(join("  ada ", None)).unwrap();
        assert_eq!(&*member.nickname, "ada");
        assert_eq!(&*member.room, DEFAULT_ROOM);
        let member = validate(join("ada", Some(" rust "))).unwrap();
        assert_eq!(&*member.room, "rust");
    }

    #[test]
    fn join_requests_are_bounded() {
        assert!(validate(join("   ", None)).is_err());
        assert!(validate(join(&"x".repeat(MAX_NICKNAME + 1), None)).is_err());
        assert!(validate(join("ada", Some(&"r".repeat(MAX_ROOM + 1)))).is_err());
    }
}
