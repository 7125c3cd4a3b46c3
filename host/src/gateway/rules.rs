//! The rules a running gateway can change: the agents (keys, org, scopes,
//! `mcp_servers`), the connectors (added, removed, upstream, credential,
//! `disabled_tools`, `disabled_prompts`, `disabled_resources`, `timeout_ms`, `relay_requests`, `tool_pinning`) and the orgs'
//! quota limits.
//!
//! A reload is two steps. [`Gateway::prepare`] builds everything the new config needs
//! (credential providers, the vault when a connector newly uses it) and fails without
//! changing anything. [`Gateway::commit`] then swaps each set whole, atomically, and
//! settles what is open: sessions of removed agents (or agents whose key changed) are
//! closed, sessions whose agent changed take the new identity and get `list_changed`,
//! removed or re-targeted connectors' upstream sessions (the catalog's and every
//! agent session's) are closed and reopened lazily. A request uses the sets it
//! loaded, so it finishes on the config it started with.

use std::collections::HashMap;
use std::sync::Arc;

use super::Gateway;
use super::recipes::Recipe;
use crate::auth::{Authenticator, Identity};
use crate::config::{Config, Connector, CredentialSource, EnvSource, Transport};
use crate::upstream::UpstreamSession;
use crate::vault::Vault;

/// The configured connectors, by id and by slug, with how their upstream sessions
/// are made (credential, process launcher).
pub(crate) struct ConnectorSet {
    pub(crate) list: Vec<Arc<Connector>>,
    pub(crate) by_id: HashMap<String, Arc<Connector>>,
    pub(crate) by_slug: HashMap<String, Arc<Connector>>,
    pub(crate) recipes: HashMap<String, Arc<Recipe>>,
}

impl ConnectorSet {
    pub(super) fn empty() -> ConnectorSet {
        ConnectorSet::new(Vec::new(), HashMap::new())
    }

    fn new(list: Vec<Arc<Connector>>, recipes: HashMap<String, Arc<Recipe>>) -> ConnectorSet {
        let by_id = list.iter().map(|c| (c.id.clone(), c.clone())).collect();
        let by_slug = list.iter().map(|c| (c.slug.clone(), c.clone())).collect();
        ConnectorSet {
            list,
            by_id,
            by_slug,
            recipes,
        }
    }
}

/// The configured agents: who a key belongs to.
pub(crate) struct AgentSet {
    pub(crate) auth: Authenticator,
    /// Which load of the config this is (each reload's is higher).
    revision: u64,
}

impl AgentSet {
    pub(super) fn empty() -> AgentSet {
        AgentSet {
            auth: Authenticator::new(&[]),
            revision: 0,
        }
    }
}

/// A validated config turned into the sets it swaps in, and what changes.
pub(crate) struct Plan {
    agents: AgentSet,
    connectors: ConnectorSet,
    quota: HashMap<String, crate::config::Limit>,
}

/// Whether `new` reaches the same upstream as `old` the same way (transport, program,
/// environment, credential), with the same message limit (else its open upstream
/// sessions are closed and reopened, and its processes restarted).
pub(crate) fn same_upstream(old: &Connector, new: &Connector) -> bool {
    old.target_url == new.target_url
        && old.transport == new.transport
        && old.credential == new.credential
        && old.max_result_bytes == new.max_result_bytes
}

/// Whether what agents see of a connector may differ.
fn rules_differ(old: &Connector, new: &Connector) -> bool {
    old.slug != new.slug
        || old.disabled_tools != new.disabled_tools
        || old.disabled_prompts != new.disabled_prompts
        || old.disabled_resources != new.disabled_resources
        || old.timeout != new.timeout
        || old.relay != new.relay
        || old.pinning != new.pinning
}

impl Gateway {
    /// The sets a config describes, built without changing anything (start-up and
    /// reloads): an error names the connector and leaves the running config alone.
    pub(crate) fn prepare(&self, config: &Config) -> anyhow::Result<Plan> {
        let current = self.connectors.load();
        let mut list = Vec::with_capacity(config.connectors.len());
        let mut recipes = HashMap::new();
        for new in &config.connectors {
            let (connector, recipe) = match current.by_id.get(&new.id) {
                Some(old) if same_upstream(old, new) => {
                    let kept = if rules_differ(old, new) {
                        Arc::new(new.clone())
                    } else {
                        old.clone()
                    };
                    (kept, current.recipes[&old.id].clone())
                }
                _ => (Arc::new(new.clone()), self.recipe(new)?),
            };
            recipes.insert(connector.id.clone(), recipe);
            list.push(connector);
        }
        let revision = self.agents.load().revision + 1;
        Ok(Plan {
            agents: AgentSet {
                auth: Authenticator::at_revision(&config.agents, revision),
                revision,
            },
            connectors: ConnectorSet::new(list, recipes),
            quota: config.quota.limits.clone(),
        })
    }

    /// Swaps in a prepared config and settles what is open (module doc).
    pub(crate) fn commit(&self, plan: Plan) {
        let old_connectors = self.connectors.swap(Arc::new(plan.connectors));
        let old_agents = self.agents.swap(Arc::new(plan.agents));
        self.quota.set_limits(plan.quota);
        self.settle_connectors(&old_connectors);
        self.settle_agents(&old_agents);
    }

    /// Added connectors join the catalog; removed ones leave it; re-targeted ones get a
    /// new catalog session; every agent session drops its upstream session of a
    /// removed or re-targeted connector. Connectors whose rules changed are announced.
    fn settle_connectors(&self, old: &ConnectorSet) {
        let new = self.connectors.load();
        let mut closed = Vec::new();
        for c in &old.list {
            match new.by_id.get(&c.id) {
                None => {
                    tracing::info!(connector = %c.id, "connector removed");
                    self.catalog.remove(&c.id);
                    closed.push(c.id.clone());
                    retire(&old.recipes[&c.id]);
                }
                Some(n) if !same_upstream(c, n) => {
                    tracing::info!(connector = %c.id, target_url = %n.target_url, "connector re-targeted; its upstream sessions reopen");
                    self.catalog
                        .insert(n.clone(), self.catalog_session(&new, n));
                    closed.push(c.id.clone());
                    retire(&old.recipes[&c.id]);
                }
                Some(n) if !Arc::ptr_eq(c, n) => {
                    tracing::info!(connector = %c.id, "connector rules reloaded");
                    self.catalog.update(n);
                    if c.pinning != n.pinning {
                        // Screened (or not) again from the upstream's list.
                        self.catalog.invalidate(&c.id);
                    } else {
                        self.catalog.announce(&c.id);
                    }
                }
                Some(_) => {}
            }
        }
        for n in &new.list {
            if !old.by_id.contains_key(&n.id) {
                tracing::info!(connector = %n.id, transport = n.transport.name(), "connector added");
                self.catalog
                    .insert(n.clone(), self.catalog_session(&new, n));
            }
        }
        if !closed.is_empty() {
            let sessions = self.sessions.all();
            tokio::spawn(async move {
                let drops = sessions
                    .iter()
                    .flat_map(|s| closed.iter().map(move |id| s.drop_upstream(id)));
                futures_util::future::join_all(drops).await;
            });
        }
    }

    /// Sessions of removed agents, or of agents whose key changed, end (their next
    /// request gets 401); the others take their agent's reloaded identity, and those
    /// whose identity changed are told to list again.
    fn settle_agents(&self, old: &AgentSet) {
        let new = self.agents.load();
        let revoked = |agent: &str| match (old.auth.key_hash(agent), new.auth.key_hash(agent)) {
            (Some(before), Some(now)) => before != now,
            _ => true,
        };
        let ended = self.sessions.remove_agents(revoked);
        if !ended.is_empty() {
            tracing::info!(
                sessions = ended.len(),
                "sessions of removed agents (or changed keys) closed"
            );
            tokio::spawn(super::close_all(ended));
        }
        let mut told = std::collections::HashSet::new();
        for s in self.sessions.all() {
            let Some(identity) = new.auth.identity(&s.agent) else {
                continue;
            };
            if s.set_identity(identity) && told.insert(s.agent.clone()) {
                tracing::info!(agent = %s.agent, "agent rules reloaded");
                self.catalog.announce_agent(&s.agent);
            }
        }
    }

    /// The gateway's own upstream session of a connector (catalog, list_changed).
    pub(super) fn catalog_session(
        &self,
        set: &ConnectorSet,
        c: &Connector,
    ) -> Arc<UpstreamSession> {
        set.recipes[&c.id].make(&self.client, c, super::relay::declared(c.relay, None))
    }

    /// The agent as currently configured, if it still is.
    pub(crate) fn authenticate(&self, key: &str) -> Option<Arc<Identity>> {
        self.agents.load().auth.authenticate(key)
    }

    /// Installs the start-up config's sets (no session is open yet).
    pub(super) fn install(&self, plan: Plan) {
        self.connectors.store(Arc::new(plan.connectors));
        self.agents.store(Arc::new(plan.agents));
        self.quota.set_limits(plan.quota);
        let set = self.connectors.load();
        for c in &set.list {
            self.catalog
                .insert(c.clone(), self.catalog_session(&set, c));
        }
    }

    /// How a connector's upstream sessions are made. The vault (`[vault]`, as read at
    /// start-up) is opened the first time a connector needs it (its credential or a
    /// stdio `env` value); a secret it lacks is a warning, as it may be added with
    /// `vault put` while the gateway runs.
    fn recipe(&self, c: &Connector) -> anyhow::Result<Arc<Recipe>> {
        let mut secrets: Vec<&str> = Vec::new();
        if let Some(CredentialSource::Vault { secret, .. }) = &c.credential {
            secrets.push(secret);
        }
        if let Transport::Stdio(spec) = &c.transport {
            secrets.extend(spec.env.iter().filter_map(|(_, v)| match v {
                EnvSource::Vault(secret) => Some(secret.as_str()),
                _ => None,
            }));
        }
        let vault = (!secrets.is_empty()).then(|| {
            self.vault.get_or_init(|| {
                let vault = Arc::new(Vault::open(&self.config.vault));
                vault.spawn_sweeper();
                vault
            })
        });
        for secret in &secrets {
            warn_if_missing(vault.expect("opened for secrets"), &c.id, secret);
        }
        let credential = super::credential(c, vault)?;
        Ok(Arc::new(Recipe::new(c, credential, vault.cloned())))
    }
}

/// Ends a recipe's shared process in the background (its connector was removed or
/// re-targeted).
fn retire(recipe: &Arc<Recipe>) {
    let recipe = recipe.clone();
    tokio::spawn(async move {
        let _ = tokio::time::timeout(super::sessions::CLOSE_TIMEOUT, recipe.terminate()).await;
    });
}

/// Warns when the vault lacks a connector's secret (calls to that connector fail with
/// a clear log line until `portcullis vault put` adds it).
fn warn_if_missing(vault: &Vault, connector: &str, secret: &str) {
    match vault.contains(secret) {
        Ok(true) => {}
        Ok(false) => tracing::warn!(
            connector,
            secret,
            vault = %vault.path().display(),
            "vault secret not found; calls to this connector fail until `portcullis vault put` adds it"
        ),
        Err(e) => tracing::warn!(connector, secret, error = %e, "vault unreadable"),
    }
}
