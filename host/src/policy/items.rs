//! Resources and prompts through the chain: their list filters, request checks
//! (read, subscribe, get, completion) and result hooks, on the loops of `chain`.
//! Only 0.2 components implement these hooks; a 0.1 component's manifest declares
//! them absent, so it is never asked. A deterministic policy's request checks are
//! reused like tool calls (`cache::ItemKey`: the agent, the rules, the connector,
//! the tool list's version, the item as judged and the action with its
//! arguments).

use serde_json::Value;

use super::bindings::{
    self, Completion, Context, Manifest, PromptAction, ResourceAction, ResourceKind, Verdict,
};
use super::cache::{Asked, ItemKey};
use super::chain::{Chain, Decision, List, ListKind, Loaded, Subject};
use super::runtime::EvalError;

/// A request check's hook: its export name and whether a manifest implements it.
type Hook = (&'static str, fn(&Manifest) -> bool);

/// A `completion/complete` request: the argument, what was typed, and the
/// arguments already resolved (JSON object text).
#[derive(Debug, Clone, Copy)]
pub(crate) struct CompletionRequest<'a> {
    pub argument: &'a str,
    pub value: &'a str,
    pub context: &'a str,
}

/// What an agent asks of a resource.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ResourceRequest<'a> {
    Read,
    Subscribe,
    Complete(CompletionRequest<'a>),
}

/// What an agent asks of a prompt.
#[derive(Debug, Clone, Copy)]
pub(crate) enum PromptRequest<'a> {
    /// `prompts/get` with its arguments (JSON object text).
    Get(&'a str),
    Complete(CompletionRequest<'a>),
}

impl CompletionRequest<'_> {
    fn record(&self) -> Completion {
        Completion {
            argument: self.argument.to_string(),
            value: self.value.to_string(),
            context: self.context.to_string(),
        }
    }
}

impl Chain {
    /// Which of `items` (a connector's resources, templates or prompts, JSON as
    /// listed, same order) the agent may see.
    pub(crate) fn filter_items(
        &self,
        subject: &Subject,
        kind: ListKind,
        items: &[Value],
        version: u64,
    ) -> Vec<bool> {
        let list = List {
            kind,
            items,
            version,
        };
        self.filter_with(subject, &list, true)
            .expect("evaluating chains always decide")
    }

    /// [`Chain::filter_items`] from reused decisions only: `None` when a policy
    /// would have to be evaluated (the caller then evaluates off the async workers).
    pub(crate) fn filter_items_cached(
        &self,
        subject: &Subject,
        kind: ListKind,
        items: &[Value],
        version: u64,
    ) -> Option<Vec<bool>> {
        let list = List {
            kind,
            items,
            version,
        };
        self.filter_with(subject, &list, false)
    }

    /// Whether any policy has a request check for resources (`prompts`: for prompts);
    /// otherwise every request is allowed without evaluating anything.
    pub(crate) fn checks_items(&self, prompts: bool) -> bool {
        self.policies().iter().any(|p| match prompts {
            true => p.manifest.check_prompt,
            false => p.manifest.check_resource,
        })
    }

    /// Whether any policy has a result hook for resources (`prompts`: for prompts).
    pub(crate) fn checks_item_results(&self, prompts: bool) -> bool {
        self.policies().iter().any(|p| match prompts {
            true => p.manifest.check_prompt_result,
            false => p.manifest.check_resource_contents,
        })
    }

    /// Whether a read, subscription or completion of a resource may proceed.
    /// `item` is the listed resource or template (JSON; see [`resource_record`]).
    pub(crate) fn check_resource(
        &self,
        subject: &Subject,
        item: &Value,
        request: ResourceRequest,
    ) -> Decision {
        self.check_resource_with(subject, item, request, true)
            .expect("evaluating chains always decide")
    }

    /// [`Chain::check_resource`]; with `evaluate: false` from reused decisions only
    /// (`None` when a policy would have to be evaluated).
    pub(crate) fn check_resource_with(
        &self,
        subject: &Subject,
        item: &Value,
        request: ResourceRequest,
        evaluate: bool,
    ) -> Option<Decision> {
        let action = match request {
            ResourceRequest::Read => ResourceAction::Read,
            ResourceRequest::Subscribe => ResourceAction::Subscribe,
            ResourceRequest::Complete(c) => ResourceAction::Complete(c.record()),
        };
        let asked = Asked::new(subject, item, format!("resource {action:?}"));
        let mut record = None;
        let hook: Hook = ("check-resource", |m| m.check_resource);
        self.check_item_with(subject, &asked, evaluate, hook, |p, ctx| {
            let record = record.get_or_insert_with(|| resource_record(item));
            self.run_check(p, "check_resource", |policy, store, settings| {
                policy.check_resource(store, settings, ctx, record, &action)
            })
        })
    }

    /// Whether a `prompts/get` or a completion of a prompt may proceed.
    pub(crate) fn check_prompt(
        &self,
        subject: &Subject,
        item: &Value,
        request: PromptRequest,
    ) -> Decision {
        self.check_prompt_with(subject, item, request, true)
            .expect("evaluating chains always decide")
    }

    /// [`Chain::check_prompt`]; with `evaluate: false` from reused decisions only
    /// (`None` when a policy would have to be evaluated).
    pub(crate) fn check_prompt_with(
        &self,
        subject: &Subject,
        item: &Value,
        request: PromptRequest,
        evaluate: bool,
    ) -> Option<Decision> {
        let action = match request {
            PromptRequest::Get(arguments) => PromptAction::Get(arguments.to_string()),
            PromptRequest::Complete(c) => PromptAction::Complete(c.record()),
        };
        let asked = Asked::new(subject, item, format!("prompt {action:?}"));
        let mut record = None;
        let hook: Hook = ("check-prompt", |m| m.check_prompt);
        self.check_item_with(subject, &asked, evaluate, hook, |p, ctx| {
            let record = record.get_or_insert_with(|| bindings::prompt(item));
            self.run_check(p, "check_prompt", |policy, store, settings| {
                policy.check_prompt(store, settings, ctx, record, &action)
            })
        })
    }

    /// The request-check loop for a resource or prompt, reusing the decisions of
    /// deterministic policies for the same agent, rules, connector, item and action.
    fn check_item_with(
        &self,
        subject: &Subject,
        asked: &Asked,
        evaluate: bool,
        (export, implements): Hook,
        mut run: impl FnMut(&Loaded, &Context) -> Result<Verdict, EvalError>,
    ) -> Option<Decision> {
        let mut hits = 0;
        let decision = self.decide(subject, export, implements, |i, p, contexts| {
            let key = p.cached().then(|| ItemKey {
                policy: i,
                asked: asked.clone(),
            });
            if let Some(v) = key.as_ref().and_then(|k| self.cache().item(k)) {
                hits += 1;
                return Some(Ok(v));
            }
            if !evaluate {
                return None;
            }
            let ctx = contexts.get(subject, &p.manifest);
            let result = run(p, ctx);
            if let (Some(k), Ok(v)) = (key, &result) {
                self.cache().put_item(k, v.clone());
            }
            Some(result)
        });
        if decision.is_some() {
            super::cache::count_hits(hits);
        }
        decision
    }

    /// The `resources/read` result hook over a ReadResourceResult (JSON text).
    pub(crate) fn check_resource_contents(
        &self,
        subject: &Subject,
        item: &Value,
        result: &str,
    ) -> Decision {
        let record = resource_record(item);
        self.check_result_by(
            subject,
            "check-resource-contents",
            result,
            |p| p.manifest.check_resource_contents,
            |p, policy, store, ctx, text| {
                policy.check_resource_contents(store, &p.spec.settings, ctx, &record, text)
            },
        )
    }

    /// The `prompts/get` result hook over a GetPromptResult (JSON text).
    pub(crate) fn check_prompt_result(
        &self,
        subject: &Subject,
        item: &Value,
        result: &str,
    ) -> Decision {
        let record = bindings::prompt(item);
        self.check_result_by(
            subject,
            "check-prompt-result",
            result,
            |p| p.manifest.check_prompt_result,
            |p, policy, store, ctx, text| {
                policy.check_prompt_result(store, &p.spec.settings, ctx, &record, text)
            },
        )
    }
}

/// The record of a resource (JSON with `uri`) or a template (JSON with
/// `uriTemplate` and no `uri`). A read of a URI that matched a template passes
/// the template's JSON with the concrete `uri` added: a resource.
fn resource_record(item: &Value) -> bindings::Resource {
    let kind = if item.get("uri").is_some() {
        ResourceKind::Resource
    } else {
        ResourceKind::Template
    };
    bindings::resource(item, kind)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::*;
    use crate::auth::Identity;
    use crate::config::{Connector, ModuleRef, OnError, PolicyMode, PolicySpec};
    use crate::policy::{Runtime, build_chain};

    fn chain(builtins: &[&str]) -> Chain {
        let specs: Vec<PolicySpec> = builtins
            .iter()
            .map(|name| PolicySpec {
                name: name.to_string(),
                module: ModuleRef::Builtin(name.to_string()),
                settings: "{}".into(),
                mode: PolicyMode::Enforce,
                on_error: OnError::Deny,
                timeout: Duration::from_secs(5),
                memory_limit_bytes: 64 << 20,
                cache_decisions: true,
            })
            .collect();
        build_chain(&Runtime::new().unwrap(), &specs).unwrap()
    }

    fn connector() -> Connector {
        Connector {
            id: "conn_docs".into(),
            slug: "docs".into(),
            target_url: "http://127.0.0.1:9/mcp".into(),
            transport: Default::default(),
            credential: None,
            disabled_tools: vec![],
            disabled_prompts: vec!["internal-*".into()],
            disabled_resources: vec!["file:///secret/*".into(), "payroll".into()],
            timeout: Duration::from_secs(1),
            relay: Default::default(),
            pinning: Default::default(),
            max_result_bytes: 1 << 20,
        }
    }

    fn subject<'a>(identity: &'a Identity, connector: &'a Connector) -> Subject<'a> {
        Subject {
            identity,
            declaration: None,
            connector,
            tools: &[],
            tools_version: 0,
        }
    }

    fn scoped(scopes: &[&str]) -> Identity {
        Identity::new(
            "agent",
            "org",
            scopes.iter().map(|s| s.to_string()).collect(),
            None,
        )
    }

    #[test]
    fn the_blocklist_hides_and_refuses_prompts_and_resources_like_unknown_ones() {
        let chain = chain(&["blocklist"]);
        let (identity, connector) = (scoped(&["mcp:call"]), connector());
        let s = subject(&identity, &connector);
        let prompts = [
            json!({"name": "summarise"}),
            json!({"name": "internal-audit"}),
        ];
        assert_eq!(
            chain.filter_items(&s, ListKind::Prompts, &prompts, 1),
            [true, false]
        );
        let resources = [
            json!({"uri": "file:///a.txt", "name": "a"}),
            json!({"uri": "file:///secret/key", "name": "key"}),
            json!({"uri": "file:///p.csv", "name": "payroll"}),
        ];
        assert_eq!(
            chain.filter_items(&s, ListKind::Resources, &resources, 1),
            [true, false, false],
            "by URI pattern and by name"
        );
        let templates = [json!({"uriTemplate": "file:///secret/{name}", "name": "secrets"})];
        assert_eq!(
            chain.filter_items(&s, ListKind::Templates, &templates, 1),
            [false]
        );

        let refused = chain.check_prompt(&s, &prompts[1], PromptRequest::Get("{}"));
        let d = refused.denial.expect("a blocklisted prompt is refused");
        assert_eq!(
            (d.code, d.message.as_str(), d.status),
            (-32602, "Prompt not found", 404)
        );
        assert!(d.reason.contains("internal-*"), "{}", d.reason);
        assert_eq!(refused.policy, "blocklist");
        let read = chain.check_resource(&s, &resources[1], ResourceRequest::Read);
        let d = read.denial.expect("a blocklisted resource is refused");
        assert_eq!(
            (d.code, d.message.as_str(), d.status),
            (-32002, "Resource not found", 404)
        );
        let fine = chain.check_resource(&s, &resources[0], ResourceRequest::Subscribe);
        assert!(fine.denial.is_none(), "{:?}", fine.denial);
    }

    #[test]
    fn slug_scope_covers_every_kind() {
        let chain = chain(&["slug-scope"]);
        let connector = connector();
        let other = scoped(&["mcp:call:conn_other"]);
        let s = subject(&other, &connector);
        let prompt =
            json!({"name": "summarise", "arguments": [{"name": "text", "required": true}]});
        assert_eq!(
            chain.filter_items(&s, ListKind::Prompts, std::slice::from_ref(&prompt), 1),
            [false]
        );
        let completion = CompletionRequest {
            argument: "text",
            value: "he",
            context: "{}",
        };
        let d = chain
            .check_prompt(&s, &prompt, PromptRequest::Complete(completion))
            .denial
            .expect("no scope for the connector");
        assert_eq!((d.code, d.status), (-32003, 403));
        let template = json!({"uriTemplate": "file:///logs/{day}", "name": "logs"});
        let d = chain
            .check_resource(&s, &template, ResourceRequest::Complete(completion))
            .denial
            .expect("no scope for the connector");
        assert_eq!(d.code, -32003);

        let mine = scoped(&["mcp:call:conn_docs"]);
        let s = subject(&mine, &connector);
        assert!(
            chain
                .check_resource(&s, &template, ResourceRequest::Read)
                .denial
                .is_none()
        );
        assert_eq!(
            chain.filter_items(&s, ListKind::Templates, std::slice::from_ref(&template), 1),
            [true]
        );
    }

    #[test]
    fn redact_secrets_masks_resource_contents_and_prompt_messages() {
        let chain = chain(&["redact-secrets"]);
        let (identity, connector) = (scoped(&["mcp:call"]), connector());
        let s = subject(&identity, &connector);
        let secret = "AKIAIOSFODNN7EXAMPLE";
        let contents = json!({"contents": [
            {"uri": "file:///a.txt", "mimeType": "text/plain", "text": format!("key {secret}")},
            {"uri": "file:///b.bin", "blob": "AAEC"}
        ]});
        let d = chain.check_resource_contents(
            &s,
            &json!({"uri": "file:///a.txt", "name": "a"}),
            &contents.to_string(),
        );
        let masked = d.replacement.expect("the key is masked");
        assert!(!masked.contains(secret), "{masked}");
        assert!(
            masked.contains("AAEC") && masked.contains("file:///a.txt"),
            "{masked}"
        );

        let messages = json!({"messages": [
            {"role": "user", "content": {"type": "text", "text": format!("use {secret}")}}
        ]});
        let d = chain.check_prompt_result(&s, &json!({"name": "p"}), &messages.to_string());
        let masked = d.replacement.expect("the key is masked");
        assert!(!masked.contains(secret), "{masked}");
        assert!(masked.contains("\"role\":\"user\""), "{masked}");
    }

    #[test]
    fn deterministic_item_decisions_are_reused_only_for_the_same_item_and_action() {
        let chain = chain(&["slug-scope", "blocklist"]);
        let (identity, connector) = (scoped(&["mcp:call"]), connector());
        let s = subject(&identity, &connector);
        let doc = json!({"uri": "file:///a.txt", "name": "a"});
        assert!(
            chain
                .check_resource_with(&s, &doc, ResourceRequest::Read, false)
                .is_none()
        );
        let first = chain.check_resource(&s, &doc, ResourceRequest::Read);
        let again = chain
            .check_resource_with(&s, &doc, ResourceRequest::Read, false)
            .expect("reused");
        assert_eq!(first.denial, again.denial);
        assert!(
            chain
                .check_resource_with(&s, &doc, ResourceRequest::Subscribe, false)
                .is_none(),
            "another action is evaluated"
        );
        let other = json!({"uri": "file:///b.txt", "name": "b"});
        assert!(
            chain
                .check_resource_with(&s, &other, ResourceRequest::Read, false)
                .is_none()
        );
        let secret = json!({"name": "internal-x"});
        let denied = chain.check_prompt(&s, &secret, PromptRequest::Get("{}"));
        let reused = chain
            .check_prompt_with(&s, &secret, PromptRequest::Get("{}"), false)
            .expect("reused");
        assert_eq!(denied.denial, reused.denial);
        assert!(reused.denial.is_some());
        let args = chain.check_prompt_with(&s, &secret, PromptRequest::Get(r#"{"x":1}"#), false);
        assert!(args.is_none(), "other arguments are evaluated");
    }

    #[test]
    fn a_chain_without_item_hooks_allows_and_lists_everything() {
        let chain = chain(&["mcp-servers", "annotation-hints"]);
        let (identity, connector) = (scoped(&[]), connector());
        let s = subject(&identity, &connector);
        let prompts = [json!({"name": "internal-audit"})];
        assert_eq!(
            chain.filter_items(&s, ListKind::Prompts, &prompts, 1),
            [true]
        );
        assert!(
            chain
                .check_prompt(&s, &prompts[0], PromptRequest::Get("{}"))
                .denial
                .is_none()
        );
        let contents = r#"{"contents":[{"uri":"file:///a","text":"x"}]}"#;
        let passed = chain.check_resource_contents(&s, &json!({"uri": "file:///a"}), contents);
        assert!(passed.replacement.is_none() && passed.denial.is_none());
    }
}
