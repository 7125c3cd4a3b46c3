//! The seed document's hint table, identity scoping, settings validation.

use portcullis_policy_sdk::serde_json::{Map, Value, json};
use portcullis_policy_sdk::testing::{
    HINT_TABLE, annotations, connector, context, identity, tool, tool_with,
};
use portcullis_policy_sdk::{Context, Hint, HintFilter, Policy, ResultVerdict, Tool, Verdict};

use super::{AnnotationHints, Settings};

fn settings_key(hint: Hint) -> &'static str {
    match hint {
        Hint::ReadOnly => "read_only",
        Hint::Destructive => "destructive",
        Hint::Idempotent => "idempotent",
        Hint::OpenWorld => "open_world",
    }
}

fn ctx_for(agent: &str, org: &str, tools: Vec<Tool>) -> Context {
    context(
        identity(agent, org, &["mcp:call"]),
        None,
        connector("conn_x", "https://mcp.example.com/mcp", tools),
    )
}

/// filter_tools verdicts; check_call of each tool must agree.
fn run(settings: &str, c: &Context) -> Vec<Verdict> {
    let v = AnnotationHints::filter_tools(settings, c);
    assert_eq!(v.len(), c.connector.tools.len());
    for (t, v) in c.connector.tools.iter().zip(&v) {
        assert_eq!(&AnnotationHints::check_call(settings, c, t, "{}"), v);
    }
    v
}

#[test]
fn hint_table_through_filter_and_call() {
    for case in HINT_TABLE {
        let mut s = Map::new();
        if let Some(required) = case.required {
            s.insert(settings_key(case.hint).into(), Value::Bool(required));
        }
        let settings = Value::Object(s).to_string();
        assert_eq!(AnnotationHints::validate_settings(&settings), Ok(()));
        let t = tool_with("the_tool", case.annotations());
        let c = ctx_for("agent", "org", vec![tool("other"), t.clone()]);
        let v = run(&settings, &c);
        assert_eq!(v[1].is_allow(), case.passes, "{case:?}");
        let call = AnnotationHints::check_call(&settings, &c, &t, "{}");
        assert_eq!(call.is_allow(), case.passes, "{case:?}");
        if !case.passes {
            let d = call.denial().unwrap();
            assert_eq!((d.code, d.message.as_str()), (-32601, "Tool not found"));
            assert!(d.reason.starts_with("tool the_tool of connector conn_x: "));
            assert!(d.reason.contains(case.hint.name()), "{}", d.reason);
        }
    }
}

#[test]
fn several_hints_must_all_pass() {
    let settings = r#"{"read_only": true, "destructive": false, "idempotent": true}"#;
    let c = ctx_for(
        "a",
        "o",
        vec![
            tool_with(
                "list",
                annotations(Some(true), Some(false), Some(true), None),
            ),
            tool_with("get", annotations(Some(true), None, Some(true), None)),
            tool_with(
                "send",
                annotations(Some(false), Some(false), Some(true), None),
            ),
            tool("unannotated"),
            tool_with("wipe", annotations(Some(true), Some(true), None, None)),
        ],
    );
    let v = run(settings, &c);
    let allowed: Vec<bool> = v.iter().map(Verdict::is_allow).collect();
    // `get` is read-only with destructiveHint unannotated: a read-only tool counts as
    // non-destructive. `wipe` says destructive itself, and that is kept as written.
    assert_eq!(allowed, [true, true, false, false, false]);
    assert_eq!(
        v[4].denial().unwrap().reason,
        "tool wipe of connector conn_x: destructive is true (annotated) but false is required"
    );
    assert_eq!(
        v[2].denial().unwrap().reason,
        "tool send of connector conn_x: readOnly is false (annotated) but true is required"
    );
}

#[test]
fn no_hints_allow_everything() {
    let c = ctx_for("a", "o", vec![tool("x"), tool("y")]);
    for s in ["", "{}", r#"{"agents": ["*"]}"#] {
        assert!(run(s, &c).iter().all(Verdict::is_allow), "{s}");
    }
}

#[test]
fn applies_only_to_matching_agents_and_orgs() {
    let settings = r#"{"read_only": true, "agents": ["report*", "audit"], "orgs": ["acme"]}"#;
    let t = vec![tool("send_message")];
    let hidden =
        |agent: &str, org: &str| !run(settings, &ctx_for(agent, org, t.clone()))[0].is_allow();
    assert!(hidden("reporter", "acme"));
    assert!(hidden("audit", "acme"));
    assert!(!hidden("auditor", "acme"));
    assert!(!hidden("writer", "acme"));
    assert!(!hidden("reporter", "other"));
    assert!(!hidden("reporter", "acme-eu"));
    // Only one list given: the other matches everyone.
    let settings = r#"{"read_only": true, "orgs": ["acme-*"]}"#;
    assert!(!run(settings, &ctx_for("x", "acme-eu", t.clone()))[0].is_allow());
    assert!(run(settings, &ctx_for("x", "acme", t.clone()))[0].is_allow());
}

#[test]
fn settings_parse() {
    let s = Settings::parse(r#"{"open_world": false, "agents": ["a*"]}"#).unwrap();
    assert_eq!(
        s,
        Settings {
            hints: HintFilter {
                open_world: Some(false),
                ..HintFilter::default()
            },
            agents: Some(vec!["a*".into()]),
            orgs: None,
        }
    );
    assert_eq!(Settings::parse("").unwrap(), Settings::default());
}

#[test]
fn settings_errors_name_the_key() {
    let cases = [
        (json!({"readOnly": true}), "unknown settings key `readOnly`"),
        (
            json!({"read_only": true, "x": 1, "y": 2}),
            "unknown settings keys `x`, `y`",
        ),
        (
            json!({"read_only": "yes"}),
            "settings key `read_only` must be a boolean, got a string",
        ),
        (
            json!({"destructive": 0}),
            "settings key `destructive` must be a boolean, got a number",
        ),
        (
            json!({"idempotent": null}),
            "settings key `idempotent` must be a boolean, got null",
        ),
        (
            json!({"open_world": [true]}),
            "settings key `open_world` must be a boolean, got an array",
        ),
        (
            json!({"agents": "reporter"}),
            "settings key `agents` must be an array of strings, got a string",
        ),
        (
            json!({"orgs": ["acme", 7]}),
            "settings key `orgs[1]` must be a string, got a number",
        ),
        (
            json!({"agents": []}),
            "settings key `agents` must not be empty (omit it to match everyone)",
        ),
        (
            json!({"orgs": []}),
            "settings key `orgs` must not be empty (omit it to match everyone)",
        ),
    ];
    for (settings, error) in cases {
        assert_eq!(
            AnnotationHints::validate_settings(&settings.to_string()),
            Err(error.to_string()),
            "{settings}"
        );
    }
    assert!(AnnotationHints::validate_settings("[]").is_err());
    assert!(AnnotationHints::validate_settings("{").is_err());
}

#[test]
fn unreadable_settings_fail_closed() {
    let c = ctx_for("a", "o", vec![tool("x")]);
    let v = run(r#"{"read_only": "yes"}"#, &c);
    let d = v[0].denial().unwrap();
    assert_eq!(d.code, -32603);
}

#[test]
fn result_passes() {
    let c = ctx_for("a", "o", vec![tool("x")]);
    assert_eq!(
        AnnotationHints::check_result(r#"{"read_only": true}"#, &c, &tool("x"), "{}"),
        ResultVerdict::Pass
    );
}

#[test]
fn manifest_governs_tools_only() {
    let m = AnnotationHints::describe(r#"{"read_only": true}"#);
    assert!(m.filter_tools && m.check_call && m.deterministic);
    assert!(!m.filter_resources && !m.check_resource && !m.check_resource_contents);
    assert!(!m.filter_prompts && !m.check_prompt && !m.check_prompt_result);
    assert!(!m.check_result && !m.reads_connector_tools && !m.reads_tool_definitions);
}
