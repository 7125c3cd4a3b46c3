//! JSON-RPC 2.0 messages. An agent's message is read into its envelope (`jsonrpc`,
//! `id`, `method`) with its `params` kept as the JSON text received (`params`), so what
//! the gateway forwards is what the agent sent; results that are only relayed are kept
//! as raw JSON text and spliced back unchanged.

use serde::de::IgnoredAny;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::error::Category;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::params::Params;

pub(crate) const PARSE_ERROR: i64 = -32700;
pub(crate) const INVALID_REQUEST: i64 = -32600;
pub(crate) const METHOD_NOT_FOUND: i64 = -32601;
pub(crate) const INVALID_PARAMS: i64 = -32602;
pub(crate) const INTERNAL_ERROR: i64 = -32603;
/// Quota exhausted ("API quota exceeded. Upgrade your plan to continue.").
pub(crate) const QUOTA_EXCEEDED: i64 = -32000;
/// Insufficient scope (the built-in slug-scope policy denies with it).
pub(crate) const INSUFFICIENT_SCOPE: i64 = -32003;
/// Resource not found (MCP 2025 revisions; "Resource not found").
pub(crate) const RESOURCE_NOT_FOUND: i64 = -32002;

/// A JSON-RPC error object.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RpcError {
    pub code: i64,
    pub message: String,
    pub data: Option<Value>,
}

impl RpcError {
    pub(crate) fn new(code: i64, message: impl Into<String>) -> Self {
        RpcError {
            code,
            message: message.into(),
            data: None,
        }
    }

    pub(crate) fn tool_not_found() -> Self {
        RpcError::new(METHOD_NOT_FOUND, "Tool not found")
    }

    pub(crate) fn to_value(&self) -> Value {
        let mut v = json!({"code": self.code, "message": self.message});
        if let Some(d) = &self.data {
            v["data"] = d.clone();
        }
        v
    }
}

/// A message received from an agent, classified.
#[derive(Debug)]
pub(crate) enum Incoming {
    Request {
        id: Value,
        method: String,
        params: Params,
    },
    Notification {
        method: String,
        params: Params,
    },
    /// A response to a request the receiver sent: its `result` or `error` member as
    /// the exact JSON text received (relayed as written).
    Response {
        id: Value,
        answer: Answer,
    },
}

/// The members of a message the gateway reads; `params` stays raw, and the rest of a
/// response is not needed. Members present with the value `null` are told apart from
/// absent ones (`present`), as JSON-RPC requires.
#[derive(Deserialize)]
struct Envelope {
    #[serde(default, deserialize_with = "present")]
    jsonrpc: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    id: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    method: Option<Value>,
    #[serde(default)]
    params: Option<Box<RawValue>>,
    #[serde(default, deserialize_with = "present")]
    result: Option<Box<RawValue>>,
    #[serde(default, deserialize_with = "present")]
    error: Option<Box<RawValue>>,
}

fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// What a POST body holds.
#[derive(Debug)]
pub(crate) enum Body {
    One(Incoming),
    /// A JSON-RPC batch (not empty): each member read on its own, so one malformed
    /// member is an error response of its own and the others still run.
    Batch(Vec<Result<Incoming, RpcError>>),
}

/// Parses a POST body: one message or a batch of them. The error (invalid JSON, an
/// empty batch, one message of the wrong shape) is the JSON-RPC error to answer with.
pub(crate) fn parse_body(body: &[u8]) -> Result<Body, RpcError> {
    if first_byte(body) != Some(b'[') {
        return parse(body).map(Body::One);
    }
    let members: Vec<&RawValue> = serde_json::from_slice(body)
        .map_err(|e| RpcError::new(PARSE_ERROR, format!("Parse error: {e}")))?;
    if members.is_empty() {
        return Err(RpcError::new(
            INVALID_REQUEST,
            "Invalid Request: an empty batch",
        ));
    }
    Ok(Body::Batch(
        members.iter().map(|m| parse(m.get().as_bytes())).collect(),
    ))
}

fn first_byte(body: &[u8]) -> Option<u8> {
    body.iter().find(|b| !b.is_ascii_whitespace()).copied()
}

/// Parses one JSON-RPC message; the error is the JSON-RPC error to answer with.
pub(crate) fn parse(body: &[u8]) -> Result<Incoming, RpcError> {
    // Only an object is a message (serde would also read a struct from an array).
    let error = match first_byte(body) {
        Some(b'{') => match serde_json::from_slice::<Envelope>(body) {
            Ok(envelope) => return classify(envelope),
            // Not JSON at all: invalid syntax, or text that is not UTF-8 (raw bytes or
            // an escaped lone surrogate inside a string).
            Err(e) if matches!(e.classify(), Category::Syntax | Category::Eof) => {
                return Err(RpcError::new(PARSE_ERROR, format!("Parse error: {e}")));
            }
            // Valid JSON, an object, and still no envelope: a member given twice.
            Err(e) => format!("Invalid Request: {e}"),
        },
        _ => "Invalid Request: a message is a JSON object".to_string(),
    };
    // Invalid JSON is a parse error whatever its shape.
    if let Err(syntax) = serde_json::from_slice::<IgnoredAny>(body) {
        return Err(RpcError::new(PARSE_ERROR, format!("Parse error: {syntax}")));
    }
    Err(RpcError::new(INVALID_REQUEST, error))
}

fn classify(envelope: Envelope) -> Result<Incoming, RpcError> {
    if envelope.jsonrpc.as_ref().and_then(Value::as_str) != Some("2.0") {
        return Err(RpcError::new(
            INVALID_REQUEST,
            "Invalid Request: \"jsonrpc\" must be \"2.0\"",
        ));
    }
    let id = envelope.id;
    if let Some(id) = &id
        && !(id.is_string() || id.is_i64() || id.is_u64())
    {
        return Err(RpcError::new(
            INVALID_REQUEST,
            "Invalid Request: \"id\" must be a string or an integer",
        ));
    }
    match (envelope.method, id) {
        (Some(Value::String(method)), id) => {
            if let Some(raw) = &envelope.params
                && !(raw.get().starts_with('{') || raw.get().starts_with('['))
            {
                return Err(RpcError::new(
                    INVALID_REQUEST,
                    "Invalid Request: \"params\" must be an object",
                ));
            }
            let params = Params::new(envelope.params);
            Ok(match id {
                Some(id) => Incoming::Request { id, method, params },
                None => Incoming::Notification { method, params },
            })
        }
        (Some(_), _) => Err(RpcError::new(
            INVALID_REQUEST,
            "Invalid Request: \"method\" must be a string",
        )),
        (None, Some(id)) => match (envelope.result, envelope.error) {
            (_, Some(error)) => Ok(Incoming::Response {
                id,
                answer: Answer::Error(error),
            }),
            (Some(result), None) => Ok(Incoming::Response {
                id,
                answer: Answer::Result(result),
            }),
            (None, None) => Err(RpcError::new(
                INVALID_REQUEST,
                "Invalid Request: no \"method\", \"result\" or \"error\"",
            )),
        },
        _ => Err(RpcError::new(
            INVALID_REQUEST,
            "Invalid Request: no \"method\", \"result\" or \"error\"",
        )),
    }
}

/// What a response carries: its `result` or its `error`, as the JSON text received.
#[derive(Debug)]
pub(crate) enum Answer {
    Result(Box<RawValue>),
    Error(Box<RawValue>),
}

impl Answer {
    /// The response to request `id` carrying this answer, as JSON text.
    pub(crate) fn response(&self, id: &Value) -> String {
        match self {
            Answer::Result(r) => response(id, Member::Result, r.get()),
            Answer::Error(e) => response(id, Member::Error, e.get()),
        }
    }

    /// The error's `code`, for the audit (`None` for a result).
    pub(crate) fn error_code(&self) -> Option<i64> {
        match self {
            Answer::Result(_) => None,
            Answer::Error(e) => serde_json::from_str::<Value>(e.get())
                .ok()?
                .get("code")?
                .as_i64(),
        }
    }
}

/// Which member of a response carries its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Member {
    Result,
    Error,
}

/// The one way the gateway writes a response: `{"jsonrpc":"2.0","id":<id>,
/// "<member>":<body>}`, with `body` (JSON text) spliced in as it is. The helpers
/// below only say what the body is.
pub(crate) fn response(id: &Value, member: Member, body: &str) -> String {
    let id = id.to_string();
    let member = match member {
        Member::Result => "result",
        Member::Error => "error",
    };
    let mut out = String::with_capacity(body.len() + id.len() + 32);
    out.push_str(r#"{"jsonrpc":"2.0","id":"#);
    out.push_str(&id);
    out.push_str(",\"");
    out.push_str(member);
    out.push_str("\":");
    out.push_str(body);
    out.push('}');
    out
}

/// A success response whose result is a value the gateway made.
pub(crate) fn result(id: &Value, result: &Value) -> String {
    response(id, Member::Result, &result.to_string())
}

/// An error response; `id` is `null` when the request's id is unknown.
pub(crate) fn error(id: Option<&Value>, err: &RpcError) -> String {
    response(
        id.unwrap_or(&Value::Null),
        Member::Error,
        &err.to_value().to_string(),
    )
}

/// An error response relaying an error object as another party sent it.
pub(crate) fn error_object(id: &Value, err: &Value) -> String {
    response(id, Member::Error, &err.to_string())
}

/// A notification as JSON text; `params` are written as given (raw text is relayed
/// unchanged).
pub(crate) fn notification(method: &str, params: Option<&RawValue>) -> String {
    #[derive(Serialize)]
    struct Notification<'a> {
        jsonrpc: &'static str,
        method: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        params: Option<&'a RawValue>,
    }
    let n = Notification {
        jsonrpc: "2.0",
        method,
        params,
    };
    serde_json::to_string(&n).expect("a notification serialises")
}

/// A request as JSON text; `params` are serialised as they are (raw members stay raw).
pub(crate) fn request<P: Serialize + ?Sized>(id: &Value, method: &str, params: &P) -> String {
    #[derive(Serialize)]
    struct Request<'a, P: ?Sized> {
        jsonrpc: &'static str,
        id: &'a Value,
        method: &'a str,
        params: &'a P,
    }
    let r = Request {
        jsonrpc: "2.0",
        id,
        method,
        params,
    };
    serde_json::to_string(&r).expect("a request serialises")
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
    fn a_responses_answer_is_kept_as_written_and_relayed_under_another_id() {
        let Ok(Incoming::Response { id, answer }) =
            parse(br#"{"jsonrpc":"2.0","id":"r-1","result":{"b": 1e2, "a":[]}}"#)
        else {
            panic!("a response")
        };
        assert_eq!(id, json!("r-1"));
        assert_eq!(answer.error_code(), None);
        assert_eq!(
            answer.response(&json!(7)),
            r#"{"jsonrpc":"2.0","id":7,"result":{"b": 1e2, "a":[]}}"#
        );
        let Ok(Incoming::Response { answer, .. }) =
            parse(br#"{"jsonrpc":"2.0","id":2,"error":{"code":-1,"message":"no","data":{"x":1}}}"#)
        else {
            panic!("an error response")
        };
        assert_eq!(answer.error_code(), Some(-1));
        assert_eq!(
            answer.response(&json!("up-3")),
            r#"{"jsonrpc":"2.0","id":"up-3","error":{"code":-1,"message":"no","data":{"x":1}}}"#
        );
        // A `null` result is a result; neither member is no response.
        assert!(matches!(
            parse(br#"{"jsonrpc":"2.0","id":2,"result":null}"#),
            Ok(Incoming::Response {
                answer: Answer::Result(_),
                ..
            })
        ));
        assert_eq!(
            parse(br#"{"jsonrpc":"2.0","id":2}"#).unwrap_err().code,
            INVALID_REQUEST
        );
    }

    #[test]
    fn params_stay_as_received_and_shapes_are_told_apart() {
        let text = br#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"t","arguments":{"n":1e2,"big":18446744073709551616}}}"#;
        let Ok(Incoming::Request { params, .. }) = parse(text) else {
            panic!("a request")
        };
        assert_eq!(
            params.raw().unwrap().get(),
            r#"{"name":"t","arguments":{"n":1e2,"big":18446744073709551616}}"#
        );
        let Ok(Incoming::Notification { params, .. }) =
            parse(br#"{"jsonrpc":"2.0","method":"n","params":null}"#)
        else {
            panic!("a notification")
        };
        assert!(params.raw().is_none());
        // Invalid JSON is a parse error whatever its shape; valid JSON of the wrong
        // shape is an invalid request saying why.
        assert_eq!(parse(b"[1,").unwrap_err().code, PARSE_ERROR);
        assert_eq!(parse(b"{\"a\":1} x").unwrap_err().code, PARSE_ERROR);
        // Text that is not UTF-8 inside a string is not JSON: a parse error.
        let bad_utf8 = b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\xe9\"}";
        assert_eq!(parse(bad_utf8).unwrap_err().code, PARSE_ERROR);
        let lone_surrogate = br#"{"jsonrpc":"2.0","id":1,"method":"p\ud800"}"#;
        assert_eq!(parse(lone_surrogate).unwrap_err().code, PARSE_ERROR);
        let in_params =
            b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"x\",\"params\":{\"a\":\"\xff\"}}";
        assert_eq!(parse(in_params).unwrap_err().code, PARSE_ERROR);
        // parse reads one message; parse_body also reads batches.
        assert_eq!(parse(b"[]").unwrap_err().code, INVALID_REQUEST);
        assert_eq!(parse(b"3").unwrap_err().code, INVALID_REQUEST);
        let twice = parse(br#"{"jsonrpc":"2.0","id":1,"id":2,"method":"ping"}"#).unwrap_err();
        assert_eq!(twice.code, INVALID_REQUEST);
        assert!(
            twice.message.contains("duplicate field"),
            "{}",
            twice.message
        );
        // A response's result may be null; a null id is still an id.
        assert!(matches!(
            parse(br#"{"jsonrpc":"2.0","id":1,"result":null}"#),
            Ok(Incoming::Response { .. })
        ));
    }

    #[test]
    fn a_batch_is_read_member_by_member() {
        let Ok(Body::Batch(members)) = parse_body(
            br#" [{"jsonrpc":"2.0","id":1,"method":"ping"}, 42, [],
                 {"jsonrpc":"2.0","method":"notifications/initialized"},
                 {"jsonrpc":"2.0","id":"r","result":{}}, {"id":2,"method":"ping"}]"#,
        ) else {
            panic!("a batch")
        };
        assert_eq!(members.len(), 6);
        assert!(matches!(members[0], Ok(Incoming::Request { .. })));
        assert_eq!(members[1].as_ref().unwrap_err().code, INVALID_REQUEST);
        assert_eq!(members[2].as_ref().unwrap_err().code, INVALID_REQUEST);
        assert!(matches!(members[3], Ok(Incoming::Notification { .. })));
        assert!(matches!(members[4], Ok(Incoming::Response { .. })));
        assert_eq!(members[5].as_ref().unwrap_err().code, INVALID_REQUEST);
        assert!(matches!(
            parse_body(br#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#),
            Ok(Body::One(Incoming::Request { .. }))
        ));
        assert_eq!(parse_body(b" [ ] ").unwrap_err().code, INVALID_REQUEST);
        assert_eq!(parse_body(b"[{},").unwrap_err().code, PARSE_ERROR);
        assert_eq!(parse_body(b"{").unwrap_err().code, PARSE_ERROR);
    }

    #[test]
    fn requests_and_notifications_write_params_unchanged() {
        let raw: Box<RawValue> = serde_json::from_str(r#"{"progress":1e2,"total":1.50}"#).unwrap();
        assert_eq!(
            notification("notifications/progress", Some(&raw)),
            r#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progress":1e2,"total":1.50}}"#
        );
        assert_eq!(
            notification("notifications/initialized", None),
            r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#
        );
        assert_eq!(
            request(&json!(3), "tools/call", &raw),
            r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"progress":1e2,"total":1.50}}"#
        );
    }

    #[test]
    fn raw_result_keeps_bytes() {
        let raw: Box<RawValue> =
            serde_json::from_str(r#"{"z":1,  "a":[1,2],"unknown":{"k":true}}"#).unwrap();
        let out = response(&json!("id-1"), Member::Result, raw.get());
        assert_eq!(
            out,
            r#"{"jsonrpc":"2.0","id":"id-1","result":{"z":1,  "a":[1,2],"unknown":{"k":true}}}"#
        );
    }
}
