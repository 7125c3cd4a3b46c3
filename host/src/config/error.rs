//! The one error type of configuration: which key, and why. Every section's
//! validation reports with it, so messages read the same everywhere
//! (`invalid config: connectors[1].target_url: must start with http:// or https://`).

/// A configuration problem: which key, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid config: {key}: {reason}")]
pub(crate) struct ConfigError {
    pub key: String,
    pub reason: String,
}

impl ConfigError {
    pub(crate) fn new(key: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError {
            key: key.into(),
            reason: reason.into(),
        }
    }
}
