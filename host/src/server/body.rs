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

pub(crate) type Body = BoxBody<Bytes, Infallible>;

pub(super) fn full(bytes: Bytes) -> Body {
    Full::new(bytes).boxed()
}

pub(super) fn empty() -> Body {
    Empty::new().boxed()
}

/// An SSE body: each message from `rx` becomes one event, with the id `<stream_id>-<n>`
/// (`stream_id` from [`AgentSession::next_stream`], so ids are unique across the
/// session's streams); with `keepalive`, a comment line is sent whenever the channel is
/// quiet that long. Ends when `rx` closes.
///
/// [`AgentSession::next_stream`]: crate::gateway::sessions::AgentSession::next_stream
pub(super) fn sse_stream(
    rx: mpsc::Receiver<String>,
    keepalive: Option<Duration>,
    stream_id: u64,
) -> Body {
    let events = stream::unfold((rx, 0u64), move |(mut rx, n)| async move {
        let event = |m: String| sse::encode(Some(&format!("{stream_id}-{n}")), &m);
        let next = match keepalive {
            Some(every) => match tokio::time::timeout(every, rx.recv()).await {
                Ok(msg) => msg.map(event),
                Err(_) => Some(": keepalive\n\n".to_string()),
            },
            None => rx.recv().await.map(event),
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
