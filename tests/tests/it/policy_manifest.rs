//! Policy manifests (`describe`, portcullis:policy@0.1.1) through the real binary:
//! hooks a policy declares absent are never called, deterministic policies have
//! their decisions reused only under identical inputs (arguments when read, the
//! connector's current tool list), `/metrics` tells evaluations from reused
//! decisions, and a component built against 0.1.0 (no `describe`) still loads and
//! receives every input on every request.

use std::time::{Duration, Instant};

use portcullis_tests::client::{session, sorted_names};
use portcullis_tests::rpc::{assert_call_ok, assert_rpc_error};
use portcullis_tests::upstreams::add_upstream_tools;
use portcullis_tests::{
    Agent, Cli, Config, Connector, Gateway, Mcp, Policy, Upstream, fixture_policy, new_key,
};
use serde_json::{Value, json};

/// An admin listener (for `/metrics`), one connector (`conn_a`, slug `alpha`) and
/// one agent.
fn config(up: &Upstream, connector: impl FnOnce(Connector) -> Connector, agent: Agent) -> Config {
    Config::new()
        .admin()
        .connector(connector(Connector::new("conn_a", "Alpha", &up.url)))
        .agent(agent)
}

/// Tools added upstream reach agents at once (no pinning): these tests are about
/// decisions on a new list.
fn follow_live(c: Connector) -> Connector {
    c.extra("tool_pinning = \"off\"")
}

async fn metrics(gw: &Gateway) -> String {
    gw.metrics().await
}

/// The value of the sample `name` whose labels include `labels`; 0 when absent.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(series, _)| {
            let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
            metric == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
        })
        .map(|(_, v)| v.parse::<f64>().expect("numeric sample"))
        .sum()
}

/// Calls `alpha.echo` until it is allowed (at most 10 s): a new upstream tool list
/// reaches the gateway through `notifications/tools/list_changed`.
async fn echo_until_allowed(m: &mut Mcp) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let msg = m.call("alpha.echo", json!({"text": "hi"})).await;
        if msg.get("result").is_some() {
            return;
        }
        assert!(Instant::now() < deadline, "still denied: {msg}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn evaluations(text: &str, policy: &str, hook: &str) -> f64 {
    sample(
        text,
        "portcullis_policy_evaluations_total",
        &[("policy", policy), ("hook", hook)],
    )
}

/// slug-scope and blocklist (deterministic, tools and arguments unread) and the Rust
/// args-guard (deterministic, reads arguments): repeated calls are decided once,
/// a call with other arguments is evaluated again and denied, no post-call hook
/// runs, and a second `tools/list` reuses the list decisions.
#[tokio::test]
async fn deterministic_policies_reuse_decisions_only_under_the_same_inputs() {
    let up = Upstream::rust(&[]);
    let (key, hash) = new_key();
    let cfg = config(
        &up,
        |c| c.disabled_tools(&["sleep"]),
        Agent::new("agent", &hash),
    )
    .policy(Policy::new("builtin:slug-scope"))
    .policy(Policy::new("builtin:blocklist"))
    .policy(Policy::file(&fixture_policy("policy-test-args-guard")).name("args-guard"))
    .render();
    let gw = Gateway::start(&cfg);
    let mut m = session(&gw.url(None), &key).await;

    let listed = sorted_names(&mut m).await;
    assert!(listed.contains(&"alpha.echo".to_string()), "{listed:?}");
    assert!(!listed.contains(&"alpha.sleep".to_string()), "{listed:?}");
    assert_eq!(sorted_names(&mut m).await, listed);

    for _ in 0..3 {
        assert_call_ok(&m.call("alpha.echo", json!({"text": "hello"})).await);
    }
    let denied = m
        .call("alpha.echo", json!({"text": "ping db1.prod.internal"}))
        .await;
    assert_rpc_error(&denied, -32001, "Denied: production host");
    assert_call_ok(&m.call("alpha.echo", json!({"text": "hello"})).await);
    let hidden = m.call("alpha.sleep", json!({"ms": 1})).await;
    assert_rpc_error(&hidden, -32601, "Tool not found");

    let text = metrics(&gw).await;
    // Calls: echo x5 (two argument texts) and sleep once. slug-scope and blocklist
    // read no arguments: one evaluation per tool (echo, sleep).
    assert_eq!(
        evaluations(&text, "slug-scope", "check_call"),
        2.0,
        "{text}"
    );
    assert_eq!(evaluations(&text, "blocklist", "check_call"), 2.0, "{text}");
    // args-guard reads the arguments: one evaluation per distinct argument text; the
    // hidden tool never reached it.
    assert_eq!(
        evaluations(&text, "args-guard", "check_call"),
        2.0,
        "{text}"
    );
    // Lists: one evaluation per policy that filters, the second list reused it.
    assert_eq!(evaluations(&text, "slug-scope", "filter_tools"), 1.0);
    assert_eq!(evaluations(&text, "blocklist", "filter_tools"), 1.0);
    assert_eq!(evaluations(&text, "args-guard", "filter_tools"), 0.0);
    // No policy here has a post-call hook: none ran.
    for p in ["slug-scope", "blocklist", "args-guard"] {
        assert_eq!(evaluations(&text, p, "check_result"), 0.0, "{p}: {text}");
    }
    // Reused: slug-scope and blocklist 4 calls + 1 list each, args-guard 3 of its
    // 5 calls.
    assert_eq!(
        sample(&text, "portcullis_policy_cached_decisions_total", &[]),
        5.0 + 5.0 + 3.0,
        "{text}"
    );
}

/// mcp-servers reads the connector's whole tool list: a connector ineligible for
/// want of a required tool becomes eligible as soon as the upstream lists one, even
/// though the denial for the very same call had been reused before.
#[tokio::test]
async fn a_new_tool_list_is_decided_afresh() {
    let up = Upstream::rust(&[]);
    let (key, hash) = new_key();
    let agent = Agent::new("agent", &hash)
        .extra("mcp_servers = [{ url = \"*\", tools = { required = [\"needed_*\", \"echo\"] } }]");
    let cfg = config(&up, follow_live, agent)
        .policy(Policy::new("builtin:mcp-servers"))
        .render();
    let gw = Gateway::start(&cfg);
    let mut m = session(&gw.url(None), &key).await;
    for _ in 0..2 {
        let msg = m.call("alpha.echo", json!({"text": "hi"})).await;
        assert_rpc_error(&msg, -32601, "Tool not found");
    }
    add_upstream_tools(&up.url, &["needed_one"]).await;
    // The upstream announces list_changed; the gateway re-lists.
    echo_until_allowed(&mut m).await;
    let names = sorted_names(&mut m).await;
    assert!(names.contains(&"alpha.needed_one".to_string()), "{names:?}");
}

/// A component built against 0.1.0 has no `describe`: it loads, `policy inspect`
/// says so, and every hook gets every input on every request (its rules read the
/// connector's tool list in `check-call` and the arguments, which a 0.1.1 policy
/// could have declared unread).
#[tokio::test]
async fn a_policy_built_against_0_1_0_still_loads_and_gets_every_input() {
    let module = fixture_policy("policy-test-legacy-0-1-0");
    let out = Cli::new()
        .args(["policy", "inspect", "--json"])
        .arg(&module)
        .run_ok();
    let report: Value = serde_json::from_str(&out.stdout).expect("inspect JSON");
    assert_eq!(
        report["world"], "portcullis:policy/policy@0.1.0",
        "{report}"
    );
    assert_eq!(report["compatible"], true, "{report}");
    assert_eq!(report["describe"], false, "{report}");

    let up = Upstream::rust(&[]);
    add_upstream_tools(&up.url, &["whoami_guard"]).await;
    let (key, hash) = new_key();
    let cfg = config(&up, follow_live, Agent::new("agent", &hash))
        .policy(Policy::file(&module).name("legacy"))
        .render();
    let gw = Gateway::start(&cfg);
    let mut m = session(&gw.url(None), &key).await;
    let names = sorted_names(&mut m).await;
    assert!(names.contains(&"alpha.echo".to_string()), "{names:?}");
    assert!(!names.contains(&"alpha.whoami".to_string()), "{names:?}");

    // No tool named `guard` yet: check-call sees the tool list and denies.
    let msg = m.call("alpha.echo", json!({"text": "hi"})).await;
    assert_rpc_error(&msg, -32010, "legacy: denied");
    add_upstream_tools(&up.url, &["guard"]).await;
    echo_until_allowed(&mut m).await;
    // The arguments reach it, on every call.
    for text in ["forbidden", "fine", "forbidden"] {
        let msg = m.call("alpha.echo", json!({ "text": text })).await;
        if text == "forbidden" {
            assert_rpc_error(&msg, -32010, "legacy: denied");
        } else {
            assert_call_ok(&msg);
        }
    }
    let text = metrics(&gw).await;
    assert_eq!(
        sample(&text, "portcullis_policy_cached_decisions_total", &[]),
        0.0,
        "{text}"
    );
    // check-result runs for it (it cannot say it has none): once per forwarded call.
    assert!(
        evaluations(&text, "legacy", "check_result") >= 2.0,
        "{text}"
    );
}
