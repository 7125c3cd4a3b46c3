//! The config file exactly as written: serde structs with `deny_unknown_fields`,
//! defaults applied, nothing checked yet (that is `validate`'s job).

use serde::{Deserialize, Serialize};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ConfigRaw {
    #[serde(default)]
    pub server: ServerRaw,
    pub admin: Option<AdminRaw>,
    #[serde(default)]
    pub connectors: Vec<ConnectorRaw>,
    #[serde(default)]
    pub agents: Vec<AgentRaw>,
    #[serde(default)]
    pub policies: Vec<PolicyRaw>,
    pub quota: Option<super::quota::QuotaRaw>,
    #[serde(default)]
    pub orgs: Vec<super::quota::OrgRaw>,
    pub vault: Option<super::vault::VaultRaw>,
    pub audit: Option<super::audit::AuditRaw>,
    pub telemetry: Option<super::telemetry::TelemetryRaw>,
    pub policy_trust: Option<super::trust::PolicyTrustRaw>,
    pub state: Option<super::state::StateRaw>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ServerRaw {
    #[serde(default = "default_listen")]
    pub listen: String,
    #[serde(default = "default_separator")]
    pub tool_separator: String,
    #[serde(default = "default_max_body")]
    pub max_body_bytes: u64,
    #[serde(default = "default_page_size")]
    pub list_page_size: u64,
    #[serde(default = "default_session_idle")]
    pub session_idle_secs: u64,
    #[serde(default = "default_max_sessions")]
    pub max_sessions: u64,
    /// Sessions one agent may hold open at once; default: the smaller of 10,000 and
    /// `max_sessions`.
    pub max_sessions_per_agent: Option<u64>,
    /// Threads serving agent connections; default: one per CPU.
    pub workers: Option<u64>,
    /// Seconds a connection may take to send a request head (after connecting or
    /// after its previous response) before it is closed.
    #[serde(default = "default_header_read_timeout")]
    pub header_read_timeout_secs: u64,
    /// Seconds a request body may take to arrive in full (else 408).
    #[serde(default = "default_body_read_timeout")]
    pub body_read_timeout_secs: u64,
    /// Connections one agent's requests may hold open at once.
    #[serde(default = "default_max_connections_per_agent")]
    pub max_connections_per_agent: u64,
    /// Requests of one agent in flight at once (calls that outlive a disconnect count).
    #[serde(default = "default_max_requests_per_agent")]
    pub max_requests_per_agent: u64,
    /// GET streams one agent may hold open at once.
    #[serde(default = "default_max_streams_per_agent")]
    pub max_streams_per_agent: u64,
    /// Microseconds a worker out of work polls before it sleeps.
    #[serde(default = "default_idle_spin")]
    pub idle_spin_us: u64,
    pub allowed_hosts: Option<Vec<String>>,
    #[serde(default)]
    pub allowed_origins: Vec<String>,
}

impl Default for ServerRaw {
    fn default() -> Self {
        toml::from_str("").expect("server defaults")
    }
}

fn default_listen() -> String {
    "127.0.0.1:8080".into()
}
fn default_header_read_timeout() -> u64 {
    30
}
fn default_body_read_timeout() -> u64 {
    30
}
fn default_max_connections_per_agent() -> u64 {
    1024
}
fn default_max_requests_per_agent() -> u64 {
    256
}
fn default_max_streams_per_agent() -> u64 {
    64
}
fn default_idle_spin() -> u64 {
    50
}
fn default_separator() -> String {
    ".".into()
}
fn default_max_body() -> u64 {
    4 * 1024 * 1024
}
fn default_page_size() -> u64 {
    500
}
fn default_session_idle() -> u64 {
    3600
}
fn default_max_sessions() -> u64 {
    100_000
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AdminRaw {
    pub listen: String,
    /// As `server.allowed_hosts`, for the admin listener.
    pub allowed_hosts: Option<Vec<String>>,
    #[serde(default)]
    pub allowed_origins: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ConnectorRaw {
    pub id: String,
    pub name: String,
    /// Required unless `transport = "stdio"`.
    pub target_url: Option<String>,
    pub credential: Option<CredentialRaw>,
    /// "streamable-http" (default), "sse" or "stdio" (`config/transport.rs`).
    pub transport: Option<String>,
    /// stdio: the program, its arguments, extra environment and working directory.
    pub command: Option<String>,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: std::collections::BTreeMap<String, super::transport::EnvValueRaw>,
    pub cwd: Option<String>,
    /// stdio: one process shared by every agent session (default: one per session).
    pub share_process: Option<bool>,
    /// stdio: at most this many processes at once (default 64).
    pub max_processes: Option<u64>,
    #[serde(default)]
    pub disabled_tools: Vec<String>,
    /// Prompt names (or `*` patterns) hidden and refused like unknown prompts.
    #[serde(default)]
    pub disabled_prompts: Vec<String>,
    /// Resource URIs, URI templates or names (or `*` patterns) hidden and refused
    /// like unknown resources.
    #[serde(default)]
    pub disabled_resources: Vec<String>,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Server-to-client requests relayed to agents during this connector's tool calls:
    /// "sampling" and/or "elicitation".
    #[serde(default)]
    pub relay_requests: Vec<String>,
    /// "first-use" (default: tools are pinned at the first listing, later changes are
    /// held for approval) or "off" (the upstream's list is served as it is).
    pub tool_pinning: Option<String>,
    /// The largest message read from the upstream (a result, a list page, an SSE
    /// event); larger ones fail their request with -32603. Default 16 MiB.
    pub max_result_bytes: Option<u64>,
}

/// `credential = "env:VAR"` or `credential = { secret = "name", kind = "bearer" }`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum CredentialRaw {
    Env(String),
    Secret(SecretRefRaw),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SecretRefRaw {
    pub secret: String,
    /// "bearer" (default), "oauth" (an OAuth access token, sent as a bearer token) or
    /// "header" (sent in the header named by `header`).
    pub kind: Option<String>,
    pub header: Option<String>,
}

fn default_timeout_ms() -> u64 {
    30_000
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AgentRaw {
    pub id: String,
    pub org: String,
    pub key_sha256: String,
    #[serde(default)]
    pub scopes: Vec<String>,
    pub mcp_servers: Option<Vec<ServerRuleRaw>>,
}

/// One entry of an agent's `mcpServers` declaration (`mcp_servers` in TOML).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ServerRuleRaw {
    pub url: String,
    pub tools: Option<HintsRaw>,
}

/// The `tools` constraints of a rule: required name patterns and the four hints.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HintsRaw {
    pub required: Option<Vec<String>>,
    pub read_only: Option<bool>,
    pub destructive: Option<bool>,
    pub idempotent: Option<bool>,
    pub open_world: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PolicyRaw {
    pub name: Option<String>,
    pub module: String,
    #[serde(default)]
    pub settings: Option<toml::Table>,
    #[serde(default = "default_mode")]
    pub mode: String,
    #[serde(default = "default_on_error")]
    pub on_error: String,
    #[serde(default = "default_policy_timeout")]
    pub timeout_ms: u64,
    #[serde(default = "default_policy_memory")]
    pub memory_limit_mb: u64,
    /// Reuse this policy's decisions for identical inputs when the policy declares
    /// itself deterministic (`describe`); `false` evaluates every request.
    #[serde(default = "default_true")]
    pub cache_decisions: bool,
}

fn default_true() -> bool {
    true
}

fn default_mode() -> String {
    "enforce".into()
}
fn default_on_error() -> String {
    "deny".into()
}
fn default_policy_timeout() -> u64 {
    500
}
fn default_policy_memory() -> u64 {
    64
}
