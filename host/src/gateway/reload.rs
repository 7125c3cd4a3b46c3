//! A config reload: re-read the file, validate all of it, build the new policy chain
//! and the new rule sets off the request path, then swap them in (the chain, then
//! `rules::commit`). Any failure (syntax, an unknown key, a bad value, a slug clash,
//! a policy that fails to load or verify, a credential that cannot be read) keeps the
//! whole last good config, is logged with the key and the reason, counted in
//! `portcullis_config_reloads_total{result="failed"}` and reported by `/readyz`
//! until a reload succeeds.
//!
//! What a running process cannot change (listen addresses, workers and the other
//! `[server]` settings, `[admin]`, `[audit]`, `[telemetry]`, `[vault]`, the quota
//! backend, `[state]`) keeps its start-up value; a reload that changes it says so in one warning.
//!
//! Triggers: the config and policy files (watched by `policy::watch`), SIGHUP, and
//! `POST /admin/reload` (`portcullis reload`). Reloads run one at a time.

use std::path::Path;
use std::sync::Mutex;

use serde_json::{Value, json};

use super::Gateway;
use crate::config::Config;

/// Reload bookkeeping.
#[derive(Default)]
pub(crate) struct Reloads {
    /// The config file the gateway was started with (set by `serve`).
    path: std::sync::OnceLock<std::path::PathBuf>,
    /// Held for the whole of a reload: one at a time.
    one_at_a_time: Mutex<()>,
    /// The last failed reload's error and when it happened (ms since the epoch),
    /// until a reload succeeds.
    last_failure: Mutex<Option<(String, u64)>>,
}

/// What a successful reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reloaded {
    /// The policy chain's digest before and after (equal: the chain is unchanged).
    pub old_digest: String,
    pub new_digest: String,
    /// Sections that changed but keep their start-up values until a restart.
    pub restart_only: Vec<&'static str>,
}

impl Reloaded {
    pub(crate) fn to_json(&self) -> Value {
        json!({
            "result": "ok",
            "chain_changed": self.old_digest != self.new_digest,
            "digest": self.new_digest,
            "restart_required_for": self.restart_only,
        })
    }
}

impl Gateway {
    /// Names the config file reloads re-read (`serve`).
    pub(crate) fn set_config_path(&self, path: &Path) {
        let _ = self.reloads.path.set(path.to_path_buf());
    }

    /// Reloads the config file the gateway was started with (blocking, as `reload`).
    pub(crate) fn reload_config(&self) -> Result<Reloaded, String> {
        match self.reloads.path.get() {
            Some(path) => self.reload(path),
            None => Err("this gateway was not started from a config file".into()),
        }
    }

    /// Reloads the config at `path` (blocking: it compiles policy components; run it on
    /// the blocking pool). The error is the one logged, with the key and the reason.
    pub(crate) fn reload(&self, path: &Path) -> Result<Reloaded, String> {
        let _one = self
            .reloads
            .one_at_a_time
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let started = std::time::Instant::now();
        let outcome = self.try_reload(path).map_err(|e| format!("{e:#}"));
        let took_ms = (started.elapsed().as_secs_f64() * 10_000.0).round() / 10.0;
        crate::telemetry::metrics::config_reload(outcome.is_ok());
        let mut last = self
            .reloads
            .last_failure
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match &outcome {
            Ok(r) => {
                *last = None;
                let chain = self.policy.current();
                if r.old_digest == r.new_digest {
                    tracing::info!(target: "portcullis::reload", digest = %r.new_digest, took_ms, "config reloaded, policy chain unchanged");
                } else {
                    tracing::info!(target: "portcullis::reload", old_digest = %r.old_digest, new_digest = %r.new_digest, chain = %chain.names, took_ms, "config reloaded, policy chain reloaded");
                }
                if !r.restart_only.is_empty() {
                    tracing::warn!(target: "portcullis::reload", sections = %r.restart_only.join(", "), "these sections changed but need a restart; their running values are kept");
                }
            }
            Err(e) => {
                *last = Some((e.clone(), crate::audit::now_ms()));
                tracing::error!(target: "portcullis::reload", error = %e, kept_digest = %self.policy.current().digest, "config reload failed; keeping the last good chain and config");
            }
        }
        outcome
    }

    fn try_reload(&self, path: &Path) -> anyhow::Result<Reloaded> {
        let config = Config::load(path)?;
        let chain = self
            .policy
            .prepare(&config.policies, &config.policy_trust)?;
        let plan = self.prepare(&config)?;
        let restart_only = restart_only(&self.config, &config);
        let (old_digest, new_digest) = self.policy.install(chain, config.policy_trust.clone());
        self.commit(plan);
        Ok(Reloaded {
            old_digest,
            new_digest,
            restart_only,
        })
    }

    /// The last failed reload (error, when), until a reload succeeds; for `/readyz`.
    pub(crate) fn last_reload_failure(&self) -> Option<Value> {
        let last = self
            .reloads
            .last_failure
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        last.as_ref()
            .map(|(error, at)| json!({"error": error, "at": crate::audit::time::format_ms(*at)}))
    }
}

/// The sections a running process cannot change that differ between the start-up
/// config and a reloaded one.
fn restart_only(running: &Config, new: &Config) -> Vec<&'static str> {
    let differs =
        |a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug| format!("{a:?}") != format!("{b:?}");
    let backend = |c: &Config| {
        let mut q = c.quota.clone();
        q.limits.clear();
        q
    };
    let mut out = Vec::new();
    if differs(&running.server, &new.server) {
        out.push("[server]");
    }
    if differs(&running.admin, &new.admin) {
        out.push("[admin]");
    }
    if differs(&running.audit, &new.audit) {
        out.push("[audit]");
    }
    if differs(&running.telemetry, &new.telemetry) {
        out.push("[telemetry]");
    }
    if differs(&running.vault, &new.vault) {
        out.push("[vault]");
    }
    if differs(&backend(running), &backend(new)) {
        out.push("[quota] (backend)");
    }
    if running.state != new.state {
        out.push("[state]");
    }
    out
}
