//! Per-org tool-call quotas (`[[orgs]] quota = { calls = N, per = "day" }`).
//!
//! Every `tools/call` the policy chain allowed counts, across all connectors, in fixed
//! UTC windows (minute, hour, day, calendar month). Backends: `memory` (one gateway)
//! and `redis` (a fleet: one atomic script per check, keys namespaced and expiring
//! with their window; concurrent checks of one org share a script call, `batch.rs`,
//! and a busy org far from its limit has calls counted ahead per thread, `blocks.rs`).
//! When Redis cannot be reached the call is refused with -32603, or let through when
//! `on_unavailable = "allow"`; the gateway reconnects by itself.

mod batch;
mod blocks;
mod memory;
mod redis_backend;
mod window;

use std::collections::HashMap;

use tracing::Instrument;

use crate::telemetry;

use crate::config::{Limit, OnUnavailable, QuotaSettings};

/// The answer to "may this org make one more call?".
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Counted; `used` calls in the current window including this one.
    Allowed { used: u64 },
    /// The org's limit for the window is reached.
    Exceeded { limit: u64 },
    /// No limit is configured for the org.
    Unlimited,
    /// The backend could not be asked; the call is refused (`on_unavailable = "deny"`).
    Unavailable(String),
    /// The backend could not be asked; the call goes through (`on_unavailable = "allow"`).
    UnavailableAllowed(String),
}

enum Backend {
    Memory(memory::Memory),
    Redis(Box<redis_backend::Redis>),
}

pub(crate) struct Quota {
    /// Each org's limit; swapped whole when the config is reloaded.
    limits: arc_swap::ArcSwap<HashMap<String, Limit>>,
    backend: Backend,
    on_unavailable: OnUnavailable,
}

impl Quota {
    /// New org limits (a reloaded config), from the next check on. Counts already
    /// made in the current window stay.
    pub(crate) fn set_limits(&self, limits: HashMap<String, Limit>) {
        self.limits.store(std::sync::Arc::new(limits));
    }

    pub(crate) fn new(settings: &QuotaSettings) -> Quota {
        let backend = match &settings.redis_url {
            None => Backend::Memory(memory::Memory::default()),
            Some(url) => Backend::Redis(Box::new(redis_backend::Redis::new(
                url,
                &settings.key_prefix,
                settings.reserve,
            ))),
        };
        Quota {
            limits: arc_swap::ArcSwap::from_pointee(settings.limits.clone()),
            backend,
            on_unavailable: settings.on_unavailable,
        }
    }

    /// Counts one call for `org` and says whether it may proceed (traced as the
    /// "quota check" span; refusals are counted in the metrics).
    pub(crate) async fn check(&self, org: &str) -> Verdict {
        let span = telemetry::spans::quota(org);
        let verdict = self.count(org).instrument(span.clone()).await;
        let (name, used) = match &verdict {
            Verdict::Allowed { used } => ("allowed", Some(*used)),
            Verdict::Exceeded { .. } => ("exceeded", None),
            Verdict::Unlimited => ("unlimited", None),
            Verdict::Unavailable(_) => ("unavailable", None),
            Verdict::UnavailableAllowed(_) => ("unavailable_allowed", None),
        };
        telemetry::spans::quota_verdict(&span, org, name, used);
        verdict
    }

    async fn count(&self, org: &str) -> Verdict {
        let limit = self.limits.load().get(org).copied();
        let Some(limit) = limit else {
            return Verdict::Unlimited;
        };
        let now = window::now_secs();
        let (window_id, ttl) = limit.per.current(now);
        let counted = match &self.backend {
            Backend::Memory(m) => Ok(m.incr(org, window_id)),
            Backend::Redis(r) => r.incr(org, limit, window_id, ttl).await,
        };
        match counted {
            Ok(used) if used <= limit.calls => Verdict::Allowed { used },
            Ok(_) => Verdict::Exceeded { limit: limit.calls },
            Err(e) => match self.on_unavailable {
                OnUnavailable::Deny => {
                    tracing::error!(org, error = %e, "quota backend unavailable; refusing the call");
                    Verdict::Unavailable(e)
                }
                OnUnavailable::Allow => {
                    tracing::warn!(org, error = %e, "quota backend unavailable; letting the call through (on_unavailable = allow)");
                    Verdict::UnavailableAllowed(e)
                }
            },
        }
    }

    /// Whether the backend answers (for readiness checks).
    pub(crate) async fn ready(&self) -> bool {
        match &self.backend {
            Backend::Memory(_) => true,
            Backend::Redis(r) => r.ping().await,
        }
    }
}
