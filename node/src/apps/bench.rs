//! The bench app: the event protocol `corral loadtest` and the cross-node checks speak. It is a
//! contract documented in `docs/loadtest.md`; change both together.

use std::time::Duration;
use tracing::Instrument as _;

use serde::Serialize;
use socketioxide::{
    SocketIo,
    adapter::Adapter,
    extract::{AckSender, Data, SocketRef, TryData},
};
use socketioxide_core::adapter::{DefinedAdapter, Spawnable};

use super::{args::Args, on_connect, reply_error};
use crate::context::NodeContext;

/// How long `ask` waits for the client's answer.
const ASK_TIMEOUT: Duration = Duration::from_secs(5);

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

/// Registers the bench handlers on the main namespace.
pub(crate) fn install<A: Adapter + DefinedAdapter>(io: &SocketIo<A>, ctx: &NodeContext) {
    install_at(io, ctx, "/");
}

/// Registers the bench handlers on namespace `ns` (`--bench-namespace`).
pub(crate) fn install_at<A: Adapter + DefinedAdapter>(
    io: &SocketIo<A>,
    ctx: &NodeContext,
    ns: &str,
) {
    let (c, greeter) = (ctx.clone(), ctx.clone());
    io.ns(
        ns.to_owned(),
        on_connect(
            move |socket, _| setup(socket, &c),
            move |socket| {
                let node = greeter.node_id().as_str();
                if socket.emit("hello", &NodeReply { node }).is_ok() {
                    greeter.metrics().event_emitted();
                }
            },
        ),
    )
    .spawn();
}

/// Installs the protocol's handlers on a new socket.
fn setup<A: Adapter>(socket: &SocketRef<A>, ctx: &NodeContext) {
    ctx.on_disconnect(socket, |_, _| async {});
    let c = ctx.clone();
    socket.on(
        "join",
        move |s: SocketRef<A>, TryData(room): TryData<String>, ack: AckSender<A>| {
            let ctx = c.clone();
            let span = super::event_span(&s, "join");
            async move {
                ctx.metrics().event_received();
                let Ok(room) = room else {
                    return reply_error(ack, "join takes one argument: the room name (a string)");
                };
                s.join(room.clone());
                let node = Some(ctx.node_id().as_str());
                ack.send(&RoomReply { room: &room, node }).ok();
            }
            .instrument(span)
        },
    );

    let c = ctx.clone();
    socket.on(
        "leave",
        move |s: SocketRef<A>, TryData(room): TryData<String>, ack: AckSender<A>| {
            let ctx = c.clone();
            let span = super::event_span(&s, "leave");
            async move {
                ctx.metrics().event_received();
                let Ok(room) = room else {
                    return reply_error(ack, "leave takes one argument: the room name (a string)");
                };
                s.leave(room.clone());
                ack.send(&RoomReply {
                    room: &room,
                    node: None,
                })
                .ok();
            }
            .instrument(span)
        },
    );

    let c = ctx.clone();
    socket.on(
        "publish",
        move |s: SocketRef<A>, TryData(data): TryData<(String, rmpv::Value)>, ack: AckSender<A>| {
            let ctx = c.clone();
            let span = super::event_span(&s, "publish");
            async move {
                ctx.metrics().event_received();
                let Ok((room, payload)) = data else {
                    return reply_error(
                        ack,
                        "publish takes two arguments: the room name and a payload",
                    );
                };
                // To everyone in the room of this namespace, sender included, on every node.
                match s
                    .within(room.clone())
                    .emit("message", &(&room, &payload))
                    .await
                {
                    Ok(()) => ctx.metrics().event_emitted(),
                    Err(err) => tracing::warn!(%err, room, "publish broadcast failed"),
                }
                ack.send(&NodeReply {
                    node: ctx.node_id().as_str(),
                })
                .ok();
            }
            .instrument(span)
        },
    );

    let c = ctx.clone();
    socket.on(
        "echo",
        move |s: SocketRef<A>, Data(args): Data<Args>, ack: AckSender<A>| {
            let ctx = c.clone();
            let span = super::event_span(&s, "echo");
            async move {
                ctx.metrics().event_received();
                ack.send(&args).ok();
            }
            .instrument(span)
        },
    );

    let c = ctx.clone();
    socket.on(
        "ask",
        move |s: SocketRef<A>, Data(args): Data<Args>, ack: AckSender<A>| {
            let ctx = c.clone();
            let span = super::event_span(&s, "ask");
            async move {
                ctx.metrics().event_received();
                // A server-to-client ack round trip: ask the client, relay its answer.
                let asked = s
                    .timeout(ASK_TIMEOUT)
                    .emit_with_ack::<_, Args>("ask", &args);
                ctx.metrics().event_emitted();
                match asked {
                    Ok(reply) => match reply.await {
                        Ok(answer) => {
                            ack.send(&answer).ok();
                        }
                        Err(err) => {
                            reply_error(ack, &format!("the client did not answer: {err}"));
                        }
                    },
                    Err(err) => reply_error(ack, &format!("could not ask the client: {err}")),
                }
            }
            .instrument(span)
        },
    );
}
