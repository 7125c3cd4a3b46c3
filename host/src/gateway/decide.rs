//! Runs policy-chain evaluations on tokio's blocking pool. Guests are synchronous Wasm
//! that may run until their deadline, and WASI's stdio bridge (a guest's panic message
//! goes to its stderr) blocks on the runtime; neither may happen on an async worker,
//! or one slow policy would stall unrelated requests. A chain whose every answer is
//! known without evaluating (an empty chain, reused decisions) is answered inline.
//! A panic while evaluating fails closed.

use std::sync::Arc;

use serde_json::Value;

use super::Gateway;
use super::catalog::ItemSet;
use crate::auth::Identity;
use crate::config::Connector;
use crate::mcp::jsonrpc;
use crate::policy::{
    Chain, CompletionRequest, Decision, Denial, PromptRequest, ResourceRequest, Subject,
};

/// Everything a chain evaluation reads, owned so it can move to another thread.
#[derive(Clone)]
pub(super) struct Owned {
    identity: Arc<Identity>,
    connector: Arc<Connector>,
    tools: Arc<ItemSet>,
}

impl Owned {
    fn subject(&self) -> Subject<'_> {
        Subject {
            identity: &self.identity,
            declaration: self.identity.declaration.as_deref().map(Vec::as_slice),
            connector: &self.connector,
            tools: &self.tools.items,
            tools_version: self.tools.version,
        }
    }

    /// The tool at `position` in the connector's list (`ItemSet::position`).
    fn tool(&self, position: usize) -> &Value {
        &self.tools.items[position]
    }

    /// The tool a call names: listed, or a stand-in for a name the list lacks.
    fn called<'a>(&'a self, tool: &'a Called) -> &'a Value {
        match tool {
            Called::Listed(position) => self.tool(*position),
            Called::Unlisted(stand_in) => stand_in,
        }
    }
}

/// The tool a call is checked for.
pub(super) enum Called {
    /// At this position in the connector's list.
    Listed(usize),
    /// Not in the list: a stand-in `{"name": ...}`, so the chain decides what it
    /// decides by name and connector (scope) before anyone learns the tool is missing.
    Unlisted(Value),
}

impl Gateway {
    pub(super) fn owned(
        &self,
        identity: &Arc<Identity>,
        connector: &Arc<Connector>,
        tools: &Arc<ItemSet>,
    ) -> Owned {
        Owned {
            identity: identity.clone(),
            connector: connector.clone(),
            tools: tools.clone(),
        }
    }
}

impl Gateway {
    /// [`Gateway::owned`] for a resource or prompt request or list: the connector's
    /// tools (what `ctx.connector.tools` carries) when its upstream is known to list
    /// tools and they can be had, else none.
    pub(super) async fn owned_for_items(
        &self,
        session: &super::sessions::AgentSession,
        connector: &Arc<Connector>,
    ) -> Owned {
        self.owned_for(&session.identity(), connector).await
    }

    async fn owned_for(&self, identity: &Arc<Identity>, connector: &Arc<Connector>) -> Owned {
        let tools = match self.catalog.offered(&connector.id, "tools") {
            true => self.catalog.tools(&connector.id).await.ok(),
            false => None,
        };
        let tools = tools.unwrap_or_else(|| Arc::new(ItemSet::empty(super::catalog::Kind::Tools)));
        self.owned(identity, connector, &tools)
    }
}

impl Gateway {
    /// The connectors of `connectors` the agent may use ([`Gateway::usable_by`]),
    /// asked concurrently, in order.
    pub(super) async fn usable_of(
        &self,
        identity: &Arc<Identity>,
        connectors: Vec<Arc<Connector>>,
    ) -> Vec<Arc<Connector>> {
        let usable =
            futures_util::future::join_all(connectors.iter().map(|c| self.usable_by(identity, c)))
                .await;
        connectors
            .into_iter()
            .zip(usable)
            .filter_map(|(c, ok)| ok.then_some(c))
            .collect()
    }

    /// Whether the agent may use anything of `connector`: the chain leaves it at
    /// least one of its tools, prompts, resources or resource templates (lists that
    /// cannot be had count as empty; reused decisions make this cheap).
    pub(crate) async fn usable_by(
        &self,
        identity: &Arc<Identity>,
        connector: &Arc<Connector>,
    ) -> bool {
        use super::catalog::Kind;
        let chain = self.policy.current();
        let owned = self.owned_for(identity, connector).await;
        for kind in [Kind::Tools, Kind::Prompts, Kind::Resources, Kind::Templates] {
            if kind != Kind::Tools && !self.catalog.offered(&connector.id, kind.capability()) {
                continue;
            }
            let Ok(set) = self.catalog.list(&connector.id, kind).await else {
                continue;
            };
            if set.items.is_empty() {
                continue;
            }
            let visible = match kind {
                Kind::Tools => filter_tools(&chain, self.owned(identity, connector, &set)).await,
                _ => filter_items(&chain, owned.clone(), set).await,
            };
            if visible.contains(&true) {
                return true;
            }
        }
        false
    }
}

/// Which items of `set` (a connector's resources, templates or prompts) the agent
/// may see; `owned` carries the connector's tools for policies that read them.
pub(super) async fn filter_items(chain: &Arc<Chain>, owned: Owned, set: Arc<ItemSet>) -> Vec<bool> {
    let kind = set.kind.list_kind();
    if let Some(visible) =
        chain.filter_items_cached(&owned.subject(), kind, &set.items, set.version)
    {
        return visible;
    }
    let n = set.items.len();
    filter_on_pool(chain, n, move |c| {
        c.filter_items(&owned.subject(), kind, &set.items, set.version)
    })
    .await
}

/// Runs a list filter on the blocking pool, in the current span; a panic hides all
/// `n` items.
async fn filter_on_pool(
    chain: &Arc<Chain>,
    n: usize,
    filter: impl FnOnce(&Chain) -> Vec<bool> + Send + 'static,
) -> Vec<bool> {
    let chain = chain.clone();
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || span.in_scope(|| filter(&chain)))
        .await
        .unwrap_or_else(|e| {
            tracing::error!(error = %e, "policy evaluation panicked; hiding the connector's items");
            vec![false; n]
        })
}

/// A resource or prompt request, owned for the blocking pool: the item (JSON as
/// listed, or a stand-in) and what is asked of it.
pub(super) enum Ask {
    ReadResource(Value),
    SubscribeResource(Value),
    CompleteResource(Value, Completion),
    GetPrompt(Value, String),
    CompletePrompt(Value, Completion),
}

/// A `completion/complete` request's argument, typed value and resolved arguments.
pub(super) struct Completion {
    pub argument: String,
    pub value: String,
    /// JSON object text (`{}` when none).
    pub context: String,
}

impl Completion {
    fn request(&self) -> CompletionRequest<'_> {
        CompletionRequest {
            argument: &self.argument,
            value: &self.value,
            context: &self.context,
        }
    }
}

impl Ask {
    fn is_prompt(&self) -> bool {
        matches!(self, Ask::GetPrompt(..) | Ask::CompletePrompt(..))
    }

    /// The chain's decision; with `evaluate: false` from reused decisions only
    /// (`None` when a policy would have to be evaluated).
    fn judge(&self, chain: &Chain, subject: &Subject, evaluate: bool) -> Option<Decision> {
        let resource = |item, request| chain.check_resource_with(subject, item, request, evaluate);
        let prompt = |item, request| chain.check_prompt_with(subject, item, request, evaluate);
        match self {
            Ask::ReadResource(item) => resource(item, ResourceRequest::Read),
            Ask::SubscribeResource(item) => resource(item, ResourceRequest::Subscribe),
            Ask::CompleteResource(item, c) => {
                resource(item, ResourceRequest::Complete(c.request()))
            }
            Ask::GetPrompt(item, arguments) => prompt(item, PromptRequest::Get(arguments)),
            Ask::CompletePrompt(item, c) => prompt(item, PromptRequest::Complete(c.request())),
        }
    }
}

/// Whether a resource or prompt request may proceed (no evaluation when no policy
/// checks that kind).
pub(super) async fn check_item(chain: &Arc<Chain>, owned: Owned, ask: Ask) -> Decision {
    if !chain.checks_items(ask.is_prompt()) {
        return chain.allowed();
    }
    if let Some(decision) = ask.judge(chain, &owned.subject(), false) {
        return decision;
    }
    on_blocking_pool(chain, move |c| {
        ask.judge(c, &owned.subject(), true)
            .expect("evaluating chains always decide")
    })
    .await
}

/// What a result hook is about: a read resource or a got prompt (JSON as listed, or
/// a stand-in).
pub(super) enum Hooked {
    Resource(Value),
    Prompt(Value),
}

/// The result hook of `hooked`'s kind over a result (JSON text); passes at once when
/// no policy has that hook.
pub(super) async fn check_item_result(
    chain: &Arc<Chain>,
    owned: Owned,
    hooked: Hooked,
    result: String,
) -> Decision {
    if !chain.checks_item_results(matches!(hooked, Hooked::Prompt(_))) {
        return chain.allowed();
    }
    on_blocking_pool(chain, move |c| match &hooked {
        Hooked::Resource(item) => c.check_resource_contents(&owned.subject(), item, &result),
        Hooked::Prompt(item) => c.check_prompt_result(&owned.subject(), item, &result),
    })
    .await
}

/// The built-in redaction over an upstream's JSON-RPC error answering a resource or
/// prompt request (`Chain::check_message`, with a stand-in tool named by the item).
pub(super) async fn check_item_message(
    chain: &Arc<Chain>,
    owned: Owned,
    item: String,
    message: String,
) -> Decision {
    on_blocking_pool(chain, move |c| {
        let stand_in = serde_json::json!({ "name": item });
        c.check_message(&owned.subject(), &stand_in, &message)
    })
    .await
}

/// Which tools the agent may see.
pub(super) async fn filter_tools(chain: &Arc<Chain>, owned: Owned) -> Vec<bool> {
    if let Some(visible) = chain.filter_tools_cached(&owned.subject()) {
        return visible;
    }
    let n = owned.tools.items.len();
    filter_on_pool(chain, n, move |c| c.filter_tools(&owned.subject())).await
}

/// Whether a call of `tool` may proceed.
pub(super) async fn check_call(
    chain: &Arc<Chain>,
    owned: Owned,
    tool: Called,
    arguments: String,
) -> Decision {
    if let Some(decision) =
        chain.check_call_cached(&owned.subject(), owned.called(&tool), &arguments)
    {
        return decision;
    }
    on_blocking_pool(chain, move |c| {
        c.check_call(&owned.subject(), owned.called(&tool), &arguments)
    })
    .await
}

/// The post-call hook over a result of the tool at `tool` (as for `check_call`).
pub(super) async fn check_result(
    chain: &Arc<Chain>,
    owned: Owned,
    tool: usize,
    result: String,
) -> Decision {
    on_blocking_pool(chain, move |c| {
        c.check_result(&owned.subject(), owned.tool(tool), &result)
    })
    .await
}

/// The built-in redaction over what the upstream sends besides the result (an error
/// object, a notification's params) during a call of the tool at `tool`
/// (`Chain::check_message`).
pub(super) async fn check_message(
    chain: &Arc<Chain>,
    owned: Owned,
    tool: usize,
    message: String,
) -> Decision {
    on_blocking_pool(chain, move |c| {
        c.check_message(&owned.subject(), owned.tool(tool), &message)
    })
    .await
}

/// Runs one chain evaluation on the blocking pool, in the current span; a panic
/// fails closed.
async fn on_blocking_pool(
    chain: &Arc<Chain>,
    evaluate: impl FnOnce(&Chain) -> Decision + Send + 'static,
) -> Decision {
    let run = chain.clone();
    let span = tracing::Span::current();
    let joined = tokio::task::spawn_blocking(move || span.in_scope(|| evaluate(&run))).await;
    joined.unwrap_or_else(|e| panicked(chain, &e))
}

fn panicked(chain: &Chain, e: &tokio::task::JoinError) -> Decision {
    tracing::error!(error = %e, "policy evaluation panicked; denying");
    Decision {
        denial: Some(Denial {
            code: jsonrpc::INTERNAL_ERROR,
            message: "Policy evaluation failed".into(),
            reason: format!("policy evaluation panicked: {e}"),
            status: 500,
        }),
        policy: chain.names.clone(),
        digest: chain.digest.clone(),
        replacement: None,
    }
}
