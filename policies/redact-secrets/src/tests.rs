//! Masking, tool results, resource contents and prompt messages, settings.

use portcullis_policy_sdk::testing::{connector, prompt, resource, simple_context, tool};

use super::*;

const SECRET: &str = "sk-abcdefghijklmnop1234";

fn ctx() -> Context {
    simple_context(connector("conn_a", "https://x", vec![]))
}

/// The replacement JSON, parsed; panics on any other verdict.
fn replaced(v: ResultVerdict) -> Value {
    let ResultVerdict::Replace(json) = v else {
        panic!("expected a replacement, got {v:?}")
    };
    serde_json::from_str(&json).unwrap()
}

fn read(result: &Value, settings: &str) -> ResultVerdict {
    let item = resource("file:///notes.md", "notes");
    RedactSecrets::check_resource_contents(settings, &ctx(), &item, &result.to_string())
}

fn get(result: &Value, settings: &str) -> ResultVerdict {
    RedactSecrets::check_prompt_result(settings, &ctx(), &prompt("onboard"), &result.to_string())
}

fn masked(s: &str) -> String {
    let mut f = Found::default();
    mask_str(s, true, true, &mut f).unwrap_or_else(|| s.to_string())
}

#[test]
fn masks_emails_and_secrets() {
    assert_eq!(
        masked("write to alice@example.com."),
        "write to [redacted email]."
    );
    assert_eq!(
        masked("key=sk-proj-abcdefghijklmnop1234 ok"),
        "key=[redacted secret] ok"
    );
    assert_eq!(masked("AKIAIOSFODNN7EXAMPLE"), "[redacted secret]");
    assert_eq!(
        masked("ghp_abcdefghijklmnopqrstuvwxyz0123456789 and xoxb-1234567890-abc"),
        "[redacted secret] and [redacted secret]"
    );
    for kept in [
        "task-sk-1",
        "sk-short",
        "AKIAshort",
        "AKIAIOSFODNN7EXAMPLEX",
        "xAKIAIOSFODNN7EXAMPLE",
        "@handle",
        "a@b",
        "x@.com",
        "user@host.c",
        "no secrets here",
    ] {
        assert_eq!(masked(kept), kept, "{kept}");
    }
}

#[test]
fn replaces_results_and_can_withhold() {
    let ctx = simple_context(connector("conn_a", "https://x", vec![]));
    let result = r#"{"content":[{"type":"text","text":"bob@example.org sk-abcdefghijklmnop1234"}],"structuredContent":{"n":1},"isError":false}"#;
    let ResultVerdict::Replace(json) =
        RedactSecrets::check_result("{}", &ctx, &tool("echo"), result)
    else {
        panic!("expected a replacement")
    };
    let v: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        v["content"][0]["text"],
        "[redacted email] [redacted secret]"
    );
    assert_eq!(v["structuredContent"]["n"], 1);

    let v = RedactSecrets::check_result(r#"{"on_secret":"deny"}"#, &ctx, &tool("echo"), result);
    let ResultVerdict::Deny(d) = v else {
        panic!("{v:?}")
    };
    assert_eq!(d.code, -32001);

    let clean = r#"{"content":[{"type":"text","text":"nothing"}]}"#;
    assert_eq!(
        RedactSecrets::check_result("{}", &ctx, &tool("echo"), clean),
        ResultVerdict::Pass
    );
    assert_eq!(
        RedactSecrets::check_result(r#"{"tools":["other"]}"#, &ctx, &tool("echo"), result),
        ResultVerdict::Pass
    );
    assert_eq!(
        RedactSecrets::check_result(
            r#"{"emails":false,"secrets":false}"#,
            &ctx,
            &tool("echo"),
            result
        ),
        ResultVerdict::Pass
    );
}

#[test]
fn settings() {
    assert!(RedactSecrets::validate_settings("{}").is_ok());
    assert!(RedactSecrets::validate_settings(r#"{"on_secret":"explode"}"#).is_err());
    assert!(RedactSecrets::validate_settings(r#"{"mask":"x"}"#).is_err());
}

#[test]
fn resource_text_is_masked_and_blobs_are_untouched() {
    let blob = "c2stYWJjZGVmZ2hpamtsbW5vcDEyMzQ=";
    let result = serde_json::json!({"contents": [
        {"uri": "file:///notes.md", "mimeType": "text/markdown",
         "text": format!("ask carol@example.com for {SECRET}")},
        {"uri": "file:///mail/bob@example.org", "blob": blob, "mimeType": "application/octet-stream"},
        {"uri": "file:///plain.txt", "text": "nothing here"},
    ]});
    let v = replaced(read(&result, "{}"));
    assert_eq!(
        v["contents"][0]["text"],
        "ask [redacted email] for [redacted secret]"
    );
    assert_eq!(v["contents"][0]["uri"], "file:///notes.md");
    assert_eq!(v["contents"][1]["blob"], blob);
    assert_eq!(v["contents"][1]["uri"], "file:///mail/bob@example.org");
    assert_eq!(v["contents"][2]["text"], "nothing here");
}

#[test]
fn clean_or_blob_only_contents_pass() {
    let clean = serde_json::json!({"contents": [{"uri": "file:///a", "text": "hello"}]});
    assert_eq!(read(&clean, "{}"), ResultVerdict::Pass);
    // Only `text` is scanned: secrets elsewhere in the result are not ours to touch.
    let elsewhere = serde_json::json!({"contents": [
        {"uri": "file:///a", "blob": SECRET, "_meta": {"owner": "dave@example.com"}}
    ]});
    assert_eq!(read(&elsewhere, "{}"), ResultVerdict::Pass);
    assert_eq!(read(&serde_json::json!({}), "{}"), ResultVerdict::Pass);
}

#[test]
fn resource_contents_with_a_secret_can_be_withheld() {
    let result = serde_json::json!({"contents": [{"uri": "file:///a", "text": SECRET}]});
    let ResultVerdict::Deny(d) = read(&result, r#"{"on_secret":"deny"}"#) else {
        panic!("expected a denial")
    };
    assert_eq!(
        (d.code, d.message.as_str()),
        (-32001, "Result withheld: contains a secret")
    );
    assert_eq!(
        d.reason,
        "result of resource file:///notes.md contains 1 secret(s)"
    );
    // `tools` limits tool results only.
    let v = replaced(read(&result, r#"{"tools":["other"]}"#));
    assert_eq!(v["contents"][0]["text"], "[redacted secret]");
    let off = r#"{"emails":false,"secrets":false}"#;
    assert_eq!(read(&result, off), ResultVerdict::Pass);
}

#[test]
fn prompt_message_text_and_embedded_resources_are_masked() {
    let result = serde_json::json!({
        "description": "Onboarding for eve@example.com",
        "messages": [
            {"role": "user", "content": {"type": "text", "text": format!("key {SECRET}")}},
            {"role": "assistant", "content": {"type": "resource", "resource": {
                "uri": "file:///team.md", "mimeType": "text/markdown",
                "text": "lead: frank@example.com"}}},
            {"role": "user", "content": {"type": "image", "data": SECRET, "mimeType": "image/png"}},
            {"role": "user", "content": {"type": "resource", "resource": {
                "uri": "file:///key.bin", "blob": SECRET}}},
        ]
    });
    let v = replaced(get(&result, "{}"));
    let m = &v["messages"];
    assert_eq!(m[0]["content"]["text"], "key [redacted secret]");
    assert_eq!(
        m[1]["content"]["resource"]["text"],
        "lead: [redacted email]"
    );
    assert_eq!(m[1]["content"]["resource"]["uri"], "file:///team.md");
    assert_eq!(m[2]["content"]["data"], SECRET, "images are untouched");
    assert_eq!(
        m[3]["content"]["resource"]["blob"], SECRET,
        "blobs are untouched"
    );
    assert_eq!(v["description"], "Onboarding for eve@example.com");
    assert_eq!(m[0]["role"], "user");
    // A message whose content is a list of blocks is scanned block by block.
    let listed = serde_json::json!({"messages": [{"role": "user", "content": [
        {"type": "text", "text": "a"},
        {"type": "text", "text": format!("b {SECRET}")},
    ]}]});
    let v = replaced(get(&listed, "{}"));
    assert_eq!(
        v["messages"][0]["content"][1]["text"],
        "b [redacted secret]"
    );
    assert_eq!(v["messages"][0]["content"][0]["text"], "a");
}

#[test]
fn clean_prompts_pass_and_secrets_can_be_withheld() {
    let clean = serde_json::json!({"messages": [
        {"role": "user", "content": {"type": "text", "text": "welcome"}}
    ]});
    assert_eq!(get(&clean, "{}"), ResultVerdict::Pass);
    let secret = serde_json::json!({"messages": [
        {"role": "user", "content": {"type": "text", "text": SECRET}},
        {"role": "user", "content": {"type": "text", "text": "AKIAIOSFODNN7EXAMPLE"}}
    ]});
    let ResultVerdict::Deny(d) = get(&secret, r#"{"on_secret":"deny"}"#) else {
        panic!("expected a denial")
    };
    assert_eq!(d.code, -32001);
    assert_eq!(d.reason, "result of prompt onboard contains 2 secret(s)");
    // E-mails alone are masked, never withheld.
    let email = serde_json::json!({"messages": [
        {"role": "user", "content": {"type": "text", "text": "a@example.com"}}
    ]});
    let v = replaced(get(&email, r#"{"on_secret":"deny"}"#));
    assert_eq!(v["messages"][0]["content"]["text"], EMAIL_MASK);
}

#[test]
fn invalid_results_fail_closed() {
    let item = resource("file:///a", "a");
    for v in [
        RedactSecrets::check_resource_contents("{}", &ctx(), &item, "not json"),
        RedactSecrets::check_prompt_result("{}", &ctx(), &prompt("p"), "{"),
        RedactSecrets::check_result("{}", &ctx(), &tool("t"), "nope"),
    ] {
        let ResultVerdict::Deny(d) = v else {
            panic!("expected a denial, got {v:?}")
        };
        assert_eq!(d.code, -32603);
        assert!(d.reason.ends_with("is not valid JSON"), "{}", d.reason);
    }
}

#[test]
fn manifest_turns_on_the_result_hooks_only() {
    let m = RedactSecrets::describe("{}");
    assert!(m.check_result && m.check_resource_contents && m.check_prompt_result);
    assert!(!m.filter_tools && !m.check_call);
    assert!(!m.filter_resources && !m.check_resource);
    assert!(!m.filter_prompts && !m.check_prompt);
    assert!(!m.reads_connector_tools && !m.reads_arguments && !m.reads_tool_definitions);
    assert!(m.deterministic);
}
