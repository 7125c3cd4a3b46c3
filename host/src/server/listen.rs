//! The GET stream of a session: server-to-client messages not tied to a request.
//! The gateway sends `notifications/<kind>/list_changed` on it when a connector of
//! the session's endpoint changes a list or its rules, and when the agent's own rules
//! are reloaded, and relays the upstream notices the session asked for
//! (`gateway/notices.rs`: resource updates, log messages). Keep-alive comments every 15 seconds; the
//! stream ends when the session does.

use std::sync::Arc;
use std::time::Duration;

use http::header::ACCEPT;
use http::{HeaderMap, Response, StatusCode};
use serde_json::Value;
use tokio::sync::{broadcast, mpsc};

use super::body::{Body, sse_stream};
use super::transport::{http_error, sse_response};
use crate::gateway::Gateway;
use crate::gateway::catalog::{Changed, Kind};
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
    let mut notices = session.notices.stream();
    let mut ended = session.ended();
    let (tx, rx) = mpsc::channel(16);
    let endpoint = session.endpoint.clone();
    let identity = session.identity();
    let agent = session.agent.clone();
    let gateway = gw.clone();
    let stream = session.next_stream();
    drop(session);
    tokio::spawn(async move {
        let _permit = permit;
        let advertised = gateway.advertised(&identity, &endpoint).await;
        loop {
            let out: Vec<String> = tokio::select! {
                _ = ended.wait_for(|e| *e) => return,
                _ = tx.closed() => return,
                notice = notices.recv() => match notice {
                    Ok(text) => vec![text],
                    // Fell behind: the oldest were dropped; carry on with the rest.
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::debug!(dropped = n, "GET stream behind on upstream notices");
                        continue;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                change = changes.recv() => {
                    let relevant = match change {
                        Ok(Changed::Connector(connector, kind)) => match &endpoint {
                            Endpoint::All => Some(kind),
                            Endpoint::One(id) => (*id == connector).then_some(kind),
                        },
                        Ok(Changed::Agent(changed)) => (changed == agent).then_some(None),
                        // Missed some: tell the agent to re-list, which is always safe.
                        Err(broadcast::error::RecvError::Lagged(_)) => Some(None),
                        Err(broadcast::error::RecvError::Closed) => return,
                    };
                    match relevant {
                        Some(kind) => notes(kind, &advertised),
                        None => continue,
                    }
                }
            };
            for text in out {
                if tx.send(text).await.is_err() {
                    return;
                }
            }
        }
    });
    sse_response(sse_stream(rx, Some(KEEPALIVE), stream))
}

/// The `list_changed` notifications one change makes: its kind's (resources for
/// both resource lists), or every advertised kind's when the change names none.
/// Only kinds the session was advertised are announced.
fn notes(kind: Option<Kind>, advertised: &Value) -> Vec<String> {
    let capabilities: &[&str] = match kind {
        Some(k) => &[k.capability()],
        None => &["tools", "resources", "prompts"],
    };
    capabilities
        .iter()
        .filter(|c| advertised.get(**c).is_some())
        .map(|c| jsonrpc::notification(&format!("notifications/{c}/list_changed"), None))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_advertised_kinds_are_announced() {
        let advertised = json!({"tools": {}, "prompts": {}});
        let methods = |kind| -> Vec<String> {
            notes(kind, &advertised)
                .iter()
                .map(|t| {
                    serde_json::from_str::<Value>(t).unwrap()["method"]
                        .as_str()
                        .unwrap()
                        .to_string()
                })
                .collect()
        };
        assert_eq!(
            methods(None),
            [
                "notifications/tools/list_changed",
                "notifications/prompts/list_changed"
            ]
        );
        assert_eq!(
            methods(Some(Kind::Templates)),
            Vec::<String>::new(),
            "resources not advertised"
        );
        assert_eq!(
            methods(Some(Kind::Prompts)),
            ["notifications/prompts/list_changed"]
        );
    }
}
