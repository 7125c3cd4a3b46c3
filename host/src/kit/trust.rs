//! `[policy_trust]`: which policy modules the gateway accepts.
//!
//! ```toml
//! [policy_trust]
//! require_signatures = true                  # every file module needs a good MODULE.sig
//! trusted_keys = ["<hex ed25519 public key>"]
//! lock_file = "policies.lock"                # optional: pins each module's sha256
//! ```
//!
//! Checked every time a chain is built — at start-up (the gateway refuses to start)
//! and at each hot reload (the reload fails and the last good chain stays). The
//! lock file is re-read at each build, so pinning a new module is: replace the
//! module, sign it, update the lock (`portcullis policy lock`). Built-in policies
//! are trusted: they are part of the binary.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};

use crate::config::{ConfigError, ModuleRef, PolicySpec};

/// `[policy_trust]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyTrustRaw {
    #[serde(default)]
    pub require_signatures: bool,
    #[serde(default)]
    pub trusted_keys: Vec<String>,
    pub lock_file: Option<String>,
}

/// The validated trust settings; the default trusts every module (no section).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TrustSettings {
    pub require_signatures: bool,
    pub trusted_keys: Vec<VerifyingKey>,
    /// Resolved against the config file's directory.
    pub lock_file: Option<PathBuf>,
}

/// Validates `[policy_trust]`; errors name the key.
pub fn validate_config(
    raw: Option<PolicyTrustRaw>,
    base_dir: &Path,
) -> Result<TrustSettings, ConfigError> {
    let Some(raw) = raw else {
        return Ok(TrustSettings::default());
    };
    let mut keys = Vec::with_capacity(raw.trusted_keys.len());
    for (i, k) in raw.trusted_keys.iter().enumerate() {
        let key = super::sign::parse_public_key(k).map_err(|e| {
            ConfigError::new(
                format!("policy_trust.trusted_keys[{i}]"),
                format!("{e} (`portcullis policy keygen` prints one)"),
            )
        })?;
        keys.push(key);
    }
    if raw.require_signatures && keys.is_empty() {
        return Err(ConfigError::new(
            "policy_trust.trusted_keys",
            "must list at least one public key when require_signatures = true",
        ));
    }
    let lock_file = match raw.lock_file {
        Some(f) if f.trim().is_empty() => {
            return Err(ConfigError::new(
                "policy_trust.lock_file",
                "must be a path (or be left out)",
            ));
        }
        Some(f) => Some(base_dir.join(f)),
        None => None,
    };
    Ok(TrustSettings {
        require_signatures: raw.require_signatures,
        trusted_keys: keys,
        lock_file,
    })
}

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
pub struct LockFile {
    #[serde(default)]
    pub modules: BTreeMap<String, String>,
}

impl LockFile {
    pub fn load(path: &Path) -> anyhow::Result<LockFile> {
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
    pub fn write(path: &Path, entries: &[(PathBuf, String)]) -> anyhow::Result<LockFile> {
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

impl TrustSettings {
    /// Whether any check applies.
    pub fn is_active(&self) -> bool {
        self.require_signatures || self.lock_file.is_some()
    }

    /// Reads the lock file (when configured), once per chain build.
    pub fn load_lock(&self) -> anyhow::Result<Option<LockFile>> {
        self.lock_file.as_deref().map(LockFile::load).transpose()
    }

    /// Checks one policy's module bytes; an error says why it is refused.
    pub fn check(
        &self,
        spec: &PolicySpec,
        bytes: &[u8],
        lock: Option<&LockFile>,
    ) -> anyhow::Result<()> {
        let ModuleRef::File(path) = &spec.module else {
            return Ok(()); // built-ins are part of the binary
        };
        if let (Some(lock), Some(lock_path)) = (lock, &self.lock_file) {
            let dir = lock_path.parent().unwrap_or(Path::new("."));
            let actual = hex::encode(crate::auth::sha256(bytes));
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
        if self.require_signatures {
            super::sign::verify(path, bytes, &self.trusted_keys).map_err(|e| {
                anyhow::anyhow!("refused by policy_trust (require_signatures): {e}")
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_keys() {
        let dir = Path::new("/etc/pc");
        let raw = |t: &str| -> Option<PolicyTrustRaw> { Some(toml::from_str(t).unwrap()) };
        assert_eq!(
            validate_config(None, dir).unwrap(),
            TrustSettings::default()
        );
        let e = validate_config(raw("require_signatures = true"), dir).unwrap_err();
        assert_eq!(e.key, "policy_trust.trusted_keys");
        let e = validate_config(raw("trusted_keys = [\"zz\"]"), dir).unwrap_err();
        assert_eq!(e.key, "policy_trust.trusted_keys[0]");
        let pk = hex::encode(
            ed25519_dalek::SigningKey::from_bytes(&[1; 32])
                .verifying_key()
                .to_bytes(),
        );
        let t = validate_config(
            raw(&format!(
                "require_signatures = true\ntrusted_keys = [\"{pk}\"]\nlock_file = \"p.lock\""
            )),
            dir,
        )
        .unwrap();
        assert!(t.require_signatures && t.is_active());
        assert_eq!(t.lock_file.as_deref(), Some(Path::new("/etc/pc/p.lock")));
    }

    #[test]
    fn lock_file_pins_by_path_or_name() {
        let dir = tempfile::tempdir().unwrap();
        let module = dir.path().join("sub/guard.wasm");
        std::fs::create_dir_all(module.parent().unwrap()).unwrap();
        std::fs::write(&module, b"x").unwrap();
        let digest = hex::encode(crate::auth::sha256(b"x"));
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
        let l = trust.load_lock().unwrap();
        let via_dots = dir.path().join("sub/../sub/guard.wasm");
        assert!(trust.check(&spec("g", &via_dots), b"x", l.as_ref()).is_ok());
        let e = trust
            .check(&spec("g", &module), b"y", l.as_ref())
            .unwrap_err();
        assert!(
            e.to_string().contains("does not match the lock file"),
            "{e}"
        );
        let other = dir.path().join("other.wasm");
        let e = trust
            .check(&spec("o", &other), b"x", l.as_ref())
            .unwrap_err();
        assert!(e.to_string().contains("not pinned"), "{e}");
        std::fs::write(&lock_path, format!("[modules]\no = \"{digest}\"\n")).unwrap();
        let l = trust.load_lock().unwrap();
        assert!(trust.check(&spec("o", &other), b"x", l.as_ref()).is_ok());
    }
}
