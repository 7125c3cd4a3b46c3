//! The governed-request pipeline: every request the gateway governs goes through the
//! same named stages, and every exit, at whatever stage, ends the same way.
//!
//! ```text
//! resolve → decide → admit → forward → check → reply and record
//! ```
//!
//! - **resolve**: what the request is about (connector, tool, list), or -32601/-32602;
//! - **decide**: the policy chain's hook for the method; a denial stops here;
//! - **admit**: [`Gateway::admit`], the session is still open and the org's quota has
//!   room (methods that do not count skip it);
//! - **forward**: the upstream exchange (methods served from the catalog skip it);
//! - **check**: the post-call hook over what came back;
//! - **reply and record**: [`Governed::finish`] writes the audit row (status, code,
//!   reason, latency) and the JSON-RPC reply, for results and refusals alike.
//!
//! A method module (`list.rs`, `call.rs`) supplies its own resolve, decide and
//! forward parts as functions returning [`Stage`]; a refusal at any of them is a
//! [`Refusal`], and `?` carries it to the one place that answers it. Adding a
//! governed method means writing those parts, not another copy of the flow.

use std::time::Instant;

use serde_json::Value;

use super::sessions::AgentSession;
use super::{Gateway, Reply};
use crate::audit::{AuditLog, Record, now_ms};
use crate::auth::Identity;
use crate::mcp::jsonrpc::{self, RpcError};
use crate::policy::{Chain, Decision, Denial};
use crate::quota::Verdict;

/// The quota message agents get (docs/behaviour.md, "Behaviour agents see").
pub(super) const QUOTA_MESSAGE: &str = "API quota exceeded. Upgrade your plan to continue.";

/// The outcome of one stage: its product, or why the request stops there.
pub(super) type Stage<T> = Result<T, Refusal>;

/// Why a governed request stops: the error the agent gets, and what the audit row
/// says (the status, and a reason only the operator sees). Boxed, so a stage's
/// `Result` stays small on the path where nothing is refused.
#[derive(Debug)]
pub(super) struct Refusal(Box<Refused>);

#[derive(Debug)]
struct Refused {
    error: RpcError,
    status: u16,
    reason: Option<String>,
}

impl Refusal {
    pub(super) fn new(error: RpcError, status: u16) -> Refusal {
        Refusal(Box::new(Refused {
            error,
            status,
            reason: None,
        }))
    }

    /// The same refusal, with the reason the audit row gives.
    pub(super) fn because(mut self, reason: impl Into<String>) -> Refusal {
        self.0.reason = Some(reason.into());
        self
    }

    /// The same refusal, its audit reason prefixed with another fact (`fact; reason`).
    pub(super) fn also(mut self, fact: String) -> Refusal {
        self.0.reason = Some(match self.0.reason.take() {
            Some(reason) => format!("{fact}; {reason}"),
            None => fact,
        });
        self
    }

    /// A request on a session that ended (DELETE, expiry) while it was on its way.
    pub(super) fn session_ended() -> Refusal {
        let error = RpcError::new(
            jsonrpc::INVALID_REQUEST,
            "Session not found; initialize a new session",
        );
        Refusal::new(error, 404).because("session ended")
    }

    /// A call whose connector a reload removed while it was on its way.
    pub(super) fn connector_removed(connector: &str) -> Refusal {
        Refusal::new(RpcError::tool_not_found(), 404)
            .because(format!("connector {connector} was removed by a reload"))
    }
}

impl From<Denial> for Refusal {
    fn from(d: Denial) -> Refusal {
        Refusal::new(RpcError::new(d.code, d.message), d.status).because(d.reason)
    }
}

/// How a governed request ended.
pub(super) enum End {
    /// A result: the `result` member's JSON text.
    Result(String),
    /// A JSON-RPC error object the upstream answered, relayed as it is (the request
    /// itself succeeded: status 200, the error's code audited).
    Relayed(Value),
    /// Stopped at some stage.
    Refused(Refusal),
    /// Cancelled by the agent: audited 499, and no reply.
    Cancelled,
}

impl From<Stage<String>> for End {
    fn from(stage: Stage<String>) -> End {
        match stage {
            Ok(result) => End::Result(result),
            Err(refusal) => End::Refused(refusal),
        }
    }
}

/// One audit row in the making: filled in as the request goes through its stages
/// and written once, by [`Audited::close`], whatever the exit.
pub(super) struct Audited {
    record: Record,
    started: Instant,
}

impl Audited {
    pub(super) fn new(session: &AgentSession, method: &str) -> Audited {
        let mut audited = Audited::for_agent(&session.identity(), method);
        audited.record.session_id = Some(session.id.clone());
        audited
    }

    /// A row for a request of `identity` that has no session (yet).
    pub(super) fn for_agent(identity: &Identity, method: &str) -> Audited {
        let record = Record {
            time_ms: now_ms(),
            request_id: super::new_request_id(),
            session_id: None,
            org: identity.org.clone(),
            agent: identity.agent.clone(),
            connector: None,
            tool: None,
            method: method.to_string(),
            status: 200,
            rpc_code: None,
            latency_ms: 0.0,
            policy: None,
            policy_digest: None,
            reason: None,
        };
        Audited {
            record,
            started: Instant::now(),
        }
    }

    /// The connector the request goes to.
    pub(super) fn connector(&mut self, id: &str) {
        self.record.connector = Some(id.to_string());
    }

    /// The tool the request names (as the agent wrote it until it is resolved, then
    /// the upstream's name), bounded (`text::bounded`): the agent chose it.
    pub(super) fn tool(&mut self, name: &str) {
        self.record.tool = Some(crate::text::bounded(name).into_owned());
    }

    /// The policy (or chain) that decided, and its digest.
    pub(super) fn decided(&mut self, policy: &str, digest: &str) {
        self.record.policy = Some(policy.to_string());
        self.record.policy_digest = Some(digest.to_string());
    }

    /// A reason on a request that still succeeds (a result rewritten by a policy).
    pub(super) fn note(&mut self, reason: String) {
        self.record.reason = Some(reason);
    }

    /// Writes the row: its status, JSON-RPC code, reason (kept if already noted and
    /// none is given) and latency.
    pub(super) async fn close(
        mut self,
        audit: &AuditLog,
        status: u16,
        rpc_code: Option<i64>,
        reason: Option<String>,
    ) {
        self.record.status = status;
        self.record.rpc_code = rpc_code;
        if let Some(reason) = reason {
            self.record.reason = Some(bound_reason(reason));
        }
        self.record.latency_ms = self.started.elapsed().as_secs_f64() * 1000.0;
        audit.record(self.record).await;
    }
}

/// The most bytes of an audit reason kept (`text::bounded_to`).
const MAX_REASON: usize = 1024;

fn bound_reason(reason: String) -> String {
    match crate::text::bounded_to(&reason, MAX_REASON) {
        std::borrow::Cow::Borrowed(_) => reason,
        std::borrow::Cow::Owned(shown) => shown,
    }
}

/// A governed request: the agent's request id and its audit row in the making.
pub(super) struct Governed {
    id: Value,
    pub(super) audited: Audited,
}

impl Governed {
    pub(super) fn start(session: &AgentSession, method: &str, id: Value) -> Governed {
        Governed {
            id,
            audited: Audited::new(session, method),
        }
    }

    pub(super) fn id(&self) -> &Value {
        &self.id
    }

    /// The decide stage's bookkeeping: records who decided and turns a denial into
    /// the request's refusal.
    pub(super) fn decide(&mut self, decision: Decision) -> Stage<Decision> {
        self.audited.decided(&decision.policy, &decision.digest);
        match decision.denial {
            Some(denial) => Err(denial.into()),
            None => Ok(decision),
        }
    }

    /// Records that the whole chain decided (list filtering, where every policy
    /// had its say).
    pub(super) fn decided_by_chain(&mut self, chain: &Chain) {
        self.audited.decided(&chain.names, &chain.digest);
    }

    /// The last stage: writes the audit row and returns the reply's JSON text
    /// (`None` for a cancelled request, which gets no reply).
    pub(super) async fn finish(self, audit: &AuditLog, end: End) -> Option<String> {
        let id = &self.id;
        let (text, status, code, reason) = match end {
            End::Result(body) => (
                Some(jsonrpc::response(id, jsonrpc::Member::Result, &body)),
                200,
                None,
                None,
            ),
            End::Relayed(error) => {
                let code = error.get("code").and_then(Value::as_i64);
                (Some(jsonrpc::error_object(id, &error)), 200, code, None)
            }
            End::Refused(Refusal(r)) => (
                Some(jsonrpc::error(Some(id), &r.error)),
                r.status,
                Some(r.error.code),
                r.reason,
            ),
            End::Cancelled => (None, 499, None, Some("cancelled by the client".into())),
        };
        self.audited.close(audit, status, code, reason).await;
        text
    }

    /// [`Governed::finish`] for a request answered in one piece.
    pub(super) async fn reply(self, audit: &AuditLog, end: End) -> Reply {
        let id = self.id.clone();
        match self.finish(audit, end).await {
            Some(text) => Reply::Json(text),
            None => Reply::Json(jsonrpc::error(
                Some(&id),
                &RpcError::new(jsonrpc::INTERNAL_ERROR, "Request cancelled"),
            )),
        }
    }
}

impl Gateway {
    /// The admit stage: the session is still open (a request whose session ended
    /// while its policies ran is refused here, so it uses no quota) and the org's
    /// quota counts the request.
    pub(super) async fn admit(&self, session: &AgentSession) -> Stage<()> {
        if session.has_ended() {
            return Err(Refusal::session_ended());
        }
        let identity = session.identity();
        let org = &identity.org;
        match self.quota.check(org).await {
            Verdict::Allowed { .. } | Verdict::Unlimited | Verdict::UnavailableAllowed(_) => Ok(()),
            Verdict::Exceeded { limit } => {
                let error = RpcError::new(jsonrpc::QUOTA_EXCEEDED, QUOTA_MESSAGE);
                Err(Refusal::new(error, 429).because(format!("org {org} used its {limit} calls")))
            }
            Verdict::Unavailable(e) => {
                let error = RpcError::new(
                    jsonrpc::INTERNAL_ERROR,
                    "Quota service unavailable; try again later",
                );
                Err(Refusal::new(error, 503).because(format!("quota backend unavailable: {e}")))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_denial_becomes_the_refusal_with_its_code_message_status_and_reason() {
        let Refusal(r) = Denial {
            code: -32003,
            message: "Insufficient scope".into(),
            reason: "agent lacks scope x".into(),
            status: 403,
        }
        .into();
        assert_eq!(r.error, RpcError::new(-32003, "Insufficient scope"));
        assert_eq!(
            (r.status, r.reason.as_deref()),
            (403, Some("agent lacks scope x"))
        );
    }

    #[test]
    fn a_finished_stage_is_a_result_or_a_refusal() {
        assert!(matches!(End::from(Ok("{}".to_string())), End::Result(t) if t == "{}"));
        let refused = End::from(Err(Refusal::session_ended()));
        let End::Refused(Refusal(r)) = refused else {
            panic!("a refusal")
        };
        assert_eq!((r.status, r.error.code), (404, jsonrpc::INVALID_REQUEST));
        assert_eq!(
            jsonrpc::error(Some(&json!(3)), &r.error),
            r#"{"jsonrpc":"2.0","id":3,"error":{"code":-32600,"message":"Session not found; initialize a new session"}}"#
        );
    }
}
