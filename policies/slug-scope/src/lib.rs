//! slug-scope: an agent reaches a connector only through its scopes.
//!
//! Scope `mcp:call` reaches every connector; `mcp:call:<connector-id>` reaches only
//! the connector with exactly that id. Without a matching scope everything of the
//! connector is out of reach, with `-32003 Insufficient scope`: its tools, resources,
//! resource templates and prompts are hidden from their lists, and `tools/call`,
//! `resources/read`, `resources/subscribe`, `prompts/get` and completions are
//! refused. Every filter and request check answers [`scope_verdict`]; results are
//! not looked at. Settings: `{}`.

use portcullis_policy_sdk::item_rules_manifest;
use portcullis_policy_sdk::{
    Context, INSUFFICIENT_SCOPE, Manifest, Policy, Prompt, Resource, Tool, Verdict,
    expect_empty_settings, export_policy,
};

/// The scope that reaches every connector.
pub const ALL_CONNECTORS: &str = "mcp:call";
/// Prefix of a scope that reaches one connector: `mcp:call:<connector-id>`.
pub const ONE_CONNECTOR_PREFIX: &str = "mcp:call:";

/// The slug-scope policy.
pub struct SlugScope;

/// Whether `scope` reaches the connector with id `connector_id`.
pub fn scope_reaches(scope: &str, connector_id: &str) -> bool {
    scope == ALL_CONNECTORS
        || (!connector_id.is_empty()
            && scope.strip_prefix(ONE_CONNECTOR_PREFIX) == Some(connector_id))
}

/// Allow, or `-32003 Insufficient scope` naming the agent, connector and scopes.
pub fn scope_verdict(ctx: &Context) -> Verdict {
    let id = &ctx.connector.id;
    if ctx.identity.scopes.iter().any(|s| scope_reaches(s, id)) {
        return Verdict::Allow;
    }
    let scopes = if ctx.identity.scopes.is_empty() {
        "none".to_string()
    } else {
        ctx.identity.scopes.join(", ")
    };
    INSUFFICIENT_SCOPE.deny(format!(
        "agent {} has no scope for connector {id} (scopes: {scopes})",
        ctx.identity.agent
    ))
}

impl Policy for SlugScope {
    fn validate_settings(settings: &str) -> Result<(), String> {
        expect_empty_settings(settings)
    }

    /// Listing and requesting every kind of item, from the scopes alone.
    fn describe(_settings: &str) -> Manifest {
        item_rules_manifest()
    }

    fn check_tool(_settings: &str, ctx: &Context, _tool: &Tool) -> Verdict {
        scope_verdict(ctx)
    }

    fn filter_tools(_settings: &str, ctx: &Context) -> Vec<Verdict> {
        vec![scope_verdict(ctx); ctx.connector.tools.len()]
    }

    fn check_resource_item(_settings: &str, ctx: &Context, _item: &Resource) -> Verdict {
        scope_verdict(ctx)
    }

    fn filter_resources(_settings: &str, ctx: &Context, items: &[Resource]) -> Vec<Verdict> {
        vec![scope_verdict(ctx); items.len()]
    }

    fn check_prompt_item(_settings: &str, ctx: &Context, _item: &Prompt) -> Verdict {
        scope_verdict(ctx)
    }

    fn filter_prompts(_settings: &str, ctx: &Context, items: &[Prompt]) -> Vec<Verdict> {
        vec![scope_verdict(ctx); items.len()]
    }
}

export_policy!(SlugScope);

#[cfg(test)]
mod tests;
