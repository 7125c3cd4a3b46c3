//! The Wasm runtime policies run in.
//!
//! One wasmtime [`Engine`] for the process, with the pooling allocator and epoch
//! interruption (a ticker thread advances the epoch every [`TICK`] while a policy
//! runs, `epoch.rs`). Components are
//! compiled once and cached by the sha256 of their bytes; each gets one shared
//! pre-linked instance ([`Pre`], of the component's WIT version: 0.2.0, or 0.1.x
//! for older components). Every evaluation runs in a fresh
//! [`Store`] with its own memory cap and deadline, so no state survives between
//! requests or agents. The only imports granted are `host.log` and a WASI with no
//! environment, no arguments, no files and no network.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use wasmtime::component::{Component, ComponentExportIndex, HasSelf, Linker, ResourceTable};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, StoreLimits,
    StoreLimitsBuilder, Trap,
};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::{Instance, Manifest, Pre, v1, v2};
pub(super) use super::epoch::TICK;
use super::epoch::Ticker;
/// Environment variable naming a directory for wasmtime's compilation cache (off
/// when unset).
pub(super) const CACHE_ENV: &str = "PORTCULLIS_POLICY_CACHE";
/// Largest memory any policy may be given (`memory_limit_mb` is capped to this).
pub(super) const MAX_MEMORY_BYTES: usize = 1 << 30;

/// Per-evaluation store data.
pub(crate) struct StoreState {
    pub policy_name: Arc<str>,
    wasi: WasiCtx,
    table: ResourceTable,
    limits: StoreLimits,
}

impl WasiView for StoreState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Why an evaluation did not produce a verdict.
#[derive(Debug, thiserror::Error)]
pub(crate) enum EvalError {
    #[error("policy exceeded its time limit")]
    Timeout,
    #[error("policy exceeded its memory limit")]
    Memory,
    #[error("policy trapped: {0}")]
    Trap(String),
    #[error("policy returned an invalid answer: {0}")]
    Invalid(String),
}

/// A compiled, pre-linked policy component.
#[derive(Clone)]
pub(crate) struct Module {
    /// Hex sha256 of the component bytes.
    pub digest: String,
    pre: Pre,
    /// A 0.1 component's `describe` export (0.1.1); `None` for 0.1.0 (and unused
    /// for 0.2.0, whose world has it).
    describe: Option<ComponentExportIndex>,
}

impl Module {
    /// The WIT version the component implements (`0.2` or `0.1`).
    pub(crate) fn world_version(&self) -> &'static str {
        match self.pre {
            Pre::V2(_) => "0.2",
            Pre::V1(_) => "0.1",
        }
    }
}

/// Limits of one evaluation.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub timeout: Duration,
    pub memory_bytes: usize,
}

pub(crate) struct Runtime {
    engine: Engine,
    linker: Linker<StoreState>,
    modules: Mutex<HashMap<String, Module>>,
    ticker: Ticker,
}

impl Runtime {
    pub(crate) fn new() -> anyhow::Result<Arc<Runtime>> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        // Compile on one thread: a reload must leave the other core to live requests.
        config.parallel_compilation(false);
        config.wasm_component_model(true);
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(512)
            .total_core_instances(4096)
            .total_memories(1024)
            .total_tables(1024)
            .total_stacks(512)
            .max_core_instances_per_component(64)
            .max_memories_per_component(16)
            .max_tables_per_component(16)
            .table_elements(200_000)
            .max_memory_size(MAX_MEMORY_BYTES);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        if let Some(dir) = std::env::var_os(CACHE_ENV).filter(|d| !d.is_empty()) {
            // Opt-in on-disk cache of compiled policies (keyed by the component bytes
            // and the engine settings): big JS/Python components load in a fraction of
            // their compile time after the first start. The directory holds native
            // code: protect it like the binary.
            let mut cache = wasmtime::CacheConfig::new();
            cache.with_directory(std::path::absolute(std::path::PathBuf::from(dir))?);
            config.cache(Some(wasmtime::Cache::new(cache).map_err(wasm_err)?));
        }
        let engine = Engine::new(&config).map_err(wasm_err)?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(wasm_err)?;
        v2::Policy::add_to_linker::<_, HasSelf<StoreState>>(&mut linker, |s| s)
            .map_err(wasm_err)?;
        v1::PolicyHooks::add_to_linker::<_, HasSelf<StoreState>>(&mut linker, |s| s)
            .map_err(wasm_err)?;

        let ticker = Ticker::start(&engine)?;
        Ok(Arc::new(Runtime {
            engine,
            linker,
            modules: Mutex::new(HashMap::new()),
            ticker,
        }))
    }

    /// Compiles (or fetches from the cache) a component and links it against the
    /// policy world of 0.2.0, else of 0.1. A component of another world is refused
    /// here with the reason (the 0.2.0 one: the version authors should target).
    pub(crate) fn load(&self, bytes: &[u8]) -> anyhow::Result<Module> {
        let digest = crate::digest::sha256_hex(bytes);
        if let Some(m) = self.modules.lock().expect("module cache").get(&digest) {
            return Ok(m.clone());
        }
        let component = Component::new(&self.engine, bytes)
            .map_err(|e| anyhow::anyhow!("not a valid WebAssembly component: {e:#}"))?;
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| anyhow::anyhow!("imports something the gateway does not grant: {e:#}"))?;
        let pre = match v2::PolicyPre::new(pre.clone()) {
            Ok(v2) => Pre::V2(v2),
            Err(e) => Pre::V1(v1::PolicyHooksPre::new(pre).map_err(|_| {
                anyhow::anyhow!(
                    "does not implement the world portcullis:policy/policy@0.2 (nor @0.1): {e:#}"
                )
            })?),
        };
        let describe = match pre {
            Pre::V2(_) => None,
            Pre::V1(_) => component.get_export_index(None, "describe"),
        };
        let module = Module {
            digest: digest.clone(),
            pre,
            describe,
        };
        self.modules
            .lock()
            .expect("module cache")
            .insert(digest, module.clone());
        Ok(module)
    }

    /// Drops cached modules no longer in `keep` (after a reload).
    pub(crate) fn retain(&self, keep: &[&str]) {
        self.modules
            .lock()
            .expect("module cache")
            .retain(|d, _| keep.contains(&d.as_str()));
    }

    /// Instantiates `module` in a fresh store and runs `f` on it.
    pub(super) fn evaluate<R>(
        &self,
        module: &Module,
        name: &Arc<str>,
        limits: Limits,
        f: impl FnOnce(&Instance, &mut Store<StoreState>) -> wasmtime::Result<R>,
    ) -> Result<R, EvalError> {
        let _ticking = self.ticker.busy();
        let mut store = self.store(name, limits);
        let instance = match &module.pre {
            Pre::V2(pre) => pre.instantiate(&mut store).map(Instance::V2),
            Pre::V1(pre) => pre.instantiate(&mut store).map(Instance::V1),
        };
        instance
            .and_then(|policy| f(&policy, &mut store))
            .map_err(classify)
    }

    /// The policy's own account of its hooks and inputs (`describe`), or
    /// [`Manifest::everything`] for a component built against 0.1.0. A 0.1
    /// component's manifest declares no resource or prompt hook.
    pub(crate) fn describe(
        &self,
        module: &Module,
        name: &Arc<str>,
        limits: Limits,
        settings: &str,
    ) -> Result<Manifest, EvalError> {
        let pre = match &module.pre {
            Pre::V2(_) => {
                return self.evaluate(module, name, limits, |policy, store| match policy {
                    Instance::V2(p) => p.call_describe(store, settings),
                    Instance::V1(_) => unreachable!("a 0.2 module instantiates as 0.2"),
                });
            }
            Pre::V1(pre) => pre,
        };
        let Some(index) = module.describe else {
            return Ok(Manifest::everything());
        };
        let _ticking = self.ticker.busy();
        let mut store = self.store(name, limits);
        let run = pre
            .instance_pre()
            .instantiate(&mut store)
            .and_then(|instance| {
                let func = instance
                    .get_typed_func::<(&str,), (v1::portcullis::policy::types::Manifest,)>(
                        &mut store, index,
                    )
                    .map_err(|e| e.context("`describe` has the wrong signature"))?;
                let (manifest,) = func.call(&mut store, (settings,))?;
                Ok(Manifest::from_v1(manifest))
            });
        run.map_err(classify)
    }

    /// A fresh store with the evaluation's memory cap and deadline.
    fn store(&self, name: &Arc<str>, limits: Limits) -> Store<StoreState> {
        let state = StoreState {
            policy_name: name.clone(),
            wasi: WasiCtx::builder().build(),
            table: ResourceTable::new(),
            limits: StoreLimitsBuilder::new()
                .memory_size(limits.memory_bytes.min(MAX_MEMORY_BYTES))
                .instances(64)
                .tables(16)
                .memories(16)
                .trap_on_grow_failure(true)
                .build(),
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        let ticks = (limits.timeout.as_millis() / TICK.as_millis()).max(1) as u64;
        store.set_epoch_deadline(ticks);
        store.epoch_deadline_trap();
        store
    }
}

/// wasmtime's error type into anyhow's, keeping the whole chain of causes.
fn wasm_err(e: wasmtime::Error) -> anyhow::Error {
    anyhow::anyhow!("{e:#}")
}

fn classify(err: wasmtime::Error) -> EvalError {
    match err.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => EvalError::Timeout,
        _ => {
            let text = format!("{err:#}");
            if text.contains("memory")
                && (text.contains("grow") || text.contains("limit") || text.contains("minimum"))
            {
                EvalError::Memory
            } else {
                EvalError::Trap(text.lines().next().unwrap_or_default().to_string())
            }
        }
    }
}
