//! What can go wrong: before a session is connected ([`ConnectError`]), when it ends
//! ([`DisconnectReason`]), when sending ([`EmitError`], [`AckError`]) and when decoding
//! ([`DecodeError`]). Every error has a short `kind()` for reports.

use std::{fmt, io};

use http::StatusCode;

/// Why [`Session::connect`](super::Session::connect) failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectError {
    /// The target refused the TCP connection.
    #[error("connection refused: {0}")]
    Refused(String),
    /// The session was not connected within the connect timeout (or a socket timed out).
    #[error("timed out")]
    Timeout,
    /// The server answered a handshake, poll, post or WebSocket upgrade with an HTTP error.
    #[error("HTTP {status}: {body}")]
    Http {
        /// The status code.
        status: u16,
        /// The start of the body, for the log.
        body: String,
    },
    /// `400 Session ID unknown`: the server (or gateway) does not know the session.
    #[error("session ID unknown")]
    SessionUnknown,
    /// The server sent something that is not Engine.IO v4 / Socket.IO v5.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The server refused the namespace (`CONNECT_ERROR`), with its message.
    #[error("namespace refused: {0}")]
    Namespace(String),
    /// The source address could not be bound (not a local address, ports exhausted, wrong
    /// address family for the target).
    #[error("cannot bind the source address: {0}")]
    Bind(String),
    /// Another network error (reset, unreachable, …).
    #[error("network error: {0}")]
    Io(String),
    /// The server closed the connection or the session before the namespace was connected.
    #[error("closed before connecting: {0}")]
    Closed(String),
}

impl ConnectError {
    /// A short, stable name for reports: `refused`, `timeout`, `http_4xx`, `http_5xx`,
    /// `session_unknown`, `protocol`, `namespace`, `bind`, `io`, `closed`.
    pub fn kind(&self) -> &'static str {
        match self {
            ConnectError::Refused(_) => "refused",
            ConnectError::Timeout => "timeout",
            ConnectError::Http { status, .. } if *status >= 500 => "http_5xx",
            ConnectError::Http { .. } => "http_4xx",
            ConnectError::SessionUnknown => "session_unknown",
            ConnectError::Protocol(_) => "protocol",
            ConnectError::Namespace(_) => "namespace",
            ConnectError::Bind(_) => "bind",
            ConnectError::Io(_) => "io",
            ConnectError::Closed(_) => "closed",
        }
    }
}

/// Why a connected session ended, as delivered in
/// [`Incoming::Disconnected`](super::Incoming::Disconnected).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DisconnectReason {
    /// [`Session::close`](super::Session::close) was called (or every handle was dropped).
    ClientClose,
    /// The server closed the transport: WebSocket close or end of stream, Engine.IO `close`
    /// packet, an empty poll answer (the session was closed while polling).
    TransportClose,
    /// The transport failed: a network error, an HTTP error status, a request timeout.
    TransportError(String),
    /// A poll or post was answered `400 Session ID unknown`.
    SessionUnknown,
    /// The server sent a Socket.IO `DISCONNECT` for the namespace.
    ServerDisconnect,
    /// No ping from the server within `pingInterval + pingTimeout`.
    PingTimeout,
    /// The server sent something malformed; the session was ended.
    Protocol(String),
}

impl DisconnectReason {
    /// A short, stable name for reports: `client_close`, `transport_close`,
    /// `transport_error`, `session_unknown`, `server_disconnect`, `ping_timeout`, `protocol`.
    pub fn kind(&self) -> &'static str {
        match self {
            DisconnectReason::ClientClose => "client_close",
            DisconnectReason::TransportClose => "transport_close",
            DisconnectReason::TransportError(_) => "transport_error",
            DisconnectReason::SessionUnknown => "session_unknown",
            DisconnectReason::ServerDisconnect => "server_disconnect",
            DisconnectReason::PingTimeout => "ping_timeout",
            DisconnectReason::Protocol(_) => "protocol",
        }
    }
}

impl fmt::Display for DisconnectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DisconnectReason::TransportError(e) => write!(f, "transport error: {e}"),
            DisconnectReason::Protocol(e) => write!(f, "protocol error: {e}"),
            other => f.write_str(other.kind()),
        }
    }
}

/// Why an emit (or an ack answer) was not queued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmitError {
    /// The session has ended or is closing.
    #[error("the session is closed")]
    Closed,
    /// The arguments could not be serialized.
    #[error("cannot encode the arguments: {0}")]
    Encode(String),
}

/// Why [`Session::emit_with_ack`](super::Session::emit_with_ack) got no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AckError {
    /// No answer within the timeout.
    #[error("no ack within the timeout")]
    Timeout,
    /// The session ended before the answer came.
    #[error("the session is closed")]
    Closed,
    /// The arguments could not be serialized.
    #[error("cannot encode the arguments: {0}")]
    Encode(String),
}

impl From<EmitError> for AckError {
    fn from(err: EmitError) -> Self {
        match err {
            EmitError::Closed => AckError::Closed,
            EmitError::Encode(e) => AckError::Encode(e),
        }
    }
}

/// Arguments that do not decode to the asked type.
#[derive(Debug, thiserror::Error)]
#[error("cannot decode the arguments: {0}")]
pub struct DecodeError(pub(crate) String);

/// Everything that ends a session task, before or after it connected; mapped to a
/// [`ConnectError`] or a [`DisconnectReason`] depending on when it happened.
#[derive(Debug)]
pub(crate) enum Failure {
    Io(io::Error),
    Http(StatusCode, String),
    SessionUnknown,
    Protocol(String),
    Namespace(String),
    ServerDisconnect,
    Closed,
    PingTimeout,
    Timeout,
    Bind(io::Error),
    ClientClose,
}

impl Failure {
    pub(crate) fn protocol(what: impl Into<String>) -> Failure {
        Failure::Protocol(what.into())
    }

    /// An HTTP error answer: `400 Session ID unknown` is told apart from the others.
    pub(crate) fn http(status: StatusCode, body: &[u8]) -> Failure {
        let body = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
        if status == StatusCode::BAD_REQUEST && body.contains("Session ID unknown") {
            Failure::SessionUnknown
        } else {
            Failure::Http(status, body)
        }
    }

    /// A WebSocket error: HTTP answers and I/O errors keep their meaning.
    pub(crate) fn ws(err: tokio_tungstenite::tungstenite::Error) -> Failure {
        use tokio_tungstenite::tungstenite::Error as WsError;
        match err {
            WsError::Io(err) => Failure::Io(err),
            WsError::ConnectionClosed | WsError::AlreadyClosed => Failure::Closed,
            WsError::Http(res) => {
                let body = res.body().as_deref().unwrap_or_default();
                Failure::http(res.status(), body)
            }
            other => Failure::Protocol(format!("websocket: {other}")),
        }
    }

    /// A hyper client error: the I/O error inside, if any, tells what happened.
    pub(crate) fn hyper(err: hyper_util::client::legacy::Error) -> Failure {
        let mut bind = false;
        let mut found = None;
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&err);
        while let Some(e) = source {
            // hyper-util says "tcp bind local error" when the source address is refused.
            bind |= e.to_string().contains("bind local");
            if found.is_none()
                && let Some(io) = e.downcast_ref::<io::Error>()
            {
                found = Some(io::Error::new(io.kind(), io.to_string()));
            }
            source = e.source();
        }
        let io = found.unwrap_or_else(|| io::Error::other(err.to_string()));
        if bind {
            Failure::Bind(io)
        } else {
            Failure::Io(io)
        }
    }

    pub(crate) fn into_connect_error(self) -> ConnectError {
        match self {
            Failure::Io(err) => match err.kind() {
                io::ErrorKind::ConnectionRefused => ConnectError::Refused(err.to_string()),
                io::ErrorKind::TimedOut => ConnectError::Timeout,
                io::ErrorKind::AddrNotAvailable | io::ErrorKind::AddrInUse => {
                    ConnectError::Bind(err.to_string())
                }
                _ => ConnectError::Io(err.to_string()),
            },
            Failure::Bind(err) => ConnectError::Bind(err.to_string()),
            Failure::Http(status, body) => ConnectError::Http {
                status: status.as_u16(),
                body,
            },
            Failure::SessionUnknown => ConnectError::SessionUnknown,
            Failure::Protocol(e) => ConnectError::Protocol(e),
            Failure::Namespace(e) => ConnectError::Namespace(e),
            Failure::ServerDisconnect => ConnectError::Closed("server disconnect".into()),
            Failure::Closed => ConnectError::Closed("transport closed".into()),
            Failure::PingTimeout | Failure::Timeout => ConnectError::Timeout,
            Failure::ClientClose => ConnectError::Closed("closed by the client".into()),
        }
    }

    pub(crate) fn into_reason(self) -> DisconnectReason {
        match self {
            Failure::Io(err) | Failure::Bind(err) => {
                DisconnectReason::TransportError(err.to_string())
            }
            Failure::Http(status, body) => {
                DisconnectReason::TransportError(format!("HTTP {status}: {body}"))
            }
            Failure::Timeout => DisconnectReason::TransportError("request timed out".into()),
            Failure::SessionUnknown => DisconnectReason::SessionUnknown,
            Failure::Protocol(e) | Failure::Namespace(e) => DisconnectReason::Protocol(e),
            Failure::ServerDisconnect => DisconnectReason::ServerDisconnect,
            Failure::Closed => DisconnectReason::TransportClose,
            Failure::PingTimeout => DisconnectReason::PingTimeout,
            Failure::ClientClose => DisconnectReason::ClientClose,
        }
    }
}

impl From<io::Error> for Failure {
    fn from(err: io::Error) -> Self {
        Failure::Io(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_stable() {
        let http = |status| ConnectError::Http {
            status,
            body: String::new(),
        };
        assert_eq!(http(404).kind(), "http_4xx");
        assert_eq!(http(503).kind(), "http_5xx");
        assert_eq!(
            Failure::http(
                StatusCode::BAD_REQUEST,
                br#"{"code":1,"message":"Session ID unknown"}"#
            )
            .into_connect_error()
            .kind(),
            "session_unknown"
        );
        assert_eq!(
            Failure::Io(io::ErrorKind::ConnectionRefused.into())
                .into_connect_error()
                .kind(),
            "refused"
        );
        assert_eq!(Failure::PingTimeout.into_reason().kind(), "ping_timeout");
        assert_eq!(Failure::Closed.into_reason().kind(), "transport_close");
    }
}
