//! blocklist: the operator's per-connector `disabled_tools`.
//!
//! A tool whose name matches an entry of the connector's `disabled_tools` (exact
//! names or `*` patterns such as `delete_*`) is hidden from `tools/list`, and
//! `tools/call` to it is refused with `-32601 Tool not found`; the audit reason
//! names the matching entry. Settings: `{}`.

use portcullis_policy_sdk::tool_rules_manifest;
use portcullis_policy_sdk::{
    Context, Manifest, Policy, TOOL_NOT_FOUND, Tool, Verdict, expect_empty_settings, export_policy,
    glob_match,
};

/// The blocklist policy.
pub struct Blocklist;

/// The first `disabled_tools` entry of the connector matching `tool_name`.
pub fn blocking_pattern<'a>(ctx: &'a Context, tool_name: &str) -> Option<&'a str> {
    ctx.connector
        .disabled_tools
        .iter()
        .find(|p| glob_match(p, tool_name))
        .map(String::as_str)
}

impl Policy for Blocklist {
    fn validate_settings(settings: &str) -> Result<(), String> {
        expect_empty_settings(settings)
    }

    /// Listing and calling, from the tool name and the connector's blocklist.
    fn describe(_settings: &str) -> Manifest {
        tool_rules_manifest()
    }

    fn check_tool(_settings: &str, ctx: &Context, tool: &Tool) -> Verdict {
        match blocking_pattern(ctx, &tool.name) {
            None => Verdict::Allow,
            Some(pattern) => TOOL_NOT_FOUND.deny(format!(
                "tool {} is disabled on connector {} by `{pattern}`",
                tool.name, ctx.connector.id
            )),
        }
    }
}

export_policy!(Blocklist);

#[cfg(test)]
mod tests;
