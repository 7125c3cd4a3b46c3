//! Host bindings for the `portcullis:policy` worlds and conversions from gateway
//! data to WIT records.
//!
//! Two versions load: 0.2.0 (`wit/`, world `policy`: tools, resources, prompts) and
//! 0.1.x (`wit/compat/0.1.1/`, world `policy-hooks`, with `describe` looked up by
//! name since 0.1.0 lacks it). The gateway speaks 0.2.0 records everywhere; a 0.1
//! component gets them converted (`compat`) and governs tools only: its manifest
//! declares every resource and prompt hook absent, so the chain never calls them.

use serde_json::Value;

use crate::auth::Identity;
use crate::config::{Connector, ServerRule};

/// The 0.2.0 world, the one the gateway speaks.
pub(super) mod v2 {
    wasmtime::component::bindgen!({
        world: "policy",
        path: "../wit/policy.wit",
    });
}

/// The 0.1.x world, for components built before 0.2.0.
pub(super) mod v1 {
    wasmtime::component::bindgen!({
        world: "policy-hooks",
        path: "../wit/compat/0.1.1/policy.wit",
    });
}

pub(super) use v2::portcullis::policy::types::{
    Annotations, Completion, Context, Denial as WitDenial, Level, Manifest, Prompt, PromptAction,
    PromptArgument, Resource, ResourceAction, ResourceAnnotations, ResourceKind, ResultVerdict,
    ServerRule as WitServerRule, Tool, ToolConstraints, Verdict,
};

impl Manifest {
    /// What the host assumes of a 0.1.0 policy, which cannot say: every tool hook,
    /// every input, no reuse of decisions; no resource or prompt hook (0.1 has none).
    pub(crate) fn everything() -> Manifest {
        Manifest {
            filter_tools: true,
            check_call: true,
            check_result: true,
            reads_connector_tools: true,
            reads_arguments: true,
            deterministic: false,
            ..Manifest::tools_only()
        }
    }

    /// Nothing at all: the base a 0.1 manifest is converted onto.
    fn tools_only() -> Manifest {
        Manifest {
            filter_tools: false,
            check_call: false,
            check_result: false,
            reads_connector_tools: false,
            reads_arguments: false,
            deterministic: false,
            reads_tool_definitions: false,
            filter_resources: false,
            check_resource: false,
            check_resource_contents: false,
            filter_prompts: false,
            check_prompt: false,
            check_prompt_result: false,
        }
    }

    /// A 0.1.1 manifest: its tool hooks, nothing else.
    pub(super) fn from_v1(m: v1::portcullis::policy::types::Manifest) -> Manifest {
        Manifest {
            filter_tools: m.filter_tools,
            check_call: m.check_call,
            check_result: m.check_result,
            reads_connector_tools: m.reads_connector_tools,
            reads_arguments: m.reads_arguments,
            deterministic: m.deterministic,
            ..Manifest::tools_only()
        }
    }
}

/// One instantiated policy, of either version.
pub(super) enum Instance {
    V2(v2::Policy),
    V1(v1::PolicyHooks),
}

/// Pre-linked component of either version (instantiated afresh per evaluation).
#[derive(Clone)]
pub(super) enum Pre {
    V2(v2::PolicyPre<super::runtime::StoreState>),
    V1(v1::PolicyHooksPre<super::runtime::StoreState>),
}

/// The hooks' calls, one signature for both versions: 0.2.0 records in and out.
/// A 0.1 component is only ever asked about tools (its manifest says so); asked
/// anything else it fails the evaluation rather than answer for a hook it lacks.
impl Instance {
    pub(super) fn validate_settings(
        &self,
        store: &mut Store,
        settings: &str,
    ) -> wasmtime::Result<Result<(), String>> {
        match self {
            Instance::V2(p) => p.call_validate_settings(store, settings),
            Instance::V1(p) => p.call_validate_settings(store, settings),
        }
    }

    pub(super) fn filter_tools(
        &self,
        store: &mut Store,
        settings: &str,
        ctx: &Context,
    ) -> wasmtime::Result<Vec<Verdict>> {
        match self {
            Instance::V2(p) => p.call_filter_tools(store, settings, ctx),
            Instance::V1(p) => Ok(p
                .call_filter_tools(store, settings, &compat::context(ctx))?
                .into_iter()
                .map(compat::verdict)
                .collect()),
        }
    }

    pub(super) fn check_call(
        &self,
        store: &mut Store,
        settings: &str,
        ctx: &Context,
        tool: &Tool,
        arguments: &str,
    ) -> wasmtime::Result<Verdict> {
        match self {
            Instance::V2(p) => p.call_check_call(store, settings, ctx, tool, arguments),
            Instance::V1(p) => p
                .call_check_call(
                    store,
                    settings,
                    &compat::context(ctx),
                    &compat::tool(tool),
                    arguments,
                )
                .map(compat::verdict),
        }
    }

    pub(super) fn check_result(
        &self,
        store: &mut Store,
        settings: &str,
        ctx: &Context,
        tool: &Tool,
        result: &str,
    ) -> wasmtime::Result<ResultVerdict> {
        match self {
            Instance::V2(p) => p.call_check_result(store, settings, ctx, tool, result),
            Instance::V1(p) => p
                .call_check_result(
                    store,
                    settings,
                    &compat::context(ctx),
                    &compat::tool(tool),
                    result,
                )
                .map(compat::result_verdict),
        }
    }

    pub(super) fn filter_resources(
        &self,
        store: &mut Store,
        settings: &str,
        ctx: &Context,
        items: &[Resource],
    ) -> wasmtime::Result<Vec<Verdict>> {
        self.v2("filter-resources")?
            .call_filter_resources(store, settings, ctx, items)
    }

    pub(super) fn check_resource(
        &self,
        store: &mut Store,
        settings: &str,
        ctx: &Context,
        item: &Resource,
        action: &ResourceAction,
    ) -> wasmtime::Result<Verdict> {
        self.v2("check-resource")?
            .call_check_resource(store, settings, ctx, item, action)
    }

    pub(super) fn check_resource_contents(
        &self,
        store: &mut Store,
        settings: &str,
        ctx: &Context,
        item: &Resource,
        result: &str,
    ) -> wasmtime::Result<ResultVerdict> {
        self.v2("check-resource-contents")?
            .call_check_resource_contents(store, settings, ctx, item, result)
    }

    pub(super) fn filter_prompts(
        &self,
        store: &mut Store,
        settings: &str,
        ctx: &Context,
        items: &[Prompt],
    ) -> wasmtime::Result<Vec<Verdict>> {
        self.v2("filter-prompts")?
            .call_filter_prompts(store, settings, ctx, items)
    }

    pub(super) fn check_prompt(
        &self,
        store: &mut Store,
        settings: &str,
        ctx: &Context,
        item: &Prompt,
        action: &PromptAction,
    ) -> wasmtime::Result<Verdict> {
        self.v2("check-prompt")?
            .call_check_prompt(store, settings, ctx, item, action)
    }

    pub(super) fn check_prompt_result(
        &self,
        store: &mut Store,
        settings: &str,
        ctx: &Context,
        item: &Prompt,
        result: &str,
    ) -> wasmtime::Result<ResultVerdict> {
        self.v2("check-prompt-result")?
            .call_check_prompt_result(store, settings, ctx, item, result)
    }

    fn v2(&self, hook: &str) -> wasmtime::Result<&v2::Policy> {
        match self {
            Instance::V2(p) => Ok(p),
            Instance::V1(_) => Err(wasmtime::Error::msg(format!(
                "a portcullis:policy@0.1 component has no `{hook}`"
            ))),
        }
    }
}

type Store = wasmtime::Store<super::runtime::StoreState>;

/// The `host.log` import of both versions: a policy's log line goes to the
/// gateway log with its name.
fn log(state: &super::runtime::StoreState, level: Level, message: String) {
    let policy = &*state.policy_name;
    let message: String = message.chars().take(2048).collect();
    match level {
        Level::Debug => tracing::debug!(target: "portcullis::policy", policy, "{message}"),
        Level::Info => tracing::info!(target: "portcullis::policy", policy, "{message}"),
        Level::Warn => tracing::warn!(target: "portcullis::policy", policy, "{message}"),
        Level::Error => tracing::error!(target: "portcullis::policy", policy, "{message}"),
    }
}

impl v2::portcullis::policy::host::Host for super::runtime::StoreState {
    fn log(&mut self, level: Level, message: String) {
        log(self, level, message);
    }
}

impl v2::portcullis::policy::types::Host for super::runtime::StoreState {}

impl v1::portcullis::policy::host::Host for super::runtime::StoreState {
    fn log(&mut self, level: v1::portcullis::policy::types::Level, message: String) {
        log(self, compat::level(level), message);
    }
}

impl v1::portcullis::policy::types::Host for super::runtime::StoreState {}

/// A tool as policies see it: its upstream name and annotations, with absent hints
/// kept absent (`None`) so "unannotated" stays distinguishable; its whole
/// definition (JSON text) only for policies that read it.
pub(super) fn tool(json: &Value, with_definition: bool) -> Tool {
    let ann = json.get("annotations");
    let hint = |key: &str| ann.and_then(|a| a.get(key)).and_then(Value::as_bool);
    Tool {
        name: text(json, "name"),
        annotations: Annotations {
            read_only: hint("readOnlyHint"),
            destructive: hint("destructiveHint"),
            idempotent: hint("idempotentHint"),
            open_world: hint("openWorldHint"),
        },
        definition: with_definition.then(|| json.to_string()),
    }
}

/// A resource (`uri`) or template (`uriTemplate`) as the upstream listed it.
pub(super) fn resource(json: &Value, kind: ResourceKind) -> Resource {
    let key = match kind {
        ResourceKind::Resource => "uri",
        ResourceKind::Template => "uriTemplate",
    };
    let annotations = json.get("annotations").map(|a| ResourceAnnotations {
        audience: a
            .get("audience")
            .and_then(Value::as_array)
            .map(|l| {
                l.iter()
                    .filter_map(Value::as_str)
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default(),
        priority: a.get("priority").and_then(Value::as_f64),
        last_modified: optional(a, "lastModified"),
    });
    Resource {
        kind,
        uri: text(json, key),
        name: text(json, "name"),
        title: optional(json, "title"),
        description: optional(json, "description"),
        mime_type: optional(json, "mimeType"),
        annotations,
    }
}

/// A prompt as the upstream listed it.
pub(super) fn prompt(json: &Value) -> Prompt {
    let arguments = json
        .get("arguments")
        .and_then(Value::as_array)
        .map(|l| {
            l.iter()
                .map(|a| PromptArgument {
                    name: text(a, "name"),
                    description: optional(a, "description"),
                    required: a.get("required").and_then(Value::as_bool).unwrap_or(false),
                })
                .collect()
        })
        .unwrap_or_default();
    Prompt {
        name: text(json, "name"),
        title: optional(json, "title"),
        description: optional(json, "description"),
        arguments,
    }
}

fn text(json: &Value, key: &str) -> String {
    optional(json, key).unwrap_or_default()
}

fn optional(json: &Value, key: &str) -> Option<String> {
    json.get(key).and_then(Value::as_str).map(String::from)
}

/// The evaluation context for one connector; `tools` as the policy reads them.
pub(super) fn context(
    identity: &Identity,
    declaration: Option<&[ServerRule]>,
    connector: &Connector,
    tools: Vec<Tool>,
) -> Context {
    Context {
        identity: v2::portcullis::policy::types::Identity {
            agent: identity.agent.clone(),
            org: identity.org.clone(),
            scopes: identity.scopes.clone(),
        },
        declaration: declaration.map(|rules| rules.iter().map(server_rule).collect()),
        connector: v2::portcullis::policy::types::Connector {
            id: connector.id.clone(),
            slug: connector.slug.clone(),
            target_url: connector.target_url.clone(),
            transport: connector.transport.name().to_string(),
            disabled_tools: connector.disabled_tools.clone(),
            disabled_prompts: connector.disabled_prompts.clone(),
            disabled_resources: connector.disabled_resources.clone(),
            tools,
        },
    }
}

fn server_rule(rule: &ServerRule) -> WitServerRule {
    WitServerRule {
        url: rule.url.clone(),
        tools: rule.tools.as_ref().map(|t| ToolConstraints {
            required: t.required.clone(),
            read_only: t.read_only,
            destructive: t.destructive,
            idempotent: t.idempotent,
            open_world: t.open_world,
        }),
    }
}

/// 0.2.0 records as a 0.1 component reads them, and its answers back.
mod compat {
    use super::v1::portcullis::policy::types as old;
    use super::{Context, Level, ResultVerdict, Tool, Verdict, WitDenial};

    pub(super) fn context(ctx: &Context) -> old::Context {
        let c = &ctx.connector;
        old::Context {
            identity: old::Identity {
                agent: ctx.identity.agent.clone(),
                org: ctx.identity.org.clone(),
                scopes: ctx.identity.scopes.clone(),
            },
            declaration: ctx.declaration.as_ref().map(|rules| {
                rules
                    .iter()
                    .map(|r| old::ServerRule {
                        url: r.url.clone(),
                        tools: r.tools.as_ref().map(|t| old::ToolConstraints {
                            required: t.required.clone(),
                            read_only: t.read_only,
                            destructive: t.destructive,
                            idempotent: t.idempotent,
                            open_world: t.open_world,
                        }),
                    })
                    .collect()
            }),
            connector: old::Connector {
                id: c.id.clone(),
                slug: c.slug.clone(),
                target_url: c.target_url.clone(),
                disabled_tools: c.disabled_tools.clone(),
                tools: c.tools.iter().map(tool).collect(),
            },
        }
    }

    pub(super) fn tool(t: &Tool) -> old::Tool {
        let a = &t.annotations;
        old::Tool {
            name: t.name.clone(),
            annotations: old::Annotations {
                read_only: a.read_only,
                destructive: a.destructive,
                idempotent: a.idempotent,
                open_world: a.open_world,
            },
        }
    }

    fn denial(d: old::Denial) -> WitDenial {
        WitDenial {
            code: d.code,
            message: d.message,
            reason: d.reason,
        }
    }

    pub(super) fn verdict(v: old::Verdict) -> Verdict {
        match v {
            old::Verdict::Allow => Verdict::Allow,
            old::Verdict::Deny(d) => Verdict::Deny(denial(d)),
        }
    }

    pub(super) fn result_verdict(v: old::ResultVerdict) -> ResultVerdict {
        match v {
            old::ResultVerdict::Pass => ResultVerdict::Pass,
            old::ResultVerdict::Replace(text) => ResultVerdict::Replace(text),
            old::ResultVerdict::Deny(d) => ResultVerdict::Deny(denial(d)),
        }
    }

    pub(super) fn level(l: old::Level) -> Level {
        match l {
            old::Level::Debug => Level::Debug,
            old::Level::Info => Level::Info,
            old::Level::Warn => Level::Warn,
            old::Level::Error => Level::Error,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_tool_definition_is_passed_only_when_read() {
        let listed = json!({
            "name": "query",
            "description": "Runs SQL",
            "inputSchema": {"type": "object"},
            "annotations": {"readOnlyHint": true}
        });
        let read = tool(&listed, true);
        let parsed: Value = serde_json::from_str(read.definition.as_deref().unwrap()).unwrap();
        assert_eq!(parsed, listed, "the whole Tool object, as listed");
        assert_eq!(read.annotations.read_only, Some(true));
        assert_eq!(
            read.annotations.destructive, None,
            "unannotated stays unknown"
        );
        assert!(tool(&listed, false).definition.is_none());
    }

    #[test]
    fn resources_and_prompts_become_records_with_their_metadata() {
        let r = resource(
            &json!({"uri": "file:///a", "name": "a", "mimeType": "text/plain",
                    "annotations": {"audience": ["user"], "priority": 0.5}}),
            ResourceKind::Resource,
        );
        assert_eq!(
            (r.uri.as_str(), r.mime_type.as_deref()),
            ("file:///a", Some("text/plain"))
        );
        let a = r.annotations.unwrap();
        assert_eq!(
            (a.audience, a.priority),
            (vec!["user".to_string()], Some(0.5))
        );
        let t = resource(
            &json!({"uriTemplate": "file:///{x}", "name": "x"}),
            ResourceKind::Template,
        );
        assert_eq!(t.uri, "file:///{x}");
        let p = prompt(
            &json!({"name": "p", "arguments": [{"name": "q", "required": true}, {"name": "r"}]}),
        );
        let required: Vec<bool> = p.arguments.iter().map(|a| a.required).collect();
        assert_eq!(required, [true, false]);
    }
}
