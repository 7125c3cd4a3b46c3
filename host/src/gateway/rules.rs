//! What a config reload changes in a running gateway (besides the policy chain,
//! which `policy::reload` swaps): the rules of the configured connectors
//! (`disabled_tools`, `timeout_ms`, `relay_requests`) and the orgs' quota limits.
//! Each is swapped whole, atomically; a request uses the set it loaded.
//!
//! Not yet live (named in one warning, kept until a restart): connectors added,
//! removed or changed in `name`, `target_url` or `credential`, agents, and the
//! sections a process cannot change (listeners, workers, the audit sink).

use std::collections::HashMap;
use std::sync::Arc;

use super::Gateway;
use crate::config::{Config, Connector};

/// The configured connectors, by id and by slug.
pub(crate) struct ConnectorSet {
    pub(crate) list: Vec<Arc<Connector>>,
    pub(crate) by_id: HashMap<String, Arc<Connector>>,
    pub(crate) by_slug: HashMap<String, Arc<Connector>>,
}

impl ConnectorSet {
    pub(crate) fn new(list: Vec<Arc<Connector>>) -> ConnectorSet {
        let by_id = list.iter().map(|c| (c.id.clone(), c.clone())).collect();
        let by_slug = list.iter().map(|c| (c.slug.clone(), c.clone())).collect();
        ConnectorSet {
            list,
            by_id,
            by_slug,
        }
    }
}

/// Whether `new` is the same connector as `old` for everything a running gateway
/// cannot change yet (its upstream and how it is reached and named).
fn same_upstream(old: &Connector, new: &Connector) -> bool {
    old.slug == new.slug && old.target_url == new.target_url && old.credential == new.credential
}

/// Whether a connector's reloadable rules differ.
fn rules_differ(old: &Connector, new: &Connector) -> bool {
    old.disabled_tools != new.disabled_tools || old.timeout != new.timeout || old.relay != new.relay
}

impl Gateway {
    /// Applies a reloaded, valid config: new connector rules and quota limits from
    /// the next request on; agents whose lists may have changed are told
    /// (`list_changed`). Connector changes that need a restart keep the running
    /// values and are named in one warning.
    pub(crate) fn apply_rules(&self, config: &Config) {
        let current = self.connectors.load();
        let mut list = Vec::with_capacity(current.list.len());
        let mut changed = Vec::new();
        let mut need_restart = Vec::new();
        for old in &current.list {
            match config.connectors.iter().find(|c| c.id == old.id) {
                Some(new) if same_upstream(old, new) => {
                    if rules_differ(old, new) {
                        changed.push(old.id.clone());
                        list.push(Arc::new(new.clone()));
                    } else {
                        list.push(old.clone());
                    }
                }
                Some(_) => {
                    need_restart.push(format!("{} (changed upstream)", old.id));
                    list.push(old.clone());
                }
                None => {
                    need_restart.push(format!("{} (removed)", old.id));
                    list.push(old.clone());
                }
            }
        }
        for new in &config.connectors {
            if !current.by_id.contains_key(&new.id) {
                need_restart.push(format!("{} (added)", new.id));
            }
        }
        if !need_restart.is_empty() {
            tracing::warn!(connectors = %need_restart.join(", "), "these connector changes take effect at the next restart; the running values are kept");
        }
        if !changed.is_empty() {
            self.connectors.store(Arc::new(ConnectorSet::new(list)));
            for id in &changed {
                tracing::info!(connector = %id, "connector rules reloaded");
                self.catalog.announce(id);
            }
        }
        self.quota.set_limits(config.quota.limits.clone());
    }
}
