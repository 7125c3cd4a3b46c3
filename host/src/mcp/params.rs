//! The `params` of an agent's request or notification, kept as the JSON text it sent.
//!
//! The gateway reads a few fields itself (a tool's `name`, a `cursor`, a protocol
//! version), but what it forwards upstream and hands to policies is the agent's own
//! text. Going through serde_json's `Value` would change it: `1e2` becomes `100.0`,
//! integers beyond 64 bits become floats, long fractions are rounded. So a message's
//! params stay raw ([`Params`]), and an object's top-level members can be split out,
//! each still raw ([`Members`]): the gateway replaces `name` and adds trace context
//! to `_meta` while every other byte of the call goes upstream as received.

use indexmap::IndexMap;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

/// An object's top-level members in the order received, each as its raw JSON text.
/// Serialised, it writes each member's text unchanged. A key given twice keeps its
/// first place and its last value, as serde_json's own map does.
pub(crate) type Members = IndexMap<String, Box<RawValue>>;

/// A message's `params` as received; empty when it had none (or `null`).
#[derive(Debug, Default)]
pub(crate) struct Params(Option<Box<RawValue>>);

impl Params {
    pub(crate) fn new(raw: Option<Box<RawValue>>) -> Self {
        Params(raw)
    }

    /// The JSON text received, if any (the parser's tests read it).
    #[cfg(test)]
    pub(crate) fn raw(&self) -> Option<&RawValue> {
        self.0.as_deref()
    }

    /// The top-level members; `None` when there are no params or they are not an object.
    pub(crate) fn members(&self) -> Option<Members> {
        let raw = self.0.as_deref()?.get();
        if !raw.starts_with('{') {
            return None;
        }
        serde_json::from_str(raw).ok()
    }

    /// One top-level member read as `T`; `None` when it is absent or not a `T`.
    pub(crate) fn field<T: DeserializeOwned>(&self, key: &str) -> Option<T> {
        member(&self.members()?, key)
    }
}

/// The member `key` of `members` read as `T`; `None` when absent or not a `T`.
pub(crate) fn member<T: DeserializeOwned>(members: &Members, key: &str) -> Option<T> {
    serde_json::from_str(members.get(key)?.get()).ok()
}

/// `value` serialised as raw JSON text (for a member the gateway sets itself).
pub(crate) fn to_raw<T: Serialize + ?Sized>(value: &T) -> Box<RawValue> {
    serde_json::value::to_raw_value(value).expect("strings and maps of strings serialise")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn params(text: &str) -> Params {
        Params::new(Some(serde_json::from_str(text).unwrap()))
    }

    #[test]
    fn members_keep_every_byte_of_every_value() {
        let text = r#"{"name":"a.b","arguments":{"big":123456789012345678901234567890,"e":1e2,"f":0.1000000000000000055511151231257827,"s":"\u00e9"},"zz":[1.0, -0]}"#;
        let mut m = params(text).members().unwrap();
        assert_eq!(
            m.keys().collect::<Vec<_>>(),
            ["name", "arguments", "zz"],
            "order kept"
        );
        m.insert("name".into(), to_raw("b"));
        let out = serde_json::to_string(&m).unwrap();
        assert_eq!(out, text.replace(r#""a.b""#, r#""b""#));
    }

    #[test]
    fn fields_are_read_and_non_objects_have_none() {
        let p = params(r#"{"protocolVersion":"2025-06-18","cursor":7}"#);
        assert_eq!(
            p.field::<String>("protocolVersion").as_deref(),
            Some("2025-06-18")
        );
        assert_eq!(p.field::<String>("cursor"), None, "not a string");
        assert_eq!(p.field::<Value>("cursor"), Some(Value::from(7)));
        assert_eq!(p.field::<Value>("missing"), None);
        assert!(params("[1,2]").members().is_none());
        assert!(Params::default().members().is_none());
        assert!(Params::default().raw().is_none());
    }
}
