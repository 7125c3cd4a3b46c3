//! The gateway's TOML configuration: the file format (`raw`), its validation
//! (`validate`) and the checked, ready-to-use form the rest of the gateway reads.
//!
//! Every problem is reported as a [`ConfigError`] naming the key (`connectors[1].target_url`)
//! and the reason; unknown keys are errors. The gateway refuses to start on any of them.

mod raw;
mod slug;
mod validate;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use raw::{HintsRaw as Hints, ServerRuleRaw as ServerRule};
pub use slug::slugify;

/// A configuration problem: which key, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid config: {key}: {reason}")]
pub struct ConfigError {
    pub key: String,
    pub reason: String,
}

impl ConfigError {
    pub fn new(key: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: Server,
    pub admin: Option<Admin>,
    pub connectors: Vec<Connector>,
    pub agents: Vec<Agent>,
    pub policies: Vec<PolicySpec>,
    pub quota: crate::quota::QuotaSettings,
    pub vault: crate::vault::VaultSettings,
    pub audit: crate::audit::AuditSettings,
    pub telemetry: crate::telemetry::TelemetrySettings,
    /// `[policy_trust]`: required signatures, trusted keys, lock file.
    pub policy_trust: crate::kit::trust::TrustSettings,
    /// Directory relative paths in the file are resolved against.
    pub base_dir: PathBuf,
}

#[derive(Debug, Clone)]
pub struct Server {
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
    /// How long a worker out of work polls for events before it sleeps
    /// (`server.idle_spin_us`; zero: it sleeps at once).
    pub idle_spin: Duration,
    /// Host header values accepted (lowercase, without port). Empty = any host.
    pub allowed_hosts: Vec<String>,
    /// Origins accepted besides those whose host is in `allowed_hosts`.
    pub allowed_origins: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Admin {
    pub listen: SocketAddr,
}

/// Where a connector's upstream credential comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialSource {
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
pub enum CredentialKind {
    /// `Authorization: Bearer <secret>`.
    Bearer,
    /// An OAuth access token, sent as `Authorization: Bearer <token>`.
    OAuth,
    /// The secret as the value of the named header (e.g. `X-API-Key`).
    Header(String),
}

#[derive(Debug, Clone)]
pub struct Connector {
    pub id: String,
    pub name: String,
    pub slug: String,
    pub target_url: String,
    pub credential: Option<CredentialSource>,
    pub disabled_tools: Vec<String>,
    pub timeout: Duration,
    /// Which server-to-client requests are relayed to agents (`relay_requests`).
    pub relay: Relay,
}

/// The server-to-client requests a connector may send to agents through the gateway,
/// each named by the client capability it needs. Not listed: refused with -32601.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Relay {
    /// `sampling/createMessage`.
    pub sampling: bool,
    /// `elicitation/create`.
    pub elicitation: bool,
}

impl Relay {
    /// The values `relay_requests` accepts.
    pub const NAMES: [&'static str; 2] = ["sampling", "elicitation"];

    /// Whether requests needing client capability `name` are relayed.
    pub fn allows(&self, name: &str) -> bool {
        match name {
            "sampling" => self.sampling,
            "elicitation" => self.elicitation,
            _ => false,
        }
    }

    /// Turns relaying of capability `name` on; `false` for a name not in [`Self::NAMES`].
    pub fn enable(&mut self, name: &str) -> bool {
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
pub struct Agent {
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
pub enum PolicyMode {
    /// Denials are enforced.
    Enforce,
    /// Evaluated and logged; nothing is enforced.
    Monitor,
}

/// What happens when a policy traps, times out or exhausts its memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnError {
    Deny,
    Allow,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PolicySpec {
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
pub enum ModuleRef {
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
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
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
    pub fn parse(text: &str, base_dir: &Path) -> Result<Config, ConfigError> {
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

    pub fn connector(&self, id: &str) -> Option<&Connector> {
        self.connectors.iter().find(|c| c.id == id)
    }

    /// Connectors by slug, for routing prefixed names.
    pub fn connectors_by_slug(&self) -> HashMap<&str, &Connector> {
        self.connectors
            .iter()
            .map(|c| (c.slug.as_str(), c))
            .collect()
    }
}

#[cfg(test)]
mod tests;
