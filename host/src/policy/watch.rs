//! What triggers a config reload: a change to the config file or to any file the
//! policy chain uses (each `.wasm` module, and with `[policy_trust]` its signature and
//! the lock file), watched through their directories so editors that replace files
//! by rename are seen; and SIGHUP. Changes are debounced, then `reload` runs on the
//! blocking pool (it compiles components); the watched set follows the chain it
//! leaves. What a reload does is `gateway::reload`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use super::PolicyEngine;
use crate::config::ModuleRef;

/// Quiet period after the last file event before reloading.
const DEBOUNCE: Duration = Duration::from_millis(150);

/// Watches files and SIGHUP for as long as the task runs, calling `reload` (on the
/// blocking pool) after each change.
pub(crate) fn spawn(
    engine: Arc<PolicyEngine>,
    config_path: PathBuf,
    reload: impl Fn() + Send + Sync + 'static,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let reload = Arc::new(reload);
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
                    tracing::info!(target: "portcullis::reload", "config or policy files changed; reloading");
                }
                _ = hup.recv() => tracing::info!(target: "portcullis::reload", "SIGHUP; reloading"),
            }
            let run = reload.clone();
            if let Err(e) = tokio::task::spawn_blocking(move || run()).await {
                tracing::error!(target: "portcullis::reload", error = %e, "reload panicked; keeping the last good config");
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
