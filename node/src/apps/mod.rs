//! The built-in apps a node can run (`--app`): their Socket.IO handlers and their HTTP pages.
//! Users who embed the node library bring their own handlers instead (see [`crate::NodeBuilder::handlers`]).

mod args;
pub(crate) mod bench;
mod chat;
mod cluster_check;
pub(crate) mod conformance;

use std::{convert::Infallible, future::Future, pin::Pin, sync::Arc};

use engineioxide::service::{EngineIoService, NotFoundService};
use http::{Method, Request, Response, StatusCode};
use hyper::{body::Incoming, service::Service};
use serde::Serialize;
use socketioxide::{
    SocketIo,
    adapter::Adapter,
    extract::{AckSender, SocketRef},
    handler::ConnectHandler,
};
use socketioxide_core::adapter::DefinedAdapter;

use crate::{
    config::{AppKind, NodeConfig},
    context::NodeContext,
    http::{HttpBody, boxed, full},
};

/// A namespace's connect handler in two steps, for `io.ns` and `io.dyn_ns`. `setup` installs
/// the socket's event handlers (and may join rooms) in a connect middleware, which runs
/// *before* the client is told it is connected; `greet` runs once it is (it may emit).
/// socketioxide runs the connect handler as a task after sending the CONNECT answer, so
/// handlers installed there could miss an event a client sends the moment it is connected.
pub(crate) fn on_connect<A, S, G>(setup: S, greet: G) -> impl ConnectHandler<A, (SocketRef<A>,)>
where
    A: Adapter,
    S: Fn(&SocketRef<A>, &SocketIo<A>) + Clone + Send + Sync + 'static,
    G: Fn(&SocketRef<A>) + Clone + Send + Sync + 'static,
{
    let middleware = move |socket: SocketRef<A>, io: SocketIo<A>| {
        let setup = setup.clone();
        async move {
            setup(&socket, &io);
            Ok::<(), Infallible>(())
        }
    };
    let handler = move |socket: SocketRef<A>| {
        let greet = greet.clone();
        async move { greet(&socket) }
    };
    handler.with(middleware)
}

/// Registers the handlers of the built-in app `kind`.
pub(crate) fn install<A: Adapter + DefinedAdapter>(
    kind: AppKind,
    io: &SocketIo<A>,
    ctx: &NodeContext,
) {
    match kind {
        AppKind::Chat => chat::install(io, ctx),
        AppKind::Bench => bench::install(io, ctx),
        AppKind::Conformance => conformance::install(io, ctx),
        AppKind::ClusterCheck => cluster_check::install(io, ctx),
    }
}

#[derive(Serialize)]
struct ErrorReply<'a> {
    error: &'a str,
}

/// Answers a malformed request with `{"error": why}` instead of leaving the client waiting.
fn reply_error<A: Adapter>(ack: AckSender<A>, why: &str) {
    ack.send(&ErrorReply { error: why }).ok();
}

/// The HTTP side of the app: what socketioxide does not answer itself.
#[derive(Clone)]
pub(crate) struct Pages(Arc<PagesInner>);

enum PagesInner {
    Chat(chat::pages::ChatPages),
    Bench,
    Conformance(EngineIoService<conformance::Echo, NotFoundService>),
    /// An embedder's app: only the node endpoints exist.
    Custom,
}

impl Pages {
    /// The pages of built-in app `kind`, or of a custom app when `None`.
    pub(crate) fn new(kind: Option<AppKind>, config: &NodeConfig) -> Pages {
        let inner = match kind {
            Some(AppKind::Chat) => {
                PagesInner::Chat(chat::pages::ChatPages::new(config.client_bundle.clone()))
            }
            Some(AppKind::Bench | AppKind::ClusterCheck) => PagesInner::Bench,
            Some(AppKind::Conformance) => {
                PagesInner::Conformance(conformance::echo_service(config))
            }
            None => PagesInner::Custom,
        };
        Pages(Arc::new(inner))
    }
}

fn not_found() -> Response<HttpBody> {
    full(
        StatusCode::NOT_FOUND,
        "text/plain; charset=utf-8",
        "not found\n",
    )
}

impl Service<Request<Incoming>> for Pages {
    type Response = Response<HttpBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<HttpBody>, Infallible>> + Send>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let this = self.0.clone();
        if let PagesInner::Conformance(echo) = &*this {
            let fut = echo.call(req);
            return Box::pin(async move {
                let res = fut.await.unwrap_or_else(|never| match never {});
                Ok(boxed(res))
            });
        }
        Box::pin(async move {
            if req.method() != Method::GET && req.method() != Method::HEAD {
                return Ok(not_found());
            }
            let path = req.uri().path();
            let res = match &*this {
                PagesInner::Chat(pages) => pages.respond(path).await,
                PagesInner::Bench if path == "/" => Some(full(
                    StatusCode::OK,
                    "text/plain; charset=utf-8",
                    "corral node: bench app (protocol in docs/loadtest.md)\n",
                )),
                _ => None,
            };
            Ok(res.unwrap_or_else(not_found))
        })
    }
}

/// The span of one event an app handles: a child of the request that carried it (a polling
/// POST through the gateway), or the root of a new trace (a WebSocket frame). Create it in the
/// synchronous part of the handler, which socketioxide runs while it handles the request.
pub(crate) fn event_span<A: Adapter>(socket: &SocketRef<A>, event: &'static str) -> tracing::Span {
    tracing::debug_span!(
        target: corral_adapter_nats::trace::TARGET,
        "socket.io event",
        otel.kind = "server",
        corral.event = event,
        corral.namespace = socket.ns(),
    )
}
