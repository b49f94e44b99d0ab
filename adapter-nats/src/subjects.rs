//! The subject hierarchy on the bus, in one place.
//!
//! ```text
//! {prefix}.ns.{ns}.all            requests to every node serving namespace {ns}
//! {prefix}.ns.{ns}.node.{uid}     requests to one node (operations on one remote socket)
//! {prefix}.res.{uid}              responses to node {uid}, for every namespace
//! {prefix}.cluster.heartbeat      membership: hello, heartbeat, goodbye
//! {prefix}.cluster.event          server-to-server events
//! ```
//!
//! `{ns}` is the namespace path in unpadded base64url, so any valid namespace (`/`, `/a.b`,
//! `/chat room`, dynamic ones) is a single safe subject token. `{uid}` is a socketioxide server
//! id, already made of base64url characters.
//!
//! A node receives every request on one subscription, `{prefix}.ns.*.>`, and ignores requests
//! addressed to other nodes by their subject. One subscription is what keeps a node's requests
//! in the order it sent them: a bus orders one publisher's messages within a subscription, not
//! across two (a `join` sent to one node must not overtake, or be overtaken by, a broadcast
//! sent to all). The price is that requests for one node reach every node, to be dropped by
//! subject; they are the rare ones (operations on a single remote socket).

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use socketioxide_core::Uid;

/// Why a subject prefix was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "subject prefix {0:?} must be dot-separated tokens of letters, digits, '-' and '_' (e.g. corral or acme.chat)"
)]
pub struct PrefixError(pub String);

/// Where each kind of message goes, under one prefix (so several apps can share one NATS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subjects {
    prefix: String,
}

/// What a received subject addresses.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    /// A request for namespace `ns`.
    Request {
        /// The decoded namespace path.
        ns: String,
        /// The server id it is addressed to, or `None` for every node.
        target: Option<String>,
    },
    /// A response to one of this node's requests.
    Response,
    /// A membership message.
    Heartbeat,
    /// A server-to-server event.
    ServerEvent,
}

impl Subjects {
    /// Subjects under `prefix`, which must be valid NATS tokens without wildcards.
    pub fn new(prefix: &str) -> Result<Subjects, PrefixError> {
        let valid = !prefix.is_empty()
            && prefix.split('.').all(|token| {
                !token.is_empty()
                    && token
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            });
        if !valid {
            return Err(PrefixError(prefix.to_owned()));
        }
        Ok(Subjects {
            prefix: prefix.to_owned(),
        })
    }

    /// The prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Requests to every node serving namespace `ns`.
    pub fn broadcast(&self, ns: &str) -> String {
        format!("{}.ns.{}.all", self.prefix, encode_ns(ns))
    }

    /// Requests to node `uid` for namespace `ns`.
    pub fn node(&self, ns: &str, uid: Uid) -> String {
        format!("{}.ns.{}.node.{uid}", self.prefix, encode_ns(ns))
    }

    /// Where every request of every namespace arrives, to all nodes or to one.
    pub fn requests_wildcard(&self) -> String {
        format!("{}.ns.*.>", self.prefix)
    }

    /// Responses to node `uid`.
    pub fn responses(&self, uid: Uid) -> String {
        format!("{}.res.{uid}", self.prefix)
    }

    /// Membership messages.
    pub fn heartbeat(&self) -> String {
        format!("{}.cluster.heartbeat", self.prefix)
    }

    /// Server-to-server events.
    pub fn server_event(&self) -> String {
        format!("{}.cluster.event", self.prefix)
    }

    /// What `subject` addresses, or `None` for a subject outside this hierarchy.
    pub fn route(&self, subject: &str) -> Option<Route> {
        let rest = subject.strip_prefix(&self.prefix)?.strip_prefix('.')?;
        let mut tokens = rest.split('.');
        match (tokens.next()?, tokens.next(), tokens.next()) {
            ("ns", Some(ns), Some("all")) if tokens.next().is_none() => Some(Route::Request {
                ns: decode_ns(ns)?,
                target: None,
            }),
            ("ns", Some(ns), Some("node")) => {
                let target = tokens.next()?.to_owned();
                tokens.next().is_none().then_some(())?;
                Some(Route::Request {
                    ns: decode_ns(ns)?,
                    target: Some(target),
                })
            }
            ("res", Some(_), None) => Some(Route::Response),
            ("cluster", Some("heartbeat"), None) => Some(Route::Heartbeat),
            ("cluster", Some("event"), None) => Some(Route::ServerEvent),
            _ => None,
        }
    }
}

/// A namespace path as one subject token.
pub fn encode_ns(ns: &str) -> String {
    URL_SAFE_NO_PAD.encode(ns.as_bytes())
}

/// The namespace path in a subject token, if the token is one.
pub fn decode_ns(token: &str) -> Option<String> {
    String::from_utf8(URL_SAFE_NO_PAD.decode(token).ok()?).ok()
}

/// NATS subject matching: `*` matches one token, a final `>` one or more.
pub fn subject_matches(pattern: &str, subject: &str) -> bool {
    let mut pattern = pattern.split('.');
    let mut subject = subject.split('.');
    loop {
        match (pattern.next(), subject.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(p), Some(s)) if p == s => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_namespace_is_one_safe_token() {
        for ns in ["/", "/custom", "/a.b", "/chat room", "/*>", "/ünï", ""] {
            let token = encode_ns(ns);
            assert!(
                token
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
                "{ns:?} -> {token}"
            );
            assert_eq!(decode_ns(&token).as_deref(), Some(ns));
        }
    }

    #[test]
    fn subjects_route_back_to_what_they_address() {
        let s = Subjects::new("acme.chat").unwrap();
        let uid = Uid::new();
        assert_eq!(
            s.route(&s.broadcast("/a.b")),
            Some(Route::Request {
                ns: "/a.b".into(),
                target: None
            })
        );
        assert_eq!(
            s.route(&s.node("/", uid)),
            Some(Route::Request {
                ns: "/".into(),
                target: Some(uid.to_string())
            })
        );
        assert_eq!(s.route(&s.responses(uid)), Some(Route::Response));
        assert_eq!(s.route(&s.heartbeat()), Some(Route::Heartbeat));
        assert_eq!(s.route(&s.server_event()), Some(Route::ServerEvent));
        assert_eq!(s.route("other.ns.Lw.all"), None);
        assert_eq!(s.route("acme.chat.ns.!!!.all"), None);
        assert_eq!(s.route(&format!("{}.extra", s.broadcast("/"))), None);
        assert!(subject_matches(&s.requests_wildcard(), &s.broadcast("/x")));
        assert!(subject_matches(&s.requests_wildcard(), &s.node("/x", uid)));
        assert!(!subject_matches(&s.requests_wildcard(), &s.responses(uid)));
    }

    #[test]
    fn prefixes_are_validated() {
        assert!(Subjects::new("corral").is_ok());
        assert!(Subjects::new("acme.chat-1").is_ok());
        for bad in ["", "a..b", "a.*", "a.>", "a b", ".a"] {
            assert!(Subjects::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn nats_wildcards_match_like_nats() {
        assert!(subject_matches("a.*.c", "a.b.c"));
        assert!(!subject_matches("a.*.c", "a.b.d.c"));
        assert!(subject_matches("a.>", "a.b.c"));
        assert!(!subject_matches("a.>", "a"));
        assert!(!subject_matches("a.b", "a.b.c"));
    }
}
