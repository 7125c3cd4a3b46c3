//! `tools/call`: route by name, check with the policy chain, forward over the
//! session's upstream session, relay what comes back.
//!
//! The failure table (docs/behaviour.md, "Behaviour agents see"):
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

use super::catalog::{ItemSet, Kind};
use super::limits::Permit;
use super::pipeline::{End, Governed, Refusal, Stage};
use super::relay::Relayer;
use super::sessions::{AgentSession, Endpoint, InFlight};
use super::{Gateway, Reply, decide, names};
use crate::config::Connector;
use crate::mcp::jsonrpc::{self, RpcError};
use crate::mcp::params::{self, Members, Params};
use crate::policy::Chain;
use crate::telemetry;
use crate::upstream::{Message, Outcome, UpstreamError, UpstreamSession};

/// What the forwarding task sends to the request handler.
enum Event {
    /// A message for the agent before the answer: an upstream notification, or a
    /// server-to-client request relayed to it (`relay.rs`).
    Message(String),
    Final(String),
}

/// A call resolved to its connector and tool.
struct Target {
    connector: Arc<Connector>,
    set: Arc<ItemSet>,
    /// The tool's position in `set`.
    position: usize,
    /// The agent's params as written, member by member; only `name` is replaced.
    members: Members,
}

/// An admitted call, ready to forward.
struct Call {
    target: Target,
    chain: Arc<Chain>,
    upstream: Arc<UpstreamSession>,
    /// The agent's request permit, held until the call ends.
    permit: Option<Permit>,
}

impl Target {
    /// The tool's upstream name.
    fn tool(&self) -> &str {
        ItemSet::name(&self.set.items[self.position])
    }
}

impl Gateway {
    /// `tools/call`: resolve → decide → admit, then forward → check → reply and
    /// record in the forwarding future (`forward`), which may outlive this handler.
    pub(super) async fn tools_call(
        self: &Arc<Self>,
        session: &Arc<AgentSession>,
        id: Value,
        params: Params,
        accepts_sse: bool,
        permit: Option<Permit>,
    ) -> Reply {
        let mut governed = Governed::start(session, "tools/call", id);
        let call = match self
            .admit_call(&mut governed, session, &params, permit)
            .await
        {
            Ok(call) => call,
            Err(refusal) => return governed.reply(&self.audit, End::Refused(refusal)).await,
        };
        self.forward(governed, session, call, accepts_sse).await
    }

    /// The stages before anything leaves the gateway: resolve the tool, let the
    /// chain decide, admit (session still open, quota), and find the session's
    /// upstream session for the connector.
    async fn admit_call(
        &self,
        governed: &mut Governed,
        session: &AgentSession,
        params: &Params,
        permit: Option<Permit>,
    ) -> Stage<Call> {
        let target = self.resolve_tool(governed, session, params).await?;
        let chain = self.decide_call(governed, session, &target).await?;
        self.admit(session).await?;
        // The session ended during the quota check (`upstream` makes no upstream
        // session for an ended one), or a reload removed the connector.
        let upstream = self.upstream(session, &target.connector)?;
        Ok(Call {
            target,
            chain,
            upstream,
            permit,
        })
    }

    /// The decide stage: the chain's `check-call` over the tool and the agent's
    /// arguments (as written). The chain is loaded once here and the call finishes
    /// on it, whatever reloads meanwhile.
    async fn decide_call(
        &self,
        governed: &mut Governed,
        session: &AgentSession,
        target: &Target,
    ) -> Stage<Arc<Chain>> {
        let chain = self.policy.current();
        let owned = self.owned(&session.identity(), &target.connector, &target.set);
        let tool = decide::Called::Listed(target.position);
        let decision = decide::check_call(&chain, owned, tool, arguments(&target.members)).await;
        governed.decide(decision)?;
        Ok(chain)
    }

    /// The resolve stage: the tool's connector (by prefix on `/mcp`) and its entry in
    /// the connector's list. A name the cached list lacks is first put to the chain
    /// (`refuse_unlisted`): scope is decided before existence, so an agent the chain
    /// refuses gets the same answer whether the tool exists or not, and cannot make
    /// the gateway list the upstream again. Otherwise the list is fetched again
    /// (`Catalog::refetch`: rate-limited, and a list that came back unchanged changes
    /// nothing) before the tool is called unknown.
    async fn resolve_tool(
        &self,
        governed: &mut Governed,
        session: &AgentSession,
        params: &Params,
    ) -> Stage<Target> {
        let named = params
            .members()
            .and_then(|m| params::member::<String>(&m, "name").map(|n| (m, n)));
        let Some((members, name)) = named else {
            let error = RpcError::new(
                jsonrpc::INVALID_PARAMS,
                "Invalid params: \"name\" must be a string",
            );
            return Err(Refusal::new(error, 400));
        };
        governed.audited.tool(&name);
        let Some((connector, tool)) = self.route(&session.endpoint, &name) else {
            let shown = crate::text::bounded(&name);
            return Err(not_found().because(format!("no connector for tool name {shown}")));
        };
        governed.audited.connector(&connector.id);
        governed.audited.tool(tool);
        let set = self
            .catalog
            .tools(&connector.id)
            .await
            .map_err(unavailable)?;
        if let Some(position) = set.position(tool) {
            return Ok(Target {
                connector,
                set,
                position,
                members,
            });
        }
        self.refuse_unlisted(governed, session, &connector, &set, tool, &members)
            .await?;
        let set = self
            .catalog
            .refetch(&connector.id, Kind::Tools)
            .await
            .map_err(unavailable)?;
        let Some(position) = set.position(tool) else {
            let shown = crate::text::bounded(tool);
            return Err(not_found().because(format!("upstream has no tool {shown}")));
        };
        Ok(Target {
            connector,
            set,
            position,
            members,
        })
    }

    /// Puts a call to a tool the list lacks to the chain, with a stand-in for the
    /// tool (`{"name": ...}`): a denial (scope, a blocklist pattern, ...) is the
    /// answer, exactly as it would be for a listed tool; its audit reason says the
    /// tool does not exist too.
    async fn refuse_unlisted(
        &self,
        governed: &mut Governed,
        session: &AgentSession,
        connector: &Arc<Connector>,
        set: &Arc<ItemSet>,
        tool: &str,
        members: &Members,
    ) -> Stage<()> {
        let chain = self.policy.current();
        let owned = self.owned(&session.identity(), connector, set);
        let stand_in = decide::Called::Unlisted(json!({ "name": tool }));
        let decision = decide::check_call(&chain, owned, stand_in, arguments(members)).await;
        governed.decide(decision).map(drop).map_err(|refusal| {
            let shown = crate::text::bounded(tool);
            refusal.also(format!("upstream has no tool {shown}"))
        })
    }

    /// The forward stage and after: sends the call upstream with the session's
    /// upstream session, relays what the upstream sends meanwhile, and ends with
    /// the check stage (`check`) and reply-and-record (`Governed::finish`). The exchange is driven
    /// here (no task hop) until it finishes or has something to send first; then it
    /// continues as a task of its own. Dropped mid-call (the agent went away), it
    /// continues too: it still ends upstream and is audited.
    async fn forward(
        self: &Arc<Self>,
        mut governed: Governed,
        session: &Arc<AgentSession>,
        call: Call,
        accepts_sse: bool,
    ) -> Reply {
        let Call {
            mut target,
            chain,
            upstream,
            permit,
        } = call;
        let id = governed.id().clone();
        let upstream_id = upstream.next_request_id();
        let name = params::to_raw(target.tool());
        target.members.insert("name".to_string(), name);
        let up_span = telemetry::spans::upstream(&target.connector, target.tool(), upstream_id);
        telemetry::traces::inject_meta(&up_span, &mut target.members);
        let (cancel_tx, cancel_rx) = oneshot::channel();
        session.start_request(&id, InFlight { cancel: cancel_tx });

        let redactor = chain.redacts_messages().then(|| Redactor {
            chain: chain.clone(),
            owned: self.owned(&session.identity(), &target.connector, &target.set),
            tool: target.position,
        });
        let (tx, mut rx) = mpsc::channel::<Event>(64);
        let gateway = self.clone();
        let session = session.clone();
        let exchange = async move {
            // The agent's request counts as in flight until the call ends, even when
            // the agent has gone (`gateway::limits`).
            let _permit = permit;
            let relay = tx.clone();
            let catalog = gateway.catalog.clone();
            let connector = &target.connector;
            let connector_id = connector.id.clone();
            let relayer = Relayer {
                gateway: &gateway,
                session: &session,
                connector,
                upstream: &upstream,
                tool: target.tool(),
                accepts_sse,
            };
            let on_message = move |msg: Message| {
                if let Some(kinds) = super::catalog::list_changed(&msg) {
                    catalog.invalidate_kinds(&connector_id, kinds);
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
            let call = upstream.request(upstream_id, "tools/call", &target.members, on_message);
            let (call, sent) = (call.instrument(up_span.clone()), Instant::now());
            let outcome = tokio::select! {
                r = tokio::time::timeout(connector.timeout, call) => r.unwrap_or(Err(UpstreamError::Timeout)),
                // Only an agent's cancel counts: a sender dropped because a second call
                // reused this id (or the entry was cleared) must not end this call.
                Ok(()) = cancel_rx => Err(UpstreamError::Cancelled),
            };
            session.finish_request(governed.id());
            let end = crate::upstream::span_end(&outcome);
            let took = sent.elapsed();
            telemetry::spans::upstream_done(&up_span, &connector.id, "tools/call", end, took);
            tell_cancelled(&upstream, upstream_id, connector, &outcome);
            let owned = gateway.owned(&session.identity(), connector, &target.set);
            let end = check(
                &mut governed,
                &connector.id,
                outcome,
                &chain,
                owned,
                Hook::Tool(target.position),
            )
            .await;
            let end = qualified(&session.endpoint, &connector.slug, end);
            if let Some(text) = governed.finish(&gateway.audit, end).await {
                let _ = tx.send(Event::Final(text)).await;
            }
        };
        let mut exchange = Detachable::new(exchange.in_current_span());
        let first = tokio::select! {
            biased;
            () = exchange.run() => None,
            ev = rx.recv() => ev,
        };
        let first = match first {
            Some(ev) => {
                exchange.detach();
                Some(ev)
            }
            None => rx.recv().await,
        };
        answer(first, rx, &id, accepts_sse, redactor).await
    }

    /// Resolves a tool name on an endpoint to its connector and upstream name.
    fn route<'n>(&self, endpoint: &Endpoint, name: &'n str) -> Option<(Arc<Connector>, &'n str)> {
        match endpoint {
            Endpoint::All => {
                let (slug, tool) = names::split(name, &self.config.server.tool_separator)?;
                Some((self.connectors.load().by_slug.get(slug)?.clone(), tool))
            }
            Endpoint::One(id) => Some((self.connector(id)?, name)),
        }
    }
}

/// What the check stage's result hook is about.
pub(super) enum Hook {
    /// A `tools/call` of the tool at this position (`check-result`).
    Tool(usize),
    /// A `resources/read` or `prompts/get` (their result hooks), or nothing to hook
    /// (`None`: a completion); the item's name or URI names it to the redaction of
    /// errors.
    Item(Option<decide::Hooked>, String),
}

/// The check stage: the result hook over the upstream's result (which may block
/// or rewrite it), and how the request ends for the audit and the agent.
pub(super) async fn check(
    governed: &mut Governed,
    connector: &str,
    outcome: Result<Outcome, UpstreamError>,
    chain: &Arc<Chain>,
    owned: decide::Owned,
    hook: Hook,
) -> End {
    match outcome {
        Ok(Outcome::Result(raw)) => {
            let text = raw.get().to_string();
            let decision = match hook {
                Hook::Tool(_) if !chain.checks_results() => {
                    return End::Result(Box::<str>::from(raw).into());
                }
                Hook::Tool(tool) => decide::check_result(chain, owned, tool, text).await,
                Hook::Item(Some(hooked), _) => {
                    decide::check_item_result(chain, owned, hooked, text).await
                }
                Hook::Item(None, _) => return End::Result(Box::<str>::from(raw).into()),
            };
            if let Some(denial) = decision.denial {
                governed.audited.decided(&decision.policy, &decision.digest);
                return End::Refused(denial.into());
            }
            match decision.replacement {
                Some(new) => {
                    governed.audited.note(format!(
                        "result rewritten by policy chain {}",
                        decision.policy
                    ));
                    let value: Value = serde_json::from_str(&new).unwrap_or(Value::Null);
                    End::Result(value.to_string())
                }
                None => End::Result(Box::<str>::from(raw).into()),
            }
        }
        Ok(Outcome::Error(error)) if chain.redacts_messages() => {
            let message = error.to_string();
            let decision = match hook {
                Hook::Tool(tool) => decide::check_message(chain, owned, tool, message).await,
                Hook::Item(_, item) => {
                    decide::check_item_message(chain, owned, item, message).await
                }
            };
            if let Some(denial) = decision.denial {
                governed.audited.decided(&decision.policy, &decision.digest);
                return End::Refused(denial.into());
            }
            match decision
                .replacement
                .map(|r| serde_json::from_str::<Value>(&r))
            {
                Some(Ok(masked)) => End::Relayed(masked),
                _ => End::Relayed(error),
            }
        }
        Ok(Outcome::Error(error)) => End::Relayed(error),
        Err(UpstreamError::Cancelled) => End::Cancelled,
        Err(e) => {
            tracing::warn!(connector, kind = e.kind(), error = %e, "upstream call failed");
            End::Refused(Refusal::new(upstream_error(&e), e.audit_status()).because(e.to_string()))
        }
    }
}

/// On `/mcp`, a result with the URIs it hands out qualified (`names::qualify_result`):
/// after the check stage, so policies see the upstream's URIs.
pub(super) fn qualified(endpoint: &Endpoint, slug: &str, end: End) -> End {
    match (endpoint, end) {
        (Endpoint::All, End::Result(text)) => match names::qualify_result(&text, slug) {
            Some(rewritten) => End::Result(rewritten),
            None => End::Result(text),
        },
        (_, end) => end,
    }
}

/// A call that timed out or that the agent cancelled: the upstream is told
/// (`notifications/cancelled`) from a task of its own, bounded by the connector's
/// timeout, so an upstream that stopped answering holds up nothing.
pub(super) fn tell_cancelled(
    upstream: &Arc<UpstreamSession>,
    upstream_id: i64,
    connector: &Connector,
    outcome: &Result<Outcome, UpstreamError>,
) {
    let reason = match outcome {
        Err(UpstreamError::Timeout) => "timeout",
        Err(UpstreamError::Cancelled) => "cancelled by the client",
        _ => return,
    };
    let (up, limit) = (upstream.clone(), connector.timeout);
    tokio::spawn(async move {
        let params = json!({"requestId": upstream_id, "reason": reason});
        let notify = up.notify("notifications/cancelled", &params);
        let _ = tokio::time::timeout(limit, notify).await;
    });
}

/// The reply to the agent from the exchange's first event: plain JSON unless the
/// upstream sends notifications (or relayed requests) before its answer and the
/// agent accepts SSE.
async fn answer(
    first: Option<Event>,
    mut rx: mpsc::Receiver<Event>,
    id: &Value,
    accepts_sse: bool,
    redactor: Option<Redactor>,
) -> Reply {
    match first {
        Some(Event::Final(text)) => Reply::Json(text),
        Some(Event::Message(first)) if accepts_sse => {
            let (out_tx, out_rx) = mpsc::channel(64);
            tokio::spawn(async move {
                let mut next = Some(Event::Message(first));
                while let Some(ev) = next {
                    let text = match (ev, &redactor) {
                        (Event::Message(t), Some(r)) => r.message(t).await,
                        (Event::Message(t) | Event::Final(t), _) => Some(t),
                    };
                    if let Some(text) = text
                        && out_tx.send(text).await.is_err()
                    {
                        return;
                    }
                    next = rx.recv().await;
                }
            });
            Reply::Stream(out_rx)
        }
        // A JSON-only agent gets the answer alone.
        Some(Event::Message(_)) => loop {
            match rx.recv().await {
                Some(Event::Final(text)) => break Reply::Json(text),
                Some(Event::Message(_)) => continue,
                None => break cancelled(id, accepts_sse),
            }
        },
        None => cancelled(id, accepts_sse),
    }
}

/// `builtin:redact-secrets` over the messages an upstream sends the agent during a
/// call (notifications, relayed requests): their `params` go through the built-in's
/// masking (`Chain::check_message`); a message it denies is withheld.
struct Redactor {
    chain: Arc<Chain>,
    owned: decide::Owned,
    tool: usize,
}

impl Redactor {
    /// The message as the agent may see it (`None`: withheld).
    async fn message(&self, text: String) -> Option<String> {
        let Ok(mut message) = serde_json::from_str::<Value>(&text) else {
            return Some(text);
        };
        let Some(params) = message.get("params").filter(|p| p.is_object()) else {
            return Some(text);
        };
        let params = params.to_string();
        let decision =
            decide::check_message(&self.chain, self.owned.clone(), self.tool, params).await;
        if let Some(d) = decision.denial {
            tracing::info!(policy = %decision.policy, reason = %d.reason, "message to the agent withheld");
            return None;
        }
        match decision
            .replacement
            .map(|r| serde_json::from_str::<Value>(&r))
        {
            Some(Ok(masked)) => {
                message["params"] = masked;
                Some(message.to_string())
            }
            _ => Some(text),
        }
    }
}

/// A tool the agent cannot call because it does not exist (or is hidden).
fn not_found() -> Refusal {
    Refusal::new(RpcError::tool_not_found(), 404)
}

/// A connector whose list cannot be had.
fn unavailable(e: UpstreamError) -> Refusal {
    Refusal::new(upstream_error(&e), e.audit_status()).because(e.to_string())
}

/// The call's arguments as the agent wrote them (`{}` when absent).
fn arguments(members: &Members) -> String {
    members
        .get("arguments")
        .map(|a| a.get().to_string())
        .unwrap_or_else(|| "{}".into())
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
pub(super) fn upstream_error(e: &UpstreamError) -> RpcError {
    match e {
        UpstreamError::Timeout => RpcError::new(jsonrpc::INTERNAL_ERROR, "timeout"),
        UpstreamError::TooLarge(_) => RpcError::new(
            jsonrpc::INTERNAL_ERROR,
            "Upstream result exceeds the connector's max_result_bytes",
        ),
        UpstreamError::Credential(_) => {
            RpcError::new(jsonrpc::INTERNAL_ERROR, "Upstream credential unavailable")
        }
        UpstreamError::AtCapacity(n) => RpcError::new(
            jsonrpc::INTERNAL_ERROR,
            format!(
                "The connector is at its limit of {n} processes (max_processes); try again later"
            ),
        ),
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

/// What a cancelled request's HTTP exchange ends with: an empty SSE stream, or for
/// a JSON-only client an error, since it must get some answer.
pub(super) fn cancelled(id: &Value, accepts_sse: bool) -> Reply {
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
