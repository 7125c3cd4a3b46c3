//! The credential vault: connector secrets stored encrypted (envelope encryption),
//! never in the config. See `config` for the `[vault]` section.

mod config;

pub use config::{KmsRaw, KmsSettings, VaultRaw, VaultSettings, validate as validate_config};
