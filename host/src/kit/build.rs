//! `portcullis policy build [DIR]`: builds a policy project to a component and
//! embeds its `[policy]` metadata.
//!
//! The project's `portcullis-policy.toml` says the language and where things are:
//! - rust: `cargo build --release --target wasm32-wasip2` (the `.wasm` is found from
//!   cargo's JSON messages);
//! - js: `componentize-js ENTRY --wit WIT --world-name WORLD -d http fetch-event`
//!   (found in `$COMPONENTIZE_JS`, `node_modules/.bin` of the project or a parent
//!   directory, or `PATH`);
//! - python: `componentize-py -d WIT -w WORLD componentize MODULE` (found in
//!   `$COMPONENTIZE_PY`, `.venv/bin` of the project or a parent directory, or
//!   `PATH`).
//!
//! The component is written next to the output path and renamed over it, so a
//! gateway watching that path swaps the new policy in atomically.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use serde::Deserialize;

use super::metadata::{self, Metadata};

/// The project manifest's file name.
pub(crate) const MANIFEST: &str = "portcullis-policy.toml";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Lang {
    Rust,
    Js,
    Python,
}

impl Lang {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Lang::Rust => "rust",
            Lang::Js => "js",
            Lang::Python => "python",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Manifest {
    pub policy: PolicyMeta,
    #[serde(default)]
    pub build: BuildSection,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PolicyMeta {
    pub name: String,
    pub language: Lang,
    pub version: Option<String>,
    pub description: Option<String>,
    pub author: Option<String>,
    pub license: Option<String>,
    pub source: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BuildSection {
    #[serde(default = "default_wit")]
    pub wit: String,
    #[serde(default = "default_world")]
    pub world: String,
    pub out: Option<String>,
    /// js: the ES module to componentize.
    #[serde(default = "default_entry")]
    pub entry: String,
    /// python: the module to componentize.
    #[serde(default = "default_module")]
    pub module: String,
}

impl Default for BuildSection {
    fn default() -> Self {
        toml::from_str("").expect("build defaults")
    }
}

fn default_wit() -> String {
    "wit".into()
}
fn default_world() -> String {
    "policy".into()
}
fn default_entry() -> String {
    "policy.js".into()
}
fn default_module() -> String {
    "app".into()
}

impl Manifest {
    pub(crate) fn load(dir: &Path) -> anyhow::Result<Manifest> {
        let path = dir.join(MANIFEST);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            anyhow::anyhow!(
                "cannot read {}: {e} (is this a policy project? `portcullis policy new` makes one)",
                path.display()
            )
        })?;
        toml::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e.to_string().trim()))
    }

    /// The metadata `build` embeds: the `[policy]` fields that are set and non-empty.
    pub(crate) fn metadata(&self) -> Metadata {
        let s = |v: &Option<String>| v.clone().filter(|s| !s.trim().is_empty());
        let p = &self.policy;
        Metadata {
            name: Some(p.name.clone()),
            version: s(&p.version),
            author: s(&p.author),
            description: s(&p.description),
            source: s(&p.source),
            license: s(&p.license),
            language: Some(p.language.as_str().to_string()),
            extra: Default::default(),
        }
    }
}

/// What a build produced.
#[derive(Debug)]
pub(crate) struct Built {
    pub path: PathBuf,
    pub size: usize,
    pub sha256: String,
    pub seconds: f64,
}

/// Finds a tool: `$ENV_VAR`, `<dir or a parent>/<rel>`, or the PATH.
fn find_tool(dir: &Path, env_var: &str, rel: &str, name: &str) -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os(env_var) {
        let p = PathBuf::from(p);
        if p.is_file() {
            return Ok(p);
        }
        anyhow::bail!("{env_var}={} is not a file", p.display());
    }
    let abs = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    for d in abs.ancestors() {
        let p = d.join(rel);
        if p.is_file() {
            return Ok(p);
        }
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for d in std::env::split_paths(&paths) {
            let p = d.join(name);
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    anyhow::bail!(
        "cannot find {name}: set {env_var}, install it under {rel} in the project (or a parent \
         directory), or put it on PATH"
    )
}

fn run(cmd: &mut Command, what: &str) -> anyhow::Result<std::process::Output> {
    let out = cmd
        .output()
        .map_err(|e| anyhow::anyhow!("cannot run {what}: {e}"))?;
    if !out.status.success() {
        anyhow::bail!(
            "{what} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out)
}

fn build_rust(dir: &Path) -> anyhow::Result<PathBuf> {
    let manifest_path = dir
        .join("Cargo.toml")
        .canonicalize()
        .map_err(|e| anyhow::anyhow!("{}: {e}", dir.join("Cargo.toml").display()))?;
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(dir)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--message-format=json-render-diagnostics",
            "--manifest-path",
        ])
        .arg(&manifest_path);
    // Flags meant for a host build must not leak into the guest build.
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "RUSTC_WORKSPACE_WRAPPER",
    ] {
        cmd.env_remove(var);
    }
    let out = run(&mut cmd, "cargo build --target wasm32-wasip2")?;
    let mut wasm = None;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if msg["reason"] != "compiler-artifact"
            || msg["manifest_path"].as_str().map(Path::new) != Some(manifest_path.as_path())
        {
            continue;
        }
        if let Some(files) = msg["filenames"].as_array() {
            for f in files.iter().filter_map(|f| f.as_str()) {
                if f.ends_with(".wasm") {
                    wasm = Some(PathBuf::from(f));
                }
            }
        }
    }
    wasm.ok_or_else(|| {
        anyhow::anyhow!(
            "cargo built no .wasm for {}: is `crate-type = [\"cdylib\"]` set under [lib]?",
            manifest_path.display()
        )
    })
}

fn build_js(dir: &Path, m: &Manifest, out: &Path) -> anyhow::Result<()> {
    let tool = find_tool(
        dir,
        "COMPONENTIZE_JS",
        "node_modules/.bin/componentize-js",
        "componentize-js",
    )?;
    let mut cmd = Command::new(&tool);
    cmd.current_dir(dir)
        .arg(&m.build.entry)
        .args(["--wit", &m.build.wit, "--world-name", &m.build.world])
        .args(["-d", "http", "fetch-event", "-o"])
        .arg(out);
    run(&mut cmd, &format!("{}", tool.display()))?;
    Ok(())
}

fn build_python(dir: &Path, m: &Manifest, out: &Path) -> anyhow::Result<()> {
    let tool = find_tool(
        dir,
        "COMPONENTIZE_PY",
        ".venv/bin/componentize-py",
        "componentize-py",
    )?;
    let mut cmd = Command::new(&tool);
    cmd.current_dir(dir)
        .args(["-d", &m.build.wit, "-w", &m.build.world, "componentize"])
        .arg(&m.build.module)
        .arg("-o")
        .arg(out);
    run(&mut cmd, &format!("{}", tool.display()))?;
    Ok(())
}

/// Builds the project in `dir` to `out` (default: the manifest's `build.out`, else
/// `dist/<name>.wasm`).
pub(crate) fn build(dir: &Path, out: Option<&Path>) -> anyhow::Result<Built> {
    let started = Instant::now();
    let m = Manifest::load(dir)?;
    let out = match out {
        Some(o) => o.to_path_buf(),
        None => dir.join(
            m.build
                .out
                .clone()
                .unwrap_or_else(|| format!("dist/{}.wasm", m.policy.name)),
        ),
    };
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", parent.display()))?;
    }
    let out_abs = std::path::absolute(&out)?;
    let tmp = {
        let mut s = out_abs.as_os_str().to_os_string();
        s.push(format!(".building-{}", std::process::id()));
        PathBuf::from(s)
    };
    let raw = match m.policy.language {
        Lang::Rust => {
            let wasm = build_rust(dir)?;
            std::fs::read(&wasm).map_err(|e| anyhow::anyhow!("{}: {e}", wasm.display()))?
        }
        Lang::Js | Lang::Python => {
            let result = match m.policy.language {
                Lang::Js => build_js(dir, &m, &tmp),
                _ => build_python(dir, &m, &tmp),
            };
            let bytes = result.and_then(|()| {
                std::fs::read(&tmp).map_err(|e| anyhow::anyhow!("{}: {e}", tmp.display()))
            });
            let _ = std::fs::remove_file(&tmp);
            bytes?
        }
    };
    if metadata::is_component(&raw) != Some(true) {
        anyhow::bail!("the build produced a core module, not a component");
    }
    let mut meta = metadata::read(&raw)?.unwrap_or_default();
    meta.merge(m.metadata());
    let bytes = metadata::write(&raw, &meta)?;
    std::fs::write(&tmp, &bytes).map_err(|e| anyhow::anyhow!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, &out_abs)
        .map_err(|e| anyhow::anyhow!("cannot move the component to {}: {e}", out.display()))?;
    Ok(Built {
        path: out,
        size: bytes.len(),
        sha256: crate::digest::sha256_hex(&bytes),
        seconds: started.elapsed().as_secs_f64(),
    })
}
