//! Who a node is: its [`NodeId`] and the socketioxide server id derived from it.
//!
//! The node id names the node everywhere (logs, metrics, the `hello` of the bench app, later the
//! cluster membership and gateway tokens), so it is restricted to characters that are safe in all
//! of those places, including NATS subject tokens.

use std::{fmt, str::FromStr};

use sha2::{Digest, Sha256};
use socketioxide_core::Uid;

/// Longest accepted node id.
pub const MAX_NODE_ID_LEN: usize = 64;

/// A validated node id: 1 to 64 of `A-Z a-z 0-9 - _`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(String);

/// Why a string is not a node id.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NodeIdError {
    /// The id was empty.
    #[error("node id must not be empty")]
    Empty,
    /// The id was longer than [`MAX_NODE_ID_LEN`].
    #[error("node id must be at most {MAX_NODE_ID_LEN} characters")]
    TooLong,
    /// The id had a character outside `A-Z a-z 0-9 - _`.
    #[error("node id may contain only letters, digits, '-' and '_' (found {0:?})")]
    BadChar(char),
}

impl FromStr for NodeId {
    type Err = NodeIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(NodeIdError::Empty);
        }
        if s.len() > MAX_NODE_ID_LEN {
            return Err(NodeIdError::TooLong);
        }
        if let Some(c) = s.chars().find(|c| !is_id_char(*c)) {
            return Err(NodeIdError::BadChar(c));
        }
        Ok(NodeId(s.to_owned()))
    }
}

fn is_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_'
}

impl NodeId {
    /// `<hostname>-<port>` with anything unsafe in the hostname replaced by `-`: stable across
    /// restarts, distinct for several nodes on one host.
    pub fn from_host(port: u16) -> NodeId {
        let host = gethostname::gethostname();
        let host = host.to_string_lossy();
        let suffix = format!("-{port}");
        let mut id: String = host
            .chars()
            .map(|c| if is_id_char(c) { c } else { '-' })
            .take(MAX_NODE_ID_LEN - suffix.len())
            .collect();
        if id.is_empty() {
            id.push_str("node");
        }
        id.push_str(&suffix);
        NodeId(id)
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The socketioxide server id of this node: a digest of the node id, so it is as stable as
    /// the node id and identical on every restart.
    pub fn server_uid(&self) -> Uid {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let digest = Sha256::digest(self.0.as_bytes());
        let text: String = digest[..16]
            .iter()
            .map(|b| ALPHABET[usize::from(b & 63)] as char)
            .collect();
        // Sixteen characters of the base64url alphabet always form a valid id.
        text.parse().unwrap_or_default()
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_are_validated() {
        assert_eq!("node-1".parse::<NodeId>().unwrap().as_str(), "node-1");
        assert_eq!("".parse::<NodeId>(), Err(NodeIdError::Empty));
        assert_eq!("a.b".parse::<NodeId>(), Err(NodeIdError::BadChar('.')));
        assert_eq!("x".repeat(65).parse::<NodeId>(), Err(NodeIdError::TooLong));
    }

    #[test]
    fn host_derived_ids_are_valid_and_carry_the_port() {
        let id = NodeId::from_host(4001);
        assert!(id.as_str().ends_with("-4001"));
        assert_eq!(id.as_str().parse::<NodeId>().unwrap(), id);
    }

    #[test]
    fn server_uid_is_stable_and_distinct() {
        let a: NodeId = "node-a".parse().unwrap();
        let b: NodeId = "node-b".parse().unwrap();
        assert_eq!(a.server_uid(), a.server_uid());
        assert_ne!(a.server_uid(), b.server_uid());
        assert_ne!(a.server_uid(), Uid::ZERO);
    }
}
