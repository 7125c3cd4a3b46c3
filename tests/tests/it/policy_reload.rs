//! Hot reload of the policy chain through the real binary: config edits, `.wasm`
//! edits and SIGHUP swap the chain without a restart and without failing a single
//! request of a continuous load; the new decision is visible within a second; a
//! broken module or an invalid policy keeps the last good chain; every reload is
//! logged with the old and new digests; in-flight calls finish on their chain.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use portcullis_tests::audit_lines::{fields, strip_ansi, wait_call_audit, wait_lines};
use portcullis_tests::client::session;
use portcullis_tests::config::toml_strs;
use portcullis_tests::fixtures::{
    is_sha256_hex, misbehave_copy, sha256_hex, with_custom_section, write_by_rename,
};
use portcullis_tests::rpc::{assert_call_ok, rpc_error};
use portcullis_tests::{Agent, Config, Connector, Gateway, Mcp, Policy, Upstream, new_key};
use serde_json::{Value, json};

const RELOADED: &str = "policy chain reloaded";
const UNCHANGED: &str = "policy chain unchanged";
const KEPT: &str = "keeping the last good chain";
/// Upper bound of every wait for a log line or a changed decision (a reload that
/// compiles a module competes for the CPU with the load and with whatever else the
/// machine runs).
const WAIT: Duration = Duration::from_secs(20);
/// How long a reload may take to be visible to agents.
const VISIBLE_WITHIN: Duration = Duration::from_secs(1);

/// One connector (`conn_a`, slug `alpha`), one agent, and `policy` if any.
fn config(upstream: &str, hash: &str, policy: Option<Policy>) -> String {
    let config = Config::new()
        .connector(Connector::new("conn_a", "Alpha", upstream))
        .agent(Agent::new("agent", hash));
    policy.into_iter().fold(config, Config::policy).render()
}

/// A misbehave policy named `guard` from `module` (relative to the config's dir).
fn guard(module: &str, settings: &str) -> Option<Policy> {
    Some(Policy::new(module).name("guard").settings(settings))
}

fn deny(tool: &str) -> String {
    format!("{{ behaviour = \"deny\", tools = {} }}", toml_strs(&[tool]))
}

/// Whether a response is the misbehave fixture's denial.
fn denied(msg: &Value) -> bool {
    rpc_error(msg) == Some((-32001, "Denied by test policy".to_string()))
}

/// Asserts that a call to `tool` is denied by the guard policy.
async fn expect_denied(gw: &Gateway, m: &mut Mcp, tool: &str) {
    let msg = m.call(tool, json!({})).await;
    assert!(
        denied(&msg),
        "{tool} should still be denied, got {msg}; gateway output:\n{}",
        strip_ansi(&gw.proc.output())
            .lines()
            .filter(|l| !l.contains("portcullis::audit"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// Calls `tool` every 20 ms until `want` holds for the answer; the time that took.
async fn poll_until(
    m: &mut Mcp,
    tool: &str,
    args: Value,
    want: impl Fn(&Value) -> bool,
    gw: &Gateway,
) -> Duration {
    let started = Instant::now();
    loop {
        let msg = m.call(tool, args.clone()).await;
        if want(&msg) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < WAIT,
            "{tool}: decision did not change within {WAIT:?} (last answer {msg}); gateway output:\n{}",
            strip_ansi(&gw.proc.output())
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Continuous `tools/call echo` on `n` sessions of their own until stopped (or a
/// bound is reached); returns (calls made, failures with their answers).
struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<(usize, Vec<String>)>>,
}

impl Load {
    async fn start(url: &str, key: &str, n: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for worker in 0..n {
            let mut m = session(url, key).await;
            let stop = stop.clone();
            tasks.push(tokio::spawn(async move {
                let (mut calls, mut failures) = (0usize, Vec::new());
                let started = Instant::now();
                while !stop.load(Ordering::Relaxed)
                    && calls < 20_000
                    && started.elapsed() < Duration::from_secs(60)
                {
                    let text = format!("load {worker} {calls}");
                    let resp = m
                        .request_raw(
                            "tools/call",
                            json!({"name": "echo", "arguments": {"text": text}}),
                        )
                        .await;
                    calls += 1;
                    let ok = resp.status == 200
                        && resp.json()["result"]["structuredContent"]["text"] == text.as_str();
                    if !ok {
                        failures.push(format!("HTTP {}: {}", resp.status, resp.body));
                    }
                }
                (calls, failures)
            }));
        }
        Load { stop, tasks }
    }

    /// Stops the load; asserts that every call succeeded and returns how many ran.
    async fn finish(self, gw: &Gateway) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        let mut total = 0;
        let mut failures = Vec::new();
        for t in self.tasks {
            let (calls, f) = t.await.expect("load task");
            total += calls;
            failures.extend(f);
        }
        assert!(
            failures.is_empty(),
            "{} of {total} load calls failed during reloads, e.g. {:?}; gateway errors:\n{}",
            failures.len(),
            &failures[..failures.len().min(5)],
            gw.proc
                .lines_with("ERROR")
                .iter()
                .map(|l| strip_ansi(l))
                .collect::<Vec<_>>()
                .join("\n")
        );
        total
    }
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write config");
}

/// The digest the gateway logged when it loaded its first chain.
async fn initial_digest(gw: &Gateway) -> String {
    let line = wait_lines(&gw.proc, "policy chain loaded", 1, WAIT).await;
    let digest = fields(&line[0])["digest"].clone();
    assert!(is_sha256_hex(&digest), "{line:?}");
    digest
}

/// Under continuous load: changing a policy's decision by editing the config takes
/// effect within a second; a garbage module, an invalid policy and a TOML error each keep
/// the last good chain; a `.wasm` edit and a rename-style config save reload; no
/// load call fails at any point.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reload_under_load_keeps_serving_and_keeps_the_last_good_chain() {
    let up = Upstream::rust(&[]);
    let (key, hash) = new_key();
    let gw = Gateway::start(&config(&up.url, &hash, None));
    let d0 = initial_digest(&gw).await;
    let module = misbehave_copy(gw.dir.path(), "guard.wasm");
    let good_bytes = std::fs::read(&module).expect("read module");
    let url = gw.url(Some("conn_a"));

    let mut probe = session(&url, &key).await;
    assert_call_ok(&probe.call("whoami", json!({})).await);
    let load = Load::start(&url, &key, 4).await;

    // 0. Add the policy, allowing everything (this reload compiles the module).
    write(
        &gw.config_path,
        &config(
            &up.url,
            &hash,
            guard("guard.wasm", "{ behaviour = \"allow\" }"),
        ),
    );
    let line = wait_lines(&gw.proc, RELOADED, 1, WAIT).await;
    let f = fields(&line[0]);
    assert_eq!(f.get("old_digest"), Some(&d0), "{}", line[0]);
    let d0 = f.get("new_digest").cloned().unwrap_or_default();
    assert!(is_sha256_hex(&d0), "{}", line[0]);
    assert_call_ok(&probe.call("whoami", json!({})).await);

    // 1. Make it deny a tool the load does not call.
    let written = Instant::now();
    write(
        &gw.config_path,
        &config(&up.url, &hash, guard("guard.wasm", &deny("whoami"))),
    );
    poll_until(&mut probe, "whoami", json!({}), denied, &gw).await;
    let took = written.elapsed();
    eprintln!("policy added: visible after {took:?}");
    assert!(
        took <= VISIBLE_WITHIN,
        "the new decision became visible only {took:?} after the config was written"
    );
    let line = wait_lines(&gw.proc, RELOADED, 2, WAIT).await;
    let f = fields(&line[1]);
    assert_eq!(f.get("old_digest"), Some(&d0), "{}", line[1]);
    let d1 = f.get("new_digest").cloned().unwrap_or_default();
    assert!(is_sha256_hex(&d1) && d1 != d0, "{}", line[1]);
    let rec = wait_call_audit(&gw, "whoami", |r| r["status"] != "200").await;
    assert_eq!(rec["policy"], "guard", "{rec:?}");
    assert_eq!(
        rec["policy_digest"],
        sha256_hex(&good_bytes),
        "denials carry the module's digest: {rec:?}"
    );

    // 2. The module file is overwritten with garbage: reload fails, old chain kept.
    let kept = gw.proc.lines_with(KEPT).len();
    std::fs::write(&module, b"not wasm at all").expect("overwrite module");
    let lines = wait_lines(&gw.proc, KEPT, kept + 1, WAIT).await;
    let last = lines.last().unwrap();
    assert!(
        last.contains("guard") && last.contains("not a valid WebAssembly component"),
        "the failure says why: {last}"
    );
    // (The error text may span lines; the digest kept is logged with it.)
    let out = strip_ansi(&gw.proc.output());
    assert!(out.contains(&format!("kept_digest={d1}")), "{out}");
    expect_denied(&gw, &mut probe, "whoami").await;
    assert_call_ok(&probe.call("echo", json!({"text": "still"})).await);

    // 3. The good module is back: the chain is the same as before.
    let unchanged = gw.proc.lines_with(UNCHANGED).len();
    std::fs::write(&module, &good_bytes).expect("restore module");
    wait_lines(&gw.proc, UNCHANGED, unchanged + 1, WAIT).await;
    expect_denied(&gw, &mut probe, "whoami").await;

    // 4. A config edit with an invalid policy, then a TOML error: both kept.
    let kept = gw.proc.lines_with(KEPT).len();
    write(
        &gw.config_path,
        &config(
            &up.url,
            &hash,
            guard("guard.wasm", "{ behaviour = \"explode\" }"),
        ),
    );
    let lines = wait_lines(&gw.proc, KEPT, kept + 1, WAIT).await;
    assert!(
        lines.last().unwrap().contains("behaviour"),
        "the failure names the setting: {}",
        lines.last().unwrap()
    );
    expect_denied(&gw, &mut probe, "whoami").await;
    write(&gw.config_path, "[[policies]\nmodule = ");
    wait_lines(&gw.proc, KEPT, kept + 2, WAIT).await;
    expect_denied(&gw, &mut probe, "whoami").await;
    assert_call_ok(&probe.call("echo", json!({"text": "still"})).await);

    // 5. An editor-style save (write + rename) moving the denial to another tool.
    let reloaded = gw.proc.lines_with(RELOADED).len();
    let written = Instant::now();
    write_by_rename(
        &gw.config_path,
        config(&up.url, &hash, guard("guard.wasm", &deny("count_calls"))).as_bytes(),
    );
    poll_until(&mut probe, "count_calls", json!({}), denied, &gw).await;
    let took = written.elapsed();
    eprintln!("policy moved: visible after {took:?}");
    assert!(took <= VISIBLE_WITHIN, "visible only after {took:?}");
    assert_call_ok(&probe.call("whoami", json!({})).await);
    let lines = wait_lines(&gw.proc, RELOADED, reloaded + 1, WAIT).await;
    let f = fields(lines.last().unwrap());
    assert_eq!(f.get("old_digest"), Some(&d1), "{:?}", lines.last());
    let d2 = f.get("new_digest").cloned().unwrap_or_default();
    assert!(is_sha256_hex(&d2) && d2 != d1);

    // 6. A different build of the module (same behaviour, new bytes): reloaded, and
    //    denials now carry the new module digest.
    let reloaded = gw.proc.lines_with(RELOADED).len();
    let v2 = with_custom_section(&good_bytes, "v2");
    let written = Instant::now();
    std::fs::write(&module, &v2).expect("write module v2");
    let lines = wait_lines(&gw.proc, RELOADED, reloaded + 1, WAIT).await;
    eprintln!("new module bytes: reloaded after {:?}", written.elapsed());
    let f = fields(lines.last().unwrap());
    assert_eq!(f.get("old_digest"), Some(&d2), "{:?}", lines.last());
    assert_ne!(f.get("new_digest"), Some(&d2));
    expect_denied(&gw, &mut probe, "count_calls").await;
    let v2_digest = sha256_hex(&v2);
    wait_call_audit(&gw, "count_calls", |r| r["policy_digest"] == v2_digest).await;

    let calls = load.finish(&gw).await;
    eprintln!("load: {calls} calls, none failed");
    assert!(calls >= 40, "the load made only {calls} calls");
}

/// SIGHUP re-reads the chain: a module reached through a symlink whose target
/// changes is picked up on SIGHUP (whether or not the watcher saw it), and the
/// reload is logged with its digests.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sighup_reloads_the_chain() {
    let up = Upstream::rust(&[]);
    let (key, hash) = new_key();
    let store = tempfile::tempdir().expect("temp dir");
    let real = misbehave_copy(store.path(), "real.wasm");
    let v1 = std::fs::read(&real).expect("read module");
    let gw = Gateway::start(&config(&up.url, &hash, None));
    std::os::unix::fs::symlink(&real, gw.dir.path().join("link.wasm")).expect("symlink");
    let url = gw.url(Some("conn_a"));
    let mut probe = session(&url, &key).await;

    // SIGHUP with nothing changed: a reload attempt that finds the same chain.
    let unchanged = gw.proc.lines_with(UNCHANGED).len();
    gw.proc.signal("HUP");
    wait_lines(&gw.proc, "SIGHUP", 1, WAIT).await;
    wait_lines(&gw.proc, UNCHANGED, unchanged + 1, WAIT).await;

    write(
        &gw.config_path,
        &config(&up.url, &hash, guard("link.wasm", &deny("whoami"))),
    );
    poll_until(&mut probe, "whoami", json!({}), denied, &gw).await;
    let v1_digest = sha256_hex(&v1);
    wait_call_audit(&gw, "whoami", |r| r["policy_digest"] == v1_digest).await;

    // Replace the symlink's target (outside every watched directory), then SIGHUP.
    let v2 = with_custom_section(&v1, "hup");
    std::fs::write(&real, &v2).expect("write target");
    let hups = gw.proc.lines_with("SIGHUP").len();
    gw.proc.signal("HUP");
    wait_lines(&gw.proc, "SIGHUP", hups + 1, WAIT).await;
    let v2_digest = sha256_hex(&v2);
    let started = Instant::now();
    loop {
        let msg = probe.call("whoami", json!({})).await;
        assert!(denied(&msg), "{msg}");
        let rec = wait_call_audit(&gw, "whoami", |r| r["status"] != "200").await;
        if rec["policy_digest"] == v2_digest {
            break;
        }
        assert!(
            started.elapsed() < WAIT,
            "SIGHUP did not load the new module bytes: {rec:?}\n{}",
            strip_ansi(&gw.proc.output())
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let lines = wait_lines(&gw.proc, RELOADED, 1, WAIT).await;
    let f = fields(lines.last().unwrap());
    assert!(
        f.get("old_digest").is_some_and(|d| is_sha256_hex(d))
            && f.get("new_digest").is_some_and(|d| is_sha256_hex(d))
            && f.get("old_digest") != f.get("new_digest"),
        "{:?}",
        lines.last()
    );
}

/// A call that started before a reload finishes on the chain it started with,
/// even though the new chain denies that tool.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn in_flight_call_finishes_on_its_chain() {
    let up = Upstream::rust(&[]);
    let (key, hash) = new_key();
    let gw = Gateway::start(&config(&up.url, &hash, None));
    misbehave_copy(gw.dir.path(), "guard.wasm");
    let url = gw.url(Some("conn_a"));
    // Load the module first (allowing everything), so that the reload below only
    // swaps chains and does not compile.
    write(
        &gw.config_path,
        &config(
            &up.url,
            &hash,
            guard("guard.wasm", "{ behaviour = \"allow\" }"),
        ),
    );
    wait_lines(&gw.proc, RELOADED, 1, WAIT).await;

    let mut slow = session(&url, &key).await;
    let in_flight = tokio::spawn(async move { slow.call("sleep", json!({"ms": 4000})).await });
    // Wait until the slow call has reached the upstream: its call counter then
    // exceeds the number of count_calls made here.
    let mut probe = session(&url, &key).await;
    let started = Instant::now();
    for mine in 1u64.. {
        let msg = probe.call("count_calls", json!({})).await;
        if msg["result"]["structuredContent"]["count"].as_u64() > Some(mine) {
            break;
        }
        assert!(started.elapsed() < WAIT, "{msg}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    write(
        &gw.config_path,
        &config(&up.url, &hash, guard("guard.wasm", &deny("sleep"))),
    );
    poll_until(&mut probe, "sleep", json!({"ms": 0}), denied, &gw).await;
    assert!(!in_flight.is_finished(), "the slow call ended too early");
    let msg = in_flight.await.expect("in-flight call");
    assert_call_ok(&msg);
}
