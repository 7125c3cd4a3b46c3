//! Scopes: `mcp:call`, `mcp:call:<id>`, wrong ids, prefix tricks, no scope; the
//! same answer for tools, resources, templates and prompts, listed or requested.

use portcullis_policy_sdk::testing::{
    completion, connector, context, identity, prompt_get, prompts, resource, template, tools,
};
use portcullis_policy_sdk::{
    Context, Policy, PromptAction, Resource, ResourceAction, ResultVerdict, Verdict,
    item_rules_manifest,
};

use super::SlugScope;

fn items() -> Vec<Resource> {
    vec![
        resource("file:///reports/q1.md", "q1"),
        template("file:///reports/{name}", "reports"),
    ]
}

/// filter_resources and check_resource for every action, which must agree.
fn resource_verdicts(c: &Context) -> Vec<Verdict> {
    let listed = SlugScope::filter_resources("{}", c, &items());
    assert_eq!(listed.len(), items().len());
    let actions = [
        ResourceAction::Read,
        ResourceAction::Subscribe,
        ResourceAction::Complete(completion("name", "q")),
    ];
    for (item, v) in items().iter().zip(&listed) {
        for action in &actions {
            assert_eq!(&SlugScope::check_resource("{}", c, item, action), v);
        }
    }
    listed
}

/// filter_prompts and check_prompt for every action, which must agree.
fn prompt_verdicts(c: &Context) -> Vec<Verdict> {
    let ps = prompts(&["summarise", "draft_reply"]);
    let listed = SlugScope::filter_prompts("{}", c, &ps);
    assert_eq!(listed.len(), ps.len());
    let actions = [
        prompt_get("{}"),
        PromptAction::Complete(completion("topic", "x")),
    ];
    for (item, v) in ps.iter().zip(&listed) {
        for action in &actions {
            assert_eq!(&SlugScope::check_prompt("{}", c, item, action), v);
        }
    }
    listed
}

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

/// filter_tools and check_call of every tool, which must agree; resources and
/// prompts, listed or requested, must get the very same verdict.
fn verdicts(scopes: &[&str], connector_id: &str) -> Vec<Verdict> {
    let c = ctx(scopes, connector_id);
    let listed = SlugScope::filter_tools("{}", &c);
    assert_eq!(listed.len(), c.connector.tools.len());
    for (tool, v) in c.connector.tools.iter().zip(&listed) {
        assert_eq!(&SlugScope::check_call("{}", &c, tool, "{}"), v);
    }
    for v in resource_verdicts(&c).iter().chain(&prompt_verdicts(&c)) {
        assert_eq!(v, &listed[0], "resources and prompts follow the tools");
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
fn resources_and_prompts_without_scope_are_insufficient() {
    let c = ctx(&["mcp:call:conn_y"], "conn_x");
    let hidden: Vec<Verdict> = resource_verdicts(&c)
        .into_iter()
        .chain(prompt_verdicts(&c))
        .collect();
    assert_eq!(hidden.len(), 4);
    for v in hidden {
        let d = v.denial().unwrap();
        assert_eq!((d.code, d.message.as_str()), (-32003, "Insufficient scope"));
        assert_eq!(
            d.reason,
            "agent reporter has no scope for connector conn_x (scopes: mcp:call:conn_y)"
        );
    }
    let c = ctx(&["mcp:call:conn_x"], "conn_x");
    assert!(resource_verdicts(&c).iter().all(Verdict::is_allow));
    assert!(prompt_verdicts(&c).iter().all(Verdict::is_allow));
}

#[test]
fn empty_lists_get_no_verdicts() {
    let mut c = ctx(&[], "conn_x");
    c.connector.tools.clear();
    assert!(SlugScope::filter_tools("{}", &c).is_empty());
    assert!(SlugScope::filter_resources("{}", &c, &[]).is_empty());
    assert!(SlugScope::filter_prompts("{}", &c, &[]).is_empty());
}

#[test]
fn results_pass() {
    let c = ctx(&[], "conn_x");
    let t = c.connector.tools[0].clone();
    assert_eq!(
        SlugScope::check_result("{}", &c, &t, r#"{"content":[]}"#),
        ResultVerdict::Pass
    );
    assert_eq!(
        SlugScope::check_resource_contents("{}", &c, &items()[0], r#"{"contents":[]}"#),
        ResultVerdict::Pass
    );
    let p = &prompts(&["summarise"])[0];
    assert_eq!(
        SlugScope::check_prompt_result("{}", &c, p, r#"{"messages":[]}"#),
        ResultVerdict::Pass
    );
}

#[test]
fn manifest_covers_every_filter_and_check_deterministically() {
    let m = SlugScope::describe("{}");
    assert_eq!(m, item_rules_manifest());
    assert!(m.filter_tools && m.check_call && m.filter_resources && m.check_resource);
    assert!(m.filter_prompts && m.check_prompt && m.deterministic);
    assert!(!m.check_result && !m.check_resource_contents && !m.check_prompt_result);
    assert!(!m.reads_connector_tools && !m.reads_arguments && !m.reads_tool_definitions);
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
