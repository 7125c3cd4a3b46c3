//! Classifying an MCP answer: a JSON body or an SSE stream carrying the
//! JSON-RPC response, which may be a result (possibly `isError: true`) or an
//! error.

use serde::Deserialize;
use serde::de::IgnoredAny;

/// What a POST answer amounted to.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A JSON-RPC result without `isError: true`; `tools` is the length of
    /// `result.tools` when there is one (tools/list).
    Ok { tools: Option<usize> },
    /// Anything else, with a short description.
    Error(String),
}

/// The parts of a JSON-RPC message the load generator looks at; everything
/// else is skipped without being materialised.
#[derive(Deserialize)]
struct Message {
    result: Option<ResultFlags>,
    error: Option<RpcError>,
}

#[derive(Deserialize)]
struct ResultFlags {
    #[serde(rename = "isError")]
    is_error: Option<bool>,
    tools: Option<Vec<IgnoredAny>>,
}

#[derive(Deserialize)]
struct RpcError {
    code: Option<i64>,
    message: Option<String>,
}

/// Classifies an answer from its status, content type and body.
pub fn classify(status: u16, content_type: &str, body: &[u8]) -> Outcome {
    if status != 200 {
        let text = String::from_utf8_lossy(&body[..body.len().min(200)]);
        return Outcome::Error(format!("HTTP {status}: {}", text.trim()));
    }
    let ct = content_type.to_ascii_lowercase();
    if ct.starts_with("text/event-stream") {
        match sse_response(body) {
            Some(outcome) => outcome,
            None => Outcome::Error("event stream without a JSON-RPC response".into()),
        }
    } else if ct.starts_with("application/json") {
        message(body).unwrap_or_else(|| Outcome::Error("body is not a JSON-RPC response".into()))
    } else {
        Outcome::Error(format!("unexpected content type {content_type:?}"))
    }
}

/// Classifies one JSON-RPC message; `None` when it is not a response (a
/// notification or request) or not JSON.
fn message(data: &[u8]) -> Option<Outcome> {
    let msg: Message = serde_json::from_slice(data).ok()?;
    if let Some(e) = msg.error {
        return Some(Outcome::Error(format!(
            "JSON-RPC error {}: {}",
            e.code.unwrap_or(0),
            e.message.unwrap_or_default()
        )));
    }
    let result = msg.result?;
    if result.is_error == Some(true) {
        return Some(Outcome::Error("tool result with isError: true".into()));
    }
    Some(Outcome::Ok {
        tools: result.tools.map(|t| t.len()),
    })
}

/// Finds the JSON-RPC response among the events of an SSE body (the last one
/// wins); notifications and requests before it are skipped.
fn sse_response(body: &[u8]) -> Option<Outcome> {
    let mut found = None;
    let mut data: Vec<u8> = Vec::new();
    let mut has_data = false;
    for line in body.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            if has_data && let Some(o) = message(&data) {
                found = Some(o);
            }
            data.clear();
            has_data = false;
            continue;
        }
        if let Some(rest) = line.strip_prefix(b"data:") {
            let rest = rest.strip_prefix(b" ").unwrap_or(rest);
            if has_data {
                data.push(b'\n');
            }
            data.extend_from_slice(rest);
            has_data = true;
        }
        // Comments (":"), "event:", "id:" and "retry:" lines are ignored.
    }
    if has_data && let Some(o) = message(&data) {
        found = Some(o);
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    const JSON: &str = "application/json";
    const SSE: &str = "text/event-stream";

    fn ok() -> Outcome {
        Outcome::Ok { tools: None }
    }

    #[test]
    fn json_result_is_ok() {
        let body = br#"{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"hi"}],"extra":{"a":[1,2]}}}"#;
        assert_eq!(classify(200, JSON, body), ok());
        assert_eq!(classify(200, "application/json; charset=utf-8", body), ok());
    }

    #[test]
    fn is_error_and_rpc_error_are_errors() {
        let body = br#"{"jsonrpc":"2.0","id":1,"result":{"content":[],"isError":true}}"#;
        assert!(matches!(classify(200, JSON, body), Outcome::Error(_)));
        let body = br#"{"jsonrpc":"2.0","id":1,"result":{"content":[],"isError":false}}"#;
        assert_eq!(classify(200, JSON, body), ok());
        let body =
            br#"{"jsonrpc":"2.0","id":1,"error":{"code":-32601,"message":"Tool not found"}}"#;
        assert_eq!(
            classify(200, JSON, body),
            Outcome::Error("JSON-RPC error -32601: Tool not found".into())
        );
    }

    #[test]
    fn non_200_and_garbage_are_errors() {
        assert!(matches!(classify(502, JSON, b"{}"), Outcome::Error(_)));
        assert!(matches!(
            classify(200, JSON, b"not json"),
            Outcome::Error(_)
        ));
        assert!(matches!(classify(200, JSON, b"{}"), Outcome::Error(_)));
        assert!(matches!(
            classify(200, "text/plain", b"{}"),
            Outcome::Error(_)
        ));
    }

    #[test]
    fn tools_are_counted() {
        let body = br#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"a"},{"name":"b"}],"nextCursor":"x"}}"#;
        assert_eq!(classify(200, JSON, body), Outcome::Ok { tools: Some(2) });
    }

    #[test]
    fn sse_finds_the_response_after_notifications() {
        let body = b": keepalive\r\n\r\nevent: message\r\nid: 1\r\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{}}\r\n\r\nevent: message\r\ndata: {\"jsonrpc\":\"2.0\",\"id\":7,\r\ndata: \"result\":{\"content\":[]}}\r\n\r\n";
        assert_eq!(classify(200, SSE, body), ok());
        let body = b"data: {\"jsonrpc\":\"2.0\",\"id\":7,\"error\":{\"code\":-32603,\"message\":\"timeout\"}}\n\n";
        assert!(matches!(classify(200, SSE, body), Outcome::Error(_)));
        // No blank line after the last event.
        let body = b"data: {\"jsonrpc\":\"2.0\",\"id\":7,\"result\":{}}";
        assert_eq!(classify(200, SSE, body), ok());
        let body = b"data: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\"}\n\n";
        assert!(matches!(classify(200, SSE, body), Outcome::Error(_)));
    }
}
