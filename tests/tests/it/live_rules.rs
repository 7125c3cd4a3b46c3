//! Rules that change without a restart (issue 22, first part): a connector's
//! `disabled_tools` and the orgs' quotas follow a config edit in the running gateway;
//! open sessions see the change at their next request (and `list_changed` on their
//! GET stream) and are kept; a bad edit keeps the last good rules.

use std::time::{Duration, Instant};

use portcullis_tests::client::wait_stream_message;
use portcullis_tests::fixtures::write_by_rename;
use portcullis_tests::rpc::assert_rpc_error;
use portcullis_tests::{Agent, Config, Connector, Gateway, Mcp, Policy, Upstream, new_key};
use serde_json::json;

const QUOTA: &str = "[[orgs]]\nid = \"acme\"\nquota = { calls = 1, per = \"day\" }";

fn config(upstream: &str, hash: &str, disabled: &[&str], extra: &str) -> String {
    Config::new()
        .connector(Connector::new("conn_test", "Test Upstream", upstream).disabled_tools(disabled))
        .agent(Agent::new("agent", hash))
        .policy(Policy::new("builtin:blocklist"))
        .raw(extra)
        .render()
}

/// Lists until `pred` holds for the agent's tool names (bounded: 10 s).
async fn wait_names(mcp: &mut Mcp, pred: impl Fn(&[String]) -> bool) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let names = mcp.tool_names().await;
        if pred(&names) || Instant::now() > deadline {
            return names;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn disabled_tools_and_quotas_reload_without_a_restart() {
    let up = Upstream::rust(&[]);
    let (key, hash) = new_key();
    let gw = Gateway::start(&config(&up.url, &hash, &[], ""));
    let mut mcp = Mcp::new(&gw.url(None), &key);
    mcp.initialize().await;
    let session = mcp.session.clone();
    let mut stream = mcp.open_stream().await.into_body();
    let echo = "test-upstream.echo".to_string();
    assert!(mcp.tool_names().await.contains(&echo));

    write_by_rename(
        &gw.config_path,
        config(&up.url, &hash, &["echo"], QUOTA).as_bytes(),
    );
    let note = wait_stream_message(&mut stream, Duration::from_secs(10), |m| {
        m["method"] == "notifications/tools/list_changed"
    })
    .await;
    assert!(note.is_some(), "no list_changed after the reload");
    let names = wait_names(&mut mcp, |n| !n.contains(&echo)).await;
    assert!(!names.contains(&echo), "echo still listed: {names:?}");
    assert!(
        names.contains(&"test-upstream.sleep".to_string()),
        "{names:?}"
    );
    let msg = mcp.call(&echo, json!({"text": "x"})).await;
    assert_rpc_error(&msg, -32601, "Tool not found");
    // The org's new quota: one call a day.
    let first = mcp.call("test-upstream.sleep", json!({"ms": 0})).await;
    assert!(first.get("result").is_some(), "{first}");
    let second = mcp.call("test-upstream.sleep", json!({"ms": 0})).await;
    assert_rpc_error(
        &second,
        -32000,
        "API quota exceeded. Upgrade your plan to continue.",
    );
    assert_eq!(mcp.session, session, "the session is kept");

    // A bad edit (an unknown key) keeps the last good rules.
    let bad = config(&up.url, &hash, &[], QUOTA).replace("[server]\n", "[server]\nbogus = 1\n");
    write_by_rename(&gw.config_path, bad.as_bytes());
    portcullis_tests::audit_lines::wait_lines(
        &gw.proc,
        "config reload failed",
        1,
        Duration::from_secs(10),
    )
    .await;
    let names = mcp.tool_names().await;
    assert!(
        !names.contains(&echo),
        "a failed reload changed the rules: {names:?}"
    );
}
