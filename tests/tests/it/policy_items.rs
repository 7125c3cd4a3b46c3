//! Resources and prompts in the policy contract (portcullis:policy@0.2.0), through
//! the real binary:
//! - `policy test` judges every new hook (resource and prompt lists, read,
//!   subscribe, get, completion, contents and prompt results) of a component built
//!   with the guest SDK, and reports a wrong expectation of each kind;
//! - a component built against 0.1.1 still loads in the gateway, is reported as
//!   governing tools only, keeps denying its tool, and lets resources and prompts pass.

use std::time::Duration;

use portcullis_tests::audit_lines::wait_lines;
use portcullis_tests::client::{session, sorted_names};
use portcullis_tests::rpc::assert_rpc_error;
use portcullis_tests::upstreams::add_upstream_tools;
use portcullis_tests::{
    Agent, Cli, Config, Connector, Gateway, Policy, Upstream, fixture_policy, new_key,
};
use serde_json::{Value, json};

/// `portcullis policy test MODULE FIXTURES`: (exit code, stdout).
fn policy_test(module: &std::path::Path, fixtures: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fixtures.toml");
    std::fs::write(&path, fixtures).unwrap();
    let out = Cli::new()
        .args(["policy", "test"])
        .arg(module)
        .arg(&path)
        .timeout(Duration::from_secs(120))
        .run();
    (out.code, format!("{}{}", out.stdout, out.stderr))
}

const CONNECTOR: &str = r#"
[connector]
id = "conn_docs"
name = "Docs"
resources = ["file:///readme.md", { uri = "file:///secret/keys.txt", name = "keys", mimeType = "text/plain" }]
templates = ["file:///logs/{day}", "file:///secret/{name}"]
prompts = ["summarise", { name = "secret-handover", arguments = [{ name = "to", required = true }] }]
"#;

#[test]
fn policy_test_judges_every_resource_and_prompt_hook() {
    let module = fixture_policy("policy-test-uri-guard");
    let cases = r#"
[[resource_lists]]
visible = ["file:///readme.md"]

[[resource_lists]]
kind = "templates"
visible = ["file:///logs/{day}"]

[[prompt_lists]]
visible = ["summarise"]

[[resources]]
uri = "file:///secret/keys.txt"
expect = "deny"
code = -32002
message = "Resource not found"
reason = "file:///secret/keys.txt"

[[resources]]
name = "an unlisted URI is judged by itself"
uri = "file:///secret/other"
action = "subscribe"
expect = "deny"

[[resources]]
uri = "file:///logs/{day}"
action = "complete"
argument = "day"
value = "2026-"
expect = "allow"

[[prompts]]
prompt = "secret-handover"
arguments = { to = "bob" }
expect = "deny"
code = -32602
message = "Prompt not found"

[[prompts]]
prompt = "summarise"
action = "complete"
argument = "text"
value = "he"
expect = "allow"

[[contents]]
uri = "file:///readme.md"
result = { contents = [{ uri = "file:///readme.md", text = "hello" }] }
expect = "pass"

[[prompt_results]]
prompt = "summarise"
result = { messages = [] }
expect = "pass"
"#;
    let (code, out) = policy_test(&module, &format!("{CONNECTOR}{cases}"));
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("10 passed, 0 failed"), "{out}");

    let wrong = r#"
[[resource_lists]]
name = "wrong resource list"
visible = ["file:///readme.md", "file:///secret/keys.txt"]

[[prompt_lists]]
name = "wrong prompt list"
visible = []

[[resources]]
name = "wrong resource verdict"
uri = "file:///secret/keys.txt"
expect = "allow"

[[prompts]]
name = "wrong prompt code"
prompt = "secret-handover"
expect = "deny"
code = -32601

[[prompts]]
name = "wrong action"
prompt = "summarise"
action = "read"
expect = "allow"

[[contents]]
name = "wrong contents verdict"
uri = "file:///readme.md"
result = { contents = [] }
expect = "replace"
"#;
    let (code, out) = policy_test(&module, &format!("{CONNECTOR}{wrong}"));
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("0 passed, 6 failed"), "{out}");
    for needle in [
        "different items visible",
        "denied: uri-guard: resource file:///secret/keys.txt of connector conn_docs is secret",
        "code -32602 != -32601",
        "action: read and subscribe are for resources",
        "passed unchanged",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in:\n{out}");
    }

    let (code, out) = policy_test(&module, "[[contents]]\nexpect = \"pass\"\n");
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("[[contents]] case 1 needs `uri`"), "{out}");
}

#[tokio::test]
async fn a_policy_built_against_0_1_1_loads_and_governs_tools_only() {
    let module = fixture_policy("policy-test-legacy-0-1-1");
    let out = Cli::new()
        .args(["policy", "inspect", "--json"])
        .arg(&module)
        .run_ok();
    let report: Value = serde_json::from_str(&out.stdout).expect("inspect JSON");
    assert_eq!(
        report["world"], "portcullis:policy/policy@0.1.1",
        "{report}"
    );
    assert_eq!(report["compatible"], true, "{report}");
    assert_eq!(report["governs"], "tools only", "{report}");

    // Offline: its tool rule holds; resources and prompts are not its business.
    let cases = r#"
[[calls]]
tool = "delete_everything"
expect = "deny"
code = -32601

[[resources]]
uri = "file:///secret/keys.txt"
expect = "allow"

[[prompt_lists]]
visible = ["summarise", "secret-handover"]
"#;
    let (code, out) = policy_test(&module, &format!("{CONNECTOR}{cases}"));
    assert_eq!(code, Some(0), "{out}");

    // In the gateway, beside a 0.2 built-in.
    let up = Upstream::rust(&[]);
    add_upstream_tools(&up.url, &["delete_everything"]).await;
    let (key, hash) = new_key();
    let cfg = Config::new()
        .connector(Connector::new("conn_a", "Alpha", &up.url).extra("tool_pinning = \"off\""))
        .agent(Agent::new("agent", &hash))
        .policy(Policy::new("builtin:slug-scope"))
        .policy(Policy::file(&module).name("legacy"))
        .render();
    let gw = Gateway::start(&cfg);
    wait_lines(
        &gw.proc,
        "policy built against portcullis:policy@0.1 governs tools only",
        1,
        Duration::from_secs(5),
    )
    .await;
    let mut m = session(&gw.url(None), &key).await;
    let names = sorted_names(&mut m).await;
    assert!(names.contains(&"alpha.echo".to_string()), "{names:?}");
    assert!(
        !names.contains(&"alpha.delete_everything".to_string()),
        "{names:?}"
    );
    let msg = m.call("alpha.delete_everything", json!({})).await;
    assert_rpc_error(&msg, -32601, "Tool not found");
}
