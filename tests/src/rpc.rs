//! JSON-RPC shapes in answers: an error's code and message, a successful call,
//! the exact text of a member (for byte-for-byte checks), the response in a JSON or
//! SSE body.

use serde_json::{Value, json};

/// The JSON-RPC error of a response message as `(code, message)`, if it is one.
pub fn rpc_error(msg: &Value) -> Option<(i64, String)> {
    let e = msg.get("error")?;
    Some((
        e.get("code")?.as_i64()?,
        e.get("message")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
    ))
}

/// Asserts that `msg` is the JSON-RPC error `code` with exactly `message`.
#[track_caller]
pub fn assert_rpc_error(msg: &Value, code: i64, message: &str) {
    assert_eq!(
        rpc_error(msg),
        Some((code, message.to_string())),
        "expected JSON-RPC error {code} {message:?}, got {msg}"
    );
}

/// Asserts that `msg` is a successful (non-`isError`) tools/call result.
#[track_caller]
pub fn assert_call_ok(msg: &Value) {
    assert!(
        msg.get("result").is_some_and(Value::is_object) && msg["result"]["isError"] != json!(true),
        "expected a successful tools/call result, got {msg}"
    );
}

/// The exact JSON text of top-level member `key` of a JSON object (e.g. the `result`
/// of a JSON-RPC response), as it appears in `body`.
pub fn raw_member(body: &str, key: &str) -> Option<String> {
    let map: std::collections::HashMap<String, Box<serde_json::value::RawValue>> =
        serde_json::from_str(body).ok()?;
    map.get(key).map(|v| v.get().to_string())
}

/// The JSON text of the JSON-RPC response in a response body (the body itself for
/// JSON, the last `data:` payload carrying a result or error for SSE).
pub fn response_text(resp: &crate::Response) -> String {
    if resp.is_sse() {
        crate::client::sse_data(&resp.body)
            .into_iter()
            .rfind(|d| {
                serde_json::from_str::<serde_json::Value>(d)
                    .is_ok_and(|v| v.get("result").is_some() || v.get("error").is_some())
            })
            .unwrap_or_else(|| panic!("no response in SSE body: {}", resp.body))
    } else {
        resp.body.clone()
    }
}
