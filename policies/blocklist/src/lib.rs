//! blocklist: the operator's per-connector `disabled_tools`, `disabled_prompts` and
//! `disabled_resources`.
//!
//! Entries are exact names or `*` patterns (`delete_*`, `file:///secrets/*`):
//! - a tool whose name matches an entry of `disabled_tools` is hidden from
//!   `tools/list`, and `tools/call` to it is refused with `-32601 Tool not found`;
//! - a prompt whose name matches an entry of `disabled_prompts` is hidden from
//!   `prompts/list`, and `prompts/get` and completions of it are refused with
//!   `-32602 Prompt not found`;
//! - a resource whose URI (for a template, its URI template) or name matches an
//!   entry of `disabled_resources` is hidden from `resources/list` or
//!   `resources/templates/list`, and `resources/read`, `resources/subscribe` and
//!   completions of it are refused with `-32002 Resource not found`. A request
//!   for a concrete URI that only a template lists arrives with the template's
//!   name and the concrete URI: a pattern on the URI (`file:///secrets/*`) or on
//!   the name catches it, the template text itself does not.
//!
//! The answers are exactly the gateway's own for an item that does not exist, so
//! a blocked item cannot be told apart from a missing one; the audit reason names
//! the first matching entry. Results are not looked at. Settings: `{}`.

use portcullis_policy_sdk::item_rules_manifest;
use portcullis_policy_sdk::{
    Context, Manifest, PROMPT_NOT_FOUND, Policy, Prompt, RESOURCE_NOT_FOUND, Resource,
    ResourceKind, TOOL_NOT_FOUND, Tool, Verdict, expect_empty_settings, export_policy, glob_match,
};

/// The blocklist policy.
pub struct Blocklist;

/// The first entry of `patterns` matching any of `texts`.
fn first_match<'a>(patterns: &'a [String], texts: &[&str]) -> Option<&'a str> {
    patterns
        .iter()
        .find(|p| texts.iter().any(|t| glob_match(p, t)))
        .map(String::as_str)
}

/// The first `disabled_tools` entry of the connector matching `tool_name`.
pub fn blocking_pattern<'a>(ctx: &'a Context, tool_name: &str) -> Option<&'a str> {
    first_match(&ctx.connector.disabled_tools, &[tool_name])
}

/// The first `disabled_prompts` entry of the connector matching `prompt_name`.
pub fn prompt_blocking_pattern<'a>(ctx: &'a Context, prompt_name: &str) -> Option<&'a str> {
    first_match(&ctx.connector.disabled_prompts, &[prompt_name])
}

/// The first `disabled_resources` entry of the connector matching the item's URI
/// (or URI template) or its name.
pub fn resource_blocking_pattern<'a>(ctx: &'a Context, item: &Resource) -> Option<&'a str> {
    first_match(&ctx.connector.disabled_resources, &[&item.uri, &item.name])
}

/// How the audit reason names a resource: `resource <uri>` or
/// `resource template <uri-template>`.
fn describe_resource(item: &Resource) -> String {
    match item.kind {
        ResourceKind::Resource => format!("resource {}", item.uri),
        ResourceKind::Template => format!("resource template {}", item.uri),
    }
}

impl Policy for Blocklist {
    fn validate_settings(settings: &str) -> Result<(), String> {
        expect_empty_settings(settings)
    }

    /// Listing and requesting every kind of item, from its name (and URI) and the
    /// connector's blocklists.
    fn describe(_settings: &str) -> Manifest {
        item_rules_manifest()
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

    fn check_prompt_item(_settings: &str, ctx: &Context, item: &Prompt) -> Verdict {
        match prompt_blocking_pattern(ctx, &item.name) {
            None => Verdict::Allow,
            Some(pattern) => PROMPT_NOT_FOUND.deny(format!(
                "prompt {} is disabled on connector {} by `{pattern}`",
                item.name, ctx.connector.id
            )),
        }
    }

    fn check_resource_item(_settings: &str, ctx: &Context, item: &Resource) -> Verdict {
        match resource_blocking_pattern(ctx, item) {
            None => Verdict::Allow,
            Some(pattern) => RESOURCE_NOT_FOUND.deny(format!(
                "{} is disabled on connector {} by `{pattern}`",
                describe_resource(item),
                ctx.connector.id
            )),
        }
    }
}

export_policy!(Blocklist);

#[cfg(test)]
mod tests;
