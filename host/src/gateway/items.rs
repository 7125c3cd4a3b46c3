//! `resources/read`, `prompts/get` and `completion/complete`: the pipeline's stages
//! for one resource or prompt.
//!
//! - **resolve**: the connector and the upstream's URI or name: on `/mcp` a
//!   qualified URI (`names::unqualify`) or a prefixed prompt name, on `/mcp/<id>` the
//!   upstream's own. The item policies judge is the listed one (a resource, else the
//!   template a URI matches with the concrete URI, else a stand-in named by the URI; a
//!   prompt the list lacks is first put to the chain with a stand-in, then looked for
//!   in a fresh list, then -32602 `Prompt not found`). A connector whose upstream
//!   does not offer the capability answers -32601, as for an unknown method.
//! - **decide**: the chain's `check-resource` / `check-prompt`.
//! - **admit**: the session is open and the org's quota has room: each of these
//!   requests counts, like a tool call.
//! - **forward**: the request over the session's upstream session, with the
//!   upstream's URI or name in place of the agent's, bounded by the connector's
//!   timeout; `notifications/cancelled` from the agent ends it. What the upstream
//!   sends meanwhile is not relayed: `list_changed` empties the catalog's list, a
//!   server-to-client request is answered at once (`answer_unrelayed`), other
//!   notifications are dropped.
//! - **check**: `check-resource-contents` / `check-prompt-result` (`call::check`),
//!   which see the upstream's URIs; then, on `/mcp`, the URIs the result hands out
//!   are qualified (`names::qualify_result`), so they resolve through the gateway.
//!
//! The forward stage runs in a task of its own, so a request whose agent went away
//! still ends upstream and is audited.

use std::sync::Arc;
use std::time::Instant;

use serde_json::{Value, json};
use tokio::sync::oneshot;
use tracing::Instrument;

use super::call::{Hook, check, tell_cancelled};
use super::catalog::{ItemSet, Kind};
use super::decide::{self, Ask, Completion, Hooked};
use super::limits::Permit;
use super::pipeline::{End, Governed, Refusal, Stage};
use super::sessions::{AgentSession, Endpoint, InFlight};
use super::{Gateway, Reply, names, uri_template};
use crate::config::Connector;
use crate::mcp::jsonrpc::{self, RpcError};
use crate::mcp::params::{self, Members, Params};
use crate::telemetry;
use crate::upstream::{Message, UpstreamError};

/// A request resolved and decided, ready to admit and forward.
pub(super) struct Resolved {
    pub(super) connector: Arc<Connector>,
    pub(super) method: &'static str,
    /// The agent's params with the upstream's URI or name in place.
    pub(super) members: Members,
    /// The item's upstream URI or name (audit, spans).
    pub(super) item: String,
    /// What the result hook judges (`None`: nothing, a completion).
    pub(super) hooked: Option<Hooked>,
    /// A connector that cannot complete: the empty completion, not forwarded.
    pub(super) empty: bool,
}

/// What the agent named.
pub(super) enum Named {
    Resource(String),
    Prompt(String),
}

impl Gateway {
    /// `resources/read`, `prompts/get` or `completion/complete`: every stage in a
    /// task of its own (`detached`).
    pub(super) async fn item_request(
        self: &Arc<Self>,
        session: &Arc<AgentSession>,
        id: Value,
        method: &'static str,
        params: Params,
        permit: Option<Permit>,
    ) -> Reply {
        let governed = Governed::start(session, method, id.clone());
        let (gateway, session) = (self.clone(), session.clone());
        self.detached(id, permit, async move {
            let mut governed = governed;
            let end = gateway
                .item_stages(&mut governed, &session, method, &params)
                .await;
            (governed, end)
        })
        .await
    }

    async fn item_stages(
        &self,
        governed: &mut Governed,
        session: &Arc<AgentSession>,
        method: &'static str,
        params: &Params,
    ) -> End {
        let resolved = match self.resolve_item(governed, session, method, params).await {
            Ok(r) => r,
            Err(refusal) => return End::Refused(refusal),
        };
        if let Err(refusal) = self.admit(session).await {
            return End::Refused(refusal);
        }
        self.forward_item(governed, session, resolved).await
    }

    /// Runs a governed request's stages (`run`, which ends with how it ended) in a
    /// task of its own, holding the agent's request permit, and writes the reply and
    /// the audit row: a request whose agent went away still ends upstream, counts
    /// against the agent's limit until then, and is audited.
    pub(super) async fn detached(
        self: &Arc<Self>,
        id: Value,
        permit: Option<Permit>,
        run: impl std::future::Future<Output = (Governed, End)> + Send + 'static,
    ) -> Reply {
        let gateway = self.clone();
        let task = tokio::spawn(
            async move {
                let _permit = permit;
                let (governed, end) = run.await;
                governed.finish(&gateway.audit, end).await
            }
            .in_current_span(),
        );
        match task.await {
            Ok(Some(text)) => Reply::Json(text),
            Ok(None) => super::call::cancelled(&id, false),
            Err(e) => {
                tracing::error!(error = %e, "governed request task failed");
                let error = RpcError::new(jsonrpc::INTERNAL_ERROR, "Internal error");
                Reply::Json(jsonrpc::error(Some(&id), &error))
            }
        }
    }

    /// The resolve and decide stages.
    async fn resolve_item(
        &self,
        governed: &mut Governed,
        session: &AgentSession,
        method: &'static str,
        params: &Params,
    ) -> Stage<Resolved> {
        let Some(mut members) = params.members() else {
            return Err(invalid("params must be an object"));
        };
        let named = match method {
            "resources/read" => Named::Resource(string(&members, "uri")?),
            "prompts/get" => Named::Prompt(string(&members, "name")?),
            _ => completion_ref(&members)?,
        };
        let (connector, upstream_key) = self.route_item(governed, session, &named)?;
        let capability = match method {
            "completion/complete" => "completions",
            _ if matches!(named, Named::Resource(_)) => "resources",
            _ => "prompts",
        };
        let offers = self
            .catalog
            .offers(&connector.id, capability)
            .await
            .map_err(super::list::list_unavailable)?;
        let owned = self.owned_for_items(session, &connector).await;
        let chain = self.policy.current();
        // A kind the upstream does not offer lists nothing: its items are stand-ins,
        // judged first (scope before existence), then -32601.
        let (ask, hooked) = match (method, &named) {
            ("resources/read", _) => {
                let item = self
                    .resource_item(&chain, &connector, &upstream_key)
                    .await?;
                (
                    Ask::ReadResource(item.clone()),
                    Some(Hooked::Resource(item)),
                )
            }
            ("prompts/get", _) => {
                let arguments = members
                    .get("arguments")
                    .map(|a| a.get().to_string())
                    .unwrap_or_else(|| "{}".into());
                if !offers {
                    let stand_in = json!({ "name": upstream_key });
                    let ask = Ask::GetPrompt(stand_in, arguments);
                    governed.decide(decide::check_item(&chain, owned, ask).await)?;
                    return Err(method_not_found(method, &connector.id, capability));
                }
                let item = self
                    .prompt_item(
                        governed,
                        &chain,
                        owned.clone(),
                        &connector,
                        &upstream_key,
                        &arguments,
                    )
                    .await?;
                (
                    Ask::GetPrompt(item.clone(), arguments),
                    Some(Hooked::Prompt(item)),
                )
            }
            (_, Named::Resource(_)) => {
                let item = self.template_item(&connector, &upstream_key).await;
                (Ask::CompleteResource(item, completion(&members)?), None)
            }
            (_, Named::Prompt(_)) => {
                let item = self.listed_prompt(&connector, &upstream_key).await;
                (Ask::CompletePrompt(item, completion(&members)?), None)
            }
        };
        governed.decide(decide::check_item(&chain, owned, ask).await)?;
        if !offers {
            // On `/mcp` a completion routed to a connector that cannot complete gets
            // the empty completion, as long as another connector can (else -32601).
            if capability == "completions" && session.endpoint == Endpoint::All {
                self.offering(session, capability, method).await?;
            } else {
                return Err(method_not_found(method, &connector.id, capability));
            }
        }
        replace_key(&mut members, method, &named, &upstream_key);
        Ok(Resolved {
            connector,
            method,
            members,
            item: upstream_key,
            hooked,
            empty: !offers,
        })
    }

    /// The connector a URI or prompt name routes to, and the upstream's URI or name.
    pub(super) fn route_item(
        &self,
        governed: &mut Governed,
        session: &AgentSession,
        named: &Named,
    ) -> Stage<(Arc<Connector>, String)> {
        let (text, not_found) = match named {
            Named::Resource(uri) => (uri, resource_not_found as fn() -> Refusal),
            Named::Prompt(name) => (name, prompt_not_found as fn() -> Refusal),
        };
        governed.audited.tool(text);
        let routed = match (&session.endpoint, named) {
            (Endpoint::One(id), _) => self.connector(id).map(|c| (c, text.clone())),
            (Endpoint::All, Named::Resource(uri)) => {
                names::unqualify(uri).and_then(|(slug, up)| {
                    let c = self.connectors.load().by_slug.get(slug)?.clone();
                    Some((c, up.into_owned()))
                })
            }
            (Endpoint::All, Named::Prompt(name)) => {
                names::split(name, &self.config.server.tool_separator).and_then(|(slug, up)| {
                    let c = self.connectors.load().by_slug.get(slug)?.clone();
                    Some((c, up.to_string()))
                })
            }
        };
        let Some((connector, key)) = routed else {
            let shown = crate::text::bounded(text);
            return Err(not_found().because(format!("no connector for {shown}")));
        };
        governed.audited.connector(&connector.id);
        governed.audited.tool(&key);
        Ok((connector, key))
    }

    /// A resource as listed, else the template it matches (with the concrete
    /// URI), else a stand-in named by the URI (the upstream decides whether it
    /// exists). When a policy checks resources and a list cannot be had, the request
    /// is refused: judging a stand-in would let a name-based rule pass.
    pub(super) async fn resource_item(
        &self,
        chain: &crate::policy::Chain,
        connector: &Connector,
        uri: &str,
    ) -> Stage<Value> {
        let checked = chain.checks_items(false);
        let list = |kind| async move {
            match self.catalog.list(&connector.id, kind).await {
                Ok(set) => Ok(Some(set)),
                Err(e) if checked => Err(super::list::list_unavailable(e)),
                Err(_) => Ok(None),
            }
        };
        if let Some(set) = list(Kind::Resources).await?
            && let Some(item) = set.get(uri)
        {
            return Ok(item.clone());
        }
        if let Some(set) = list(Kind::Templates).await?
            && let Some(t) = set
                .items
                .iter()
                .find(|t| uri_template::matches(ItemSet::key_str(t, "uriTemplate"), uri))
        {
            let mut item = t.clone();
            if let Some(o) = item.as_object_mut() {
                o.remove("uriTemplate");
                o.insert("uri".into(), json!(uri));
            }
            return Ok(item);
        }
        Ok(json!({ "uri": uri, "name": uri }))
    }

    /// A template as listed (a completion names its template), else a stand-in.
    async fn template_item(&self, connector: &Connector, template: &str) -> Value {
        match self.catalog.list(&connector.id, Kind::Templates).await {
            Ok(set) if set.get(template).is_some() => {
                set.get(template).cloned().unwrap_or_default()
            }
            _ => json!({ "uriTemplate": template, "name": template }),
        }
    }

    /// A prompt as listed, else a stand-in (completions: the upstream decides).
    async fn listed_prompt(&self, connector: &Connector, name: &str) -> Value {
        match self.catalog.list(&connector.id, Kind::Prompts).await {
            Ok(set) => set.get(name).cloned(),
            Err(_) => None,
        }
        .unwrap_or_else(|| json!({ "name": name }))
    }

    /// The prompt `prompts/get` names, as listed. One the list lacks is first put
    /// to the chain with a stand-in (scope before existence, as for tools), then
    /// looked for in a fresh list (`Catalog::refetch`), then not found.
    async fn prompt_item(
        &self,
        governed: &mut Governed,
        chain: &Arc<crate::policy::Chain>,
        owned: decide::Owned,
        connector: &Connector,
        name: &str,
        arguments: &str,
    ) -> Stage<Value> {
        let set = self
            .catalog
            .list(&connector.id, Kind::Prompts)
            .await
            .map_err(super::list::list_unavailable)?;
        if let Some(item) = set.get(name) {
            return Ok(item.clone());
        }
        let stand_in = json!({ "name": name });
        let shown = crate::text::bounded(name).into_owned();
        let ask = Ask::GetPrompt(stand_in, arguments.to_string());
        governed
            .decide(decide::check_item(chain, owned, ask).await)
            .map_err(|r| r.also(format!("upstream has no prompt {shown}")))?;
        let set = self
            .catalog
            .refetch(&connector.id, Kind::Prompts)
            .await
            .map_err(super::list::list_unavailable)?;
        set.get(name)
            .cloned()
            .ok_or_else(|| prompt_not_found().because(format!("upstream has no prompt {shown}")))
    }

    /// The forward and check stages.
    pub(super) async fn forward_item(
        &self,
        governed: &mut Governed,
        session: &Arc<AgentSession>,
        r: Resolved,
    ) -> End {
        if r.empty {
            return End::Result(
                json!({"completion": {"values": [], "hasMore": false}}).to_string(),
            );
        }
        let upstream = match self.upstream(session, &r.connector) {
            Ok(u) => u,
            Err(refusal) => return End::Refused(refusal),
        };
        let upstream_id = upstream.next_request_id();
        let span = telemetry::spans::upstream(&r.connector, &r.item, upstream_id);
        let (cancel_tx, cancel_rx) = oneshot::channel();
        session.start_request(governed.id(), InFlight { cancel: cancel_tx });
        let catalog = self.catalog.clone();
        let connector_id = r.connector.id.clone();
        let on_message = move |msg: Message| {
            if let Some(kinds) = super::catalog::list_changed(&msg) {
                catalog.invalidate_kinds(&connector_id, kinds);
                return None;
            }
            // A request is answered at once by the session; the rest is not relayed.
            matches!(msg, Message::Request { .. }).then_some(msg)
        };
        let request = upstream
            .request(upstream_id, r.method, &r.members, on_message)
            .instrument(span.clone());
        let sent = Instant::now();
        let outcome = tokio::select! {
            o = tokio::time::timeout(r.connector.timeout, request) => o.unwrap_or(Err(UpstreamError::Timeout)),
            Ok(()) = cancel_rx => Err(UpstreamError::Cancelled),
        };
        session.finish_request(governed.id());
        let end = crate::upstream::span_end(&outcome);
        telemetry::spans::upstream_done(&span, &r.connector.id, r.method, end, sent.elapsed());
        tell_cancelled(&upstream, upstream_id, &r.connector, &outcome);
        let owned = self.owned_for_items(session, &r.connector).await;
        let chain = self.policy.current();
        let hook = Hook::Item(r.hooked, r.item);
        let end = check(governed, &r.connector.id, outcome, &chain, owned, hook).await;
        super::call::qualified(&session.endpoint, &r.connector.slug, end)
    }
}

/// The params' `ref` of a completion: a prompt (`ref/prompt`, `name`) or a resource
/// template (`ref/resource`, `uri`).
fn completion_ref(members: &Members) -> Stage<Named> {
    let reference: Value = params::member(members, "ref").unwrap_or(Value::Null);
    let text = |k: &str| reference.get(k).and_then(Value::as_str).map(String::from);
    match reference.get("type").and_then(Value::as_str) {
        Some("ref/prompt") => text("name").map(Named::Prompt),
        Some("ref/resource") => text("uri").map(Named::Resource),
        _ => None,
    }
    .ok_or_else(|| invalid("\"ref\" must be a ref/prompt with a name or a ref/resource with a uri"))
}

/// A completion's argument, typed value and resolved arguments.
fn completion(members: &Members) -> Stage<Completion> {
    let argument: Value = params::member(members, "argument").unwrap_or(Value::Null);
    let text = |k: &str| argument.get(k).and_then(Value::as_str).map(String::from);
    let (Some(name), Some(value)) = (text("name"), text("value")) else {
        return Err(invalid("\"argument\" must have a string name and value"));
    };
    let context = params::member::<Value>(members, "context")
        .and_then(|c| c.get("arguments").cloned())
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({}));
    Ok(Completion {
        argument: name,
        value,
        context: context.to_string(),
    })
}

/// The upstream's URI or name in place of the agent's: `uri` or `name`, or for a
/// completion the `ref`'s.
pub(super) fn replace_key(members: &mut Members, method: &str, named: &Named, key: &str) {
    let field = match named {
        Named::Resource(_) => "uri",
        Named::Prompt(_) => "name",
    };
    if method != "completion/complete" {
        members.insert(field.into(), params::to_raw(key));
        return;
    }
    if let Some(mut reference) = params::member::<Value>(members, "ref") {
        reference[field] = json!(key);
        members.insert("ref".into(), params::to_raw(&reference));
    }
}

pub(super) fn string(members: &Members, key: &str) -> Stage<String> {
    params::member::<String>(members, key)
        .ok_or_else(|| invalid(&format!("\"{key}\" must be a string")))
}

pub(super) fn invalid(what: &str) -> Refusal {
    let error = RpcError::new(jsonrpc::INVALID_PARAMS, format!("Invalid params: {what}"));
    Refusal::new(error, 400)
}

fn resource_not_found() -> Refusal {
    Refusal::new(
        RpcError::new(jsonrpc::RESOURCE_NOT_FOUND, "Resource not found"),
        404,
    )
}

fn prompt_not_found() -> Refusal {
    Refusal::new(
        RpcError::new(jsonrpc::INVALID_PARAMS, "Prompt not found"),
        404,
    )
}

pub(super) fn method_not_found(method: &str, connector: &str, capability: &str) -> Refusal {
    let error = RpcError::new(
        jsonrpc::METHOD_NOT_FOUND,
        format!("Method not found: {method}"),
    );
    Refusal::new(error, 404).because(format!("connector {connector} does not offer {capability}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completion_refs_name_a_prompt_or_a_template() {
        let members = |v: Value| -> Members { serde_json::from_value(v).unwrap() };
        let m = members(
            json!({"ref": {"type": "ref/prompt", "name": "p"}, "argument": {"name": "a", "value": "v"}}),
        );
        assert!(matches!(completion_ref(&m), Ok(Named::Prompt(n)) if n == "p"));
        let c = completion(&m).unwrap();
        assert_eq!(
            (c.argument.as_str(), c.value.as_str(), c.context.as_str()),
            ("a", "v", "{}")
        );
        let mut m =
            members(json!({"ref": {"type": "ref/resource", "uri": "portcullis://d/x/{id}"}}));
        assert!(matches!(completion_ref(&m), Ok(Named::Resource(_))));
        replace_key(
            &mut m,
            "completion/complete",
            &Named::Resource(String::new()),
            "x/{id}",
        );
        let r: Value = params::member(&m, "ref").unwrap();
        assert_eq!(r, json!({"type": "ref/resource", "uri": "x/{id}"}));
        assert!(completion_ref(&members(json!({"ref": {"type": "ref/other"}}))).is_err());
    }
}
