//! Runs policy-chain evaluations on tokio's blocking pool. Guests are synchronous Wasm
//! that may run until their deadline, and WASI's stdio bridge (a guest's panic message
//! goes to its stderr) blocks on the runtime; neither may happen on an async worker,
//! or one slow policy would stall unrelated requests. A chain whose every answer is
//! known without evaluating (an empty chain, reused decisions) is answered inline.
//! A panic while evaluating fails closed.

use std::sync::Arc;

use serde_json::Value;

use super::Gateway;
use super::catalog::ToolSet;
use crate::auth::Identity;
use crate::config::Connector;
use crate::mcp::jsonrpc;
use crate::policy::{Chain, Decision, Denial, Subject};

/// Everything a chain evaluation reads, owned so it can move to another thread.
#[derive(Clone)]
pub(super) struct Owned {
    identity: Arc<Identity>,
    connector: Arc<Connector>,
    tools: Arc<ToolSet>,
}

impl Owned {
    fn subject(&self) -> Subject<'_> {
        Subject {
            identity: &self.identity,
            declaration: self.identity.declaration.as_deref().map(Vec::as_slice),
            connector: &self.connector,
            tools: &self.tools.tools,
            tools_version: self.tools.version,
        }
    }

    /// The tool at `position` in the connector's list (`ToolSet::position`).
    fn tool(&self, position: usize) -> &Value {
        &self.tools.tools[position]
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
        tools: &Arc<ToolSet>,
    ) -> Owned {
        Owned {
            identity: identity.clone(),
            connector: connector.clone(),
            tools: tools.clone(),
        }
    }
}

/// Which tools the agent may see.
pub(super) async fn filter_tools(chain: &Arc<Chain>, owned: Owned) -> Vec<bool> {
    let n = owned.tools.tools.len();
    if let Some(visible) = chain.filter_tools_cached(&owned.subject()) {
        return visible;
    }
    let chain = chain.clone();
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || span.in_scope(|| chain.filter_tools(&owned.subject())))
        .await
        .unwrap_or_else(|e| {
            tracing::error!(error = %e, "policy evaluation panicked; hiding the connector's tools");
            vec![false; n]
        })
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
