//! The policy chain: the ordered list of loaded policies and how their verdicts
//! combine. A tool is listed only if every enforcing policy allows it; a call proceeds
//! only if every policy allows it; the first denial's code and message reach the agent.
//! A policy that fails (trap, timeout, memory) denies, unless its `on_error = "allow"`.
//! A policy in `monitor` mode is evaluated and logged but never enforced.

use std::sync::Arc;

use serde_json::Value;

use super::bindings::{self, Context, ResultVerdict, Verdict};
use super::runtime::{EvalError, Limits, Module, Runtime};
use crate::auth::Identity;
use crate::config::{Connector, OnError, PolicyMode, PolicySpec, ServerRule};
use crate::mcp::jsonrpc;
use crate::telemetry::PolicySpan;

/// One policy of the chain, ready to evaluate.
pub struct Loaded {
    pub spec: PolicySpec,
    pub name: Arc<str>,
    pub module: Module,
}

/// What a request is about, for the policies.
pub struct Subject<'a> {
    pub identity: &'a Identity,
    pub declaration: Option<&'a [ServerRule]>,
    pub connector: &'a Connector,
    /// The connector's full tool list (JSON as the upstream sent it).
    pub tools: &'a [Value],
}

/// A refusal, for the agent (code, message) and the audit (reason, policy).
#[derive(Debug, Clone, PartialEq)]
pub struct Denial {
    pub code: i64,
    pub message: String,
    pub reason: String,
    /// The audited status: 403 scope, 404 hidden, 500 policy failure.
    pub status: u16,
}

/// The chain's answer to a call or result check.
#[derive(Debug, Clone)]
pub struct Decision {
    pub denial: Option<Denial>,
    /// The deciding policy: the denying one, else the whole chain.
    pub policy: String,
    pub digest: String,
    /// For result checks: a replacement result (JSON text) to send instead.
    pub replacement: Option<String>,
}

pub struct Chain {
    runtime: Arc<Runtime>,
    policies: Vec<Loaded>,
    /// sha256 over every member's name, digest, mode and settings.
    pub digest: String,
    pub names: String,
}

impl Chain {
    pub fn new(runtime: Arc<Runtime>, policies: Vec<Loaded>) -> Chain {
        let mut material = String::new();
        for p in &policies {
            material.push_str(&format!(
                "{}\0{}\0{:?}\0{}\n",
                p.name, p.module.digest, p.spec.mode, p.spec.settings
            ));
        }
        let digest = hex::encode(crate::auth::sha256(material.as_bytes()));
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
            digest,
            names,
        }
    }

    pub fn policies(&self) -> &[Loaded] {
        &self.policies
    }

    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }

    /// Which of `subject.tools` the agent may see (same order).
    pub fn filter_tools(&self, subject: &Subject) -> Vec<bool> {
        let mut visible = vec![true; subject.tools.len()];
        if self.policies.is_empty() {
            return visible;
        }
        let ctx = self.context(subject);
        for p in &self.policies {
            let span = PolicySpan::enter(&p.name, &p.module.digest, p.spec.mode, "filter_tools");
            let result =
                self.runtime
                    .evaluate(&p.module, &p.name, limits(&p.spec), |policy, store| {
                        policy.call_filter_tools(store, &p.spec.settings, &ctx)
                    });
            span.finish(match &result {
                Ok(v) if v.len() != visible.len() => "error",
                Ok(v) if v.iter().any(|v| matches!(v, Verdict::Deny(_))) => "deny",
                Ok(_) => "allow",
                Err(_) => "error",
            });
            let verdicts = match result {
                Ok(v) if v.len() == visible.len() => v,
                Ok(v) => {
                    let e = EvalError::Invalid(format!(
                        "{} verdicts for {} tools",
                        v.len(),
                        visible.len()
                    ));
                    self.failed(p, "filter-tools", subject, &e);
                    if p.spec.on_error == OnError::Deny && p.spec.mode == PolicyMode::Enforce {
                        visible.iter_mut().for_each(|v| *v = false);
                    }
                    continue;
                }
                Err(e) => {
                    self.failed(p, "filter-tools", subject, &e);
                    if p.spec.on_error == OnError::Deny && p.spec.mode == PolicyMode::Enforce {
                        visible.iter_mut().for_each(|v| *v = false);
                    }
                    continue;
                }
            };
            for (i, verdict) in verdicts.into_iter().enumerate() {
                if let Verdict::Deny(d) = verdict {
                    match p.spec.mode {
                        PolicyMode::Enforce => visible[i] = false,
                        PolicyMode::Monitor => tracing::info!(
                            target: "portcullis::policy", policy = &*p.name, mode = "monitor",
                            agent = %subject.identity.agent, connector = %subject.connector.id,
                            tool = %ctx.connector.tools[i].name, reason = %d.reason, "would hide tool"
                        ),
                    }
                }
            }
        }
        visible
    }

    /// Whether a call may proceed.
    pub fn check_call(&self, subject: &Subject, tool: &Value, arguments: &str) -> Decision {
        let ctx = self.context(subject);
        let wit_tool = bindings::tool(tool);
        for p in &self.policies {
            let span = PolicySpan::enter(&p.name, &p.module.digest, p.spec.mode, "check_call");
            let result =
                self.runtime
                    .evaluate(&p.module, &p.name, limits(&p.spec), |policy, store| {
                        policy.call_check_call(store, &p.spec.settings, &ctx, &wit_tool, arguments)
                    });
            span.finish(match &result {
                Ok(Verdict::Allow) => "allow",
                Ok(Verdict::Deny(_)) => "deny",
                Err(_) => "error",
            });
            let denial = match result {
                Ok(Verdict::Allow) => continue,
                Ok(Verdict::Deny(d)) => denial(d),
                Err(e) => match self.on_failure(p, "check-call", subject, &e) {
                    Some(d) => d,
                    None => continue,
                },
            };
            if let Some(d) = self.enforce(p, subject, denial) {
                return self.decided_by(p, Some(d));
            }
        }
        self.allowed()
    }

    /// The post-call hook over a result (JSON text).
    pub fn check_result(&self, subject: &Subject, tool: &Value, result: &str) -> Decision {
        let ctx = self.context(subject);
        let wit_tool = bindings::tool(tool);
        let mut current: Option<String> = None;
        for p in &self.policies {
            let text = current.as_deref().unwrap_or(result);
            let span = PolicySpan::enter(&p.name, &p.module.digest, p.spec.mode, "check_result");
            let outcome =
                self.runtime
                    .evaluate(&p.module, &p.name, limits(&p.spec), |policy, store| {
                        policy.call_check_result(store, &p.spec.settings, &ctx, &wit_tool, text)
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

    fn context(&self, s: &Subject) -> Context {
        bindings::context(s.identity, s.declaration, s.connector, s.tools)
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
