//! The `Guest` bridge and the `Policy` defaults, exercised natively: the layering
//! of item checks under filters and request checks for tools, resources and
//! prompts, the fail-closed length check of every batched filter, the manifests.

use super::Exported;
use crate::bindings::Guest;
use crate::testing::{
    completion, connector, prompt, prompt_get, prompts, resource, simple_context, template, tools,
};
use crate::{
    Context, PROMPT_NOT_FOUND, Policy, Prompt, PromptAction, RESOURCE_NOT_FOUND, Resource,
    ResourceAction, ResultVerdict, TOOL_NOT_FOUND, Tool, Verdict,
};

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

/// Hides `*secret*` resources and prompts, through the item checks only.
struct HideSecrets;
impl Policy for HideSecrets {
    fn check_resource_item(_settings: &str, _ctx: &Context, item: &Resource) -> Verdict {
        if item.uri.contains("secret") {
            RESOURCE_NOT_FOUND.deny(format!("resource {} is secret", item.uri))
        } else {
            Verdict::Allow
        }
    }

    fn check_prompt_item(_settings: &str, _ctx: &Context, item: &Prompt) -> Verdict {
        if item.name.contains("secret") {
            PROMPT_NOT_FOUND.deny(format!("prompt {} is secret", item.name))
        } else {
            Verdict::Allow
        }
    }
}

/// Every batched filter answers one verdict, whatever the number of items.
struct WrongLength;
impl Policy for WrongLength {
    fn filter_tools(_settings: &str, _ctx: &Context) -> Vec<Verdict> {
        vec![Verdict::Allow]
    }

    fn filter_resources(_settings: &str, _ctx: &Context, _items: &[Resource]) -> Vec<Verdict> {
        vec![Verdict::Allow]
    }

    fn filter_prompts(_settings: &str, _ctx: &Context, _items: &[Prompt]) -> Vec<Verdict> {
        vec![Verdict::Allow]
    }
}

fn items() -> Vec<Resource> {
    vec![
        resource("file:///docs/readme.md", "readme"),
        resource("file:///vault/secret.txt", "vault"),
        template("file:///secrets/{name}", "secrets"),
        template("file:///docs/{path}", "docs"),
    ]
}

fn resource_actions() -> [ResourceAction; 3] {
    [
        ResourceAction::Read,
        ResourceAction::Subscribe,
        ResourceAction::Complete(completion("name", "a")),
    ]
}

fn prompt_actions() -> [PromptAction; 2] {
    [
        prompt_get(r#"{"topic":"x"}"#),
        PromptAction::Complete(completion("topic", "x")),
    ]
}

fn is_internal_error(v: &Verdict) -> bool {
    v.denial().is_some_and(|d| d.code == -32603)
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
fn resource_and_prompt_defaults_allow_and_pass() {
    type G = Exported<AllDefaults>;
    let c = ctx();
    assert_eq!(
        G::filter_resources("{}".into(), c.clone(), items()),
        vec![Verdict::Allow; 4]
    );
    for action in resource_actions() {
        let v = G::check_resource("{}".into(), c.clone(), items()[1].clone(), action);
        assert_eq!(v, Verdict::Allow);
    }
    let contents = r#"{"contents":[{"uri":"file:///vault/secret.txt","text":"x"}]}"#;
    assert_eq!(
        G::check_resource_contents("{}".into(), c.clone(), items()[1].clone(), contents.into()),
        ResultVerdict::Pass
    );
    let ps = prompts(&["summarise", "secret_plan"]);
    assert_eq!(
        G::filter_prompts("{}".into(), c.clone(), ps.clone()),
        vec![Verdict::Allow; 2]
    );
    for action in prompt_actions() {
        let v = G::check_prompt("{}".into(), c.clone(), ps[1].clone(), action);
        assert_eq!(v, Verdict::Allow);
    }
    assert_eq!(
        G::check_prompt_result("{}".into(), c, ps[1].clone(), r#"{"messages":[]}"#.into()),
        ResultVerdict::Pass
    );
}

#[test]
fn check_resource_item_drives_list_and_every_action() {
    type G = Exported<HideSecrets>;
    let c = ctx();
    let listed = G::filter_resources("{}".into(), c.clone(), items());
    let allowed: Vec<bool> = listed.iter().map(Verdict::is_allow).collect();
    assert_eq!(allowed, [true, false, false, true]);
    let d = listed[1].denial().unwrap();
    assert_eq!((d.code, d.message.as_str()), (-32002, "Resource not found"));
    assert_eq!(d.reason, "resource file:///vault/secret.txt is secret");
    for (item, verdict) in items().into_iter().zip(&listed) {
        for action in resource_actions() {
            let v = G::check_resource("{}".into(), c.clone(), item.clone(), action);
            assert_eq!(&v, verdict, "{}", item.uri);
        }
    }
    // The result hook is not an item check: it still passes.
    let v = G::check_resource_contents("{}".into(), c, items()[1].clone(), "{}".into());
    assert_eq!(v, ResultVerdict::Pass);
}

#[test]
fn check_prompt_item_drives_list_and_every_action() {
    type G = Exported<HideSecrets>;
    let c = ctx();
    let ps = prompts(&["summarise", "secret_plan", "review"]);
    let listed = G::filter_prompts("{}".into(), c.clone(), ps.clone());
    let allowed: Vec<bool> = listed.iter().map(Verdict::is_allow).collect();
    assert_eq!(allowed, [true, false, true]);
    let d = listed[1].denial().unwrap();
    assert_eq!((d.code, d.message.as_str()), (-32602, "Prompt not found"));
    assert_eq!(d.reason, "prompt secret_plan is secret");
    for (item, verdict) in ps.into_iter().zip(&listed) {
        for action in prompt_actions() {
            let v = G::check_prompt("{}".into(), c.clone(), item.clone(), action);
            assert_eq!(&v, verdict, "{}", item.name);
        }
    }
    let v = G::check_prompt_result("{}".into(), c, prompt("secret_plan"), "{}".into());
    assert_eq!(v, ResultVerdict::Pass);
}

#[test]
fn empty_lists_get_no_verdicts() {
    type G = Exported<HideSecrets>;
    assert!(G::filter_resources("{}".into(), ctx(), vec![]).is_empty());
    assert!(G::filter_prompts("{}".into(), ctx(), vec![]).is_empty());
}

#[test]
fn wrong_length_fails_closed() {
    type G = Exported<WrongLength>;
    let v = G::filter_tools("{}".into(), ctx());
    assert_eq!(v.len(), 3);
    assert!(v.iter().all(is_internal_error));
    let v = G::filter_resources("{}".into(), ctx(), items());
    assert_eq!(v.len(), 4);
    assert!(v.iter().all(is_internal_error));
    let d = v[0].denial().unwrap();
    assert_eq!(
        d.reason,
        "policy returned a verdict list of the wrong length"
    );
    let v = G::filter_prompts("{}".into(), ctx(), prompts(&["a", "b", "c", "d", "e"]));
    assert_eq!(v.len(), 5);
    assert!(v.iter().all(is_internal_error));
}

#[test]
fn right_length_is_kept() {
    // One item: the single verdict is the right length and is passed through.
    type G = Exported<WrongLength>;
    let one = vec![resource("file:///a", "a")];
    assert_eq!(
        G::filter_resources("{}".into(), ctx(), one),
        vec![Verdict::Allow]
    );
    assert_eq!(
        G::filter_prompts("{}".into(), ctx(), prompts(&["p"])),
        vec![Verdict::Allow]
    );
    // No item: one verdict is too many, and an empty list is the answer.
    assert!(G::filter_prompts("{}".into(), ctx(), vec![]).is_empty());
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
    let d = RESOURCE_NOT_FOUND.denial("r");
    assert_eq!((d.code, d.message.as_str()), (-32002, "Resource not found"));
    let d = PROMPT_NOT_FOUND.denial("r");
    assert_eq!((d.code, d.message.as_str()), (-32602, "Prompt not found"));
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
    assert!(m.reads_connector_tools && m.reads_arguments && m.reads_tool_definitions);
    assert!(m.filter_resources && m.check_resource && m.check_resource_contents);
    assert!(m.filter_prompts && m.check_prompt && m.check_prompt_result);
    assert!(!m.deterministic, "reuse must be opted into");
}

#[test]
fn tool_rules_manifest_governs_tools_only() {
    let m = crate::tool_rules_manifest();
    assert!(m.filter_tools && m.check_call && m.deterministic);
    assert!(!m.check_result && !m.reads_connector_tools && !m.reads_arguments);
    assert!(!m.reads_tool_definitions);
    assert!(!m.filter_resources && !m.check_resource && !m.check_resource_contents);
    assert!(!m.filter_prompts && !m.check_prompt && !m.check_prompt_result);
}

#[test]
fn item_rules_manifest_governs_every_kind_without_result_hooks() {
    let m = crate::item_rules_manifest();
    assert!(m.filter_tools && m.check_call);
    assert!(m.filter_resources && m.check_resource);
    assert!(m.filter_prompts && m.check_prompt);
    assert!(m.deterministic);
    assert!(!m.check_result && !m.check_resource_contents && !m.check_prompt_result);
    assert!(!m.reads_connector_tools && !m.reads_arguments && !m.reads_tool_definitions);
}
