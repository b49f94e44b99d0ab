//! The node's front HTTP service: health, readiness and metrics endpoints, CORS, the drain gate
//! for new sessions, and clear answers for refused Engine.IO requests. Everything else goes to
//! socketioxide (which hands non-Socket.IO paths on to the app's pages).

use std::{convert::Infallible, future::Future, pin::Pin, sync::Arc};

use bytes::Bytes;
use http::{
    HeaderMap, HeaderValue, Method, Request, Response, StatusCode,
    header::{self, HeaderName},
};
use http_body_util::{BodyExt, Full, combinators::UnsyncBoxBody};
use hyper::{body::Incoming, service::Service};
use socketioxide::TransportType;
use tokio::sync::watch;
use tracing::Instrument as _;

use crate::{
    Io,
    context::{NodeContext, ReadyState},
    session::SessionSeal,
};

/// The response body every node endpoint answers with. Bodies are built in memory or by
/// socketioxide, neither of which fails.
pub(crate) type HttpBody = UnsyncBoxBody<Bytes, Infallible>;

/// A complete response with a small in-memory body.
pub(crate) fn full(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<HttpBody> {
    let mut res = Response::new(Full::new(body.into()).boxed_unsync());
    *res.status_mut() = status;
    res.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    res
}

/// Boxes any body into [`HttpBody`].
pub(crate) fn boxed<B>(res: Response<B>) -> Response<HttpBody>
where
    B: hyper::body::Body<Data = Bytes, Error = Infallible> + Send + 'static,
{
    res.map(|b| b.boxed_unsync())
}

/// The value of `key` in a URL query string, undecoded.
pub(crate) fn query_param<'q>(query: Option<&'q str>, key: &str) -> Option<&'q str> {
    query?
        .split('&')
        .find_map(|pair| pair.strip_prefix(key)?.strip_prefix('='))
}

/// True when `path` is `base` or below it (`/socket.io` matches `/socket.io/` but not
/// `/socket.iox`), the rule socketioxide applies too.
pub(crate) fn is_below(path: &str, base: &str) -> bool {
    path.strip_prefix(base)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// Which cross-origin pages may talk to the node.
#[derive(Debug, Clone)]
pub(crate) enum Cors {
    /// Only same-origin pages: no CORS headers at all.
    SameOrigin,
    /// Any origin (`*`).
    Any,
    /// These exact origins, with credentials (cookies) allowed.
    List(Vec<String>),
}

impl Cors {
    pub(crate) fn from_origins(origins: &[String]) -> Cors {
        if origins.is_empty() {
            Cors::SameOrigin
        } else if origins.iter().any(|o| o == "*") {
            Cors::Any
        } else {
            Cors::List(origins.to_vec())
        }
    }

    /// The CORS headers to add for a request with these headers, if its origin is allowed.
    fn headers(&self, req: &HeaderMap) -> Vec<(HeaderName, HeaderValue)> {
        let origin = req.get(header::ORIGIN);
        match (self, origin) {
            (Cors::SameOrigin, _) | (_, None) => vec![],
            (Cors::Any, Some(_)) => vec![(
                header::ACCESS_CONTROL_ALLOW_ORIGIN,
                HeaderValue::from_static("*"),
            )],
            (Cors::List(list), Some(origin)) => {
                let allowed = origin
                    .to_str()
                    .is_ok_and(|o| list.iter().any(|allowed| allowed.eq_ignore_ascii_case(o)));
                if !allowed {
                    return vec![(header::VARY, HeaderValue::from_static("Origin"))];
                }
                vec![
                    (header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone()),
                    (
                        header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                        HeaderValue::from_static("true"),
                    ),
                    (header::VARY, HeaderValue::from_static("Origin")),
                ]
            }
        }
    }

    /// The answer to a CORS preflight (`OPTIONS` with `Access-Control-Request-Method`).
    fn preflight(&self, req: &HeaderMap) -> Response<HttpBody> {
        let mut res = full(StatusCode::NO_CONTENT, "text/plain", Bytes::new());
        let cors = self.headers(req);
        let allowed = cors
            .iter()
            .any(|(name, _)| name == header::ACCESS_CONTROL_ALLOW_ORIGIN);
        let headers = res.headers_mut();
        headers.extend(cors);
        if allowed {
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static("GET, POST, OPTIONS"),
            );
            if let Some(asked) = req.get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
                headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, asked.clone());
            }
            headers.insert(
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from_static("86400"),
            );
        }
        res
    }
}

/// Settings of the front service that do not change while the node runs.
#[derive(Debug)]
pub(crate) struct FrontConfig {
    /// Paths served by an Engine.IO server (Socket.IO's, and the raw echo one in conformance).
    pub(crate) engine_paths: Vec<String>,
    pub(crate) cors: Cors,
    pub(crate) max_payload: u64,
    /// Seals the session ids handed to clients; see [`crate::session`].
    pub(crate) seal: SessionSeal,
    /// Turns true once the drain has handed the clients off: long-polls still pending then
    /// belong to sessions the node is abandoning, and are answered with a close at once.
    pub(crate) closing: watch::Receiver<bool>,
}

/// Resolves once `closing` is true.
async fn closing(mut closing: watch::Receiver<bool>) {
    while !*closing.borrow_and_update() {
        if closing.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}

/// The outermost service of a node; `S` is the socketioxide service.
pub(crate) struct Front<S> {
    engine: S,
    io: Io,
    ctx: NodeContext,
    config: Arc<FrontConfig>,
}

impl<S: Clone> Clone for Front<S> {
    fn clone(&self) -> Self {
        Front {
            engine: self.engine.clone(),
            io: self.io.clone(),
            ctx: self.ctx.clone(),
            config: self.config.clone(),
        }
    }
}

impl<S> Front<S> {
    pub(crate) fn new(engine: S, io: Io, ctx: NodeContext, config: FrontConfig) -> Self {
        Front {
            engine,
            io,
            ctx,
            config: Arc::new(config),
        }
    }

    /// Health, readiness and metrics: answered here, whatever the app.
    fn node_endpoint(&self, req: &Request<Incoming>) -> Option<Response<HttpBody>> {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return None;
        }
        let res = match req.uri().path() {
            "/healthz" => full(StatusCode::OK, "text/plain; charset=utf-8", "ok\n"),
            "/readyz" => {
                let (status, state, reason) = match self.ctx.readiness() {
                    ReadyState::Ready => (StatusCode::OK, "ready", None),
                    ReadyState::BusDisconnected => (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "degraded",
                        Some("bus_disconnected"),
                    ),
                    ReadyState::Draining => (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "not_ready",
                        Some("draining"),
                    ),
                };
                // The node id and load let a router (the gateway) learn who answers and how
                // busy it is from the same probe.
                let (connections, _) = crate::server::count_sockets(&self.io);
                let body = serde_json::json!({
                    "status": state,
                    "reason": reason,
                    "node_id": self.ctx.node_id().as_str(),
                    "connections": connections,
                });
                full(status, "application/json", body.to_string())
            }
            "/cluster/nodes" => {
                let nodes = self.ctx.cluster().nodes();
                full(
                    StatusCode::OK,
                    "application/json",
                    serde_json::to_vec(&nodes).unwrap_or_default(),
                )
            }
            "/metrics" => {
                self.ctx.refresh_connected(&self.io);
                full(
                    StatusCode::OK,
                    "text/plain; version=0.0.4; charset=utf-8",
                    self.ctx.metrics().render(),
                )
            }
            _ => return None,
        };
        Some(res)
    }
}

/// Notes a long-poll whose request went away before it was answered (the client, or the
/// gateway on its behalf, gave up on it): the session may poll again at once.
struct PollWaiting(bool);

impl Drop for PollWaiting {
    fn drop(&mut self) {
        if self.0 {
            tracing::debug!("long-poll abandoned before an answer");
        }
    }
}

/// What kind of Engine.IO request this is, decided from the path and query alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EngineRequest {
    /// Not an Engine.IO path.
    None,
    /// A request without `sid`: it opens a session.
    Handshake,
    /// A request of an existing session.
    Session,
}

impl<S, B> Service<Request<Incoming>> for Front<S>
where
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible>,
    S::Future: Send + 'static,
    B: hyper::body::Body<Data = Bytes, Error = Infallible> + Send + 'static,
{
    type Response = Response<HttpBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, mut req: Request<Incoming>) -> Self::Future {
        let cors = self.config.cors.headers(req.headers());
        if req.method() == Method::OPTIONS
            && req
                .headers()
                .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
        {
            let res = self.config.cors.preflight(req.headers());
            return Box::pin(async move { Ok(res) });
        }
        if let Some(res) = self.node_endpoint(&req) {
            return Box::pin(async move { Ok(res) });
        }

        let path = req.uri().path();
        let kind = if !self
            .config
            .engine_paths
            .iter()
            .any(|base| is_below(path, base))
        {
            EngineRequest::None
        } else if query_param(req.uri().query(), "sid").is_some() {
            EngineRequest::Session
        } else {
            EngineRequest::Handshake
        };
        let transport = match query_param(req.uri().query(), "transport") {
            Some("websocket") => TransportType::Websocket,
            _ => TransportType::Polling,
        };

        if kind == EngineRequest::Handshake && self.ctx.is_draining() {
            self.ctx.metrics().handshake_rejected("draining");
            let mut res = full(
                StatusCode::SERVICE_UNAVAILABLE,
                "application/json",
                r#"{"code":4,"message":"Node is draining, connect again to reach another node"}"#,
            );
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            res.headers_mut().extend(cors);
            return Box::pin(async move { Ok(res) });
        }

        if kind == EngineRequest::Handshake {
            detach_head(&mut req);
        }
        if kind == EngineRequest::Session && !unseal_sid(&mut req, &self.config.seal) {
            self.ctx.metrics().request_rejected("unknown_session");
            let mut res = session_unknown();
            res.headers_mut().extend(cors);
            return Box::pin(async move { Ok(res) });
        }

        // A long-poll may wait for data for the whole ping interval.
        let long_poll = kind == EngineRequest::Session
            && req.method() == Method::GET
            && transport == TransportType::Polling;
        let ctx = self.ctx.clone();
        let config = self.config.clone();
        // An Engine.IO request's span, child of the caller's (the gateway's) trace context.
        // socketioxide runs the synchronous part of event handlers while it handles a polling
        // POST, so the event spans of that POST become its children.
        let span = match kind {
            EngineRequest::None => tracing::Span::none(),
            _ => {
                let span = tracing::debug_span!(
                    target: corral_adapter_nats::trace::TARGET,
                    "node request",
                    otel.kind = "server",
                    http.request.method = %req.method(),
                    corral.request = if kind == EngineRequest::Handshake { "handshake" } else { "session" },
                    corral.transport = ?transport,
                    corral.node = ctx.node_id().as_str(),
                    http.response.status_code = tracing::field::Empty,
                );
                corral_adapter_nats::trace::adopt_http(&span, req.headers());
                span
            }
        };
        let fut = span.in_scope(|| self.engine.call(req));
        let request_span = span.clone();
        Box::pin(
            async move {
                let res = if long_poll {
                    let mut waiting = PollWaiting(true);
                    let res = tokio::select! {
                        res = fut => res,
                        () = closing(config.closing.clone()) => {
                            waiting.0 = false;
                            // The Engine.IO close packet: the client reconnects elsewhere.
                            let mut res = full(StatusCode::OK, "text/plain; charset=UTF-8", "1");
                            res.headers_mut().extend(cors);
                            return Ok(res);
                        }
                    };
                    waiting.0 = false;
                    res
                } else {
                    fut.await
                };
                let res = match res {
                    Ok(res) => res,
                    Err(never) => match never {},
                };
                let mut res = match kind {
                    EngineRequest::None => boxed(res),
                    _ => explain_engine_response(res, kind, transport, &ctx, &config).await,
                };
                request_span.record("http.response.status_code", res.status().as_u16());
                res.headers_mut().extend(cors);
                Ok(res)
            }
            .instrument(span),
        )
    }
}

/// Counts the outcome of an Engine.IO request and turns socketioxide's terse refusals into the
/// answers the Engine.IO reference server gives: numeric error codes, and a body saying why a
/// payload was refused.
async fn explain_engine_response<B>(
    res: Response<B>,
    kind: EngineRequest,
    transport: TransportType,
    ctx: &NodeContext,
    config: &FrontConfig,
) -> Response<HttpBody>
where
    B: hyper::body::Body<Data = Bytes, Error = Infallible> + Send + 'static,
{
    let metrics = ctx.metrics();
    let status = res.status();
    match (kind, status) {
        (EngineRequest::Handshake, StatusCode::OK) => {
            metrics.handshake(transport);
            return seal_open_packet(res, &config.seal).await;
        }
        (EngineRequest::Handshake, StatusCode::SWITCHING_PROTOCOLS) => {
            metrics.handshake(transport);
            return boxed(res);
        }
        (_, StatusCode::PAYLOAD_TOO_LARGE) => {
            metrics.request_rejected("payload_too_large");
            return full(
                StatusCode::PAYLOAD_TOO_LARGE,
                "text/plain; charset=utf-8",
                format!(
                    "payload too large: this node accepts at most {} bytes per request\n",
                    config.max_payload
                ),
            );
        }
        (_, status) if status.is_success() || status.is_informational() => return boxed(res),
        _ => {}
    }
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    let (parts, body) = res.into_parts();
    // Refusals carry a few dozen bytes at most, so reading them whole is cheap.
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(never) => match never {},
    };
    let body = if is_json {
        numeric_error_code(body)
    } else {
        body
    };
    let code = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("code")?.as_u64());
    let reason = match (kind, code) {
        (EngineRequest::Handshake, _) => {
            metrics.handshake_rejected("bad_request");
            None
        }
        (_, Some(1)) => Some("unknown_session"),
        _ => Some("bad_request"),
    };
    if let Some(reason) = reason {
        metrics.request_rejected(reason);
    }
    let mut res = Response::from_parts(parts, Full::new(body).boxed_unsync());
    res.headers_mut().remove(header::CONTENT_LENGTH);
    res
}

/// The Engine.IO answer to a request for a session the node does not know.
fn session_unknown() -> Response<HttpBody> {
    full(
        StatusCode::BAD_REQUEST,
        "application/json",
        r#"{"code":1,"message":"Session ID unknown"}"#,
    )
}

/// Copies the URI and header values of a request that opens a session out of the connection's
/// read buffer. socketioxide keeps the handshake's request head for the session's whole life, and
/// hyper parses heads without copying: each value is a slice of the 8 KiB buffer the head was
/// read into, and one kept slice keeps the whole buffer: 8 KiB of heap for every idle session.
fn detach_head<B>(req: &mut Request<B>) {
    if let Ok(uri) = http::Uri::try_from(req.uri().to_string()) {
        *req.uri_mut() = uri;
    }
    for value in req.headers_mut().values_mut() {
        if let Ok(mut copy) = HeaderValue::from_bytes(value.as_bytes()) {
            copy.set_sensitive(value.is_sensitive());
            *value = copy;
        }
    }
}

/// Replaces the sealed `sid` of a session request by the plain one socketioxide knows; false
/// when the seal does not open (a forged, foreign or plain id).
fn unseal_sid<B>(req: &mut Request<B>, seal: &SessionSeal) -> bool {
    let Some(query) = req.uri().query() else {
        return false;
    };
    let mut plain = None;
    let rewritten: Vec<String> = query
        .split('&')
        .map(|pair| match pair.strip_prefix("sid=") {
            Some(sealed) => {
                plain = seal.open(sealed);
                format!("sid={}", plain.unwrap_or_default())
            }
            None => pair.to_owned(),
        })
        .collect();
    if plain.is_none() {
        return false;
    }
    let path_and_query = format!("{}?{}", req.uri().path(), rewritten.join("&"));
    let mut parts = req.uri().clone().into_parts();
    parts.path_and_query = path_and_query.parse().ok();
    match http::Uri::from_parts(parts) {
        Ok(uri) => {
            *req.uri_mut() = uri;
            true
        }
        Err(_) => false,
    }
}

/// Seals the `sid` of a polling open packet (`0{"sid":"…",…}`), leaving every other byte as is.
async fn seal_open_packet<B>(res: Response<B>, seal: &SessionSeal) -> Response<HttpBody>
where
    B: hyper::body::Body<Data = Bytes, Error = Infallible> + Send + 'static,
{
    let (mut parts, body) = res.into_parts();
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(never) => match never {},
    };
    let sealed = std::str::from_utf8(&body).ok().and_then(|text| {
        let json = text.strip_prefix('0')?;
        let open: serde_json::Value = serde_json::from_str(json).ok()?;
        let sid = open.get("sid")?.as_str()?;
        let needle = format!(r#""sid":"{sid}""#);
        Some(text.replacen(&needle, &format!(r#""sid":"{}""#, seal.seal(sid)), 1))
    });
    let body = match sealed {
        Some(text) => Bytes::from(text),
        // Not an open packet we understand: refuse rather than leak an unsealed id.
        None => {
            tracing::error!("unexpected polling handshake body; refusing the session");
            return full(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain; charset=utf-8",
                "handshake failed\n",
            );
        }
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Full::new(body).boxed_unsync())
}

/// Rewrites `{"code":"1",...}` into `{"code":1,...}`, as the Engine.IO protocol has it.
fn numeric_error_code(body: Bytes) -> Bytes {
    let Ok(mut value) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return body;
    };
    let Some(code) = value
        .get("code")
        .and_then(|c| c.as_str()?.parse::<u64>().ok())
    else {
        return body;
    };
    value["code"] = code.into();
    serde_json::to_vec(&value).map(Bytes::from).unwrap_or(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_handshake_head_no_longer_points_into_the_read_buffer() {
        // What hyper hands over: every value a slice of the buffer the head was read into.
        let buffer = Bytes::from(vec![b'x'; 8192]);
        let inside = |ptr: *const u8| buffer.as_ptr_range().contains(&ptr);
        let cookie = buffer.slice(0..16);
        let mut req = Request::get("/socket.io/?EIO=4&transport=websocket")
            .body(())
            .expect("request");
        let mut value = HeaderValue::from_maybe_shared(cookie).expect("header value");
        value.set_sensitive(true);
        req.headers_mut().insert(header::COOKIE, value);
        assert!(inside(req.headers()[header::COOKIE].as_bytes().as_ptr()));

        detach_head(&mut req);

        let copied = &req.headers()[header::COOKIE];
        assert_eq!(copied.as_bytes(), &[b'x'; 16]);
        assert!(copied.is_sensitive());
        assert!(!inside(copied.as_bytes().as_ptr()));
        assert_eq!(req.uri(), "/socket.io/?EIO=4&transport=websocket");
    }

    #[test]
    fn query_params_are_found_by_exact_key() {
        let q = Some("EIO=4&transport=polling&sid=abc");
        assert_eq!(query_param(q, "sid"), Some("abc"));
        assert_eq!(query_param(q, "transport"), Some("polling"));
        assert_eq!(query_param(Some("xsid=1"), "sid"), None);
        assert_eq!(query_param(None, "sid"), None);
    }

    #[test]
    fn engine_paths_match_only_themselves_and_below() {
        assert!(is_below("/socket.io/", "/socket.io"));
        assert!(is_below("/socket.io", "/socket.io"));
        assert!(!is_below("/socket.iox", "/socket.io"));
        assert!(!is_below("/", "/socket.io"));
    }

    #[test]
    fn session_requests_carry_the_plain_sid_after_unsealing() {
        let seal = SessionSeal::random().unwrap();
        let sealed = seal.seal("AbCdEfGhIjKlMn-_");
        let mut req = Request::builder()
            .uri(format!(
                "/socket.io/?EIO=4&transport=polling&sid={sealed}&t=x"
            ))
            .body(())
            .unwrap();
        assert!(unseal_sid(&mut req, &seal));
        assert_eq!(
            req.uri().to_string(),
            "/socket.io/?EIO=4&transport=polling&sid=AbCdEfGhIjKlMn-_&t=x"
        );
        let mut plain = Request::builder()
            .uri("/socket.io/?EIO=4&transport=polling&sid=AbCdEfGhIjKlMn-_")
            .body(())
            .unwrap();
        assert!(!unseal_sid(&mut plain, &seal));
    }

    #[test]
    fn error_codes_become_numbers() {
        let body = numeric_error_code(Bytes::from_static(
            br#"{"code":"1","message":"Session ID unknown"}"#,
        ));
        assert_eq!(&body[..], br#"{"code":1,"message":"Session ID unknown"}"#);
        let garbage = Bytes::from_static(b"not json");
        assert_eq!(numeric_error_code(garbage.clone()), garbage);
    }

    #[test]
    fn cors_allows_only_listed_origins() {
        let mut req = HeaderMap::new();
        req.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://a.example"),
        );
        let list = Cors::from_origins(&["https://a.example".into()]);
        let headers = list.headers(&req);
        assert!(
            headers
                .iter()
                .any(|(n, v)| n == header::ACCESS_CONTROL_ALLOW_ORIGIN && v == "https://a.example")
        );

        req.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.example"),
        );
        assert!(
            !list
                .headers(&req)
                .iter()
                .any(|(n, _)| n == header::ACCESS_CONTROL_ALLOW_ORIGIN)
        );
        assert!(Cors::SameOrigin.headers(&req).is_empty());
        assert_eq!(Cors::from_origins(&["*".into()]).headers(&req)[0].1, "*");
    }
}
