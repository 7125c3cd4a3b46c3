//! JSON-RPC 2.0 messages. Messages are kept as `serde_json::Value` (with key order
//! preserved) so the gateway never drops a field it does not understand; results that
//! are only relayed are kept as raw JSON text and spliced back unchanged.

use serde_json::value::RawValue;
use serde_json::{Value, json};

pub const PARSE_ERROR: i64 = -32700;
pub const INVALID_REQUEST: i64 = -32600;
pub const METHOD_NOT_FOUND: i64 = -32601;
pub const INVALID_PARAMS: i64 = -32602;
pub const INTERNAL_ERROR: i64 = -32603;
/// Quota exhausted (source document: "API quota exceeded. Upgrade your plan to continue.").
pub const QUOTA_EXCEEDED: i64 = -32000;
/// Insufficient scope (source document).
pub const INSUFFICIENT_SCOPE: i64 = -32003;

/// A JSON-RPC error object.
#[derive(Debug, Clone, PartialEq)]
pub struct RpcError {
    pub code: i64,
    pub message: String,
    pub data: Option<Value>,
}

impl RpcError {
    pub fn new(code: i64, message: impl Into<String>) -> Self {
        RpcError {
            code,
            message: message.into(),
            data: None,
        }
    }

    pub fn tool_not_found() -> Self {
        RpcError::new(METHOD_NOT_FOUND, "Tool not found")
    }

    pub fn to_value(&self) -> Value {
        let mut v = json!({"code": self.code, "message": self.message});
        if let Some(d) = &self.data {
            v["data"] = d.clone();
        }
        v
    }
}

/// A message received from a peer, classified.
#[derive(Debug)]
pub enum Incoming {
    Request {
        id: Value,
        method: String,
        params: Value,
    },
    Notification {
        method: String,
        params: Value,
    },
    /// A response (result or error) to a request the receiver sent.
    Response {
        id: Value,
        body: Value,
    },
}

/// Parses one JSON-RPC message; the error is the JSON-RPC error to answer with.
pub fn parse(body: &[u8]) -> Result<Incoming, RpcError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| RpcError::new(PARSE_ERROR, format!("Parse error: {e}")))?;
    classify(value)
}

/// Classifies an already-parsed message.
pub fn classify(value: Value) -> Result<Incoming, RpcError> {
    let Value::Object(mut obj) = value else {
        let what = if value.is_array() {
            "Invalid Request: JSON-RPC batches are not supported"
        } else {
            "Invalid Request: a message is a JSON object"
        };
        return Err(RpcError::new(INVALID_REQUEST, what));
    };
    if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err(RpcError::new(
            INVALID_REQUEST,
            "Invalid Request: \"jsonrpc\" must be \"2.0\"",
        ));
    }
    let id = obj.remove("id");
    if let Some(id) = &id
        && !(id.is_string() || id.is_i64() || id.is_u64())
    {
        return Err(RpcError::new(
            INVALID_REQUEST,
            "Invalid Request: \"id\" must be a string or an integer",
        ));
    }
    match (obj.remove("method"), id) {
        (Some(Value::String(method)), id) => {
            let params = obj.remove("params").unwrap_or(Value::Null);
            if !(params.is_null() || params.is_object() || params.is_array()) {
                return Err(RpcError::new(
                    INVALID_REQUEST,
                    "Invalid Request: \"params\" must be an object",
                ));
            }
            Ok(match id {
                Some(id) => Incoming::Request { id, method, params },
                None => Incoming::Notification { method, params },
            })
        }
        (Some(_), _) => Err(RpcError::new(
            INVALID_REQUEST,
            "Invalid Request: \"method\" must be a string",
        )),
        (None, Some(id)) if obj.contains_key("result") || obj.contains_key("error") => {
            Ok(Incoming::Response {
                id,
                body: Value::Object(obj),
            })
        }
        _ => Err(RpcError::new(
            INVALID_REQUEST,
            "Invalid Request: no \"method\", \"result\" or \"error\"",
        )),
    }
}

/// `{"jsonrpc":"2.0","id":..,"result":..}` as JSON text.
pub fn result(id: &Value, result: &Value) -> String {
    json!({"jsonrpc": "2.0", "id": id, "result": result}).to_string()
}

/// A success response whose result is relayed as the exact JSON text received.
pub fn raw_result(id: &Value, result: &RawValue) -> String {
    let id = id.to_string();
    let mut out = String::with_capacity(result.get().len() + id.len() + 32);
    out.push_str(r#"{"jsonrpc":"2.0","id":"#);
    out.push_str(&id);
    out.push_str(r#","result":"#);
    out.push_str(result.get());
    out.push('}');
    out
}

/// An error response as JSON text; `id` is `null` when the request's id is unknown.
pub fn error(id: Option<&Value>, err: &RpcError) -> String {
    json!({"jsonrpc": "2.0", "id": id.cloned().unwrap_or(Value::Null), "error": err.to_value()})
        .to_string()
}

/// A notification as JSON text.
pub fn notification(method: &str, params: &Value) -> String {
    if params.is_null() {
        json!({"jsonrpc": "2.0", "method": method}).to_string()
    } else {
        json!({"jsonrpc": "2.0", "method": method, "params": params}).to_string()
    }
}

/// A request as JSON text.
pub fn request(id: &Value, method: &str, params: &Value) -> String {
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_messages() {
        assert!(matches!(
            parse(br#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#),
            Ok(Incoming::Request { .. })
        ));
        assert!(matches!(
            parse(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#),
            Ok(Incoming::Notification { .. })
        ));
        assert!(matches!(
            parse(br#"{"jsonrpc":"2.0","id":"a","result":{}}"#),
            Ok(Incoming::Response { .. })
        ));
        assert_eq!(parse(b"{nope").unwrap_err().code, PARSE_ERROR);
        assert_eq!(parse(b"[]").unwrap_err().code, INVALID_REQUEST);
        assert_eq!(
            parse(br#"{"id":1,"method":"x"}"#).unwrap_err().code,
            INVALID_REQUEST
        );
        assert_eq!(
            parse(br#"{"jsonrpc":"2.0","id":null,"method":"x"}"#)
                .unwrap_err()
                .code,
            INVALID_REQUEST
        );
        assert_eq!(
            parse(br#"{"jsonrpc":"2.0","id":1,"method":"x","params":3}"#)
                .unwrap_err()
                .code,
            INVALID_REQUEST
        );
    }

    #[test]
    fn raw_result_keeps_bytes() {
        let raw: Box<RawValue> =
            serde_json::from_str(r#"{"z":1,  "a":[1,2],"unknown":{"k":true}}"#).unwrap();
        let out = raw_result(&json!("id-1"), &raw);
        assert_eq!(
            out,
            r#"{"jsonrpc":"2.0","id":"id-1","result":{"z":1,  "a":[1,2],"unknown":{"k":true}}}"#
        );
    }
}
