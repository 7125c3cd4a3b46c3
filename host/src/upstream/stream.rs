//! Reading what an upstream sends back: a single JSON object or an SSE stream of
//! JSON-RPC messages, parsed one message at a time as bytes arrive. A body or event
//! may hold a JSON-RPC batch (an upstream speaking MCP 2025-03-26 may batch what it
//! sends); its messages are read in order, as if they had come one by one.

use std::collections::VecDeque;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;

use super::UpstreamError;
use crate::mcp::sse::{Decoder, Event};

/// Largest upstream message accepted by default (a whole JSON body or one SSE
/// event): a connector's `max_result_bytes`.
pub(crate) const DEFAULT_MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// One message from an upstream.
#[derive(Debug)]
pub(crate) enum Message {
    /// A response; `result` is kept as the exact JSON text received.
    Response {
        id: Value,
        result: Option<Box<RawValue>>,
        error: Option<Value>,
    },
    /// A notification, e.g. progress or `notifications/tools/list_changed`.
    /// `params` as the upstream wrote them (relayed unchanged).
    Notification {
        method: String,
        params: Option<Box<RawValue>>,
    },
    /// A server-to-client request (sampling, elicitation, roots...); `params` as the
    /// upstream wrote them.
    Request {
        id: Value,
        method: String,
        params: Option<Box<RawValue>>,
    },
}

#[derive(Deserialize)]
struct Wire {
    #[serde(default)]
    id: Option<Value>,
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    params: Option<Box<RawValue>>,
    #[serde(default)]
    result: Option<Box<RawValue>>,
    #[serde(default)]
    error: Option<Value>,
}

/// Parses one JSON-RPC message sent by an upstream.
pub(super) fn parse_message(text: &str) -> Result<Message, UpstreamError> {
    let wire: Wire = serde_json::from_str(text)
        .map_err(|e| UpstreamError::Protocol(format!("invalid JSON-RPC message: {e}")))?;
    match (wire.method, wire.id) {
        (Some(method), Some(id)) => Ok(Message::Request {
            id,
            method,
            params: wire.params,
        }),
        (Some(method), None) => Ok(Message::Notification {
            method,
            params: wire.params,
        }),
        (None, Some(id)) if wire.result.is_some() || wire.error.is_some() => {
            Ok(Message::Response {
                id,
                result: wire.result,
                error: wire.error,
            })
        }
        _ => Err(UpstreamError::Protocol(
            "message is neither request, notification nor response".into(),
        )),
    }
}

/// Parses what one JSON body or SSE event holds: one message, or a batch of them.
pub(super) fn parse_messages(text: &str, out: &mut VecDeque<Message>) -> Result<(), UpstreamError> {
    if !text.trim_start().starts_with('[') {
        out.push_back(parse_message(text)?);
        return Ok(());
    }
    let members: Vec<&RawValue> = serde_json::from_str(text)
        .map_err(|e| UpstreamError::Protocol(format!("invalid JSON-RPC batch: {e}")))?;
    if members.is_empty() {
        return Err(UpstreamError::Protocol("an empty JSON-RPC batch".into()));
    }
    for member in members {
        out.push_back(parse_message(member.get())?);
    }
    Ok(())
}

/// The messages of one upstream HTTP response body.
pub(crate) struct MessageStream {
    body: Incoming,
    /// `None` for a plain JSON body.
    sse: Option<Decoder>,
    pending: VecDeque<Event>,
    /// Messages read but not yet returned (the rest of a batch).
    messages: VecDeque<Message>,
    json_done: bool,
    /// The largest message read (`max_result_bytes`); a larger one fails the stream
    /// before it is held whole.
    limit: usize,
}

impl MessageStream {
    pub(crate) fn new(body: Incoming, is_sse: bool, limit: usize) -> Self {
        MessageStream {
            body,
            sse: is_sse.then(Decoder::new),
            pending: VecDeque::new(),
            messages: VecDeque::new(),
            json_done: false,
            limit,
        }
    }

    /// The next message, or `None` when the body ended.
    pub(crate) async fn next(&mut self) -> Result<Option<Message>, UpstreamError> {
        if let Some(message) = self.messages.pop_front() {
            return Ok(Some(message));
        }
        let Some(decoder) = self.sse.as_mut() else {
            if self.json_done {
                return Ok(None);
            }
            self.json_done = true;
            let bytes = read_all(&mut self.body, self.limit).await?;
            let text = std::str::from_utf8(&bytes)
                .map_err(|_| UpstreamError::Protocol("response is not UTF-8".into()))?;
            parse_messages(text, &mut self.messages)?;
            return Ok(self.messages.pop_front());
        };
        loop {
            if let Some(event) = self.pending.pop_front() {
                if event.data.trim().is_empty() {
                    continue; // priming events (2025-11-25) carry an id and no message
                }
                parse_messages(&event.data, &mut self.messages)?;
                return Ok(self.messages.pop_front());
            }
            match self.body.frame().await {
                None => return Ok(None),
                Some(Err(e)) => return Err(UpstreamError::Transport(e.to_string())),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.pending.extend(decoder.feed(&data));
                        if decoder.buffered() > self.limit {
                            return Err(UpstreamError::TooLarge(self.limit));
                        }
                    }
                }
            }
        }
    }
}

async fn read_all(body: &mut Incoming, limit: usize) -> Result<Bytes, UpstreamError> {
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| UpstreamError::Transport(e.to_string()))?;
        if let Ok(data) = frame.into_data() {
            out.extend_from_slice(&data);
            if out.len() > limit {
                return Err(UpstreamError::TooLarge(limit));
            }
        }
    }
    Ok(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_kind() {
        assert!(matches!(
            parse_message(r#"{"jsonrpc":"2.0","id":3,"result":{"content":[]}}"#),
            Ok(Message::Response {
                result: Some(_),
                ..
            })
        ));
        assert!(matches!(
            parse_message(
                r#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progress":1}}"#
            ),
            Ok(Message::Notification { .. })
        ));
        assert!(matches!(
            parse_message(
                r#"{"jsonrpc":"2.0","id":"s1","method":"sampling/createMessage","params":{}}"#
            ),
            Ok(Message::Request { .. })
        ));
        assert!(parse_message("{}").is_err());
        assert!(parse_message("nope").is_err());
    }

    #[test]
    fn a_batch_is_read_in_order() {
        let mut out = VecDeque::new();
        parse_messages(
            r#" [{"jsonrpc":"2.0","method":"notifications/progress","params":{"progress":1}},
                 {"jsonrpc":"2.0","id":3,"result":{"z": 1, "a":[]}}]"#,
            &mut out,
        )
        .unwrap();
        assert!(matches!(
            out.pop_front(),
            Some(Message::Notification { .. })
        ));
        let Some(Message::Response {
            result: Some(result),
            ..
        }) = out.pop_front()
        else {
            panic!("a response")
        };
        assert_eq!(
            result.get(),
            r#"{"z": 1, "a":[]}"#,
            "the result's bytes are kept"
        );
        assert!(parse_messages("[]", &mut out).is_err());
        assert!(parse_messages("[{}]", &mut out).is_err());
        assert!(parse_messages("[1,", &mut out).is_err());
    }
}
