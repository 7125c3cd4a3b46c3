//! The `portcullis` command line (clap): `serve`, `reload`, `keys`, `connectors`, `agents`,
//! `config check`, `audit query`, `vault`. Each subcommand is a small function here; the work
//! lives in the library modules.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};

use crate::config::Config;
use crate::logging::LogFormat;
use crate::policy::PolicyEngine;

#[derive(Parser)]
#[command(
    name = "portcullis",
    version,
    about = "A governance gateway for MCP servers, with WebAssembly policies"
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        #[arg(long, short, env = "PORTCULLIS_CONFIG")]
        config: PathBuf,
        #[arg(long, value_enum, default_value = "text")]
        log_format: LogFormat,
    },
    /// API keys for agents.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Connector operations on a running gateway: refresh lists, review and decide
    /// tools held by pinning.
    Connectors {
        #[command(subcommand)]
        command: ConnectorsCommand,
    },
    /// Make a running gateway reload its config file now (through its admin
    /// listener); prints what changed, or why the reload failed and the last good
    /// config stays.
    Reload {
        /// The gateway's config (its `[admin] listen` address is used; the gateway
        /// re-reads the file it was started with).
        #[arg(long, short, env = "PORTCULLIS_CONFIG")]
        config: PathBuf,
    },
    /// Agent operations.
    Agents {
        #[command(subcommand)]
        command: AgentsCommand,
    },
    /// Config file operations.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// The encrypted credential vault (connector secrets; see the `[vault]` section).
    Vault {
        #[command(subcommand)]
        command: VaultCommand,
    },
    /// The audit log (`request_logs` in the configured sink).
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Policy kit: scaffold, build, test, inspect, annotate, sign, verify and lock policies.
    Policy {
        #[command(subcommand)]
        command: crate::kit::PolicyCommand,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Print a fresh random API key and the sha256 to put in the config.
    New,
}

#[derive(Subcommand)]
enum ConnectorsCommand {
    /// Drop the cached tool lists so they are fetched again (all, or one connector).
    Refresh {
        /// The gateway config (its `[admin] listen` address is used).
        #[arg(long, short, env = "PORTCULLIS_CONFIG")]
        config: PathBuf,
        /// Only this connector id.
        id: Option<String>,
    },
    /// Tools held by tool pinning (new or changed upstream since approval) and pins
    /// of tools gone upstream, with diffs.
    Pending {
        #[arg(long, short, env = "PORTCULLIS_CONFIG")]
        config: PathBuf,
        /// Only this connector id.
        id: Option<String>,
        /// Print the gateway's JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Pin the current definitions of held tools (all of the connector's, or the
    /// named ones; naming a gone tool forgets its pin). Takes effect at once.
    Approve {
        #[arg(long, short, env = "PORTCULLIS_CONFIG")]
        config: PathBuf,
        id: String,
        tools: Vec<String>,
    },
    /// Keep held tools withheld and stop reporting them until they change again.
    Reject {
        #[arg(long, short, env = "PORTCULLIS_CONFIG")]
        config: PathBuf,
        id: String,
        tools: Vec<String>,
    },
}

#[derive(Subcommand)]
enum AgentsCommand {
    /// Which connectors (and how many of their tools) an agent may use under the
    /// configured policy chain. Contacts the upstreams to read their tool lists.
    Eligible {
        #[arg(long, short, env = "PORTCULLIS_CONFIG")]
        config: PathBuf,
        agent: String,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a config file and load its policies, then exit.
    Check {
        #[arg(long, short, env = "PORTCULLIS_CONFIG")]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Print audit rows from the configured sink: the newest `--limit` that match,
    /// oldest first.
    Query {
        #[arg(long, short, env = "PORTCULLIS_CONFIG")]
        config: PathBuf,
        #[arg(long)]
        org: Option<String>,
        #[arg(long)]
        agent: Option<String>,
        /// Connector id.
        #[arg(long)]
        connector: Option<String>,
        /// Audited status (200, 401, 403, 404, 429, 500, 502, 504, ...).
        #[arg(long)]
        status: Option<u16>,
        /// RFC 3339 time, Unix milliseconds, or a duration before now (30m, 1h, 7d).
        #[arg(long)]
        since: Option<String>,
        /// At most this many rows (0: all).
        #[arg(long, default_value_t = 100)]
        limit: usize,
        #[arg(long, value_enum, default_value = "table")]
        format: QueryFormat,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum QueryFormat {
    Table,
    Json,
}

#[derive(Subcommand)]
enum VaultCommand {
    /// Store (or replace) a secret. The value is read from standard input, never from
    /// the command line; one trailing newline is removed.
    Put {
        #[arg(long, short, env = "PORTCULLIS_CONFIG")]
        config: PathBuf,
        name: String,
    },
    /// List the secrets' names and dates (never their values).
    List {
        #[arg(long, short, env = "PORTCULLIS_CONFIG")]
        config: PathBuf,
    },
    /// Delete a secret.
    Rm {
        #[arg(long, short, env = "PORTCULLIS_CONFIG")]
        config: PathBuf,
        name: String,
    },
    /// Re-wrap every data key under the KMS key the config names now (for `local`, a
    /// new master key file is made). Secrets are unchanged: to move to a new AWS KMS
    /// key, change `vault.kms.key_id` in the config and run this.
    Rotate {
        #[arg(long, short, env = "PORTCULLIS_CONFIG")]
        config: PathBuf,
    },
}

pub fn run() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve { config, log_format } => {
            let _log = crate::logging::init(log_format);
            crate::serve::run(&config)
        }
        Command::Keys {
            command: KeysCommand::New,
        } => {
            let (key, hash) = crate::auth::new_key();
            println!("api key:    {key}");
            println!("key_sha256: {hash}");
            eprintln!("Give the key to the agent; put only key_sha256 in the config.");
            Ok(())
        }
        Command::Connectors { command } => connectors(command),
        Command::Reload { config } => reload(&config),
        Command::Agents {
            command: AgentsCommand::Eligible { config, agent },
        } => {
            let _log = crate::logging::init(LogFormat::Text);
            eligible(&config, &agent)
        }
        Command::Config {
            command: ConfigCommand::Check { config },
        } => check(&config),
        Command::Vault { command } => {
            let _log = crate::logging::init(LogFormat::Text);
            vault(command)
        }
        Command::Audit { command } => audit(command),
        Command::Policy { command } => crate::kit::run(command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn check(path: &Path) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    let engine = PolicyEngine::with_trust(&config.policies, config.policy_trust.clone())?;
    let chain = engine.current();
    println!(
        "config ok: {} connectors, {} agents, policy chain {} (digest {})",
        config.connectors.len(),
        config.agents.len(),
        chain.names,
        chain.digest
    );
    for p in chain.policies() {
        println!(
            "  policy {} {} sha256:{} mode={:?} on_error={:?}",
            p.name, p.spec.module, p.module.digest, p.spec.mode, p.spec.on_error
        );
    }
    Ok(())
}

fn connectors(command: ConnectorsCommand) -> anyhow::Result<()> {
    match command {
        ConnectorsCommand::Refresh { config, id } => {
            let query = id
                .map(|i| format!("?id={}", encode(&i)))
                .unwrap_or_default();
            let body = admin_call(
                &config,
                "POST",
                &format!("/admin/connectors/refresh{query}"),
            )?;
            println!("{body}");
        }
        ConnectorsCommand::Pending { config, id, json } => {
            let query = id
                .map(|i| format!("?id={}", encode(&i)))
                .unwrap_or_default();
            let body = admin_call(&config, "GET", &format!("/admin/connectors/pending{query}"))?;
            if json {
                println!("{body}");
            } else {
                print!("{}", pending_text(&body)?);
            }
        }
        ConnectorsCommand::Approve { config, id, tools } => {
            decide(&config, "approve", &id, &tools)?
        }
        ConnectorsCommand::Reject { config, id, tools } => decide(&config, "reject", &id, &tools)?,
    }
    Ok(())
}

fn decide(config: &Path, verb: &str, id: &str, tools: &[String]) -> anyhow::Result<()> {
    let mut query = format!("?id={}", encode(id));
    for t in tools {
        query.push_str(&format!("&tool={}", encode(t)));
    }
    let body = admin_call(config, "POST", &format!("/admin/connectors/{verb}{query}"))?;
    println!("{body}");
    Ok(())
}

/// `pending`'s JSON as text: one heading per held tool, then its diff.
fn pending_text(body: &str) -> anyhow::Result<String> {
    let v: serde_json::Value = serde_json::from_str(body)?;
    let items = v["pending"].as_array().cloned().unwrap_or_default();
    let mut out = String::new();
    for u in v["unavailable"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "{}\tunavailable: {}\n",
            u["connector"].as_str().unwrap_or(""),
            u["error"].as_str().unwrap_or("")
        ));
    }
    if items.is_empty() {
        out.push_str("nothing pending\n");
        return Ok(out);
    }
    for i in items {
        let field = |k: &str| i[k].as_str().unwrap_or("").to_string();
        out.push_str(&format!(
            "{}\t{}\t{}\tsha256:{}\n{}\n",
            field("connector"),
            field("tool"),
            field("status"),
            field("sha256"),
            field("diff")
        ));
    }
    Ok(out)
}

/// Percent-encodes a query value.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn reload(path: &Path) -> anyhow::Result<()> {
    let body = admin_call(path, "POST", "/admin/reload")?;
    println!("{body}");
    Ok(())
}

/// Calls the admin listener of the gateway `path` configures; the answer's body, or
/// an error with it when the status is not 200.
fn admin_call(path: &Path, method: &str, what: &str) -> anyhow::Result<String> {
    let listen = admin_listen(path)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let url = format!("http://{listen}{what}");
        let (status, body) = crate::util::http_call(method, &url).await?;
        if status != 200 {
            // The admin listener's JSON errors carry the reason as text.
            let reason = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_string))
                .unwrap_or_else(|| body.trim().to_string());
            anyhow::bail!("gateway answered {status}: {reason}");
        }
        Ok(body.trim().to_string())
    })
}

/// The `[admin] listen` address of a config file, read from its TOML alone: a file
/// the gateway would refuse (the reason to reload it) still names its admin listener.
fn admin_listen(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    let doc: toml::Table = text
        .parse()
        .map_err(|e| anyhow::anyhow!("{}: not TOML: {e}", path.display()))?;
    doc.get("admin")
        .and_then(|a| a.get("listen"))
        .and_then(|l| l.as_str())
        .map(str::to_string)
        .ok_or_else(|| {
            anyhow::anyhow!("the config has no [admin] listen address to reach the gateway at")
        })
}

fn eligible(path: &Path, agent: &str) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    let engine = Arc::new(PolicyEngine::with_trust(
        &config.policies,
        config.policy_trust.clone(),
    )?);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let gw = crate::gateway::Gateway::for_inspection(config, engine)?;
        let report = gw.eligibility(agent).await?;
        print!("{report}");
        Ok(())
    })
}

fn audit(command: AuditCommand) -> anyhow::Result<()> {
    let AuditCommand::Query {
        config,
        org,
        agent,
        connector,
        status,
        since,
        limit,
        format,
    } = command;
    let config = Config::load(&config)?;
    let since_ms = since
        .map(|s| crate::audit::time::parse_since(&s, crate::audit::now_ms()))
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let filter = crate::audit::query::Filter {
        org,
        agent,
        connector,
        status,
        since_ms,
        limit,
    };
    let format = match format {
        QueryFormat::Table => crate::audit::query::Format::Table,
        QueryFormat::Json => crate::audit::query::Format::Json,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let rows = rt.block_on(crate::audit::query::query(&config.audit, &filter))?;
    print!("{}", crate::audit::query::render(&rows, format));
    Ok(())
}

fn vault(command: VaultCommand) -> anyhow::Result<()> {
    use crate::config::vault_settings_from_file as settings_from_file;
    use crate::vault::Vault;
    let config = match &command {
        VaultCommand::Put { config, .. }
        | VaultCommand::List { config }
        | VaultCommand::Rm { config, .. }
        | VaultCommand::Rotate { config } => config,
    };
    let vault = Vault::open(&settings_from_file(config)?);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match command {
        VaultCommand::Put { name, .. } => {
            let secret = read_secret()?;
            let replaced = rt.block_on(vault.put(&name, &secret))?;
            let verb = if replaced { "replaced" } else { "stored" };
            println!(
                "{verb} secret {name} in {} (kms {})",
                vault.path().display(),
                vault.kms_provider()
            );
        }
        VaultCommand::List { .. } => {
            let list = vault.list()?;
            if list.is_empty() {
                println!("no secrets in {}", vault.path().display());
            }
            for s in list {
                println!(
                    "{}\tkms={} key={} created={} rotated={}",
                    s.name,
                    s.kms,
                    s.key_id,
                    s.created,
                    s.rotated.as_deref().unwrap_or("-")
                );
            }
        }
        VaultCommand::Rm { name, .. } => {
            if !vault.remove(&name)? {
                anyhow::bail!("no secret {name:?} in {}", vault.path().display());
            }
            println!("removed secret {name}");
        }
        VaultCommand::Rotate { .. } => {
            let n = rt.block_on(vault.rotate())?;
            println!(
                "re-wrapped {n} data key(s) in {} (kms {})",
                vault.path().display(),
                vault.kms_provider()
            );
        }
    }
    Ok(())
}

/// The secret from standard input, one trailing newline (`\n` or `\r\n`) removed.
fn read_secret() -> anyhow::Result<zeroize::Zeroizing<String>> {
    use std::io::{IsTerminal, Read};
    let mut stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprintln!("Type or paste the secret, then press Enter and Ctrl-D:");
    }
    // Reserved up front so that reading does not leave reallocated copies behind.
    let mut bytes = zeroize::Zeroizing::new(Vec::with_capacity(64 * 1024));
    stdin.read_to_end(&mut bytes)?;
    if bytes.last() == Some(&b'\n') {
        bytes.pop();
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
    }
    let Ok(text) = std::str::from_utf8(&bytes) else {
        anyhow::bail!("the secret on standard input is not UTF-8 text");
    };
    if text.is_empty() {
        anyhow::bail!("no secret on standard input");
    }
    if http::HeaderValue::from_str(text).is_err() {
        anyhow::bail!(
            "the secret contains characters that cannot be sent in an HTTP header (control characters or newlines)"
        );
    }
    Ok(zeroize::Zeroizing::new(text.to_string()))
}
