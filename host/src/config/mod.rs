//! The gateway's TOML configuration: the file format (`raw`), its validation
//! (`validate`) and the checked, ready-to-use form the rest of the gateway reads.
//!
//! Every problem is reported as a [`ConfigError`] naming the key (`connectors[1].target_url`)
//! and the reason; unknown keys are errors. The gateway refuses to start on any of them.

mod audit;
mod error;
mod quota;
mod raw;
mod slug;
mod state;
mod telemetry;
mod transport;
mod trust;
mod validate;
mod vault;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub(crate) use audit::{AuditSettings, OnFull, SinkSettings};
pub(crate) use error::ConfigError;
pub(crate) use quota::{Limit, OnUnavailable, QuotaSettings, Window};
pub(crate) use raw::ServerRuleRaw as ServerRule;
pub(crate) use slug::slugify;
pub(crate) use state::StateSettings;
pub(crate) use telemetry::{Protocol, TelemetrySettings, check_url};
pub(crate) use transport::{EnvSource, StdioSpec, Transport};
pub(crate) use trust::{TrustSettings, hex32, parse_public_key};
pub(crate) use vault::{
    KmsSettings, VaultSettings, settings_from_file as vault_settings_from_file,
};

/// Names accepted after `builtin:` (each embedded in the binary by `policy::builtin`).
pub(crate) const BUILTIN_POLICIES: [&str; 5] = [
    "slug-scope",
    "blocklist",
    "mcp-servers",
    "annotation-hints",
    "redact-secrets",
];

/// The validated configuration.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub server: Server,
    pub admin: Option<Admin>,
    pub connectors: Vec<Connector>,
    pub agents: Vec<Agent>,
    pub policies: Vec<PolicySpec>,
    pub quota: QuotaSettings,
    pub vault: VaultSettings,
    pub audit: AuditSettings,
    pub telemetry: TelemetrySettings,
    /// `[policy_trust]`: required signatures, trusted keys, lock file.
    pub policy_trust: TrustSettings,
    /// `[state]`: where tool pins and approvals are kept.
    pub state: StateSettings,
    /// Directory relative paths in the file are resolved against.
    pub base_dir: PathBuf,
}

#[derive(Debug, Clone)]
pub(crate) struct Server {
    pub listen: SocketAddr,
    pub tool_separator: String,
    pub max_body_bytes: usize,
    pub list_page_size: usize,
    pub session_idle: Duration,
    pub max_sessions: usize,
    /// Sessions one agent may hold open at once (`initialize` beyond it: 429).
    pub max_sessions_per_agent: usize,
    /// Threads serving agent connections, each with its own single-threaded runtime
    /// and upstream connection pool (`server.workers`; default: one per CPU).
    pub workers: usize,
    /// How long an HTTP/1 connection may take to send a complete request head, counted
    /// from the connection or from its previous response: slow or idle connections
    /// are closed (`server.header_read_timeout_secs`).
    pub header_read_timeout: Duration,
    /// How long a request body may take to arrive in full (`server.body_read_timeout_secs`;
    /// slower: 408 and the connection is closed).
    pub body_read_timeout: Duration,
    /// Per-agent limits (`server.max_{connections,requests,streams}_per_agent`):
    /// beyond them, 429 (`gateway::limits`).
    pub max_connections_per_agent: usize,
    pub max_requests_per_agent: usize,
    pub max_streams_per_agent: usize,
    /// How long a worker out of work polls for events before it sleeps
    /// (`server.idle_spin_us`; zero: it sleeps at once).
    pub idle_spin: Duration,
    /// Host header values accepted (lowercase, without port). Empty = any host.
    pub allowed_hosts: Vec<String>,
    /// Origins accepted besides those whose host is in `allowed_hosts`.
    pub allowed_origins: Vec<String>,
}

#[derive(Debug, Clone)]
pub(crate) struct Admin {
    pub listen: SocketAddr,
    /// Host header values accepted (as `Server::allowed_hosts`; default: the loopback
    /// names when the admin listener is on loopback).
    pub allowed_hosts: Vec<String>,
    /// Origins accepted besides those whose host is in `allowed_hosts`.
    pub allowed_origins: Vec<String>,
}

/// Where a connector's upstream credential comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CredentialSource {
    /// `env:NAME`: the value of an environment variable, sent as a bearer token.
    Env(String),
    /// A secret in the encrypted vault, sent as `kind` says.
    Vault {
        secret: String,
        kind: CredentialKind,
    },
}

/// How a credential is presented to the upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CredentialKind {
    /// `Authorization: Bearer <secret>`.
    Bearer,
    /// An OAuth access token, sent as `Authorization: Bearer <token>`.
    OAuth,
    /// The secret as the value of the named header (e.g. `X-API-Key`).
    Header(String),
}

#[derive(Debug, Clone)]
pub(crate) struct Connector {
    pub id: String,
    pub slug: String,
    /// The upstream's URL; `stdio://<slug>` for a stdio connector (what policies see).
    pub target_url: String,
    /// How the upstream is reached (`transport` and the stdio keys).
    pub transport: Transport,
    pub credential: Option<CredentialSource>,
    pub disabled_tools: Vec<String>,
    /// The prompt blocklist (`disabled_prompts`), for the blocklist policy.
    pub disabled_prompts: Vec<String>,
    /// The resource blocklist (`disabled_resources`), for the blocklist policy.
    pub disabled_resources: Vec<String>,
    pub timeout: Duration,
    /// Which server-to-client requests are relayed to agents (`relay_requests`).
    pub relay: Relay,
    /// Whether the connector's tools are pinned at approval (`tool_pinning`).
    pub pinning: ToolPinning,
    /// The largest message read from the upstream (`max_result_bytes`).
    pub max_result_bytes: usize,
}

/// `tool_pinning`: what the gateway serves of a connector's tool list.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum ToolPinning {
    /// The first successful listing approves the connector and pins every tool
    /// (name and sha256 of its definition); new or changed tools are held.
    #[default]
    FirstUse,
    /// The upstream's list as it is now.
    Off,
}

/// The server-to-client requests a connector may send to agents through the gateway,
/// each named by the client capability it needs. Not listed: refused with -32601.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Relay {
    /// `sampling/createMessage`.
    pub sampling: bool,
    /// `elicitation/create`.
    pub elicitation: bool,
}

impl Relay {
    /// The values `relay_requests` accepts.
    pub(crate) const NAMES: [&'static str; 2] = ["sampling", "elicitation"];

    /// Whether requests needing client capability `name` are relayed.
    pub(crate) fn allows(&self, name: &str) -> bool {
        match name {
            "sampling" => self.sampling,
            "elicitation" => self.elicitation,
            _ => false,
        }
    }

    /// Turns relaying of capability `name` on; `false` for a name not in [`Self::NAMES`].
    pub(crate) fn enable(&mut self, name: &str) -> bool {
        let flag = match name {
            "sampling" => &mut self.sampling,
            "elicitation" => &mut self.elicitation,
            _ => return false,
        };
        *flag = true;
        true
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Agent {
    pub id: String,
    pub org: String,
    /// sha256 of the API key, 32 bytes.
    pub key_sha256: [u8; 32],
    pub scopes: Vec<String>,
    /// The agent's `mcpServers` declaration; `None` when it has none.
    pub mcp_servers: Option<Vec<ServerRule>>,
}

/// How a policy's verdicts are applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PolicyMode {
    /// Denials are enforced.
    Enforce,
    /// Evaluated and logged; nothing is enforced.
    Monitor,
}

/// What happens when a policy traps, times out or exhausts its memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OnError {
    Deny,
    Allow,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PolicySpec {
    pub name: String,
    /// `builtin:<name>` or a path to a `.wasm` component (resolved against the config dir).
    pub module: ModuleRef,
    /// Settings as JSON text, handed to the policy.
    pub settings: String,
    pub mode: PolicyMode,
    pub on_error: OnError,
    pub timeout: Duration,
    pub memory_limit_bytes: usize,
    /// Whether decisions of a deterministic policy may be reused.
    pub cache_decisions: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum ModuleRef {
    Builtin(String),
    File(PathBuf),
}

impl std::fmt::Display for ModuleRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ModuleRef::Builtin(name) => write!(f, "builtin:{name}"),
            ModuleRef::File(path) => write!(f, "{}", path.display()),
        }
    }
}

impl Config {
    /// Reads, parses and validates a config file.
    pub(crate) fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::new("<file>", format!("cannot read {}: {e}", path.display()))
        })?;
        let base_dir = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        Config::parse(&text, &base_dir)
    }

    /// Parses and validates config text; relative module paths resolve against `base_dir`.
    pub(crate) fn parse(text: &str, base_dir: &Path) -> Result<Config, ConfigError> {
        let raw: raw::ConfigRaw = toml::from_str(text).map_err(|e| {
            let key = e
                .message()
                .split('`')
                .nth(1)
                .unwrap_or("<toml>")
                .to_string();
            ConfigError::new(key, e.to_string().trim().replace('\n', " "))
        })?;
        validate::validate(raw, base_dir)
    }
}

#[cfg(test)]
mod tests;
