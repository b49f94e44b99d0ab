//! The conformance app: the reference server of the Socket.IO v5 protocol test suite, and the
//! raw Engine.IO v4 echo endpoint of the Engine.IO test suite. Timings and CORS are fixed by
//! [`crate::config::conformance`].

use std::{convert::Infallible, sync::Arc};

use bytes::Bytes;
use engineioxide::{
    Str,
    config::EngineIoConfig,
    handler::EngineIoHandler,
    service::{EngineIoService, NotFoundService},
    socket::{DisconnectReason, Socket},
};
use socketioxide::{
    SocketIo,
    adapter::Adapter,
    extract::{AckSender, Data, SocketRef},
    handler::ConnectHandler,
};
use socketioxide_core::adapter::{DefinedAdapter, Spawnable};

use super::args::Args;
use crate::{config::NodeConfig, context::NodeContext};

/// Path of the raw Engine.IO echo endpoint.
pub(crate) const ENGINE_PATH: &str = "/engine.io";

/// Registers `/` and `/custom`; every other namespace is refused by socketioxide with
/// `Invalid namespace`.
pub(crate) fn install<A: Adapter + DefinedAdapter>(io: &SocketIo<A>, ctx: &NodeContext) {
    // Handlers go in a connect middleware, so they are in place before the client is told it
    // is connected (see `super::on_connect`); the `auth` greeting needs the CONNECT payload,
    // so it is written out here.
    let c = ctx.clone();
    let setup = move |socket: SocketRef<A>| {
        let ctx = c.clone();
        async move {
            ctx.on_disconnect(&socket, |_, _| async {});
            let c = ctx.clone();
            socket.on("message", move |s: SocketRef<A>, Data(args): Data<Args>| {
                let ctx = c.clone();
                async move {
                    ctx.metrics().event_received();
                    if s.emit("message-back", &args).is_ok() {
                        ctx.metrics().event_emitted();
                    }
                }
            });
            let c = ctx.clone();
            socket.on(
                "message-with-ack",
                move |Data(args): Data<Args>, ack: AckSender<A>| {
                    let ctx = c.clone();
                    async move {
                        ctx.metrics().event_received();
                        ack.send(&args).ok();
                    }
                },
            );
            Ok::<(), Infallible>(())
        }
    };
    io.ns("/", greeter(ctx).with(setup)).spawn();

    let c = ctx.clone();
    let setup = move |socket: SocketRef<A>| {
        let ctx = c.clone();
        async move {
            ctx.on_disconnect(&socket, |_, _| async {});
            Ok::<(), Infallible>(())
        }
    };
    io.ns("/custom", greeter(ctx).with(setup)).spawn();
}

/// The connect handler: emits `auth` with the CONNECT payload.
fn greeter<A: Adapter>(
    ctx: &NodeContext,
) -> impl ConnectHandler<A, (SocketRef<A>, Data<rmpv::Value>)> {
    let ctx = ctx.clone();
    move |socket: SocketRef<A>, Data(auth): Data<rmpv::Value>| {
        let ctx = ctx.clone();
        async move { greet(&socket, &ctx, &auth) }
    }
}

/// On connect the reference server emits `auth` with the CONNECT payload (`{}` when none).
fn greet<A: Adapter>(socket: &SocketRef<A>, ctx: &NodeContext, auth: &rmpv::Value) {
    if socket.emit("auth", auth).is_ok() {
        ctx.metrics().event_emitted();
    }
}

/// The raw Engine.IO endpoint: every message comes back as it was sent, text or binary.
#[derive(Debug)]
pub(crate) struct Echo;

impl EngineIoHandler for Echo {
    type Data = ();

    fn on_connect(self: Arc<Self>, _socket: Arc<Socket<()>>) {}

    fn on_disconnect(&self, _socket: Arc<Socket<()>>, _reason: DisconnectReason) {}

    fn on_message(self: &Arc<Self>, msg: Str, socket: Arc<Socket<()>>) {
        socket.emit(msg).ok();
    }

    fn on_binary(self: &Arc<Self>, data: Bytes, socket: Arc<Socket<()>>) {
        socket.emit_binary(data).ok();
    }
}

/// The echo endpoint's service, with the node's (conformance) timings.
pub(crate) fn echo_service(config: &NodeConfig) -> EngineIoService<Echo, NotFoundService> {
    let max_payload = usize::try_from(config.max_payload).unwrap_or(usize::MAX);
    let engine_config = EngineIoConfig::builder()
        .req_path(ENGINE_PATH)
        .ping_interval(*config.ping_interval)
        .ping_timeout(*config.ping_timeout)
        .max_payload(config.max_payload)
        .ws_max_message_size(max_payload)
        .ws_max_frame_size(max_payload)
        .build();
    EngineIoService::with_config(Arc::new(Echo), engine_config)
}
