//! Real peers on both sides of the gateway: server-everything (npm) and the Python
//! `mcp` server behind it; the Python `mcp` client and the Inspector CLI in front of
//! it, on `/mcp` (slug-prefixed names) and `/mcp/<id>` (upstream names), with `.` and
//! `__` as the separator. Also: which credential travels upstream.

use portcullis_tests::config::toml_str;
use portcullis_tests::procs::{inspector, py_client};
use portcullis_tests::{Agent, Config, Connector, Gateway, Mcp, Upstream, new_key};
use serde_json::{Value, json};

const FAST_TOKEN: &str = "fastmcp-upstream-token-5f2c";

/// server-everything and the Python upstream (which requires its bearer token) behind
/// one gateway with the given separator.
struct Setup {
    gw: Gateway,
    key: String,
    fast: Upstream,
    _everything: Upstream,
}

fn setup(sep: &str) -> Setup {
    let everything = Upstream::everything();
    let fast = Upstream::fastmcp(&["--require-bearer", FAST_TOKEN]);
    let (key, hash) = new_key();
    let config = Config::new()
        .server(&format!("tool_separator = {}", toml_str(sep)))
        .connector(Connector::new(
            "conn_everything",
            "Everything Server",
            &everything.url,
        ))
        .connector(Connector::new("conn_fast", "Fast MCP", &fast.url).credential("env:FAST_TOKEN"))
        .agent(Agent::new("reporter", &hash));
    let gw = Gateway::start_with_env(&config.render(), &[("FAST_TOKEN", FAST_TOKEN)]);
    Setup {
        gw,
        key,
        fast,
        _everything: everything,
    }
}

fn tools_of(v: &Value) -> Vec<Value> {
    v["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("no tools array: {v}"))
        .clone()
}

fn find<'a>(tools: &'a [Value], name: &str) -> &'a Value {
    tools.iter().find(|t| t["name"] == name).unwrap_or_else(|| {
        let names: Vec<_> = tools.iter().map(|t| t["name"].clone()).collect();
        panic!("no tool {name} in {names:?}")
    })
}

/// `tool` with its name replaced.
fn renamed(tool: &Value, name: &str) -> Value {
    let mut t = tool.clone();
    t["name"] = json!(name);
    t
}

fn text_of(result: &Value) -> &str {
    result["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("no text content: {result}"))
}

fn python_client_through_the_gateway(sep: &str) {
    let s = setup(sep);
    let all = s.gw.url(None);
    let fast_ep = s.gw.url(Some("conn_fast"));
    let every_ep = s.gw.url(Some("conn_everything"));

    // What the Python upstream itself lists, read by the same client directly.
    let direct = tools_of(&py_client(&s.fast.url, FAST_TOKEN, &["list"]));
    assert_eq!(direct.len(), 9, "{direct:?}");

    // /mcp/<id>: upstream names, tools unchanged.
    let one = tools_of(&py_client(&fast_ep, &s.key, &["list"]));
    assert_eq!(
        one, direct,
        "tools on /mcp/conn_fast must be the upstream's, unchanged"
    );

    // /mcp: every connector, slug-prefixed, otherwise unchanged.
    let merged = tools_of(&py_client(&all, &s.key, &["list"]));
    for t in &direct {
        let name = format!("fast-mcp{sep}{}", t["name"].as_str().unwrap());
        assert_eq!(find(&merged, &name), &renamed(t, &name));
    }
    let unannotated = find(&merged, &format!("fast-mcp{sep}unannotated_tool"));
    assert!(
        unannotated.get("annotations").is_none(),
        "no annotations key may be invented: {unannotated}"
    );
    let delete = find(&merged, &format!("fast-mcp{sep}delete_item"));
    assert_eq!(delete["annotations"]["destructiveHint"], true, "{delete}");
    assert_eq!(delete["annotations"]["readOnlyHint"], false, "{delete}");
    let echo = find(&merged, &format!("everything-server{sep}echo"));
    assert_eq!(echo["annotations"]["readOnlyHint"], true, "{echo}");
    let everything_names = merged
        .iter()
        .filter(|t| {
            t["name"]
                .as_str()
                .unwrap()
                .starts_with(&format!("everything-server{sep}"))
        })
        .count();
    assert_eq!(everything_names, 13, "{merged:?}");
    assert_eq!(merged.len(), 13 + 9);

    // Calls on /mcp.
    let r = py_client(
        &all,
        &s.key,
        &["call", &format!("fast-mcp{sep}get_item"), r#"{"id":"2"}"#],
    );
    assert_eq!(r["isError"], false, "{r}");
    assert_eq!(r["structuredContent"], json!({"id": "2", "name": "beta"}));
    let r = py_client(
        &all,
        &s.key,
        &[
            "call",
            &format!("everything-server{sep}get-sum"),
            r#"{"a":1,"b":2}"#,
        ],
    );
    assert_eq!(text_of(&r), "The sum of 1 and 2 is 3.", "{r}");
    let r = py_client(&all, &s.key, &["call", &format!("nope{sep}get-sum"), "{}"]);
    assert_eq!(r["error"]["code"], -32601, "{r}");

    // Calls on /mcp/<id>.
    let r = py_client(&fast_ep, &s.key, &["call", "delete_item", r#"{"id":"1"}"#]);
    assert_eq!(r["structuredContent"], json!({"deleted": "1"}), "{r}");
    let r = py_client(
        &every_ep,
        &s.key,
        &["call", "echo", r#"{"message":"via id"}"#],
    );
    assert_eq!(text_of(&r), "Echo: via id", "{r}");
}

#[test]
fn python_client_with_dot_separator() {
    python_client_through_the_gateway(".");
}

#[test]
fn python_client_with_double_underscore_separator() {
    python_client_through_the_gateway("__");
}

fn inspector_ok(url: &str, key: &str, args: &[&str]) -> Value {
    let (code, out, err) = inspector(url, key, args);
    assert_eq!(
        code, 0,
        "inspector {args:?}: exit {code}\nstdout: {out}\nstderr: {err}"
    );
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("inspector output not JSON ({e}): {out}"))
}

fn inspector_through_the_gateway(sep: &str) {
    let s = setup(sep);
    let all = s.gw.url(None);
    let fast_ep = s.gw.url(Some("conn_fast"));
    let every_ep = s.gw.url(Some("conn_everything"));

    let merged = tools_of(&inspector_ok(&all, &s.key, &["--method", "tools/list"]));
    assert_eq!(merged.len(), 13 + 9, "{merged:?}");
    let unannotated = find(&merged, &format!("fast-mcp{sep}unannotated_tool"));
    assert!(unannotated.get("annotations").is_none(), "{unannotated}");
    let delete = find(&merged, &format!("fast-mcp{sep}delete_item"));
    assert_eq!(delete["annotations"]["destructiveHint"], true, "{delete}");

    let one = tools_of(&inspector_ok(&fast_ep, &s.key, &["--method", "tools/list"]));
    for t in &one {
        let name = format!("fast-mcp{sep}{}", t["name"].as_str().unwrap());
        assert_eq!(find(&merged, &name), &renamed(t, &name));
    }
    assert_eq!(one.len(), 9);

    let name = format!("everything-server{sep}get-sum");
    let r = inspector_ok(
        &all,
        &s.key,
        &[
            "--method",
            "tools/call",
            "--tool-name",
            &name,
            "--tool-arg",
            "a=1",
            "b=2",
        ],
    );
    assert_eq!(text_of(&r), "The sum of 1 and 2 is 3.", "{r}");
    let name = format!("fast-mcp{sep}get_item");
    let r = inspector_ok(
        &all,
        &s.key,
        &[
            "--method",
            "tools/call",
            "--tool-name",
            &name,
            "--tool-arg",
            "id=\"3\"",
        ],
    );
    assert_eq!(
        r["structuredContent"],
        json!({"id": "3", "name": "gamma"}),
        "{r}"
    );

    let r = inspector_ok(
        &fast_ep,
        &s.key,
        &[
            "--method",
            "tools/call",
            "--tool-name",
            "unannotated_tool",
            "--tool-arg",
            "x=\"y\"",
        ],
    );
    assert_eq!(r["structuredContent"], json!({"x": "y"}), "{r}");
    let r = inspector_ok(
        &every_ep,
        &s.key,
        &[
            "--method",
            "tools/call",
            "--tool-name",
            "get-sum",
            "--tool-arg",
            "a=2",
            "b=5",
        ],
    );
    assert_eq!(text_of(&r), "The sum of 2 and 5 is 7.", "{r}");

    // A tool the gateway does not list is not called at all (exit 5, tool_not_found).
    let (code, _, err) = inspector(
        &all,
        &s.key,
        &[
            "--method",
            "tools/call",
            "--tool-name",
            "get-sum",
            "--tool-arg",
            "a=1",
            "b=2",
        ],
    );
    assert_eq!(code, 5, "{err}");
    // A wrong key is an auth failure (exit 3).
    let (code, _, err) = inspector(&all, "pc_wrong", &["--method", "tools/list"]);
    assert_eq!(code, 3, "{err}");
}

#[test]
fn inspector_with_dot_separator() {
    inspector_through_the_gateway(".");
}

#[test]
fn inspector_with_double_underscore_separator() {
    inspector_through_the_gateway("__");
}

#[tokio::test]
async fn agent_key_is_never_sent_upstream() {
    const SECRET: &str = "upstream-secret-9d41e";
    // This upstream refuses every request without the connector's credential.
    let with_cred = Upstream::rust(&["--require-bearer", SECRET]);
    let without = Upstream::rust(&[]);
    let (key, hash) = new_key();
    let config = Config::new()
        .connector(
            Connector::new("conn_cred", "With Cred", &with_cred.url)
                .credential("env:UPSTREAM_TOKEN"),
        )
        .connector(Connector::new("conn_plain", "Plain", &without.url))
        .agent(Agent::new("reporter", &hash));
    let gw = Gateway::start_with_env(&config.render(), &[("UPSTREAM_TOKEN", SECRET)]);

    let mut all = Mcp::new(&gw.url(None), &key);
    all.initialize().await;
    let names = all.tool_names().await;
    assert!(names.contains(&"with-cred.whoami".to_string()), "{names:?}");

    let msg = all.call("with-cred.whoami", json!({})).await;
    let seen = &msg["result"]["structuredContent"];
    assert_eq!(seen["authorization"], format!("Bearer {SECRET}"), "{msg}");
    assert!(!msg.to_string().contains(&key), "{msg}");

    let msg = all.call("plain.whoami", json!({})).await;
    let seen = &msg["result"]["structuredContent"];
    assert!(seen.is_object(), "{msg}");
    assert_eq!(
        seen["authorization"],
        Value::Null,
        "no credential configured: nothing may be sent: {msg}"
    );

    let mut one = Mcp::new(&gw.url(Some("conn_cred")), &key);
    one.initialize().await;
    let msg = one.call("whoami", json!({})).await;
    assert_eq!(
        msg["result"]["structuredContent"]["authorization"],
        format!("Bearer {SECRET}"),
        "{msg}"
    );
    let mut one = Mcp::new(&gw.url(Some("conn_plain")), &key);
    one.initialize().await;
    let msg = one.call("whoami", json!({})).await;
    assert_eq!(
        msg["result"]["structuredContent"]["authorization"],
        Value::Null,
        "{msg}"
    );

    // The gateway never prints the connector's secret or the agent's key.
    let out = gw.proc.output();
    assert!(!out.contains(SECRET), "credential in the gateway output");
    assert!(!out.contains(&key), "API key in the gateway output");
}

/// Every HTTP request the Python upstream receives (initialize, notifications,
/// tools/list, tools/call, GET, DELETE) carries the connector's credential and never
/// the agent's key.
#[test]
fn every_upstream_request_carries_only_the_connector_credential() {
    let fast = Upstream::fastmcp(&["--require-bearer", FAST_TOKEN, "--log-requests"]);
    let (key, hash) = new_key();
    let config = Config::new()
        .connector(Connector::new("conn_fast", "Fast MCP", &fast.url).credential("env:FAST_TOKEN"))
        .agent(Agent::new("reporter", &hash));
    let gw = Gateway::start_with_env(&config.render(), &[("FAST_TOKEN", FAST_TOKEN)]);
    let r = py_client(
        &gw.url(None),
        &key,
        &[
            "call",
            "fast-mcp.send_message",
            r#"{"channel":"c","text":"t"}"#,
        ],
    );
    assert_eq!(r["structuredContent"]["sent"], true, "{r}");
    let r = py_client(
        &gw.url(Some("conn_fast")),
        &key,
        &["call", "post_note", r#"{"text":"n"}"#],
    );
    assert_eq!(r["structuredContent"]["posted"], true, "{r}");

    let requests = portcullis_tests::upstreams::logged_requests(&fast.proc);
    let methods: Vec<String> = requests
        .iter()
        .map(|r| {
            let body: Value =
                serde_json::from_str(r["body"].as_str().unwrap_or("")).unwrap_or_default();
            body["method"].as_str().unwrap_or("").to_string()
        })
        .collect();
    for m in [
        "initialize",
        "notifications/initialized",
        "tools/list",
        "tools/call",
    ] {
        assert!(
            methods.iter().any(|x| x == m),
            "upstream never got {m}: {methods:?}"
        );
    }
    for r in &requests {
        assert_eq!(
            r["headers"]["authorization"],
            format!("Bearer {FAST_TOKEN}"),
            "{r}"
        );
        assert!(
            !r.to_string().contains(&key),
            "agent key sent upstream: {r}"
        );
    }
}

/// server-everything's progress notifications reach the agent on the POST's SSE
/// stream, before the result.
#[tokio::test]
async fn server_everything_progress_is_relayed() {
    let everything = Upstream::everything();
    let (key, hash) = new_key();
    let config = Config::new()
        .connector(Connector::new(
            "conn_everything",
            "Everything Server",
            &everything.url,
        ))
        .agent(Agent::new("reporter", &hash));
    let gw = Gateway::start(&config.render());
    let mut mcp = Mcp::new(&gw.url(None), &key);
    mcp.initialize().await;
    let body = json!({"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {
        "name": "everything-server.trigger-long-running-operation",
        "arguments": {"duration": 1, "steps": 4},
        "_meta": {"progressToken": "ev-1"}}})
    .to_string();
    let resp = mcp.post(&body, &[]).await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert!(resp.is_sse(), "{:?}", resp.header("content-type"));
    let msgs = resp.messages();
    let progress: Vec<&Value> = msgs
        .iter()
        .filter(|m| m["method"] == "notifications/progress")
        .collect();
    assert_eq!(progress.len(), 4, "{msgs:#?}");
    assert!(
        progress
            .iter()
            .all(|p| p["params"]["progressToken"] == "ev-1")
    );
    let last = msgs.last().unwrap();
    assert_eq!(last["id"], 5, "the result comes last: {msgs:#?}");
    assert!(last["result"]["content"].is_array(), "{last}");
}

/// The Python upstream's JSON-RPC error and its isError result are relayed as such.
#[tokio::test]
async fn python_upstream_errors_are_relayed() {
    let fast = Upstream::fastmcp(&["--test-tools"]);
    let (key, hash) = new_key();
    let config = Config::new()
        .connector(Connector::new("conn_fast", "Fast MCP", &fast.url))
        .agent(Agent::new("reporter", &hash));
    let gw = Gateway::start(&config.render());
    let mut mcp = Mcp::new(&gw.url(None), &key);
    mcp.initialize().await;
    let msg = mcp
        .call(
            "fast-mcp.rpc_error",
            json!({"code": -32011, "message": "python says no"}),
        )
        .await;
    assert_eq!(msg["error"]["code"], -32011, "{msg}");
    assert_eq!(msg["error"]["message"], "python says no", "{msg}");
    let msg = mcp.call("fast-mcp.fail_tool", json!({})).await;
    assert_eq!(msg["result"]["isError"], true, "{msg}");
    let msg = mcp
        .call("fast-mcp.slow_echo", json!({"text": "t", "seconds": 0.1}))
        .await;
    assert_eq!(
        msg["result"]["structuredContent"],
        json!({"text": "t"}),
        "{msg}"
    );
}

/// `mcp.Client`'s default (`--mode auto`) first probes `server/discover` at 2026-07-28;
/// the gateway must refuse that cleanly so the client falls back to initialize.
#[test]
fn python_client_auto_mode_falls_back_to_initialize() {
    let up = Upstream::rust(&[]);
    let (key, hash) = new_key();
    let config = Config::new()
        .connector(Connector::new("conn_test", "Test Upstream", &up.url))
        .agent(Agent::new("reporter", &hash));
    let gw = Gateway::start(&config.render());
    let tools = tools_of(&py_client(&gw.url(None), &key, &["--mode", "auto", "list"]));
    assert!(
        tools.iter().any(|t| t["name"] == "test-upstream.echo"),
        "{tools:?}"
    );
    let r = py_client(
        &gw.url(Some("conn_test")),
        &key,
        &["--mode", "auto", "call", "echo", r#"{"text":"auto"}"#],
    );
    assert_eq!(r["structuredContent"], json!({"text": "auto"}), "{r}");
}
