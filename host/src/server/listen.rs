//! The GET stream of a session: server-to-client messages not tied to a request.
//! The gateway sends `notifications/tools/list_changed` on it when a connector of the
//! session's endpoint changes its tools or rules, and when the agent's own rules are
//! reloaded. Keep-alive comments every 15 seconds; the
//! stream ends when the session does.

use std::sync::Arc;
use std::time::Duration;

use http::header::ACCEPT;
use http::{HeaderMap, Response, StatusCode};
use tokio::sync::{broadcast, mpsc};

use super::body::{Body, sse_stream};
use super::transport::{http_error, sse_response};
use crate::gateway::Gateway;
use crate::gateway::catalog::Changed;
use crate::gateway::limits::Permit;
use crate::gateway::sessions::{AgentSession, Endpoint};
use crate::mcp::jsonrpc;

const KEEPALIVE: Duration = Duration::from_secs(15);

/// Opens the stream; `permit` (one of the agent's GET streams) is held as long as it
/// is open.
pub(super) fn open(
    gw: &Arc<Gateway>,
    session: Arc<AgentSession>,
    headers: &HeaderMap,
    permit: Permit,
) -> Response<Body> {
    let accept = headers
        .get(ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !accept.contains("text/event-stream") && !accept.contains("*/*") {
        return http_error(
            StatusCode::NOT_ACCEPTABLE,
            "Not Acceptable: GET opens an SSE stream (Accept: text/event-stream)",
        );
    }
    let mut changes = gw.catalog.subscribe();
    let mut ended = session.ended();
    let (tx, rx) = mpsc::channel(16);
    let endpoint = session.endpoint.clone();
    let agent = session.agent.clone();
    let stream = session.next_stream();
    drop(session);
    tokio::spawn(async move {
        let _permit = permit;
        let note = jsonrpc::notification("notifications/tools/list_changed", None);
        loop {
            let relevant = tokio::select! {
                _ = ended.wait_for(|e| *e) => return,
                _ = tx.closed() => return,
                change = changes.recv() => match change {
                    Ok(Changed::Connector(connector)) => match &endpoint {
                        Endpoint::All => true,
                        Endpoint::One(id) => *id == connector,
                    },
                    Ok(Changed::Agent(changed)) => changed == agent,
                    // Missed some: tell the agent to re-list, which is always safe.
                    Err(broadcast::error::RecvError::Lagged(_)) => true,
                    Err(broadcast::error::RecvError::Closed) => return,
                },
            };
            if relevant && tx.send(note.clone()).await.is_err() {
                return;
            }
        }
    });
    sse_response(sse_stream(rx, Some(KEEPALIVE), stream))
}
