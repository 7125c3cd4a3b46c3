//! The stdio transport: newline-delimited JSON-RPC on stdin and stdout, with the
//! same handlers as the HTTP transport. Notifications a call sends (progress) and
//! the broadcast ones (`notifications/tools/list_changed`) are written to stdout as
//! they come; stdout has one writer task, so lines never interleave.
//!
//! Fault injection for the gateway's process-lifecycle tests: `--exit-after N`
//! exits (status 3) when the Nth `tools/call` arrives, without answering it;
//! `--garbage-after N` writes a line that is not JSON-RPC instead of answering it.
//! One line goes to stderr at start, so a supervisor's stderr capture can be seen.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http::HeaderMap;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

use crate::rpc::{self, Message};
use crate::state::State;

/// Faults injected on the Nth `tools/call` (1-based; 0 = never).
#[derive(Clone, Copy, Default)]
pub struct Faults {
    pub exit_after: u64,
    pub garbage_after: u64,
}

/// Serves stdin until it closes, then exits.
pub async fn serve(state: Arc<State>, faults: Faults) -> std::io::Result<()> {
    eprintln!(
        "portcullis-test-upstream serving stdio (pid {})",
        std::process::id()
    );
    let (out, rx) = mpsc::channel::<Vec<u8>>(256);
    let writer = tokio::spawn(write_lines(rx));
    forward_broadcasts(&state, out.clone());
    let calls = Arc::new(AtomicU64::new(0));
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        if line.trim().is_empty() {
            continue;
        }
        let request = match rpc::parse(line.as_bytes()) {
            Ok(Message::Request(request)) => request,
            Ok(Message::Notification { method, params }) => {
                rpc::notify(&state, &method, params.as_deref());
                continue;
            }
            Ok(Message::Response) => continue,
            Err(error) => {
                let _ = out.send(error).await;
                continue;
            }
        };
        if request.method == "tools/call" {
            let n = calls.fetch_add(1, Ordering::Relaxed) + 1;
            if n == faults.exit_after {
                eprintln!("exiting on call {n} (--exit-after)");
                std::process::exit(3);
            }
            if n == faults.garbage_after {
                let _ = out.send(b"this is not JSON-RPC".to_vec()).await;
                continue;
            }
        }
        let (state, out) = (state.clone(), out.clone());
        tokio::spawn(async move {
            let (events, mut unframed) = mpsc::channel::<Bytes>(16);
            let relay = {
                let out = out.clone();
                tokio::spawn(async move {
                    while let Some(event) = unframed.recv().await {
                        let _ = out.send(unframe(&event)).await;
                    }
                })
            };
            let reply = rpc::answer(&state, &request, None, &HeaderMap::new(), Some(&events)).await;
            drop(events);
            let _ = relay.await;
            if let Some(message) = reply.into_message(&request.id) {
                let _ = out.send(message).await;
            }
        });
    }
    drop(out);
    let _ = writer.await;
    Ok(())
}

/// Writes each message as one line.
async fn write_lines(mut rx: mpsc::Receiver<Vec<u8>>) {
    let mut stdout = tokio::io::stdout();
    while let Some(mut line) = rx.recv().await {
        line.push(b'\n');
        if stdout.write_all(&line).await.is_err() || stdout.flush().await.is_err() {
            return;
        }
    }
}

/// Sends what HTTP clients would get on their GET stream to stdout.
fn forward_broadcasts(state: &State, out: mpsc::Sender<Vec<u8>>) {
    let mut events = state.subscribe();
    tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(event) => {
                    if out.send(unframe(&event)).await.is_err() {
                        return;
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    });
}

/// The JSON message of an SSE event built by `sse::event` (`data: {...}\n\n`).
fn unframe(event: &[u8]) -> Vec<u8> {
    let body = event.strip_prefix(b"data: ").unwrap_or(event);
    let end = body
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(0, |i| i + 1);
    body[..end].to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unframes_an_event() {
        assert_eq!(unframe(&crate::sse::event(br#"{"a":1}"#)), br#"{"a":1}"#);
    }
}
