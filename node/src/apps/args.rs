//! [`Args`]: all the arguments of an event, whatever their number and type, binary included.
//!
//! socketioxide hands a handler the whole argument list only when the target type deserializes
//! as a tuple, and sends several arguments only when the data serializes as one. `Args` does
//! both over a list of `rmpv::Value`s, whose binary variant keeps attachments as bytes.

use std::fmt;

use rmpv::Value;
use serde::{
    Deserialize, Deserializer, Serialize, Serializer,
    de::{SeqAccess, Visitor},
    ser::SerializeTuple,
};

/// Every argument of one event, in order.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Args(pub(crate) Vec<Value>);

impl Serialize for Args {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut tuple = serializer.serialize_tuple(self.0.len())?;
        for value in &self.0 {
            tuple.serialize_element(value)?;
        }
        tuple.end()
    }
}

impl<'de> Deserialize<'de> for Args {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ArgsVisitor;
        impl<'de> Visitor<'de> for ArgsVisitor {
            type Value = Args;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of event arguments")
            }
            fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<Args, S::Error> {
                let mut args = Vec::with_capacity(seq.size_hint().unwrap_or(1).min(16));
                while let Some(value) = seq.next_element()? {
                    args.push(value);
                }
                Ok(Args(args))
            }
        }
        // The length is a hint only: JSON sequences deserialize whatever their length.
        deserializer.deserialize_tuple(usize::MAX, ArgsVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use socketioxide_core::parser::{is_de_tuple, is_ser_tuple};

    #[test]
    fn args_are_a_tuple_for_socketioxide() {
        assert!(is_de_tuple::<Args>());
        assert!(is_ser_tuple(&Args(vec![Value::from(1), Value::from("a")])));
    }

    #[test]
    fn args_keep_every_json_argument() {
        let args: Args = serde_json::from_str(r#"[1, "two", {"three": [3]}, null]"#).unwrap();
        assert_eq!(args.0.len(), 4);
        assert_eq!(
            serde_json::to_string(&args).unwrap(),
            r#"[1,"two",{"three":[3]},null]"#
        );
    }
}
