//! Reading what the gateway prints: ANSI colours removed, the `key=value` fields
//! of a log line (audit records are `portcullis::audit` lines), and waiting for a
//! matching audit record or log line, blocking or from async code (so that other
//! tasks keep running).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::{Gateway, Proc};

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

/// The value of `key=value` in a log line (colours and quotes removed), if present.
pub fn field(line: &str, key: &str) -> Option<String> {
    fields(line).remove(key)
}

/// Polls the gateway's audit lines (bounded) until one satisfies `pred`; returns it.
pub fn wait_audit(gw: &Gateway, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(l) = gw.audit_lines().into_iter().find(|l| pred(l)) {
            return l;
        }
        assert!(
            Instant::now() < deadline,
            "no matching audit line within {timeout:?}; audit lines:\n{}",
            gw.audit_lines().join("\n")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The audit line for tool `tool` (upstream name) with the given status, waited for.
pub fn wait_audit_status(gw: &Gateway, tool: &str, status: u16) -> String {
    wait_audit(gw, Duration::from_secs(10), |l| {
        field(l, "tool").as_deref() == Some(tool)
            && field(l, "status").as_deref() == Some(&status.to_string())
    })
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
        if let Some(lines) = enough_lines(proc, needle, n, deadline, timeout) {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Blocking variant of [`wait_lines`] for synchronous tests.
pub fn wait_lines_blocking(proc: &Proc, needle: &str, n: usize, timeout: Duration) -> Vec<String> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(lines) = enough_lines(proc, needle, n, deadline, timeout) {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One look for [`wait_lines`]: the lines (ANSI stripped) once there are `n`;
/// past `deadline`, a panic naming what was missing.
fn enough_lines(
    proc: &Proc,
    needle: &str,
    n: usize,
    deadline: Instant,
    timeout: Duration,
) -> Option<Vec<String>> {
    let lines = proc.lines_with(needle);
    if lines.len() >= n {
        return Some(lines.iter().map(|l| strip_ansi(l)).collect());
    }
    assert!(
        Instant::now() < deadline,
        "{}: fewer than {n} lines with {needle:?} after {timeout:?}; output:\n{}",
        proc.name,
        strip_ansi(&proc.output())
    );
    None
}
