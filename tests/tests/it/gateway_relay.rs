//! Server-to-client requests (sampling, elicitation) that server-everything sends
//! while its tools run, relayed to the agent on the call's SSE stream and answered
//! back through the gateway (`relay_requests`): with the real Python client, with a
//! raw client that reads the relayed request and answers it, and every refusal
//! (connector not relaying, agent without the capability, JSON-only request, no
//! answer in time), each audited.

use std::time::Duration;

use portcullis_tests::audit_lines::{field, wait_audit};
use portcullis_tests::procs::py_client;
use portcullis_tests::sse::{SseReader, post_streaming};
use portcullis_tests::{Agent, Config, Connector, Gateway, Mcp, Upstream, new_key};
use serde_json::{Value, json};

/// server-everything behind a gateway whose connector `tune` sets up.
fn setup(tune: impl FnOnce(Connector) -> Connector) -> (Gateway, String, Upstream) {
    let everything = Upstream::everything();
    let (key, hash) = new_key();
    let connector = Connector::new("conn_everything", "Everything Server", &everything.url);
    let config = Config::new()
        .connector(tune(connector))
        .agent(Agent::new("reporter", &hash));
    (Gateway::start(&config.render()), key, everything)
}

/// The audit line of a relayed request (`method`) with this status.
fn wait_relay_audit(gw: &Gateway, method: &str, status: u16) -> String {
    wait_audit(gw, Duration::from_secs(20), |l| {
        field(l, "method").as_deref() == Some(method)
            && field(l, "status").as_deref() == Some(&status.to_string())
    })
}

fn call_body(id: i64, tool: &str, args: Value) -> String {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
           "params": {"name": tool, "arguments": args}})
    .to_string()
}

#[test]
fn python_client_answers_sampling_and_elicitation_through_the_gateway() {
    let (gw, key, _everything) = setup(|c| c.relay_requests(&["sampling", "elicitation"]));
    let out = py_client(
        &gw.url(None),
        &key,
        &[
            "--sampling-reply",
            "relayed by portcullis",
            "call",
            "everything-server.trigger-sampling-request",
            r#"{"prompt":"hello","maxTokens":7}"#,
        ],
    );
    assert_eq!(out["isError"], false, "{out}");
    let text = out["content"][0]["text"].as_str().unwrap_or_default();
    assert!(
        text.contains("relayed by portcullis") && text.contains("portcullis-test-model"),
        "the upstream got the agent's answer: {out}"
    );
    // The agent saw the upstream's request as it was sent.
    assert_eq!(
        out["serverRequests"],
        json!([{"method": "sampling/createMessage", "params": {
            "messages": [{"role": "user", "content": {"type": "text",
                "text": "Resource trigger-sampling-request context: hello"}}],
            "systemPrompt": "You are a helpful test server.",
            "temperature": 0.7,
            "maxTokens": 7}}]),
        "{out}"
    );
    let line = wait_relay_audit(&gw, "sampling/createMessage", 200);
    assert_eq!(
        field(&line, "connector").as_deref(),
        Some("conn_everything")
    );
    assert_eq!(
        field(&line, "tool").as_deref(),
        Some("trigger-sampling-request")
    );
    assert_eq!(field(&line, "agent").as_deref(), Some("reporter"));

    // Elicitation on /mcp/<id>, declined by the user.
    let out = py_client(
        &gw.url(Some("conn_everything")),
        &key,
        &[
            "--elicit-reply",
            r#"{"action":"decline"}"#,
            "call",
            "trigger-elicitation-request",
            "{}",
        ],
    );
    assert_eq!(out["isError"], false, "{out}");
    assert!(
        out["content"][0]["text"]
            .as_str()
            .is_some_and(|t| t.contains("declined")),
        "{out}"
    );
    assert_eq!(out["serverRequests"][0]["method"], "elicitation/create");
    assert_eq!(
        out["serverRequests"][0]["params"]["requestedSchema"]["properties"]["firstLine"]["default"],
        "It was a dark and stormy night.",
        "{out}"
    );
    wait_relay_audit(&gw, "elicitation/create", 200);
}

/// A session of an agent that declared sampling.
async fn sampling_agent(gw: &Gateway, key: &str) -> Mcp {
    let mut mcp = Mcp::new(&gw.url(None), key);
    mcp.capabilities = json!({"sampling": {}});
    mcp.initialize().await;
    mcp
}

/// Calls server-everything's sampling tool (request `id`, `args`) on a streaming
/// POST; the stream, and the relayed request that came first on it.
async fn ask_sampling(mcp: &Mcp, id: i64, args: Value) -> (SseReader, Value) {
    let body = call_body(id, "everything-server.trigger-sampling-request", args);
    let resp = post_streaming(mcp, &body).await;
    assert_eq!(resp.status(), 200);
    let mut sse = SseReader::new(resp.into_body());
    let asked = sse
        .next(Duration::from_secs(20))
        .await
        .expect("the relayed request");
    assert_eq!(asked["method"], "sampling/createMessage", "{asked}");
    (sse, asked)
}

#[tokio::test]
async fn a_relayed_request_has_the_gateways_id_and_its_answer_goes_back_upstream() {
    let (gw, key, _everything) = setup(|c| c.relay_requests(&["sampling"]));
    let mcp = sampling_agent(&gw, &key).await;
    let (mut sse, asked) = ask_sampling(&mcp, 41, json!({"prompt": "raw", "maxTokens": 3})).await;
    assert_eq!(asked["id"], "portcullis-relay-0", "the gateway's own id");
    assert_eq!(asked["params"]["maxTokens"], 3, "{asked}");

    // An answer to an id the gateway never sent is accepted and dropped.
    let stray = json!({"jsonrpc": "2.0", "id": "portcullis-relay-99", "result": {}});
    assert_eq!(mcp.post(&stray.to_string(), &[]).await.status, 202);
    let answer = json!({"jsonrpc": "2.0", "id": "portcullis-relay-0", "result": {
        "role": "assistant", "model": "raw-model-1",
        "content": {"type": "text", "text": "answered by hand"}}});
    let posted = mcp.post(&answer.to_string(), &[]).await;
    assert_eq!(posted.status, 202, "{}", posted.body);
    let last = sse
        .next(Duration::from_secs(20))
        .await
        .expect("the call's result");
    assert_eq!(last["id"], 41, "{last}");
    let text = last["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default();
    assert!(
        text.contains("answered by hand") && text.contains("raw-model-1"),
        "{last}"
    );
    wait_relay_audit(&gw, "sampling/createMessage", 200);

    // An error answer reaches the upstream as an error.
    let (mut sse, asked) = ask_sampling(&mcp, 42, json!({"prompt": "no"})).await;
    assert_eq!(asked["id"], "portcullis-relay-1", "{asked}");
    let refusal = json!({"jsonrpc": "2.0", "id": "portcullis-relay-1",
        "error": {"code": -1, "message": "the user said no"}});
    assert_eq!(mcp.post(&refusal.to_string(), &[]).await.status, 202);
    let last = sse.next(Duration::from_secs(20)).await.expect("result");
    assert_eq!(last["id"], 42, "{last}");
    assert!(
        last.to_string().contains("the user said no"),
        "the upstream saw the agent's error: {last}"
    );
    // Its audit row is written once the answer went upstream: wait for it (the
    // first relay's row matched at once and raced it).
    let line = wait_audit(&gw, Duration::from_secs(20), |l| {
        field(l, "method").as_deref() == Some("sampling/createMessage")
            && field(l, "rpc_code").as_deref() == Some("-1")
    });
    assert_eq!(field(&line, "status").as_deref(), Some("200"), "{line}");
}

#[tokio::test]
async fn requests_are_relayed_only_where_connector_agent_and_request_allow() {
    // A connector that relays nothing declares nothing upstream: server-everything
    // then offers no sampling tool at all.
    let (gw, key, _everything) = setup(|c| c);
    let mut mcp = Mcp::new(&gw.url(None), &key);
    mcp.capabilities = json!({"sampling": {}, "elicitation": {}});
    mcp.initialize().await;
    let names = mcp.tool_names().await;
    assert!(names.contains(&"everything-server.echo".to_string()));
    assert!(
        !names.iter().any(|n| n.contains("trigger-sampling")),
        "{names:?}"
    );
    drop(gw);

    let (gw, key, _everything) = setup(|c| c.relay_requests(&["sampling"]));
    // An agent that did not declare sampling: its upstream session does not either,
    // so the upstream has no such tool for it and the agent is never asked.
    let mut plain = Mcp::new(&gw.url(None), &key);
    plain.initialize().await;
    let resp = plain
        .request_raw(
            "tools/call",
            json!({"name": "everything-server.trigger-sampling-request", "arguments": {"prompt": "x"}}),
        )
        .await;
    let msgs = resp.messages();
    assert!(
        msgs.iter().all(|m| m.get("method").is_none()),
        "no request reached the agent: {msgs:?}"
    );
    let last = msgs.last().expect("an answer");
    assert!(
        last.get("error").is_some() || last["result"]["isError"] == true,
        "{last}"
    );
    // Not even a refused one: the upstream was never told this client can sample.
    wait_audit(&gw, Duration::from_secs(10), |l| {
        field(l, "method").as_deref() == Some("tools/call")
    });
    let sampling: Vec<String> = gw
        .audit_lines()
        .into_iter()
        .filter(|l| field(l, "method").as_deref() == Some("sampling/createMessage"))
        .collect();
    assert!(sampling.is_empty(), "{sampling:?}");

    // A request that accepts only JSON cannot carry a relayed request: the upstream is
    // refused (-32601), the refusal audited.
    let json_only = sampling_agent(&gw, &key).await;
    let body = call_body(
        7,
        "everything-server.trigger-sampling-request",
        json!({"prompt": "json only"}),
    );
    let resp = json_only
        .post(&body, &[("accept", "application/json")])
        .await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert!(!resp.is_sse());
    let msg = resp.json();
    assert_eq!(msg["id"], 7, "{msg}");
    assert!(
        msg.get("error").is_some() || msg["result"]["isError"] == true,
        "{msg}"
    );
    let line = wait_relay_audit(&gw, "sampling/createMessage", 403);
    assert_eq!(field(&line, "rpc_code").as_deref(), Some("-32601"));
    assert!(
        field(&line, "reason").is_some_and(|r| r.contains("SSE")),
        "{line}"
    );
}

#[tokio::test]
async fn an_unanswered_relayed_request_times_out_upstream() {
    let (gw, key, _everything) = setup(|c| c.relay_requests(&["sampling"]).timeout_ms(1500));
    let mcp = sampling_agent(&gw, &key).await;
    let (mut sse, asked) = ask_sampling(&mcp, 9, json!({"prompt": "silence"})).await;
    // Never answered: the call times out, and so does the relayed request.
    let last = sse.next(Duration::from_secs(20)).await.expect("an answer");
    assert_eq!(last["id"], 9, "{last}");
    assert_eq!(last["error"]["message"], "timeout", "{last}");
    let line = wait_relay_audit(&gw, "sampling/createMessage", 504);
    assert_eq!(field(&line, "rpc_code").as_deref(), Some("-32603"));
    // A late answer finds nothing waiting.
    let late = json!({"jsonrpc": "2.0", "id": asked["id"], "result": {}});
    assert_eq!(mcp.post(&late.to_string(), &[]).await.status, 202);
}

/// Requests an upstream sends on the catalog session's GET stream, where no agent
/// is behind them, are answered at once: `ping` with `{}`, anything else -32601
/// (before, they were ignored and the upstream waited for its own timeout).
#[test]
fn requests_outside_a_call_are_answered_by_the_gateway() {
    let mut upstream = Upstream::rust(&[
        "--sessions",
        "--ask-on-stream",
        "ping",
        "--ask-on-stream",
        "roots/list",
    ]);
    let (_key, hash) = new_key();
    let _gw = Gateway::start(
        &Config::new()
            .connector(
                Connector::new("conn_rust", "Rust", &upstream.url).relay_requests(&["sampling"]),
            )
            .agent(Agent::new("reporter", &hash))
            .render(),
    );
    let mut answered = |id: &str| {
        let needle = format!("\"id\":\"{id}\"");
        let line = upstream.proc.wait_line(Duration::from_secs(20), |l| {
            l.starts_with("client answered: ") && l.contains(&needle)
        });
        serde_json::from_str::<Value>(line.trim_start_matches("client answered: "))
            .unwrap_or_else(|e| panic!("{e}: {line}"))
    };
    let ping = answered("ask-0");
    assert_eq!(ping["result"], json!({}), "{ping}");
    let roots = answered("ask-1");
    assert_eq!(roots["error"]["code"], -32601, "{roots}");
}
