//! The `[vault]` section: where encrypted secrets live and which KMS wraps their keys.
//! Without a `[vault]` section the embedded default applies: `vault.json` and a local
//! master key file `master.key`, both beside the config file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::ConfigError;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct VaultRaw {
    pub path: Option<String>,
    pub cache_secs: Option<u64>,
    pub kms: Option<KmsRaw>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct KmsRaw {
    /// "local" (default) or "aws-kms".
    pub provider: String,
    pub master_key_path: Option<String>,
    pub key_id: Option<String>,
    pub region: Option<String>,
    pub endpoint: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum KmsSettings {
    /// A 256-bit master key in a file (created on first use, mode 0600).
    Local { master_key_path: PathBuf },
    /// AWS KMS (GenerateDataKey / Decrypt / ReEncrypt-by-Decrypt+Encrypt).
    Aws {
        key_id: String,
        region: String,
        endpoint: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct VaultSettings {
    pub path: PathBuf,
    /// How long an unwrapped data key stays in memory.
    pub cache: Duration,
    pub kms: KmsSettings,
}

pub(super) fn validate(
    raw: Option<VaultRaw>,
    base_dir: &Path,
) -> Result<VaultSettings, ConfigError> {
    let raw = raw.unwrap_or(VaultRaw {
        path: None,
        cache_secs: None,
        kms: None,
    });
    let path = base_dir.join(raw.path.as_deref().unwrap_or("vault.json"));
    let cache_secs = raw.cache_secs.unwrap_or(60);
    if cache_secs > 3600 {
        return Err(ConfigError::new("vault.cache_secs", "must be at most 3600"));
    }
    let kms = match raw.kms {
        None => KmsSettings::Local {
            master_key_path: base_dir.join("master.key"),
        },
        Some(k) => match k.provider.as_str() {
            "local" => {
                for (field, set) in [
                    ("key_id", k.key_id.is_some()),
                    ("region", k.region.is_some()),
                    ("endpoint", k.endpoint.is_some()),
                ] {
                    if set {
                        return Err(ConfigError::new(
                            format!("vault.kms.{field}"),
                            "only used with provider = \"aws-kms\"",
                        ));
                    }
                }
                KmsSettings::Local {
                    master_key_path: base_dir
                        .join(k.master_key_path.as_deref().unwrap_or("master.key")),
                }
            }
            "aws-kms" => {
                if k.master_key_path.is_some() {
                    return Err(ConfigError::new(
                        "vault.kms.master_key_path",
                        "only used with provider = \"local\"",
                    ));
                }
                let key_id = k.key_id.filter(|s| !s.is_empty()).ok_or_else(|| {
                    ConfigError::new("vault.kms.key_id", "required with provider = \"aws-kms\"")
                })?;
                let region = k.region.filter(|s| !s.is_empty()).ok_or_else(|| {
                    ConfigError::new("vault.kms.region", "required with provider = \"aws-kms\"")
                })?;
                if let Some(e) = &k.endpoint
                    && !(e.starts_with("http://") || e.starts_with("https://"))
                {
                    return Err(ConfigError::new(
                        "vault.kms.endpoint",
                        "must start with http:// or https://",
                    ));
                }
                KmsSettings::Aws {
                    key_id,
                    region,
                    endpoint: k.endpoint,
                }
            }
            other => {
                return Err(ConfigError::new(
                    "vault.kms.provider",
                    format!("{other:?} is not one of \"local\", \"aws-kms\""),
                ));
            }
        },
    };
    Ok(VaultSettings {
        path,
        cache: Duration::from_secs(cache_secs),
        kms,
    })
}

/// The `[vault]` settings of a config file, read without validating the rest of it
/// (the `vault` CLI needs no upstream, policy or environment variable to be in place).
/// Relative paths resolve against the config file's directory, as in [`Config::load`].
///
/// [`Config::load`]: crate::config::Config::load
pub(crate) fn settings_from_file(path: &Path) -> Result<VaultSettings, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new("<file>", format!("cannot read {}: {e}", path.display())))?;
    let mut table: toml::Table = toml::from_str(&text)
        .map_err(|e| ConfigError::new("<toml>", e.to_string().trim().replace('\n', " ")))?;
    let raw = match table.remove("vault") {
        None => None,
        Some(v) => Some(
            VaultRaw::deserialize(v)
                .map_err(|e| ConfigError::new("vault", e.to_string().trim().replace('\n', " ")))?,
        ),
    };
    let base_dir = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    validate(raw, &base_dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_from_file_reads_only_the_vault_section() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.toml");
        std::fs::write(
            &path,
            "[server]\nlisten = \"bad\"\n[[connectors]]\ncredential = \"env:NOT_SET_ANYWHERE\"\n\
             [vault]\npath = \"secrets/v.json\"\ncache_secs = 5\n\
             [vault.kms]\nprovider = \"aws-kms\"\nkey_id = \"k\"\nregion = \"us-east-1\"\n",
        )
        .unwrap();
        let s = settings_from_file(&path).unwrap();
        assert_eq!(s.path, dir.path().join("secrets/v.json"));
        assert_eq!(s.cache, Duration::from_secs(5));
        assert!(matches!(s.kms, KmsSettings::Aws { .. }));

        std::fs::write(&path, "[server]\n").unwrap();
        let s = settings_from_file(&path).unwrap();
        assert_eq!(s.path, dir.path().join("vault.json"));
        assert_eq!(
            s.kms,
            KmsSettings::Local {
                master_key_path: dir.path().join("master.key")
            }
        );

        std::fs::write(&path, "[vault]\nbogus = 1\n").unwrap();
        let e = settings_from_file(&path).unwrap_err();
        assert_eq!(e.key, "vault");
        assert!(e.reason.contains("bogus"), "{e}");
    }
}
