//! The `[quota]` section and `[[orgs]]` of the config file, and their validation.

use std::collections::HashMap;

use serde::Deserialize;

use super::ConfigError;

/// An org's limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limit {
    pub calls: u64,
    pub per: Window,
}

/// A fixed UTC quota window (`per`): second (burst limits), minute, hour, day,
/// calendar month. Where one starts and ends is `quota::window`'s business.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Window {
    Second,
    Minute,
    Hour,
    Day,
    Month,
}

impl Window {
    pub(crate) fn parse(s: &str) -> Option<Window> {
        Some(match s {
            "second" => Window::Second,
            "minute" => Window::Minute,
            "hour" => Window::Hour,
            "day" => Window::Day,
            "month" => Window::Month,
            _ => return None,
        })
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Window::Second => "second",
            Window::Minute => "minute",
            Window::Hour => "hour",
            Window::Day => "day",
            Window::Month => "month",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct QuotaRaw {
    /// "memory" (default) or "redis".
    #[serde(default = "memory")]
    pub backend: String,
    /// `redis://[user:password@]host:port/db`; required for the redis backend.
    pub redis_url: Option<String>,
    #[serde(default = "prefix")]
    pub key_prefix: String,
    /// "deny" (default) or "allow".
    #[serde(default = "deny")]
    pub on_unavailable: String,
    /// Calls a thread counts ahead for a busy org (redis backend; 0 = none).
    #[serde(default = "reserve")]
    pub reserve: u64,
}

fn memory() -> String {
    "memory".into()
}
fn prefix() -> String {
    "portcullis".into()
}
fn deny() -> String {
    "deny".into()
}
fn reserve() -> u64 {
    64
}
/// The largest `quota.reserve` accepted.
const MAX_RESERVE: u64 = 10_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct OrgRaw {
    pub id: String,
    pub quota: Option<LimitRaw>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LimitRaw {
    pub calls: u64,
    pub per: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OnUnavailable {
    Deny,
    Allow,
}

/// Validated quota settings.
#[derive(Debug, Clone)]
pub(crate) struct QuotaSettings {
    /// `None` = the memory backend.
    pub redis_url: Option<String>,
    pub key_prefix: String,
    pub on_unavailable: OnUnavailable,
    /// The largest block of calls a thread counts ahead for a busy org (`blocks.rs`).
    pub reserve: u64,
    pub limits: HashMap<String, Limit>,
}

impl Default for QuotaSettings {
    fn default() -> Self {
        QuotaSettings {
            redis_url: None,
            key_prefix: prefix(),
            on_unavailable: OnUnavailable::Deny,
            reserve: reserve(),
            limits: HashMap::new(),
        }
    }
}

pub(super) fn validate(
    quota: Option<QuotaRaw>,
    orgs: Vec<OrgRaw>,
) -> Result<QuotaSettings, ConfigError> {
    let mut s = QuotaSettings::default();
    if let Some(q) = quota {
        match q.backend.as_str() {
            "memory" => {
                if q.redis_url.is_some() {
                    return Err(ConfigError::new(
                        "quota.redis_url",
                        "only used with backend = \"redis\"",
                    ));
                }
            }
            "redis" => {
                let url = q.redis_url.ok_or_else(|| {
                    ConfigError::new("quota.redis_url", "required with backend = \"redis\"")
                })?;
                if redis::Client::open(url.as_str()).is_err() {
                    return Err(ConfigError::new(
                        "quota.redis_url",
                        "not a valid redis:// URL",
                    ));
                }
                s.redis_url = Some(url);
            }
            other => {
                return Err(ConfigError::new(
                    "quota.backend",
                    format!("{other:?} is not one of \"memory\", \"redis\""),
                ));
            }
        }
        if q.key_prefix.is_empty() || q.key_prefix.contains(char::is_whitespace) {
            return Err(ConfigError::new(
                "quota.key_prefix",
                "must be a non-empty word",
            ));
        }
        s.key_prefix = q.key_prefix;
        if q.reserve > MAX_RESERVE {
            return Err(ConfigError::new(
                "quota.reserve",
                format!("{} is more than {MAX_RESERVE}", q.reserve),
            ));
        }
        s.reserve = q.reserve;
        s.on_unavailable = match q.on_unavailable.as_str() {
            "deny" => OnUnavailable::Deny,
            "allow" => OnUnavailable::Allow,
            other => {
                return Err(ConfigError::new(
                    "quota.on_unavailable",
                    format!("{other:?} is not one of \"deny\", \"allow\""),
                ));
            }
        };
    }
    for (i, org) in orgs.into_iter().enumerate() {
        if org.id.is_empty() {
            return Err(ConfigError::new(
                format!("orgs[{i}].id"),
                "must not be empty",
            ));
        }
        let Some(limit) = org.quota else { continue };
        let per = Window::parse(&limit.per).ok_or_else(|| {
            ConfigError::new(
                format!("orgs[{i}].quota.per"),
                "must be one of \"second\", \"minute\", \"hour\", \"day\", \"month\"",
            )
        })?;
        if s.limits
            .insert(
                org.id.clone(),
                Limit {
                    calls: limit.calls,
                    per,
                },
            )
            .is_some()
        {
            return Err(ConfigError::new(
                format!("orgs[{i}].id"),
                format!("duplicate org {:?}", org.id),
            ));
        }
    }
    Ok(s)
}
