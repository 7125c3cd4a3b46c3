//! Hostile input and upstream faults (issue 21): each test shows one thing the gateway
//! now refuses or no longer amplifies. Raw sockets where a client library would
//! normalise away what is being tested (header bytes, body bytes).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use portcullis_tests::rpc::assert_rpc_error;
use portcullis_tests::upstreams::port_of;
use portcullis_tests::{Agent, Config, Connector, Gateway, Mcp, Proc, Upstream, new_key};
use serde_json::{Value, json};

/// Sends `head` (request line and headers, without the blank line) and `body` on a
/// fresh connection (`Connection: close`) and returns the status and the body text.
fn raw_http(url: &str, head: &[u8], body: &[u8]) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port_of(url))).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut req = head.to_vec();
    req.extend_from_slice(
        format!(
            "\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    req.extend_from_slice(body);
    stream.write_all(&req).expect("write");
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, body.to_string())
}

/// The request head of a POST to the gateway's `/mcp` with the agent's key, plus
/// `extra` header lines given as bytes (so they may hold any byte).
fn mcp_post_head(url: &str, key: &str, extra: &[&[u8]]) -> Vec<u8> {
    let mut head = format!(
        "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nAccept: application/json, text/event-stream",
        port_of(url)
    )
    .into_bytes();
    for line in extra {
        head.extend_from_slice(b"\r\n");
        head.extend_from_slice(line);
    }
    head
}

fn one_connector_gateway(upstream: &str) -> (Gateway, String) {
    let (key, hash) = new_key();
    let config = Config::new()
        .admin()
        .connector(Connector::new("conn_test", "Test Upstream", upstream))
        .agent(Agent::new("agent", &hash));
    (Gateway::start(&config.render()), key)
}

/// Item 6: a header value with a non-ASCII byte is an invalid value, not a missing
/// one: an unsupported `MCP-Protocol-Version` stays unsupported (400), and a session
/// id that cannot be one of ours is unknown (404), not "required" (400).
#[tokio::test]
async fn header_values_with_non_ascii_bytes_are_invalid_not_absent() {
    let up = Upstream::rust(&[]);
    let (gw, key) = one_connector_gateway(&up.url);
    let url = gw.url(None);
    let ping = br#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;

    let plain = mcp_post_head(&url, &key, &[b"MCP-Protocol-Version: 1999-01-01"]);
    assert_eq!(raw_http(&url, &plain, ping).0, 400);
    let accented = mcp_post_head(&url, &key, &[b"MCP-Protocol-Version: 1999-01-01\xE9"]);
    let (status, body) = raw_http(&url, &accented, ping);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("Unsupported MCP-Protocol-Version"), "{body}");

    let mut mcp = Mcp::new(&url, &key);
    mcp.initialize().await;
    let sid = mcp.session.clone().expect("a session id");
    let mut bad_sid = b"Mcp-Session-Id: ".to_vec();
    bad_sid.extend_from_slice(sid.as_bytes());
    bad_sid.push(0xE9);
    let head = mcp_post_head(&url, &key, &[&bad_sid, b"MCP-Protocol-Version: 2025-11-25"]);
    let (status, body) = raw_http(&url, &head, ping);
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("Session not found"), "{body}");
    // The session itself is unharmed.
    let msg = mcp.request("ping", json!({})).await;
    assert_eq!(msg["result"], json!({}));
}

/// Item 7: a body that is not UTF-8 inside a JSON string is not JSON: -32700.
#[tokio::test]
async fn invalid_utf8_inside_a_json_string_is_a_parse_error() {
    let up = Upstream::rust(&[]);
    let (gw, key) = one_connector_gateway(&up.url);
    let url = gw.url(None);
    let head = mcp_post_head(&url, &key, &[]);
    for body in [
        &b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"initialize\xE9\",\"params\":{}}"[..],
        &b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"initialize\",\"params\":{\"x\":\"\xFF\"}}"[..],
    ] {
        let (status, text) = raw_http(&url, &head, body);
        let msg: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        assert_eq!(msg["error"]["code"], -32700, "{status} {text}");
        assert_eq!(msg["id"], Value::Null);
    }
}

/// Item 5: the admin listener applies the agent listener's Host and Origin rules: a
/// rebound name cannot read `/metrics`, and a page elsewhere cannot POST a refresh.
#[tokio::test]
async fn the_admin_listener_refuses_foreign_hosts_and_origins() {
    let up = Upstream::rust(&[]);
    let (gw, _key) = one_connector_gateway(&up.url);
    let admin = gw.admin.clone().expect("admin listener");
    let port = port_of(&admin);
    let get = |host: &str| format!("GET /metrics HTTP/1.1\r\nHost: {host}").into_bytes();
    assert_eq!(
        raw_http(&admin, &get(&format!("127.0.0.1:{port}")), b"").0,
        200
    );
    assert_eq!(raw_http(&admin, &get("evil.example"), b"").0, 403);

    let refresh = |origin: &[u8]| {
        let mut head = format!("POST /admin/connectors/refresh HTTP/1.1\r\nHost: 127.0.0.1:{port}")
            .into_bytes();
        if !origin.is_empty() {
            head.extend_from_slice(b"\r\nOrigin: ");
            head.extend_from_slice(origin);
        }
        raw_http(&admin, &head, b"")
    };
    let (status, body) = refresh(b"http://evil.example");
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("Origin not allowed"), "{body}");
    assert_eq!(refresh(b"http://localhost\xE9").0, 403);
    assert_eq!(refresh(b"").0, 200, "no Origin: the CLI's own request");
    assert_eq!(
        refresh(format!("http://127.0.0.1:{port}").as_bytes()).0,
        200
    );
}

/// What the upstream received, by JSON-RPC method (`DELETE` for a DELETE request).
fn upstream_methods(proc: &Proc) -> Vec<String> {
    portcullis_tests::upstreams::logged_requests(proc)
        .iter()
        .map(|r| match r["method"].as_str() {
            Some("POST") => serde_json::from_str::<Value>(r["body"].as_str().unwrap_or(""))
                .ok()
                .and_then(|b| b["method"].as_str().map(str::to_string))
                .unwrap_or_else(|| "unparsable".into()),
            other => other.unwrap_or("?").to_string(),
        })
        .collect()
}

/// Item 2: a real Python `mcp` upstream answers HTTP 400 to a call whose arguments hold
/// a number it cannot parse. That is the call's answer, not a lost session: the gateway
/// sends it once, opens no new upstream session and leaves none behind.
#[tokio::test]
async fn an_upstream_400_caused_by_the_request_is_not_taken_for_a_lost_session() {
    let fast = Upstream::fastmcp(&["--log-requests"]);
    let (key, hash) = new_key();
    let config = Config::new()
        .connector(Connector::new("conn_fast", "Fast MCP", &fast.url))
        .agent(Agent::new("agent", &hash));
    let gw = Gateway::start(&config.render());
    let mut mcp = Mcp::new(&gw.url(Some("conn_fast")), &key);
    mcp.initialize().await;
    let ok = mcp.call("get_item", json!({"id": "1"})).await;
    assert_eq!(ok["result"]["structuredContent"]["name"], "alpha", "{ok}");
    let before = upstream_methods(&fast.proc);

    let huge = "9".repeat(5000);
    for i in 0..3 {
        let body = format!(
            r#"{{"jsonrpc":"2.0","id":"big-{i}","method":"tools/call","params":{{"name":"get_item","arguments":{{"id":{huge}}}}}}}"#
        );
        let msg = mcp.post(&body, &[]).await.json();
        assert_rpc_error(&msg, -32603, "Upstream returned HTTP 400");
    }
    let ok = mcp.call("get_item", json!({"id": "2"})).await;
    assert_eq!(ok["result"]["structuredContent"]["name"], "beta", "{ok}");

    let after = upstream_methods(&fast.proc);
    let new: Vec<&String> = after[before.len()..].iter().collect();
    let count = |m: &str| new.iter().filter(|x| x.as_str() == m).count();
    assert_eq!(count("unparsable"), 3, "each bad call sent once: {new:?}");
    assert_eq!(count("initialize"), 0, "no new upstream session: {new:?}");
    assert_eq!(count("DELETE"), 0, "no session abandoned: {new:?}");
    assert_eq!(count("tools/call"), 1, "{new:?}");
}

/// Item 8: an agent-chosen 200 KB tool name is shown bounded, with a marker, in the
/// audit log line and the audit row (it was written in full twice per request).
#[tokio::test]
async fn a_huge_tool_name_is_bounded_in_the_log_line_and_the_audit_row() {
    let up = Upstream::rust(&[]);
    let (gw, key) = one_connector_gateway(&up.url);
    let mut mcp = Mcp::new(&gw.url(None), &key);
    mcp.initialize().await;
    let name = format!("test-upstream.{}", "n".repeat(200_000));
    let msg = mcp.call(&name, json!({})).await;
    assert_rpc_error(&msg, -32601, "Tool not found");
    let line = portcullis_tests::audit_lines::wait_audit(&gw, Duration::from_secs(10), |l| {
        l.contains("tools/call")
    });
    assert!(line.len() < 4096, "an audit line of {} bytes", line.len());
    assert!(line.contains("…[+"), "{line}");
    let tool = portcullis_tests::audit_lines::field(&line, "tool").expect("tool field");
    assert!(
        tool.starts_with("nnnn") && tool.ends_with("bytes]"),
        "{tool}"
    );
    assert!(tool.len() < 300, "{}", tool.len());
}

/// Item 4: scope is decided before existence. An agent out of a connector's scope
/// gets the scope answer whether the tool exists (even a blocklisted one) or not; an
/// agent in scope gets "Tool not found" for a hidden tool and a missing one alike. The
/// audit row still says which was which.
#[tokio::test]
async fn a_tool_the_agent_may_not_see_is_answered_like_a_missing_one() {
    let up = Upstream::rust(&[]);
    let other = Upstream::rust(&[]);
    let (k_out, h_out) = new_key();
    let (k_in, h_in) = new_key();
    let config = Config::new()
        .connector(Connector::new("conn_test", "Test Upstream", &up.url).disabled_tools(&["echo"]))
        .connector(Connector::new("conn_other", "Other", &other.url))
        .agent(Agent::new("outsider", &h_out).scopes(&["mcp:call:conn_other"]))
        .agent(Agent::new("member", &h_in).scopes(&["mcp:call"]))
        .policy(portcullis_tests::Policy::new("builtin:slug-scope"))
        .policy(portcullis_tests::Policy::new("builtin:blocklist"));
    let gw = Gateway::start(&config.render());

    let mut outsider = Mcp::new(&gw.url(None), &k_out);
    outsider.initialize().await;
    for name in ["test-upstream.echo", "test-upstream.no_such_tool"] {
        let msg = outsider.call(name, json!({})).await;
        assert_rpc_error(&msg, -32003, "Insufficient scope");
    }
    let mut member = Mcp::new(&gw.url(None), &k_in);
    member.initialize().await;
    for name in ["test-upstream.echo", "test-upstream.no_such_tool"] {
        let msg = member.call(name, json!({})).await;
        assert_rpc_error(&msg, -32601, "Tool not found");
    }
    // The audit keeps the truth: the missing tool's rows say it does not exist.
    let missing = portcullis_tests::audit_lines::wait_audit(&gw, Duration::from_secs(10), |l| {
        l.contains("agent=outsider") && l.contains("no_such_tool")
    });
    assert!(
        missing.contains("upstream has no tool no_such_tool"),
        "{missing}"
    );
    assert!(missing.contains("status=403"), "{missing}");
    let hidden = portcullis_tests::audit_lines::wait_audit(&gw, Duration::from_secs(10), |l| {
        l.contains("agent=member") && l.contains("tool=\"echo\"")
    });
    assert!(!hidden.contains("upstream has no tool"), "{hidden}");
}

/// The `tools/list` requests a `--log-requests` upstream has received.
fn lists_received(proc: &Proc) -> usize {
    upstream_methods(proc)
        .iter()
        .filter(|m| *m == "tools/list")
        .count()
}

/// Item 3: calls to unknown tools cannot make the gateway churn a connector's list.
/// An agent out of the connector's scope causes no re-fetch at all; an agent in scope
/// causes at most one per interval, and a list that comes back unchanged changes
/// nothing: no `list_changed` to anyone, and every agent's cursor stays valid.
#[tokio::test]
async fn unknown_tool_calls_do_not_churn_the_tool_list() {
    let fast = Upstream::fastmcp(&["--log-requests"]);
    let other = Upstream::rust(&[]);
    let (k_out, h_out) = new_key();
    let (k_in, h_in) = new_key();
    let config = Config::new()
        .server("list_page_size = 2")
        .connector(Connector::new("conn_fast", "Fast MCP", &fast.url))
        .connector(Connector::new("conn_other", "Other", &other.url))
        .agent(Agent::new("outsider", &h_out).scopes(&["mcp:call:conn_other"]))
        .agent(Agent::new("member", &h_in).scopes(&["mcp:call:conn_fast"]))
        .policy(portcullis_tests::Policy::new("builtin:slug-scope"));
    let gw = Gateway::start(&config.render());

    let mut member = Mcp::new(&gw.url(Some("conn_fast")), &k_in);
    member.initialize().await;
    let mut stream = member.open_stream().await.into_body();
    let first = member.request("tools/list", json!({})).await;
    let cursor = first["result"]["nextCursor"].clone();
    assert!(cursor.is_string(), "{first}");
    let lists = lists_received(&fast.proc);

    let mut outsider = Mcp::new(&gw.url(None), &k_out);
    outsider.initialize().await;
    for _ in 0..3 {
        let msg = outsider.call("fast-mcp.no_such_tool", json!({})).await;
        assert_rpc_error(&msg, -32003, "Insufficient scope");
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    assert_eq!(
        lists_received(&fast.proc),
        lists,
        "the outsider made the upstream list"
    );

    // In scope: two calls in quick succession re-fetch once (rate limit); a third,
    // after the interval, once more. The list is unchanged each time.
    for pause in [0, 1100, 0] {
        tokio::time::sleep(Duration::from_millis(pause)).await;
        let msg = member.call("no_such_tool", json!({})).await;
        assert_rpc_error(&msg, -32601, "Tool not found");
    }
    assert_eq!(lists_received(&fast.proc), lists + 2);

    let next = member
        .request("tools/list", json!({ "cursor": cursor }))
        .await;
    assert!(next["result"]["tools"].is_array(), "cursor broken: {next}");
    let changed = portcullis_tests::client::wait_stream_message(
        &mut stream,
        Duration::from_millis(1500),
        |m| m["method"] == "notifications/tools/list_changed",
    )
    .await;
    assert!(
        changed.is_none(),
        "an unchanged list was announced: {changed:?}"
    );
}

/// Opens a connection and sends `head` and `body` without finishing the request (or
/// a GET whose response streams): the socket is returned open.
fn hold(url: &str, head: &str, body: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(("127.0.0.1", port_of(url))).expect("connect");
    stream.write_all(head.as_bytes()).expect("write head");
    stream.write_all(body).expect("write body");
    stream
}

/// The status of the response on `stream`, if one starts within `wait`.
fn status_within(stream: &mut TcpStream, wait: Duration) -> Option<u16> {
    stream.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0u8; 64];
    let n = stream.read(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf[..n]);
    text.split_whitespace().nth(1)?.parse().ok()
}

/// Item 1: one agent cannot exhaust the gateway's descriptors and lock the others out.
/// Under `ulimit -n 256`, an agent opens GET streams and stalled POST bodies (a
/// `Content-Length` of 100 and one byte sent) far beyond its limits: those beyond get
/// 429 (audited) and their connections are closed, the gateway sheds the agent's
/// newest connections at its descriptor budget, and another agent is served at once.
#[tokio::test]
async fn one_agent_cannot_exhaust_the_descriptors_and_lock_others_out() {
    let up = Upstream::rust(&[]);
    let (k_hog, h_hog) = new_key();
    let (k_victim, h_victim) = new_key();
    let config = Config::new()
        .server("max_connections_per_agent = 60\nmax_streams_per_agent = 10\nbody_read_timeout_secs = 120")
        .connector(Connector::new("conn_test", "Test Upstream", &up.url))
        .agent(Agent::new("hog", &h_hog))
        .agent(Agent::new("victim", &h_victim));
    let gw = Gateway::start_with_descriptor_limit(&config.render(), 256);
    let url = gw.url(None);
    let port = port_of(&url);

    let mut hog = Mcp::new(&url, &k_hog);
    hog.initialize().await;
    let sid = hog.session.clone().expect("session");
    let stream_head = format!(
        "GET /mcp HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {k_hog}\r\n\
         Accept: text/event-stream\r\nMcp-Session-Id: {sid}\r\nMCP-Protocol-Version: 2025-11-25\r\n\r\n"
    );
    let mut held = Vec::new();
    let mut statuses = Vec::new();
    for _ in 0..15 {
        let mut s = hold(&url, &stream_head, b"");
        statuses.push(status_within(&mut s, Duration::from_secs(5)));
        held.push(s);
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == Some(200)).count(),
        10,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == Some(429)).count(),
        5,
        "{statuses:?}"
    );

    let stalled_head = format!(
        "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {k_hog}\r\n\
         Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n\
         Content-Length: 100\r\n\r\n"
    );
    for _ in 0..260 {
        held.push(hold(&url, &stalled_head, b"{"));
    }

    // The other agent is served, promptly, while all of that is held open.
    let victim = tokio::time::timeout(Duration::from_secs(10), async {
        let mut victim = Mcp::new(&url, &k_victim);
        victim.initialize().await;
        victim.tool_names().await
    })
    .await
    .expect("the other agent is served within 10 s");
    assert!(
        victim.contains(&"test-upstream.echo".to_string()),
        "{victim:?}"
    );
    assert!(
        !gw.proc.output().contains("Too many open files"),
        "the gateway ran out of descriptors"
    );
    let refused = portcullis_tests::audit_lines::wait_audit(&gw, Duration::from_secs(10), |l| {
        l.contains("agent=hog") && l.contains("status=429")
    });
    assert!(refused.contains("max_"), "{refused}");
    drop(held);
}

/// Item 1: a body that stops coming is answered 408 after `body_read_timeout_secs`
/// and its connection closed (it was held open indefinitely).
#[tokio::test]
async fn a_stalled_body_times_out() {
    let up = Upstream::rust(&[]);
    let (key, hash) = new_key();
    let config = Config::new()
        .server("body_read_timeout_secs = 1")
        .connector(Connector::new("conn_test", "Test Upstream", &up.url))
        .agent(Agent::new("agent", &hash));
    let gw = Gateway::start(&config.render());
    let url = gw.url(None);
    let head = format!(
        "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n\
         Content-Length: 100\r\n\r\n",
        port_of(&url)
    );
    let mut stalled = hold(&url, &head, b"{");
    let started = std::time::Instant::now();
    assert_eq!(
        status_within(&mut stalled, Duration::from_secs(10)),
        Some(408)
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // Closed: the next read ends.
    let mut rest = Vec::new();
    stalled
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let _ = stalled.read_to_end(&mut rest);
}

/// Item 9: `builtin:redact-secrets` keeps secrets out of what an upstream sends the
/// agent besides a result: a JSON-RPC error's message and data, and the messages of
/// notifications relayed during the call (progress here). Before, both reached the
/// agent unmasked.
#[tokio::test]
async fn redaction_covers_upstream_errors_and_notifications() {
    let up = Upstream::rust(&["--response", "sse"]);
    let (key, hash) = new_key();
    let config = Config::new()
        .connector(Connector::new("conn_test", "Test Upstream", &up.url))
        .agent(Agent::new("agent", &hash))
        .policy(portcullis_tests::Policy::new("builtin:redact-secrets"));
    let gw = Gateway::start(&config.render());
    let mut mcp = Mcp::new(&gw.url(None), &key);
    mcp.initialize().await;
    let secret = "sk-abcdefghijklmnopqrstuvwx";
    let message = format!("failed for ops@example.com with {secret}");
    let msg = mcp
        .call(
            "test-upstream.rpc_error",
            json!({"code": -32050, "message": message}),
        )
        .await;
    assert_eq!(msg["error"]["code"], -32050, "{msg}");
    let shown = msg["error"]["message"].as_str().unwrap_or_default();
    assert!(
        !shown.contains(secret) && !shown.contains("ops@example.com"),
        "{msg}"
    );
    assert!(
        shown.contains("[redacted secret]") && shown.contains("[redacted email]"),
        "{msg}"
    );

    let body = json!({"jsonrpc": "2.0", "id": "p-1", "method": "tools/call", "params": {
        "name": "test-upstream.progress",
        "arguments": {"steps": 2, "message": format!("key {secret} step")},
        "_meta": {"progressToken": "tok"}}})
    .to_string();
    let resp = portcullis_tests::sse::post_streaming(&mcp, &body).await;
    let mut reader = portcullis_tests::sse::SseReader::new(resp.into_body());
    let mut notes = Vec::new();
    let last = loop {
        let m = reader
            .next(Duration::from_secs(10))
            .await
            .expect("the stream ended before the result");
        if m["method"] == "notifications/progress" {
            notes.push(m);
        } else {
            break m;
        }
    };
    assert_eq!(last["id"], "p-1", "{last}");
    assert_eq!(notes.len(), 2, "{notes:?}");
    for n in &notes {
        let text = n["params"]["message"].as_str().unwrap_or_default();
        assert!(!text.contains(secret), "{n}");
        assert!(text.starts_with("key [redacted secret] step"), "{n}");
        assert_eq!(n["params"]["progressToken"], "tok", "{n}");
    }
}

/// Item 2: when the upstream does say the session is gone (a 400 naming the session,
/// as some SDK servers answer), the call is retried once on a new session and the
/// abandoned session is ended upstream (DELETE), never left open there.
#[tokio::test]
async fn a_session_the_gateway_abandons_is_deleted_upstream() {
    let (url, log) = portcullis_tests::upstreams::session_losing_upstream().await;
    let (gw, key) = one_connector_gateway(&url);
    let mut mcp = Mcp::new(&gw.url(Some("conn_test")), &key);
    mcp.initialize().await;
    let msg = mcp.call("flaky", json!({})).await;
    assert_eq!(msg["result"]["content"][0]["text"], "ok", "{msg}");
    // The catalog's session, the agent's first, then its second after the 400.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (opened, deleted) = {
            let log = log.lock().unwrap();
            (log.opened.clone(), log.deleted.clone())
        };
        if !deleted.is_empty() || std::time::Instant::now() > deadline {
            assert_eq!(opened.len(), 3, "{opened:?}");
            assert_eq!(
                deleted,
                [opened[1].clone()],
                "the abandoned session is deleted"
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
