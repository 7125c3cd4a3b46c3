//! The `portcullis` command line (clap): `serve`, `keys`, `connectors`, `agents`,
//! `config check`. Each subcommand is a small function here; the work lives in the
//! library modules.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};

use crate::config::Config;
use crate::policy::PolicyEngine;

#[derive(Parser)]
#[command(
    name = "portcullis",
    version,
    about = "A governance gateway for MCP servers, with WebAssembly policies"
)]
pub struct Cli {
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
    /// Connector operations on a running gateway.
    Connectors {
        #[command(subcommand)]
        command: ConnectorsCommand,
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

#[derive(Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

pub fn run() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve { config, log_format } => {
            crate::logging::init(log_format);
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
        Command::Connectors {
            command: ConnectorsCommand::Refresh { config, id },
        } => refresh(&config, id),
        Command::Agents {
            command: AgentsCommand::Eligible { config, agent },
        } => {
            crate::logging::init(LogFormat::Text);
            eligible(&config, &agent)
        }
        Command::Config {
            command: ConfigCommand::Check { config },
        } => check(&config),
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
    let engine = PolicyEngine::new(&config.policies)?;
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

fn refresh(path: &Path, id: Option<String>) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    let admin = config.admin.ok_or_else(|| {
        anyhow::anyhow!("the config has no [admin] listen address to reach the gateway at")
    })?;
    let query = id.map(|i| format!("?id={i}")).unwrap_or_default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let url = format!("http://{}/admin/connectors/refresh{query}", admin.listen);
        let (status, body) = crate::util::http_post(&url).await?;
        if status != 200 {
            anyhow::bail!("gateway answered {status}: {}", body.trim());
        }
        println!("{}", body.trim());
        Ok(())
    })
}

fn eligible(path: &Path, agent: &str) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    let engine = Arc::new(PolicyEngine::new(&config.policies)?);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let gw = crate::gateway::Gateway::new(config, engine, crate::audit::AuditLog::new())?;
        let report = gw.eligibility(agent).await?;
        print!("{report}");
        Ok(())
    })
}
