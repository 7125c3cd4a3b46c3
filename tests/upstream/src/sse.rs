//! Server-Sent Events: framing of JSON-RPC messages as `data:` events, the
//! per-request stream used for POST answers, and the long-lived GET stream
//! carrying server-initiated notifications plus `: keepalive` comments.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{broadcast, mpsc};
use tokio::time::{Instant, MissedTickBehavior, interval_at};

use crate::body::Body;
use crate::state::State;

const KEEPALIVE: &[u8] = b": keepalive\n\n";

/// Frames one JSON message (compact, hence single-line) as an SSE event.
pub fn event(json: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(json.len() + 8);
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(json);
    out.extend_from_slice(b"\n\n");
    out.into()
}

/// A channel whose receiving end is a response body. Closing every sender
/// ends the stream.
pub fn channel() -> (mpsc::Sender<Bytes>, Body) {
    let (tx, rx) = mpsc::channel(16);
    (tx, Body::Stream(rx))
}

/// Opens a GET stream: forwards broadcast events and sends keepalives until
/// the client goes away.
pub fn get_stream(state: &Arc<State>) -> Body {
    let (tx, body) = channel();
    let mut events = state.subscribe();
    let period = state.opts.keepalive;
    let asks: Vec<Bytes> = state
        .opts
        .ask_on_stream
        .iter()
        .enumerate()
        .map(|(n, method)| {
            let request =
                serde_json::json!({"jsonrpc": "2.0", "id": format!("ask-{n}"), "method": method});
            event(request.to_string().as_bytes())
        })
        .collect();
    tokio::spawn(async move {
        for ask in asks {
            if tx.send(ask).await.is_err() {
                return;
            }
        }
        let mut ticks = interval_at(Instant::now() + period, period);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            let chunk = tokio::select! {
                _ = tx.closed() => break,
                _ = ticks.tick() => Bytes::from_static(KEEPALIVE),
                event = events.recv() => match event {
                    Ok(event) => event,
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => break,
                },
            };
            if tx.send(chunk).await.is_err() {
                break;
            }
        }
    });
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_event() {
        assert_eq!(&event(br#"{"a":1}"#)[..], b"data: {\"a\":1}\n\n");
    }
}
