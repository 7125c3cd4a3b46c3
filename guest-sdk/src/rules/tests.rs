//! `mcpServers` rule matching: URL patterns, required patterns, hints.

use super::*;
use crate::HintFilter;
use crate::testing::{annotations, connector, rule, rule_with, tool, tool_with, tools, url_rule};

const SLACK: &str = "https://mcp.slack.com/mcp";

#[test]
fn url_must_match() {
    let c = connector("conn_s", SLACK, tools(&["send_message"]));
    assert!(rule_matches_connector(&url_rule(SLACK), &c));
    assert!(rule_matches_connector(&url_rule("*"), &c));
    assert!(rule_matches_connector(
        &url_rule("https://*.slack.com/*"),
        &c
    ));
    assert!(!rule_matches_connector(
        &url_rule("https://mcp.discord.com/mcp"),
        &c
    ));
    assert!(!rule_matches_connector(
        &url_rule("https://mcp.slack.com"),
        &c
    ));
}

#[test]
fn every_required_pattern_needs_a_tool() {
    let c = connector("conn_s", SLACK, tools(&["send_message", "list_channels"]));
    let r = rule(SLACK, Some(&["send_message", "list_*"]));
    assert!(rule_matches_connector(&r, &c));
    let r = rule(SLACK, Some(&["send_message", "list_*", "post_*"]));
    assert!(!rule_matches_connector(&r, &c));
}

#[test]
fn star_or_omitted_required_places_no_name_restriction() {
    let empty = connector("conn_e", SLACK, vec![]);
    for r in [
        url_rule(SLACK),
        rule(SLACK, None),
        rule(SLACK, Some(&["*"])),
        rule(SLACK, Some(&["**"])),
    ] {
        assert!(!restricts_tool_names(&r), "{r:?}");
        assert!(rule_matches_connector(&r, &empty), "{r:?}");
        assert!(rule_allows_tool(&r, &tool("anything")));
    }
    assert_eq!(required_patterns(&url_rule(SLACK)), None);
    assert_eq!(required_patterns(&rule(SLACK, None)), None);
}

#[test]
fn empty_required_is_eligible_but_allows_nothing() {
    // Lead decision: `required: []` is a restriction nothing satisfies for the
    // runtime ceiling, and is vacuously satisfied for eligibility.
    let r = rule(SLACK, Some(&[]));
    assert_eq!(required_patterns(&r), Some(&[][..]));
    assert!(restricts_tool_names(&r));
    let c = connector("conn_s", SLACK, tools(&["send_message", "list_channels"]));
    assert!(rule_matches_connector(&r, &c));
    assert!(rule_matches_connector(
        &r,
        &connector("conn_e", SLACK, vec![])
    ));
    assert!(!rule_matches_connector(
        &r,
        &connector("conn_d", "https://mcp.discord.com/mcp", vec![])
    ));
    for t in &c.tools {
        assert!(!rule_allows_tool(&r, t), "{t:?}");
        assert!(!tool_name_allowed(&r, &t.name));
    }
    assert!(!tool_name_allowed(&r, ""));
    assert!(!tool_name_allowed(&r, "*"));
}

#[test]
fn star_among_other_patterns_still_requires_the_others() {
    let c = connector("conn_s", SLACK, tools(&["send_message"]));
    let r = rule(SLACK, Some(&["*", "post_*"]));
    assert!(!restricts_tool_names(&r));
    assert!(!rule_matches_connector(&r, &c));
    assert!(rule_allows_tool(&r, &tool("send_message")));
    let c = connector("conn_s", SLACK, tools(&["post_update"]));
    assert!(rule_matches_connector(&r, &c));
}

#[test]
fn tool_name_must_match_a_required_pattern() {
    let r = rule(SLACK, Some(&["send_message", "post_*"]));
    assert!(rule_allows_tool(&r, &tool("send_message")));
    assert!(rule_allows_tool(&r, &tool("post_update")));
    assert!(!rule_allows_tool(&r, &tool("delete_message")));
    assert!(!tool_name_allowed(&r, "list_channels"));
}

#[test]
fn rule_hints_apply_to_tools() {
    let hints = HintFilter {
        read_only: Some(true),
        ..HintFilter::default()
    };
    let r = rule_with(SLACK, None, hints);
    assert!(rule_allows_tool(
        &r,
        &tool_with("list", annotations(Some(true), None, None, None))
    ));
    assert!(!rule_allows_tool(&r, &tool("list")));
    assert_eq!(rule_hints(&r), hints);
    assert_eq!(rule_hints(&url_rule(SLACK)), HintFilter::default());
}

#[test]
fn eligibility_looks_at_names_only() {
    // "For each pattern, the Connector must support at least one tool with a
    // matching name": hints bound what is listed, not which connectors are eligible.
    let hints = HintFilter {
        read_only: Some(true),
        ..HintFilter::default()
    };
    let r = rule_with(SLACK, Some(&["send_*"]), hints);
    // Unannotated send_message: the connector is eligible, the tool is not allowed.
    let c = connector("conn_s", SLACK, tools(&["send_message"]));
    assert!(rule_matches_connector(&r, &c));
    assert!(!rule_allows_tool(&r, &c.tools[0]));
    let ro = tool_with("send_receipt", annotations(Some(true), None, None, None));
    assert!(rule_allows_tool(&r, &ro));
    // The name must match: a read-only tool of another name does not satisfy send_*.
    let other = tool_with("list_channels", annotations(Some(true), None, None, None));
    let c = connector("conn_s", SLACK, vec![other]);
    assert!(!rule_matches_connector(&r, &c));
}

#[test]
fn each_required_pattern_needs_its_own_tool() {
    let r = rule_with(SLACK, Some(&["get_*", "list_*"]), HintFilter::default());
    let c = connector("conn_s", SLACK, tools(&["get_user"]));
    assert!(!rule_matches_connector(&r, &c));
    let c = connector("conn_s", SLACK, tools(&["get_user", "list_channels"]));
    assert!(rule_matches_connector(&r, &c));
}

#[test]
fn hints_without_required_do_not_affect_eligibility() {
    // No required pattern means nothing to satisfy: eligible, even if no tool
    // passes the hints (the ceiling then hides every tool).
    let hints = HintFilter {
        read_only: Some(true),
        ..HintFilter::default()
    };
    let c = connector("conn_s", SLACK, tools(&["send_message"]));
    for r in [
        rule_with(SLACK, None, hints),
        rule_with(SLACK, Some(&["*"]), hints),
    ] {
        assert!(rule_matches_connector(&r, &c), "{r:?}");
        assert!(!rule_allows_tool(&r, &c.tools[0]));
    }
}
