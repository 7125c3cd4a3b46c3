//! The `[policy_trust]` checks, run at every chain build: a module must match its
//! pin in the lock file and carry a good signature from a trusted key (`signature`).
//! Checked at start-up (the gateway refuses to start) and at each hot reload (the
//! reload fails and the last good chain stays). The lock file is re-read at each
//! build, so pinning a new module is: replace the module, sign it, update the lock
//! (`portcullis policy lock`). Built-in policies are trusted: they are part of the
//! binary.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::{ModuleRef, PolicySpec, TrustSettings};

/// A policy lock file: module -> expected sha256.
///
/// ```toml
/// # Written by `portcullis policy lock`.
/// [modules]
/// "policies/guard.wasm" = "<hex sha256>"
/// ```
///
/// A key is a module path (relative to the lock file's directory, or absolute) or a
/// policy name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LockFile {
    #[serde(default)]
    pub modules: BTreeMap<String, String>,
}

impl LockFile {
    pub(crate) fn load(path: &Path) -> anyhow::Result<LockFile> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read lock file {}: {e}", path.display()))?;
        let lock: LockFile = toml::from_str(&text)
            .map_err(|e| anyhow::anyhow!("lock file {}: {}", path.display(), e.message()))?;
        for (k, v) in &lock.modules {
            if !(v.len() == 64 && v.bytes().all(|c| c.is_ascii_hexdigit())) {
                anyhow::bail!(
                    "lock file {}: modules.{k:?} must be a hex sha256 (64 hex digits)",
                    path.display()
                );
            }
        }
        Ok(lock)
    }

    /// The pinned digest for a policy, by module path or by name.
    fn pinned(&self, lock_dir: &Path, name: &str, module: &Path) -> Option<&str> {
        let module = lexical(module);
        self.modules
            .iter()
            .find(|(k, _)| lexical(&lock_dir.join(k)) == module)
            .or_else(|| self.modules.iter().find(|(k, _)| k.as_str() == name))
            .map(|(_, v)| v.as_str())
    }

    /// Writes the lock file for `entries` (module path, sha256).
    pub(crate) fn write(path: &Path, entries: &[(PathBuf, String)]) -> anyhow::Result<LockFile> {
        let dir = path.parent().unwrap_or(Path::new("."));
        let dir = lexical(&absolute(dir));
        let mut lock = LockFile::default();
        for (module, digest) in entries {
            let m = lexical(&absolute(module));
            let key = m
                .strip_prefix(&dir)
                .map(|p| p.to_path_buf())
                .unwrap_or(m.clone());
            lock.modules
                .insert(key.to_string_lossy().into_owned(), digest.clone());
        }
        let text = format!(
            "# Pins the sha256 of each policy module ([policy_trust] lock_file).\n\
             # Written by `portcullis policy lock`; keys are paths relative to this file.\n{}",
            toml::to_string(&lock)?
        );
        std::fs::write(path, text)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
        Ok(lock)
    }
}

fn absolute(p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(p)
    }
}

/// `p` with `.` and `..` resolved lexically (no file system access).
fn lexical(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// Reads the lock file (when configured), once per chain build.
pub(crate) fn load_lock(trust: &TrustSettings) -> anyhow::Result<Option<LockFile>> {
    trust.lock_file.as_deref().map(LockFile::load).transpose()
}

/// Checks one policy's module bytes; an error says why it is refused.
pub(crate) fn check(
    trust: &TrustSettings,
    spec: &PolicySpec,
    bytes: &[u8],
    lock: Option<&LockFile>,
) -> anyhow::Result<()> {
    let ModuleRef::File(path) = &spec.module else {
        return Ok(()); // built-ins are part of the binary
    };
    if let (Some(lock), Some(lock_path)) = (lock, &trust.lock_file) {
        let dir = lock_path.parent().unwrap_or(Path::new("."));
        let actual = crate::digest::sha256_hex(bytes);
        match lock.pinned(&absolute(dir), &spec.name, &absolute(path)) {
            None => anyhow::bail!(
                "refused by policy_trust: not pinned in the lock file {} (`portcullis policy lock` writes it)",
                lock_path.display()
            ),
            Some(pinned) if !pinned.eq_ignore_ascii_case(&actual) => anyhow::bail!(
                "refused by policy_trust: sha256 {actual} does not match the lock file {} ({pinned})",
                lock_path.display()
            ),
            Some(_) => {}
        }
    }
    if trust.require_signatures {
        super::signature::verify(path, bytes, &trust.trusted_keys)
            .map_err(|e| anyhow::anyhow!("refused by policy_trust (require_signatures): {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_file_pins_by_path_or_name() {
        let dir = tempfile::tempdir().unwrap();
        let module = dir.path().join("sub/guard.wasm");
        std::fs::create_dir_all(module.parent().unwrap()).unwrap();
        std::fs::write(&module, b"x").unwrap();
        let digest = crate::digest::sha256_hex(b"x");
        let lock_path = dir.path().join("policies.lock");
        let lock = LockFile::write(&lock_path, &[(module.clone(), digest.clone())]).unwrap();
        assert_eq!(lock.modules.get("sub/guard.wasm"), Some(&digest));
        assert_eq!(LockFile::load(&lock_path).unwrap(), lock);

        let trust = TrustSettings {
            lock_file: Some(lock_path.clone()),
            ..Default::default()
        };
        let spec = |name: &str, path: &Path| PolicySpec {
            name: name.into(),
            module: ModuleRef::File(path.to_path_buf()),
            settings: "{}".into(),
            mode: crate::config::PolicyMode::Enforce,
            on_error: crate::config::OnError::Deny,
            timeout: std::time::Duration::from_millis(100),
            memory_limit_bytes: 1 << 20,
            cache_decisions: true,
        };
        let l = load_lock(&trust).unwrap();
        let via_dots = dir.path().join("sub/../sub/guard.wasm");
        assert!(check(&trust, &spec("g", &via_dots), b"x", l.as_ref()).is_ok());
        let e = check(&trust, &spec("g", &module), b"y", l.as_ref()).unwrap_err();
        assert!(
            e.to_string().contains("does not match the lock file"),
            "{e}"
        );
        let other = dir.path().join("other.wasm");
        let e = check(&trust, &spec("o", &other), b"x", l.as_ref()).unwrap_err();
        assert!(e.to_string().contains("not pinned"), "{e}");
        std::fs::write(&lock_path, format!("[modules]\no = \"{digest}\"\n")).unwrap();
        let l = load_lock(&trust).unwrap();
        assert!(check(&trust, &spec("o", &other), b"x", l.as_ref()).is_ok());
    }
}
