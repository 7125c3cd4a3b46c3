//! `[policy_trust]` as the operator writes it: which policy modules the gateway
//! accepts. The checks themselves (lock file, signatures) are `policy::trust`.
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

use std::path::{Path, PathBuf};

use ed25519_dalek::VerifyingKey;
use serde::Deserialize;

use super::ConfigError;

/// `[policy_trust]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PolicyTrustRaw {
    #[serde(default)]
    pub require_signatures: bool,
    #[serde(default)]
    pub trusted_keys: Vec<String>,
    pub lock_file: Option<String>,
}

/// The validated trust settings; the default trusts every module (no section).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct TrustSettings {
    pub require_signatures: bool,
    pub trusted_keys: Vec<VerifyingKey>,
    /// Resolved against the config file's directory.
    pub lock_file: Option<PathBuf>,
}

/// Validates `[policy_trust]`; errors name the key.
pub(super) fn validate(
    raw: Option<PolicyTrustRaw>,
    base_dir: &Path,
) -> Result<TrustSettings, ConfigError> {
    let Some(raw) = raw else {
        return Ok(TrustSettings::default());
    };
    let mut keys = Vec::with_capacity(raw.trusted_keys.len());
    for (i, k) in raw.trusted_keys.iter().enumerate() {
        let key = parse_public_key(k).map_err(|e| {
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

/// Parses a 32-byte hex value (a key), naming `what` in the error.
pub(crate) fn hex32(text: &str, what: &str) -> anyhow::Result<[u8; 32]> {
    let bytes = hex::decode(text.trim())
        .map_err(|_| anyhow::anyhow!("{what} is not hex: expected 64 hex digits"))?;
    bytes
        .try_into()
        .map_err(|_| anyhow::anyhow!("{what} must be 32 bytes (64 hex digits)"))
}

/// A public key from its hex text.
pub(crate) fn parse_public_key(text: &str) -> anyhow::Result<VerifyingKey> {
    let bytes = hex32(text, "public key")?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| anyhow::anyhow!("not a valid ed25519 public key"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_keys() {
        let dir = Path::new("/etc/pc");
        let raw = |t: &str| -> Option<PolicyTrustRaw> { Some(toml::from_str(t).unwrap()) };
        assert_eq!(validate(None, dir).unwrap(), TrustSettings::default());
        let e = validate(raw("require_signatures = true"), dir).unwrap_err();
        assert_eq!(e.key, "policy_trust.trusted_keys");
        let e = validate(raw("trusted_keys = [\"zz\"]"), dir).unwrap_err();
        assert_eq!(e.key, "policy_trust.trusted_keys[0]");
        let pk = hex::encode(
            ed25519_dalek::SigningKey::from_bytes(&[1; 32])
                .verifying_key()
                .to_bytes(),
        );
        let t = validate(
            raw(&format!(
                "require_signatures = true\ntrusted_keys = [\"{pk}\"]\nlock_file = \"p.lock\""
            )),
            dir,
        )
        .unwrap();
        assert!(t.require_signatures);
        assert_eq!(t.lock_file.as_deref(), Some(Path::new("/etc/pc/p.lock")));
    }
}
