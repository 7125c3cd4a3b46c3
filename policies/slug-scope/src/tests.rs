//! Scopes: `mcp:call`, `mcp:call:<id>`, wrong ids, prefix tricks, no scope.

use portcullis_policy_sdk::testing::{connector, context, identity, tools};
use portcullis_policy_sdk::{Context, Policy, ResultVerdict, Verdict};

use super::SlugScope;

fn ctx(scopes: &[&str], connector_id: &str) -> Context {
    context(
        identity("reporter", "acme", scopes),
        None,
        connector(
            connector_id,
            "https://mcp.example.com/mcp",
            tools(&["get_report", "delete_report"]),
        ),
    )
}

/// filter_tools and check_call of every tool, which must agree.
fn verdicts(scopes: &[&str], connector_id: &str) -> Vec<Verdict> {
    let c = ctx(scopes, connector_id);
    let listed = SlugScope::filter_tools("{}", &c);
    assert_eq!(listed.len(), c.connector.tools.len());
    for (tool, v) in c.connector.tools.iter().zip(&listed) {
        assert_eq!(&SlugScope::check_call("{}", &c, tool, "{}"), v);
    }
    listed
}

fn allowed(scopes: &[&str], connector_id: &str) -> bool {
    let v = verdicts(scopes, connector_id);
    let all = v.iter().all(Verdict::is_allow);
    assert_eq!(all, v.iter().any(Verdict::is_allow), "mixed verdicts {v:?}");
    all
}

#[test]
fn mcp_call_reaches_every_connector() {
    assert!(allowed(&["mcp:call"], "conn_a"));
    assert!(allowed(&["mcp:call"], "conn_slack"));
    assert!(allowed(&["other", "mcp:call"], "conn_x"));
}

#[test]
fn connector_scope_reaches_only_that_connector() {
    assert!(allowed(&["mcp:call:conn_a"], "conn_a"));
    assert!(!allowed(&["mcp:call:conn_a"], "conn_b"));
    assert!(allowed(&["mcp:call:conn_b", "mcp:call:conn_a"], "conn_a"));
}

#[test]
fn prefix_tricks_do_not_reach() {
    // Exact id match only: no prefix, suffix, case or glob games.
    assert!(!allowed(&["mcp:call:conn_a"], "conn_ab"));
    assert!(!allowed(&["mcp:call:conn_ab"], "conn_a"));
    assert!(!allowed(&["mcp:call:"], "conn_a"));
    assert!(!allowed(&["mcp:call:*"], "conn_a"));
    assert!(!allowed(&["mcp:call:conn_*"], "conn_a"));
    assert!(!allowed(&["mcp:call:CONN_A"], "conn_a"));
    assert!(!allowed(&["mcp:call:conn_a "], "conn_a"));
    assert!(!allowed(&["mcp:callconn_a"], "conn_a"));
    assert!(!allowed(&["mcp:call:mcp:call:conn_a"], "conn_a"));
    assert!(!allowed(&["mcp:calls"], "conn_a"));
    assert!(!allowed(&["MCP:CALL"], "conn_a"));
    assert!(!allowed(&["mcp:call "], "conn_a"));
    assert!(!allowed(&["mcp"], "conn_a"));
    assert!(!allowed(&["*"], "conn_a"));
    assert!(!allowed(&[""], "conn_a"));
    // An empty connector id is never reached by `mcp:call:`.
    assert!(!allowed(&["mcp:call:"], ""));
}

#[test]
fn no_scope_is_insufficient() {
    let v = verdicts(&[], "conn_x");
    for v in v {
        let d = v.denial().unwrap();
        assert_eq!(d.code, -32003);
        assert_eq!(d.message, "Insufficient scope");
        assert_eq!(
            d.reason,
            "agent reporter has no scope for connector conn_x (scopes: none)"
        );
    }
}

#[test]
fn denial_names_agent_connector_and_scopes() {
    let v = verdicts(&["mcp:call:conn_y", "files:read"], "conn_x");
    let d = v[1].denial().unwrap();
    assert_eq!(d.code, -32003);
    assert_eq!(d.message, "Insufficient scope");
    assert_eq!(
        d.reason,
        "agent reporter has no scope for connector conn_x (scopes: mcp:call:conn_y, files:read)"
    );
}

#[test]
fn connector_without_tools_gets_no_verdicts() {
    let mut c = ctx(&[], "conn_x");
    c.connector.tools.clear();
    assert!(SlugScope::filter_tools("{}", &c).is_empty());
}

#[test]
fn result_passes() {
    let c = ctx(&[], "conn_x");
    let t = c.connector.tools[0].clone();
    assert_eq!(
        SlugScope::check_result("{}", &c, &t, r#"{"content":[]}"#),
        ResultVerdict::Pass
    );
}

#[test]
fn settings_must_be_empty() {
    for ok in ["", "{}", "null", " {} "] {
        assert_eq!(SlugScope::validate_settings(ok), Ok(()), "{ok:?}");
    }
    assert_eq!(
        SlugScope::validate_settings(r#"{"scope": "mcp:call"}"#),
        Err("unknown settings key `scope`".to_string())
    );
    assert!(SlugScope::validate_settings("[]").is_err());
    assert!(SlugScope::validate_settings("{").is_err());
}
