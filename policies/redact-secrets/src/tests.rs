use portcullis_policy_sdk::testing::{connector, simple_context, tool};

use super::*;

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
