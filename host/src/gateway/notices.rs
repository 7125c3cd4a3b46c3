//! What upstreams send an agent session outside any request, and what the agent
//! asked to be told: resource subscriptions (`resources/subscribe`) and the log
//! level (`logging/setLevel`).
//!
//! [`Notices`] is an agent session's part: its subscriptions per connector, its log
//! level, the broadcast its GET streams read, and one listener task per connector
//! it subscribed or set a level on. A listener ([`Gateway::listen_for`]) takes the
//! session's upstream session's stream (`UpstreamSession::listen`: the GET stream
//! over Streamable HTTP, the event stream over SSE, stdout over stdio), opened
//! before the subscription is forwarded, and routes what arrives:
//!
//! - `notifications/resources/updated` reaches the agent only for a URI it
//!   subscribed on that connector (qualified on `/mcp`);
//! - `notifications/message` reaches the agent (through `builtin:redact-secrets`'s
//!   masking when the chain holds it);
//! - a `list_changed` empties the catalog's list of that kind (agents hear of it as
//!   of every change, from the catalog);
//! - a server-to-client request is answered at once (`answer_unrelayed`);
//! - anything else is dropped.
//!
//! When the upstream's stream ends (the upstream lost the session, the process
//! exited) the listener opens it again (after 1 s, doubling to 30 s while that fails)
//! and replays the session's subscriptions on that connector and its log level,
//! which the upstream has forgotten. A message no GET stream is open for is dropped
//! (the broadcast keeps none); a GET stream that falls more than [`BUFFER`] behind
//! loses the oldest. Listeners end with the session, or when the session's upstream
//! session of the connector is replaced (a reload re-targeted it). A process shared by every agent session (`share_process`) cannot
//! tell agents apart, so subscriptions and levels are refused on it.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio::sync::broadcast;

use super::Gateway;
use super::decide;
use super::names;
use super::sessions::{AgentSession, Endpoint};
use crate::config::Connector;
use crate::mcp::jsonrpc;
use crate::upstream::{Message, UpstreamError, UpstreamSession};

/// Messages a session's GET streams may fall behind by.
const BUFFER: usize = 256;
/// The first wait before a listener whose stream ended resumes; it doubles up to
/// [`MAX_RESUME`] while resuming fails.
const FIRST_RESUME: std::time::Duration = std::time::Duration::from_secs(1);
const MAX_RESUME: std::time::Duration = std::time::Duration::from_secs(30);

/// An agent session's subscriptions, log level and listeners.
pub(crate) struct Notices {
    tx: broadcast::Sender<String>,
    /// Upstream URIs subscribed, by connector id.
    subscriptions: Mutex<HashMap<String, HashSet<String>>>,
    /// The level the agent set (`logging/setLevel`), if it did.
    level: Mutex<Option<String>>,
    /// One listener per connector, with the upstream session it listens to.
    listeners: Mutex<HashMap<String, Listener>>,
}

struct Listener {
    upstream: std::sync::Weak<UpstreamSession>,
    task: tokio::task::AbortHandle,
}

impl Default for Notices {
    fn default() -> Self {
        Notices {
            tx: broadcast::channel(BUFFER).0,
            subscriptions: Mutex::default(),
            level: Mutex::default(),
            listeners: Mutex::default(),
        }
    }
}

impl Notices {
    /// A receiver for one GET stream of the session.
    pub(crate) fn stream(&self) -> broadcast::Receiver<String> {
        self.tx.subscribe()
    }

    /// Records a subscription; `false` if it was already there.
    pub(crate) fn subscribe(&self, connector: &str, uri: &str) -> bool {
        let mut subs = self.subscriptions.lock().expect("subscriptions lock");
        subs.entry(connector.to_string())
            .or_default()
            .insert(uri.to_string())
    }

    /// Forgets a subscription.
    pub(crate) fn unsubscribe(&self, connector: &str, uri: &str) {
        let mut subs = self.subscriptions.lock().expect("subscriptions lock");
        if let Some(set) = subs.get_mut(connector) {
            set.remove(uri);
        }
    }

    fn subscriptions_of(&self, connector: &str) -> Vec<String> {
        let subs = self.subscriptions.lock().expect("subscriptions lock");
        subs.get(connector)
            .map(|set| set.iter().cloned().collect())
            .unwrap_or_default()
    }

    fn subscribed(&self, connector: &str, uri: &str) -> bool {
        let subs = self.subscriptions.lock().expect("subscriptions lock");
        subs.get(connector).is_some_and(|set| set.contains(uri))
    }

    pub(crate) fn set_level(&self, level: &str) {
        *self.level.lock().expect("level lock") = Some(level.to_string());
    }

    /// Whether a log message of `level` reaches the agent: at or above the level it
    /// set (an upstream that ignores `logging/setLevel` is filtered here too).
    fn wants_level(&self, level: Option<&str>) -> bool {
        let set = self.level.lock().expect("level lock");
        match (set.as_deref().and_then(severity), level.and_then(severity)) {
            (Some(floor), Some(got)) => got >= floor,
            _ => true,
        }
    }

    /// Stops every listener (the session ended).
    pub(crate) fn stop(&self) {
        for (_, l) in self.listeners.lock().expect("listeners lock").drain() {
            l.task.abort();
        }
    }

    /// Whether a listener runs for `connector` on exactly `upstream`.
    fn listening(&self, connector: &str, upstream: &Arc<UpstreamSession>) -> bool {
        let listeners = self.listeners.lock().expect("listeners lock");
        listeners.get(connector).is_some_and(|l| {
            !l.task.is_finished()
                && l.upstream
                    .upgrade()
                    .is_some_and(|u| Arc::ptr_eq(&u, upstream))
        })
    }

    fn push(&self, text: String) {
        // No GET stream open: nobody to tell.
        let _ = self.tx.send(text);
    }
}

impl Gateway {
    /// Makes sure a listener runs for the session's upstream session of `connector`,
    /// its stream open before this returns (so what the upstream sends after it is
    /// not lost). `Ok(false)`: the upstream offers no stream to listen to.
    pub(super) async fn listen_for(
        self: &Arc<Self>,
        session: &Arc<AgentSession>,
        connector: &Arc<Connector>,
        upstream: &Arc<UpstreamSession>,
    ) -> Result<bool, UpstreamError> {
        if session.notices.listening(&connector.id, upstream) {
            return Ok(true);
        }
        let opened = tokio::time::timeout(connector.timeout, upstream.listen())
            .await
            .unwrap_or(Err(UpstreamError::Timeout))?;
        let Some(mut stream) = opened else {
            return Ok(false);
        };
        let gateway = self.clone();
        let (agent_session, connector_c, upstream_c) =
            (Arc::downgrade(session), connector.clone(), upstream.clone());
        let mut ended = session.ended();
        let task = tokio::spawn(async move {
            let mut backoff = FIRST_RESUME;
            loop {
                loop {
                    let next = tokio::select! {
                        _ = ended.wait_for(|e| *e) => return,
                        next = stream.next() => next,
                    };
                    let Ok(Some(msg)) = next else { break };
                    let Some(session) = agent_session.upgrade() else {
                        return;
                    };
                    backoff = FIRST_RESUME;
                    gateway
                        .notice(&session, &connector_c, &upstream_c, msg)
                        .await;
                }
                // The stream ended: the upstream lost the session, the process
                // exited, the event stream closed. Resume while the session wants it.
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_RESUME);
                let Some(session) = agent_session.upgrade() else {
                    return;
                };
                if !session.listens_on(&connector_c.id, &upstream_c) {
                    return;
                }
                match gateway.resume(&session, &connector_c, &upstream_c).await {
                    Ok(Some(resumed)) => stream = resumed,
                    Ok(None) => return,
                    Err(e) => {
                        tracing::debug!(connector = %connector_c.id, error = %e, "upstream notices not resumed yet");
                        stream = crate::upstream::ListenStream::ended();
                    }
                }
            }
        });
        let listener = Listener {
            upstream: Arc::downgrade(upstream),
            task: task.abort_handle(),
        };
        let old = session
            .notices
            .listeners
            .lock()
            .expect("listeners lock")
            .insert(connector.id.clone(), listener);
        if let Some(old) = old {
            old.task.abort();
        }
        // Ended meanwhile: its `stop` ran before this listener was there to stop.
        if session.has_ended() {
            session.notices.stop();
        }
        Ok(true)
    }

    /// Opens the upstream's stream again and replays what the session asked of it
    /// (every subscription of the connector, the log level), which an upstream that
    /// re-initialised or a restarted process has forgotten.
    async fn resume(
        &self,
        session: &AgentSession,
        connector: &Arc<Connector>,
        upstream: &Arc<UpstreamSession>,
    ) -> Result<Option<crate::upstream::ListenStream>, UpstreamError> {
        let limit = connector.timeout;
        let Some(stream) = tokio::time::timeout(limit, upstream.listen())
            .await
            .unwrap_or(Err(UpstreamError::Timeout))?
        else {
            return Ok(None);
        };
        let uris = self.still_allowed(session, connector).await;
        let level = session.notices.level.lock().expect("level lock").clone();
        let mut asks: Vec<(&str, Value)> = uris
            .into_iter()
            .map(|uri| ("resources/subscribe", serde_json::json!({ "uri": uri })))
            .collect();
        if let Some(level) = level {
            asks.push(("logging/setLevel", serde_json::json!({ "level": level })));
        }
        for (method, params) in &asks {
            ask(upstream, method, params, limit).await?;
        }
        tracing::info!(connector = %connector.id, replayed = asks.len(), "upstream notices resumed");
        Ok(Some(stream))
    }

    /// The session's subscriptions on `connector` that the chain still allows (a
    /// reload may have changed the rules since); the others are forgotten.
    async fn still_allowed(
        &self,
        session: &AgentSession,
        connector: &Arc<Connector>,
    ) -> Vec<String> {
        let chain = self.policy.current();
        let mut kept = Vec::new();
        for uri in session.notices.subscriptions_of(&connector.id) {
            let allowed = match self.resource_item(&chain, connector, &uri).await {
                Ok(item) => {
                    let owned = self.owned_for_items(session, connector).await;
                    let ask = decide::Ask::SubscribeResource(item);
                    decide::check_item(&chain, owned, ask)
                        .await
                        .denial
                        .is_none()
                }
                Err(_) => false,
            };
            if allowed {
                kept.push(uri);
            } else {
                tracing::info!(connector = %connector.id, "a subscription the policies no longer allow was dropped");
                session.notices.unsubscribe(&connector.id, &uri);
            }
        }
        kept
    }

    /// Routes one message (module doc).
    async fn notice(
        &self,
        session: &Arc<AgentSession>,
        connector: &Arc<Connector>,
        upstream: &Arc<UpstreamSession>,
        msg: Message,
    ) {
        if let Some(kinds) = super::catalog::list_changed(&msg) {
            self.catalog.invalidate_kinds(&connector.id, kinds);
            return;
        }
        match msg {
            Message::Notification { method, params } => {
                let params = params
                    .as_deref()
                    .and_then(|p| serde_json::from_str::<Value>(p.get()).ok());
                let text = match method.as_str() {
                    "notifications/resources/updated" => {
                        self.updated(session, connector, params.unwrap_or(Value::Null))
                    }
                    "notifications/message" => {
                        let params = params.unwrap_or(Value::Null);
                        let level = params.get("level").and_then(Value::as_str);
                        if !session.notices.wants_level(level) {
                            return;
                        }
                        self.log_message(session, connector, params).await
                    }
                    _ => None,
                };
                if let Some(text) = text {
                    session.notices.push(text);
                }
            }
            Message::Request { id, method, .. } => {
                let answer = crate::upstream::answer_unrelayed(&method);
                let (up, limit) = (upstream.clone(), connector.timeout);
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(limit, up.respond(&id, &answer)).await;
                });
            }
            Message::Response { .. } => {}
        }
    }

    /// `notifications/resources/updated` for a URI the session subscribed.
    fn updated(
        &self,
        session: &AgentSession,
        connector: &Connector,
        mut params: Value,
    ) -> Option<String> {
        let uri = params.get("uri")?.as_str()?.to_string();
        if !session.notices.subscribed(&connector.id, &uri) {
            return None;
        }
        if session.endpoint == Endpoint::All {
            params["uri"] = Value::String(names::qualify(&connector.slug, &uri));
        }
        let raw = crate::mcp::params::to_raw(&params);
        Some(jsonrpc::notification(
            "notifications/resources/updated",
            Some(&raw),
        ))
    }

    /// `notifications/message`, masked by `builtin:redact-secrets` when the chain
    /// holds it (a denial drops it).
    async fn log_message(
        &self,
        session: &AgentSession,
        connector: &Arc<Connector>,
        params: Value,
    ) -> Option<String> {
        let chain = self.policy.current();
        let params = match chain.redacts_messages() {
            false => params,
            true => {
                let owned = self.owned_for_items(session, connector).await;
                let decision =
                    decide::check_item_message(&chain, owned, "logging".into(), params.to_string())
                        .await;
                if decision.denial.is_some() {
                    return None;
                }
                match decision.replacement {
                    Some(masked) => serde_json::from_str(&masked).ok()?,
                    None => params,
                }
            }
        };
        let raw = crate::mcp::params::to_raw(&params);
        Some(jsonrpc::notification("notifications/message", Some(&raw)))
    }
}

/// One request of the gateway's own to an upstream session (not an agent's): bounded
/// by `limit`; a server-to-client request meanwhile is answered as unrelayed.
pub(super) async fn ask(
    upstream: &UpstreamSession,
    method: &str,
    params: &Value,
    limit: std::time::Duration,
) -> Result<crate::upstream::Outcome, UpstreamError> {
    let id = upstream.next_request_id();
    let request = upstream.request(id, method, params, |m| {
        matches!(m, Message::Request { .. }).then_some(m)
    });
    tokio::time::timeout(limit, request)
        .await
        .unwrap_or(Err(UpstreamError::Timeout))
}

/// The syslog severities of MCP logging, least severe first.
const LEVELS: [&str; 8] = [
    "debug",
    "info",
    "notice",
    "warning",
    "error",
    "critical",
    "alert",
    "emergency",
];

/// A level's rank in [`LEVELS`]; `None` for a level MCP does not name.
pub(crate) fn severity(level: &str) -> Option<usize> {
    LEVELS.iter().position(|l| *l == level)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_messages_below_the_set_level_are_dropped() {
        let n = Notices::default();
        assert!(n.wants_level(Some("debug")), "no level set: everything");
        n.set_level("warning");
        assert!(!n.wants_level(Some("info")));
        assert!(n.wants_level(Some("warning")) && n.wants_level(Some("emergency")));
        assert!(
            n.wants_level(Some("shouting")),
            "an unknown level is not judged"
        );
    }

    #[test]
    fn subscriptions_are_per_connector_and_uri() {
        let n = Notices::default();
        assert!(n.subscribe("c1", "file:///a"));
        assert!(!n.subscribe("c1", "file:///a"), "already there");
        assert!(n.subscribed("c1", "file:///a"));
        assert!(!n.subscribed("c2", "file:///a"));
        assert!(!n.subscribed("c1", "file:///b"));
        n.unsubscribe("c1", "file:///a");
        assert!(!n.subscribed("c1", "file:///a"));
    }

    #[test]
    fn every_open_stream_gets_what_is_pushed() {
        let n = Notices::default();
        n.push("lost: no stream".into());
        let (mut a, mut b) = (n.stream(), n.stream());
        n.push("x".into());
        assert_eq!(a.try_recv().unwrap(), "x");
        assert_eq!(b.try_recv().unwrap(), "x");
    }
}
