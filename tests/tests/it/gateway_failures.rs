//! The failure table of the source document, and the other upstream behaviours a
//! `tools/call` or `tools/list` goes through, with the in-repo Rust upstream (and
//! server-everything for the lost-session case) behind the real binary.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use portcullis_tests::audit_lines::{field, wait_audit, wait_audit_status};
use portcullis_tests::rpc::{raw_member, response_text};
use portcullis_tests::sse::{SseReader, post_streaming};
use portcullis_tests::upstreams::{
    first_initialize_hangs_upstream, port_of, raw_result_upstream, stalled_list_upstream,
};
use portcullis_tests::{Agent, Config, Connector, Gateway, Mcp, Upstream, free_port, new_key};
use serde_json::{Value, json};

/// A gateway config: the given connectors and one agent (`reporter`, org `acme`).
fn config(connectors: Vec<Connector>, hash: &str) -> Config {
    connectors
        .into_iter()
        .fold(Config::new(), Config::connector)
        .agent(Agent::new("reporter", hash))
}

/// The connector of one Rust upstream (`conn_test`, slug `test-upstream`).
fn test_connector(up: &Upstream) -> Connector {
    Connector::new("conn_test", "Test Upstream", &up.url)
}

/// One gateway in front of one Rust upstream; returns the agent's key.
fn gateway(up: &Upstream) -> (Gateway, String) {
    gateway_with(test_connector(up), "")
}

/// One gateway with `connector` and more `[server]` lines.
fn gateway_with(connector: Connector, server: &str) -> (Gateway, String) {
    let (key, hash) = new_key();
    let config = config(vec![connector], &hash).server(server);
    (Gateway::start(&config.render()), key)
}

async fn session(gw: &Gateway, endpoint: Option<&str>, key: &str) -> Mcp {
    let mut mcp = Mcp::new(&gw.url(endpoint), key);
    mcp.initialize().await;
    mcp
}

/// A client talking to the upstream directly (no gateway).
async fn direct(up: &Upstream) -> Mcp {
    let mut mcp = Mcp::new(&up.url, "not-needed");
    mcp.initialize().await;
    mcp
}

fn error_of(msg: &Value) -> (i64, String) {
    let err = &msg["error"];
    assert!(err.is_object(), "expected a JSON-RPC error: {msg}");
    (
        err["code"].as_i64().expect("error code"),
        err["message"].as_str().expect("error message").to_string(),
    )
}

/// A tools/call body with a chosen id.
fn call_body(id: &Value, name: &str, args: Value) -> String {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
           "params": {"name": name, "arguments": args}})
    .to_string()
}

#[tokio::test]
async fn result_is_forwarded_byte_for_byte() {
    let up = Upstream::rust(&[]);
    let (gw, key) = gateway(&up);
    let text = "h\u{e9}llo \"quoted\" \\ \u{2603} <tag> \u{1F600}";

    let upstream = direct(&up).await;
    let body = call_body(&json!(41), "echo", json!({"text": text}));
    let want = upstream.post(&body, &[]).await;
    assert_eq!(want.status, 200, "{}", want.body);
    let want_result = raw_member(&response_text(&want), "result").expect("upstream result");
    assert!(want_result.contains("x-upstream-extra"), "{want_result}");

    for (endpoint, name) in [(None, "test-upstream.echo"), (Some("conn_test"), "echo")] {
        let mcp = session(&gw, endpoint, &key).await;
        let got = mcp
            .post(&call_body(&json!(41), name, json!({"text": text})), &[])
            .await;
        assert_eq!(got.status, 200, "{}", got.body);
        let got_text = response_text(&got);
        let got_result = raw_member(&got_text, "result")
            .unwrap_or_else(|| panic!("no result via {endpoint:?}: {got_text}"));
        assert_eq!(
            got_result, want_result,
            "the result must be relayed byte for byte (endpoint {endpoint:?})"
        );
        let msg: Value = serde_json::from_str(&got_text).unwrap();
        assert_eq!(msg["id"], 41);
        assert_eq!(msg["result"]["x-upstream-extra"], json!({"kept": true}));
        assert_eq!(msg["result"]["structuredContent"]["text"], text);
    }
}

/// A call's params reach the upstream as the agent wrote them: numbers serde_json's
/// `Value` would rewrite (`1e2`, integers beyond 64 bits, long fractions, `-0`),
/// members the gateway does not know, and the agent's `_meta`. Only `name` changes.
#[tokio::test]
async fn call_params_reach_the_upstream_as_written() {
    let up = Upstream::rust(&["--raw-echo"]);
    let (gw, key) = gateway(&up);
    let arguments = r#"{"big":123456789012345678901234567890,"e":1e2,"f":0.1000000000000000055511151231257827,"neg":-0,"s":"\u00e9\n","nested":{"z":[1.50,{}],"a":null}}"#;
    let rest = r#""_meta":{"progressToken":1E2,"example.com/x":{"k":1.0}},"x-unknown":[true]"#;
    for (endpoint, name) in [
        (None, "test-upstream.raw_echo"),
        (Some("conn_test"), "raw_echo"),
    ] {
        let mcp = session(&gw, endpoint, &key).await;
        let body = format!(
            r#"{{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{{"name":"{name}","arguments":{arguments},{rest}}}}}"#
        );
        let got = mcp.post(&body, &[]).await;
        assert_eq!(got.status, 200, "{}", got.body);
        let msg: Value = serde_json::from_str(&response_text(&got)).unwrap();
        let received = msg["result"]["content"][0]["text"]
            .as_str()
            .unwrap_or_else(|| panic!("no text via {endpoint:?}: {msg}"));
        assert_eq!(
            received,
            format!(r#"{{"name":"raw_echo","arguments":{arguments},{rest}}}"#),
            "via {endpoint:?}"
        );
    }
}

#[tokio::test]
async fn upstream_rpc_error_is_forwarded_with_code_message_and_data() {
    let up = Upstream::rust(&[]);
    let (gw, key) = gateway(&up);
    let mut mcp = session(&gw, None, &key).await;
    let msg = mcp
        .call(
            "test-upstream.rpc_error",
            json!({"code": -32042, "message": "upstream says no"}),
        )
        .await;
    assert_eq!(
        msg["error"],
        json!({"code": -32042, "message": "upstream says no", "data": {"from": "upstream"}}),
        "{msg}"
    );
    assert!(msg.get("result").is_none(), "{msg}");

    let mut one = session(&gw, Some("conn_test"), &key).await;
    let msg = one.call("rpc_error", json!({"code": 12345})).await;
    assert_eq!(msg["error"]["code"], 12345, "{msg}");
    assert_eq!(msg["error"]["message"], "upstream error", "{msg}");
    assert_eq!(msg["error"]["data"], json!({"from": "upstream"}), "{msg}");
}

#[tokio::test]
async fn non_2xx_is_internal_error_audited_502() {
    let up = Upstream::rust(&[]);
    let (gw, key) = gateway(&up);
    let mut mcp = session(&gw, None, &key).await;
    for status in [500, 503] {
        let msg = mcp
            .call("test-upstream.http_error", json!({"status": status}))
            .await;
        assert_eq!(
            error_of(&msg),
            (-32603, format!("Upstream returned HTTP {status}")),
            "{msg}"
        );
        assert_eq!(
            msg["error"]["data"],
            json!({"upstreamStatus": status}),
            "{msg}"
        );
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let lines = loop {
        let lines: Vec<String> = gw
            .audit_lines()
            .into_iter()
            .filter(|l| field(l, "tool").as_deref() == Some("http_error"))
            .collect();
        if lines.len() >= 2 || Instant::now() > deadline {
            break lines;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(lines.len(), 2, "two audited http_error calls: {lines:#?}");
    for l in &lines {
        assert_eq!(field(l, "status").as_deref(), Some("502"), "{l}");
        assert_eq!(field(l, "rpc_code").as_deref(), Some("-32603"), "{l}");
        assert_eq!(field(l, "connector").as_deref(), Some("conn_test"), "{l}");
        assert_eq!(field(l, "agent").as_deref(), Some("reporter"), "{l}");
        assert_eq!(field(l, "org").as_deref(), Some("acme"), "{l}");
    }
}

#[tokio::test]
async fn timeout_is_internal_error_504_and_cancels_upstream() {
    let up = Upstream::rust(&[]);
    let (gw, key) = gateway_with(test_connector(&up).timeout_ms(300), "");
    let mut mcp = session(&gw, None, &key).await;
    // Warm the catalog so that only the call itself is timed.
    assert!(
        mcp.tool_names()
            .await
            .contains(&"test-upstream.sleep".to_string())
    );

    let started = Instant::now();
    let msg = mcp.call("test-upstream.sleep", json!({"ms": 2000})).await;
    let took = started.elapsed();
    assert_eq!(error_of(&msg), (-32603, "timeout".to_string()), "{msg}");
    assert!(
        took < Duration::from_millis(1500),
        "answered after {took:?}"
    );

    let line = wait_audit_status(&gw, "sleep", 504);
    assert_eq!(
        field(&line, "rpc_code").as_deref(),
        Some("-32603"),
        "{line}"
    );

    // The upstream is told to stop working on it.
    let mut upstream = direct(&up).await;
    assert_one_cancellation(&mut upstream).await;
}

#[tokio::test]
async fn unknown_tool_and_unknown_slug_are_tool_not_found_404() {
    let up = Upstream::rust(&[]);
    let (gw, key) = gateway(&up);
    let mut all = session(&gw, None, &key).await;
    for name in [
        "test-upstream.no_such_tool",
        "nosuchslug.echo",
        "echo",
        "test-upstream.",
    ] {
        let msg = all.call(name, json!({})).await;
        assert_eq!(
            error_of(&msg),
            (-32601, "Tool not found".to_string()),
            "{name}: {msg}"
        );
    }
    let mut one = session(&gw, Some("conn_test"), &key).await;
    for name in ["no_such_tool", "test-upstream.echo"] {
        let msg = one.call(name, json!({})).await;
        assert_eq!(
            error_of(&msg),
            (-32601, "Tool not found".to_string()),
            "/mcp/conn_test {name}: {msg}"
        );
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let n = gw
            .audit_lines()
            .iter()
            .filter(|l| {
                field(l, "method").as_deref() == Some("tools/call")
                    && field(l, "status").as_deref() == Some("404")
                    && field(l, "rpc_code").as_deref() == Some("-32601")
            })
            .count();
        if n == 6 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "expected 6 audit lines with status=404, got {n}:\n{}",
            gw.audit_lines().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn upstream_down_is_internal_error_and_others_still_listed() {
    let up = Upstream::rust(&[]);
    let closed = free_port();
    let (key, hash) = new_key();
    let conns = vec![
        test_connector(&up),
        Connector::new(
            "conn_down",
            "Down Server",
            &format!("http://127.0.0.1:{closed}/mcp"),
        )
        .timeout_ms(5000),
    ];
    let gw = Gateway::start(&config(conns, &hash).render());
    let mut mcp = session(&gw, None, &key).await;

    let names = mcp.tool_names().await;
    assert!(
        names.contains(&"test-upstream.echo".to_string()),
        "{names:?}"
    );
    assert!(
        !names.iter().any(|n| n.starts_with("down-server.")),
        "{names:?}"
    );

    let msg = mcp.call("down-server.echo", json!({"text": "x"})).await;
    let (code, _) = error_of(&msg);
    assert_eq!(code, -32603, "{msg}");
    let line = wait_audit(&gw, Duration::from_secs(10), |l| {
        field(l, "connector").as_deref() == Some("conn_down")
            && field(l, "method").as_deref() == Some("tools/call")
    });
    assert_eq!(field(&line, "status").as_deref(), Some("502"), "{line}");

    // The working connector still works.
    let msg = mcp.call("test-upstream.echo", json!({"text": "up"})).await;
    assert_eq!(msg["result"]["structuredContent"]["text"], "up", "{msg}");

    // On the down connector's own endpoint, tools/list is an error, not a hang.
    let mut one = session(&gw, Some("conn_down"), &key).await;
    let msg = one.request("tools/list", json!({})).await;
    let (code, _) = error_of(&msg);
    assert_eq!(code, -32603, "{msg}");
}

/// A connector whose `tools/list` hangs is asked once by all the lists that wait for
/// it, and its failure is remembered for a while: lists, calls and its own endpoint
/// get the error at once instead of each waiting for the upstream again. A refresh
/// (SIGUSR1) forgets it.
#[tokio::test]
async fn a_stalled_connector_is_asked_once_and_its_failure_remembered() {
    use std::sync::atomic::Ordering::SeqCst;
    let up = Upstream::rust(&[]);
    let (stalled, lists) = stalled_list_upstream().await;
    let (key, hash) = new_key();
    let conns = vec![
        test_connector(&up),
        Connector::new("conn_stalled", "Stalled Server", &stalled).timeout_ms(2000),
    ];
    let mut gw = Gateway::start(&config(conns, &hash).render());
    let mut agents = Vec::new();
    for _ in 0..4 {
        agents.push(session(&gw, None, &key).await);
    }

    let all = futures_util::future::join_all(agents.iter_mut().map(|m| m.tool_names())).await;
    for names in &all {
        assert!(
            names.contains(&"test-upstream.echo".to_string()),
            "{names:?}"
        );
        assert!(
            !names.iter().any(|n| n.starts_with("stalled-server.")),
            "{names:?}"
        );
    }
    assert_eq!(lists.load(SeqCst), 1, "the four lists share one fetch");

    // Remembered (for 5 s): the next list, a call and the connector's own endpoint are
    // answered without asking the upstream again.
    let names = agents[0].tool_names().await;
    assert!(
        names.contains(&"test-upstream.echo".to_string()),
        "{names:?}"
    );
    let msg = agents[1]
        .call("stalled-server.echo", json!({"text": "x"}))
        .await;
    assert_eq!(error_of(&msg), (-32603, "timeout".to_string()), "{msg}");
    let line = wait_audit(&gw, Duration::from_secs(10), |l| {
        field(l, "connector").as_deref() == Some("conn_stalled")
            && field(l, "method").as_deref() == Some("tools/call")
    });
    assert_eq!(field(&line, "status").as_deref(), Some("504"), "{line}");
    let mut one = session(&gw, Some("conn_stalled"), &key).await;
    let msg = one.request("tools/list", json!({})).await;
    assert_eq!(error_of(&msg).0, -32603, "{msg}");
    assert_eq!(lists.load(SeqCst), 1, "the failure is remembered");

    // An operator refresh forgets it: the next list asks again.
    gw.proc.signal("USR1");
    gw.proc.wait_line(Duration::from_secs(10), |l| {
        l.contains("lists invalidated") && l.contains("conn_stalled")
    });
    let names = agents[2].tool_names().await;
    assert!(
        names.contains(&"test-upstream.echo".to_string()),
        "{names:?}"
    );
    assert_eq!(lists.load(SeqCst), 2, "asked again after the refresh");
}

/// An upstream stuck on the first `initialize` it gets (the gateway's list_changed
/// watcher sends it at start-up) does not stay unusable once it answers: that
/// handshake is bounded by the connector's timeout like every other request.
#[tokio::test]
async fn a_connector_stuck_at_start_up_is_usable_once_it_answers() {
    let url = first_initialize_hangs_upstream().await;
    let (key, hash) = new_key();
    let conns = vec![Connector::new("conn_late", "Late Server", &url).timeout_ms(1000)];
    let gw = Gateway::start(&config(conns, &hash).render());
    let mut mcp = session(&gw, None, &key).await;
    // The watcher gives up after 1 s, a failed fetch is retried after 5 s.
    let usable = "the connector never became usable";
    mcp.wait_for_tool("late-server.late_tool", Duration::from_secs(30), usable)
        .await;
}

async fn progress_is_relayed_before_the_result(mode: &str) {
    let up = Upstream::rust(&["--response", mode]);
    let (gw, key) = gateway(&up);
    let mcp = session(&gw, None, &key).await;
    let steps = 25;
    let body = json!({"jsonrpc": "2.0", "id": "p-1", "method": "tools/call", "params": {
        "name": "test-upstream.progress", "arguments": {"steps": steps},
        "_meta": {"progressToken": "tok-7"}}})
    .to_string();
    let resp = post_streaming(&mcp, &body).await;
    assert_eq!(resp.status(), 200);
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    assert!(ct.starts_with("text/event-stream"), "content-type {ct}");
    let mut reader = SseReader::new(resp.into_body());
    let mut progress = Vec::new();
    let mut first_at = None;
    let final_msg = loop {
        let msg = reader
            .next(Duration::from_secs(10))
            .await
            .expect("the stream ended before the result");
        if msg.get("method").and_then(Value::as_str) == Some("notifications/progress") {
            first_at.get_or_insert_with(Instant::now);
            assert_eq!(msg["params"]["progressToken"], "tok-7", "{msg}");
            progress.push(msg["params"]["progress"].as_u64().expect("progress"));
        } else {
            break msg;
        }
    };
    let result_at = Instant::now();
    assert_eq!(final_msg["id"], "p-1", "{final_msg}");
    assert_eq!(
        final_msg["result"]["content"][0]["text"],
        format!("done {steps}"),
        "{final_msg}"
    );
    assert_eq!(progress, (1..=steps).collect::<Vec<_>>(), "mode {mode}");
    // Relayed as they happen, not buffered until the result (25 steps x 20 ms).
    let lead = result_at - first_at.unwrap();
    assert!(
        lead >= Duration::from_millis(200),
        "the first progress arrived only {lead:?} before the result"
    );
    assert!(reader.next(Duration::from_secs(5)).await.is_none());

    // A client that accepts only JSON gets the plain result (notifications dropped).
    let body = body.replace("p-1", "p-2");
    let resp = mcp.post(&body, &[("accept", "application/json")]).await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert!(!resp.is_sse(), "{:?}", resp.header("content-type"));
    let msg = resp.json();
    assert_eq!(msg["id"], "p-2", "{msg}");
    assert_eq!(msg["result"]["content"][0]["text"], format!("done {steps}"));
}

#[tokio::test]
async fn progress_is_relayed_from_a_json_upstream() {
    progress_is_relayed_before_the_result("json").await;
}

#[tokio::test]
async fn progress_is_relayed_from_an_sse_upstream() {
    progress_is_relayed_before_the_result("sse").await;
}

#[tokio::test]
async fn cancellation_is_relayed_upstream() {
    let up = Upstream::rust(&[]);
    let (gw, key) = gateway(&up);
    let mcp = session(&gw, None, &key).await;
    let waiter = mcp.same_session();
    let agent_id = json!("agent-wait-1");
    let body = call_body(
        &agent_id,
        "test-upstream.wait_for_cancel",
        json!({"ms": 10000}),
    );
    let started = Instant::now();
    let pending = tokio::spawn(async move { waiter.post(&body, &[]).await });

    // Wait until the upstream has the call (count_calls counts itself too).
    let mut upstream = direct(&up).await;
    let mut polls = 0;
    loop {
        polls += 1;
        let n =
            upstream.call("count_calls", json!({})).await["result"]["structuredContent"]["count"]
                .as_u64()
                .unwrap();
        if n > polls {
            break;
        }
        assert!(polls < 250, "the call never reached the upstream");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let note = mcp
        .notify(
            "notifications/cancelled",
            json!({"requestId": agent_id, "reason": "test"}),
        )
        .await;
    assert_eq!(note.status, 202, "{}", note.body);
    let resp = tokio::time::timeout(Duration::from_secs(5), pending)
        .await
        .expect("the cancelled request must end promptly")
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(6));
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert!(
        !resp.body.contains("not cancelled"),
        "the upstream's late answer must not arrive: {}",
        resp.body
    );

    assert_one_cancellation(&mut upstream).await;
    let line = wait_audit(&gw, Duration::from_secs(10), |l| {
        field(l, "tool").as_deref() == Some("wait_for_cancel")
    });
    assert_ne!(field(&line, "status").as_deref(), Some("200"), "{line}");

    // The session is still usable.
    let mut mcp = mcp;
    let msg = mcp
        .call("test-upstream.echo", json!({"text": "after"}))
        .await;
    assert_eq!(msg["result"]["structuredContent"]["text"], "after");
}

#[tokio::test]
async fn big_result_is_intact() {
    let up = Upstream::rust(&[]);
    let (gw, key) = gateway(&up);
    let mut mcp = session(&gw, None, &key).await;
    let n = 64 * 1024;
    let msg = mcp.call("test-upstream.big", json!({"bytes": n})).await;
    let text = msg["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("no text: {}", &msg.to_string()[..200]));
    assert_eq!(text.len(), n);
    assert!(text.bytes().all(|b| b == b'x'));

    // A 1 MB argument goes up and comes back intact too.
    let long: String = (0..1024 * 1024)
        .map(|i| (b'a' + (i % 26) as u8) as char)
        .collect();
    let msg = mcp.call("test-upstream.echo", json!({"text": long})).await;
    assert!(
        msg["result"]["structuredContent"]["text"] == long.as_str(),
        "1 MB echo came back altered"
    );
}

/// An agent that reuses a request id while the first call runs (JSON-RPC asks it not to)
/// gets both answers: the second call does not cancel the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_request_id_does_not_cancel_the_first_call() {
    let up = Upstream::rust(&[]);
    let (gw, key) = gateway(&up);
    let a = session(&gw, None, &key).await;
    let id = json!("same");
    let slow = call_body(&id, "test-upstream.sleep", json!({"ms": 600}));
    let quick = call_body(&id, "test-upstream.echo", json!({"text": "second"}));
    let first = {
        let client = a.same_session();
        tokio::spawn(async move { client.post(&slow, &[]).await })
    };
    tokio::time::sleep(Duration::from_millis(150)).await;
    let second = a.post(&quick, &[]).await;
    assert_eq!(
        second.json()["result"]["structuredContent"]["text"],
        "second"
    );
    let first = first.await.unwrap();
    let msg = first.json();
    assert_eq!(msg["id"], "same", "{msg}");
    let text = msg["result"]["content"][0]["text"].as_str().unwrap_or("");
    assert_eq!(text, "slept 600", "{msg}");
}

/// Many concurrent calls on two sessions: every answer reaches the request it answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_are_not_mixed_up() {
    let up = Upstream::rust(&["--delay-ms", "20"]);
    let (gw, key) = gateway(&up);
    let a = session(&gw, None, &key).await;
    let b = session(&gw, Some("conn_test"), &key).await;
    let mut tasks = Vec::new();
    for i in 0..40 {
        let client = if i % 2 == 0 {
            a.same_session()
        } else {
            b.same_session()
        };
        let name = if i % 2 == 0 {
            "test-upstream.echo"
        } else {
            "echo"
        };
        let id = json!(format!("req-{i}"));
        let body = call_body(&id, name, json!({"text": format!("text-{i}")}));
        tasks.push(tokio::spawn(
            async move { (i, client.post(&body, &[]).await) },
        ));
    }
    for t in tasks {
        let (i, resp) = t.await.unwrap();
        assert_eq!(resp.status, 200, "{}", resp.body);
        let msg = resp.json();
        assert_eq!(msg["id"], format!("req-{i}"), "{msg}");
        assert_eq!(
            msg["result"]["structuredContent"]["text"],
            format!("text-{i}"),
            "{msg}"
        );
    }
}

#[tokio::test]
async fn upstream_pages_are_merged_completely() {
    let up = Upstream::rust(&["--page-size", "3", "--extra-tools", "10"]);
    let mut upstream = direct(&up).await;
    let want = upstream.tool_names().await;
    assert_eq!(want.len(), 24, "{want:?}");
    let (gw, key) = gateway(&up);

    let mut one = session(&gw, Some("conn_test"), &key).await;
    assert_eq!(one.tool_names().await, want);

    let mut all = session(&gw, None, &key).await;
    let got = all.tool_names().await;
    let prefixed: Vec<String> = want.iter().map(|n| format!("test-upstream.{n}")).collect();
    assert_eq!(got, prefixed);
}

#[tokio::test]
async fn gateway_pages_its_list_with_an_opaque_cursor() {
    let up = Upstream::rust(&["--extra-tools", "10"]);
    let (gw, key) = gateway_with(test_connector(&up), "list_page_size = 5");
    let mut mcp = session(&gw, None, &key).await;
    let mut seen = Vec::new();
    let mut cursor: Option<Value> = None;
    let mut pages = 0;
    loop {
        pages += 1;
        assert!(pages <= 10, "too many pages");
        let params = match &cursor {
            Some(c) => json!({"cursor": c}),
            None => json!({}),
        };
        let msg = mcp.request("tools/list", params).await;
        let tools = msg["result"]["tools"].as_array().expect("tools").clone();
        assert!(tools.len() <= 5, "page of {}", tools.len());
        seen.extend(
            tools
                .iter()
                .map(|t| t["name"].as_str().unwrap().to_string()),
        );
        match msg["result"].get("nextCursor") {
            Some(Value::String(c)) => {
                assert_eq!(tools.len(), 5, "only the last page may be short");
                cursor = Some(json!(c));
            }
            None | Some(Value::Null) => break,
            Some(other) => panic!("nextCursor must be a string: {other}"),
        }
    }
    assert_eq!(pages, 5, "24 tools in pages of 5");
    assert_eq!(seen.len(), 24, "{seen:?}");
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), 24, "each tool exactly once: {seen:?}");
    assert!(seen.iter().all(|n| n.starts_with("test-upstream.")));

    for bad in [json!("garbage"), json!("!!"), json!(17)] {
        let msg = mcp.request("tools/list", json!({"cursor": bad})).await;
        let (code, _) = error_of(&msg);
        assert_eq!(code, -32602, "cursor {bad}: {msg}");
    }
}

#[tokio::test]
async fn rust_upstream_restarted_on_the_same_port_is_reinitialised() {
    let port = free_port();
    let first = Upstream::rust_on(port, &["--sessions"]);
    let (gw, key) = gateway(&first);
    let mut mcp = session(&gw, None, &key).await;
    let msg = mcp.call("test-upstream.echo", json!({"text": "one"})).await;
    assert_eq!(msg["result"]["structuredContent"]["text"], "one", "{msg}");
    drop(first);

    let _second = Upstream::rust_on(port, &["--sessions"]);
    let msg = mcp.call("test-upstream.echo", json!({"text": "two"})).await;
    assert_eq!(
        msg["result"]["structuredContent"]["text"], "two",
        "the gateway must re-initialise its upstream session after a 404: {msg}"
    );
    // The fresh upstream saw exactly this one call.
    let msg = mcp.call("test-upstream.count_calls", json!({})).await;
    assert_eq!(msg["result"]["structuredContent"]["count"], 2, "{msg}");
}

#[tokio::test]
async fn server_everything_restarted_on_the_same_port_is_reinitialised() {
    let port = free_port();
    let first = Upstream::everything_on(port);
    let (key, hash) = new_key();
    let conns = vec![Connector::new(
        "conn_everything",
        "Everything Server",
        &first.url,
    )];
    let gw = Gateway::start(&config(conns, &hash).render());
    let mut mcp = session(&gw, None, &key).await;
    let msg = mcp
        .call("everything-server.echo", json!({"message": "one"}))
        .await;
    assert_eq!(msg["result"]["content"][0]["text"], "Echo: one", "{msg}");
    drop(first);

    let second = Upstream::everything_on(port);
    assert_eq!(port_of(&second.url), port);
    let msg = mcp
        .call("everything-server.echo", json!({"message": "two"}))
        .await;
    assert_eq!(
        msg["result"]["content"][0]["text"], "Echo: two",
        "the gateway must re-initialise after server-everything's 400: {msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_canonical_result_bytes_are_kept() {
    // Spaces, escapes, an exponent and unsorted keys: any re-serialisation changes them.
    const RESULT: &str = "{ \"content\" : [ {\"type\":\"text\", \"text\":\"caf\\u00e9 \\/ 1e2\"} ],\n  \"z\": 1E2, \"a\": 1.50, \"x-extra\": {\"b\":[ ], \"a\":null} }";
    let url = raw_result_upstream(RESULT).await;
    let (key, hash) = new_key();
    let conns = vec![Connector::new("conn_raw", "Raw", &url)];
    let gw = Gateway::start(&config(conns, &hash).render());
    let mcp = session(&gw, None, &key).await;
    let got = mcp
        .post(&call_body(&json!("r-1"), "raw.raw", json!({})), &[])
        .await;
    assert_eq!(got.status, 200, "{}", got.body);
    let text = response_text(&got);
    assert_eq!(
        raw_member(&text, "result").as_deref(),
        Some(RESULT),
        "the result must be relayed byte for byte: {text}"
    );
}

/// One upstream session per agent session and connector, closed with the agent's.
#[tokio::test]
async fn upstream_sessions_follow_agent_sessions() {
    let up = Upstream::rust(&["--sessions"]);
    let (gw, key) = gateway(&up);
    let upstream_session = |msg: &Value| {
        msg["result"]["structuredContent"]["mcp-session-id"]
            .as_str()
            .unwrap_or_else(|| panic!("no upstream session id seen: {msg}"))
            .to_string()
    };
    let mut a = session(&gw, None, &key).await;
    let mut b = session(&gw, Some("conn_test"), &key).await;
    let a1 = upstream_session(&a.call("test-upstream.whoami", json!({})).await);
    let a2 = upstream_session(&a.call("test-upstream.whoami", json!({})).await);
    let b1 = upstream_session(&b.call("whoami", json!({})).await);
    assert_eq!(a1, a2, "one upstream session per agent session");
    assert_ne!(a1, b1, "agent sessions must not share an upstream session");

    let del = a.delete().await;
    assert!((200..300).contains(&del.status), "{}", del.status);
    // The upstream session is ended (DELETE upstream); the other one lives on.
    let ping = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut probe = Mcp::new(&up.url, "x");
        probe.session = Some(a1.clone());
        let status = probe.post(ping, &[]).await.status;
        if status == 404 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "upstream session {a1} still alive (HTTP {status}) after the agent's DELETE"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut probe = Mcp::new(&up.url, "x");
    probe.session = Some(b1.clone());
    assert_eq!(probe.post(ping, &[]).await.status, 200);
    let msg = b.call("whoami", json!({})).await;
    assert_eq!(upstream_session(&msg), b1);
}

/// An upstream that refuses the gateway (HTTP 401: no or a wrong credential) is a
/// non-2xx failure: -32603, audited 502; nothing of the upstream's secret leaks.
#[tokio::test]
async fn upstream_refusing_the_gateway_is_internal_error_502() {
    let up = Upstream::rust(&["--require-bearer", "the-right-token"]);
    let (key, hash) = new_key();
    let conns = vec![
        Connector::new("conn_none", "No Cred", &up.url),
        Connector::new("conn_wrong", "Wrong Cred", &up.url).credential("env:WRONG_TOKEN"),
    ];
    let gw = Gateway::start_with_env(
        &config(conns, &hash).render(),
        &[("WRONG_TOKEN", "a-wrong-token")],
    );
    let mut mcp = session(&gw, None, &key).await;
    assert!(mcp.tool_names().await.is_empty());
    for (name, conn) in [
        ("no-cred.echo", "conn_none"),
        ("wrong-cred.echo", "conn_wrong"),
    ] {
        let msg = mcp.call(name, json!({"text": "x"})).await;
        // The upstream's status, and nothing of the credential.
        assert_eq!(
            error_of(&msg),
            (-32603, "Upstream returned HTTP 401".to_string()),
            "{msg}"
        );
        assert!(!msg.to_string().contains("a-wrong-token"), "{msg}");
        let line = wait_audit(&gw, Duration::from_secs(10), |l| {
            field(l, "connector").as_deref() == Some(conn)
                && field(l, "method").as_deref() == Some("tools/call")
        });
        assert_eq!(field(&line, "status").as_deref(), Some("502"), "{line}");
    }
}

/// Waits (at most 5 s) for the upstream's log of cancelled requests and asserts it
/// received exactly one `notifications/cancelled`.
async fn assert_one_cancellation(upstream: &mut Mcp) {
    let deadline = Instant::now() + Duration::from_secs(5);
    let ids = loop {
        let ids =
            upstream.call("cancelled_ids", json!({})).await["result"]["structuredContent"]["ids"]
                .clone();
        if ids.as_array().is_some_and(|a| !a.is_empty()) || Instant::now() > deadline {
            break ids;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        ids.as_array().map(Vec::len),
        Some(1),
        "the upstream got exactly one notifications/cancelled: {ids}"
    );
}

/// "A disconnect is not a cancellation": an agent that drops its connection while a
/// call runs leaves the call running upstream to its end; it is audited with the
/// upstream's outcome, and the upstream is not told to cancel.
#[tokio::test]
async fn a_disconnect_is_not_a_cancellation() {
    use tokio::io::AsyncWriteExt;
    let up = Upstream::rust(&[]);
    let (gw, key) = gateway(&up);
    let mcp = session(&gw, None, &key).await;
    let body = call_body(&json!(41), "test-upstream.sleep", json!({"ms": 700}));
    let addr = gw.base.trim_start_matches("http://").to_string();
    let mut stream = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    let request = format!(
        "POST /mcp HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {key}\r\n\
         content-type: application/json\r\naccept: application/json, text/event-stream\r\n\
         mcp-session-id: {}\r\nmcp-protocol-version: {}\r\ncontent-length: {}\r\n\r\n{body}",
        mcp.session.as_deref().expect("session id"),
        mcp.version,
        body.len()
    );
    stream.write_all(request.as_bytes()).await.expect("send");
    tokio::time::sleep(Duration::from_millis(150)).await;
    drop(stream); // the agent goes away mid-call

    let line = wait_audit(&gw, Duration::from_secs(10), |l| {
        field(l, "tool").as_deref() == Some("sleep")
    });
    assert_eq!(field(&line, "status").as_deref(), Some("200"), "{line}");
    let latency: f64 = field(&line, "latency_ms").unwrap().parse().unwrap();
    assert!(
        latency >= 650.0,
        "audited before the upstream answered: {line}"
    );
    let mut upstream = direct(&up).await;
    let ids = upstream.call("cancelled_ids", json!({})).await["result"]["structuredContent"]["ids"]
        .clone();
    assert_eq!(ids, json!([]), "the upstream was told to cancel");
}

/// An upstream that never answers DELETE holds up neither the agent's DELETE nor the
/// gateway's shutdown: each upstream close is bounded (5 s).
#[tokio::test]
async fn an_upstream_that_never_answers_delete_holds_nothing_up() {
    let up = Upstream::rust(&["--sessions", "--hang-delete"]);
    let (mut gw, key) = gateway(&up);
    let mut a = session(&gw, None, &key).await;
    let msg = a.call("test-upstream.echo", json!({"text": "x"})).await;
    assert_eq!(msg["result"]["structuredContent"]["text"], "x", "{msg}");
    let started = Instant::now();
    let del = tokio::time::timeout(Duration::from_secs(20), a.delete())
        .await
        .expect("the agent's DELETE waited for the hung upstream");
    assert!((200..300).contains(&del.status), "{}", del.status);
    assert!(started.elapsed() < Duration::from_secs(10));

    // Two more sessions with upstream sessions open, then SIGTERM.
    for _ in 0..2 {
        let mut s = session(&gw, None, &key).await;
        let msg = s.call("test-upstream.echo", json!({"text": "y"})).await;
        assert_eq!(msg["result"]["structuredContent"]["text"], "y", "{msg}");
    }
    let started = Instant::now();
    gw.proc.signal("TERM");
    let code = gw.proc.wait_exit(Duration::from_secs(20));
    assert_eq!(code, Some(0), "did not shut down: {}", gw.proc.output());
    // Both sessions' DELETEs ran together: one timeout, not two.
    assert!(
        started.elapsed() < Duration::from_secs(9),
        "{:?}",
        started.elapsed()
    );
}

/// A result larger than the connector's `max_result_bytes` fails its own request with
/// -32603 (audited 502) before it is held whole; the session and the next call are
/// fine. Both for a JSON body and for an SSE event.
async fn a_result_above_max_result_bytes_fails_only_its_request(mode: &str) {
    let up = Upstream::rust(&["--response", mode]);
    let connector = test_connector(&up).extra("max_result_bytes = 65536");
    let (gw, key) = gateway_with(connector, "");
    let mut mcp = session(&gw, None, &key).await;
    let msg = mcp
        .call("test-upstream.big", json!({"bytes": 200_000}))
        .await;
    assert_eq!(
        error_of(&msg),
        (
            -32603,
            "Upstream result exceeds the connector's max_result_bytes".to_string()
        ),
        "{msg}"
    );
    let row = wait_audit_status(&gw, "big", 502);
    assert_eq!(field(&row, "rpc_code").as_deref(), Some("-32603"), "{row}");
    let msg = mcp
        .call("test-upstream.big", json!({"bytes": 60_000}))
        .await;
    let text = msg["result"]["content"][0]["text"].as_str().unwrap_or("");
    assert_eq!(text.len(), 60_000, "the next call on the same session");
}

#[tokio::test]
async fn a_json_result_above_max_result_bytes_fails_only_its_request() {
    a_result_above_max_result_bytes_fails_only_its_request("json").await;
}

#[tokio::test]
async fn an_sse_result_above_max_result_bytes_fails_only_its_request() {
    a_result_above_max_result_bytes_fails_only_its_request("sse").await;
}
