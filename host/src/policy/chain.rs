//! The policy chain: the ordered list of loaded policies and how their verdicts
//! combine. A tool is listed only if every enforcing policy allows it; a call proceeds
//! only if every policy allows it; the first denial's code and message reach the agent.
//! A policy that fails (trap, timeout, memory) denies, unless its `on_error = "allow"`.
//! A policy in `monitor` mode is evaluated and logged but never enforced.
//!
//! Each policy's manifest (`describe`) decides what is done for it: hooks it does
//! not implement are skipped, inputs it does not read are not built or passed, and
//! decisions of a deterministic policy are reused (see `cache`).

use std::sync::Arc;

use serde_json::Value;

use super::bindings::{self, Context, Manifest, ResultVerdict, Verdict};
use super::cache::{CallInputs, CallKey, DecisionCache, ListKey, count_hits};
use super::runtime::{EvalError, Limits, Module, Runtime};
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
    fn cached(&self) -> bool {
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
    fn rules_stamp(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::hash::DefaultHasher::new();
        self.identity.stamp.hash(&mut h);
        let c = self.connector;
        (&c.slug, &c.target_url, &c.disabled_tools).hash(&mut h);
        h.finish()
    }
}

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

    /// Which of `subject.tools` the agent may see (same order).
    pub(crate) fn filter_tools(&self, subject: &Subject) -> Vec<bool> {
        self.filter_tools_with(subject, true)
            .expect("evaluating chains always decide")
    }

    /// [`Chain::filter_tools`] from reused decisions only: `None` when a policy
    /// would have to be evaluated (the caller then evaluates off the async workers).
    pub(crate) fn filter_tools_cached(&self, subject: &Subject) -> Option<Vec<bool>> {
        self.filter_tools_with(subject, false)
    }

    fn filter_tools_with(&self, subject: &Subject, evaluate: bool) -> Option<Vec<bool>> {
        let mut visible = vec![true; subject.tools.len()];
        let mut ctx: Option<Context> = None;
        let mut hits = 0;
        for (i, p) in self.policies.iter().enumerate() {
            if !p.manifest.filter_tools {
                continue;
            }
            let key = p.cached().then(|| ListKey {
                policy: i,
                agent: subject.identity.agent.clone(),
                rules: subject.rules_stamp(),
                connector: subject.connector.id.clone(),
                tools_version: subject.tools_version,
            });
            let verdicts = match key.as_ref().and_then(|k| self.cache.list(k)) {
                Some(v) => {
                    hits += 1;
                    v
                }
                None if !evaluate => return None,
                None => {
                    let ctx = ctx.get_or_insert_with(|| self.context(subject, true));
                    match self.evaluate_filter(p, subject, ctx, visible.len()) {
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
                            tool = tool_name(&subject.tools[i]), reason = %d.reason, "would hide tool"
                        ),
                    }
                }
            }
        }
        count_hits(hits);
        Some(visible)
    }

    /// One `filter-tools` evaluation; `Err` after logging a failure.
    fn evaluate_filter(
        &self,
        p: &Loaded,
        subject: &Subject,
        ctx: &Context,
        n: usize,
    ) -> Result<Vec<Verdict>, ()> {
        let span = PolicySpan::enter(&p.name, &p.module.digest, p.spec.mode, "filter_tools");
        let result = self
            .runtime
            .evaluate(&p.module, &p.name, limits(&p.spec), |policy, store| {
                policy.call_filter_tools(store, &p.spec.settings, ctx)
            });
        span.finish(match &result {
            Ok(v) if v.len() != n => "error",
            Ok(v) if v.iter().any(|v| matches!(v, Verdict::Deny(_))) => "deny",
            Ok(_) => "allow",
            Err(_) => "error",
        });
        match result {
            Ok(v) if v.len() == n => Ok(v),
            Ok(v) => {
                let e = EvalError::Invalid(format!("{} verdicts for {n} tools", v.len()));
                self.failed(p, "filter-tools", subject, &e);
                Err(())
            }
            Err(e) => {
                self.failed(p, "filter-tools", subject, &e);
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
        // Built on first need: with tools for policies that read them, without for
        // the others.
        let (mut full, mut lean): (Option<Context>, Option<Context>) = (None, None);
        let mut wit_tool = None;
        // The cache key's inputs, built once for every policy that reuses decisions.
        let mut call: Option<Arc<CallInputs>> = None;
        let mut hits = 0;
        for (i, p) in self.policies.iter().enumerate() {
            if !p.manifest.check_call {
                continue;
            }
            let key = p.cached().then(|| CallKey {
                policy: i,
                call: call
                    .get_or_insert_with(|| {
                        Arc::new(CallInputs {
                            agent: subject.identity.agent.clone(),
                            rules: subject.rules_stamp(),
                            connector: subject.connector.id.clone(),
                            tools_version: subject.tools_version,
                            tool: tool_name(tool).to_string(),
                            arguments: arguments.to_string(),
                        })
                    })
                    .clone(),
                with_arguments: p.manifest.reads_arguments,
            });
            let result = match key.as_ref().and_then(|k| self.cache.call(k)) {
                Some(v) => {
                    hits += 1;
                    Ok(v)
                }
                None if !evaluate => return None,
                None => {
                    let reads_tools = p.manifest.reads_connector_tools;
                    let slot = if reads_tools { &mut full } else { &mut lean };
                    let ctx = slot.get_or_insert_with(|| self.context(subject, reads_tools));
                    let wit_tool = wit_tool.get_or_insert_with(|| bindings::tool(tool));
                    let args = if p.manifest.reads_arguments {
                        arguments
                    } else {
                        "{}"
                    };
                    let span =
                        PolicySpan::enter(&p.name, &p.module.digest, p.spec.mode, "check_call");
                    let result = self.runtime.evaluate(
                        &p.module,
                        &p.name,
                        limits(&p.spec),
                        |policy, store| {
                            policy.call_check_call(store, &p.spec.settings, ctx, wit_tool, args)
                        },
                    );
                    span.finish(match &result {
                        Ok(Verdict::Allow) => "allow",
                        Ok(Verdict::Deny(_)) => "deny",
                        Err(_) => "error",
                    });
                    if let (Some(k), Ok(v)) = (key, &result) {
                        self.cache.put_call(k, v.clone());
                    }
                    result
                }
            };
            let denial = match result {
                Ok(Verdict::Allow) => continue,
                Ok(Verdict::Deny(d)) => denial(d),
                Err(e) => match self.on_failure(p, "check-call", subject, &e) {
                    Some(d) => d,
                    None => continue,
                },
            };
            if let Some(d) = self.enforce(p, subject, denial) {
                count_hits(hits);
                return Some(self.decided_by(p, Some(d)));
            }
        }
        count_hits(hits);
        Some(self.allowed())
    }

    /// Whether any policy has a post-call hook (otherwise results pass untouched).
    pub(crate) fn checks_results(&self) -> bool {
        self.policies.iter().any(|p| p.manifest.check_result)
    }

    /// The post-call hook over a result (JSON text).
    pub(crate) fn check_result(&self, subject: &Subject, tool: &Value, result: &str) -> Decision {
        self.check_result_by(subject, tool, result, |_| true)
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
        self.check_result_by(subject, tool, message, redacts_messages)
    }

    /// `check-result` of the policies `which` selects, in chain order.
    fn check_result_by(
        &self,
        subject: &Subject,
        tool: &Value,
        result: &str,
        which: fn(&Loaded) -> bool,
    ) -> Decision {
        let (mut full, mut lean): (Option<Context>, Option<Context>) = (None, None);
        let wit_tool = bindings::tool(tool);
        let mut current: Option<String> = None;
        for p in &self.policies {
            if !p.manifest.check_result || !which(p) {
                continue;
            }
            let reads_tools = p.manifest.reads_connector_tools;
            let slot = if reads_tools { &mut full } else { &mut lean };
            let ctx = &*slot.get_or_insert_with(|| self.context(subject, reads_tools));
            let text = current.as_deref().unwrap_or(result);
            let span = PolicySpan::enter(&p.name, &p.module.digest, p.spec.mode, "check_result");
            let outcome =
                self.runtime
                    .evaluate(&p.module, &p.name, limits(&p.spec), |policy, store| {
                        policy.call_check_result(store, &p.spec.settings, ctx, &wit_tool, text)
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
                        if let Some(d) = self.on_failure(p, "check-result", subject, &e) {
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
                    if let Some(d) = self.on_failure(p, "check-result", subject, &e) {
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

    /// The WIT context; `with_tools: false` leaves `connector.tools` empty, for
    /// policies that do not read it.
    fn context(&self, s: &Subject, with_tools: bool) -> Context {
        let tools = if with_tools { s.tools } else { &[] };
        bindings::context(s.identity, s.declaration, s.connector, tools)
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

    fn allowed(&self) -> Decision {
        Decision {
            denial: None,
            policy: self.names.clone(),
            digest: self.digest.clone(),
            replacement: None,
        }
    }
}

fn tool_name(tool: &Value) -> &str {
    tool.get("name").and_then(Value::as_str).unwrap_or_default()
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
        jsonrpc::METHOD_NOT_FOUND => 404,
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
