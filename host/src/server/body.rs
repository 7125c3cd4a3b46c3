//! Response bodies: a whole buffer, nothing, or an SSE stream fed by a channel.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::Frame;
use tokio::sync::mpsc;

use crate::mcp::sse;

pub type Body = BoxBody<Bytes, Infallible>;

pub fn full(bytes: Bytes) -> Body {
    Full::new(bytes).boxed()
}

pub fn empty() -> Body {
    Empty::new().boxed()
}

/// An SSE body: each message from `rx` becomes one event; with `keepalive`, a comment
/// line is sent whenever the channel is quiet that long. Ends when `rx` closes.
pub fn sse_stream(rx: mpsc::Receiver<String>, keepalive: Option<Duration>) -> Body {
    let events = stream::unfold((rx, 0u64), move |(mut rx, n)| async move {
        let next = match keepalive {
            Some(every) => match tokio::time::timeout(every, rx.recv()).await {
                Ok(msg) => msg.map(|m| sse::encode(Some(&n.to_string()), &m)),
                Err(_) => Some(": keepalive\n\n".to_string()),
            },
            None => rx
                .recv()
                .await
                .map(|m| sse::encode(Some(&n.to_string()), &m)),
        };
        next.map(|text| {
            (
                Ok::<_, Infallible>(Frame::data(Bytes::from(text))),
                (rx, n + 1),
            )
        })
    });
    StreamBody::new(events).boxed()
}
