//! A connector's upstream transport (`transport`): Streamable HTTP (the default),
//! the 2024-11-05 HTTP+SSE transport, or a stdio program the gateway runs
//! (`command`, `args`, `env`, `cwd`, `share_process`, `max_processes`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use super::ConfigError;

/// How the gateway reaches a connector's upstream server.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) enum Transport {
    /// MCP Streamable HTTP at `target_url`.
    #[default]
    StreamableHttp,
    /// The 2024-11-05 HTTP+SSE transport: a GET event stream at `target_url`
    /// announces the endpoint messages are POSTed to.
    Sse,
    /// A program speaking newline-delimited JSON-RPC on stdin and stdout.
    Stdio(Arc<StdioSpec>),
}

impl Transport {
    /// The name operators write (and policies see).
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Transport::StreamableHttp => "streamable-http",
            Transport::Sse => "sse",
            Transport::Stdio(_) => "stdio",
        }
    }
}

/// The program behind a stdio connector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StdioSpec {
    /// A name looked up in `PATH`, or a path (a relative one resolved against the
    /// config file's directory at load).
    pub command: String,
    pub args: Vec<String>,
    /// Variables set for the program, besides `PATH`, `HOME`, `LANG`, `LC_ALL`,
    /// `TMPDIR` and `USER` passed on from the gateway's own environment (nothing
    /// else is inherited).
    pub env: Vec<(String, EnvSource)>,
    /// The working directory (relative paths are resolved against the config file's).
    pub cwd: Option<PathBuf>,
    /// One process for every agent session (`false`, the default) or one shared by
    /// all of them and the catalog.
    pub share_process: bool,
    /// At most this many processes of this connector run at once; an agent
    /// session holds its process (and slot) until the session ends.
    pub max_processes: usize,
}

/// Where one `env` value of a stdio connector comes from.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum EnvSource {
    /// Written in the config (not for secrets).
    Literal(String),
    /// `env:NAME`: the gateway's environment variable.
    Env(String),
    /// `{ secret = "name" }`: a vault secret, decrypted when the process starts.
    Vault(String),
}

impl std::fmt::Debug for EnvSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EnvSource::Literal(_) => write!(f, "Literal(***)"),
            EnvSource::Env(var) => write!(f, "Env({var:?})"),
            EnvSource::Vault(secret) => write!(f, "Vault({secret:?})"),
        }
    }
}

/// `env = { NAME = "literal" | "env:VAR" | { secret = "name" } }`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum EnvValueRaw {
    Text(String),
    Secret(EnvSecretRaw),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct EnvSecretRaw {
    pub secret: String,
}

/// The transport keys of one `[[connectors]]` table.
pub(super) struct TransportRaw {
    pub transport: Option<String>,
    pub command: Option<String>,
    pub args: Vec<String>,
    pub env: BTreeMap<String, EnvValueRaw>,
    pub cwd: Option<String>,
    pub share_process: Option<bool>,
    pub max_processes: Option<u64>,
}

/// Default of `max_processes`.
const DEFAULT_MAX_PROCESSES: u64 = 64;

/// Validates the transport keys; `has_url` / `has_credential` say whether
/// `target_url` / `credential` were given (stdio takes neither, the others need a URL).
pub(super) fn transport(
    raw: TransportRaw,
    has_url: bool,
    has_credential: bool,
    base_dir: &Path,
    key: &dyn Fn(&str) -> String,
) -> Result<Transport, ConfigError> {
    let name = raw.transport.as_deref().unwrap_or("streamable-http");
    let stdio_only = [
        ("command", raw.command.is_some()),
        ("args", !raw.args.is_empty()),
        ("env", !raw.env.is_empty()),
        ("cwd", raw.cwd.is_some()),
        ("share_process", raw.share_process.is_some()),
        ("max_processes", raw.max_processes.is_some()),
    ];
    let transport = match name {
        "streamable-http" => Transport::StreamableHttp,
        "sse" => Transport::Sse,
        "stdio" => {
            return stdio(raw, has_url, has_credential, base_dir, key).map(Transport::Stdio);
        }
        other => {
            return Err(ConfigError::new(
                key("transport"),
                format!("{other:?} is not one of \"streamable-http\", \"sse\", \"stdio\""),
            ));
        }
    };
    if let Some((field, _)) = stdio_only.iter().find(|(_, given)| *given) {
        return Err(ConfigError::new(
            key(field),
            format!("only used with transport = \"stdio\" (this connector is {name:?})"),
        ));
    }
    if !has_url {
        return Err(ConfigError::new(
            key("target_url"),
            format!("required with transport = {name:?}"),
        ));
    }
    Ok(transport)
}

fn stdio(
    raw: TransportRaw,
    has_url: bool,
    has_credential: bool,
    base_dir: &Path,
    key: &dyn Fn(&str) -> String,
) -> Result<Arc<StdioSpec>, ConfigError> {
    if has_url {
        return Err(ConfigError::new(
            key("target_url"),
            "not used with transport = \"stdio\" (the gateway runs `command`)",
        ));
    }
    if has_credential {
        return Err(ConfigError::new(
            key("credential"),
            "not used with transport = \"stdio\"; pass secrets to the program with env = { NAME = { secret = \"name\" } }",
        ));
    }
    let command = match raw.command {
        Some(c) if !c.trim().is_empty() => c,
        _ => {
            return Err(ConfigError::new(
                key("command"),
                "required with transport = \"stdio\" (the program to run)",
            ));
        }
    };
    let mut env = Vec::with_capacity(raw.env.len());
    for (name, value) in raw.env {
        let field = key(&format!("env.{name}"));
        if name.is_empty() || name.contains('=') || name.contains('\0') {
            return Err(ConfigError::new(field, "is not a valid variable name"));
        }
        let source = match value {
            EnvValueRaw::Secret(s) if s.secret.is_empty() => {
                return Err(ConfigError::new(field, "must name a vault secret"));
            }
            EnvValueRaw::Secret(s) => EnvSource::Vault(s.secret),
            EnvValueRaw::Text(t) => match t.strip_prefix("env:") {
                Some(var) => {
                    if std::env::var_os(var).is_none() {
                        return Err(ConfigError::new(
                            field,
                            format!("environment variable {var} is not set"),
                        ));
                    }
                    EnvSource::Env(var.to_string())
                }
                None => EnvSource::Literal(t),
            },
        };
        env.push((name, source));
    }
    // A path (not a bare name looked up in PATH) is relative to the config file's dir.
    let command = if command.contains('/') && Path::new(&command).is_relative() {
        base_dir.join(&command).to_string_lossy().into_owned()
    } else {
        command
    };
    let cwd = raw.cwd.map(|d| base_dir.join(d));
    if let Some(dir) = &cwd
        && !dir.is_dir()
    {
        return Err(ConfigError::new(
            key("cwd"),
            format!("{} is not a directory", dir.display()),
        ));
    }
    let max_processes = raw.max_processes.unwrap_or(DEFAULT_MAX_PROCESSES);
    let share_process = raw.share_process.unwrap_or(false);
    if !(1..=10_000).contains(&max_processes) {
        return Err(ConfigError::new(
            key("max_processes"),
            "must be between 1 and 10000",
        ));
    }
    if max_processes < 2 && !share_process {
        return Err(ConfigError::new(
            key("max_processes"),
            "must be at least 2 without share_process (the catalog holds one process, each agent session another)",
        ));
    }
    Ok(Arc::new(StdioSpec {
        command,
        args: raw.args,
        env,
        cwd,
        share_process,
        max_processes: max_processes as usize,
    }))
}
