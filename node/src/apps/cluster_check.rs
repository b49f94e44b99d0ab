//! The cluster-check app (`--app cluster-check`): lets a test client ask a node to perform any
//! cluster operation, so the cross-node suite can prove each one with real clients on
//! different nodes. It hands every client power over every other client (disconnect them,
//! move them between rooms): a test fixture, never to face real users.
//!
//! Main namespace `/`; on connect the socket joins the room named after its id (as Socket.IO
//! servers do; socketioxide does not on its own) and the node emits `hello {node, id}`.
//! Requests (all acked, with `{error}` on bad input):
//!
//! | event | arguments | what the node does, ack |
//! |---|---|---|
//! | `join` / `leave` | `[rooms]` | this socket joins / leaves; `{node}` |
//! | `emit` | `{rooms, except, event, data, volatile, local}` | `io.to(rooms).except(except)…emit(event, data)`; `{ok}` or `{ok: false, error}` |
//! | `broadcast` | `{event, data}` | `socket.broadcast().emit` (everyone but the sender); `{ok}` |
//! | `to` | `{rooms, event, data}` | `socket.to(rooms).emit` (the rooms but the sender); `{ok}` |
//! | `ask` | `{rooms, event, data, timeout_ms}` | broadcast with acks; `[{id, ok}|{id, error}]` |
//! | `fetch` | `{rooms}` | `fetch_sockets`; `[{id, node}]` |
//! | `remote` | `{rooms, op, room, event, data}` | on each fetched socket: `join`/`leave`/`emit`/`disconnect` (op); `{count}` |
//! | `sockets-join` / `sockets-leave` | `{rooms, room}` | `io.to(rooms).join(room)` / `.leave(room)`; `{ok}` |
//! | `disconnect-sockets` | `{rooms}` | `io.to(rooms).disconnect()`; `{ok}` |
//! | `rooms` | — | every room in the cluster, sorted |
//! | `nodes` | — | the live nodes |
//! | `server-ask` | `{data, timeout_ms}` | asks every other node `ping`; `{answers, missing}` |
//! | `server-emit` | `{data}` | tells every other node `relay`; each emits `relayed {from, data}` to its own sockets |
//!
//! Dynamic namespaces `/dyn-{name}` greet with `hello` and accept `emit-here {event, data}`
//! (to every socket of that namespace, on every node).

use std::time::Duration;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use socketioxide::{
    SocketIo,
    adapter::Adapter,
    extract::{AckSender, SocketRef, TryData},
};
use socketioxide_core::adapter::{DefinedAdapter, Spawnable};

use super::{on_connect, reply_error};
use crate::context::NodeContext;

#[derive(Deserialize)]
struct Target {
    #[serde(default)]
    rooms: Vec<String>,
    #[serde(default)]
    except: Vec<String>,
    #[serde(default)]
    event: String,
    #[serde(default = "nil")]
    data: rmpv::Value,
    #[serde(default)]
    volatile: bool,
    #[serde(default)]
    local: bool,
    #[serde(default)]
    timeout_ms: Option<u64>,
    #[serde(default)]
    op: String,
    #[serde(default)]
    room: String,
}

fn nil() -> rmpv::Value {
    rmpv::Value::Nil
}

#[derive(Serialize)]
struct Hello<'a> {
    node: &'a str,
    id: String,
}

#[derive(Serialize)]
struct Done {
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

impl Done {
    fn of<E: std::fmt::Display>(result: Result<(), E>) -> Done {
        match result {
            Ok(()) => Done {
                ok: true,
                error: None,
            },
            Err(err) => Done {
                ok: false,
                error: Some(err.to_string()),
            },
        }
    }
}

#[derive(Serialize)]
struct Answer {
    id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    ok: Option<rmpv::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Serialize)]
struct Fetched {
    id: String,
    node: String,
}

#[derive(Serialize)]
struct Relayed {
    from: String,
    data: serde_json::Value,
}

/// Registers the handlers.
pub(crate) fn install<A: Adapter + DefinedAdapter>(io: &SocketIo<A>, ctx: &NodeContext) {
    let (c, g) = (ctx.clone(), ctx.clone());
    io.ns(
        "/",
        on_connect(
            move |socket, io| setup(socket, io, &c),
            move |socket| greet(socket, &g),
        ),
    )
    .spawn();

    let (c, g) = (ctx.clone(), ctx.clone());
    let dynamic = io.dyn_ns(
        "/dyn-{name}",
        on_connect(
            move |socket: &SocketRef<A>, _: &SocketIo<A>| {
                prepare(socket, &c);
                socket.on(
                    "emit-here",
                    |s: SocketRef<A>, TryData(t): TryData<Target>, ack: AckSender<A>| async move {
                        let Ok(t) = t else {
                            return reply_error(ack, "emit-here takes {event, data}");
                        };
                        // Every socket of this dynamic namespace, on every node, sender included.
                        let result = s.broadcast().emit(&t.event, &t.data).await;
                        let result = result
                            .map_err(|e| e.to_string())
                            .and_then(|()| s.emit(&t.event, &t.data).map_err(|e| e.to_string()));
                        ack.send(&Done::of(result)).ok();
                    },
                );
            },
            move |socket| greet(socket, &g),
        ),
    );
    if let Err(err) = dynamic {
        tracing::error!(%err, "cluster-check: dynamic namespace pattern refused");
    }

    // What other nodes ask of this one.
    let node = ctx.node_id().to_string();
    ctx.cluster().on_server_event("ping", move |event| {
        let node = node.clone();
        async move { Some(serde_json::json!({ "node": node, "echo": event.data })) }
    });
    let io = io.clone();
    ctx.cluster().on_server_event("relay", move |event| {
        let io = io.clone();
        async move {
            let relayed = Relayed {
                from: event.from_node,
                data: event.data,
            };
            io.local().emit("relayed", &relayed).await.ok();
            None
        }
    });
}

/// Before the socket is connected: the disconnect bookkeeping and its own room.
fn prepare<A: Adapter>(socket: &SocketRef<A>, ctx: &NodeContext) {
    ctx.on_disconnect(socket, |_, _| async {});
    socket.join(socket.id.to_string());
}

/// Once connected: `hello` with the node and the socket id.
fn greet<A: Adapter>(socket: &SocketRef<A>, ctx: &NodeContext) {
    let hello = Hello {
        node: ctx.node_id().as_str(),
        id: socket.id.to_string(),
    };
    socket.emit("hello", &hello).ok();
}

/// Installs the handlers of the main namespace on a new socket.
fn setup<A: Adapter>(socket: &SocketRef<A>, io: &SocketIo<A>, ctx: &NodeContext) {
    prepare(socket, ctx);
    let node = ctx.node_id().to_string();

    let n = node.clone();
    socket.on(
        "join",
        move |s: SocketRef<A>, TryData(rooms): TryData<Vec<String>>, ack: AckSender<A>| async move {
            let Ok(rooms) = rooms else {
                return reply_error(ack, "join takes [rooms]");
            };
            s.join(rooms);
            ack.send(&serde_json::json!({ "node": n })).ok();
        },
    );
    let n = node.clone();
    socket.on(
        "leave",
        move |s: SocketRef<A>, TryData(rooms): TryData<Vec<String>>, ack: AckSender<A>| async move {
            let Ok(rooms) = rooms else {
                return reply_error(ack, "leave takes [rooms]");
            };
            s.leave(rooms);
            ack.send(&serde_json::json!({ "node": n })).ok();
        },
    );

    let i = io.clone();
    socket.on(
        "emit",
        move |TryData(t): TryData<Target>, ack: AckSender<A>| async move {
            let Ok(t) = t else {
                return reply_error(ack, "emit takes {rooms, except, event, data}");
            };
            let mut op = i.to(t.rooms).except(t.except);
            if t.volatile {
                op = op.volatile();
            }
            if t.local {
                op = op.local();
            }
            ack.send(&Done::of(op.emit(&t.event, &t.data).await)).ok();
        },
    );

    socket.on(
        "broadcast",
        |s: SocketRef<A>, TryData(t): TryData<Target>, ack: AckSender<A>| async move {
            let Ok(t) = t else {
                return reply_error(ack, "broadcast takes {event, data}");
            };
            ack.send(&Done::of(s.broadcast().emit(&t.event, &t.data).await))
                .ok();
        },
    );

    socket.on(
        "to",
        |s: SocketRef<A>, TryData(t): TryData<Target>, ack: AckSender<A>| async move {
            let Ok(t) = t else {
                return reply_error(ack, "to takes {rooms, event, data}");
            };
            ack.send(&Done::of(s.to(t.rooms).emit(&t.event, &t.data).await))
                .ok();
        },
    );

    let i = io.clone();
    socket.on(
        "ask",
        move |TryData(t): TryData<Target>, ack: AckSender<A>| async move {
            let Ok(t) = t else {
                return reply_error(ack, "ask takes {rooms, event, data, timeout_ms}");
            };
            let timeout = Duration::from_millis(t.timeout_ms.unwrap_or(2000));
            let stream = match i
                .to(t.rooms)
                .timeout(timeout)
                .emit_with_ack::<_, rmpv::Value>(&t.event, &t.data)
                .await
            {
                Ok(stream) => stream,
                Err(err) => return reply_error(ack, &err.to_string()),
            };
            let answers: Vec<Answer> = stream
                .map(|(id, result)| match result {
                    Ok(value) => Answer {
                        id: id.to_string(),
                        ok: Some(value),
                        error: None,
                    },
                    Err(err) => Answer {
                        id: id.to_string(),
                        ok: None,
                        error: Some(err.to_string()),
                    },
                })
                .collect()
                .await;
            ack.send(&(answers,)).ok();
        },
    );

    let i = io.clone();
    let c = ctx.clone();
    socket.on(
        "fetch",
        move |TryData(t): TryData<Target>, ack: AckSender<A>| async move {
            let Ok(t) = t else {
                return reply_error(ack, "fetch takes {rooms}");
            };
            let nodes = c.cluster().nodes();
            match i.to(t.rooms).fetch_sockets().await {
                Ok(sockets) => {
                    let fetched: Vec<Fetched> = sockets
                        .iter()
                        .map(|s| {
                            let data = s.data();
                            let node = nodes
                                .iter()
                                .find(|n| n.uid == data.server_id)
                                .map_or_else(|| data.server_id.to_string(), |n| n.node_id.clone());
                            Fetched {
                                id: data.id.to_string(),
                                node,
                            }
                        })
                        .collect();
                    ack.send(&(fetched,)).ok();
                }
                Err(err) => reply_error(ack, &err.to_string()),
            }
        },
    );

    let i = io.clone();
    socket.on(
        "remote",
        move |TryData(t): TryData<Target>, ack: AckSender<A>| async move {
            let Ok(t) = t else {
                return reply_error(ack, "remote takes {rooms, op, room, event, data}");
            };
            let sockets = match i.to(t.rooms).fetch_sockets().await {
                Ok(sockets) => sockets,
                Err(err) => return reply_error(ack, &err.to_string()),
            };
            let count = sockets.len();
            for socket in sockets {
                let result = match t.op.as_str() {
                    "join" => socket.join(t.room.clone()).await.map_err(|e| e.to_string()),
                    "leave" => socket
                        .leave(t.room.clone())
                        .await
                        .map_err(|e| e.to_string()),
                    "emit" => socket
                        .emit(&t.event, &t.data)
                        .await
                        .map_err(|e| e.to_string()),
                    "disconnect" => socket.disconnect().await.map_err(|e| e.to_string()),
                    other => Err(format!("unknown op {other:?}")),
                };
                if let Err(err) = result {
                    return reply_error(ack, &err);
                }
            }
            ack.send(&serde_json::json!({ "count": count })).ok();
        },
    );

    let i = io.clone();
    socket.on(
        "sockets-join",
        move |TryData(t): TryData<Target>, ack: AckSender<A>| async move {
            let Ok(t) = t else {
                return reply_error(ack, "sockets-join takes {rooms, room}");
            };
            ack.send(&Done::of(i.to(t.rooms).join(t.room).await)).ok();
        },
    );
    let i = io.clone();
    socket.on(
        "sockets-leave",
        move |TryData(t): TryData<Target>, ack: AckSender<A>| async move {
            let Ok(t) = t else {
                return reply_error(ack, "sockets-leave takes {rooms, room}");
            };
            ack.send(&Done::of(i.to(t.rooms).leave(t.room).await)).ok();
        },
    );
    let i = io.clone();
    socket.on(
        "disconnect-sockets",
        move |TryData(t): TryData<Target>, ack: AckSender<A>| async move {
            let Ok(t) = t else {
                return reply_error(ack, "disconnect takes {rooms}");
            };
            // Ack first: this socket may be among the ones disconnected.
            ack.send(&Done::of(Ok::<(), String>(()))).ok();
            if let Err(err) = i.to(t.rooms).disconnect().await {
                tracing::warn!(%err, "cluster-check: disconnect failed");
            }
        },
    );

    let i = io.clone();
    socket.on("rooms", move |ack: AckSender<A>| async move {
        match i.rooms().await {
            Ok(rooms) => {
                let mut rooms: Vec<String> = rooms.into_iter().map(|r| r.to_string()).collect();
                rooms.sort();
                ack.send(&(rooms,)).ok();
            }
            Err(err) => reply_error(ack, &err.to_string()),
        }
    });

    let c = ctx.clone();
    socket.on("nodes", move |ack: AckSender<A>| async move {
        ack.send(&(c.cluster().nodes(),)).ok();
    });

    let c = ctx.clone();
    socket.on(
        "server-ask",
        move |TryData(t): TryData<Target>, ack: AckSender<A>| async move {
            let Ok(t) = t else {
                return reply_error(ack, "server-ask takes {data, timeout_ms}");
            };
            let timeout = Duration::from_millis(t.timeout_ms.unwrap_or(2000));
            let data = serde_json::to_value(&t.data).unwrap_or_default();
            match c.cluster().ask_servers("ping", &data, timeout).await {
                Ok(gathered) => {
                    let answers: Vec<serde_json::Value> = gathered
                        .answers
                        .into_iter()
                        .map(|(node, data)| serde_json::json!({ "node": node, "data": data }))
                        .collect();
                    let reply =
                        serde_json::json!({ "answers": answers, "missing": gathered.missing });
                    ack.send(&reply).ok();
                }
                Err(err) => reply_error(ack, &err.to_string()),
            }
        },
    );

    let c = ctx.clone();
    socket.on(
        "server-emit",
        move |TryData(t): TryData<Target>, ack: AckSender<A>| async move {
            let Ok(t) = t else {
                return reply_error(ack, "server-emit takes {data}");
            };
            let data = serde_json::to_value(&t.data).unwrap_or_default();
            ack.send(&Done::of(c.cluster().emit_to_servers("relay", &data).await))
                .ok();
        },
    );
}
