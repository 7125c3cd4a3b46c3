//! Policies: every decision about what an agent may see and call is made by
//! WebAssembly components implementing `wit/policy.wit`.
//!
//! - `runtime`: wasmtime engine, module cache, fresh store per evaluation, limits.
//! - `bindings`: the generated world bindings and conversions to WIT records.
//! - `chain`: the ordered chain and how verdicts combine (modes, fail-closed).
//! - `items`: resources and prompts through the chain (0.2 hooks).
//! - `cache`: reused decisions of policies that declare themselves deterministic.
//! - `builtin`: the five built-in policies embedded in the binary.
//! - `watch`: what triggers a reload (file changes, SIGHUP); `gateway::reload` does it.

mod bindings;
pub(crate) mod builtin;
mod cache;
mod chain;
mod epoch;
mod items;
mod runtime;
pub(crate) mod signature;
pub(crate) mod trust;
pub(crate) mod watch;

use std::sync::Arc;

use arc_swap::ArcSwap;

pub(crate) use cache::cached_decisions;
pub(crate) use chain::{Chain, Decision, Denial, ListKind, Loaded, Subject};
pub(crate) use items::{CompletionRequest, PromptRequest, ResourceRequest};
pub(crate) use runtime::Runtime;

use crate::config::TrustSettings;
use crate::config::{ModuleRef, PolicySpec};

/// The live chain, swapped atomically on reload. A request takes the chain once
/// (`current`) and finishes on it, whatever reloads happen meanwhile.
pub(crate) struct PolicyEngine {
    runtime: Arc<Runtime>,
    chain: ArcSwap<Chain>,
    /// `[policy_trust]` of the chain in use; a reload may change it with the chain.
    trust: ArcSwap<TrustSettings>,
}

impl PolicyEngine {
    /// Loads and validates every policy (any failure refuses the whole chain),
    /// refusing modules that `trust` does not accept (unsigned, tampered, not pinned
    /// by the lock file), now and at every reload.
    pub(crate) fn with_trust(
        specs: &[PolicySpec],
        trust: TrustSettings,
    ) -> anyhow::Result<PolicyEngine> {
        let runtime = Runtime::new()?;
        let chain = build_chain_trusted(&runtime, specs, &trust)?;
        Ok(PolicyEngine {
            runtime,
            chain: ArcSwap::from_pointee(chain),
            trust: ArcSwap::from_pointee(trust),
        })
    }

    pub(crate) fn current(&self) -> Arc<Chain> {
        self.chain.load_full()
    }

    /// Builds and validates the chain `specs` describe under `trust`, without
    /// swapping it in (a reload swaps it with the rest of the config: `install`).
    pub(crate) fn prepare(
        &self,
        specs: &[PolicySpec],
        trust: &TrustSettings,
    ) -> anyhow::Result<Chain> {
        build_chain_trusted(&self.runtime, specs, trust)
    }

    /// Swaps in a prepared chain and its `[policy_trust]`; the old and new digests.
    pub(crate) fn install(&self, chain: Chain, trust: TrustSettings) -> (String, String) {
        let new = chain.digest.clone();
        self.trust.store(Arc::new(trust));
        let old = self.chain.swap(Arc::new(chain));
        let current = self.current();
        let keep: Vec<&str> = current
            .policies()
            .iter()
            .map(|p| p.module.digest.as_str())
            .collect();
        self.runtime.retain(&keep);
        (old.digest.clone(), new)
    }

    pub(crate) fn trust(&self) -> Arc<TrustSettings> {
        self.trust.load_full()
    }
}

/// Reads a policy's component bytes.
pub(crate) fn module_bytes(module: &ModuleRef) -> anyhow::Result<std::borrow::Cow<'static, [u8]>> {
    match module {
        ModuleRef::Builtin(name) => builtin::bytes(name)
            .map(std::borrow::Cow::Borrowed)
            .ok_or_else(|| anyhow::anyhow!("unknown built-in policy {name}")),
        ModuleRef::File(path) => std::fs::read(path)
            .map(std::borrow::Cow::Owned)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display())),
    }
}

/// Loads every policy of `specs` and validates its settings.
pub(crate) fn build_chain(runtime: &Arc<Runtime>, specs: &[PolicySpec]) -> anyhow::Result<Chain> {
    build_chain_trusted(runtime, specs, &TrustSettings::default())
}

/// [`build_chain`], first checking every file module against `[policy_trust]`
/// (signature, lock file) before it is compiled.
pub(crate) fn build_chain_trusted(
    runtime: &Arc<Runtime>,
    specs: &[PolicySpec],
    trust_settings: &TrustSettings,
) -> anyhow::Result<Chain> {
    let lock = trust::load_lock(trust_settings)?;
    let mut loaded = Vec::with_capacity(specs.len());
    for spec in specs {
        let fail =
            |e: anyhow::Error| anyhow::anyhow!("policy {:?} ({}): {e:#}", spec.name, spec.module);
        let bytes = module_bytes(&spec.module).map_err(fail)?;
        trust::check(trust_settings, spec, &bytes, lock.as_ref()).map_err(fail)?;
        let module = runtime.load(&bytes).map_err(fail)?;
        let name: Arc<str> = Arc::from(spec.name.as_str());
        let limits = runtime::Limits {
            timeout: spec.timeout,
            memory_bytes: spec.memory_limit_bytes,
        };
        let verdict = runtime
            .evaluate(&module, &name, limits, |p, store| {
                p.validate_settings(store, &spec.settings)
            })
            .map_err(|e| fail(e.into()))?;
        if let Err(msg) = verdict {
            return Err(fail(anyhow::anyhow!("invalid settings: {msg}")));
        }
        if module.world_version() == "0.1" {
            tracing::warn!(
                target: "portcullis::policy",
                policy = %spec.name,
                digest = %module.digest,
                "policy built against portcullis:policy@0.1 governs tools only: resources and prompts are not checked by it (rebuild it against 0.2)"
            );
        }
        let manifest = runtime
            .describe(&module, &name, limits, &spec.settings)
            .map_err(|e| fail(anyhow::anyhow!("describe failed: {e}")))?;
        loaded.push(Loaded {
            spec: spec.clone(),
            name,
            module,
            manifest,
        });
    }
    Ok(Chain::new(runtime.clone(), loaded))
}
