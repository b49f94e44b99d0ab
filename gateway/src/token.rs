//! Session tokens and affinity cookies: what lets any gateway replica route any request without
//! shared state, and what keeps one client from steering another's session.
//!
//! A polling handshake's `sid` is replaced by `<node id>.<node's sid>.<tag>`, the tag being an
//! HMAC-SHA256 (first 16 bytes, base64url) of `<node id>.<node's sid>` under `--session-secret`.
//! Every replica with the same secret can check a token and find its node; a forged, altered
//! or foreign token fails the check. The affinity cookie is `<node id>.<tag>` under the same key.
//! Node ids and node sids are made of `A-Z a-z 0-9 - _`, so `.` separates them unambiguously and
//! the token needs no escaping in a URL.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// Bytes of the MAC kept in a token.
const TAG_BYTES: usize = 16;

/// Signs and checks session tokens and affinity cookies.
#[derive(Clone)]
pub struct Tokens {
    mac: Hmac<Sha256>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tokens(..)")
    }
}

/// What a valid session token names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRef<'a> {
    /// The node that holds the session.
    pub node: &'a str,
    /// The session id the node gave it.
    pub sid: &'a str,
}

fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

impl Tokens {
    /// Tokens under `secret` (any length; replicas must share it).
    pub fn new(secret: &[u8]) -> Tokens {
        // HMAC accepts keys of every length.
        let mac =
            <Hmac<Sha256> as KeyInit>::new_from_slice(secret).unwrap_or_else(|_| unreachable!());
        Tokens { mac }
    }

    /// Tokens under a random secret, for a single gateway.
    pub fn random() -> Result<Tokens, getrandom::Error> {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret)?;
        Ok(Tokens::new(&secret))
    }

    fn tag(&self, message: &str) -> String {
        let mut mac = self.mac.clone();
        mac.update(message.as_bytes());
        URL_SAFE_NO_PAD.encode(&mac.finalize().into_bytes()[..TAG_BYTES])
    }

    fn check(&self, message: &str, tag: &str) -> bool {
        let Ok(tag) = URL_SAFE_NO_PAD.decode(tag) else {
            return false;
        };
        let mut mac = self.mac.clone();
        mac.update(message.as_bytes());
        // Constant time, so a forger learns nothing from how fast a guess is refused.
        tag.len() == TAG_BYTES && mac.verify_truncated_left(&tag).is_ok()
    }

    /// The token for session `sid` of node `node`, or `None` if either contains characters a
    /// token cannot carry.
    pub fn seal(&self, node: &str, sid: &str) -> Option<String> {
        let valid = |s: &str| !s.is_empty() && s.bytes().all(is_token_char);
        if !valid(node) || !valid(sid) {
            return None;
        }
        let message = format!("{node}.{sid}");
        let tag = self.tag(&message);
        Some(format!("{message}.{tag}"))
    }

    /// The node and node sid a token names, if it is intact and signed with this secret.
    pub fn open<'t>(&self, token: &'t str) -> Option<SessionRef<'t>> {
        let (message, tag) = token.rsplit_once('.')?;
        let (node, sid) = message.split_once('.')?;
        if node.is_empty() || sid.is_empty() || !self.check(message, tag) {
            return None;
        }
        Some(SessionRef { node, sid })
    }

    /// The affinity cookie value for `node`.
    pub fn cookie(&self, node: &str) -> String {
        format!("{node}.{}", self.tag(&format!("cookie:{node}")))
    }

    /// The node an affinity cookie names, if it is intact.
    pub fn open_cookie<'c>(&self, value: &'c str) -> Option<&'c str> {
        let (node, tag) = value.rsplit_once('.')?;
        (!node.is_empty() && self.check(&format!("cookie:{node}"), tag)).then_some(node)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_carry_only_url_safe_characters() {
        let tokens = Tokens::new(b"secret");
        let token = tokens.seal("node-1", "AbC_12-xyz").unwrap();
        assert!(token.bytes().all(|b| is_token_char(b) || b == b'.'));
        let opened = tokens.open(&token).unwrap();
        assert_eq!(
            opened,
            SessionRef {
                node: "node-1",
                sid: "AbC_12-xyz"
            }
        );
    }

    #[test]
    fn forged_altered_and_foreign_tokens_are_refused() {
        let tokens = Tokens::new(b"secret");
        let token = tokens.seal("node-1", "sid").unwrap();
        assert!(
            Tokens::new(b"other").open(&token).is_none(),
            "another replica's secret"
        );
        assert!(
            tokens.open(&token.replace("node-1", "node-2")).is_none(),
            "moved to another node"
        );
        assert!(tokens.open("node-1.sid").is_none(), "no tag");
        assert!(tokens.open("sid").is_none(), "a bare node sid");
        assert!(tokens.open("node-1.sid.!!!").is_none());
        assert!(tokens.open("").is_none());
        assert!(tokens.seal("a.b", "sid").is_none(), "a node id with a dot");
    }

    #[test]
    fn cookies_name_their_node_and_cannot_be_forged() {
        let tokens = Tokens::new(b"secret");
        let cookie = tokens.cookie("node-2");
        assert_eq!(tokens.open_cookie(&cookie), Some("node-2"));
        assert_eq!(
            tokens.open_cookie(&cookie.replace("node-2", "node-3")),
            None
        );
        // A session token is not a cookie, and the other way round.
        let token = tokens.seal("node-2", "sid").unwrap();
        assert_eq!(tokens.open_cookie(&token), None);
        assert!(tokens.open(&cookie).is_none());
    }
}
