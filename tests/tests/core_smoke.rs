//! Smoke test of the harness and the gateway's happy path: the in-repo upstream
//! behind the real binary, on both endpoints.

use portcullis_tests::{Gateway, Mcp, Upstream, new_key};
use serde_json::json;

fn config(upstream: &str, hash: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
[[connectors]]
id = "conn_test"
name = "Test Upstream"
target_url = "{upstream}"
[[agents]]
id = "reporter"
org = "acme"
key_sha256 = "{hash}"
scopes = ["mcp:call"]
"#
    )
}

#[tokio::test]
async fn lists_and_calls_on_both_endpoints() {
    let up = Upstream::rust(&[]);
    let (key, hash) = new_key();
    let gw = Gateway::start(&config(&up.url, &hash));

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
