//! The gateway proper: what happens to an authenticated MCP message.
//!
//! `server` hands each JSON-RPC message here with the caller's session. Requests are
//! dispatched by method: `initialize` opens a session, `ping` is answered, and each
//! governed method goes through the stages of `pipeline` (resolve → decide → admit
//! → forward → check → reply and record) with its own parts: the list methods
//! (`list`) merge and filter the connectors' catalogs, `tools/call` (`call`) routes,
//! checks and forwards one call, `resources/read`, `prompts/get` and
//! `completion/complete` (`items`) one resource or prompt. Every governance decision goes through the policy chain;
//! every governed request ends in exactly one audit row.

mod approvals;
mod call;
pub(crate) mod catalog;
mod decide;
mod eligibility;
mod items;
pub(crate) mod limits;
mod list;
pub(crate) mod names;
mod notices;
pub(crate) mod pinning;
mod pipeline;
mod recipes;
mod relay;
pub(crate) mod reload;
mod rules;
pub(crate) mod sessions;
mod subscribe;
mod uri_template;

use std::sync::Arc;

use arc_swap::ArcSwap;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::audit::AuditLog;
use crate::auth::Identity;
use crate::config::{Config, Connector, CredentialSource};
use crate::http_client::HttpClient;
use crate::mcp::params::Params;
use crate::mcp::{self, jsonrpc, jsonrpc::RpcError};
use crate::policy::PolicyEngine;
use crate::quota::Quota;
use crate::upstream::{Credential, CredentialProvider, UpstreamSession};
use crate::vault::Vault;
use catalog::{Catalog, Kind};
use sessions::{AgentSession, Endpoint, SessionStore, TooManySessions};

/// How long `initialize` waits for an upstream whose capabilities are not known
/// yet (`Gateway::learn_capabilities`).
const LEARN_CAPABILITIES: std::time::Duration = std::time::Duration::from_secs(2);

/// What the transport sends back for one message.
pub(crate) enum Reply {
    /// One JSON-RPC response.
    Json(String),
    /// Messages to send as SSE; the stream ends after the response (or without one
    /// when the request was cancelled).
    Stream(mpsc::Receiver<String>),
}

pub(crate) struct Gateway {
    /// The config as read at start-up: the sections a running process cannot change
    /// (listeners, workers, the audit sink, ...) are read here. Agents, connectors,
    /// quota limits and policies are the live sets below (`rules.rs`).
    pub config: Arc<Config>,
    pub catalog: Arc<Catalog>,
    pub sessions: SessionStore,
    pub policy: Arc<PolicyEngine>,
    pub audit: Arc<AuditLog>,
    pub quota: Quota,
    /// Tool pinning and its state store (`pinning.rs`).
    pub(crate) pinning: Arc<pinning::Pinning>,
    /// What each agent holds open at once (connections, requests, GET streams).
    pub limits: limits::AgentLimits,
    /// The vault, once some connector takes its credential from it.
    vault: std::sync::OnceLock<Arc<Vault>>,
    client: HttpClient,
    /// The configured agents, swapped on a reload (`rules.rs`).
    agents: ArcSwap<rules::AgentSet>,
    /// The configured connectors, swapped on a reload (`rules.rs`).
    connectors: ArcSwap<rules::ConnectorSet>,
    /// Reload bookkeeping: one at a time, the last failure (`reload.rs`).
    pub(crate) reloads: reload::Reloads,
}

impl Gateway {
    /// The gateway `serve` runs.
    pub(crate) fn new(
        config: Config,
        policy: Arc<PolicyEngine>,
        audit: AuditLog,
    ) -> anyhow::Result<Arc<Gateway>> {
        Gateway::build(config, policy, audit, true)
    }

    /// A gateway for a command that only looks (`agents eligible`): it lists as
    /// `serve` would, but approves, holds and audits nothing.
    pub(crate) fn for_inspection(
        config: Config,
        policy: Arc<PolicyEngine>,
    ) -> anyhow::Result<Arc<Gateway>> {
        Gateway::build(config, policy, AuditLog::new(), false)
    }

    fn build(
        config: Config,
        policy: Arc<PolicyEngine>,
        audit: AuditLog,
        record: bool,
    ) -> anyhow::Result<Arc<Gateway>> {
        let audit = Arc::new(audit);
        let store = crate::state::StateStore::open(&config.state)?;
        let pinning = Arc::new(pinning::Pinning::new(store, audit.clone(), record));
        let gw = Gateway {
            catalog: Arc::new(Catalog::new(pinning.clone())),
            pinning,
            sessions: SessionStore::new(
                config.server.session_idle,
                config.server.max_sessions,
                config.server.max_sessions_per_agent,
            ),
            policy,
            audit,
            quota: Quota::new(&config.quota),
            limits: limits::AgentLimits::new(
                config.server.max_connections_per_agent,
                config.server.max_requests_per_agent,
                config.server.max_streams_per_agent,
            ),
            vault: std::sync::OnceLock::new(),
            client: crate::http_client::new_client(),
            agents: ArcSwap::from_pointee(rules::AgentSet::empty()),
            connectors: ArcSwap::from_pointee(rules::ConnectorSet::empty()),
            reloads: reload::Reloads::default(),
            config: Arc::new(config),
        };
        let plan = gw.prepare(&gw.config)?;
        gw.install(plan);
        Ok(Arc::new(gw))
    }

    /// The connector `id` as currently configured.
    pub(crate) fn connector(&self, id: &str) -> Option<Arc<Connector>> {
        self.connectors.load().by_id.get(id).cloned()
    }

    /// Every configured connector, as currently configured.
    pub(crate) fn all_connectors(&self) -> Vec<Arc<Connector>> {
        self.connectors.load().list.clone()
    }

    /// The vault, if some connector uses it.
    pub(crate) fn vault(&self) -> Option<&Arc<Vault>> {
        self.vault.get()
    }

    /// Handles `initialize`: negotiates the version and opens a session.
    pub(crate) async fn initialize(
        &self,
        identity: Arc<Identity>,
        endpoint: Endpoint,
        id: &Value,
        params: &Params,
    ) -> Result<(Arc<AgentSession>, String), TooManySessions> {
        let asked = params.field::<String>("protocolVersion");
        let version = match asked.as_deref() {
            Some(v) if mcp::is_supported(v) => v,
            _ => mcp::LATEST_VERSION,
        };
        let capabilities = relay::kept(params.field::<Value>("capabilities"));
        let session = self.sessions.create(
            identity,
            endpoint.clone(),
            version.to_string(),
            capabilities,
        )?;
        let instructions = match &endpoint {
            Endpoint::All => format!(
                "Portcullis gateway. Tools of every connector are named <connector-slug>{}<tool>.",
                self.config.server.tool_separator
            ),
            Endpoint::One(c) => format!("Portcullis gateway, connector {c}."),
        };
        self.learn_capabilities(&endpoint).await;
        let result = json!({
            "protocolVersion": version,
            "capabilities": self.advertised(&session.identity(), &endpoint).await,
            "serverInfo": {"name": "portcullis", "version": env!("CARGO_PKG_VERSION")},
            "instructions": instructions,
        });
        tracing::debug!(session = %session.id, agent = %session.agent, version, "session opened");
        Ok((session.clone(), jsonrpc::result(id, &result)))
    }

    /// Handles a request on an open session.
    pub(crate) async fn request(
        self: &Arc<Self>,
        session: &Arc<AgentSession>,
        id: Value,
        method: &str,
        params: Params,
        accepts_sse: bool,
        permit: Option<limits::Permit>,
    ) -> Reply {
        match method {
            "ping" => Reply::Json(jsonrpc::result(&id, &json!({}))),
            "tools/list" => self.list(session, &id, &params, Kind::Tools).await,
            "resources/list" => self.list(session, &id, &params, Kind::Resources).await,
            "resources/templates/list" => self.list(session, &id, &params, Kind::Templates).await,
            "prompts/list" => self.list(session, &id, &params, Kind::Prompts).await,
            "resources/subscribe" | "resources/unsubscribe" => {
                let subscribe = method == "resources/subscribe";
                self.resource_subscription(session, id, params, subscribe, permit)
                    .await
            }
            "logging/setLevel" => self.set_level(session, id, params, permit).await,
            "resources/read" | "prompts/get" | "completion/complete" => {
                let method = match method {
                    "resources/read" => "resources/read",
                    "prompts/get" => "prompts/get",
                    _ => "completion/complete",
                };
                self.item_request(session, id, method, params, permit).await
            }
            "tools/call" => {
                self.tools_call(session, id, params, accepts_sse, permit)
                    .await
            }
            "initialize" => Reply::Json(jsonrpc::error(
                Some(&id),
                &RpcError::new(jsonrpc::INVALID_REQUEST, "Session already initialized"),
            )),
            _ => Reply::Json(jsonrpc::error(
                Some(&id),
                &RpcError::new(
                    jsonrpc::METHOD_NOT_FOUND,
                    format!("Method not found: {method}"),
                ),
            )),
        }
    }

    /// Handles a response from the agent: the answer to a server-to-client request
    /// relayed to it (`relay.rs`); a response to nothing the gateway asked is dropped.
    pub(crate) fn response(&self, session: &AgentSession, id: &Value, answer: jsonrpc::Answer) {
        if !session.answer_relayed(id, answer) {
            let id = id.to_string();
            let id = crate::text::bounded(&id);
            tracing::debug!(session = %session.id, %id, "response to no relayed request, dropped");
        }
    }

    /// Handles a notification from the agent.
    pub(crate) async fn notification(
        &self,
        session: &Arc<AgentSession>,
        method: &str,
        params: &Params,
    ) {
        if method == "notifications/cancelled" {
            let Some(request_id) = params.field::<Value>("requestId") else {
                return;
            };
            if let Some(flight) = session.take_request(&request_id) {
                let _ = flight.cancel.send(());
            }
        }
    }

    /// Audits a request refused before it reached a session (a per-agent limit): the
    /// agent, what it asked for (`what`: an HTTP method and path) and why.
    pub(crate) async fn audit_refused(
        &self,
        identity: &Identity,
        what: &str,
        status: u16,
        reason: String,
    ) {
        pipeline::Audited::for_agent(identity, what)
            .close(&self.audit, status, None, Some(reason))
            .await;
    }

    /// Ends a session and the upstream sessions it opened.
    pub(crate) async fn end_session(&self, session: &Arc<AgentSession>) {
        self.sessions.remove(&session.id);
        session.close().await;
    }

    /// Closes idle sessions; run periodically.
    pub(crate) async fn expire_sessions(&self) {
        let expired = self.sessions.expire();
        for s in &expired {
            tracing::debug!(session = %s.id, "session expired");
        }
        close_all(expired).await;
    }

    /// Ends every session (shutdown), the catalog's upstream sessions and shared
    /// processes at the same time (each bounded by `sessions::CLOSE_TIMEOUT`); a stdio
    /// process still running after that is killed.
    pub(crate) async fn close_sessions(&self) {
        let set = self.connectors.load();
        let shared = futures_util::future::join_all(
            set.recipes
                .values()
                .map(|r| tokio::time::timeout(sessions::CLOSE_TIMEOUT, r.terminate())),
        );
        tokio::join!(
            close_all(self.sessions.drain()),
            self.catalog.close_all(),
            shared
        );
        crate::upstream::kill_processes();
    }

    /// The session's upstream session for a connector, opened on first use with the
    /// connector's current upstream and credential (a reload may have re-targeted it
    /// since the request began: the pair always comes from one config).
    fn upstream(
        &self,
        session: &AgentSession,
        connector: &Connector,
    ) -> Result<Arc<UpstreamSession>, pipeline::Refusal> {
        let set = self.connectors.load();
        let (Some(current), Some(recipe)) =
            (set.by_id.get(&connector.id), set.recipes.get(&connector.id))
        else {
            return Err(pipeline::Refusal::connector_removed(&connector.id));
        };
        session
            .upstream(current, || {
                let declared = relay::declared(current.relay, Some(&session.client_capabilities));
                recipe.make(&self.client, current, declared)
            })
            .ok_or_else(pipeline::Refusal::session_ended)
    }

    /// Asks the endpoint's connectors whose capabilities the catalog does not know
    /// yet (in parallel, each bounded by [`LEARN_CAPABILITIES`]): an upstream that
    /// cannot say in that time is advertised as offering tools only.
    async fn learn_capabilities(&self, endpoint: &Endpoint) {
        let unknown: Vec<Arc<Connector>> = self
            .endpoint_connectors(endpoint)
            .into_iter()
            .filter(|c| !self.catalog.knows_capabilities(&c.id))
            .collect();
        if unknown.is_empty() {
            return;
        }
        let asks = unknown.iter().map(|c| {
            let limit = c.timeout.min(LEARN_CAPABILITIES);
            tokio::time::timeout(limit, self.catalog.offers(&c.id, "tools"))
        });
        futures_util::future::join_all(asks).await;
    }

    /// The capabilities `initialize` advertises to an agent on `endpoint`: tools
    /// always; each of resources (with `subscribe`), prompts, completions and logging
    /// when a connector of the endpoint that the agent may use (`Gateway::usable_by`: its
    /// policies leave it a tool, prompt or resource there) is known to offer it (the
    /// catalog learns an upstream's capabilities when its session first initialises,
    /// at start-up or first use).
    pub(crate) async fn advertised(&self, identity: &Arc<Identity>, endpoint: &Endpoint) -> Value {
        let beyond_tools = ["resources", "prompts", "completions", "logging"];
        let offering: Vec<Arc<Connector>> = self
            .endpoint_connectors(endpoint)
            .into_iter()
            .filter(|c| {
                beyond_tools
                    .iter()
                    .any(|cap| self.catalog.offered(&c.id, cap))
            })
            .collect();
        let connectors = self.usable_of(identity, offering).await;
        let offered = |capability: &str| {
            connectors
                .iter()
                .any(|c| self.catalog.offered(&c.id, capability))
        };
        let mut caps = json!({"tools": {"listChanged": true}});
        if offered("resources") {
            caps["resources"] = json!({"listChanged": true});
            let subscribe = connectors
                .iter()
                .any(|c| self.catalog.offered_feature(&c.id, "/resources/subscribe"));
            if subscribe {
                caps["resources"]["subscribe"] = json!(true);
            }
        }
        if offered("logging") {
            caps["logging"] = json!({});
        }
        if offered("prompts") {
            caps["prompts"] = json!({"listChanged": true});
        }
        if offered("completions") {
            caps["completions"] = json!({});
        }
        caps
    }

    /// Connectors reachable from a session's endpoint.
    fn endpoint_connectors(&self, endpoint: &Endpoint) -> Vec<Arc<Connector>> {
        match endpoint {
            Endpoint::All => self.all_connectors(),
            Endpoint::One(id) => self.connector(id).into_iter().collect(),
        }
    }
}

fn uri(c: &Connector) -> http::Uri {
    c.target_url.parse().expect("validated at config load")
}

/// How connector `c` presents its credential (`vault`: opened when `c` uses it).
fn credential(c: &Connector, vault: Option<&Arc<Vault>>) -> anyhow::Result<CredentialProvider> {
    let Some(source) = &c.credential else {
        return Ok(CredentialProvider::None);
    };
    let var = match source {
        CredentialSource::Env(var) => var,
        CredentialSource::Vault { secret, kind } => {
            return Ok(CredentialProvider::Vault {
                vault: vault.expect("opened when a connector uses it").clone(),
                connector: c.id.clone(),
                secret: secret.clone(),
                kind: kind.clone(),
            });
        }
    };
    let token = std::env::var(var).map_err(|_| {
        anyhow::anyhow!("connector {}: environment variable {var} is not set", c.id)
    })?;
    let mut value = http::HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
        anyhow::anyhow!(
            "connector {}: the credential in {var} is not a valid header value",
            c.id
        )
    })?;
    value.set_sensitive(true);
    Ok(CredentialProvider::Static(Credential {
        header: http::header::AUTHORIZATION,
        value,
    }))
}

/// A random id for one audited request.
pub(crate) fn new_request_id() -> String {
    let mut raw = [0u8; 12];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut raw);
    hex::encode(raw)
}

/// Closes `sessions` several at a time: a hung upstream costs each of them one bounded
/// DELETE (`sessions::CLOSE_TIMEOUT`), not one after another, and thousands of
/// sessions ending together do not send thousands of DELETEs at once.
async fn close_all(sessions: Vec<Arc<AgentSession>>) {
    use futures_util::StreamExt;
    const AT_ONCE: usize = 256;
    futures_util::stream::iter(sessions)
        .for_each_concurrent(AT_ONCE, |s| async move { s.close().await })
        .await;
}
