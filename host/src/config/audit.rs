//! The `[audit]` section: where audit rows go and how the background writer batches.
//! Default: SQLite (`audit.db` beside the config file, WAL mode).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::ConfigError;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AuditRaw {
    /// "sqlite" (default), "postgres" or "none" (no table; log lines only).
    pub sink: Option<String>,
    pub path: Option<String>,
    pub postgres_url: Option<String>,
    pub queue_capacity: Option<u64>,
    pub batch_size: Option<u64>,
    pub flush_interval_ms: Option<u64>,
    /// "wait" (default: the request waits for room, nothing is lost) or "drop" (the row is
    /// dropped, counted and logged; the request never waits).
    pub on_full: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SinkSettings {
    Sqlite {
        path: PathBuf,
    },
    Postgres {
        url: String,
    },
    /// No `request_logs` table: each request still gets its audit log line and
    /// metrics. For deployments whose log pipeline is the audit trail, and for
    /// measuring what the table costs.
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OnFull {
    Wait,
    Drop,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AuditSettings {
    pub sink: SinkSettings,
    pub queue_capacity: usize,
    pub batch_size: usize,
    pub flush_interval: Duration,
    pub on_full: OnFull,
}

/// A PostgreSQL connection string (`[audit]`, `[state]`): a `postgres://` URL or
/// `key=value` pairs.
pub(super) fn postgres_url(key: &str, url: String) -> Result<String, ConfigError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") || url.contains("host=") {
        Ok(url)
    } else {
        Err(ConfigError::new(
            key,
            "must be a postgres:// URL or a key=value connection string",
        ))
    }
}

pub(super) fn validate(
    raw: Option<AuditRaw>,
    base_dir: &Path,
) -> Result<AuditSettings, ConfigError> {
    let raw = raw.unwrap_or(AuditRaw {
        sink: None,
        path: None,
        postgres_url: None,
        queue_capacity: None,
        batch_size: None,
        flush_interval_ms: None,
        on_full: None,
    });
    let sink = match raw.sink.as_deref().unwrap_or("sqlite") {
        "sqlite" => {
            if raw.postgres_url.is_some() {
                return Err(ConfigError::new(
                    "audit.postgres_url",
                    "only used with sink = \"postgres\"",
                ));
            }
            SinkSettings::Sqlite {
                path: base_dir.join(raw.path.as_deref().unwrap_or("audit.db")),
            }
        }
        "postgres" => {
            if raw.path.is_some() {
                return Err(ConfigError::new(
                    "audit.path",
                    "only used with sink = \"sqlite\"",
                ));
            }
            let url = raw.postgres_url.ok_or_else(|| {
                ConfigError::new("audit.postgres_url", "required with sink = \"postgres\"")
            })?;
            SinkSettings::Postgres {
                url: postgres_url("audit.postgres_url", url)?,
            }
        }
        "none" => {
            for (set, key) in [
                (raw.path.is_some(), "audit.path"),
                (raw.postgres_url.is_some(), "audit.postgres_url"),
            ] {
                if set {
                    return Err(ConfigError::new(key, "not used with sink = \"none\""));
                }
            }
            SinkSettings::None
        }
        other => {
            return Err(ConfigError::new(
                "audit.sink",
                format!("{other:?} is not one of \"sqlite\", \"postgres\", \"none\""),
            ));
        }
    };
    let queue_capacity = raw.queue_capacity.unwrap_or(65_536);
    if !(1..=10_000_000).contains(&queue_capacity) {
        return Err(ConfigError::new(
            "audit.queue_capacity",
            "must be between 1 and 10000000",
        ));
    }
    let batch_size = raw.batch_size.unwrap_or(512);
    if !(1..=100_000).contains(&batch_size) {
        return Err(ConfigError::new(
            "audit.batch_size",
            "must be between 1 and 100000",
        ));
    }
    let flush = raw.flush_interval_ms.unwrap_or(200);
    if !(1..=60_000).contains(&flush) {
        return Err(ConfigError::new(
            "audit.flush_interval_ms",
            "must be between 1 and 60000",
        ));
    }
    let on_full = match raw.on_full.as_deref().unwrap_or("wait") {
        "wait" => OnFull::Wait,
        "drop" => OnFull::Drop,
        other => {
            return Err(ConfigError::new(
                "audit.on_full",
                format!("{other:?} is not one of \"wait\", \"drop\""),
            ));
        }
    };
    Ok(AuditSettings {
        sink,
        queue_capacity: queue_capacity as usize,
        batch_size: batch_size as usize,
        flush_interval: Duration::from_millis(flush),
        on_full,
    })
}
