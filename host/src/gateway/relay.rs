//! Server-to-client requests an upstream sends while one of its tools runs
//! (`sampling/createMessage`, `elicitation/create`), relayed to the agent on the
//! call's SSE stream, with the agent's answer relayed back.
//!
//! `roots/list` is not relayed: upstreams send it outside any call (on their GET
//! stream, e.g. server-everything right after `initialize`), where no agent stream
//! belongs to it; like every other method it is answered -32601.
//!
//! A connector relays only what its `relay_requests` lists, and only to an agent that
//! declared the matching client capability at `initialize`: the agent's upstream
//! session declares exactly that intersection (the gateway's own catalog session
//! declares everything the connector relays, so capability-dependent tools are
//! listed). The relayed request gets an id of the gateway's (`portcullis-relay-<n>`);
//! the agent answers it with a POST, and the answer goes upstream under the
//! upstream's own id. A request that is not relayed (not allowed, no SSE stream to
//! the agent, or beyond [`MAX_RELAYED`] waiting at once) is given back to the
//! upstream client, which answers it -32601; an upstream `ping` gets `{}` from the
//! gateway; one the agent leaves unanswered for the connector's `timeout_ms` gets
//! -32603. Every relayed or refused request (not `ping`) is an audit row
//! (method, connector, tool of the call, outcome).

use std::sync::Arc;

use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::Gateway;
use super::pipeline::Audited;
use super::sessions::{AgentSession, MAX_RELAYED};
use crate::config::{Connector, Relay};
use crate::mcp::jsonrpc::{self, Answer};
use crate::upstream::{Message, UpstreamSession};

/// The client capability a server-to-client method needs, for the ones the gateway
/// can relay.
pub(super) fn capability(method: &str) -> Option<&'static str> {
    match method {
        "sampling/createMessage" => Some("sampling"),
        "elicitation/create" => Some("elicitation"),
        _ => None,
    }
}

/// The client capabilities an upstream session declares: for an agent's session
/// (`agent` = what the agent declared), each relayed capability the agent declared,
/// as it declared it; for the gateway's own session (`None`), every relayed one.
pub(super) fn declared(relay: Relay, agent: Option<&Value>) -> Value {
    let mut out = serde_json::Map::new();
    for name in Relay::NAMES {
        if !relay.allows(name) {
            continue;
        }
        let value = match agent {
            None => json!({}),
            Some(agent) => match agent.get(name) {
                Some(v) if v.is_object() => v.clone(),
                _ => continue,
            },
        };
        out.insert(name.to_string(), value);
    }
    Value::Object(out)
}

/// Largest client capabilities a session keeps (JSON text of the relayable members).
const MAX_KEPT_CAPABILITIES: usize = 4096;

/// What a session keeps of the `capabilities` its agent declared: only the members
/// the gateway can relay (`sampling`, `elicitation`), and when those are larger than
/// [`MAX_KEPT_CAPABILITIES`], each as `{}` (declared, details dropped), so a session
/// never holds more than a few KB of what its agent sent.
pub(super) fn kept(declared: Option<Value>) -> Value {
    let mut out = serde_json::Map::new();
    if let Some(Value::Object(mut all)) = declared {
        for name in Relay::NAMES {
            if let Some(v @ Value::Object(_)) = all.remove(name) {
                out.insert(name.to_string(), v);
            }
        }
    }
    let mut kept = Value::Object(out);
    if kept.to_string().len() > MAX_KEPT_CAPABILITIES
        && let Value::Object(members) = &mut kept
    {
        members.values_mut().for_each(|v| *v = json!({}));
    }
    kept
}

/// Relays the server-to-client requests of one tool call (borrowing what the call
/// already holds: nothing is copied for a call that sends none).
pub(super) struct Relayer<'a> {
    pub gateway: &'a Arc<Gateway>,
    pub session: &'a Arc<AgentSession>,
    pub connector: &'a Connector,
    pub upstream: &'a Arc<UpstreamSession>,
    /// The called tool's upstream name, for the audit.
    pub tool: &'a str,
    /// Whether the agent's request accepts an SSE answer (the only way to reach it).
    pub accepts_sse: bool,
}

impl Relayer<'_> {
    /// Takes an upstream message of the call: a request is relayed to the agent through
    /// `send` (which queues JSON text on the call's stream, `false` if it cannot).
    /// Anything else, and a request that is not relayed, is given back; the upstream
    /// client answers a given-back request (`answer_unrelayed`: `{}` for `ping`,
    /// -32601 otherwise).
    pub(super) fn offer(&self, msg: Message, send: impl FnOnce(String) -> bool) -> Option<Message> {
        let Message::Request { id, method, params } = msg else {
            return Some(msg);
        };
        if method == "ping" {
            // Answered `{}` by the upstream client (`answer_unrelayed`), not audited.
            return Some(Message::Request { id, method, params });
        }
        let audited = self.audited(&method);
        if let Some(reason) = self.refusal(&method) {
            return self.refused(
                audited,
                403,
                reason,
                Message::Request { id, method, params },
            );
        }
        let Some((relay_id, answer)) = self.session.relay_request() else {
            let reason = format!(
                "{MAX_RELAYED} requests of this session already wait for the agent's answer"
            );
            return self.refused(
                audited,
                429,
                reason,
                Message::Request { id, method, params },
            );
        };
        let text = jsonrpc::request(&relay_id, &method, params.as_deref().unwrap_or(&*raw("{}")));
        if !send(text) {
            // The call's stream is gone or full: the agent cannot be asked.
            self.session.forget_relayed(&relay_id);
            let reason = "the call's stream to the agent was not available".to_string();
            return self.refused(
                audited,
                503,
                reason,
                Message::Request { id, method, params },
            );
        }
        let (session, upstream) = (self.session.clone(), self.upstream.clone());
        let gateway = self.gateway.clone();
        let limit = self.connector.timeout;
        tokio::spawn(async move {
            let (answer, status, reason) = match tokio::time::timeout(limit, answer).await {
                Ok(Ok(answer)) => (answer, 200, None),
                Ok(Err(_)) => (
                    internal_error("The client's session ended before it answered"),
                    499,
                    Some("the agent's session ended before it answered".to_string()),
                ),
                Err(_) => {
                    session.forget_relayed(&relay_id);
                    (
                        internal_error("timeout waiting for the client's answer"),
                        504,
                        Some("the agent did not answer in time".to_string()),
                    )
                }
            };
            let sent = tokio::time::timeout(limit, upstream.respond(&id, &answer)).await;
            let reason = match sent {
                Ok(Ok(())) => reason,
                Ok(Err(e)) => Some(format!("the answer could not be sent upstream: {e}")),
                Err(_) => Some(format!(
                    "the answer could not be sent upstream: {}",
                    crate::upstream::UpstreamError::Timeout
                )),
            };
            audited
                .close(&gateway.audit, status, answer.error_code(), reason)
                .await;
        });
        None
    }

    /// Why a request for `method` is not relayed (`None`: it is).
    fn refusal(&self, method: &str) -> Option<String> {
        let Some(capability) = capability(method) else {
            let method = shown(method);
            return Some(format!(
                "{method} from the upstream: the gateway relays only sampling and elicitation requests"
            ));
        };
        if !self.connector.relay.allows(capability) {
            return Some(format!(
                "{method} from the upstream: connector {} does not relay {capability} requests (relay_requests)",
                self.connector.id
            ));
        }
        if self.session.client_capabilities.get(capability).is_none() {
            return Some(format!(
                "{method} from the upstream: the agent did not declare the {capability} capability"
            ));
        }
        if !self.accepts_sse {
            return Some(format!(
                "{method} from the upstream: the agent's request does not accept an SSE stream"
            ));
        }
        None
    }

    /// Audits a request that is not relayed (from a task: `offer` cannot wait) and
    /// gives it back, to be answered -32601 upstream (`answer_unrelayed`).
    fn refused(
        &self,
        audited: Audited,
        status: u16,
        reason: String,
        request: Message,
    ) -> Option<Message> {
        let gateway = self.gateway.clone();
        let code = Some(jsonrpc::METHOD_NOT_FOUND);
        tokio::spawn(async move {
            audited
                .close(&gateway.audit, status, code, Some(reason))
                .await
        });
        Some(request)
    }

    /// The audit row of one server-to-client request: its method, and the connector
    /// and tool of the call it came in.
    fn audited(&self, method: &str) -> Audited {
        let mut audited = Audited::new(self.session, &shown(method));
        audited.connector(&self.connector.id);
        audited.tool(self.tool);
        audited
    }
}

/// An upstream's method name as audited: at most 100 characters (it is the
/// upstream's text, not the gateway's).
fn shown(method: &str) -> String {
    method.chars().take(100).collect()
}

fn raw(text: &str) -> Box<RawValue> {
    RawValue::from_string(text.to_string()).expect("valid JSON")
}

fn internal_error(message: &str) -> Answer {
    let error = jsonrpc::RpcError::new(jsonrpc::INTERNAL_ERROR, message);
    Answer::Error(raw(&error.to_value().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_agent_session_declares_what_is_relayed_and_the_agent_declared() {
        let relay = Relay {
            sampling: true,
            elicitation: false,
        };
        let agent = json!({
            "sampling": {"tools": {}},
            "elicitation": {"form": {}},
            "roots": {"listChanged": true},
        });
        assert_eq!(
            declared(relay, Some(&agent)),
            json!({"sampling": {"tools": {}}})
        );
        assert_eq!(
            declared(relay, Some(&json!({"elicitation": {}}))),
            json!({})
        );
        assert_eq!(declared(relay, Some(&Value::Null)), json!({}));
        assert_eq!(declared(relay, None), json!({"sampling": {}}));
        let both = Relay {
            sampling: true,
            elicitation: true,
        };
        assert_eq!(
            declared(both, None),
            json!({"sampling": {}, "elicitation": {}})
        );
        assert_eq!(declared(Relay::default(), None), json!({}));
    }

    #[test]
    fn a_session_keeps_only_small_relayable_capabilities() {
        let caps = json!({"sampling": {"tools": {}}, "roots": {"listChanged": true},
                          "elicitation": true, "experimental": {"x": 1}});
        assert_eq!(kept(Some(caps)), json!({"sampling": {"tools": {}}}));
        assert_eq!(kept(None), json!({}));
        assert_eq!(kept(Some(json!("nope"))), json!({}));
        let big = json!({"elicitation": {"pad": "x".repeat(10_000)}, "sampling": {}});
        assert_eq!(kept(Some(big)), json!({"elicitation": {}, "sampling": {}}));
    }

    #[test]
    fn only_sampling_and_elicitation_are_relayable() {
        assert_eq!(capability("sampling/createMessage"), Some("sampling"));
        assert_eq!(capability("elicitation/create"), Some("elicitation"));
        assert_eq!(capability("roots/list"), None);
        assert_eq!(capability("tasks/get"), None);
    }
}
