//! The policy chain: the ordered list of loaded policies and how their verdicts
//! combine. A tool is listed only if every enforcing policy allows it; a call proceeds
//! only if every policy allows it; the first denial's code and message reach the agent.
//! A policy that fails (trap, timeout, memory) denies, unless its `on_error = "allow"`.
//! A policy in `monitor` mode is evaluated and logged but never enforced.
//!
//! Each policy's manifest (`describe`) decides what is done for it: hooks it does
//! not implement are skipped, inputs it does not read are not built or passed, and
//! decisions of a deterministic policy are reused (see `cache`).
//!
//! Three loops serve every hook: [`Chain::filter_with`] (the batched list filters),
//! [`Chain::decide`] (the request checks) and [`Chain::check_result_by`] (the
//! result hooks). This module drives them for tools; `items` for resources and
//! prompts.

use std::sync::Arc;

use serde_json::Value;

use super::bindings::{self, Context, Instance, Manifest, ResultVerdict, Tool, Verdict};
use super::cache::{CallInputs, CallKey, DecisionCache, ListKey, count_hits};
use super::runtime::{EvalError, Limits, Module, Runtime, StoreState};
use crate::auth::Identity;
use crate::config::{Connector, ModuleRef, OnError, PolicyMode, PolicySpec, ServerRule};
use crate::mcp::jsonrpc;
use crate::telemetry::PolicySpan;

/// One policy of the chain, ready to evaluate.
pub(crate) struct Loaded {
    pub spec: PolicySpec,
    pub name: Arc<str>,
    pub module: Module,
    /// What the policy implements and reads (its `describe`).
    pub manifest: Manifest,
}

/// The built-in whose masking also applies to errors and notifications.
fn redacts_messages(p: &Loaded) -> bool {
    p.manifest.check_result && p.spec.module == ModuleRef::Builtin("redact-secrets".into())
}

impl Loaded {
    /// Whether this policy's decisions may be reused.
    pub(super) fn cached(&self) -> bool {
        self.manifest.deterministic && self.spec.cache_decisions
    }
}

/// What a request is about, for the policies.
pub(crate) struct Subject<'a> {
    pub identity: &'a Identity,
    pub declaration: Option<&'a [ServerRule]>,
    pub connector: &'a Connector,
    /// The connector's full tool list (JSON as the upstream sent it).
    pub tools: &'a [Value],
    /// The catalog's version of that list (a new list, a new version).
    pub tools_version: u64,
}

impl Subject<'_> {
    /// A digest of the agent's and the connector's rules as the policies read them
    /// (`bindings::context`): reused decisions are keyed by it, so a reload that
    /// changes a scope, a declaration or `disabled_tools` never meets an old one.
    pub(super) fn rules_stamp(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::hash::DefaultHasher::new();
        self.identity.stamp.hash(&mut h);
        let c = self.connector;
        (&c.slug, &c.target_url, c.transport.name()).hash(&mut h);
        (
            &c.disabled_tools,
            &c.disabled_prompts,
            &c.disabled_resources,
        )
            .hash(&mut h);
        h.finish()
    }
}

/// A list a batched filter judges: which hook, the items (JSON as the upstream
/// listed them) and the catalog's version of the list.
pub(super) struct List<'a> {
    pub kind: ListKind,
    pub items: &'a [Value],
    pub version: u64,
}

/// The lists policies filter, each with its own hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum ListKind {
    Tools,
    Resources,
    Templates,
    Prompts,
}

impl ListKind {
    fn implemented(self, m: &Manifest) -> bool {
        match self {
            ListKind::Tools => m.filter_tools,
            ListKind::Resources | ListKind::Templates => m.filter_resources,
            ListKind::Prompts => m.filter_prompts,
        }
    }

    fn export(self) -> &'static str {
        match self {
            ListKind::Tools => "filter-tools",
            ListKind::Resources | ListKind::Templates => "filter-resources",
            ListKind::Prompts => "filter-prompts",
        }
    }

    fn noun(self) -> &'static str {
        match self {
            ListKind::Tools => "tool",
            ListKind::Resources => "resource",
            ListKind::Templates => "resource template",
            ListKind::Prompts => "prompt",
        }
    }
}

/// A list's items as WIT records, built once for every policy that filters it.
enum Records {
    Resources(Vec<bindings::Resource>),
    Prompts(Vec<bindings::Prompt>),
}

impl Records {
    fn of(list: &List) -> Option<Records> {
        use bindings::ResourceKind;
        let resources = |kind: ResourceKind| {
            let items = list.items.iter().map(|r| bindings::resource(r, kind));
            Records::Resources(items.collect())
        };
        match list.kind {
            ListKind::Tools => None,
            ListKind::Resources => Some(resources(ResourceKind::Resource)),
            ListKind::Templates => Some(resources(ResourceKind::Template)),
            ListKind::Prompts => Some(Records::Prompts(
                list.items.iter().map(bindings::prompt).collect(),
            )),
        }
    }
}

/// The WIT contexts of one request, built on first need: with or without the
/// connector's tools, with or without their definitions, as each policy reads them.
#[derive(Default)]
pub(super) struct Contexts {
    built: [Option<Context>; 3],
}

impl Contexts {
    pub(super) fn get(&mut self, subject: &Subject, m: &Manifest) -> &Context {
        let slot = match (m.reads_connector_tools, m.reads_tool_definitions) {
            (false, _) => 0,
            (true, false) => 1,
            (true, true) => 2,
        };
        self.built[slot].get_or_insert_with(|| {
            let tools = match slot {
                0 => Vec::new(),
                _ => subject
                    .tools
                    .iter()
                    .map(|t| bindings::tool(t, slot == 2))
                    .collect(),
            };
            bindings::context(
                subject.identity,
                subject.declaration,
                subject.connector,
                tools,
            )
        })
    }

    /// The context of a list filter, which always receives the connector's tools.
    fn for_filter(&mut self, subject: &Subject, m: &Manifest) -> &Context {
        let reads = Manifest {
            reads_connector_tools: true,
            ..*m
        };
        self.get(subject, &reads)
    }
}

/// One policy's verdict in [`Chain::decide`]: `None` when it would have to be
/// evaluated and the caller asked for reused decisions only.
pub(super) type Step = Option<Result<Verdict, EvalError>>;

/// A refusal, for the agent (code, message) and the audit (reason, policy).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Denial {
    pub code: i64,
    pub message: String,
    pub reason: String,
    /// The audited status: 403 scope, 404 hidden, 500 policy failure.
    pub status: u16,
}

/// The chain's answer to a call or result check.
#[derive(Debug, Clone)]
pub(crate) struct Decision {
    pub denial: Option<Denial>,
    /// The deciding policy: the denying one, else the whole chain.
    pub policy: String,
    pub digest: String,
    /// For result checks: a replacement result (JSON text) to send instead.
    pub replacement: Option<String>,
}

pub(crate) struct Chain {
    runtime: Arc<Runtime>,
    policies: Vec<Loaded>,
    cache: DecisionCache,
    /// sha256 over every member's name, digest, mode and settings.
    pub digest: String,
    pub names: String,
}

impl Chain {
    pub(crate) fn new(runtime: Arc<Runtime>, policies: Vec<Loaded>) -> Chain {
        let mut material = String::new();
        for p in &policies {
            material.push_str(&format!(
                "{}\0{}\0{:?}\0{}\n",
                p.name, p.module.digest, p.spec.mode, p.spec.settings
            ));
        }
        let digest = crate::digest::sha256_hex(material.as_bytes());
        let names = if policies.is_empty() {
            "(empty chain)".to_string()
        } else {
            policies
                .iter()
                .map(|p| &*p.name)
                .collect::<Vec<_>>()
                .join(",")
        };
        Chain {
            runtime,
            policies,
            cache: DecisionCache::default(),
            digest,
            names,
        }
    }

    pub(crate) fn policies(&self) -> &[Loaded] {
        &self.policies
    }

    /// The chain's reused decisions.
    pub(super) fn cache(&self) -> &DecisionCache {
        &self.cache
    }

    /// Which of `subject.tools` the agent may see (same order).
    pub(crate) fn filter_tools(&self, subject: &Subject) -> Vec<bool> {
        self.filter_with(subject, &tools(subject), true)
            .expect("evaluating chains always decide")
    }

    /// [`Chain::filter_tools`] from reused decisions only: `None` when a policy
    /// would have to be evaluated (the caller then evaluates off the async workers).
    pub(crate) fn filter_tools_cached(&self, subject: &Subject) -> Option<Vec<bool>> {
        self.filter_with(subject, &tools(subject), false)
    }

    /// Which items of `list` the agent may see: every enforcing policy that filters
    /// the list's kind must allow an item; a failing policy hides them all unless
    /// its `on_error = "allow"`.
    pub(super) fn filter_with(
        &self,
        subject: &Subject,
        list: &List,
        evaluate: bool,
    ) -> Option<Vec<bool>> {
        let mut visible = vec![true; list.items.len()];
        let mut contexts = Contexts::default();
        let mut records: Option<Option<Records>> = None;
        let mut hits = 0;
        for (i, p) in self.policies.iter().enumerate() {
            if !list.kind.implemented(&p.manifest) {
                continue;
            }
            let key = p.cached().then(|| ListKey {
                policy: i,
                kind: list.kind,
                agent: subject.identity.agent.clone(),
                rules: subject.rules_stamp(),
                connector: subject.connector.id.clone(),
                version: list.version,
                tools_version: subject.tools_version,
            });
            let verdicts = match key.as_ref().and_then(|k| self.cache.list(k)) {
                Some(v) => {
                    hits += 1;
                    v
                }
                None if !evaluate => return None,
                None => {
                    let ctx = contexts.for_filter(subject, &p.manifest);
                    let records = records.get_or_insert_with(|| Records::of(list));
                    match self.evaluate_filter(p, subject, list, ctx, records.as_ref()) {
                        Ok(v) => {
                            let v = Arc::new(v);
                            if let Some(k) = key {
                                self.cache.put_list(k, v.clone());
                            }
                            v
                        }
                        Err(()) => {
                            if p.spec.on_error == OnError::Deny
                                && p.spec.mode == PolicyMode::Enforce
                            {
                                visible.iter_mut().for_each(|v| *v = false);
                            }
                            continue;
                        }
                    }
                }
            };
            for (i, verdict) in verdicts.iter().enumerate() {
                if let Verdict::Deny(d) = verdict {
                    match p.spec.mode {
                        PolicyMode::Enforce => visible[i] = false,
                        PolicyMode::Monitor => tracing::info!(
                            target: "portcullis::policy", policy = &*p.name, mode = "monitor",
                            agent = %subject.identity.agent, connector = %subject.connector.id,
                            item = item_name(&list.items[i]), reason = %d.reason,
                            "would hide {}", list.kind.noun()
                        ),
                    }
                }
            }
        }
        count_hits(hits);
        Some(visible)
    }

    /// One batched filter evaluation; `Err` after logging a failure.
    fn evaluate_filter(
        &self,
        p: &Loaded,
        subject: &Subject,
        list: &List,
        ctx: &Context,
        records: Option<&Records>,
    ) -> Result<Vec<Verdict>, ()> {
        let export = list.kind.export();
        let n = list.items.len();
        let span = PolicySpan::enter(&p.name, &p.module.digest, p.spec.mode, span_name(export));
        let settings = &p.spec.settings;
        let result =
            self.runtime.evaluate(
                &p.module,
                &p.name,
                limits(&p.spec),
                |policy, store| match records {
                    None => policy.filter_tools(store, settings, ctx),
                    Some(Records::Resources(r)) => policy.filter_resources(store, settings, ctx, r),
                    Some(Records::Prompts(r)) => policy.filter_prompts(store, settings, ctx, r),
                },
            );
        span.finish(match &result {
            Ok(v) if v.len() != n => "error",
            Ok(v) if v.iter().any(|v| matches!(v, Verdict::Deny(_))) => "deny",
            Ok(_) => "allow",
            Err(_) => "error",
        });
        match result {
            Ok(v) if v.len() == n => Ok(v),
            Ok(v) => {
                let e = EvalError::Invalid(format!("{} verdicts for {n} items", v.len()));
                self.failed(p, export, subject, &e);
                Err(())
            }
            Err(e) => {
                self.failed(p, export, subject, &e);
                Err(())
            }
        }
    }

    /// Whether a call may proceed.
    pub(crate) fn check_call(&self, subject: &Subject, tool: &Value, arguments: &str) -> Decision {
        self.check_call_with(subject, tool, arguments, true)
            .expect("evaluating chains always decide")
    }

    /// [`Chain::check_call`] from reused decisions only: `None` when a policy would
    /// have to be evaluated.
    pub(crate) fn check_call_cached(
        &self,
        subject: &Subject,
        tool: &Value,
        arguments: &str,
    ) -> Option<Decision> {
        self.check_call_with(subject, tool, arguments, false)
    }

    fn check_call_with(
        &self,
        subject: &Subject,
        tool: &Value,
        arguments: &str,
        evaluate: bool,
    ) -> Option<Decision> {
        let mut wit_tools: [Option<Tool>; 2] = [None, None];
        // The cache key's inputs, built once for every policy that reuses decisions.
        let mut call: Option<Arc<CallInputs>> = None;
        let mut hits = 0;
        let decision = self.decide(
            subject,
            "check-call",
            |m| m.check_call,
            |i, p, contexts| {
                let key = p.cached().then(|| CallKey {
                    policy: i,
                    call: call
                        .get_or_insert_with(|| {
                            Arc::new(CallInputs {
                                agent: subject.identity.agent.clone(),
                                rules: subject.rules_stamp(),
                                connector: subject.connector.id.clone(),
                                tools_version: subject.tools_version,
                                tool: item_name(tool).to_string(),
                                arguments: arguments.to_string(),
                            })
                        })
                        .clone(),
                    with_arguments: p.manifest.reads_arguments,
                });
                if let Some(v) = key.as_ref().and_then(|k| self.cache.call(k)) {
                    hits += 1;
                    return Some(Ok(v));
                }
                if !evaluate {
                    return None;
                }
                let defs = p.manifest.reads_tool_definitions;
                let wit_tool =
                    wit_tools[usize::from(defs)].get_or_insert_with(|| bindings::tool(tool, defs));
                let args = if p.manifest.reads_arguments {
                    arguments
                } else {
                    "{}"
                };
                let ctx = contexts.get(subject, &p.manifest);
                let result = self.run_check(p, "check_call", |policy, store, settings| {
                    policy.check_call(store, settings, ctx, wit_tool, args)
                });
                if let (Some(k), Ok(v)) = (key, &result) {
                    self.cache.put_call(k, v.clone());
                }
                Some(result)
            },
        );
        // A lookup pass that falls back to evaluating is counted by the evaluating one.
        if decision.is_some() {
            count_hits(hits);
        }
        decision
    }

    /// The request-check loop: each policy whose manifest says it `implements` the
    /// hook gives a verdict (`verdict`); the first enforced denial decides, a failure
    /// denies unless `on_error = "allow"`. `None` when `verdict` gave none (reused
    /// decisions only).
    pub(super) fn decide(
        &self,
        subject: &Subject,
        export: &str,
        implements: impl Fn(&Manifest) -> bool,
        mut verdict: impl FnMut(usize, &Loaded, &mut Contexts) -> Step,
    ) -> Option<Decision> {
        let mut contexts = Contexts::default();
        for (i, p) in self.policies.iter().enumerate() {
            if !implements(&p.manifest) {
                continue;
            }
            let denial = match verdict(i, p, &mut contexts)? {
                Ok(Verdict::Allow) => continue,
                Ok(Verdict::Deny(d)) => denial(d),
                Err(e) => match self.on_failure(p, export, subject, &e) {
                    Some(d) => d,
                    None => continue,
                },
            };
            if let Some(d) = self.enforce(p, subject, denial) {
                return Some(self.decided_by(p, Some(d)));
            }
        }
        Some(self.allowed())
    }

    /// One request-check evaluation, in a span named for the hook.
    pub(super) fn run_check(
        &self,
        p: &Loaded,
        span_name: &'static str,
        call: impl FnOnce(
            &Instance,
            &mut wasmtime::Store<StoreState>,
            &str,
        ) -> wasmtime::Result<Verdict>,
    ) -> Result<Verdict, EvalError> {
        let span = PolicySpan::enter(&p.name, &p.module.digest, p.spec.mode, span_name);
        let settings = &p.spec.settings;
        let result = self
            .runtime
            .evaluate(&p.module, &p.name, limits(&p.spec), |policy, store| {
                call(policy, store, settings)
            });
        span.finish(match &result {
            Ok(Verdict::Allow) => "allow",
            Ok(Verdict::Deny(_)) => "deny",
            Err(_) => "error",
        });
        result
    }

    /// Whether any policy has a post-call hook (otherwise results pass untouched).
    pub(crate) fn checks_results(&self) -> bool {
        self.policies.iter().any(|p| p.manifest.check_result)
    }

    /// The post-call hook over a result (JSON text).
    pub(crate) fn check_result(&self, subject: &Subject, tool: &Value, result: &str) -> Decision {
        self.check_tool_result(subject, tool, result, |_| true)
    }

    /// Whether the chain holds `builtin:redact-secrets`, which also masks what else an
    /// upstream sends the agent during a call ([`Chain::check_message`]).
    pub(crate) fn redacts_messages(&self) -> bool {
        self.policies.iter().any(redacts_messages)
    }

    /// The host-side path of `builtin:redact-secrets` for what an upstream sends the
    /// agent besides a result: a JSON-RPC error object, or the params of a
    /// notification or relayed request during a call (JSON text, an object). Only
    /// that built-in sees them, through its own `check-result`, which masks every
    /// string of any JSON; other policies' `check-result` keeps its contract (a
    /// `tools/call` result). A replacement or a denial applies as for a result.
    pub(crate) fn check_message(&self, subject: &Subject, tool: &Value, message: &str) -> Decision {
        self.check_tool_result(subject, tool, message, redacts_messages)
    }

    /// `check-result` of the policies `which` selects.
    fn check_tool_result(
        &self,
        subject: &Subject,
        tool: &Value,
        result: &str,
        which: fn(&Loaded) -> bool,
    ) -> Decision {
        let mut wit_tools: [Option<Tool>; 2] = [None, None];
        self.check_result_by(
            subject,
            "check-result",
            result,
            |p| p.manifest.check_result && which(p),
            |p, policy, store, ctx, text| {
                let defs = p.manifest.reads_tool_definitions;
                let wit_tool =
                    wit_tools[usize::from(defs)].get_or_insert_with(|| bindings::tool(tool, defs));
                policy.check_result(store, &p.spec.settings, ctx, wit_tool, text)
            },
        )
    }

    /// The result-hook loop, in chain order over the policies `which` selects: each
    /// sees the result as the previous one left it; a replacement must be a JSON
    /// object; the first enforced denial decides.
    pub(super) fn check_result_by(
        &self,
        subject: &Subject,
        export: &'static str,
        result: &str,
        which: impl Fn(&Loaded) -> bool,
        mut call: impl FnMut(
            &Loaded,
            &Instance,
            &mut wasmtime::Store<StoreState>,
            &Context,
            &str,
        ) -> wasmtime::Result<ResultVerdict>,
    ) -> Decision {
        let mut contexts = Contexts::default();
        let mut current: Option<String> = None;
        let span_name = span_name(export);
        for p in &self.policies {
            if !which(p) {
                continue;
            }
            let ctx = contexts.get(subject, &p.manifest);
            let text = current.as_deref().unwrap_or(result);
            let span = PolicySpan::enter(&p.name, &p.module.digest, p.spec.mode, span_name);
            let outcome =
                self.runtime
                    .evaluate(&p.module, &p.name, limits(&p.spec), |policy, store| {
                        call(p, policy, store, ctx, text)
                    });
            span.finish(match &outcome {
                Ok(ResultVerdict::Pass) => "allow",
                Ok(ResultVerdict::Replace(_)) => "replace",
                Ok(ResultVerdict::Deny(_)) => "deny",
                Err(_) => "error",
            });
            match outcome {
                Ok(ResultVerdict::Pass) => {}
                Ok(ResultVerdict::Replace(new)) => {
                    let valid = serde_json::from_str::<Value>(&new).is_ok_and(|v| v.is_object());
                    if !valid {
                        let e = EvalError::Invalid("replacement is not a JSON object".into());
                        if let Some(d) = self.on_failure(p, export, subject, &e) {
                            return self.decided_by(p, Some(d));
                        }
                    } else if p.spec.mode == PolicyMode::Enforce {
                        current = Some(new);
                    } else {
                        tracing::info!(target: "portcullis::policy", policy = &*p.name, mode = "monitor", "would rewrite result");
                    }
                }
                Ok(ResultVerdict::Deny(d)) => {
                    if let Some(d) = self.enforce(p, subject, denial(d)) {
                        return self.decided_by(p, Some(d));
                    }
                }
                Err(e) => {
                    if let Some(d) = self.on_failure(p, export, subject, &e) {
                        return self.decided_by(p, Some(d));
                    }
                }
            }
        }
        Decision {
            replacement: current,
            ..self.allowed()
        }
    }

    /// Applies the policy's mode to a denial: `None` when only monitored.
    fn enforce(&self, p: &Loaded, subject: &Subject, d: Denial) -> Option<Denial> {
        match p.spec.mode {
            PolicyMode::Enforce => Some(d),
            PolicyMode::Monitor => {
                tracing::info!(
                    target: "portcullis::policy", policy = &*p.name, mode = "monitor",
                    agent = %subject.identity.agent, connector = %subject.connector.id,
                    code = d.code, reason = %d.reason, "would deny"
                );
                None
            }
        }
    }

    /// A failed evaluation: logged; a denial unless the operator chose `on_error = "allow"`.
    fn on_failure(
        &self,
        p: &Loaded,
        export: &str,
        subject: &Subject,
        e: &EvalError,
    ) -> Option<Denial> {
        self.failed(p, export, subject, e);
        if p.spec.on_error == OnError::Allow {
            return None;
        }
        let d = Denial {
            code: jsonrpc::INTERNAL_ERROR,
            message: "Policy evaluation failed".into(),
            reason: format!("policy {} failed: {e}", p.name),
            status: 500,
        };
        self.enforce(p, subject, d)
    }

    fn failed(&self, p: &Loaded, export: &str, subject: &Subject, e: &EvalError) {
        tracing::error!(
            target: "portcullis::policy", policy = &*p.name, digest = %p.module.digest, export,
            agent = %subject.identity.agent, connector = %subject.connector.id,
            on_error = ?p.spec.on_error, error = %e, "policy evaluation failed"
        );
    }

    fn decided_by(&self, p: &Loaded, denial: Option<Denial>) -> Decision {
        Decision {
            denial,
            policy: p.name.to_string(),
            digest: p.module.digest.clone(),
            replacement: None,
        }
    }

    /// The whole chain's allowing decision (what no policy denied).
    pub(crate) fn allowed(&self) -> Decision {
        Decision {
            denial: None,
            policy: self.names.clone(),
            digest: self.digest.clone(),
            replacement: None,
        }
    }
}

/// A hook's span name (`check_result` for `check-result`).
fn span_name(export: &'static str) -> &'static str {
    match export {
        "filter-tools" => "filter_tools",
        "filter-resources" => "filter_resources",
        "filter-prompts" => "filter_prompts",
        "check-call" => "check_call",
        "check-result" => "check_result",
        "check-resource" => "check_resource",
        "check-resource-contents" => "check_resource_contents",
        "check-prompt" => "check_prompt",
        "check-prompt-result" => "check_prompt_result",
        other => other,
    }
}

/// The subject's tools as a list to filter.
fn tools<'a>(subject: &Subject<'a>) -> List<'a> {
    List {
        kind: ListKind::Tools,
        items: subject.tools,
        version: subject.tools_version,
    }
}

/// An item's name for logs: a tool's or prompt's `name`, a resource's URI.
fn item_name(item: &Value) -> &str {
    ["name", "uri", "uriTemplate"]
        .iter()
        .find_map(|k| item.get(*k).and_then(Value::as_str))
        .unwrap_or_default()
}

fn limits(spec: &PolicySpec) -> Limits {
    Limits {
        timeout: spec.timeout,
        memory_bytes: spec.memory_limit_bytes,
    }
}

fn denial(d: bindings::WitDenial) -> Denial {
    let code = i64::from(d.code);
    let status = match code {
        jsonrpc::INSUFFICIENT_SCOPE => 403,
        jsonrpc::METHOD_NOT_FOUND | jsonrpc::RESOURCE_NOT_FOUND => 404,
        jsonrpc::INVALID_PARAMS if d.message == "Prompt not found" => 404,
        jsonrpc::INVALID_PARAMS => 400,
        jsonrpc::QUOTA_EXCEEDED => 429,
        jsonrpc::INTERNAL_ERROR => 500,
        _ => 403,
    };
    Denial {
        code,
        message: d.message,
        reason: d.reason,
        status,
    }
}
