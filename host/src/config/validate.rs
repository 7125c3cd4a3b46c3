//! Turns the raw file into a [`Config`], checking every value and naming the key of
//! the first problem found.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use super::raw::{ConfigRaw, ConnectorRaw, CredentialRaw, PolicyRaw, ServerRaw};
use super::{
    Admin, Agent, Config, ConfigError, Connector, CredentialKind, CredentialSource, ModuleRef,
    OnError, PolicyMode, PolicySpec, Relay, Server, ToolPinning, slugify,
};

/// The longest `server.idle_spin_us`: a millisecond of polling per sleep already costs
/// a lightly loaded worker more CPU than it saves.
const MAX_IDLE_SPIN_US: u64 = 1000;
/// `server.max_sessions_per_agent` when the config leaves it out (or `max_sessions`,
/// when that is smaller).
const DEFAULT_MAX_SESSIONS_PER_AGENT: u64 = 10_000;

pub(super) fn validate(raw: ConfigRaw, base_dir: &Path) -> Result<Config, ConfigError> {
    let server = server(raw.server)?;
    let admin = match raw.admin {
        Some(a) => {
            let listen = socket_addr("admin.listen", &a.listen)?;
            let (allowed_hosts, allowed_origins) =
                host_rules("admin", listen, a.allowed_hosts, &a.allowed_origins)?;
            Some(Admin {
                listen,
                allowed_hosts,
                allowed_origins,
            })
        }
        None => None,
    };

    let mut connectors = Vec::with_capacity(raw.connectors.len());
    let mut ids = HashSet::new();
    let mut slugs = HashSet::new();
    for (i, c) in raw.connectors.into_iter().enumerate() {
        let key = |field: &str| format!("connectors[{i}].{field}");
        let c = connector(c, base_dir, &key)?;
        if !ids.insert(c.id.clone()) {
            return Err(ConfigError::new(
                key("id"),
                format!("duplicate connector id {:?}", c.id),
            ));
        }
        if !slugs.insert(c.slug.clone()) {
            return Err(ConfigError::new(
                key("name"),
                format!(
                    "slug {:?} is already used by another connector; choose a distinct name",
                    c.slug
                ),
            ));
        }
        connectors.push(c);
    }

    let mut agents = Vec::with_capacity(raw.agents.len());
    let mut agent_ids = HashSet::new();
    let mut key_hashes = HashSet::new();
    for (i, a) in raw.agents.into_iter().enumerate() {
        let key = |field: &str| format!("agents[{i}].{field}");
        non_empty_ident(&key("id"), &a.id)?;
        non_empty_ident(&key("org"), &a.org)?;
        if !agent_ids.insert(a.id.clone()) {
            return Err(ConfigError::new(
                key("id"),
                format!("duplicate agent id {:?}", a.id),
            ));
        }
        let hash = parse_sha256(&a.key_sha256).ok_or_else(|| {
            ConfigError::new(
                key("key_sha256"),
                "must be 64 hex digits (sha256 of the API key; see `portcullis keys new`)",
            )
        })?;
        if !key_hashes.insert(hash) {
            return Err(ConfigError::new(
                key("key_sha256"),
                "the same API key is configured for two agents",
            ));
        }
        for (j, s) in a.scopes.iter().enumerate() {
            if s.trim().is_empty() || s.chars().any(char::is_whitespace) {
                return Err(ConfigError::new(
                    format!("agents[{i}].scopes[{j}]"),
                    "a scope is a non-empty word without spaces",
                ));
            }
        }
        if let Some(rules) = &a.mcp_servers {
            for (j, r) in rules.iter().enumerate() {
                if r.url.is_empty() {
                    return Err(ConfigError::new(
                        format!("agents[{i}].mcp_servers[{j}].url"),
                        "must not be empty (use \"*\" for any server)",
                    ));
                }
                let required = r.tools.as_ref().and_then(|t| t.required.as_ref());
                if required.is_some_and(Vec::is_empty) {
                    return Err(ConfigError::new(
                        format!("agents[{i}].mcp_servers[{j}].tools.required"),
                        "must not be empty: omit it (or use [\"*\"]) to allow every tool name",
                    ));
                }
            }
        }
        agents.push(Agent {
            id: a.id,
            org: a.org,
            key_sha256: hash,
            scopes: a.scopes,
            mcp_servers: a.mcp_servers,
        });
    }

    let mut policies = Vec::with_capacity(raw.policies.len());
    let mut names = HashSet::new();
    for (i, p) in raw.policies.into_iter().enumerate() {
        let p = policy(p, i, base_dir)?;
        if !names.insert(p.name.clone()) {
            return Err(ConfigError::new(
                format!("policies[{i}].name"),
                format!("duplicate policy name {:?}", p.name),
            ));
        }
        policies.push(p);
    }

    let quota = super::quota::validate(raw.quota, raw.orgs)?;
    let vault = super::vault::validate(raw.vault, base_dir)?;
    let audit = super::audit::validate(raw.audit, base_dir)?;
    let telemetry = super::telemetry::validate(raw.telemetry)?;
    let policy_trust = super::trust::validate(raw.policy_trust, base_dir)?;
    let state = super::state::validate(raw.state, base_dir)?;
    Ok(Config {
        server,
        admin,
        connectors,
        agents,
        policies,
        quota,
        vault,
        audit,
        telemetry,
        policy_trust,
        state,
        base_dir: base_dir.to_path_buf(),
    })
}

fn server(s: ServerRaw) -> Result<Server, ConfigError> {
    let listen = socket_addr("server.listen", &s.listen)?;
    let sep = &s.tool_separator;
    if sep.is_empty() || sep.len() > 4 || !sep.chars().all(|c| c == '.' || c == '_') {
        return Err(ConfigError::new(
            "server.tool_separator",
            "must be 1 to 4 characters, each '.' or '_' (e.g. \".\" or \"__\"), so it never occurs inside a slug",
        ));
    }
    if s.max_body_bytes < 1024 {
        return Err(ConfigError::new(
            "server.max_body_bytes",
            "must be at least 1024",
        ));
    }
    if s.list_page_size == 0 {
        return Err(ConfigError::new(
            "server.list_page_size",
            "must be at least 1",
        ));
    }
    if s.session_idle_secs == 0 {
        return Err(ConfigError::new(
            "server.session_idle_secs",
            "must be at least 1",
        ));
    }
    if s.max_sessions == 0 {
        return Err(ConfigError::new(
            "server.max_sessions",
            "must be at least 1",
        ));
    }
    let max_sessions_per_agent = match s.max_sessions_per_agent {
        None => s.max_sessions.min(DEFAULT_MAX_SESSIONS_PER_AGENT),
        Some(0) => {
            return Err(ConfigError::new(
                "server.max_sessions_per_agent",
                "must be at least 1",
            ));
        }
        Some(n) if n > s.max_sessions => {
            return Err(ConfigError::new(
                "server.max_sessions_per_agent",
                format!("must not exceed server.max_sessions ({})", s.max_sessions),
            ));
        }
        Some(n) => n,
    };
    let workers = match s.workers {
        None => std::thread::available_parallelism().map_or(1, usize::from),
        Some(n @ 1..=1024) => n as usize,
        Some(_) => {
            return Err(ConfigError::new(
                "server.workers",
                "must be between 1 and 1024",
            ));
        }
    };
    if !(1..=3600).contains(&s.header_read_timeout_secs) {
        return Err(ConfigError::new(
            "server.header_read_timeout_secs",
            "must be between 1 and 3600",
        ));
    }
    if !(1..=3600).contains(&s.body_read_timeout_secs) {
        return Err(ConfigError::new(
            "server.body_read_timeout_secs",
            "must be between 1 and 3600 (seconds)",
        ));
    }
    for (key, value) in [
        (
            "server.max_connections_per_agent",
            s.max_connections_per_agent,
        ),
        ("server.max_requests_per_agent", s.max_requests_per_agent),
        ("server.max_streams_per_agent", s.max_streams_per_agent),
    ] {
        if value == 0 {
            return Err(ConfigError::new(key, "must be at least 1"));
        }
    }
    if s.idle_spin_us > MAX_IDLE_SPIN_US {
        return Err(ConfigError::new(
            "server.idle_spin_us",
            format!("must be at most {MAX_IDLE_SPIN_US} (microseconds)"),
        ));
    }
    let (allowed_hosts, allowed_origins) =
        host_rules("server", listen, s.allowed_hosts, &s.allowed_origins)?;
    Ok(Server {
        listen,
        tool_separator: s.tool_separator,
        max_body_bytes: s.max_body_bytes as usize,
        list_page_size: s.list_page_size as usize,
        session_idle: Duration::from_secs(s.session_idle_secs),
        max_sessions: s.max_sessions as usize,
        max_sessions_per_agent: max_sessions_per_agent as usize,
        workers,
        header_read_timeout: Duration::from_secs(s.header_read_timeout_secs),
        body_read_timeout: Duration::from_secs(s.body_read_timeout_secs),
        max_connections_per_agent: s.max_connections_per_agent as usize,
        max_requests_per_agent: s.max_requests_per_agent as usize,
        max_streams_per_agent: s.max_streams_per_agent as usize,
        idle_spin: Duration::from_micros(s.idle_spin_us),
        allowed_hosts,
        allowed_origins,
    })
}

fn connector(
    c: ConnectorRaw,
    base_dir: &Path,
    key: &dyn Fn(&str) -> String,
) -> Result<Connector, ConfigError> {
    non_empty_ident(&key("id"), &c.id)?;
    let slug = slugify(&c.name);
    if slug.is_empty() {
        return Err(ConfigError::new(
            key("name"),
            "must contain at least one ASCII letter or digit (the slug is derived from it)",
        ));
    }
    let transport = super::transport::transport(
        super::transport::TransportRaw {
            transport: c.transport,
            command: c.command,
            args: c.args,
            env: c.env,
            cwd: c.cwd,
            share_process: c.share_process,
            max_processes: c.max_processes,
        },
        c.target_url.is_some(),
        c.credential.is_some(),
        base_dir,
        key,
    )?;
    let target_url = match c.target_url {
        Some(url) => target_url(url, key)?,
        None => format!("stdio://{slug}"),
    };
    let credential = match c.credential {
        None => None,
        Some(CredentialRaw::Env(spec)) => match spec.strip_prefix("env:") {
            Some(var) if !var.is_empty() => {
                if std::env::var_os(var).is_none() {
                    return Err(ConfigError::new(
                        key("credential"),
                        format!("environment variable {var} is not set"),
                    ));
                }
                Some(CredentialSource::Env(var.to_string()))
            }
            _ => {
                return Err(ConfigError::new(
                    key("credential"),
                    "must be \"env:VARIABLE\" or { secret = \"name\", kind = \"bearer\" }; credentials are never written into the config itself",
                ));
            }
        },
        Some(CredentialRaw::Secret(r)) => {
            if r.secret.is_empty() {
                return Err(ConfigError::new(
                    key("credential.secret"),
                    "must name a vault secret",
                ));
            }
            let kind = match (r.kind.as_deref().unwrap_or("bearer"), r.header) {
                ("bearer", None) => CredentialKind::Bearer,
                ("oauth", None) => CredentialKind::OAuth,
                ("header", Some(h)) => {
                    if http::HeaderName::from_bytes(h.as_bytes()).is_err() {
                        return Err(ConfigError::new(
                            key("credential.header"),
                            format!("{h:?} is not a valid header name"),
                        ));
                    }
                    CredentialKind::Header(h)
                }
                ("header", None) => {
                    return Err(ConfigError::new(
                        key("credential.header"),
                        "required with kind = \"header\"",
                    ));
                }
                ("bearer" | "oauth", Some(_)) => {
                    return Err(ConfigError::new(
                        key("credential.header"),
                        "only used with kind = \"header\"",
                    ));
                }
                (other, _) => {
                    return Err(ConfigError::new(
                        key("credential.kind"),
                        format!("{other:?} is not one of \"bearer\", \"oauth\", \"header\""),
                    ));
                }
            };
            Some(CredentialSource::Vault {
                secret: r.secret,
                kind,
            })
        }
    };
    for (field, list) in [
        ("disabled_tools", &c.disabled_tools),
        ("disabled_prompts", &c.disabled_prompts),
        ("disabled_resources", &c.disabled_resources),
    ] {
        if let Some(j) = list.iter().position(String::is_empty) {
            return Err(ConfigError::new(
                format!("{}[{j}]", key(field)),
                "must not be empty",
            ));
        }
    }
    if c.timeout_ms == 0 || c.timeout_ms > 3_600_000 {
        return Err(ConfigError::new(
            key("timeout_ms"),
            "must be between 1 and 3600000",
        ));
    }
    let mut relay = Relay::default();
    for (j, name) in c.relay_requests.iter().enumerate() {
        if !relay.enable(name) {
            return Err(ConfigError::new(
                format!("{}[{j}]", key("relay_requests")),
                format!(
                    "{name:?} is not one of {}",
                    Relay::NAMES.map(|n| format!("\"{n}\"")).join(", ")
                ),
            ));
        }
    }
    if let super::Transport::Stdio(spec) = &transport
        && spec.share_process
        && relay != Relay::default()
    {
        return Err(ConfigError::new(
            key("relay_requests"),
            "cannot be used with share_process = true: a shared process's requests cannot be told apart by agent",
        ));
    }
    let pinning = match c.tool_pinning.as_deref().unwrap_or("first-use") {
        "first-use" => ToolPinning::FirstUse,
        "off" => ToolPinning::Off,
        other => {
            return Err(ConfigError::new(
                key("tool_pinning"),
                format!("{other:?} is not one of \"first-use\", \"off\""),
            ));
        }
    };
    let max_result_bytes = c.max_result_bytes.unwrap_or(16 * 1024 * 1024);
    if !(1024..=1024 * 1024 * 1024).contains(&max_result_bytes) {
        return Err(ConfigError::new(
            key("max_result_bytes"),
            "must be between 1024 and 1073741824",
        ));
    }
    Ok(Connector {
        id: c.id,
        slug,
        target_url,
        transport,
        credential,
        disabled_tools: c.disabled_tools,
        disabled_prompts: c.disabled_prompts,
        disabled_resources: c.disabled_resources,
        timeout: Duration::from_millis(c.timeout_ms),
        relay,
        pinning,
        max_result_bytes: max_result_bytes as usize,
    })
}

/// A connector's `target_url`: an http(s) URL with a host.
fn target_url(url: String, key: &dyn Fn(&str) -> String) -> Result<String, ConfigError> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| ConfigError::new(key("target_url"), format!("not a URL: {e}")))?;
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        _ => {
            return Err(ConfigError::new(
                key("target_url"),
                "must start with http:// or https://",
            ));
        }
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(ConfigError::new(key("target_url"), "has no host"));
    }
    Ok(url)
}

fn policy(p: PolicyRaw, i: usize, base_dir: &Path) -> Result<PolicySpec, ConfigError> {
    let key = |field: &str| format!("policies[{i}].{field}");
    let module = match p.module.strip_prefix("builtin:") {
        Some(name) => {
            if !super::BUILTIN_POLICIES.contains(&name) {
                return Err(ConfigError::new(
                    key("module"),
                    format!(
                        "unknown built-in {name:?}; built-ins are {}",
                        super::BUILTIN_POLICIES.join(", ")
                    ),
                ));
            }
            ModuleRef::Builtin(name.to_string())
        }
        None => {
            if p.module.is_empty() {
                return Err(ConfigError::new(
                    key("module"),
                    "must be builtin:<name> or a path to a .wasm component",
                ));
            }
            ModuleRef::File(base_dir.join(&p.module))
        }
    };
    let name = p.name.unwrap_or_else(|| match &module {
        ModuleRef::Builtin(n) => n.clone(),
        ModuleRef::File(path) => path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default(),
    });
    non_empty_ident(&key("name"), &name)?;
    let mode = match p.mode.as_str() {
        "enforce" => PolicyMode::Enforce,
        "monitor" => PolicyMode::Monitor,
        other => {
            return Err(ConfigError::new(
                key("mode"),
                format!("{other:?} is not one of \"enforce\", \"monitor\""),
            ));
        }
    };
    let on_error = match p.on_error.as_str() {
        "deny" => OnError::Deny,
        "allow" => OnError::Allow,
        other => {
            return Err(ConfigError::new(
                key("on_error"),
                format!("{other:?} is not one of \"deny\", \"allow\""),
            ));
        }
    };
    if p.timeout_ms == 0 || p.timeout_ms > 10_000 {
        return Err(ConfigError::new(
            key("timeout_ms"),
            "must be between 1 and 10000",
        ));
    }
    if p.memory_limit_mb == 0 || p.memory_limit_mb > 4096 {
        return Err(ConfigError::new(
            key("memory_limit_mb"),
            "must be between 1 and 4096",
        ));
    }
    let settings = serde_json::to_string(&p.settings.unwrap_or_default())
        .map_err(|e| ConfigError::new(key("settings"), e.to_string()))?;
    Ok(PolicySpec {
        name,
        module,
        settings,
        mode,
        on_error,
        timeout: Duration::from_millis(p.timeout_ms),
        memory_limit_bytes: (p.memory_limit_mb as usize) << 20,
        cache_decisions: p.cache_decisions,
    })
}

/// A listener's DNS-rebinding rules (`<section>.allowed_hosts`, `.allowed_origins`):
/// the Host names it answers to and the extra Origins it accepts, lowercased.
fn host_rules(
    section: &str,
    listen: SocketAddr,
    hosts: Option<Vec<String>>,
    origins: &[String],
) -> Result<(Vec<String>, Vec<String>), ConfigError> {
    let allowed_hosts = match hosts {
        Some(hosts) => hosts.into_iter().map(|h| h.to_ascii_lowercase()).collect(),
        // A listener bound to loopback answers only to loopback names: this is the
        // DNS-rebinding protection the MCP transport asks for.
        None if listen.ip().is_loopback() => {
            vec!["localhost".into(), "127.0.0.1".into(), "[::1]".into()]
        }
        None => Vec::new(),
    };
    for (i, o) in origins.iter().enumerate() {
        if !(o.starts_with("http://") || o.starts_with("https://")) {
            return Err(ConfigError::new(
                format!("{section}.allowed_origins[{i}]"),
                "an origin looks like https://example.com[:port]",
            ));
        }
    }
    let allowed_origins = origins
        .iter()
        .map(|o| o.trim_end_matches('/').to_ascii_lowercase())
        .collect();
    Ok((allowed_hosts, allowed_origins))
}

fn socket_addr(key: &str, value: &str) -> Result<SocketAddr, ConfigError> {
    value
        .parse()
        .map_err(|_| ConfigError::new(key, format!("{value:?} is not an IP:port address")))
}

fn non_empty_ident(key: &str, value: &str) -> Result<(), ConfigError> {
    if value.is_empty() || value.len() > 128 {
        return Err(ConfigError::new(key, "must be 1 to 128 characters"));
    }
    if !value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
    {
        return Err(ConfigError::new(
            key,
            format!("{value:?} may only contain letters, digits, '_', '-', '.'"),
        ));
    }
    Ok(())
}

fn parse_sha256(hex_str: &str) -> Option<[u8; 32]> {
    let bytes = hex::decode(hex_str.trim()).ok()?;
    bytes.try_into().ok()
}
