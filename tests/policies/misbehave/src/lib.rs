//! Test fixture for the gateway's integration tests: a policy that misbehaves on
//! demand.
//!
//! Settings: `{"behaviour": "allow"|"deny"|"loop"|"alloc"|"trap"|"redact",
//! "tools"?: [glob], "resources"?: [glob], "prompts"?: [glob]}` (`behaviour`
//! defaults to `allow`). The behaviour applies in `filter_tools` and `check_call`
//! to tools whose name matches `tools` (every tool when omitted); in
//! `filter_resources` and `check_resource` to resources whose URI or name matches
//! `resources`, in `filter_prompts` and `check_prompt` to prompts whose name
//! matches `prompts` (none when omitted, so resources and prompts are only
//! misbehaved on when asked). Everything else is allowed.
//!
//! - `deny`: `-32001 Denied by test policy`.
//! - `loop`: spins forever (until the host's fuel/epoch limit stops it).
//! - `alloc`: allocates and touches 1 MiB blocks without bound (until the host's
//!   memory limit makes allocation fail, which aborts = traps).
//! - `trap`: panics (a wasm trap).
//! - `redact`: allows, and `check_result` replaces every e-mail address inside any
//!   string value of the result JSON with `[redacted]` (`Replace`; `Pass` when
//!   there is none).

use std::hint::black_box;

use portcullis_policy_sdk::serde_json::{self, Value};
use portcullis_policy_sdk::{
    Context, Policy, Prompt, Resource, ResultVerdict, SettingsObject, Tool, Verdict, export_policy,
    glob_match_any,
};

/// The fixture policy.
pub struct Misbehave;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Behaviour {
    Allow,
    Deny,
    Loop,
    Alloc,
    Trap,
    Redact,
}

struct Settings {
    behaviour: Behaviour,
    tools: Option<Vec<String>>,
    resources: Vec<String>,
    prompts: Vec<String>,
}

impl Settings {
    fn parse(settings: &str) -> Result<Self, String> {
        let mut o = SettingsObject::parse(settings)?;
        let behaviour = match o.string("behaviour")?.as_deref() {
            None | Some("allow") => Behaviour::Allow,
            Some("deny") => Behaviour::Deny,
            Some("loop") => Behaviour::Loop,
            Some("alloc") => Behaviour::Alloc,
            Some("trap") => Behaviour::Trap,
            Some("redact") => Behaviour::Redact,
            Some(other) => {
                return Err(format!(
                    "settings key `behaviour` must be one of allow, deny, loop, alloc, trap, \
                     redact; got `{other}`"
                ));
            }
        };
        let tools = o.string_list("tools")?;
        let resources = o.string_list("resources")?.unwrap_or_default();
        let prompts = o.string_list("prompts")?.unwrap_or_default();
        o.finish()?;
        Ok(Settings {
            behaviour,
            tools,
            resources,
            prompts,
        })
    }

    fn applies_to(&self, tool: &str) -> bool {
        self.tools
            .as_deref()
            .is_none_or(|ps| glob_match_any(ps, tool))
    }

    fn verdict(&self, tool: &Tool) -> Verdict {
        if !self.applies_to(&tool.name) {
            return Verdict::Allow;
        }
        self.behave(&tool.name)
    }

    fn resource_verdict(&self, item: &Resource) -> Verdict {
        if !glob_match_any(&self.resources, &item.uri)
            && !glob_match_any(&self.resources, &item.name)
        {
            return Verdict::Allow;
        }
        self.behave(&item.uri)
    }

    fn prompt_verdict(&self, item: &Prompt) -> Verdict {
        if !glob_match_any(&self.prompts, &item.name) {
            return Verdict::Allow;
        }
        self.behave(&item.name)
    }

    /// The behaviour on the item named `what`.
    fn behave(&self, what: &str) -> Verdict {
        match self.behaviour {
            Behaviour::Allow | Behaviour::Redact => Verdict::Allow,
            Behaviour::Deny => Verdict::deny(
                -32001,
                "Denied by test policy",
                format!("test policy denies {what}"),
            ),
            Behaviour::Loop => spin(),
            Behaviour::Alloc => hog(),
            Behaviour::Trap => panic!("test policy traps on {what}"),
        }
    }
}

/// Loops forever; `black_box` keeps the optimiser from proving anything about it.
fn spin() -> ! {
    let mut n: u64 = 0;
    loop {
        n = black_box(n).wrapping_add(1);
    }
}

/// Allocates 1 MiB blocks without bound, touching every page so none is lazy.
fn hog() -> ! {
    let mut blocks: Vec<Vec<u8>> = Vec::new();
    loop {
        let mut block = vec![0u8; 1 << 20];
        for i in (0..block.len()).step_by(4096) {
            block[i] = black_box(1);
        }
        blocks.push(black_box(block));
        black_box(&mut blocks);
    }
}

/// Replaces every e-mail-like run inside `s` with `[redacted]`: a local part of
/// `[A-Za-z0-9._%+-]`, `@`, and a domain of `[A-Za-z0-9.-]` containing a dot.
fn redact_emails(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let local = |c: u8| c.is_ascii_alphanumeric() || b"._%+-".contains(&c);
    let domain = |c: u8| c.is_ascii_alphanumeric() || c == b'.' || c == b'-';
    let mut out = String::new();
    let (mut copied, mut changed, mut i) = (0, false, 0);
    while i < b.len() {
        if b[i] != b'@' {
            i += 1;
            continue;
        }
        let mut start = i;
        while start > copied && local(b[start - 1]) {
            start -= 1;
        }
        let mut end = i + 1;
        while end < b.len() && domain(b[end]) {
            end += 1;
        }
        // Trailing dots are punctuation, not part of the domain.
        while end > i + 1 && b[end - 1] == b'.' {
            end -= 1;
        }
        let dom = &s[i + 1..end];
        if start < i && dom.contains('.') && !dom.starts_with('.') {
            out.push_str(&s[copied..start]);
            out.push_str("[redacted]");
            copied = end;
            changed = true;
            i = end;
        } else {
            i += 1;
        }
    }
    changed.then(|| out + &s[copied..])
}

fn redact(value: &mut Value) -> bool {
    match value {
        Value::String(s) => match redact_emails(s) {
            Some(r) => {
                *s = r;
                true
            }
            None => false,
        },
        Value::Array(items) => items.iter_mut().fold(false, |acc, v| redact(v) | acc),
        Value::Object(map) => map.values_mut().fold(false, |acc, v| redact(v) | acc),
        _ => false,
    }
}

impl Policy for Misbehave {
    fn validate_settings(settings: &str) -> Result<(), String> {
        Settings::parse(settings).map(|_| ())
    }

    fn filter_tools(settings: &str, ctx: &Context) -> Vec<Verdict> {
        match Settings::parse(settings) {
            Ok(s) => ctx.connector.tools.iter().map(|t| s.verdict(t)).collect(),
            Err(e) => panic!("{e}"),
        }
    }

    fn check_call(settings: &str, _ctx: &Context, tool: &Tool, _arguments: &str) -> Verdict {
        match Settings::parse(settings) {
            Ok(s) => s.verdict(tool),
            Err(e) => panic!("{e}"),
        }
    }

    fn check_resource_item(settings: &str, _ctx: &Context, item: &Resource) -> Verdict {
        match Settings::parse(settings) {
            Ok(s) => s.resource_verdict(item),
            Err(e) => panic!("{e}"),
        }
    }

    fn check_prompt_item(settings: &str, _ctx: &Context, item: &Prompt) -> Verdict {
        match Settings::parse(settings) {
            Ok(s) => s.prompt_verdict(item),
            Err(e) => panic!("{e}"),
        }
    }

    fn check_result(settings: &str, _ctx: &Context, tool: &Tool, result: &str) -> ResultVerdict {
        let s = match Settings::parse(settings) {
            Ok(s) => s,
            Err(e) => panic!("{e}"),
        };
        if s.behaviour != Behaviour::Redact || !s.applies_to(&tool.name) {
            return ResultVerdict::Pass;
        }
        let Ok(mut value) = serde_json::from_str::<Value>(result) else {
            return ResultVerdict::Pass;
        };
        if redact(&mut value) {
            ResultVerdict::Replace(value.to_string())
        } else {
            ResultVerdict::Pass
        }
    }
}

export_policy!(Misbehave);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_emails_inside_strings() {
        assert_eq!(
            redact_emails("alice@example.com").as_deref(),
            Some("[redacted]")
        );
        assert_eq!(
            redact_emails("mail bob.smith+x@mail.example.org, or carol@a.io.").as_deref(),
            Some("mail [redacted], or [redacted].")
        );
        assert_eq!(redact_emails("no at sign"), None);
        assert_eq!(redact_emails("@handle and a@b and x@.com"), None);
    }

    #[test]
    fn redacts_result_json() {
        let result = r#"{"content":[{"type":"text","text":"reach alice@example.com"}],"structuredContent":{"email":"bob@example.org","n":1},"isError":false}"#;
        let v = Misbehave::check_result(
            r#"{"behaviour":"redact"}"#,
            &portcullis_policy_sdk::testing::simple_context(
                portcullis_policy_sdk::testing::connector("conn_a", "https://x", vec![]),
            ),
            &portcullis_policy_sdk::testing::tool("t"),
            result,
        );
        let ResultVerdict::Replace(json) = v else {
            panic!("{v:?}")
        };
        let v: Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["content"][0]["text"], "reach [redacted]");
        assert_eq!(v["structuredContent"]["email"], "[redacted]");
        assert_eq!(v["structuredContent"]["n"], 1);
        assert_eq!(v["isError"], false);
    }

    #[test]
    fn settings() {
        assert!(Misbehave::validate_settings(r#"{"behaviour":"deny","tools":["a*"]}"#).is_ok());
        assert!(Misbehave::validate_settings("{}").is_ok());
        assert!(
            Misbehave::validate_settings(r#"{"behaviour":"explode"}"#)
                .unwrap_err()
                .contains("`behaviour`")
        );
        assert_eq!(
            Misbehave::validate_settings(r#"{"mode":"deny"}"#),
            Err("unknown settings key `mode`".to_string())
        );
        let s = Settings::parse(r#"{"behaviour":"deny","tools":["del*"]}"#).unwrap();
        let d = s.verdict(&portcullis_policy_sdk::testing::tool("delete"));
        let d = d.denial().unwrap();
        assert_eq!(
            (d.code, d.message.as_str()),
            (-32001, "Denied by test policy")
        );
        assert!(
            s.verdict(&portcullis_policy_sdk::testing::tool("get"))
                .is_allow()
        );
    }

    #[test]
    fn resources_and_prompts_only_when_named() {
        use portcullis_policy_sdk::testing::{connector, prompt, resource, simple_context};
        let ctx = simple_context(connector("conn_a", "https://x", vec![]));
        let secret = resource("file:///secret.txt", "secret");
        let report = resource("file:///report.md", "report");
        // Without `resources` / `prompts` nothing but tools misbehaves.
        let deny = r#"{"behaviour":"deny"}"#;
        assert!(Misbehave::check_resource_item(deny, &ctx, &secret).is_allow());
        assert!(Misbehave::check_prompt_item(deny, &ctx, &prompt("p")).is_allow());
        let deny = r#"{"behaviour":"deny","resources":["*secret*"],"prompts":["admin_*"]}"#;
        let v = Misbehave::filter_resources(deny, &ctx, &[secret.clone(), report]);
        let d = v[0].denial().unwrap();
        assert_eq!(d.reason, "test policy denies file:///secret.txt");
        assert!(v[1].is_allow());
        // By name too.
        let by_name = r#"{"behaviour":"deny","resources":["secret"]}"#;
        assert!(!Misbehave::check_resource_item(by_name, &ctx, &secret).is_allow());
        let v = Misbehave::filter_prompts(deny, &ctx, &[prompt("admin_x"), prompt("user")]);
        assert_eq!(v[0].denial().unwrap().reason, "test policy denies admin_x");
        assert!(v[1].is_allow());
    }
}
