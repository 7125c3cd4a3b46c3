//! Smoke test of the harness and the gateway's happy path: the in-repo upstream
//! behind the real binary, on both endpoints.

use portcullis_tests::{Agent, Config, Connector, Gateway, Mcp, Upstream, new_key};
use serde_json::json;

fn config(upstream: &str, hash: &str) -> Config {
    Config::new()
        .connector(Connector::new("conn_test", "Test Upstream", upstream))
        .agent(Agent::new("reporter", hash))
}

#[tokio::test]
async fn lists_and_calls_on_both_endpoints() {
    let up = Upstream::rust(&[]);
    let (key, hash) = new_key();
    let gw = Gateway::start(&config(&up.url, &hash).render());

    let mut all = Mcp::new(&gw.url(None), &key);
    all.initialize().await;
    let names = all.tool_names().await;
    assert!(
        names.contains(&"test-upstream.echo".to_string()),
        "{names:?}"
    );
    let msg = all.call("test-upstream.echo", json!({"text": "hi"})).await;
    assert_eq!(msg["result"]["structuredContent"]["text"], "hi");
    assert_eq!(msg["result"]["x-upstream-extra"]["kept"], true);

    let mut one = Mcp::new(&gw.url(Some("conn_test")), &key);
    one.initialize().await;
    assert!(one.tool_names().await.contains(&"echo".to_string()));
    let msg = one.call("echo", json!({"text": "direct"})).await;
    assert_eq!(msg["result"]["structuredContent"]["text"], "direct");
}

/// CPU time (ns) of each `portcullis-w*` thread of `pid`, by thread name.
fn worker_runtimes(pid: u32) -> std::collections::BTreeMap<String, u64> {
    let mut out = std::collections::BTreeMap::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).expect("proc") {
        let dir = task.expect("task").path();
        let name = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        let name = name.trim();
        if name.starts_with("portcullis-w") && !name.contains("blocking") {
            let stat = std::fs::read_to_string(dir.join("schedstat")).unwrap_or_default();
            let ns = stat
                .split_whitespace()
                .next()
                .unwrap_or("0")
                .parse()
                .unwrap_or(0);
            out.insert(name.to_string(), ns);
        }
    }
    out
}

/// [`worker_runtimes`] once `n` workers are visible: a new thread names itself when it
/// first runs, which on a loaded machine can be after the start-up line (bounded: 5 s).
fn worker_runtimes_of(pid: u32, n: usize) -> std::collections::BTreeMap<String, u64> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let runtimes = worker_runtimes(pid);
        if runtimes.len() >= n || std::time::Instant::now() >= deadline {
            return runtimes;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[tokio::test]
async fn connections_are_spread_over_the_worker_threads() {
    let up = Upstream::rust(&[]);
    let (key, hash) = new_key();
    let gw = Gateway::start(&config(&up.url, &hash).server("workers = 3").render());
    let started = gw.proc.lines_with("portcullis started");
    assert!(
        started.iter().any(|l| l.contains("workers=3")),
        "{started:?}"
    );
    let before = worker_runtimes_of(gw.proc.pid(), 3);
    assert_eq!(before.len(), 3, "worker threads: {before:?}");

    // Six agents, one connection each, calling at the same time: each worker takes two.
    let mut calls = Vec::new();
    for i in 0..6 {
        let (url, key) = (gw.url(None), key.clone());
        calls.push(tokio::spawn(async move {
            let mut mcp = Mcp::new(&url, &key);
            mcp.initialize().await;
            for j in 0..30 {
                let text = format!("agent {i} call {j}");
                let msg = mcp
                    .call("test-upstream.echo", json!({ "text": text }))
                    .await;
                assert_eq!(msg["result"]["structuredContent"]["text"], text);
            }
        }));
    }
    for c in calls {
        c.await.expect("agent");
    }
    let after = worker_runtimes(gw.proc.pid());
    for (name, ns) in &after {
        assert!(
            *ns > before[name],
            "{name} served nothing: before {before:?}, after {after:?}"
        );
    }
}

#[tokio::test]
async fn workers_poll_briefly_before_sleeping_and_sleep_when_idle() {
    let up = Upstream::rust(&[]);
    let (key, hash) = new_key();
    // The longest polling allowed: a worker that never stopped polling would show here.
    let gw = Gateway::start(
        &config(&up.url, &hash)
            .server("workers = 2\nidle_spin_us = 1000")
            .render(),
    );
    let started = gw.proc.lines_with("portcullis started");
    assert!(
        started.iter().any(|l| l.contains("idle_spin_us=1000")),
        "{started:?}"
    );
    let mut mcp = Mcp::new(&gw.url(None), &key);
    mcp.initialize().await;
    for i in 0..50 {
        let text = format!("call {i}");
        let msg = mcp
            .call("test-upstream.echo", json!({ "text": text }))
            .await;
        assert_eq!(msg["result"]["structuredContent"]["text"], text);
    }
    // Idle: each worker polls at most 1 ms after its last event, then sleeps.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let before = worker_runtimes(gw.proc.pid());
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let after = worker_runtimes(gw.proc.pid());
    assert_eq!(after.len(), 2, "worker threads: {after:?}");
    for (name, ns) in &after {
        let used = ns - before[name];
        assert!(
            used < 50_000_000,
            "{name} used {used} ns of CPU in an idle second"
        );
    }
}
