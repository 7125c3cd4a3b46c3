//! `mcpServers` rule semantics: which connectors a rule makes eligible (the
//! eligibility filter) and which tools it allows (the runtime ceiling).
//!
//! - **Runtime ceiling** ([`rule_allows_tool`]): a tool is allowed when its name
//!   matches one of the rule's `tools.required` patterns and its effective hints
//!   pass the rule's hint fields. `required` omitted (or containing `*`) places no
//!   restriction on names; `required: []` allows **no** name (fail closed).
//! - **Eligibility** ([`rule_matches_connector`]): the rule's `url` pattern matches
//!   the connector's target URL, and every `required` pattern is matched by the
//!   name of at least one of the connector's tools (hints do not take part). `*`
//!   entries (and `required` omitted) require nothing, and `required: []` is
//!   vacuously satisfied, so such a connector is eligible but (by the ceiling) has
//!   no usable tool.

use crate::{Connector, HintFilter, ServerRule, Tool, glob_match, glob_match_any, hints_pass};

/// The rule's `tools.required` list as written; `None` when `tools` or `required`
/// is omitted. `Some(&[])` is an explicit empty list, which allows no tool name.
pub fn required_patterns(rule: &ServerRule) -> Option<&[String]> {
    rule.tools.as_ref()?.required.as_deref()
}

/// Whether `pattern` matches every name (`*`, `**`, ...).
fn matches_everything(pattern: &str) -> bool {
    !pattern.is_empty() && pattern.bytes().all(|b| b == b'*')
}

/// Whether the rule restricts tool names: `required` is present and has no `*`
/// entry. An empty `required` restricts names to none at all.
pub fn restricts_tool_names(rule: &ServerRule) -> bool {
    required_patterns(rule).is_some_and(|ps| !ps.iter().any(|p| matches_everything(p)))
}

/// Whether the rule makes `connector` eligible: the URL pattern matches its target
/// URL and each required pattern (other than `*`) is matched by the name of at
/// least one of its tools. Hints do not take part in eligibility (the source
/// document: "the Connector must support at least one tool with a matching name");
/// they bound which tools are listed and callable (see [`rule_allows_tool`]).
pub fn rule_matches_connector(rule: &ServerRule, connector: &Connector) -> bool {
    if !glob_match(&rule.url, &connector.target_url) {
        return false;
    }
    let Some(patterns) = required_patterns(rule) else {
        return true;
    };
    patterns
        .iter()
        .filter(|p| !matches_everything(p))
        .all(|p| connector.tools.iter().any(|t| glob_match(p, &t.name)))
}

/// Whether the tool's name is within the rule's required patterns: always when
/// `required` is omitted or contains `*`, never when it is empty.
pub fn tool_name_allowed(rule: &ServerRule, tool_name: &str) -> bool {
    required_patterns(rule).is_none_or(|patterns| glob_match_any(patterns, tool_name))
}

/// Whether the rule allows the tool: name within the required patterns and
/// effective hints equal to every hint the rule sets. Does not check the URL:
/// use it on rules for which [`rule_matches_connector`] holds.
pub fn rule_allows_tool(rule: &ServerRule, tool: &Tool) -> bool {
    tool_name_allowed(rule, &tool.name) && hints_pass(rule_hints(rule), &tool.annotations)
}

/// The hint fields of the rule (all `None` when `tools` is omitted).
pub fn rule_hints(rule: &ServerRule) -> HintFilter {
    rule.tools
        .as_ref()
        .map(HintFilter::from)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests;
