//! slug-scope: an agent reaches a connector only through its scopes.
//!
//! Scope `mcp:call` reaches every connector; `mcp:call:<connector-id>` reaches only
//! the connector with exactly that id. Without a matching scope every tool of the
//! connector is hidden from `tools/list` and `tools/call` is refused with
//! `-32003 Insufficient scope`. Settings: `{}`.

use portcullis_policy_sdk::tool_rules_manifest;
use portcullis_policy_sdk::{
    Context, INSUFFICIENT_SCOPE, Manifest, Policy, Tool, Verdict, expect_empty_settings,
    export_policy,
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

    /// Listing and calling, from the scopes alone.
    fn describe(_settings: &str) -> Manifest {
        tool_rules_manifest()
    }

    fn check_tool(_settings: &str, ctx: &Context, _tool: &Tool) -> Verdict {
        scope_verdict(ctx)
    }

    fn filter_tools(_settings: &str, ctx: &Context) -> Vec<Verdict> {
        vec![scope_verdict(ctx); ctx.connector.tools.len()]
    }
}

export_policy!(SlugScope);

#[cfg(test)]
mod tests;
