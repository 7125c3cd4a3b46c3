//! Exact names, `*` patterns, no match, settings.

use portcullis_policy_sdk::testing::{connector, simple_context, tool, tools};
use portcullis_policy_sdk::{Context, Policy, ResultVerdict, Verdict};

use super::Blocklist;

fn ctx(disabled: &[&str], names: &[&str]) -> Context {
    let mut c = connector("conn_gh", "https://mcp.github.com/mcp", tools(names));
    c.disabled_tools = disabled.iter().map(|s| s.to_string()).collect();
    simple_context(c)
}

/// The names filter_tools lets through; check_call must agree with each verdict.
fn listed(c: &Context) -> Vec<String> {
    let v = Blocklist::filter_tools("{}", c);
    assert_eq!(v.len(), c.connector.tools.len());
    for (t, v) in c.connector.tools.iter().zip(&v) {
        assert_eq!(&Blocklist::check_call("{}", c, t, "{}"), v);
    }
    c.connector
        .tools
        .iter()
        .zip(&v)
        .filter(|(_, v)| v.is_allow())
        .map(|(t, _)| t.name.clone())
        .collect()
}

const NAMES: &[&str] = &[
    "get_repo",
    "delete_repo",
    "delete_issue",
    "list_issues",
    "undelete_repo",
    "delete",
];

#[test]
fn nothing_disabled_lists_everything() {
    assert_eq!(listed(&ctx(&[], NAMES)), NAMES);
}

#[test]
fn exact_name() {
    let c = ctx(&["delete_repo"], NAMES);
    assert_eq!(
        listed(&c),
        [
            "get_repo",
            "delete_issue",
            "list_issues",
            "undelete_repo",
            "delete"
        ]
    );
    let v = Blocklist::check_call("{}", &c, &tool("delete_repo"), "{}");
    let d = v.denial().unwrap();
    assert_eq!(d.code, -32601);
    assert_eq!(d.message, "Tool not found");
    assert_eq!(
        d.reason,
        "tool delete_repo is disabled on connector conn_gh by `delete_repo`"
    );
}

#[test]
fn wildcard() {
    let c = ctx(&["delete_*"], NAMES);
    assert_eq!(
        listed(&c),
        ["get_repo", "list_issues", "undelete_repo", "delete"]
    );
    let d = Blocklist::check_call("{}", &c, &tool("delete_issue"), "{}");
    assert_eq!(
        d.denial().unwrap().reason,
        "tool delete_issue is disabled on connector conn_gh by `delete_*`"
    );
    let c = ctx(&["*delete*"], NAMES);
    assert_eq!(listed(&c), ["get_repo", "list_issues"]);
    let c = ctx(&["*"], NAMES);
    assert!(listed(&c).is_empty());
}

#[test]
fn reason_names_the_first_matching_entry() {
    let c = ctx(&["get_*", "delete_*", "delete_repo"], NAMES);
    assert_eq!(listed(&c), ["list_issues", "undelete_repo", "delete"]);
    let d = Blocklist::check_call("{}", &c, &tool("delete_repo"), "{}");
    assert!(d.denial().unwrap().reason.ends_with("by `delete_*`"));
}

#[test]
fn no_match_allows() {
    let c = ctx(&["drop_*", "Delete_repo", "delete_repo_", ""], NAMES);
    assert_eq!(listed(&c), NAMES);
    // A call to a tool the connector does not list is judged by name alone.
    assert_eq!(
        Blocklist::check_call("{}", &c, &tool("unknown"), "{}"),
        Verdict::Allow
    );
}

#[test]
fn result_passes() {
    let c = ctx(&["*"], NAMES);
    assert_eq!(
        Blocklist::check_result("{}", &c, &tool("get_repo"), "{}"),
        ResultVerdict::Pass
    );
}

#[test]
fn settings_must_be_empty() {
    assert_eq!(Blocklist::validate_settings("{}"), Ok(()));
    assert_eq!(Blocklist::validate_settings(""), Ok(()));
    assert_eq!(
        Blocklist::validate_settings(r#"{"disabled_tools": ["x"]}"#),
        Err("unknown settings key `disabled_tools`".to_string())
    );
    assert!(Blocklist::validate_settings("42").is_err());
}
