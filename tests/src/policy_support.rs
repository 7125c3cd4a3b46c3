//! Helpers for the policy integration tests (`policy_builtins`, `policy_failures`,
//! `policy_reload`): reading the gateway's structured log lines, waiting on them
//! without blocking the async runtime, JSON-RPC error shapes, the `portcullis`
//! operator commands, and fixture components copied where a test may overwrite them.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::{Gateway, Mcp, Proc};

/// The text with ANSI escape sequences (`ESC [ ... letter`) removed.
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for d in chars.by_ref() {
                    if d.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// The `key=value` fields of a text log line (values may be `"quoted"`), plus the
/// log target under the key `target` (`portcullis::audit`, ...).
pub fn fields(line: &str) -> HashMap<String, String> {
    let line = strip_ansi(line);
    let mut out = HashMap::new();
    if let Some(t) = line
        .split_whitespace()
        .find(|w| w.starts_with("portcullis") && w.ends_with(':'))
    {
        out.insert("target".to_string(), t.trim_end_matches(':').to_string());
    }
    let b: Vec<char> = line.chars().collect();
    let mut i = 0;
    while i < b.len() {
        // A key starts after whitespace (or at the start).
        if i > 0 && !b[i - 1].is_whitespace() {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == '_' || b[i] == '.') {
            i += 1;
        }
        if i == start || i >= b.len() || b[i] != '=' {
            i = i.max(start + 1);
            continue;
        }
        let key: String = b[start..i].iter().collect();
        i += 1;
        let mut value = String::new();
        if i < b.len() && b[i] == '"' {
            i += 1;
            while i < b.len() && b[i] != '"' {
                if b[i] == '\\' && i + 1 < b.len() {
                    i += 1;
                }
                value.push(b[i]);
                i += 1;
            }
            i += 1;
        } else {
            while i < b.len() && !b[i].is_whitespace() {
                value.push(b[i]);
                i += 1;
            }
        }
        out.insert(key, value);
    }
    out
}

/// Whether `s` is a lowercase hex sha256 (64 hex digits).
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
}

/// The audit records (as fields) printed so far.
pub fn audit_records(gw: &Gateway) -> Vec<HashMap<String, String>> {
    gw.audit_lines().iter().map(|l| fields(l)).collect()
}

/// Waits (asynchronously) for the latest audit record of a `tools/call` to `tool`
/// (upstream name) whose fields satisfy `pred`; panics with the audit trail on timeout.
pub async fn wait_call_audit(
    gw: &Gateway,
    tool: &str,
    pred: impl Fn(&HashMap<String, String>) -> bool,
) -> HashMap<String, String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(r) = audit_records(gw).into_iter().rev().find(|r| {
            r.get("method").map(String::as_str) == Some("tools/call")
                && r.get("tool").map(String::as_str) == Some(tool)
                && pred(r)
        }) {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "no matching audit record for tools/call {tool}; audit trail:\n{}",
            gw.audit_lines()
                .iter()
                .map(|l| strip_ansi(l))
                .collect::<Vec<_>>()
                .join("\n")
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits (asynchronously, so other tasks keep running) until `proc` has printed at
/// least `n` lines containing `needle`; returns those lines, ANSI stripped.
pub async fn wait_lines(proc: &Proc, needle: &str, n: usize, timeout: Duration) -> Vec<String> {
    let deadline = Instant::now() + timeout;
    loop {
        let lines = proc.lines_with(needle);
        if lines.len() >= n {
            return lines.iter().map(|l| strip_ansi(l)).collect();
        }
        assert!(
            Instant::now() < deadline,
            "{}: fewer than {n} lines with {needle:?} after {timeout:?}; output:\n{}",
            proc.name,
            strip_ansi(&proc.output())
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Blocking variant of [`wait_lines`] for synchronous tests.
pub fn wait_lines_blocking(proc: &Proc, needle: &str, n: usize, timeout: Duration) -> Vec<String> {
    let deadline = Instant::now() + timeout;
    loop {
        let lines = proc.lines_with(needle);
        if lines.len() >= n {
            return lines.iter().map(|l| strip_ansi(l)).collect();
        }
        assert!(
            Instant::now() < deadline,
            "{}: fewer than {n} lines with {needle:?} after {timeout:?}; output:\n{}",
            proc.name,
            strip_ansi(&proc.output())
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The JSON-RPC error of a response message as `(code, message)`, if it is one.
pub fn rpc_error(msg: &Value) -> Option<(i64, String)> {
    let e = msg.get("error")?;
    Some((
        e.get("code")?.as_i64()?,
        e.get("message")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
    ))
}

/// Asserts that `msg` is the JSON-RPC error `code` with exactly `message`.
#[track_caller]
pub fn assert_rpc_error(msg: &Value, code: i64, message: &str) {
    assert_eq!(
        rpc_error(msg),
        Some((code, message.to_string())),
        "expected JSON-RPC error {code} {message:?}, got {msg}"
    );
}

/// Asserts that `msg` is a successful (non-`isError`) tools/call result.
#[track_caller]
pub fn assert_call_ok(msg: &Value) {
    assert!(
        msg.get("result").is_some_and(Value::is_object) && msg["result"]["isError"] != json!(true),
        "expected a successful tools/call result, got {msg}"
    );
}

/// An initialized MCP session on `url`.
pub async fn session(url: &str, key: &str) -> Mcp {
    let mut m = Mcp::new(url, key);
    m.initialize().await;
    m
}

/// Sorted tool names of a session's `tools/list`.
pub async fn sorted_names(m: &mut Mcp) -> Vec<String> {
    let mut names = m.tool_names().await;
    names.sort();
    names
}

/// Sorted `names`, as owned strings (for comparing with [`sorted_names`]).
pub fn sorted(names: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

/// Adds tools (unannotated; they answer `ok <name>`) to a running in-repo upstream
/// by calling its `add_tool` directly.
pub async fn add_upstream_tools(upstream_url: &str, names: &[&str]) {
    let mut m = session(upstream_url, "unused").await;
    for n in names {
        let msg = m.call("add_tool", json!({ "name": n })).await;
        assert_call_ok(&msg);
    }
}

/// A `portcullis` subcommand's (exit code, stdout, stderr).
pub fn portcullis(args: &[&str], config: &Path) -> (Option<i32>, String, String) {
    let mut cmd = Command::new(crate::bin("portcullis"));
    cmd.args(args).arg("--config").arg(config);
    let out = cmd.output().expect("running portcullis");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        strip_ansi(&String::from_utf8_lossy(&out.stderr)),
    )
}

/// `portcullis agents eligible --config <config> <agent>`, parsed: connector id ->
/// (`eligible` / `not eligible` / `unknown`, the listed tool names sorted).
pub fn eligible(config: &Path, agent: &str) -> BTreeMap<String, (String, Vec<String>)> {
    let out = Command::new(crate::bin("portcullis"))
        .args(["agents", "eligible", "--config"])
        .arg(config)
        .arg(agent)
        .output()
        .expect("running portcullis agents eligible");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "agents eligible {agent} failed ({}): {stdout}\n{}",
        out.status,
        strip_ansi(&String::from_utf8_lossy(&out.stderr))
    );
    let mut report = BTreeMap::new();
    for line in stdout.lines().skip(1) {
        let cols: Vec<&str> = line.split('\t').collect();
        assert!(cols.len() >= 4, "unexpected eligibility line {line:?}");
        let tools = cols[3]
            .split_once("tools:")
            .map(|(_, t)| t)
            .unwrap_or_default();
        let mut tools: Vec<String> = tools
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .collect();
        tools.sort();
        report.insert(cols[0].to_string(), (cols[2].to_string(), tools));
    }
    assert!(!report.is_empty(), "empty eligibility report: {stdout}");
    report
}

/// The module digest of each policy as `portcullis config check` reports it.
pub fn policy_digests(config: &Path) -> HashMap<String, String> {
    let (code, stdout, stderr) = portcullis(&["config", "check"], config);
    assert_eq!(code, Some(0), "config check failed: {stdout}{stderr}");
    stdout
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            (words.next()? == "policy").then_some(())?;
            let name = words.next()?.to_string();
            let digest = words.find_map(|w| w.strip_prefix("sha256:"))?.to_string();
            Some((name, digest))
        })
        .collect()
}

/// The misbehave fixture component copied into `dir` (so a test may overwrite it).
pub fn misbehave_copy(dir: &Path, file: &str) -> PathBuf {
    let src = crate::fixture_policy("policy-test-misbehave");
    let dst = dir.join(file);
    std::fs::copy(&src, &dst).expect("copy misbehave fixture");
    dst
}

/// A TOML basic string literal for a path.
pub fn toml_path(p: &Path) -> String {
    Value::String(p.display().to_string()).to_string()
}

/// An `[[agents]]` block.
pub fn agent_toml(id: &str, hash: &str, scopes: &[&str], extra: &str) -> String {
    let scopes: Vec<String> = scopes.iter().map(|s| format!("{s:?}")).collect();
    format!(
        "\n[[agents]]\nid = \"{id}\"\norg = \"acme\"\nkey_sha256 = \"{hash}\"\nscopes = [{}]\n{extra}\n",
        scopes.join(", ")
    )
}

/// A `[[connectors]]` block.
pub fn connector_toml(id: &str, name: &str, url: &str, extra: &str) -> String {
    format!("\n[[connectors]]\nid = \"{id}\"\nname = \"{name}\"\ntarget_url = \"{url}\"\n{extra}\n")
}

/// Writes `text` to `path` by writing a sibling temp file and renaming it over
/// `path`, the way many editors save.
pub fn write_by_rename(path: &Path, text: &[u8]) {
    let tmp = path.with_extension("tmp-save");
    std::fs::write(&tmp, text).expect("write temp file");
    std::fs::rename(&tmp, path).expect("rename over file");
}

/// Starts `portcullis serve` on `config` and expects it to refuse to start (exit 2);
/// returns its output (ANSI stripped) once the error message has been read, which
/// may be a moment after the process exited.
pub fn refuses(config: &str) -> String {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("portcullis.toml");
    std::fs::write(&path, config).expect("write config");
    let mut cmd = Command::new(crate::bin("portcullis"));
    cmd.arg("serve")
        .arg("--config")
        .arg(&path)
        .env("RUST_LOG", "info");
    let mut proc = Proc::spawn("portcullis", cmd);
    let code = proc.wait_exit(Duration::from_secs(30));
    // The output is read by threads: wait until the error line has arrived.
    let deadline = Instant::now() + Duration::from_secs(5);
    while proc.lines_with("error").is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = strip_ansi(&proc.output());
    assert_eq!(
        code,
        Some(2),
        "gateway should refuse to start; output:\n{out}"
    );
    out
}

/// `tools/call` on a copy of `m`'s session inside a task, so that a connection the
/// gateway drops (instead of answering) fails the test with the gateway's log
/// rather than a bare transport panic.
pub async fn call_checked(gw: &Gateway, m: &Mcp, name: &str, args: Value) -> Value {
    let mut copy = Mcp::new(&m.url, m.key.as_deref().unwrap_or_default());
    copy.session = m.session.clone();
    copy.version = m.version.clone();
    let n = name.to_string();
    match tokio::spawn(async move { copy.call(&n, args).await }).await {
        Ok(msg) => msg,
        Err(e) => panic!(
            "tools/call {name}: no JSON-RPC answer ({e}); gateway output:\n{}",
            strip_ansi(&gw.proc.output())
        ),
    }
}

/// Hex sha256 of `bytes` (module digests are this over the component file).
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// `component` with a custom section appended: the same policy, different bytes
/// (and so a different digest).
pub fn with_custom_section(component: &[u8], tag: &str) -> Vec<u8> {
    let name = b"portcullis-test";
    let mut contents = vec![name.len() as u8];
    contents.extend_from_slice(name);
    contents.extend_from_slice(tag.as_bytes());
    assert!(
        contents.len() < 128,
        "keep the tag short (one-byte LEB128 size)"
    );
    let mut out = component.to_vec();
    out.push(0); // custom section id
    out.push(contents.len() as u8);
    out.extend_from_slice(&contents);
    out
}
