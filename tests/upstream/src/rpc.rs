//! JSON-RPC 2.0 over MCP: classifying an incoming message, answering the
//! supported requests (`initialize`, `ping`, `tools/list`, `tools/call`) and
//! serialising answers into response messages.

use http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;

use crate::state::State;
use crate::{items, tools};

/// Protocol revisions echoed back by initialize.
const VERSIONS: [&str; 3] = ["2025-03-26", "2025-06-18", "2025-11-25"];
const LATEST: &str = "2025-11-25";

pub const PARSE_ERROR: i64 = -32700;
pub const INVALID_REQUEST: i64 = -32600;
pub const METHOD_NOT_FOUND: i64 = -32601;
pub const INVALID_PARAMS: i64 = -32602;
pub const INTERNAL_ERROR: i64 = -32603;

/// One incoming JSON-RPC message.
pub enum Message {
    Request(Request),
    Notification {
        method: String,
        params: Option<Box<RawValue>>,
    },
    /// A response to a server-initiated request (never sent by this server).
    Response,
}

/// A JSON-RPC request.
pub struct Request {
    pub id: Box<RawValue>,
    pub method: String,
    pub params: Option<Box<RawValue>>,
}

#[derive(Deserialize)]
struct Incoming {
    #[serde(default)]
    id: Option<Box<RawValue>>,
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    params: Option<Box<RawValue>>,
    #[serde(default)]
    result: Option<IgnoredAny>,
    #[serde(default)]
    error: Option<IgnoredAny>,
}

/// Parameters of `tools/call`.
#[derive(Deserialize)]
pub struct CallParams {
    pub name: String,
    #[serde(default)]
    pub arguments: Option<Map<String, Value>>,
    #[serde(default, rename = "_meta")]
    pub meta: Option<Value>,
}

impl CallParams {
    pub fn progress_token(&self) -> Option<&Value> {
        self.meta
            .as_ref()?
            .get("progressToken")
            .filter(|t| !t.is_null())
    }
}

/// The answer to a request.
pub enum Reply {
    /// A serialised `result` object.
    Result(String),
    /// A JSON-RPC error.
    Error {
        code: i64,
        message: String,
        data: Option<Value>,
    },
    /// Not a JSON-RPC answer at all: a plain HTTP response with this status.
    Http { status: StatusCode, body: String },
    /// No answer (the request was cancelled).
    Silent,
}

impl Reply {
    pub fn error(code: i64, message: impl Into<String>) -> Self {
        Reply::Error {
            code,
            message: message.into(),
            data: None,
        }
    }

    /// The response message, or `None` when nothing is to be sent. An HTTP
    /// status cannot be expressed once a stream has started; it becomes an
    /// internal error.
    pub fn into_message(self, id: &RawValue) -> Option<Vec<u8>> {
        match self {
            Reply::Result(result) => Some(envelope(id.get(), "result", &result)),
            Reply::Error {
                code,
                message,
                data,
            } => Some(error_message(id.get(), code, &message, data.as_ref())),
            Reply::Http { status, .. } => Some(error_message(
                id.get(),
                INTERNAL_ERROR,
                &format!("HTTP {status} cannot be sent on a stream"),
                None,
            )),
            Reply::Silent => None,
        }
    }
}

fn envelope(id: &str, key: &str, value: &str) -> Vec<u8> {
    let mut out = String::with_capacity(32 + id.len() + value.len());
    out.push_str(r#"{"jsonrpc":"2.0","id":"#);
    out.push_str(id);
    out.push_str(",\"");
    out.push_str(key);
    out.push_str("\":");
    out.push_str(value);
    out.push('}');
    out.into_bytes()
}

/// A complete error response message.
pub fn error_message(id: &str, code: i64, message: &str, data: Option<&Value>) -> Vec<u8> {
    let mut error = json!({ "code": code, "message": message });
    if let Some(data) = data {
        error["data"] = data.clone();
    }
    envelope(id, "error", &error.to_string())
}

/// Classifies a POST body. On failure returns the error message to send
/// (with `id: null`).
pub fn parse(body: &[u8]) -> Result<Message, Vec<u8>> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        return Err(match serde_json::from_slice::<IgnoredAny>(body) {
            Ok(_) if first == Some(&b'[') => {
                error_message("null", INVALID_REQUEST, "Batches are not supported", None)
            }
            Ok(_) => error_message("null", INVALID_REQUEST, "Invalid Request", None),
            Err(_) => error_message("null", PARSE_ERROR, "Parse error", None),
        });
    }
    let incoming: Incoming = serde_json::from_slice(body).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => {
            error_message("null", INVALID_REQUEST, "Invalid Request", None)
        }
        _ => error_message("null", PARSE_ERROR, "Parse error", None),
    })?;
    match (incoming.method, incoming.id) {
        (Some(method), Some(id)) => Ok(Message::Request(Request {
            id,
            method,
            params: incoming.params,
        })),
        (Some(method), None) => Ok(Message::Notification {
            method,
            params: incoming.params,
        }),
        (None, Some(_)) if incoming.result.is_some() || incoming.error.is_some() => {
            Ok(Message::Response)
        }
        _ => Err(error_message(
            "null",
            INVALID_REQUEST,
            "Invalid Request",
            None,
        )),
    }
}

/// Parses the params of a `tools/call` request.
pub fn call_params(request: &Request) -> Result<CallParams, Reply> {
    let raw = request.params.as_deref().map_or("null", RawValue::get);
    serde_json::from_str(raw)
        .map_err(|e| Reply::error(INVALID_PARAMS, format!("Invalid tools/call params: {e}")))
}

/// Handles a notification; only `notifications/cancelled` has an effect.
pub fn notify(state: &State, method: &str, params: Option<&RawValue>) {
    #[derive(Deserialize)]
    struct Cancelled {
        #[serde(rename = "requestId")]
        request_id: Value,
    }
    if method == "notifications/cancelled"
        && let Some(p) = params.and_then(|p| serde_json::from_str::<Cancelled>(p.get()).ok())
    {
        state.cancel(p.request_id);
    }
}

/// Answers a request. `call` holds the already parsed `tools/call` params;
/// `events` is the SSE stream of this request, if it has one.
pub async fn answer(
    state: &State,
    request: &Request,
    call: Option<CallParams>,
    headers: &HeaderMap,
    events: Option<&mpsc::Sender<bytes::Bytes>>,
) -> Reply {
    let params = request.params.as_deref();
    match request.method.as_str() {
        "initialize" => initialize(state, params),
        "ping" => Reply::Result("{}".to_owned()),
        "tools/list" => tools_list(state, params),
        "resources/list" if state.opts.items > 0 => {
            items::resources_list(state.opts.items, state.opts.page_size, params)
        }
        "resources/templates/list" if state.opts.items > 0 => items::templates_list(),
        "resources/read" if state.opts.items > 0 => items::resources_read(params),
        "prompts/list" if state.opts.items > 0 => items::prompts_list(),
        "prompts/get" if state.opts.items > 0 => items::prompts_get(params),
        "tools/call" => match call {
            Some(call) => tools::call(state, request, call, headers, events).await,
            None => match call_params(request) {
                Ok(call) => tools::call(state, request, call, headers, events).await,
                Err(reply) => reply,
            },
        },
        _ => Reply::error(METHOD_NOT_FOUND, "Method not found"),
    }
}

fn initialize(state: &State, params: Option<&RawValue>) -> Reply {
    #[derive(Deserialize)]
    struct Params {
        #[serde(rename = "protocolVersion")]
        protocol_version: Option<String>,
    }
    let requested = params
        .and_then(|p| serde_json::from_str::<Params>(p.get()).ok())
        .and_then(|p| p.protocol_version);
    let version = VERSIONS
        .into_iter()
        .find(|v| requested.as_deref() == Some(*v))
        .unwrap_or(LATEST);
    let mut capabilities = json!({ "tools": { "listChanged": true } });
    if state.opts.items > 0 {
        capabilities["resources"] = json!({});
        capabilities["prompts"] = json!({});
    }
    let result = json!({
        "protocolVersion": version,
        "capabilities": capabilities,
        "serverInfo": { "name": state.opts.name, "version": env!("CARGO_PKG_VERSION") },
        "instructions": "Portcullis test upstream.",
    });
    Reply::Result(result.to_string())
}

fn tools_list(state: &State, params: Option<&RawValue>) -> Reply {
    #[derive(Deserialize)]
    struct Params {
        cursor: Option<String>,
    }
    let cursor = match params.map(|p| serde_json::from_str::<Params>(p.get())) {
        None => None,
        Some(Ok(p)) => p.cursor,
        Some(Err(e)) => return Reply::error(INVALID_PARAMS, format!("Invalid params: {e}")),
    };
    match state.catalog.list(cursor.as_deref(), state.opts.page_size) {
        Some(result) => Reply::Result(result),
        None => Reply::error(INVALID_PARAMS, "Invalid cursor"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(body: &str) -> Request {
        match parse(body.as_bytes()) {
            Ok(Message::Request(r)) => r,
            _ => panic!("not a request: {body}"),
        }
    }

    #[test]
    fn classifies_messages() {
        let r = request(r#"{"jsonrpc":"2.0","id":"a\"b","method":"ping"}"#);
        assert_eq!(r.id.get(), r#""a\"b""#);
        assert!(matches!(
            parse(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#),
            Ok(Message::Notification { .. })
        ));
        assert!(matches!(
            parse(br#"{"jsonrpc":"2.0","id":1,"result":{}}"#),
            Ok(Message::Response)
        ));
        let err = |b: &[u8]| String::from_utf8(parse(b).err().unwrap()).unwrap();
        assert!(err(b"{nope").contains("-32700"));
        assert!(err(b"[{}]").contains("-32600"));
        assert!(err(br#"{"id":1}"#).contains("-32600"));
    }

    #[test]
    fn envelopes_keep_raw_id() {
        let r = request(r#"{"jsonrpc":"2.0","id":7,"method":"ping"}"#);
        let msg = Reply::Result("{}".into()).into_message(&r.id).unwrap();
        assert_eq!(msg, br#"{"jsonrpc":"2.0","id":7,"result":{}}"#);
        let msg = Reply::Error {
            code: -5,
            message: "m".into(),
            data: Some(json!({"from": "upstream"})),
        }
        .into_message(&r.id)
        .unwrap();
        let v: Value = serde_json::from_slice(&msg).unwrap();
        assert_eq!(
            v["error"],
            json!({"code": -5, "message": "m", "data": {"from": "upstream"}})
        );
        assert!(Reply::Silent.into_message(&r.id).is_none());
    }
}
