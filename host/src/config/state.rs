//! The `[state]` section: where the gateway keeps what it must remember across
//! restarts and share across a fleet (today: tool pins and approvals). Default:
//! SQLite (`state.db` beside the config file); `store = "postgres"` for a fleet,
//! whose gateways then see the same pins and approvals. Separate from `[audit]`: the
//! audit log is append-only history, the state is a few rows read and updated live.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::ConfigError;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StateRaw {
    /// "sqlite" (default) or "postgres".
    pub store: Option<String>,
    pub path: Option<String>,
    pub postgres_url: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StateSettings {
    Sqlite { path: PathBuf },
    Postgres { url: String },
}

pub(super) fn validate(
    raw: Option<StateRaw>,
    base_dir: &Path,
) -> Result<StateSettings, ConfigError> {
    let raw = raw.unwrap_or(StateRaw {
        store: None,
        path: None,
        postgres_url: None,
    });
    match raw.store.as_deref().unwrap_or("sqlite") {
        "sqlite" => {
            if raw.postgres_url.is_some() {
                return Err(ConfigError::new(
                    "state.postgres_url",
                    "only used with store = \"postgres\"",
                ));
            }
            Ok(StateSettings::Sqlite {
                path: base_dir.join(raw.path.as_deref().unwrap_or("state.db")),
            })
        }
        "postgres" => {
            if raw.path.is_some() {
                return Err(ConfigError::new(
                    "state.path",
                    "only used with store = \"sqlite\"",
                ));
            }
            let url = raw.postgres_url.ok_or_else(|| {
                ConfigError::new("state.postgres_url", "required with store = \"postgres\"")
            })?;
            Ok(StateSettings::Postgres {
                url: super::audit::postgres_url("state.postgres_url", url)?,
            })
        }
        other => Err(ConfigError::new(
            "state.store",
            format!("{other:?} is not one of \"sqlite\", \"postgres\""),
        )),
    }
}
