//! The wire: Engine.IO v4 packets (one per WebSocket message, `\x1e`-separated in a polling
//! payload) carrying Socket.IO v5 packets in the common format (a JSON array of arguments,
//! binary arguments as `{"_placeholder":true,"num":N}` followed by that many binary packets).
//!
//! Received text is never copied: a [`Text`] is a range of the WebSocket frame or polling
//! payload it arrived in, and [`Args`] decode straight from it. Arguments are encoded with
//! `socketioxide-parser-common` (which extracts `bytes::Bytes` values as attachments).

use std::{fmt, marker::PhantomData, ops::Range};

use bytes::Bytes;
use serde::{
    Deserialize, Serialize,
    de::{
        DeserializeOwned, Error as _, IgnoredAny, SeqAccess, Visitor, value::SeqAccessDeserializer,
    },
};
use socketioxide_core::{
    Str, Value,
    parser::{Parse, is_de_tuple},
};
use socketioxide_parser_common::CommonParser;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::error::{DecodeError, EmitError, Failure};

/// Attachments of one packet at most: more is treated as malformed.
const MAX_ATTACHMENTS: usize = 10_000;

/// No arguments at all: `session.emit("ping", &NO_ARGS)` sends `["ping"]` (whereas `&()` sends
/// one `null` argument).
pub const NO_ARGS: [(); 0] = [];

/// UTF-8 text received from the server: a shared range of the frame or payload it came in.
/// Cloning it is cheap (a reference count). It dereferences to `str` and compares with `&str`.
#[derive(Clone, Default)]
pub struct Text {
    buf: Utf8Bytes,
    start: usize,
    end: usize,
}

impl Text {
    pub(crate) fn new(buf: Utf8Bytes) -> Text {
        let end = buf.len();
        Text { buf, start: 0, end }
    }

    /// A static string.
    pub const fn from_static(text: &'static str) -> Text {
        Text {
            buf: Utf8Bytes::from_static(text),
            start: 0,
            end: text.len(),
        }
    }

    /// The text. (A range that does not fall on character boundaries, which the parser never
    /// makes, reads as empty rather than panicking.)
    pub fn as_str(&self) -> &str {
        self.buf
            .as_str()
            .get(self.start..self.end)
            .unwrap_or_default()
    }

    /// A part of this text, `range` relative to it (cut at ASCII delimiters).
    pub(crate) fn slice(&self, range: Range<usize>) -> Text {
        let end = (self.start + range.end).min(self.end);
        let start = (self.start + range.start).min(end);
        Text {
            buf: self.buf.clone(),
            start,
            end,
        }
    }
}

impl From<String> for Text {
    fn from(text: String) -> Self {
        Text::new(Utf8Bytes::from(text))
    }
}

impl std::ops::Deref for Text {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Text {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq for Text {
    fn eq(&self, other: &Text) -> bool {
        self.as_str() == other.as_str()
    }
}
impl Eq for Text {}

impl PartialEq<str> for Text {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Text {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The arguments of a received event or ack, undecoded: the JSON array as it arrived and the
/// binary attachments. Decode them with [`decode`](Args::decode) (socketioxide's rules: a
/// tuple takes every argument, any other type the first one) or [`values`](Args::values).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Args {
    /// The whole JSON array: `["event", …args]` for an event, `[…args]` for an ack.
    text: Text,
    /// Offset in `text` of the first argument after the event name (1 for an ack).
    rest: usize,
    /// Whether `text` starts with the event name.
    event: bool,
    attachments: Vec<Bytes>,
}

impl fmt::Debug for Args {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Args")
            .field("json", &self.text)
            .field("attachments", &self.attachments.len())
            .finish()
    }
}

impl Args {
    /// Arguments of an ack (`[…args]`).
    pub(crate) fn ack(text: Text) -> Args {
        Args {
            text,
            rest: 1,
            event: false,
            attachments: Vec::new(),
        }
    }

    /// The JSON array as received: `["event", …args]` for an event, `[…args]` for an ack, binary
    /// arguments as placeholders.
    pub fn json(&self) -> &str {
        self.text.as_str()
    }

    /// The binary attachments, in placeholder order.
    pub fn attachments(&self) -> &[Bytes] {
        &self.attachments
    }

    /// The arguments as `T`, as socketioxide's `Data<T>` reads them: a tuple (or tuple struct)
    /// takes the arguments in order, any other type takes the first argument. `bytes::Bytes`
    /// fields receive the binary attachments. Without attachments nothing is copied.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, DecodeError> {
        if self.attachments.is_empty() {
            decode_json(self.text.as_str(), self.event, is_de_tuple::<T>())
                .map_err(|e| DecodeError(e.to_string()))
        } else {
            // The placeholders need the common parser, which wants its own copy.
            let mut value = Value::Str(
                Str::copy_from_slice(self.text.as_str()),
                Some(self.attachments.iter().cloned().collect()),
            );
            CommonParser
                .decode_value::<T>(&mut value, self.event)
                .map_err(|e| DecodeError(e.to_string()))
        }
    }

    /// Every argument as a JSON value (binary arguments stay placeholders).
    pub fn values(&self) -> Result<Vec<serde_json::Value>, DecodeError> {
        decode_json(self.text.as_str(), self.event, true).map_err(|e| DecodeError(e.to_string()))
    }

    /// The arguments after the event name, as the JSON array an echo answers with.
    fn rest_as_array(&self) -> String {
        let rest = self.text.as_str().get(self.rest..).unwrap_or("]");
        let mut json = String::with_capacity(rest.len() + 1);
        json.push('[');
        json.push_str(rest);
        json
    }

    pub(crate) fn push_attachment(&mut self, data: Bytes) {
        self.attachments.push(data);
    }

    pub(crate) fn attachment_count(&self) -> usize {
        self.attachments.len()
    }
}

/// Reads a JSON array of arguments: skips the event name if there is one, then gives `T`
/// either every remaining argument (`whole`) or the first one.
fn decode_json<T: DeserializeOwned>(json: &str, skip: bool, whole: bool) -> serde_json::Result<T> {
    struct ArgsVisitor<T> {
        skip: bool,
        whole: bool,
        _t: PhantomData<T>,
    }

    impl<'de, T: Deserialize<'de>> Visitor<'de> for ArgsVisitor<T> {
        type Value = T;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an array of arguments")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<T, A::Error> {
            if self.skip {
                seq.next_element::<IgnoredAny>()?;
            }
            let value = if self.whole {
                T::deserialize(SeqAccessDeserializer::new(&mut seq))?
            } else {
                seq.next_element::<T>()?
                    .ok_or_else(|| A::Error::invalid_length(0, &"at least one argument"))?
            };
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(value)
        }
    }

    let mut de = serde_json::Deserializer::from_str(json);
    let value = serde::Deserializer::deserialize_seq(
        &mut de,
        ArgsVisitor {
            skip,
            whole,
            _t: PhantomData,
        },
    )?;
    de.end()?;
    Ok(value)
}

/// Arguments to answer a server's ack request with, encoded once.
#[derive(Clone, Debug)]
pub struct Reply {
    json: Str,
    bins: Vec<Bytes>,
}

impl Reply {
    /// `args` as the answer: a tuple is several arguments, anything else one argument;
    /// `bytes::Bytes` values travel as binary attachments.
    pub fn new<T: Serialize + ?Sized>(args: &T) -> Result<Reply, EmitError> {
        let (json, bins) = encode_args(args, None)?;
        Ok(Reply { json, bins })
    }

    /// The same arguments as `args` (without the event name), attachments included: what the
    /// bench protocol's `ask` expects back.
    pub fn echo(args: &Args) -> Reply {
        Reply {
            json: Str::from(args.rest_as_array()),
            bins: args.attachments.clone(),
        }
    }
}

/// An event encoded once and sent by many sessions ([`Session::send`](super::Session::send)),
/// e.g. the same broadcast payload: sending it copies nothing.
#[derive(Clone, Debug)]
pub struct Prepared {
    pub(crate) namespace: Box<str>,
    pub(crate) frames: Frames,
}

impl Prepared {
    /// `event` with `args` (a tuple for several arguments) on `namespace`, without ack.
    pub fn event<T: Serialize + ?Sized>(
        namespace: &str,
        event: &str,
        args: &T,
    ) -> Result<Prepared, EmitError> {
        let namespace = normalize_namespace(namespace);
        let (json, bins) = encode_args(args, Some(event))?;
        Ok(Prepared {
            frames: encode_packet(b'2', &namespace, None, &json, bins),
            namespace: namespace.into(),
        })
    }
}

/// One Socket.IO packet as Engine.IO messages: the text message and its binary attachments.
#[derive(Clone, Debug)]
pub(crate) struct Frames {
    pub(crate) text: Utf8Bytes,
    pub(crate) bins: Vec<Bytes>,
}

/// `/name` for `name`, `/` for an empty name.
pub(crate) fn normalize_namespace(ns: &str) -> String {
    if ns.starts_with('/') {
        ns.to_owned()
    } else {
        format!("/{ns}")
    }
}

fn encode_args<T: Serialize + ?Sized>(
    args: &T,
    event: Option<&str>,
) -> Result<(Str, Vec<Bytes>), EmitError> {
    match CommonParser.encode_value(args, event) {
        Ok(Value::Str(json, bins)) => Ok((json, bins.map(Vec::from).unwrap_or_default())),
        Ok(Value::Bytes(_)) => Err(EmitError::Encode("unexpected binary value".into())),
        Err(err) => Err(EmitError::Encode(err.to_string())),
    }
}

/// `4` + Socket.IO packet: `kind` is `b'2'` (event) or `b'3'` (ack), turned into the binary
/// variant when there are attachments.
pub(crate) fn encode_packet(
    kind: u8,
    ns: &str,
    ack: Option<u64>,
    json: &str,
    bins: Vec<Bytes>,
) -> Frames {
    use std::fmt::Write as _;
    let mut text = String::with_capacity(json.len() + ns.len() + 26);
    text.push('4');
    if bins.is_empty() {
        text.push(char::from(kind));
    } else {
        text.push(char::from(kind + 3));
        let _ = write!(text, "{}-", bins.len());
    }
    if ns != "/" {
        text.push_str(ns);
        text.push(',');
    }
    if let Some(id) = ack {
        let _ = write!(text, "{id}");
    }
    text.push_str(json);
    Frames {
        text: Utf8Bytes::from(text),
        bins,
    }
}

pub(crate) fn encode_event<T: Serialize + ?Sized>(
    ns: &str,
    event: &str,
    args: &T,
    ack: Option<u64>,
) -> Result<Frames, EmitError> {
    let (json, bins) = encode_args(args, Some(event))?;
    Ok(encode_packet(b'2', ns, ack, &json, bins))
}

pub(crate) fn encode_reply(ns: &str, id: u64, reply: &Reply) -> Frames {
    encode_packet(b'3', ns, Some(id), &reply.json, reply.bins.clone())
}

/// Socket.IO `CONNECT` (`40`), with the auth payload if any.
pub(crate) fn encode_connect(ns: &str, auth: Option<&serde_json::Value>) -> Utf8Bytes {
    let mut text = String::from("40");
    if ns != "/" {
        text.push_str(ns);
        text.push(',');
    }
    if let Some(auth) = auth {
        text.push_str(&auth.to_string());
    }
    Utf8Bytes::from(text)
}

/// Socket.IO `DISCONNECT` (`41`).
pub(crate) fn encode_disconnect(ns: &str) -> Utf8Bytes {
    if ns == "/" {
        Utf8Bytes::from_static("41")
    } else {
        Utf8Bytes::from(format!("41{ns},"))
    }
}

/// An Engine.IO packet from the server.
#[derive(Debug)]
pub(crate) enum Engine {
    Open(Text),
    Close,
    Ping,
    Pong,
    PongProbe,
    Message(Text),
    Upgrade,
    Noop,
    /// A binary packet of a polling payload (`b` + base64).
    Binary(Bytes),
}

pub(crate) fn parse_engine(text: &Text) -> Result<Engine, Failure> {
    let s = text.as_str();
    let Some(&kind) = s.as_bytes().first() else {
        return Err(Failure::protocol("empty Engine.IO packet"));
    };
    let probe = s.as_bytes().get(1..) == Some(b"probe");
    Ok(match kind {
        b'0' => Engine::Open(text.slice(1..s.len())),
        b'1' => Engine::Close,
        b'2' if probe => return Err(Failure::protocol("unexpected ping probe")),
        b'2' => Engine::Ping,
        b'3' if probe => Engine::PongProbe,
        b'3' => Engine::Pong,
        b'4' => Engine::Message(text.slice(1..s.len())),
        b'5' => Engine::Upgrade,
        b'6' => Engine::Noop,
        b'b' => {
            let packet = engineioxide_core::Packet::parse(
                engineioxide_core::ProtocolVersion::V4,
                engineioxide_core::Str::copy_from_slice(s),
            )
            .map_err(|e| Failure::protocol(format!("bad binary packet: {e}")))?;
            match packet {
                engineioxide_core::Packet::Binary(data) => Engine::Binary(data),
                _ => return Err(Failure::protocol("bad binary packet")),
            }
        }
        other => {
            return Err(Failure::protocol(format!(
                "unknown Engine.IO packet type {:?}",
                char::from(other)
            )));
        }
    })
}

/// The Engine.IO open packet (`0{…}`). The `sid` is opaque: a gateway hands out its own tokens.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Open {
    pub(crate) sid: String,
    #[serde(default)]
    pub(crate) upgrades: Vec<String>,
    pub(crate) ping_interval: u64,
    pub(crate) ping_timeout: u64,
    #[serde(default = "default_max_payload")]
    pub(crate) max_payload: u64,
}

fn default_max_payload() -> u64 {
    100_000
}

pub(crate) fn parse_open(text: &Text) -> Result<Open, Failure> {
    let open: Open = serde_json::from_str(text.as_str())
        .map_err(|e| Failure::protocol(format!("bad open packet: {e}")))?;
    if open.sid.is_empty() {
        return Err(Failure::protocol("open packet without sid"));
    }
    Ok(open)
}

/// A Socket.IO packet (the part after the Engine.IO `4`).
#[derive(Debug)]
pub(crate) struct Sio {
    /// `b'0'` … `b'6'`.
    pub(crate) kind: u8,
    pub(crate) attachments: usize,
    pub(crate) ns: Text,
    pub(crate) ack: Option<u64>,
    pub(crate) data: Text,
}

pub(crate) fn parse_sio(text: &Text) -> Result<Sio, Failure> {
    let s = text.as_bytes();
    let bad = |what: &str| {
        Failure::protocol(format!("{what} in Socket.IO packet {:.80?}", text.as_str()))
    };
    let kind = match s.first() {
        Some(&k @ b'0'..=b'6') => k,
        _ => return Err(bad("bad packet type")),
    };
    let mut i = 1;
    let mut attachments = 0;
    if kind == b'5' || kind == b'6' {
        let start = i;
        while i < s.len() && s[i].is_ascii_digit() {
            i += 1;
        }
        if i == start || i - start > 6 || s.get(i) != Some(&b'-') {
            return Err(bad("bad attachment count"));
        }
        attachments = text.as_str()[start..i]
            .parse()
            .map_err(|_| bad("bad attachment count"))?;
        if attachments > MAX_ATTACHMENTS {
            return Err(bad("too many attachments"));
        }
        i += 1;
    }
    let ns = if s.get(i) == Some(&b'/') {
        let start = i;
        match s[i..].iter().position(|&b| b == b',') {
            Some(comma) => {
                i += comma + 1;
                text.slice(start..start + comma)
            }
            None => {
                i = s.len();
                text.slice(start..s.len())
            }
        }
    } else {
        Text::from_static("/")
    };
    let ack_start = i;
    while i < s.len() && s[i].is_ascii_digit() {
        i += 1;
    }
    let ack = if i > ack_start {
        if i - ack_start > 19 {
            return Err(bad("bad ack id"));
        }
        Some(
            text.as_str()[ack_start..i]
                .parse::<u64>()
                .map_err(|_| bad("bad ack id"))?,
        )
    } else {
        None
    };
    Ok(Sio {
        kind,
        attachments,
        ns,
        ack,
        data: text.slice(i..s.len()),
    })
}

/// Splits an event's JSON array `["name", …args]` into its name and [`Args`]. Only the
/// name is read; the arguments are checked when they are decoded.
pub(crate) fn parse_event(data: Text) -> Result<(Text, Args), Failure> {
    let s = data.as_bytes();
    let bad = || Failure::protocol(format!("bad event payload {:.80?}", data.as_str()));
    let skip_ws = |mut i: usize| {
        while i < s.len() && s[i].is_ascii_whitespace() {
            i += 1;
        }
        i
    };
    let mut i = skip_ws(0);
    if s.get(i) != Some(&b'[') {
        return Err(bad());
    }
    i = skip_ws(i + 1);
    if s.get(i) != Some(&b'"') {
        return Err(bad());
    }
    let open = i;
    let mut escaped = false;
    i += 1;
    loop {
        match s.get(i) {
            Some(b'"') => break,
            Some(b'\\') => {
                escaped = true;
                i += 2;
            }
            Some(_) => i += 1,
            None => return Err(bad()),
        }
    }
    let close = i;
    let name = if escaped {
        let raw = data.as_str().get(open..=close).ok_or_else(bad)?;
        Text::from(serde_json::from_str::<String>(raw).map_err(|_| bad())?)
    } else {
        data.slice(open + 1..close)
    };
    i = skip_ws(close + 1);
    let rest = match s.get(i) {
        Some(b',') => i + 1,
        Some(b']') => i,
        _ => return Err(bad()),
    };
    let args = Args {
        text: data,
        rest,
        event: true,
        attachments: Vec::new(),
    };
    Ok((name, args))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> Text {
        Text::from(s.to_owned())
    }

    #[test]
    fn engine_packets() {
        assert!(matches!(parse_engine(&text("2")), Ok(Engine::Ping)));
        assert!(matches!(
            parse_engine(&text("3probe")),
            Ok(Engine::PongProbe)
        ));
        assert!(matches!(parse_engine(&text("6")), Ok(Engine::Noop)));
        match parse_engine(&text("bAQID")) {
            Ok(Engine::Binary(data)) => assert_eq!(&data[..], &[1, 2, 3]),
            other => panic!("{other:?}"),
        }
        match parse_engine(&text("42[\"a\"]")) {
            Ok(Engine::Message(m)) => assert_eq!(m, "2[\"a\"]"),
            other => panic!("{other:?}"),
        }
        for bad in ["", "9", "b!!", "é"] {
            assert!(parse_engine(&text(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn socketio_packets() {
        let p = parse_sio(&text("2/custom,12[\"ev\",1]")).unwrap();
        assert_eq!((p.kind, p.ack), (b'2', Some(12)));
        assert_eq!(p.ns, "/custom");
        assert_eq!(p.data, "[\"ev\",1]");

        let p = parse_sio(&text("62-3[{\"_placeholder\":true,\"num\":0}]")).unwrap();
        assert_eq!((p.kind, p.attachments, p.ack), (b'6', 2, Some(3)));
        assert_eq!(p.ns, "/");

        let p = parse_sio(&text("1/admin")).unwrap();
        assert_eq!(p.ns, "/admin");
        assert_eq!(p.data, "");

        let p = parse_sio(&text("0{\"sid\":\"x\"}")).unwrap();
        assert_eq!(p.data, "{\"sid\":\"x\"}");

        for bad in [
            "",
            "7",
            "5[1]",
            "5x-[]",
            "51234567-[]",
            "299999999999999999999[]",
        ] {
            assert!(parse_sio(&text(bad)).is_err(), "{bad:?}");
        }
        // Never panics on odd bytes.
        for odd in ["2/é", "2/é,1é", "51-/é,1[\"é\"]", "3é", "0/"] {
            let _ = parse_sio(&text(odd));
        }
    }

    #[test]
    fn event_names_and_args() {
        let (name, args) = parse_event(text(r#"[ "echo" , 1, "two", {"x":3}]"#)).unwrap();
        assert_eq!(name, "echo");
        let (a, b, c): (u32, String, serde_json::Value) = args.decode().unwrap();
        assert_eq!((a, b.as_str(), c["x"].as_u64()), (1, "two", Some(3)));
        assert_eq!(args.decode::<u32>().unwrap(), 1);
        assert_eq!(args.values().unwrap().len(), 3);
        assert_eq!(Reply::echo(&args).json.as_str(), r#"[ 1, "two", {"x":3}]"#);

        let (name, args) = parse_event(text(r#"["a\"b\u00e9"]"#)).unwrap();
        assert_eq!(name, "a\"bé");
        assert!(args.values().unwrap().is_empty());
        assert!(args.decode::<u32>().is_err());
        assert_eq!(Reply::echo(&args).json.as_str(), "[]");

        for bad in ["", "{}", "[1]", "[\"x", "[\"x\" 1]", "[\"x\"\\"] {
            assert!(parse_event(text(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn binary_args_round_trip() {
        let bin = Bytes::from_static(&[1, 2, 3]);
        let frames = encode_event("/", "echo", &("a", 2, bin.clone()), Some(7)).unwrap();
        assert_eq!(
            frames.text.as_str(),
            r#"451-7["echo","a",2,{"_placeholder":true,"num":0}]"#
        );
        assert_eq!(frames.bins, vec![bin.clone()]);

        let sio = parse_sio(&Text::new(frames.text.clone()).slice(1..frames.text.len())).unwrap();
        let (_, mut args) = parse_event(sio.data).unwrap();
        args.push_attachment(bin.clone());
        let (a, n, b): (String, u32, Bytes) = args.decode().unwrap();
        assert_eq!((a.as_str(), n, b), ("a", 2, bin));
    }

    #[test]
    fn encoding() {
        assert_eq!(
            encode_event("/chat", "x", &NO_ARGS, None)
                .unwrap()
                .text
                .as_str(),
            r#"42/chat,["x"]"#
        );
        assert_eq!(
            encode_reply("/", 3, &Reply::new(&("ok", 1)).unwrap())
                .text
                .as_str(),
            r#"433["ok",1]"#
        );
        let auth = serde_json::json!({"token": "t"});
        assert_eq!(
            encode_connect("/", Some(&auth)).as_str(),
            r#"40{"token":"t"}"#
        );
        assert_eq!(encode_connect("/custom", None).as_str(), "40/custom,");
        assert_eq!(encode_disconnect("/custom").as_str(), "41/custom,");
    }
}
