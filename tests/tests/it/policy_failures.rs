//! Policies that misbehave, and modules that cannot be policies, through the real
//! binary: a policy that loops, one that allocates without bound and one that traps
//! each make the affected call fail closed (-32603) while every other request keeps
//! being served; `on_error = "allow"` and `mode = "monitor"` relax that only when the
//! operator says so; a module of the wrong world, garbage bytes and invalid settings
//! are refused at start with a message naming the policy; a result hook rewrites
//! what the agent receives.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use portcullis_tests::audit_lines::{fields, strip_ansi, wait_call_audit, wait_lines};
use portcullis_tests::client::{call_checked, session};
use portcullis_tests::config::{toml_str, toml_strs};
use portcullis_tests::rpc::{assert_call_ok, assert_rpc_error};
use portcullis_tests::upstreams::add_upstream_tools;
use portcullis_tests::{
    Agent, Config, Connector, Gateway, Mcp, Policy, Upstream, fixture_policy, new_key,
};
use serde_json::{Value, json};

/// Two in-repo upstreams (`conn_a` "Alpha", `conn_b` "Beta"), one agent with
/// `mcp:call`, and `policies`.
fn config(a: &Upstream, b: &Upstream, hash: &str, policies: Vec<Policy>) -> String {
    policies
        .into_iter()
        .fold(
            Config::new()
                .connector(Connector::new("conn_a", "Alpha", &a.url))
                .connector(Connector::new("conn_b", "Beta", &b.url))
                .agent(Agent::new("agent", hash)),
            Config::policy,
        )
        .render()
}

/// A `[[policies]]` entry for the misbehave fixture; `extra` holds more lines.
fn misbehave(name: &str, behaviour: &str, tools: &[&str], extra: &str) -> Policy {
    Policy::file(&fixture_policy("policy-test-misbehave"))
        .name(name)
        .settings(&format!(
            "{{ behaviour = {}, tools = {} }}",
            toml_str(behaviour),
            toml_strs(tools)
        ))
        .extra(extra)
}

fn args_for(tool: &str) -> Value {
    match tool {
        "big" => json!({"bytes": 10}),
        "progress" => json!({"steps": 1}),
        "sleep" => json!({"ms": 1}),
        _ => json!({"text": "hello"}),
    }
}

/// One call on a fresh session of the merged endpoint; the response message and
/// how long it took.
async fn timed_call(url: String, key: String, name: String) -> (Value, Duration) {
    let mut m = Mcp::new(&url, &key);
    m.initialize().await;
    let tool = name.split_once('.').map_or(name.as_str(), |(_, t)| t);
    let started = Instant::now();
    let msg = m.call(&name, args_for(tool)).await;
    (msg, started.elapsed())
}

/// Two upstreams (`conn_a` with an extra tool `danger`), an agent key, and a gateway
/// whose one policy `name` misbehaves (`behaviour`) on `danger`. The upstreams live as
/// long as the value.
struct Misbehaving {
    _upstreams: (Upstream, Upstream),
    key: String,
    gw: Gateway,
}

async fn misbehaving(name: &str, behaviour: &str, extra: &str) -> Misbehaving {
    let a = Upstream::rust(&[]);
    add_upstream_tools(&a.url, &["danger"]).await;
    let b = Upstream::rust(&[]);
    let (key, hash) = new_key();
    let policies = vec![misbehave(name, behaviour, &["danger"], extra)];
    let gw = Gateway::start(&config(&a, &b, &hash, policies));
    Misbehaving {
        _upstreams: (a, b),
        key,
        gw,
    }
}

/// A misbehaving policy (`behaviour` on tool `danger`, which only `conn_a` has): its calls
/// are refused with -32603 (fail-closed), audited 500 with the failing policy and
/// logged with why (`why`); calls to other tools and to the other connector made at
/// the same time succeed, and the gateway keeps serving afterwards.
async fn fails_closed_while_others_are_served(behaviour: &str, extra: &str, why: &str) {
    let Misbehaving {
        _upstreams: _kept,
        key,
        gw,
    } = misbehaving("bad", behaviour, extra).await;
    let url = gw.url(None);

    let mut tasks = Vec::new();
    for _ in 0..3 {
        for (name, good) in [
            ("alpha.danger", false),
            ("alpha.danger", false),
            ("alpha.echo", true),
            ("beta.echo", true),
            ("alpha.list_things", true),
            ("beta.sleep", true),
        ] {
            let task = tokio::spawn(timed_call(url.clone(), key.clone(), name.into()));
            tasks.push((name, good, task));
        }
    }
    for (name, good, task) in tasks {
        let (msg, took) = task.await.unwrap_or_else(|e| {
            panic!(
                "{name}: no JSON-RPC answer ({e}); gateway output:\n{}",
                strip_ansi(&gw.proc.output())
            )
        });
        if good {
            assert_call_ok(&msg);
        } else {
            assert_rpc_error(&msg, -32603, "Policy evaluation failed");
            assert!(
                took < Duration::from_secs(5),
                "{name}: a failing policy must be cut off by its limits (took {took:?})"
            );
        }
    }

    let rec = wait_call_audit(&gw, "danger", |r| r["status"] == "500").await;
    assert_eq!(rec["rpc_code"], "-32603", "{rec:?}");
    assert_eq!(rec["policy"], "bad", "{rec:?}");
    assert!(rec["reason"].contains("bad"), "{rec:?}");
    let failed = wait_lines(
        &gw.proc,
        "policy evaluation failed",
        1,
        Duration::from_secs(5),
    )
    .await;
    let f = fields(&failed[0]);
    assert_eq!(f.get("policy").map(String::as_str), Some("bad"), "{f:?}");
    assert!(
        failed[0].contains(why),
        "the log says why ({why}): {}",
        failed[0]
    );

    // Still serving: a new session lists and calls; the failing tool is not listed
    // (its connector's batched evaluation fails, so fail closed), the other
    // connector's tools are.
    let mut m = session(&url, &key).await;
    let names = m.tool_names().await;
    assert!(
        !names.iter().any(|n| n == "alpha.danger"),
        "a tool whose policy fails is not listed (fail closed): {names:?}"
    );
    assert!(names.iter().any(|n| n == "beta.echo"), "{names:?}");
    assert_call_ok(&call_checked(&gw, &m, "beta.echo", json!({"text": "after"})).await);
    assert!(
        gw.proc.lines_with("panicked").is_empty(),
        "the gateway panicked:\n{}",
        strip_ansi(&gw.proc.output())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn looping_policy_fails_closed() {
    fails_closed_while_others_are_served("loop", "timeout_ms = 300", "time limit").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn allocating_policy_fails_closed() {
    fails_closed_while_others_are_served("alloc", "memory_limit_mb = 16", "memory").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn trapping_policy_fails_closed() {
    fails_closed_while_others_are_served("trap", "", "trapped").await;
}

/// While looping calls keep arriving (four agents calling a tool whose policy spins
/// for its whole 1 s budget, back to back), calls that do not involve it are still
/// answered promptly: policy evaluation must not hold the gateway's request-serving
/// threads for the policy's budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn looping_policy_does_not_stall_other_requests() {
    let Misbehaving {
        _upstreams: _kept,
        key,
        gw,
    } = misbehaving("looper", "loop", "timeout_ms = 1000").await;
    let url = gw.url(None);

    // Warm sessions, so that only the calls themselves are timed.
    let mut good = Vec::new();
    for _ in 0..2 {
        good.push(session(&url, &key).await);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let mut bad = Vec::new();
    for _ in 0..4 {
        let mut m = session(&url, &key).await;
        let stop = stop.clone();
        bad.push(tokio::spawn(async move {
            let mut answers = Vec::new();
            while !stop.load(Ordering::Relaxed) && answers.len() < 5 {
                answers.push(m.call("alpha.danger", json!({})).await);
            }
            answers
        }));
    }

    let started = Instant::now();
    let mut latencies = Vec::new();
    let mut i = 0;
    while started.elapsed() < Duration::from_millis(2500) && latencies.len() < 200 {
        let name = if i % 2 == 0 {
            "alpha.echo"
        } else {
            "beta.echo"
        };
        let t = Instant::now();
        let msg = good[i % 2].call(name, json!({"text": "x"})).await;
        assert_call_ok(&msg);
        latencies.push(t.elapsed());
        i += 1;
    }
    stop.store(true, Ordering::Relaxed);
    let mut looping = 0;
    for task in bad {
        let answers = task.await.unwrap_or_else(|e| {
            panic!(
                "no JSON-RPC answer ({e}); gateway output:\n{}",
                strip_ansi(&gw.proc.output())
            )
        });
        for msg in &answers {
            assert_rpc_error(msg, -32603, "Policy evaluation failed");
        }
        looping += answers.len();
    }
    let max = latencies.iter().max().copied().unwrap_or_default();
    assert!(
        latencies.len() >= 5 && max < Duration::from_millis(500),
        "calls not involving the looping policy were held up while {looping} looping calls ran: \
         {} calls in {:?}, slowest {max:?} (latencies {latencies:?})",
        latencies.len(),
        started.elapsed()
    );
}

/// `on_error = "allow"`: a trapping or looping policy lets the call through (and
/// still logs the failure).
/// How many times the gateway's `policy-epoch` thread has been run on a CPU
/// (`/proc/<pid>/task/<tid>/schedstat`, third field).
fn epoch_thread_runs(pid: u32) -> u64 {
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).expect("proc") {
        let dir = task.expect("task").path();
        let name = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if name.trim() == "policy-epoch" {
            let stat = std::fs::read_to_string(dir.join("schedstat")).expect("schedstat");
            return stat
                .split_whitespace()
                .nth(2)
                .expect("runs")
                .parse()
                .expect("number");
        }
    }
    panic!("no policy-epoch thread in {pid}");
}

/// The epoch ticker sleeps while no policy runs (it used to tick 500 times a second
/// regardless), and still cuts a looping policy off at its deadline when one does.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn epoch_ticker_sleeps_while_no_policy_runs() {
    let Misbehaving {
        _upstreams: _kept,
        key,
        gw,
    } = misbehaving("looper", "loop", "timeout_ms = 300").await;
    let pid = gw.proc.pid();
    let idle_runs = || async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let before = epoch_thread_runs(pid);
        tokio::time::sleep(Duration::from_secs(1)).await;
        epoch_thread_runs(pid) - before
    };

    let idle = idle_runs().await;
    assert!(idle <= 10, "the idle ticker ran {idle} times in 1 s");

    let before = epoch_thread_runs(pid);
    let (msg, took) = timed_call(gw.url(None), key.clone(), "alpha.danger".into()).await;
    assert_rpc_error(&msg, -32603, "Policy evaluation failed");
    assert!(
        took < Duration::from_secs(5),
        "cut off at its deadline (took {took:?})"
    );
    let busy = epoch_thread_runs(pid) - before;
    assert!(
        busy >= 50,
        "the ticker ran only {busy} times during a 300 ms evaluation"
    );

    let idle = idle_runs().await;
    assert!(
        idle <= 10,
        "the ticker ran {idle} times in 1 s after the evaluation"
    );
}

#[tokio::test]
async fn on_error_allow_lets_failed_evaluations_through() {
    let a = Upstream::rust(&[]);
    let b = Upstream::rust(&[]);
    let (key, hash) = new_key();
    let policies = vec![
        misbehave("trapper", "trap", &["whoami"], "").on_error("allow"),
        misbehave("looper", "loop", &["big"], "")
            .on_error("allow")
            .timeout_ms(50),
    ];
    let gw = Gateway::start(&config(&a, &b, &hash, policies));
    let mut m = session(&gw.url(None), &key).await;
    let msg = call_checked(&gw, &m, "alpha.big", json!({"bytes": 3})).await;
    assert_call_ok(&msg);
    assert_eq!(msg["result"]["content"][0]["text"], "xxx");
    assert_call_ok(&call_checked(&gw, &m, "alpha.whoami", json!({})).await);
    let failed = wait_lines(
        &gw.proc,
        "policy evaluation failed",
        2,
        Duration::from_secs(5),
    )
    .await;
    for policy in ["trapper", "looper"] {
        assert!(
            failed
                .iter()
                .any(|l| fields(l).get("policy").map(String::as_str) == Some(policy)),
            "{policy} failure logged: {failed:?}"
        );
    }
    // Tools stay listed too.
    let names = m.tool_names().await;
    for n in ["alpha.whoami", "alpha.big", "beta.whoami"] {
        assert!(names.iter().any(|x| x == n), "{n} listed: {names:?}");
    }
}

/// `mode = "monitor"`: a denying policy is evaluated and logged ("would deny",
/// "would hide tool") but not enforced.
#[tokio::test]
async fn monitor_mode_logs_but_does_not_enforce() {
    let a = Upstream::rust(&[]);
    let b = Upstream::rust(&[]);
    let (key, hash) = new_key();
    let policies = vec![misbehave("watcher", "deny", &["echo"], "").mode("monitor")];
    let gw = Gateway::start(&config(&a, &b, &hash, policies));
    let mut m = session(&gw.url(None), &key).await;
    let names = m.tool_names().await;
    assert!(names.iter().any(|n| n == "alpha.echo"), "{names:?}");
    let msg = m.call("alpha.echo", json!({"text": "watched"})).await;
    assert_call_ok(&msg);
    assert_eq!(msg["result"]["structuredContent"]["text"], "watched");
    let would = wait_lines(&gw.proc, "would deny", 1, Duration::from_secs(5)).await;
    let f = fields(&would[0]);
    assert_eq!(
        f.get("policy").map(String::as_str),
        Some("watcher"),
        "{f:?}"
    );
    assert_eq!(f.get("mode").map(String::as_str), Some("monitor"), "{f:?}");
    wait_lines(&gw.proc, "would hide tool", 1, Duration::from_secs(5)).await;
    let rec = wait_call_audit(&gw, "echo", |r| r["agent"] == "agent").await;
    assert_eq!(rec["status"], "200", "{rec:?}");
    // The same policy enforcing denies.
    drop(gw);
    let policies = vec![misbehave("watcher", "deny", &["echo"], "").mode("enforce")];
    let gw = Gateway::start(&config(&a, &b, &hash, policies));
    let mut m = session(&gw.url(None), &key).await;
    assert_rpc_error(
        &m.call("alpha.echo", json!({"text": "x"})).await,
        -32001,
        "Denied by test policy",
    );
}

/// `check-result`: the redact behaviour replaces e-mail addresses in the upstream's
/// result before the agent sees it; results without one pass untouched.
#[tokio::test]
async fn result_hook_redacts_emails() {
    let a = Upstream::rust(&[]);
    let b = Upstream::rust(&[]);
    let (key, hash) = new_key();
    let policies = vec![misbehave("redactor", "redact", &["echo"], "")];
    let gw = Gateway::start(&config(&a, &b, &hash, policies));
    let mut m = session(&gw.url(Some("conn_a")), &key).await;
    let resp = m
        .request_raw(
            "tools/call",
            json!({"name": "echo", "arguments": {"text": "mail alice@example.com"}}),
        )
        .await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert!(
        !resp.body.contains("alice@example.com"),
        "the address must not reach the agent: {}",
        resp.body
    );
    let msg = resp.json();
    assert_eq!(
        msg["result"]["structuredContent"]["text"],
        "mail [redacted]"
    );
    assert_eq!(msg["result"]["content"][0]["text"], "mail [redacted]");
    // Nothing to redact: the result passes as the upstream sent it.
    let msg = m.call("echo", json!({"text": "no address here"})).await;
    assert_eq!(
        msg["result"]["structuredContent"]["text"],
        "no address here"
    );
    assert_eq!(msg["result"]["x-upstream-extra"]["kept"], true);
    // Other tools are not touched.
    let msg = m.call("big", json!({"bytes": 4})).await;
    assert_eq!(msg["result"]["content"][0]["text"], "xxxx");
}

// ---------------------------------------------------------------------------
// refused at start

fn start_refused(policies: &[Policy]) -> String {
    let a = "http://127.0.0.1:9/mcp";
    let (_, hash) = new_key();
    let config = policies.iter().cloned().fold(
        Config::new()
            .connector(Connector::new("conn_a", "Alpha", a))
            .agent(Agent::new("agent", &hash)),
        Config::policy,
    );
    Gateway::refuses(&config.render())
}

#[test]
fn wrong_world_module_is_refused_at_start() {
    let out = start_refused(&[
        Policy::new("builtin:slug-scope"),
        Policy::file(&fixture_policy("policy-test-wrong-world")).name("other-world"),
    ]);
    assert!(out.contains("other-world"), "names the policy: {out}");
    assert!(
        out.contains("does not implement") && out.contains("portcullis:policy"),
        "says it is not a policy of the portcullis:policy world: {out}"
    );
    assert!(!out.contains("listening on"), "{out}");
}

#[test]
fn invalid_settings_are_refused_naming_the_key() {
    let out = start_refused(&[Policy::new("builtin:blocklist").settings("{ bogus = 1 }")]);
    assert!(out.contains("blocklist"), "names the policy: {out}");
    assert!(out.contains("bogus"), "names the key: {out}");
    assert!(out.contains("invalid settings"), "{out}");

    let out = start_refused(&[
        Policy::new("builtin:annotation-hints").settings("{ read_only = \"yes\" }")
    ]);
    assert!(
        out.contains("annotation-hints") && out.contains("read_only"),
        "{out}"
    );

    let out = start_refused(&[Policy::file(&fixture_policy("policy-test-misbehave"))
        .name("fixture")
        .settings("{ behaviour = \"explode\" }")]);
    assert!(
        out.contains("fixture") && out.contains("behaviour"),
        "{out}"
    );

    let out = start_refused(&[Policy::new("builtin:no-such-policy")]);
    assert!(
        out.contains("policies[0].module") && out.contains("no-such-policy"),
        "{out}"
    );
}

#[test]
fn garbage_and_missing_modules_are_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let garbage = dir.path().join("garbage.wasm");
    std::fs::write(&garbage, b"this is not a WebAssembly component\n").expect("write");
    let out = start_refused(&[Policy::file(&garbage).name("junk")]);
    assert!(out.contains("junk"), "names the policy: {out}");
    assert!(out.contains("not a valid WebAssembly component"), "{out}");

    // A core module (not a component) is no better.
    let core = dir.path().join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").expect("write");
    let out = start_refused(&[Policy::file(&core).name("core")]);
    assert!(out.contains("core") && out.contains("not a valid"), "{out}");

    let missing = dir.path().join("missing.wasm");
    let out = start_refused(&[Policy::file(&missing).name("ghost")]);
    assert!(
        out.contains("ghost") && out.contains("missing.wasm"),
        "{out}"
    );
}
