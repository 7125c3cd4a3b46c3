//! The policy kit: `portcullis policy ...` for people who write, review and ship
//! policies.
//!
//! - `scaffold`: `policy new NAME --lang rust|js|python` (a project that builds as is).
//! - `build`: `policy build [DIR]` (cargo / componentize-js / componentize-py, then
//!   embeds metadata).
//! - `fixtures`: `policy test MODULE FIXTURES` (offline decision tests, a pass/fail
//!   table, non-zero exit on failure).
//! - `inspect` + `metadata`: `policy inspect MODULE`, `policy annotate MODULE ...`.
//! - `sign`: `policy keygen`, `policy sign`, `policy verify` (ed25519, `MODULE.sig`).
//! - `policy lock` writes the lock file of `[policy_trust]`, whose checks (and
//!   signature verification) are the gateway's own, in `policy::trust` and
//!   `policy::signature`: the kit uses them, never the other way.

pub(crate) mod build;
pub(crate) mod fixtures;
pub(crate) mod inspect;
pub(crate) mod metadata;
pub(crate) mod scaffold;
pub(crate) mod sign;

use std::path::{Path, PathBuf};

use clap::Subcommand;

use crate::config::{Config, ModuleRef};

#[derive(Subcommand)]
pub(crate) enum PolicyCommand {
    /// Create a policy project (allow-all policy, WIT copy, manifest, fixtures, README).
    New {
        /// Policy name (a-z, 0-9, '-', '_'): the package and file name.
        name: String,
        #[arg(long, value_enum)]
        lang: build::Lang,
        /// Directory to create (default: ./NAME).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Rust only: the guest SDK directory (default: $PORTCULLIS_SDK, else the
        /// source tree this binary was built from).
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
    /// Build a policy project to a component and embed its metadata.
    Build {
        /// The project directory (with portcullis-policy.toml).
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Output file (default: the manifest's build.out, else dist/NAME.wasm).
        #[arg(long, short)]
        out: Option<PathBuf>,
    },
    /// Run offline decision tests (TOML or YAML fixtures); exits 1 if any fails.
    ///
    /// Fixtures give the caller (`[identity]`), the connector and its tools
    /// (`[connector]`), the policy's `settings`, and cases: `[[calls]]` (check-call:
    /// tool, arguments, expect = allow|deny, code, message, reason), `[[lists]]`
    /// (filter-tools: visible), `[[results]]` (check-result: tool, result,
    /// expect = pass|replace|deny, contains, not_contains, replaced) and `[[validate]]`
    /// (settings, expect = ok|error, error). See docs/writing-a-policy.md.
    Test {
        module: PathBuf,
        fixtures: PathBuf,
        /// Also time the module: load time, and the mean cost of a check-call over
        /// this many extra rounds of the [[calls]] cases.
        #[arg(long, value_name = "ROUNDS")]
        bench: Option<usize>,
    },
    /// Show a component's world and version, metadata, sha256, size and imports.
    Inspect {
        module: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Also compile and link it the way the gateway does.
        #[arg(long)]
        check: bool,
    },
    /// Write (or update) the metadata section of a component, in place.
    Annotate {
        module: PathBuf,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        version: Option<String>,
        #[arg(long)]
        author: Option<String>,
        #[arg(long)]
        description: Option<String>,
        #[arg(long)]
        source: Option<String>,
        #[arg(long)]
        license: Option<String>,
    },
    /// Make an ed25519 key pair: OUT.key (secret, mode 0600) and OUT.pub.
    Keygen {
        #[arg(long, default_value = "portcullis-policy")]
        out: PathBuf,
        #[arg(long)]
        force: bool,
    },
    /// Sign a component: writes MODULE.sig beside it.
    Sign {
        module: PathBuf,
        #[arg(long)]
        key: PathBuf,
    },
    /// Verify MODULE.sig against one or more trusted public keys (hex or .pub files).
    Verify {
        module: PathBuf,
        #[arg(long = "pubkey", required = true)]
        pubkeys: Vec<String>,
    },
    /// Write the lock file pinning the sha256 of every file policy of a config.
    Lock {
        #[arg(long, short, env = "PORTCULLIS_CONFIG")]
        config: PathBuf,
        /// Lock file to write (default: [policy_trust] lock_file, else policies.lock
        /// beside the config).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// Runs a `policy` subcommand.
pub(crate) fn run(cmd: PolicyCommand) -> anyhow::Result<()> {
    match cmd {
        PolicyCommand::New {
            name,
            lang,
            dir,
            sdk,
        } => {
            let dir = scaffold::new_project(&name, lang, dir.as_deref(), sdk.as_deref())?;
            println!(
                "created {} policy project {name} in {}",
                lang.as_str(),
                dir.display()
            );
            println!("next: portcullis policy build {}", dir.display());
            Ok(())
        }
        PolicyCommand::Build { dir, out } => {
            let built = build::build(&dir, out.as_deref())?;
            println!(
                "built {} ({} bytes, sha256 {}) in {:.1} s",
                built.path.display(),
                built.size,
                built.sha256,
                built.seconds
            );
            Ok(())
        }
        PolicyCommand::Test {
            module,
            fixtures,
            bench,
        } => {
            let fx = fixtures::Fixtures::load(&fixtures)?;
            let (rows, timing) = fixtures::run_timed(&module, &fx, bench.unwrap_or(0))?;
            print!("{}", fixtures::render(&rows));
            if bench.is_some() {
                println!(
                    "load (compile, link, validate-settings): {:.1} ms",
                    timing.load.as_secs_f64() * 1e3
                );
                if let Some(t) = timing.per_call {
                    println!(
                        "check-call: {:.1} µs mean over {} evaluations (fresh instance each)",
                        t.as_secs_f64() * 1e6,
                        timing.samples
                    );
                }
            }
            if rows.iter().any(|r| !r.pass) {
                use std::io::Write;
                let _ = std::io::stdout().flush();
                std::process::exit(1);
            }
            Ok(())
        }
        PolicyCommand::Inspect {
            module,
            json,
            check,
        } => inspect_cmd(&module, json, check),
        PolicyCommand::Annotate {
            module,
            name,
            version,
            author,
            description,
            source,
            license,
        } => {
            let bytes = read(&module)?;
            let mut meta = metadata::read(&bytes)?.unwrap_or_default();
            let update = metadata::Metadata {
                name,
                version,
                author,
                description,
                source,
                license,
                ..Default::default()
            };
            if update == metadata::Metadata::default() {
                anyhow::bail!(
                    "nothing to write: pass --name, --version, --author, --description, --source or --license"
                );
            }
            meta.merge(update);
            let out = metadata::write(&bytes, &meta)?;
            write_atomic(&module, &out)?;
            println!(
                "annotated {} (sha256 {}); sign it again if it was signed",
                module.display(),
                crate::digest::sha256_hex(&out)
            );
            Ok(())
        }
        PolicyCommand::Keygen { out, force } => {
            let (key, public, hex) = sign::keygen(&out, force)?;
            println!("secret key: {} (keep it private)", key.display());
            println!("public key: {}", public.display());
            println!("trusted_keys entry: \"{hex}\"");
            Ok(())
        }
        PolicyCommand::Sign { module, key } => {
            let key = sign::load_secret_key(&key)?;
            let (path, file) = sign::sign(&module, &key)?;
            println!(
                "signed {} (sha256 {}) with key {}: {}",
                module.display(),
                file.sha256,
                file.public_key,
                path.display()
            );
            Ok(())
        }
        PolicyCommand::Verify { module, pubkeys } => {
            let keys = pubkeys
                .iter()
                .map(|k| sign::load_public_key(k))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let bytes = read(&module)?;
            let signer = crate::policy::signature::verify(&module, &bytes, &keys)
                .map_err(|e| anyhow::anyhow!("{}: {e}", module.display()))?;
            println!(
                "signature ok: {} (sha256 {}) signed by {signer}",
                module.display(),
                crate::digest::sha256_hex(&bytes)
            );
            Ok(())
        }
        PolicyCommand::Lock { config, out } => {
            let cfg = Config::load(&config)?;
            let path = out
                .or(cfg.policy_trust.lock_file.clone())
                .unwrap_or_else(|| cfg.base_dir.join("policies.lock"));
            let mut entries = Vec::new();
            for p in &cfg.policies {
                if let ModuleRef::File(f) = &p.module {
                    let bytes = read(f)?;
                    entries.push((f.clone(), crate::digest::sha256_hex(&bytes)));
                }
            }
            let lock = crate::policy::trust::LockFile::write(&path, &entries)?;
            println!(
                "wrote {} ({} modules pinned)",
                path.display(),
                lock.modules.len()
            );
            for (k, v) in &lock.modules {
                println!("  {k} = {v}");
            }
            Ok(())
        }
    }
}

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))
}

/// Replaces `path` by writing a sibling file and renaming it (a watching gateway
/// never sees a half-written module).
fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut tmp = path.as_os_str().to_os_string();
    tmp.push(format!(".tmp-{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, bytes).map_err(|e| anyhow::anyhow!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(())
}

fn inspect_cmd(module: &Path, json: bool, check: bool) -> anyhow::Result<()> {
    let bytes = read(module)?;
    let report = inspect::inspect(&bytes)?;
    let sig_path = crate::policy::signature::sig_path(module);
    let signature = match std::fs::read_to_string(&sig_path)
        .ok()
        .and_then(|t| toml::from_str::<crate::policy::signature::SignatureFile>(&t).ok())
    {
        None if !sig_path.exists() => "none".to_string(),
        None => format!("{} (unreadable)", sig_path.display()),
        Some(f) if f.sha256.eq_ignore_ascii_case(&report.sha256) => format!(
            "{} by key {} (digest matches; `policy verify` checks the key)",
            sig_path.display(),
            f.public_key
        ),
        Some(f) => format!(
            "{} does NOT match this module (it signs sha256 {})",
            sig_path.display(),
            f.sha256
        ),
    };
    let linked = if check {
        let started = std::time::Instant::now();
        let runtime = crate::policy::Runtime::new()?;
        Some(
            runtime
                .load(&bytes)
                .map(|_| started.elapsed())
                .map_err(|e| format!("{e:#}")),
        )
    } else {
        None
    };
    if json {
        let mut v = report.to_json();
        v["path"] = module.display().to_string().into();
        v["signature"] = signature.into();
        if let Some(l) = &linked {
            v["gateway_check"] = match l {
                Ok(t) => serde_json::json!({"ok": true, "compile_ms": t.as_millis() as u64}),
                Err(e) => serde_json::json!({"ok": false, "error": e}),
            };
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print!("{}", inspect::render(module, &report, &signature));
        match &linked {
            Some(Ok(t)) => println!(
                "{:<11}compiled and linked like the gateway does ({} ms)",
                "check:",
                t.as_millis()
            ),
            Some(Err(e)) => println!("{:<11}the gateway would refuse it: {e}", "check:"),
            None => {}
        }
    }
    if let Some(Err(e)) = linked {
        anyhow::bail!("the gateway would refuse {}: {e}", module.display());
    }
    Ok(())
}
