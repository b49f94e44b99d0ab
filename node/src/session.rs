//! Sealed session ids: what a client presents in `?sid=` is not what socketioxide calls the
//! session, so a leaked `socket.id` cannot be used to take over someone else's session.
//!
//! socketioxide uses the Engine.IO session id as the Socket.IO `socket.id` of every namespace.
//! Apps routinely show socket ids to other clients (presence lists, private messages), and
//! anyone holding a session id could poll that session's packets or post as its owner. The node
//! therefore hands clients a sealed id in the polling handshake — the session id followed by an
//! HMAC of it under a key that never leaves the process — and accepts only sealed ids on later
//! requests, passing the plain id on to socketioxide. A WebSocket-only session never sends its id
//! again, so its plain id is useless to anyone else as well.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// Length of a plain Engine.IO session id (socketioxide's base64url ids).
const SID_LEN: usize = 16;
/// Bytes of the MAC kept in a sealed id: 96 bits, 16 base64url characters.
const TAG_BYTES: usize = 12;

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Seals and opens session ids with a key drawn at start-up.
pub(crate) struct SessionSeal {
    mac: Hmac<Sha256>,
}

impl std::fmt::Debug for SessionSeal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionSeal(..)")
    }
}

impl SessionSeal {
    /// A seal with a fresh random key. Sessions live and die with the process, so the key
    /// needs no persistence and no sharing.
    pub(crate) fn random() -> Result<SessionSeal, getrandom::Error> {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key)?;
        Ok(Self::with_key(&key))
    }

    fn with_key(key: &[u8]) -> SessionSeal {
        // HMAC takes keys of any length.
        let mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
        SessionSeal { mac }
    }

    fn tag(&self, sid: &str) -> [u8; TAG_BYTES] {
        let mut mac = self.mac.clone();
        mac.update(sid.as_bytes());
        let full = mac.finalize().into_bytes();
        let mut tag = [0u8; TAG_BYTES];
        tag.copy_from_slice(&full[..TAG_BYTES]);
        tag
    }

    /// The id to give the client for session `sid`.
    pub(crate) fn seal(&self, sid: &str) -> String {
        let mut sealed = String::with_capacity(SID_LEN + 16);
        sealed.push_str(sid);
        encode(&self.tag(sid), &mut sealed);
        sealed
    }

    /// The plain session id inside `sealed`, if the seal is ours and intact.
    pub(crate) fn open<'a>(&self, sealed: &'a str) -> Option<&'a str> {
        if sealed.len() != SID_LEN + 16 || !sealed.is_ascii() {
            return None;
        }
        let (sid, tag_text) = sealed.split_at(SID_LEN);
        let tag = decode(tag_text)?;
        let mut mac = self.mac.clone();
        mac.update(sid.as_bytes());
        // Constant time: a forger learns nothing from how fast a guess is refused.
        mac.verify_truncated_left(&tag).ok()?;
        Some(sid)
    }
}

/// base64url without padding; 12 bytes make exactly 16 characters.
fn encode(bytes: &[u8; TAG_BYTES], out: &mut String) {
    for chunk in bytes.chunks(3) {
        let n = (u32::from(chunk[0]) << 16) | (u32::from(chunk[1]) << 8) | u32::from(chunk[2]);
        for shift in [18, 12, 6, 0] {
            out.push(ALPHABET[((n >> shift) & 63) as usize] as char);
        }
    }
}

fn decode(text: &str) -> Option<[u8; TAG_BYTES]> {
    let mut out = [0u8; TAG_BYTES];
    for (i, chunk) in text.as_bytes().chunks(4).enumerate() {
        let mut n = 0u32;
        for &c in chunk {
            let v = ALPHABET.iter().position(|&a| a == c)? as u32;
            n = (n << 6) | v;
        }
        out[i * 3] = (n >> 16) as u8;
        out[i * 3 + 1] = (n >> 8) as u8;
        out[i * 3 + 2] = n as u8;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_ids_open_to_the_session_id() {
        let seal = SessionSeal::random().unwrap();
        let sealed = seal.seal("AbCdEfGhIjKlMn-_");
        assert_eq!(sealed.len(), 32);
        assert!(sealed.bytes().all(|b| ALPHABET.contains(&b)));
        assert_eq!(seal.open(&sealed), Some("AbCdEfGhIjKlMn-_"));
    }

    #[test]
    fn plain_forged_and_foreign_ids_do_not_open() {
        let seal = SessionSeal::random().unwrap();
        let other = SessionSeal::random().unwrap();
        let sealed = seal.seal("AbCdEfGhIjKlMn-_");
        assert_eq!(
            seal.open("AbCdEfGhIjKlMn-_"),
            None,
            "a plain socket id is not a credential"
        );
        assert_eq!(other.open(&sealed), None, "another process's seal");
        let mut forged = sealed.clone().into_bytes();
        forged[20] = if forged[20] == b'A' { b'B' } else { b'A' };
        assert_eq!(seal.open(std::str::from_utf8(&forged).unwrap()), None);
        let swapped = format!("ZZZZZZZZZZZZZZZZ{}", &sealed[16..]);
        assert_eq!(seal.open(&swapped), None, "a tag does not fit another id");
        assert_eq!(seal.open(""), None);
        assert_eq!(seal.open("é".repeat(16).as_str()), None);
    }

    #[test]
    fn base64url_round_trips() {
        let bytes: [u8; TAG_BYTES] = [0, 1, 2, 250, 251, 252, 253, 254, 255, 63, 64, 65];
        let mut text = String::new();
        encode(&bytes, &mut text);
        assert_eq!(decode(&text), Some(bytes));
        assert_eq!(decode("!!!!!!!!!!!!!!!!"), None);
    }
}
