//! Test fixture: a 0.2.0 policy built with the guest SDK that governs resources and
//! prompts, not tools.
//!
//! - A resource or resource template whose URI (the URI template for templates)
//!   contains `secret` is hidden from `resources/list` and
//!   `resources/templates/list`, and `resources/read`, `resources/subscribe` and
//!   completions of it are refused with `-32002 Resource not found`.
//! - A prompt whose name contains `secret` is hidden from `prompts/list`, and
//!   `prompts/get` and completions of it are refused with `-32602 Prompt not
//!   found`.
//! - Tools, results and contents are not looked at (those hooks are off in the
//!   manifest).
//!
//! Settings: `{}`.

use portcullis_policy_sdk::{
    Context, Manifest, PROMPT_NOT_FOUND, Policy, Prompt, RESOURCE_NOT_FOUND, Resource, Verdict,
    expect_empty_settings, export_policy, item_rules_manifest,
};

/// The fixture policy.
pub struct UriGuard;

/// The marker that makes a URI or a prompt name secret.
pub const MARKER: &str = "secret";

impl Policy for UriGuard {
    fn validate_settings(settings: &str) -> Result<(), String> {
        expect_empty_settings(settings)
    }

    /// Listing and requesting resources and prompts, from the item alone.
    fn describe(_settings: &str) -> Manifest {
        Manifest {
            filter_tools: false,
            check_call: false,
            ..item_rules_manifest()
        }
    }

    fn check_resource_item(_settings: &str, ctx: &Context, item: &Resource) -> Verdict {
        if item.uri.contains(MARKER) {
            RESOURCE_NOT_FOUND.deny(format!(
                "uri-guard: resource {} of connector {} is secret",
                item.uri, ctx.connector.id
            ))
        } else {
            Verdict::Allow
        }
    }

    fn check_prompt_item(_settings: &str, ctx: &Context, item: &Prompt) -> Verdict {
        if item.name.contains(MARKER) {
            PROMPT_NOT_FOUND.deny(format!(
                "uri-guard: prompt {} of connector {} is secret",
                item.name, ctx.connector.id
            ))
        } else {
            Verdict::Allow
        }
    }
}

export_policy!(UriGuard);

#[cfg(test)]
mod tests {
    use portcullis_policy_sdk::testing::{
        completion, connector, prompt, prompt_get, prompts, resource, simple_context, template,
    };
    use portcullis_policy_sdk::{PromptAction, ResourceAction};

    use super::*;

    fn ctx() -> Context {
        simple_context(connector("conn_docs", "https://docs.example/mcp", vec![]))
    }

    #[test]
    fn secret_resources_are_hidden_and_refused() {
        let items = [
            resource("file:///docs/readme.md", "readme"),
            resource("file:///vault/secret-keys.txt", "keys"),
            template("file:///secrets/{name}", "vault"),
            // The name does not count, only the URI.
            resource("file:///docs/plan.md", "secret plan"),
        ];
        let listed = UriGuard::filter_resources("{}", &ctx(), &items);
        let allowed: Vec<bool> = listed.iter().map(Verdict::is_allow).collect();
        assert_eq!(allowed, [true, false, false, true]);
        let d = listed[1].denial().unwrap();
        assert_eq!((d.code, d.message.as_str()), (-32002, "Resource not found"));
        assert_eq!(
            d.reason,
            "uri-guard: resource file:///vault/secret-keys.txt of connector conn_docs is secret"
        );
        for action in [
            ResourceAction::Read,
            ResourceAction::Subscribe,
            ResourceAction::Complete(completion("name", "k")),
        ] {
            for (item, v) in items.iter().zip(&listed) {
                assert_eq!(&UriGuard::check_resource("{}", &ctx(), item, &action), v);
            }
        }
    }

    #[test]
    fn secret_prompts_are_hidden_and_refused() {
        let items = prompts(&["summarise", "secret_plan", "reveal-secrets"]);
        let listed = UriGuard::filter_prompts("{}", &ctx(), &items);
        let allowed: Vec<bool> = listed.iter().map(Verdict::is_allow).collect();
        assert_eq!(allowed, [true, false, false]);
        let d = listed[1].denial().unwrap();
        assert_eq!((d.code, d.message.as_str()), (-32602, "Prompt not found"));
        let get = UriGuard::check_prompt("{}", &ctx(), &prompt("secret_plan"), &prompt_get("{}"));
        assert_eq!(get, listed[1]);
        let complete = PromptAction::Complete(completion("topic", "x"));
        assert!(UriGuard::check_prompt("{}", &ctx(), &prompt("summarise"), &complete).is_allow());
    }

    #[test]
    fn manifest_and_settings() {
        let m = UriGuard::describe("{}");
        assert!(m.filter_resources && m.check_resource && m.filter_prompts && m.check_prompt);
        assert!(!m.filter_tools && !m.check_call && !m.check_result);
        assert!(!m.check_resource_contents && !m.check_prompt_result && m.deterministic);
        assert_eq!(UriGuard::validate_settings("{}"), Ok(()));
        assert!(UriGuard::validate_settings(r#"{"marker":"x"}"#).is_err());
    }
}
