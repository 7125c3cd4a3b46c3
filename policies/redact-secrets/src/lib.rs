//! redact-secrets: a result policy that keeps secrets and e-mail addresses out of
//! what agents see, in `tools/call` results, `resources/read` contents and
//! `prompts/get` messages.
//!
//! What is scanned:
//! - a `tools/call` result (`check-result`): every string value, recursively
//!   (`content[].text`, `structuredContent`, anything else);
//! - a `resources/read` result (`check-resource-contents`): the `text` of each
//!   entry of `contents` (blobs, URIs and MIME types are left untouched);
//! - a `prompts/get` result (`check-prompt-result`): the `text` of each message's
//!   `content`, and the `text` of a resource embedded in it (`content.resource.text`).
//!
//! What is masked:
//! - e-mail addresses (`local@domain.tld`), replaced by `[redacted email]`;
//! - secret-looking tokens, replaced by `[redacted secret]`: OpenAI/Anthropic-style
//!   keys `sk-` followed by at least 16 of `[A-Za-z0-9_-]`, AWS access key ids
//!   `AKIA`/`ASIA` followed by 16 of `[A-Z0-9]`, GitHub tokens `ghp_`/`gho_`/`ghs_`/
//!   `ghu_`/`github_pat_` followed by at least 20 of `[A-Za-z0-9_]`, Slack tokens
//!   `xoxb-`/`xoxp-`/`xoxa-`/`xoxr-`/`xoxs-` followed by at least 10 of
//!   `[A-Za-z0-9-]`.
//!
//! A token is only recognised at a word boundary (not preceded by a letter, digit
//! or `_`). When something was masked the result is replaced (`replace`);
//! otherwise it passes unchanged. With `on_secret = "deny"` a result containing a
//! secret is withheld instead: the agent gets `-32001 Result withheld: contains a
//! secret` (e-mails are still only masked).
//!
//! The gateway also routes through `check-result`, for this built-in only, the
//! upstream's JSON-RPC error object and the `params` of every notification or
//! relayed request during the call (its host-side path, `Chain::check_message`):
//! masking works on any JSON, so those are masked too.
//!
//! Settings: `{"emails"?: bool (true), "secrets"?: bool (true),
//! "on_secret"?: "redact"|"deny" ("redact"), "tools"?: [glob] (every tool)}`;
//! `tools` limits only which `tools/call` results are scanned (resource contents
//! and prompt messages always are). Listing and requesting are not affected.

use portcullis_policy_sdk::serde_json::{self, Value};
use portcullis_policy_sdk::{
    Context, Level, Manifest, Policy, Prompt, Resource, ResultVerdict, SettingsObject, Tool,
    export_policy, glob_match_any, log,
};

/// The policy.
pub struct RedactSecrets;

pub const EMAIL_MASK: &str = "[redacted email]";
pub const SECRET_MASK: &str = "[redacted secret]";

#[derive(Debug, Clone, PartialEq, Eq)]
struct Settings {
    emails: bool,
    secrets: bool,
    deny_secrets: bool,
    tools: Option<Vec<String>>,
}

impl Settings {
    fn parse(settings: &str) -> Result<Self, String> {
        let mut o = SettingsObject::parse(settings)?;
        let emails = o.bool("emails")?.unwrap_or(true);
        let secrets = o.bool("secrets")?.unwrap_or(true);
        let deny_secrets = match o.string("on_secret")?.as_deref() {
            None | Some("redact") => false,
            Some("deny") => true,
            Some(other) => {
                return Err(format!(
                    "settings key `on_secret` must be \"redact\" or \"deny\", got {other:?}"
                ));
            }
        };
        let tools = o.string_list("tools")?;
        o.finish()?;
        Ok(Settings {
            emails,
            secrets,
            deny_secrets,
            tools,
        })
    }
}

/// What scanning found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    pub emails: usize,
    pub secrets: usize,
}

/// A secret kind: (prefix, allowed body characters, minimum body length, maximum
/// body length or 0 for unbounded).
type SecretKind = (&'static str, fn(u8) -> bool, usize, usize);

const SECRET_KINDS: &[SecretKind] = &[
    ("sk-", key_char, 16, 0),
    ("AKIA", upper_digit, 16, 16),
    ("ASIA", upper_digit, 16, 16),
    ("github_pat_", word_char, 20, 0),
    ("ghp_", word_char, 20, 0),
    ("gho_", word_char, 20, 0),
    ("ghs_", word_char, 20, 0),
    ("ghu_", word_char, 20, 0),
    ("xoxb-", slack_char, 10, 0),
    ("xoxp-", slack_char, 10, 0),
    ("xoxa-", slack_char, 10, 0),
    ("xoxr-", slack_char, 10, 0),
    ("xoxs-", slack_char, 10, 0),
];

fn key_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'-'
}
fn upper_digit(c: u8) -> bool {
    c.is_ascii_uppercase() || c.is_ascii_digit()
}
fn word_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}
fn slack_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'-'
}
fn email_local(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"._%+-".contains(&c)
}
fn email_domain(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'.' || c == b'-'
}

/// The end of a secret token starting at `i`, if one starts there.
fn secret_at(b: &[u8], i: usize) -> Option<usize> {
    if i > 0 && word_char(b[i - 1]) {
        return None;
    }
    for (prefix, body, min, max) in SECRET_KINDS {
        if !b[i..].starts_with(prefix.as_bytes()) {
            continue;
        }
        let start = i + prefix.len();
        let mut end = start;
        while end < b.len() && body(b[end]) && (*max == 0 || end - start < *max) {
            end += 1;
        }
        let exact_max_ok = *max == 0 || end >= b.len() || !body(b[end]);
        if end - start >= *min && exact_max_ok {
            return Some(end);
        }
    }
    None
}

/// The span of an e-mail address whose `@` is at `at`, not starting before `floor`.
fn email_at(b: &[u8], at: usize, floor: usize) -> Option<(usize, usize)> {
    let mut start = at;
    while start > floor && email_local(b[start - 1]) {
        start -= 1;
    }
    let mut end = at + 1;
    while end < b.len() && email_domain(b[end]) {
        end += 1;
    }
    // Trailing dots and hyphens are punctuation, not part of the domain.
    while end > at + 1 && (b[end - 1] == b'.' || b[end - 1] == b'-') {
        end -= 1;
    }
    let domain = &b[at + 1..end];
    let ok = start < at
        && domain.contains(&b'.')
        && domain[0] != b'.'
        && domain
            .rsplit(|&c| c == b'.')
            .next()
            .is_some_and(|tld| tld.len() >= 2);
    ok.then_some((start, end))
}

/// Masks what `settings` asks for inside one string; `None` when nothing matched.
fn mask_str(s: &str, emails: bool, secrets: bool, found: &mut Found) -> Option<String> {
    let b = s.as_bytes();
    let mut out = String::new();
    let (mut copied, mut i) = (0usize, 0usize);
    while i < b.len() {
        if secrets && let Some(end) = secret_at(b, i) {
            out.push_str(&s[copied..i]);
            out.push_str(SECRET_MASK);
            found.secrets += 1;
            copied = end;
            i = end;
            continue;
        }
        if emails
            && b[i] == b'@'
            && let Some((start, end)) = email_at(b, i, copied)
        {
            out.push_str(&s[copied..start]);
            out.push_str(EMAIL_MASK);
            found.emails += 1;
            copied = end;
            i = end;
            continue;
        }
        i += 1;
    }
    (copied > 0).then(|| out + &s[copied..])
}

/// Masks every string inside `value`; what was found.
pub fn mask(value: &mut Value, emails: bool, secrets: bool) -> Found {
    let mut found = Found::default();
    mask_value(value, emails, secrets, &mut found);
    found
}

fn mask_value(value: &mut Value, emails: bool, secrets: bool, found: &mut Found) {
    match value {
        Value::String(s) => {
            if let Some(masked) = mask_str(s, emails, secrets, found) {
                *s = masked;
            }
        }
        Value::Array(items) => items
            .iter_mut()
            .for_each(|v| mask_value(v, emails, secrets, found)),
        Value::Object(map) => map
            .values_mut()
            .for_each(|v| mask_value(v, emails, secrets, found)),
        _ => {}
    }
}

/// Masks the `text` of each entry of a ReadResourceResult's `contents`.
fn mask_resource_contents(value: &mut Value, emails: bool, secrets: bool) -> Found {
    let mut found = Found::default();
    for entry in items_mut(value, "contents") {
        mask_text(entry, emails, secrets, &mut found);
    }
    found
}

/// Masks the `text` of each message's content in a GetPromptResult, and the
/// `text` of a resource embedded in it.
fn mask_prompt_messages(value: &mut Value, emails: bool, secrets: bool) -> Found {
    let mut found = Found::default();
    for message in items_mut(value, "messages") {
        let Some(content) = message.get_mut("content") else {
            continue;
        };
        // One content block per message; a list is scanned block by block.
        let blocks: Vec<&mut Value> = match content {
            Value::Array(blocks) => blocks.iter_mut().collect(),
            block => vec![block],
        };
        for block in blocks {
            mask_text(block, emails, secrets, &mut found);
            if let Some(resource) = block.get_mut("resource") {
                mask_text(resource, emails, secrets, &mut found);
            }
        }
    }
    found
}

/// The elements of the array `value[key]` (none when absent or not an array).
fn items_mut<'a>(value: &'a mut Value, key: &str) -> impl Iterator<Item = &'a mut Value> {
    value
        .get_mut(key)
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
}

/// Masks `object.text` when it is a string.
fn mask_text(object: &mut Value, emails: bool, secrets: bool, found: &mut Found) {
    if let Some(text @ Value::String(_)) = object.get_mut("text") {
        mask_value(text, emails, secrets, found);
    }
}

/// Parses settings and the result, masks with `masker` and decides: withhold,
/// replace or pass. `subject` names what was scanned in the reason and the log
/// (`the result of echo`).
fn redact(
    settings: &Settings,
    result: &str,
    subject: &str,
    masker: fn(&mut Value, bool, bool) -> Found,
) -> ResultVerdict {
    let Ok(mut value) = serde_json::from_str::<Value>(result) else {
        return ResultVerdict::deny(
            -32603,
            "Internal error",
            format!("{subject} is not valid JSON"),
        );
    };
    let found = masker(&mut value, settings.emails, settings.secrets);
    if found.secrets > 0 && settings.deny_secrets {
        return ResultVerdict::deny(
            -32001,
            "Result withheld: contains a secret",
            format!("{subject} contains {} secret(s)", found.secrets),
        );
    }
    if found == Found::default() {
        return ResultVerdict::Pass;
    }
    log(
        Level::Info,
        &format!(
            "masked {} e-mail address(es) and {} secret(s) in the {subject}",
            found.emails, found.secrets
        ),
    );
    ResultVerdict::Replace(value.to_string())
}

/// Validated at load, so unreachable in practice: fail closed.
fn settings_error(e: String) -> ResultVerdict {
    ResultVerdict::deny(-32603, "Internal error", e)
}

impl Policy for RedactSecrets {
    fn validate_settings(settings: &str) -> Result<(), String> {
        Settings::parse(settings).map(|_| ())
    }

    /// The three result hooks only.
    fn describe(_settings: &str) -> Manifest {
        Manifest {
            filter_tools: false,
            check_call: false,
            check_result: true,
            reads_connector_tools: false,
            reads_arguments: false,
            deterministic: true,
            reads_tool_definitions: false,
            filter_resources: false,
            check_resource: false,
            check_resource_contents: true,
            filter_prompts: false,
            check_prompt: false,
            check_prompt_result: true,
        }
    }

    fn check_result(settings: &str, _ctx: &Context, tool: &Tool, result: &str) -> ResultVerdict {
        let s = match Settings::parse(settings) {
            Ok(s) => s,
            Err(e) => return settings_error(e),
        };
        if s.tools
            .as_deref()
            .is_some_and(|t| !glob_match_any(t, &tool.name))
        {
            return ResultVerdict::Pass;
        }
        redact(&s, result, &format!("result of {}", tool.name), mask)
    }

    fn check_resource_contents(
        settings: &str,
        _ctx: &Context,
        item: &Resource,
        result: &str,
    ) -> ResultVerdict {
        match Settings::parse(settings) {
            Ok(s) => redact(
                &s,
                result,
                &format!("result of resource {}", item.uri),
                mask_resource_contents,
            ),
            Err(e) => settings_error(e),
        }
    }

    fn check_prompt_result(
        settings: &str,
        _ctx: &Context,
        item: &Prompt,
        result: &str,
    ) -> ResultVerdict {
        match Settings::parse(settings) {
            Ok(s) => redact(
                &s,
                result,
                &format!("result of prompt {}", item.name),
                mask_prompt_messages,
            ),
            Err(e) => settings_error(e),
        }
    }
}

export_policy!(RedactSecrets);

#[cfg(test)]
mod tests;
