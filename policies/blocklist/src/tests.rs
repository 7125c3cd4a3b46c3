//! Exact names, `*` patterns, no match, settings; prompts by name, resources and
//! templates by URI and by name, each list apart from the others.

use portcullis_policy_sdk::testing::{
    completion, connector, prompt, prompt_get, prompts, resource, simple_context, template, tool,
    tools, with_blocklists,
};
use portcullis_policy_sdk::{
    Context, Policy, Prompt, PromptAction, Resource, ResourceAction, ResultVerdict, Verdict,
    item_rules_manifest,
};

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

// ---- Prompts -------------------------------------------------------------------

/// A context whose connector blocks these prompts and resources (no tools).
fn items_ctx(disabled_prompts: &[&str], disabled_resources: &[&str]) -> Context {
    let c = connector("conn_docs", "https://docs.example/mcp", tools(NAMES));
    simple_context(with_blocklists(
        c,
        &[],
        disabled_prompts,
        disabled_resources,
    ))
}

const PROMPTS: &[&str] = &["summarise", "draft_reply", "admin_reset", "admin"];

/// The prompt names filter_prompts lets through; check_prompt must agree for
/// every action.
fn listed_prompts(c: &Context, items: &[Prompt]) -> Vec<String> {
    let v = Blocklist::filter_prompts("{}", c, items);
    assert_eq!(v.len(), items.len());
    let actions = [
        prompt_get(r#"{"topic":"x"}"#),
        PromptAction::Complete(completion("topic", "x")),
    ];
    for (p, v) in items.iter().zip(&v) {
        for action in &actions {
            assert_eq!(
                &Blocklist::check_prompt("{}", c, p, action),
                v,
                "{}",
                p.name
            );
        }
    }
    items
        .iter()
        .zip(&v)
        .filter(|(_, v)| v.is_allow())
        .map(|(p, _)| p.name.clone())
        .collect()
}

#[test]
fn prompts_by_exact_name_and_pattern() {
    let all = prompts(PROMPTS);
    assert_eq!(listed_prompts(&items_ctx(&[], &[]), &all), PROMPTS);
    let c = items_ctx(&["draft_reply"], &[]);
    assert_eq!(
        listed_prompts(&c, &all),
        ["summarise", "admin_reset", "admin"]
    );
    let c = items_ctx(&["admin_*"], &[]);
    assert_eq!(
        listed_prompts(&c, &all),
        ["summarise", "draft_reply", "admin"]
    );
    let c = items_ctx(&["*"], &[]);
    assert!(listed_prompts(&c, &all).is_empty());
}

#[test]
fn a_blocked_prompt_is_not_found() {
    let c = items_ctx(&["summarise", "admin*"], &[]);
    let v = Blocklist::check_prompt("{}", &c, &prompt("admin_reset"), &prompt_get("{}"));
    let d = v.denial().unwrap();
    assert_eq!((d.code, d.message.as_str()), (-32602, "Prompt not found"));
    assert_eq!(
        d.reason,
        "prompt admin_reset is disabled on connector conn_docs by `admin*`"
    );
    // A prompt the connector does not list is judged by name alone.
    assert!(Blocklist::check_prompt("{}", &c, &prompt("other"), &prompt_get("{}")).is_allow());
}

// ---- Resources -----------------------------------------------------------------

fn all_resources() -> Vec<Resource> {
    vec![
        resource("file:///docs/readme.md", "readme"),
        resource("file:///secrets/keys.txt", "keys"),
        resource("db://prod/users", "users"),
        template("file:///secrets/{name}", "secret-files"),
        template("file:///docs/{path}", "docs"),
    ]
}

/// The URIs filter_resources lets through; check_resource must agree for every
/// action.
fn listed_resources(c: &Context) -> Vec<String> {
    let items = all_resources();
    let v = Blocklist::filter_resources("{}", c, &items);
    assert_eq!(v.len(), items.len());
    let actions = [
        ResourceAction::Read,
        ResourceAction::Subscribe,
        ResourceAction::Complete(completion("name", "k")),
    ];
    for (r, v) in items.iter().zip(&v) {
        for action in &actions {
            assert_eq!(
                &Blocklist::check_resource("{}", c, r, action),
                v,
                "{}",
                r.uri
            );
        }
    }
    items
        .iter()
        .zip(&v)
        .filter(|(_, v)| v.is_allow())
        .map(|(r, _)| r.uri.clone())
        .collect()
}

#[test]
fn resources_by_uri() {
    let every: Vec<String> = all_resources().into_iter().map(|r| r.uri).collect();
    assert_eq!(listed_resources(&items_ctx(&[], &[])), every);
    let c = items_ctx(&[], &["db://prod/users"]);
    assert_eq!(listed_resources(&c).len(), 4);
    assert!(!listed_resources(&c).contains(&"db://prod/users".to_string()));
    // A URI pattern catches resources and the templates whose text it matches.
    let c = items_ctx(&[], &["file:///secrets/*"]);
    assert_eq!(
        listed_resources(&c),
        [
            "file:///docs/readme.md",
            "db://prod/users",
            "file:///docs/{path}"
        ]
    );
    // The exact text of a template blocks the template.
    let c = items_ctx(&[], &["file:///docs/{path}"]);
    assert!(!listed_resources(&c).contains(&"file:///docs/{path}".to_string()));
    assert!(listed_resources(&c).contains(&"file:///docs/readme.md".to_string()));
}

#[test]
fn resources_by_name() {
    let c = items_ctx(&[], &["keys", "secret-*"]);
    assert_eq!(
        listed_resources(&c),
        [
            "file:///docs/readme.md",
            "db://prod/users",
            "file:///docs/{path}"
        ]
    );
}

#[test]
fn a_blocked_resource_is_not_found() {
    let c = items_ctx(&[], &["*.txt", "secret-files"]);
    let v = Blocklist::check_resource(
        "{}",
        &c,
        &resource("file:///secrets/keys.txt", "keys"),
        &ResourceAction::Read,
    );
    let d = v.denial().unwrap();
    assert_eq!((d.code, d.message.as_str()), (-32002, "Resource not found"));
    assert_eq!(
        d.reason,
        "resource file:///secrets/keys.txt is disabled on connector conn_docs by `*.txt`"
    );
    let v = Blocklist::filter_resources(
        "{}",
        &c,
        &[template("file:///secrets/{name}", "secret-files")],
    );
    assert_eq!(
        v[0].denial().unwrap().reason,
        "resource template file:///secrets/{name} is disabled on connector conn_docs by \
         `secret-files`"
    );
}

#[test]
fn a_concrete_uri_under_a_blocked_template_is_caught_by_name_or_uri_pattern() {
    // What the gateway passes for a read of a URI only a template lists: the
    // template's metadata with the concrete URI.
    let mut read = template("file:///secrets/{name}", "secret-files");
    read.uri = "file:///secrets/db.txt".to_string();
    let refused = |blocked: &[&str]| {
        let c = items_ctx(&[], blocked);
        !Blocklist::check_resource("{}", &c, &read, &ResourceAction::Read).is_allow()
    };
    assert!(refused(&["secret-files"]));
    assert!(refused(&["file:///secrets/*"]));
    assert!(!refused(&["file:///secrets/{name}"]));
    assert!(!refused(&["file:///docs/*", "keys"]));
}

#[test]
fn each_blocklist_governs_its_own_kind() {
    let c = connector("conn_docs", "https://docs.example/mcp", tools(NAMES));
    // Every tool blocked: prompts and resources stay.
    let c = simple_context(with_blocklists(c, &["*"], &[], &[]));
    assert!(listed(&c).is_empty());
    assert_eq!(listed_prompts(&c, &prompts(PROMPTS)), PROMPTS);
    assert_eq!(listed_resources(&c).len(), 5);
    // A prompt entry does not block a resource or tool of that name, and back.
    let c = items_ctx(&["readme", "get_repo"], &["summarise"]);
    assert_eq!(listed(&c), NAMES);
    assert_eq!(listed_prompts(&c, &prompts(PROMPTS)), PROMPTS);
    assert_eq!(listed_resources(&c).len(), 5);
}

#[test]
fn resource_and_prompt_results_pass() {
    let c = items_ctx(&["*"], &["*"]);
    let r = resource("file:///secrets/keys.txt", "keys");
    assert_eq!(
        Blocklist::check_resource_contents("{}", &c, &r, r#"{"contents":[]}"#),
        ResultVerdict::Pass
    );
    assert_eq!(
        Blocklist::check_prompt_result("{}", &c, &prompt("admin"), r#"{"messages":[]}"#),
        ResultVerdict::Pass
    );
}

#[test]
fn manifest_covers_every_filter_and_check() {
    let m = Blocklist::describe("{}");
    assert_eq!(m, item_rules_manifest());
    assert!(m.filter_tools && m.check_call && m.deterministic);
    assert!(m.filter_resources && m.check_resource && m.filter_prompts && m.check_prompt);
    assert!(!m.check_resource_contents && !m.check_prompt_result && !m.check_result);
}
