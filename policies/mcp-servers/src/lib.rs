//! mcp-servers: holds an agent to its `mcpServers` declaration.
//!
//! Without a declaration (`ctx.declaration` is `None`) nothing is restricted. With
//! one, the connector is eligible iff at least one rule matches it (URL pattern on
//! the target URL, and each `required` pattern met by a tool that also passes the
//! rule's hints; see `portcullis_policy_sdk::rule_matches_connector`). A tool is
//! listed and callable only if a matching rule allows it (name within `required`,
//! effective hints passing). Anything else is `-32601 Tool not found`. An empty
//! declaration makes nothing eligible. The declaration speaks of tools only:
//! resources and prompts are not governed (their hooks are off in the manifest).
//! Settings: `{}`.

use portcullis_policy_sdk::tool_rules_manifest;
use portcullis_policy_sdk::{
    Context, Manifest, Policy, ServerRule, TOOL_NOT_FOUND, Tool, Verdict, expect_empty_settings,
    export_policy, glob_match, hint_mismatch, required_patterns, rule_hints,
    rule_matches_connector, tool_name_allowed,
};

/// The mcp-servers policy.
pub struct McpServers;

/// What the declaration says about the request's connector.
enum Ceiling<'a> {
    /// No declaration: no restriction.
    Unrestricted,
    /// No rule matches: the denial reason.
    NotEligible(String),
    /// The rules matching the connector, with their indexes in the declaration.
    Rules(Vec<(usize, &'a ServerRule)>),
}

fn ceiling(ctx: &Context) -> Ceiling<'_> {
    let Some(rules) = ctx.declaration.as_deref() else {
        return Ceiling::Unrestricted;
    };
    let matching: Vec<_> = rules
        .iter()
        .enumerate()
        .filter(|(_, r)| rule_matches_connector(r, &ctx.connector))
        .collect();
    if !matching.is_empty() {
        return Ceiling::Rules(matching);
    }
    let c = &ctx.connector;
    let why = if rules.is_empty() {
        "the declaration is empty".to_string()
    } else {
        rules
            .iter()
            .enumerate()
            .map(|(i, r)| format!("mcpServers[{i}]: {}", rule_miss(r, &ctx.connector)))
            .collect::<Vec<_>>()
            .join("; ")
    };
    Ceiling::NotEligible(format!(
        "connector {} ({}) not eligible under the agent's mcpServers declaration: {why}",
        c.id, c.target_url
    ))
}

/// Why a rule does not match the connector (for the audit reason).
fn rule_miss(rule: &ServerRule, connector: &portcullis_policy_sdk::Connector) -> String {
    if !glob_match(&rule.url, &connector.target_url) {
        return format!("url `{}` does not match", rule.url);
    }
    let unmet = required_patterns(rule).and_then(|ps| {
        // `*` entries require nothing (as in `rule_matches_connector`).
        ps.iter()
            .filter(|p| p.bytes().any(|b| b != b'*'))
            .find(|p| !connector.tools.iter().any(|t| glob_match(p, &t.name)))
    });
    match unmet {
        Some(p) => format!("no tool for required `{p}`"),
        None => "does not match".to_string(),
    }
}

fn tool_verdict(ctx: &Context, ceiling: &Ceiling<'_>, tool: &Tool) -> Verdict {
    let rules = match ceiling {
        Ceiling::Unrestricted => return Verdict::Allow,
        Ceiling::NotEligible(reason) => return TOOL_NOT_FOUND.deny(reason.clone()),
        Ceiling::Rules(rules) => rules,
    };
    let mut misses = Vec::with_capacity(rules.len());
    for &(i, rule) in rules {
        if !tool_name_allowed(rule, &tool.name) {
            misses.push(format!("mcpServers[{i}]: name not in required"));
        } else if let Some(m) = hint_mismatch(rule_hints(rule), &tool.annotations) {
            misses.push(format!("mcpServers[{i}]: {m}"));
        } else {
            return Verdict::Allow;
        }
    }
    TOOL_NOT_FOUND.deny(format!(
        "tool {} is outside the declared tools for connector {} ({})",
        tool.name,
        ctx.connector.id,
        misses.join("; ")
    ))
}

impl Policy for McpServers {
    fn validate_settings(settings: &str) -> Result<(), String> {
        expect_empty_settings(settings)
    }

    /// Listing and calling; eligibility reads the connector's whole tool list.
    fn describe(_settings: &str) -> Manifest {
        Manifest {
            reads_connector_tools: true,
            ..tool_rules_manifest()
        }
    }

    fn check_tool(_settings: &str, ctx: &Context, tool: &Tool) -> Verdict {
        tool_verdict(ctx, &ceiling(ctx), tool)
    }

    fn filter_tools(_settings: &str, ctx: &Context) -> Vec<Verdict> {
        let ceiling = ceiling(ctx);
        ctx.connector
            .tools
            .iter()
            .map(|t| tool_verdict(ctx, &ceiling, t))
            .collect()
    }
}

export_policy!(McpServers);

#[cfg(test)]
mod tests;
