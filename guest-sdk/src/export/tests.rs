//! The `Guest` bridge and the `Policy` defaults, exercised natively.

use super::Exported;
use crate::bindings::Guest;
use crate::testing::{connector, simple_context, tools};
use crate::{Context, Policy, ResultVerdict, TOOL_NOT_FOUND, Tool, Verdict};

struct AllDefaults;
impl Policy for AllDefaults {}

struct HideDeletes;
impl Policy for HideDeletes {
    fn check_tool(_settings: &str, _ctx: &Context, tool: &Tool) -> Verdict {
        if tool.name.starts_with("delete_") {
            TOOL_NOT_FOUND.deny(format!("tool {} is a delete tool", tool.name))
        } else {
            Verdict::Allow
        }
    }
}

struct WrongLength;
impl Policy for WrongLength {
    fn filter_tools(_settings: &str, _ctx: &Context) -> Vec<Verdict> {
        vec![Verdict::Allow]
    }
}

fn ctx() -> Context {
    simple_context(connector(
        "conn_gh",
        "https://mcp.github.com/mcp",
        tools(&["get_repo", "delete_repo", "list_issues"]),
    ))
}

#[test]
fn defaults_allow_and_pass() {
    let c = ctx();
    type G = Exported<AllDefaults>;
    assert_eq!(G::validate_settings("{}".into()), Ok(()));
    assert_eq!(G::validate_settings("".into()), Ok(()));
    assert!(G::validate_settings("{nope".into()).is_err());
    assert_eq!(
        G::filter_tools("{}".into(), c.clone()),
        vec![Verdict::Allow; 3]
    );
    let t = c.connector.tools[1].clone();
    assert_eq!(
        G::check_call("{}".into(), c.clone(), t.clone(), "{}".into()),
        Verdict::Allow
    );
    assert_eq!(
        G::check_result("{}".into(), c, t, "{}".into()),
        ResultVerdict::Pass
    );
}

#[test]
fn check_tool_drives_list_and_call() {
    let c = ctx();
    type G = Exported<HideDeletes>;
    let v = G::filter_tools("{}".into(), c.clone());
    assert_eq!(v[0], Verdict::Allow);
    assert_eq!(v[1].denial().unwrap().code, -32601);
    assert_eq!(v[1].denial().unwrap().message, "Tool not found");
    assert_eq!(
        v[1].denial().unwrap().reason,
        "tool delete_repo is a delete tool"
    );
    assert_eq!(v[2], Verdict::Allow);
    let call = G::check_call(
        "{}".into(),
        c.clone(),
        c.connector.tools[1].clone(),
        "{}".into(),
    );
    assert_eq!(call, v[1]);
}

#[test]
fn wrong_length_fails_closed() {
    let v = Exported::<WrongLength>::filter_tools("{}".into(), ctx());
    assert_eq!(v.len(), 3);
    assert!(
        v.iter()
            .all(|v| v.denial().is_some_and(|d| d.code == -32603))
    );
}

#[test]
fn verdict_constructors() {
    let v = crate::deny(-32000, "Quota", "org over quota");
    assert!(!v.is_allow());
    assert_eq!(v.denial().unwrap().reason, "org over quota");
    assert!(crate::allow().is_allow());
    assert_eq!(
        crate::INSUFFICIENT_SCOPE.deny("r").denial().unwrap().code,
        -32003
    );
    assert_eq!(
        ResultVerdict::deny(1, "m", "r"),
        ResultVerdict::Deny(crate::Denial {
            code: 1,
            message: "m".into(),
            reason: "r".into()
        })
    );
    crate::log(crate::Level::Info, "native log goes to stderr");
}

#[test]
fn a_policy_that_says_nothing_is_described_as_doing_everything() {
    let m = <Exported<AllDefaults> as Guest>::describe("{}".into());
    assert_eq!(m, crate::manifest());
    assert!(m.filter_tools && m.check_call && m.check_result);
    assert!(m.reads_connector_tools && m.reads_arguments);
    assert!(!m.deterministic, "reuse must be opted into");
}
