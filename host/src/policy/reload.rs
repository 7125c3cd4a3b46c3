//! Hot reload of the policy chain without a restart.
//!
//! Triggers: a change to the config file or to any `.wasm` file the chain uses
//! (watched through their directories, so editors that replace files by rename are
//! seen), and SIGHUP. Changes are debounced, then the config is re-read and the new
//! chain is built and validated off the request path and swapped in atomically.
//! In-flight requests finish on the chain they started with. A failed reload keeps
//! the last good chain and logs why. A valid config is then handed to `on_config`
//! (the gateway applies the other rules it can change live, `gateway::rules`).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use super::PolicyEngine;
use crate::config::{Config, ModuleRef};

/// Quiet period after the last file event before reloading.
const DEBOUNCE: Duration = Duration::from_millis(150);

/// Outcome of one reload attempt, for logs, metrics and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reloaded {
    Swapped { old: String, new: String },
    Unchanged,
}

/// Re-reads the config and swaps in its policy chain; the config, when valid and
/// its chain built.
pub(crate) fn reload_once(
    engine: &PolicyEngine,
    config_path: &Path,
) -> anyhow::Result<(Reloaded, Config)> {
    let config = Config::load(config_path)?;
    let (old, new) = engine.reload(&config.policies)?;
    let reloaded = if old == new {
        Reloaded::Unchanged
    } else {
        Reloaded::Swapped { old, new }
    };
    Ok((reloaded, config))
}

/// Watches files and SIGHUP for as long as the task runs. `on_reload` is told about
/// every attempt (`true` = success), for metrics; `on_config` gets each valid
/// reloaded config.
pub(crate) fn spawn(
    engine: Arc<PolicyEngine>,
    config_path: PathBuf,
    on_reload: impl Fn(bool) + Send + Sync + 'static,
    on_config: impl Fn(&Config) + Send + Sync + 'static,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    let interesting = Arc::new(std::sync::RwLock::new(watched_files(&engine, &config_path)));
    let filter = interesting.clone();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let Ok(ev) = res else { return };
        // Reads (ours included) change nothing.
        if matches!(ev.kind, notify::EventKind::Access(_)) {
            return;
        }
        // The watched directories may hold busy files (an audit database, logs):
        // compare file names first, and resolve the path only for a name we watch.
        let files = filter.read().expect("watch set");
        let ours = ev.paths.iter().any(|p| {
            p.file_name()
                .is_some_and(|n| files.iter().any(|f| f.file_name() == Some(n)))
                && files.contains(&normalize(p))
        });
        if ours {
            let _ = tx.send(());
        }
    })?;
    let mut dirs = HashSet::new();
    watch_dirs(
        &mut watcher,
        &mut dirs,
        &interesting.read().expect("watch set"),
    );

    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    Ok(tokio::spawn(async move {
        loop {
            tokio::select! {
                ev = rx.recv() => {
                    if ev.is_none() { return; }
                    // Debounce: wait until events stop for a moment.
                    while let Ok(Some(())) = tokio::time::timeout(DEBOUNCE, rx.recv()).await {}
                    tracing::info!(target: "portcullis::policy", "policy files changed; reloading");
                }
                _ = hup.recv() => tracing::info!(target: "portcullis::policy", "SIGHUP; reloading policies"),
            }
            let engine2 = engine.clone();
            let path = config_path.clone();
            // Compiling components is CPU work: keep it off the async workers.
            let started = std::time::Instant::now();
            let result = tokio::task::spawn_blocking(move || reload_once(&engine2, &path)).await;
            // Read, compile (or fetch by digest), validate, describe and swap.
            let took_ms = (started.elapsed().as_secs_f64() * 10_000.0).round() / 10.0;
            match result {
                Ok(Ok((Reloaded::Swapped { old, new }, config))) => {
                    tracing::info!(target: "portcullis::policy", old_digest = %old, new_digest = %new, chain = %engine.current().names, took_ms, "policy chain reloaded");
                    on_config(&config);
                    on_reload(true);
                }
                Ok(Ok((Reloaded::Unchanged, config))) => {
                    tracing::info!(target: "portcullis::policy", digest = %engine.current().digest, "policy chain unchanged");
                    on_config(&config);
                    on_reload(true);
                }
                Ok(Err(e)) => {
                    tracing::error!(target: "portcullis::policy", error = %format!("{e:#}"), kept_digest = %engine.current().digest, "policy reload failed; keeping the last good chain");
                    on_reload(false);
                }
                Err(e) => {
                    tracing::error!(target: "portcullis::policy", error = %e, "policy reload panicked; keeping the last good chain");
                    on_reload(false);
                }
            }
            let files = watched_files(&engine, &config_path);
            watch_dirs(&mut watcher, &mut dirs, &files);
            *interesting.write().expect("watch set") = files;
        }
    }))
}

/// The config file plus every policy file of the current chain, and with
/// `[policy_trust]`, their signature files and the lock file.
fn watched_files(engine: &PolicyEngine, config_path: &Path) -> HashSet<PathBuf> {
    let trust = engine.trust();
    let mut files: HashSet<PathBuf> = engine
        .current()
        .policies()
        .iter()
        .filter_map(|p| match &p.spec.module {
            ModuleRef::File(path) => Some(path),
            ModuleRef::Builtin(_) => None,
        })
        .flat_map(|path| {
            let sig = trust
                .require_signatures
                .then(|| normalize(&super::signature::sig_path(path)));
            std::iter::once(normalize(path)).chain(sig)
        })
        .collect();
    if let Some(lock) = &trust.lock_file {
        files.insert(normalize(lock));
    }
    files.insert(normalize(config_path));
    files
}

fn watch_dirs(watcher: &mut impl Watcher, dirs: &mut HashSet<PathBuf>, files: &HashSet<PathBuf>) {
    for f in files {
        let Some(dir) = f.parent() else { continue };
        if dirs.insert(dir.to_path_buf())
            && let Err(e) = watcher.watch(dir, RecursiveMode::NonRecursive)
        {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot watch directory for policy changes");
        }
    }
}

/// Absolute, `.`-free form of a path whose file may not exist (yet).
fn normalize(p: &Path) -> PathBuf {
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(p)
    };
    match (
        abs.parent().and_then(|d| d.canonicalize().ok()),
        abs.file_name(),
    ) {
        (Some(dir), Some(name)) => dir.join(name),
        _ => abs,
    }
}
