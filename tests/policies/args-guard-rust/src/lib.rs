//! args-guard (Rust): refuses a `tools/call` whose arguments mention a production
//! host. The same policy is written in JavaScript and Python
//! (`tests/polyglot/args-guard/`); all three must decide identically.
//!
//! The rule, exactly (the three implementations follow it to the letter):
//! - every string value of the arguments JSON (recursively through objects and
//!   arrays; object keys are not inspected) is split into maximal runs of ASCII
//!   `[A-Za-z0-9.-]`;
//! - each run is lowercased and stripped of leading and trailing `.` and `-`;
//! - a run is a production host when it ends with `.<domain>` for one of the
//!   configured domains and is longer than that suffix (`*.prod.internal`).
//!
//! A call mentioning one or more such hosts is denied with `-32001 Denied:
//! production host`; the audit reason lists the hosts (sorted, without repeats).
//! Arguments that are not JSON are denied with `-32603 Internal error`.
//! Listing, resources and prompts are not affected. Settings:
//! `{"domains"?: [string]}` (default `["prod.internal"]`).

use std::collections::BTreeSet;

use portcullis_policy_sdk::serde_json::{self, Value};
use portcullis_policy_sdk::{
    Context, Manifest, Policy, SettingsObject, Tool, Verdict, export_policy,
};

/// The policy.
pub struct ArgsGuard;

/// The code and message agents see on a denial.
pub const CODE: i32 = -32001;
pub const MESSAGE: &str = "Denied: production host";

fn domains(settings: &str) -> Result<Vec<String>, String> {
    let mut o = SettingsObject::parse(settings)?;
    let domains = o
        .string_list("domains")?
        .unwrap_or_else(|| vec!["prod.internal".to_string()]);
    o.finish()?;
    if domains.is_empty() {
        return Err("settings key `domains` must not be empty".into());
    }
    if let Some(d) = domains
        .iter()
        .find(|d| d.trim_matches(['.', '-']).is_empty())
    {
        return Err(format!("settings key `domains` has an empty domain {d:?}"));
    }
    Ok(domains
        .iter()
        .map(|d| format!(".{}", d.trim_matches(['.', '-']).to_ascii_lowercase()))
        .collect())
}

fn host_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '.' || c == '-'
}

/// The production hosts mentioned in one string.
fn hosts_in(s: &str, suffixes: &[String], found: &mut BTreeSet<String>) {
    for run in s.split(|c: char| !host_char(c)) {
        let host = run.trim_matches(['.', '-']).to_ascii_lowercase();
        if suffixes
            .iter()
            .any(|sfx| host.len() > sfx.len() && host.ends_with(sfx.as_str()))
        {
            found.insert(host);
        }
    }
}

fn walk(value: &Value, suffixes: &[String], found: &mut BTreeSet<String>) {
    match value {
        Value::String(s) => hosts_in(s, suffixes, found),
        Value::Array(items) => items.iter().for_each(|v| walk(v, suffixes, found)),
        Value::Object(map) => map.values().for_each(|v| walk(v, suffixes, found)),
        _ => {}
    }
}

/// The verdict on one call's arguments (JSON text).
pub fn decide(settings: &str, arguments: &str) -> Verdict {
    let suffixes = match domains(settings) {
        Ok(s) => s,
        Err(e) => return Verdict::deny(-32603, "Internal error", e),
    };
    let Ok(args) = serde_json::from_str::<Value>(arguments) else {
        return Verdict::deny(-32603, "Internal error", "arguments are not valid JSON");
    };
    let mut found = BTreeSet::new();
    walk(&args, &suffixes, &mut found);
    if found.is_empty() {
        return Verdict::Allow;
    }
    let hosts: Vec<String> = found.into_iter().collect();
    let noun = if hosts.len() == 1 { "host" } else { "hosts" };
    Verdict::deny(
        CODE,
        MESSAGE,
        format!("arguments mention production {noun} {}", hosts.join(", ")),
    )
}

impl Policy for ArgsGuard {
    fn validate_settings(settings: &str) -> Result<(), String> {
        domains(settings).map(|_| ())
    }

    /// Only calls are checked, from their arguments alone, the same way every time.
    fn describe(_settings: &str) -> Manifest {
        Manifest {
            filter_tools: false,
            check_call: true,
            check_result: false,
            reads_connector_tools: false,
            reads_arguments: true,
            deterministic: true,
            reads_tool_definitions: false,
            filter_resources: false,
            check_resource: false,
            check_resource_contents: false,
            filter_prompts: false,
            check_prompt: false,
            check_prompt_result: false,
        }
    }

    fn check_call(settings: &str, _ctx: &Context, _tool: &Tool, arguments: &str) -> Verdict {
        decide(settings, arguments)
    }
}

export_policy!(ArgsGuard);

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(v: &Verdict) -> Option<String> {
        v.denial().map(|d| {
            assert_eq!((d.code, d.message.as_str()), (CODE, MESSAGE));
            d.reason.clone()
        })
    }

    #[test]
    fn finds_hosts_anywhere_in_strings() {
        assert_eq!(reason(&decide("{}", r#"{"q":"select 1"}"#)), None);
        assert_eq!(
            reason(&decide(
                "{}",
                r#"{"url":"https://DB1.Prod.Internal:5432/x"}"#
            ))
            .as_deref(),
            Some("arguments mention production host db1.prod.internal")
        );
        assert_eq!(
            reason(&decide(
                "{}",
                r#"{"a":[{"b":"see b.prod.internal."}],"c":"a.prod.internal, a.prod.internal"}"#
            ))
            .as_deref(),
            Some("arguments mention production hosts a.prod.internal, b.prod.internal")
        );
        for allowed in [
            r#"{"h":"prod.internal"}"#,
            r#"{"h":"db.prod.internal.example.com"}"#,
            r#"{"h":"db-prod.internal"}"#,
            r#"{"db1.prod.internal":"keys are not inspected"}"#,
            r#"{"n":1,"b":true,"z":null}"#,
        ] {
            assert!(decide("{}", allowed).is_allow(), "{allowed}");
        }
        let v = decide("{}", "not json");
        assert_eq!(v.denial().map(|d| d.code), Some(-32603));
    }

    #[test]
    fn settings() {
        assert!(ArgsGuard::validate_settings("{}").is_ok());
        assert!(ArgsGuard::validate_settings(r#"{"domains":["corp.example"]}"#).is_ok());
        assert!(ArgsGuard::validate_settings(r#"{"domains":[]}"#).is_err());
        assert!(ArgsGuard::validate_settings(r#"{"domain":"x"}"#).is_err());
        assert!(
            decide(
                r#"{"domains":["corp.example"]}"#,
                r#"{"h":"a.corp.example"}"#
            )
            .denial()
            .is_some()
        );
    }
}
