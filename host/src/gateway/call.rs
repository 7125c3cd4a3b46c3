//! `tools/call`: route by name, check with the policy chain, forward over the
//! session's upstream session, relay what comes back.
//!
//! The failure table of the source document:
//! - 2xx with a JSON-RPC result: the result is forwarded byte for byte;
//! - 2xx with a JSON-RPC error: the error (code, message, data) is forwarded;
//! - non-2xx HTTP: -32603, audited 502;
//! - timeout: -32603 "timeout", audited 504 (and the upstream is told to cancel);
//! - unknown or hidden tool: -32601 "Tool not found", audited 404.
//!
//! Progress and other notifications the upstream sends while the call runs are relayed
//! to the agent as SSE; `notifications/cancelled` from the agent is forwarded upstream
//! with the upstream's request id.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use super::catalog::ToolSet;
use super::relay::Relayer;
use super::sessions::{AgentSession, Endpoint, InFlight};
use super::{Gateway, Reply, decide, names};
use crate::audit::{Record, now_ms};
use crate::config::Connector;
use crate::mcp::jsonrpc::{self, RpcError};
use crate::mcp::params::{self, Params};
use crate::quota::Verdict;
use crate::telemetry;
use crate::upstream::{Message, Outcome, UpstreamError};

/// How old a cached tool list must be before a call to a tool missing from it
/// triggers a re-fetch.
const MIN_REFETCH: std::time::Duration = std::time::Duration::from_secs(1);

/// The source document's exact quota message.
pub const QUOTA_MESSAGE: &str = "API quota exceeded. Upgrade your plan to continue.";

/// What the forwarding task sends to the request handler.
enum Event {
    /// A message for the agent before the answer: an upstream notification, or a
    /// server-to-client request relayed to it (`relay.rs`).
    Message(String),
    Final(String),
}

impl Gateway {
    pub(super) async fn tools_call(
        self: &Arc<Self>,
        session: &Arc<AgentSession>,
        id: Value,
        params: Params,
        accepts_sse: bool,
    ) -> Reply {
        let started = Instant::now();
        let mut record = self.record(session, "tools/call", started, now_ms());
        let fail =
            async |mut record: Record, err: RpcError, status: u16, reason: Option<String>| {
                record.status = status;
                record.rpc_code = Some(err.code);
                record.reason = reason;
                record.latency_ms = started.elapsed().as_secs_f64() * 1000.0;
                self.audit.record(record).await;
                Reply::Json(jsonrpc::error(Some(&id), &err))
            };

        // The call is forwarded as the agent wrote it, member by member (`params`); only
        // `name` is read here, and replaced below.
        let members = params.members();
        let Some((mut forward, name)) =
            members.and_then(|m| params::member::<String>(&m, "name").map(|n| (m, n)))
        else {
            let err = RpcError::new(
                jsonrpc::INVALID_PARAMS,
                "Invalid params: \"name\" must be a string",
            );
            return fail(record, err, 400, None).await;
        };
        record.tool = Some(name.clone());
        let Some((connector, tool_name)) = self.route(&session.endpoint, &name) else {
            return fail(
                record,
                RpcError::tool_not_found(),
                404,
                Some(format!("no connector for tool name {name}")),
            )
            .await;
        };
        record.connector = Some(connector.id.clone());
        record.tool = Some(tool_name.to_string());

        // A tool missing from the cached list may have been added upstream since it was
        // fetched: look once more with a fresh list before saying it does not exist.
        let mut fresh = false;
        let set = loop {
            match self.catalog.tools(&connector.id).await {
                // At most one re-fetch per second and connector, so calls to unknown
                // tools cannot make the gateway re-list the upstream on every request.
                Ok(set)
                    if set.get(tool_name).is_none()
                        && !fresh
                        && set.fetched.elapsed() >= MIN_REFETCH =>
                {
                    fresh = true;
                    self.catalog.invalidate(&connector.id);
                }
                Ok(set) => break set,
                Err(e) => {
                    let status = e.audit_status();
                    return fail(record, upstream_error(&e), status, Some(e.to_string())).await;
                }
            }
        };
        let Some(tool) = set.position(tool_name) else {
            return fail(
                record,
                RpcError::tool_not_found(),
                404,
                Some(format!("upstream has no tool {tool_name}")),
            )
            .await;
        };

        let chain = self.policy.current();
        let arguments = forward
            .get("arguments")
            .map(|a| a.get().to_string())
            .unwrap_or_else(|| "{}".into());
        let owned = self.owned(&session.identity, &connector, &set);
        let decision = decide::check_call(&chain, owned, tool, arguments).await;
        record.policy = Some(decision.policy.clone());
        record.policy_digest = Some(decision.digest.clone());
        if let Some(d) = decision.denial {
            return fail(
                record,
                RpcError::new(d.code, d.message),
                d.status,
                Some(d.reason),
            )
            .await;
        }
        // The agent ended the session (DELETE) while the policies ran: refused before
        // the quota check, so the call uses none of the org's quota.
        if session.has_ended() {
            return fail(record, session_ended(), 404, Some("session ended".into())).await;
        }
        match self.quota.check(&session.identity.org).await {
            Verdict::Allowed { .. } | Verdict::Unlimited | Verdict::UnavailableAllowed(_) => {}
            Verdict::Exceeded { limit } => {
                let err = RpcError::new(jsonrpc::QUOTA_EXCEEDED, QUOTA_MESSAGE);
                let reason = format!("org {} used its {limit} calls", session.identity.org);
                return fail(record, err, 429, Some(reason)).await;
            }
            Verdict::Unavailable(e) => {
                let err = RpcError::new(
                    jsonrpc::INTERNAL_ERROR,
                    "Quota service unavailable; try again later",
                );
                return fail(
                    record,
                    err,
                    503,
                    Some(format!("quota backend unavailable: {e}")),
                )
                .await;
            }
        }

        // The session ended during the quota check (`upstream` makes no upstream
        // session for an ended one).
        let Some(upstream) = self.upstream(session, &connector) else {
            return fail(record, session_ended(), 404, Some("session ended".into())).await;
        };
        // Forward: the agent's params, with the upstream's name for the tool.
        forward.insert("name".to_string(), params::to_raw(tool_name));
        let upstream_id = upstream.next_request_id();
        let up_span = telemetry::spans::upstream(&connector, tool_name, upstream_id);
        telemetry::traces::inject_meta(&up_span, &mut forward);
        let (cancel_tx, cancel_rx) = oneshot::channel();
        session.start_request(&id, InFlight { cancel: cancel_tx });

        let (tx, mut rx) = mpsc::channel::<Event>(64);
        let gateway = self.clone();
        let session2 = session.clone();
        let tools = set.clone();
        let id2 = id.clone();
        let forward = async move {
            let relay = tx.clone();
            let catalog = gateway.catalog.clone();
            let connector_id = connector.id.clone();
            let relayer = Relayer {
                gateway: &gateway,
                session: &session2,
                connector: &connector,
                upstream: &upstream,
                tool: ToolSet::name(&tools.tools[tool]),
                accepts_sse,
            };
            let on_message = move |msg: Message| {
                if super::catalog::is_list_changed(&msg) {
                    catalog.invalidate(&connector_id);
                    return None;
                }
                match msg {
                    Message::Notification { method, params } => {
                        let text = jsonrpc::notification(&method, params.as_deref());
                        let _ = relay.try_send(Event::Message(text));
                        None
                    }
                    other => {
                        relayer.offer(other, |text| relay.try_send(Event::Message(text)).is_ok())
                    }
                }
            };
            let call = upstream.request(upstream_id, "tools/call", &forward, on_message);
            let (call, sent) = (call.instrument(up_span.clone()), Instant::now());
            let outcome = tokio::select! {
                r = tokio::time::timeout(connector.timeout, call) => r.unwrap_or(Err(UpstreamError::Timeout)),
                // Only an agent's cancel counts: a sender dropped because a second call
                // reused this id (or the entry was cleared) must not end this call.
                Ok(()) = cancel_rx => Err(UpstreamError::Cancelled),
            };
            session2.finish_request(&id2);
            telemetry::spans::upstream_done(&up_span, &connector.id, &outcome, sent.elapsed());
            if matches!(
                outcome,
                Err(UpstreamError::Timeout | UpstreamError::Cancelled)
            ) {
                let reason = if matches!(outcome, Err(UpstreamError::Timeout)) {
                    "timeout"
                } else {
                    "cancelled by the client"
                };
                let up = upstream.clone();
                let limit = connector.timeout;
                tokio::spawn(async move {
                    // Bounded: an upstream that stopped answering must not keep this task
                    // (and the session's state lock it may wait for) forever.
                    let params = json!({"requestId": upstream_id, "reason": reason});
                    let notify = up.notify("notifications/cancelled", &params);
                    let _ = tokio::time::timeout(limit, notify).await;
                });
            }
            let owned = gateway.owned(&session2.identity, &connector, &tools);
            let text = Gateway::finish(&mut record, &id2, outcome, &chain, owned, tool).await;
            record.latency_ms = started.elapsed().as_secs_f64() * 1000.0;
            gateway.audit.record(record).await;
            if let Some(text) = text {
                let _ = tx.send(Event::Final(text)).await;
            }
        };
        let mut forward = Detachable::new(forward.in_current_span());
        // Drive the call here (no task hop) until it finishes or sends something
        // first; then it continues as a task of its own. Dropped mid-call (the agent
        // went away), it continues too: it still ends upstream and is audited.
        let first = tokio::select! {
            biased;
            () = forward.run() => None,
            ev = rx.recv() => ev,
        };
        let first = match first {
            Some(ev) => {
                forward.detach();
                Some(ev)
            }
            None => rx.recv().await,
        };

        // Plain JSON unless the upstream sends notifications before its answer.
        match first {
            Some(Event::Final(text)) => Reply::Json(text),
            Some(Event::Message(first)) if accepts_sse => {
                let (out_tx, out_rx) = mpsc::channel(64);
                tokio::spawn(async move {
                    if out_tx.send(first).await.is_err() {
                        return;
                    }
                    while let Some(ev) = rx.recv().await {
                        let (Event::Message(t) | Event::Final(t)) = ev;
                        if out_tx.send(t).await.is_err() {
                            return;
                        }
                    }
                });
                Reply::Stream(out_rx)
            }
            Some(Event::Message(_)) => loop {
                match rx.recv().await {
                    Some(Event::Final(text)) => break Reply::Json(text),
                    Some(Event::Message(_)) => continue,
                    None => break cancelled(&id, accepts_sse),
                }
            },
            None => cancelled(&id, accepts_sse),
        }
    }

    /// Resolves a tool name on an endpoint to its connector and upstream name.
    fn route<'n>(&self, endpoint: &Endpoint, name: &'n str) -> Option<(Arc<Connector>, &'n str)> {
        match endpoint {
            Endpoint::All => {
                let (slug, tool) = names::split(name, &self.config.server.tool_separator)?;
                Some((self.by_slug.get(slug)?.clone(), tool))
            }
            Endpoint::One(id) => Some((self.by_id.get(id)?.clone(), name)),
        }
    }

    /// Turns the upstream outcome into the agent's response text (`None`: no response,
    /// the request was cancelled) and completes the audit record.
    async fn finish(
        record: &mut Record,
        id: &Value,
        outcome: Result<Outcome, UpstreamError>,
        chain: &Arc<crate::policy::Chain>,
        owned: decide::Owned,
        tool: usize,
    ) -> Option<String> {
        match outcome {
            Ok(Outcome::Result(raw)) => {
                if !chain.checks_results() {
                    return Some(jsonrpc::raw_result(id, &raw));
                }
                let decision =
                    decide::check_result(chain, owned, tool, raw.get().to_string()).await;
                if let Some(d) = decision.denial {
                    record.status = d.status;
                    record.rpc_code = Some(d.code);
                    record.reason = Some(d.reason);
                    record.policy = Some(decision.policy);
                    record.policy_digest = Some(decision.digest);
                    return Some(jsonrpc::error(Some(id), &RpcError::new(d.code, d.message)));
                }
                match decision.replacement {
                    Some(new) => {
                        record.reason = Some(format!(
                            "result rewritten by policy chain {}",
                            decision.policy
                        ));
                        let value: Value = serde_json::from_str(&new).unwrap_or(Value::Null);
                        Some(jsonrpc::result(id, &value))
                    }
                    None => Some(jsonrpc::raw_result(id, &raw)),
                }
            }
            Ok(Outcome::Error(err)) => {
                record.rpc_code = err.get("code").and_then(Value::as_i64);
                Some(json!({"jsonrpc": "2.0", "id": id, "error": err}).to_string())
            }
            Err(UpstreamError::Cancelled) => {
                record.status = 499;
                record.reason = Some("cancelled by the client".into());
                None
            }
            Err(e) => {
                let err = upstream_error(&e);
                record.status = e.audit_status();
                record.rpc_code = Some(err.code);
                record.reason = Some(e.to_string());
                tracing::warn!(connector = record.connector.as_deref().unwrap_or("-"), kind = e.kind(), error = %e, "upstream call failed");
                Some(jsonrpc::error(Some(id), &err))
            }
        }
    }
}

/// A call's forwarding future: polled in place while the request handler waits for
/// it, spawned as a task when it must outlive that (the answer streams as SSE, or
/// the handler is dropped because the agent disconnected).
struct Detachable(Option<Pin<Box<dyn Future<Output = ()> + Send + 'static>>>);

impl Detachable {
    fn new(f: impl Future<Output = ()> + Send + 'static) -> Self {
        Detachable(Some(Box::pin(f)))
    }

    /// Runs the future to its end (at once if it already ended).
    async fn run(&mut self) {
        if let Some(f) = self.0.as_mut() {
            f.as_mut().await;
            self.0 = None;
        }
    }

    /// Hands what is left of the future to the runtime.
    fn detach(&mut self) {
        if let Some(f) = self.0.take()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            rt.spawn(f);
        }
    }
}

impl Drop for Detachable {
    fn drop(&mut self) {
        self.detach();
    }
}

/// The agent-facing error for an upstream failure. Never includes credentials: the
/// messages are built from status codes and transport errors only.
fn upstream_error(e: &UpstreamError) -> RpcError {
    match e {
        UpstreamError::Timeout => RpcError::new(jsonrpc::INTERNAL_ERROR, "timeout"),
        UpstreamError::Credential(_) => {
            RpcError::new(jsonrpc::INTERNAL_ERROR, "Upstream credential unavailable")
        }
        UpstreamError::Status(s) => {
            let mut err = RpcError::new(
                jsonrpc::INTERNAL_ERROR,
                format!("Upstream returned HTTP {s}"),
            );
            err.data = Some(json!({"upstreamStatus": s}));
            err
        }
        other => RpcError::new(jsonrpc::INTERNAL_ERROR, format!("Upstream error: {other}")),
    }
}

/// The answer to a call whose session ended while it was on its way.
fn session_ended() -> RpcError {
    RpcError::new(
        jsonrpc::INVALID_REQUEST,
        "Session not found; initialize a new session",
    )
}

/// What a cancelled request's HTTP exchange ends with: an empty SSE stream, or for
/// a JSON-only client an error, since it must get some answer.
fn cancelled(id: &Value, accepts_sse: bool) -> Reply {
    if accepts_sse {
        let (_tx, rx) = mpsc::channel(1);
        Reply::Stream(rx)
    } else {
        Reply::Json(jsonrpc::error(
            Some(id),
            &RpcError::new(jsonrpc::INTERNAL_ERROR, "Request cancelled"),
        ))
    }
}
