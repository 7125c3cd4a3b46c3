//! JSON-RPC batches through the real binary: accepted in sessions of MCP 2025-03-26
//! (which requires servers to receive them) member by member, with each call checked
//! against the quota on its own; answered as a JSON array, or as one event stream when
//! an upstream sends progress; refused in sessions of later revisions. And the other
//! way: an upstream that batches what it sends is read message by message.

use std::time::Duration;

use portcullis_tests::audit_lines::{field, wait_audit};
use portcullis_tests::client::sse_data;
use portcullis_tests::rpc::raw_member;
use portcullis_tests::upstreams::batching_upstream;
use portcullis_tests::{Agent, Config, Connector, Gateway, Mcp, Response, Upstream, new_key};
use serde_json::{Value, json};

const QUOTA_MESSAGE: &str = "API quota exceeded. Upgrade your plan to continue.";

/// A gateway in front of one Rust upstream (slug `test-upstream`) whose org may make
/// `calls` tool calls a day; returns the agent's key.
fn gateway(up: &Upstream, calls: u32) -> (Gateway, String) {
    let (key, hash) = new_key();
    let config = Config::new()
        .org("acme", &format!("{{ calls = {calls}, per = \"day\" }}"))
        .connector(Connector::new("conn_test", "Test Upstream", &up.url))
        .agent(Agent::new("reporter", &hash));
    (Gateway::start(&config.render()), key)
}

/// A session that negotiated `version`.
async fn session(gw: &Gateway, key: &str, version: &str) -> Mcp {
    let mut mcp = Mcp::new(&gw.url(None), key);
    mcp.version = version.to_string();
    mcp.initialize().await;
    assert_eq!(mcp.version, version, "the gateway speaks {version}");
    mcp
}

fn request(id: Value, method: &str, params: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
}

fn echo(id: i64, text: &str) -> Value {
    request(
        json!(id),
        "tools/call",
        json!({"name": "test-upstream.echo", "arguments": {"text": text}}),
    )
}

async fn post_batch(mcp: &Mcp, members: &[Value]) -> Response {
    mcp.post(&Value::Array(members.to_vec()).to_string(), &[])
        .await
}

fn array(resp: &Response) -> Vec<Value> {
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert!(!resp.is_sse(), "a JSON answer: {}", resp.body);
    match serde_json::from_str(&resp.body) {
        Ok(Value::Array(items)) => items,
        _ => panic!("a JSON array of responses: {}", resp.body),
    }
}

fn error_of(resp: &Response) -> (u16, i64, String) {
    let v: Value = serde_json::from_str(&resp.body)
        .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", resp.body));
    let code = v["error"]["code"]
        .as_i64()
        .unwrap_or_else(|| panic!("no JSON-RPC error: {v}"));
    let message = v["error"]["message"].as_str().unwrap_or("").to_string();
    (resp.status, code, message)
}

#[tokio::test]
async fn a_2025_03_26_batch_is_answered_member_by_member() {
    let up = Upstream::rust(&[]);
    let (gw, key) = gateway(&up, 3);
    let mcp = session(&gw, &key, "2025-03-26").await;

    // Requests, a notification, a response, a malformed member and a batched
    // initialize: one answer per request (in the batch's order), one error for each
    // bad member, nothing for the notification and the response.
    let resp = post_batch(
        &mcp,
        &[
            request(json!(1), "ping", json!({})),
            request(json!("list"), "tools/list", json!({})),
            json!({"jsonrpc": "2.0", "method": "notifications/roots/list_changed"}),
            echo(3, "batched"),
            json!(42),
            json!({"jsonrpc": "2.0", "id": "from-client", "result": {}}),
            request(
                json!(5),
                "initialize",
                json!({"protocolVersion": "2025-03-26",
                "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}),
            ),
            request(json!(6), "resources/list", json!({})),
        ],
    )
    .await;
    let answers = array(&resp);
    let ids: Vec<&Value> = answers.iter().map(|a| &a["id"]).collect();
    assert_eq!(
        ids,
        [
            &json!(1),
            &json!("list"),
            &json!(3),
            &Value::Null,
            &json!(5),
            &json!(6)
        ],
        "{answers:?}"
    );
    assert_eq!(answers[0]["result"], json!({}));
    let tools = answers[1]["result"]["tools"]
        .as_array()
        .expect("a tool list");
    assert!(
        tools.iter().any(|t| t["name"] == "test-upstream.echo"),
        "{tools:?}"
    );
    assert_eq!(
        answers[2]["result"]["structuredContent"],
        json!({"text": "batched"}),
        "{}",
        answers[2]
    );
    assert_eq!(
        answers[2]["result"]["x-upstream-extra"],
        json!({"kept": true}),
        "unknown fields kept"
    );
    assert_eq!(answers[3]["error"]["code"], -32600, "{}", answers[3]);
    assert_eq!(answers[4]["error"]["code"], -32600, "{}", answers[4]);
    assert_eq!(
        answers[4]["error"]["message"],
        "Invalid Request: initialize must not be part of a JSON-RPC batch",
        "{}",
        answers[4]
    );
    assert_eq!(answers[5]["error"]["code"], -32601, "{}", answers[5]);

    // Each call is counted on its own: two of the org's three calls are left, so the
    // third call of this batch is refused with the documented error and audited 429.
    let answers = array(&post_batch(&mcp, &[echo(7, "a"), echo(8, "b"), echo(9, "c")]).await);
    assert_eq!(answers.len(), 3, "{answers:?}");
    let passed = answers.iter().filter(|a| a["result"].is_object()).count();
    let refused: Vec<&Value> = answers
        .iter()
        .filter(|a| a["error"]["code"] == -32000 && a["error"]["message"] == QUOTA_MESSAGE)
        .collect();
    assert_eq!((passed, refused.len()), (2, 1), "{answers:?}");
    wait_audit(&gw, Duration::from_secs(10), |l| {
        field(l, "status").as_deref() == Some("429")
    });

    // Only notifications and responses: 202 with no body.
    let resp = post_batch(
        &mcp,
        &[
            json!({"jsonrpc": "2.0", "method": "notifications/roots/list_changed"}),
            json!({"jsonrpc": "2.0", "id": 1, "error": {"code": -1, "message": "no"}}),
        ],
    )
    .await;
    assert_eq!((resp.status, resp.body.as_str()), (202, ""));

    // An empty batch, a batch of more than 100 messages, and one that is not JSON:
    // one JSON-RPC error for the whole POST.
    let (status, code, _) = error_of(&mcp.post("[ ]", &[]).await);
    assert_eq!((status, code), (400, -32600));
    let pings: Vec<Value> = (0..101)
        .map(|i| request(json!(i), "ping", json!({})))
        .collect();
    let (status, code, message) = error_of(&post_batch(&mcp, &pings).await);
    assert_eq!((status, code), (400, -32600), "{message}");
    assert!(message.contains("at most 100"), "{message}");
    assert_eq!(array(&post_batch(&mcp, &pings[..100]).await).len(), 100);
    let (status, code, _) = error_of(&mcp.post(r#"[{"jsonrpc":"2.0","id":1,"#, &[]).await);
    assert_eq!((status, code), (400, -32700));

    // A batch needs a session like any other message.
    let mut stranger = Mcp::new(&gw.url(None), &key);
    stranger.version = "2025-03-26".into();
    let resp = post_batch(&stranger, &[request(json!(1), "ping", json!({}))]).await;
    assert_eq!(resp.status, 400, "{}", resp.body);
}

#[tokio::test]
async fn a_batch_streams_progress_when_the_client_accepts_sse() {
    let up = Upstream::rust(&[]);
    let (gw, key) = gateway(&up, 100);
    let mcp = session(&gw, &key, "2025-03-26").await;
    let progress = request(
        json!("p"),
        "tools/call",
        json!({"name": "test-upstream.progress", "arguments": {"steps": 2},
               "_meta": {"progressToken": "tok"}}),
    );
    let resp = post_batch(&mcp, &[request(json!(1), "ping", json!({})), progress]).await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert!(resp.is_sse(), "an event stream: {}", resp.body);
    let messages = resp.messages();
    let progress_events: Vec<&Value> = messages
        .iter()
        .filter(|m| m["method"] == "notifications/progress")
        .collect();
    assert_eq!(progress_events.len(), 2, "{messages:?}");
    assert!(
        progress_events
            .iter()
            .all(|m| m["params"]["progressToken"] == "tok")
    );
    let answered: Vec<&Value> = messages
        .iter()
        .filter(|m| m.get("result").is_some())
        .map(|m| &m["id"])
        .collect();
    assert_eq!(answered.len(), 2, "{messages:?}");
    assert!(answered.contains(&&json!(1)) && answered.contains(&&json!("p")));
    let done = messages
        .iter()
        .position(|m| m["id"] == "p")
        .expect("the call's answer");
    let before = messages[..done]
        .iter()
        .filter(|m| m["method"] == "notifications/progress")
        .count();
    assert_eq!(before, 2, "progress comes before the answer: {messages:?}");

    // A client that accepts only JSON gets the array, without the progress.
    let body = Value::Array(vec![request(
        json!("q"),
        "tools/call",
        json!({"name": "test-upstream.progress", "arguments": {"steps": 1},
               "_meta": {"progressToken": "tok"}}),
    )])
    .to_string();
    let resp = mcp.post(&body, &[("accept", "application/json")]).await;
    let answers = array(&resp);
    assert_eq!(answers.len(), 1, "{answers:?}");
    assert_eq!(answers[0]["id"], "q");
    assert!(answers[0]["result"].is_object(), "{}", answers[0]);
}

#[tokio::test]
async fn later_revisions_refuse_batches() {
    let up = Upstream::rust(&[]);
    let (gw, key) = gateway(&up, 100);
    for version in ["2025-06-18", "2025-11-25"] {
        let mcp = session(&gw, &key, version).await;
        let resp = post_batch(&mcp, &[request(json!(1), "ping", json!({}))]).await;
        let (status, code, message) = error_of(&resp);
        assert_eq!((status, code), (400, -32600), "{version}: {message}");
        assert!(
            message.contains(version) && message.contains("2025-03-26"),
            "{version}: {message}"
        );
        // The session still answers single messages.
        let mut mcp = mcp;
        assert_eq!(mcp.request("ping", json!({})).await["result"], json!({}));
    }
}

#[tokio::test]
async fn an_upstream_that_batches_its_messages_is_read_one_by_one() {
    let url = batching_upstream().await;
    let (key, hash) = new_key();
    let gw = Gateway::start(
        &Config::new()
            .connector(Connector::new("conn_batching", "Batching", &url))
            .agent(Agent::new("reporter", &hash))
            .render(),
    );
    let mut mcp = Mcp::new(&gw.url(None), &key);
    mcp.initialize().await;
    // tools/list answered with a batch of one.
    assert_eq!(mcp.tool_names().await, ["batching.batched"]);
    // A call answered by two SSE events, each a batch: both progress notifications
    // reach the agent before the result, whose bytes are relayed as written.
    let resp = mcp
        .request_raw(
            "tools/call",
            json!({"name": "batching.batched", "arguments": {},
                   "_meta": {"progressToken": "tok"}}),
        )
        .await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert!(resp.is_sse(), "progress came first: {}", resp.body);
    let events = sse_data(&resp.body);
    assert_eq!(events.len(), 3, "{events:?}");
    for (n, event) in events[..2].iter().enumerate() {
        let note: Value = serde_json::from_str(event).unwrap();
        assert_eq!(note["method"], "notifications/progress", "{note}");
        assert_eq!(note["params"]["progressToken"], "tok", "{note}");
        assert_eq!(note["params"]["progress"], n as u64 + 1, "{note}");
    }
    assert_eq!(
        raw_member(&events[2], "result").as_deref(),
        Some(r#"{"content":[],"order": "kept" ,"n":1e2}"#),
        "{}",
        events[2]
    );
}
