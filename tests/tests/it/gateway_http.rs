//! The agent-facing Streamable HTTP transport of the real binary: authentication,
//! sessions (and how many one agent may hold), protocol version, DNS-rebinding
//! checks, body limits, JSON-RPC framing, SSE event ids, the GET stream with
//! `list_changed`, operator refresh (CLI and SIGUSR1), config validation at start-up
//! and `portcullis keys new`.

use std::time::{Duration, Instant};

use bytes::Bytes;
use portcullis_tests::sse::{SseReader, request_status};
use portcullis_tests::{
    Agent, Cli, CliOutput, Config, Connector, Gateway, Mcp, Response, Upstream, free_port, new_key,
};
use serde_json::{Value, json};

const PING: &str = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;

/// One connector (`conn_test`, slug `test-upstream`) on `up` and these agents
/// (id, key hash).
/// One connector that follows its upstream's list live (`tool_pinning = "off"`: these
/// tests add tools upstream and expect agents to see them; pinning has its own tests).
fn config(up: &str, agents: &[(&str, &str)]) -> Config {
    agents.iter().fold(
        Config::new().connector(
            Connector::new("conn_test", "Test Upstream", up).extra("tool_pinning = \"off\""),
        ),
        |c, (id, hash)| c.agent(Agent::new(id, hash)),
    )
}

/// A gateway in front of one Rust upstream with one agent and more `[server]`
/// lines; returns the agent's key.
fn gateway(up: &Upstream, server: &str) -> (Gateway, String) {
    let (key, hash) = new_key();
    let gw = Gateway::start(
        &config(&up.url, &[("reporter", &hash)])
            .server(server)
            .render(),
    );
    (gw, key)
}

async fn session(gw: &Gateway, endpoint: Option<&str>, key: &str) -> Mcp {
    let mut mcp = Mcp::new(&gw.url(endpoint), key);
    mcp.initialize().await;
    mcp
}

fn initialize_body() -> String {
    json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "t", "version": "1"}}})
    .to_string()
}

fn rpc_error_code(resp: &Response) -> i64 {
    let v: Value = serde_json::from_str(&resp.body)
        .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", resp.body));
    v["error"]["code"]
        .as_i64()
        .unwrap_or_else(|| panic!("no JSON-RPC error: {v}"))
}

fn assert_challenge(resp: &Response) {
    assert_eq!(resp.status, 401, "{}", resp.body);
    let challenge = resp.header("www-authenticate").unwrap_or("");
    assert!(
        challenge.starts_with("Bearer"),
        "WWW-Authenticate: {challenge:?}"
    );
}

#[tokio::test]
async fn missing_or_wrong_key_is_401_with_bearer_challenge() {
    let up = Upstream::rust(&[]);
    let (gw, key) = gateway(&up, "");
    for endpoint in [None, Some("conn_test")] {
        let mut anon = Mcp::new(&gw.url(endpoint), "");
        anon.key = None;
        assert_challenge(&anon.post(&initialize_body(), &[]).await);
        let wrong = Mcp::new(&gw.url(endpoint), &new_key().0);
        assert_challenge(&wrong.post(&initialize_body(), &[]).await);
        let hash_as_key = Mcp::new(&gw.url(endpoint), "");
        let resp = hash_as_key
            .post(
                &initialize_body(),
                &[("authorization", "Basic cmVwb3J0ZXI6eA==")],
            )
            .await;
        assert_challenge(&resp);
    }
    // With a valid session id, a request without the key is still refused.
    let mcp = session(&gw, None, &key).await;
    let mut stolen = Mcp::new(&gw.url(None), "");
    stolen.key = None;
    stolen.session = mcp.session.clone();
    assert_challenge(&stolen.post(PING, &[]).await);
    let stream = stolen.open_stream().await;
    assert_eq!(stream.status(), 401);
    // The right key works.
    let ok = Mcp::new(&gw.url(None), &key)
        .post(&initialize_body(), &[])
        .await;
    assert_eq!(ok.status, 200, "{}", ok.body);
}

#[tokio::test]
async fn sessions_are_assigned_required_and_bound_to_the_agent() {
    let up = Upstream::rust(&[]);
    let (key_a, hash_a) = new_key();
    let (key_b, hash_b) = new_key();
    let agents = [("alice", hash_a.as_str()), ("bob", hash_b.as_str())];
    let gw = Gateway::start(&config(&up.url, &agents).render());

    let resp = Mcp::new(&gw.url(None), &key_a)
        .post(&initialize_body(), &[])
        .await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    let sid = resp
        .header("mcp-session-id")
        .expect("initialize must assign MCP-Session-Id")
        .to_string();
    assert!(
        !sid.is_empty() && sid.bytes().all(|b| (0x21..=0x7e).contains(&b)),
        "{sid:?}"
    );
    let result = &resp.json()["result"];
    assert_eq!(
        result["capabilities"]["tools"]["listChanged"], true,
        "{result}"
    );

    let mut alice = Mcp::new(&gw.url(None), &key_a);
    alice.session = Some(sid.clone());
    assert_eq!(alice.post(PING, &[]).await.status, 200);

    // No session header: 400.
    let none = Mcp::new(&gw.url(None), &key_a);
    let resp = none.post(PING, &[]).await;
    assert_eq!(resp.status, 400, "{}", resp.body);
    // Unknown session: 404.
    let mut unknown = Mcp::new(&gw.url(None), &key_a);
    unknown.session = Some("0123456789abcdef0123456789abcdef".into());
    assert_eq!(unknown.post(PING, &[]).await.status, 404);
    // Another agent's session: 404 (not 403: its existence is not revealed).
    let mut bob = Mcp::new(&gw.url(None), &key_b);
    bob.session = Some(sid.clone());
    assert_eq!(bob.post(PING, &[]).await.status, 404);
    assert_eq!(bob.delete().await.status, 404);
    assert_eq!(bob.open_stream().await.status(), 404);
    // ... and it is still alice's.
    assert_eq!(alice.post(PING, &[]).await.status, 200);
    // A session belongs to the endpoint it was opened on.
    let mut elsewhere = Mcp::new(&gw.url(Some("conn_test")), &key_a);
    elsewhere.session = Some(sid.clone());
    assert_eq!(elsewhere.post(PING, &[]).await.status, 404);

    // After DELETE the session is gone.
    let del = alice.delete().await;
    assert!(
        (200..300).contains(&del.status),
        "DELETE: {} {}",
        del.status,
        del.body
    );
    assert_eq!(alice.post(PING, &[]).await.status, 404);
    assert_eq!(alice.open_stream().await.status(), 404);
    assert_eq!(alice.delete().await.status, 404);
}

#[tokio::test]
async fn one_agent_cannot_take_every_session() {
    let up = Upstream::rust(&[]);
    let (key_a, hash_a) = new_key();
    let (key_b, hash_b) = new_key();
    let agents = [("alice", hash_a.as_str()), ("bob", hash_b.as_str())];
    let server = "max_sessions = 3\nmax_sessions_per_agent = 2";
    let gw = Gateway::start(&config(&up.url, &agents).server(server).render());
    let open = |key: &str| {
        let mcp = Mcp::new(&gw.url(None), key);
        async move { mcp.post(&initialize_body(), &[]).await }
    };

    let first = open(&key_a).await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(open(&key_a).await.status, 200);
    // Alice's third: 429, with a JSON-RPC error that says what to do.
    let third = open(&key_a).await;
    assert_eq!(third.status, 429, "{}", third.body);
    assert!(third.header("mcp-session-id").is_none());
    assert_eq!(rpc_error_code(&third), -32600, "{}", third.body);
    assert!(
        third.body.contains("this agent has 2 open"),
        "{}",
        third.body
    );
    // Bob still gets the last place; after it the gateway as a whole is full: 503.
    assert_eq!(open(&key_b).await.status, 200);
    let full = open(&key_b).await;
    assert_eq!(full.status, 503, "{}", full.body);
    // Ending one of Alice's sessions gives her a place again.
    let mut alice = Mcp::new(&gw.url(None), &key_a);
    alice.session = first.header("mcp-session-id").map(str::to_string);
    assert_eq!(alice.delete().await.status, 200);
    assert_eq!(open(&key_a).await.status, 200);
    // The gateway is full again and Alice at her limit: she is told about her own.
    assert_eq!(open(&key_a).await.status, 429);
}

#[tokio::test]
async fn protocol_version_header_is_checked() {
    let up = Upstream::rust(&[]);
    let (gw, key) = gateway(&up, "");
    let mcp = session(&gw, None, &key).await;

    let resp = mcp
        .post(PING, &[("mcp-protocol-version", "1999-01-01")])
        .await;
    assert_eq!(resp.status, 400, "{}", resp.body);

    // Every supported revision is accepted in the header...
    for v in ["2025-03-26", "2025-06-18", "2025-11-25"] {
        let resp = mcp.post(PING, &[("mcp-protocol-version", v)]).await;
        assert_eq!(resp.status, 200, "{v}: {}", resp.body);
    }
    // ... and no header at all is accepted too.
    let headers = vec![
        ("content-type".to_string(), "application/json".to_string()),
        (
            "accept".to_string(),
            "application/json, text/event-stream".to_string(),
        ),
        ("authorization".to_string(), format!("Bearer {key}")),
        ("mcp-session-id".to_string(), mcp.session.clone().unwrap()),
    ];
    let resp = mcp.send("POST", Bytes::from(PING), headers, &[]).await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert_eq!(resp.json()["result"], json!({}));
}

/// The header is checked on every request of a session, GET and DELETE included.
#[tokio::test]
async fn protocol_version_header_is_checked_on_get_and_delete() {
    let up = Upstream::rust(&[]);
    let (gw, key) = gateway(&up, "");
    let mcp = session(&gw, None, &key).await;
    let headers = |accept: &str| {
        vec![
            ("accept".to_string(), accept.to_string()),
            ("authorization".to_string(), format!("Bearer {key}")),
            ("mcp-session-id".to_string(), mcp.session.clone().unwrap()),
            ("mcp-protocol-version".to_string(), "1999-01-01".to_string()),
        ]
    };
    let get = request_status(&mcp.url, "GET", &headers("text/event-stream")).await;
    let del = mcp.send("DELETE", Bytes::new(), headers("*/*"), &[]).await;
    assert_eq!(
        (get, del.status),
        (400, 400),
        "(GET, DELETE) with MCP-Protocol-Version: 1999-01-01"
    );
    // The session survived the refused DELETE.
    assert_eq!(mcp.post(PING, &[]).await.status, 200);
}

#[tokio::test]
async fn get_stream_ends_when_the_session_is_deleted() {
    let up = Upstream::rust(&[]);
    let (gw, key) = gateway(&up, "");
    let mcp = session(&gw, None, &key).await;
    let mut stream = open_reader(&mcp).await;
    let del = mcp.delete().await;
    assert!((200..300).contains(&del.status), "{}", del.status);
    let started = Instant::now();
    let ended = stream.wait_end(Duration::from_secs(5)).await;
    assert!(
        ended,
        "the session's GET stream is still open {:?} after DELETE",
        started.elapsed()
    );
}

#[tokio::test]
async fn agents_may_speak_http2_without_tls() {
    let up = Upstream::rust(&[]);
    let (gw, key) = gateway(&up, "");
    // No Host header over HTTP/2: the :authority (127.0.0.1:<port>) passes the Host check.
    let mut mcp = Mcp::new_http2(&gw.url(None), &key);
    mcp.initialize().await;
    assert!(mcp.session.is_some());

    // Calls share the one connection as concurrent streams.
    let bodies: Vec<String> = (0..20)
        .map(|i| {
            json!({"jsonrpc": "2.0", "id": 100 + i, "method": "tools/call",
                "params": {"name": "test-upstream.echo", "arguments": {"text": format!("h2 {i}")}}})
            .to_string()
        })
        .collect();
    let replies = futures_util::future::join_all(bodies.iter().map(|b| mcp.post(b, &[]))).await;
    for (i, resp) in replies.iter().enumerate() {
        assert_eq!(resp.version, http::Version::HTTP_2);
        assert_eq!(resp.status, 200, "{}", resp.body);
        let msg = resp.json();
        assert_eq!(msg["id"], 100 + i as i64);
        assert_eq!(
            msg["result"]["structuredContent"]["text"],
            format!("h2 {i}")
        );
    }

    // The GET stream works over HTTP/2 too, and ends with the session.
    let mut stream = open_reader(&mcp).await;
    let del = mcp.delete().await;
    assert!((200..300).contains(&del.status), "{}", del.status);
    assert!(stream.wait_end(Duration::from_secs(5)).await);

    // The same checks apply: no key, no entry.
    let mut anon = Mcp::new_http2(&gw.url(None), &key);
    anon.key = None;
    let resp = anon.post(&initialize_body(), &[]).await;
    assert_eq!(resp.version, http::Version::HTTP_2);
    assert_challenge(&resp);
    let resp = mcp
        .post(&initialize_body(), &[("origin", "http://evil.example")])
        .await;
    assert_eq!(resp.status, 403, "{}", resp.body);
}

/// Connects, writes `bytes`, and returns how long the gateway took to close the
/// connection without answering (None: it answered, or kept it open for 10 s).
async fn closed_after(addr: &str, bytes: &[u8]) -> Option<Duration> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(bytes).await.expect("write");
    let start = Instant::now();
    let mut buf = Vec::new();
    match tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut buf)).await {
        Ok(_) if buf.is_empty() => Some(start.elapsed()),
        _ => None,
    }
}

#[tokio::test]
async fn slow_or_silent_connections_are_closed_and_streams_are_not() {
    let up = Upstream::rust(&[]);
    let (gw, key) = gateway(&up, "header_read_timeout_secs = 1");
    let addr = gw.base.trim_start_matches("http://").to_string();
    // Connects and sends nothing; sends half a request head and stalls.
    for bytes in [&b""[..], b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\n"] {
        let took = closed_after(&addr, bytes).await;
        let took = took.unwrap_or_else(|| panic!("{bytes:?}: not closed within 10 s"));
        assert!(
            took >= Duration::from_millis(900),
            "{bytes:?}: closed after {took:?}"
        );
    }

    // A GET stream outlives the timeout: it is a response being written, not a wait.
    let mcp = session(&gw, None, &key).await;
    let mut stream = open_reader(&mcp).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        !stream.wait_end(Duration::from_millis(100)).await,
        "the GET stream was closed by the header timeout"
    );
    // And the session still answers (on a new connection if its idle one was closed).
    let resp = mcp.post(PING, &[]).await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    let del = mcp.delete().await;
    assert!((200..300).contains(&del.status), "{}", del.status);
    assert!(stream.wait_end(Duration::from_secs(5)).await);
}

/// Speaks the HTTP/2 client preface and one empty SETTINGS frame, then nothing (no
/// acknowledgements, no PING answers); returns when the gateway closed the connection
/// (None: not within 10 s) and the types of the frames it sent.
async fn silent_http2_peer(addr: &str) -> (Option<Duration>, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    hello.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    stream.write_all(&hello).await.expect("write");
    let start = Instant::now();
    let mut buf = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut buf))
        .await
        .is_ok();
    let mut types = Vec::new();
    let mut rest = &buf[..];
    while rest.len() >= 9 {
        let len = u32::from_be_bytes([0, rest[0], rest[1], rest[2]]) as usize;
        types.push(rest[3]);
        rest = &rest[(9 + len).min(rest.len())..];
    }
    (closed.then(|| start.elapsed()), types)
}

#[tokio::test]
async fn http2_peers_that_stop_answering_pings_are_closed() {
    let up = Upstream::rust(&[]);
    let (gw, key) = gateway(&up, "header_read_timeout_secs = 1");
    let addr = gw.base.trim_start_matches("http://").to_string();
    let (took, frames) = silent_http2_peer(&addr).await;
    let took = took.unwrap_or_else(|| panic!("not closed within 10 s; frames {frames:?}"));
    assert!(took >= Duration::from_millis(900), "closed after {took:?}");
    const PING_FRAME: u8 = 6;
    assert!(frames.contains(&PING_FRAME), "no PING was sent: {frames:?}");

    // A real client answers the pings: its GET stream outlives them, and calls go on.
    let mut mcp = Mcp::new_http2(&gw.url(None), &key);
    mcp.initialize().await;
    let mut stream = open_reader(&mcp).await;
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert!(
        !stream.wait_end(Duration::from_millis(100)).await,
        "the GET stream of a live HTTP/2 client was closed"
    );
    let resp = mcp.post(PING, &[]).await;
    assert_eq!((resp.version, resp.status), (http::Version::HTTP_2, 200));
    let del = mcp.delete().await;
    assert!((200..300).contains(&del.status), "{}", del.status);
    assert!(stream.wait_end(Duration::from_secs(5)).await);
}

#[tokio::test]
async fn initialize_negotiates_a_supported_revision() {
    let up = Upstream::rust(&[]);
    let (gw, key) = gateway(&up, "");
    for v in ["2025-03-26", "2025-06-18", "2025-11-25"] {
        let mut mcp = Mcp::new(&gw.url(None), &key);
        mcp.version = v.to_string();
        let result = mcp.initialize().await;
        assert_eq!(result["protocolVersion"], v, "{result}");
    }
    let mut mcp = Mcp::new(&gw.url(None), &key);
    mcp.version = "1999-01-01".into();
    let result = mcp.initialize().await;
    let got = result["protocolVersion"].as_str().unwrap_or("");
    assert!(
        ["2025-03-26", "2025-06-18", "2025-11-25"].contains(&got),
        "{result}"
    );
}

#[tokio::test]
async fn foreign_origin_and_host_are_403() {
    let up = Upstream::rust(&[]);
    let (gw, key) = gateway(&up, "");
    let port = gw.base.rsplit(':').next().unwrap().to_string();
    let mcp = Mcp::new(&gw.url(None), &key);
    let resp = mcp
        .post(&initialize_body(), &[("origin", "http://evil.example")])
        .await;
    assert_eq!(resp.status, 403, "{}", resp.body);
    let resp = mcp
        .post(&initialize_body(), &[("host", "evil.example")])
        .await;
    assert_eq!(resp.status, 403, "{}", resp.body);
    let evil_host = format!("evil.example:{port}");
    let resp = mcp
        .post(&initialize_body(), &[("host", evil_host.as_str())])
        .await;
    assert_eq!(resp.status, 403, "{}", resp.body);

    // Loopback names and a same-origin Origin are fine.
    let same_origin = format!("http://127.0.0.1:{port}");
    let localhost = format!("localhost:{port}");
    for extra in [
        [("origin", same_origin.as_str())],
        [("host", localhost.as_str())],
    ] {
        let resp = mcp.post(&initialize_body(), &extra).await;
        assert_eq!(resp.status, 200, "{extra:?}: {}", resp.body);
    }
}

#[tokio::test]
async fn post_framing_errors() {
    let up = Upstream::rust(&[]);
    let (gw, key) = gateway(&up, "max_body_bytes = 2048");
    let mut mcp = session(&gw, None, &key).await;

    // Too large: 413.
    let big = json!({"jsonrpc": "2.0", "id": 9, "method": "ping",
                     "params": {"pad": "x".repeat(4096)}})
    .to_string();
    let resp = mcp.post(&big, &[]).await;
    assert_eq!(resp.status, 413, "{}", resp.body);
    // Just under the limit is fine.
    let fits = json!({"jsonrpc": "2.0", "id": 9, "method": "ping",
                      "params": {"pad": "x".repeat(1500)}})
    .to_string();
    assert_eq!(mcp.post(&fits, &[]).await.status, 200);

    // Wrong content type: 415.
    let resp = mcp.post(PING, &[("content-type", "text/plain")]).await;
    assert_eq!(resp.status, 415, "{}", resp.body);

    // Malformed JSON: 400 with a JSON-RPC parse error.
    let resp = mcp.post(r#"{"jsonrpc":"2.0","id":1,"#, &[]).await;
    assert_eq!(resp.status, 400, "{}", resp.body);
    assert_eq!(rpc_error_code(&resp), -32700);
    let v: Value = serde_json::from_str(&resp.body).unwrap();
    assert_eq!(v["jsonrpc"], "2.0");
    assert_eq!(v["id"], Value::Null, "{v}");

    // A batch in a 2025-11-25 session: -32600 (gateway_batches.rs has 2025-03-26).
    let batch = format!("[{PING},{PING}]");
    let resp = mcp.post(&batch, &[]).await;
    assert!(resp.status < 500, "{}", resp.status);
    assert_eq!(rpc_error_code(&resp), -32600, "{}", resp.body);

    // Unknown method: -32601, never a hang.
    let msg = mcp.request("resources/templates/nope", json!({})).await;
    assert_eq!(msg["error"]["code"], -32601, "{msg}");
    // ping: an empty result.
    let msg = mcp.request("ping", Value::Null).await;
    assert_eq!(msg["result"], json!({}), "{msg}");
    // A notification: 202 and no body.
    let resp = mcp
        .notify("notifications/roots/list_changed", Value::Null)
        .await;
    assert_eq!(resp.status, 202);
    assert!(resp.body.is_empty(), "{}", resp.body);
    // Neither JSON nor SSE accepted: 406. Another HTTP method: 405.
    let resp = mcp.post(PING, &[("accept", "text/html")]).await;
    assert_eq!(resp.status, 406, "{}", resp.body);
    let resp = mcp
        .send(
            "PUT",
            Bytes::from(PING),
            vec![("authorization".into(), format!("Bearer {key}"))],
            &[],
        )
        .await;
    assert_eq!(resp.status, 405, "{}", resp.body);

    // A chunked body (no Content-Length) over the limit: 413 as well.
    let head = format!(
        "POST /mcp HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n\
         Mcp-Session-Id: {}\r\nMcp-Protocol-Version: {}\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        gw.base.trim_start_matches("http://"),
        mcp.session.as_deref().unwrap(),
        mcp.version
    );
    let mut raw = head.into_bytes();
    for chunk in big.as_bytes().chunks(1000) {
        raw.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        raw.extend_from_slice(chunk);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    let status = raw_http(gw.base.trim_start_matches("http://"), &raw).await;
    assert!(status.starts_with("HTTP/1.1 413"), "{status}");

    // A path that names no connector: 404.
    let nowhere = Mcp::new(&gw.url(Some("conn_nope")), &key);
    assert_eq!(nowhere.post(&initialize_body(), &[]).await.status, 404);
}

/// Sends raw bytes on a fresh connection; returns the status line of the answer.
async fn raw_http(addr: &str, bytes: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    // The server may answer (and close) before reading everything: ignore write errors.
    let _ = stream.write_all(bytes).await;
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut buf)).await;
    String::from_utf8_lossy(&buf)
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}

/// Adds tools through the gateway until `reader` sees `list_changed` (the upstream
/// announces on its GET stream, which the gateway may still be connecting to).
/// Returns the name of the tool that was announced.
async fn add_until_announced(
    mcp: &mut Mcp,
    readers: &mut [&mut SseReader],
    prefix: &str,
    attempts: usize,
) -> Option<String> {
    for i in 0..attempts {
        let name = format!("{prefix}_{i}");
        let msg = mcp
            .call("test-upstream.add_tool", json!({"name": name}))
            .await;
        assert!(msg["result"].is_object(), "{msg}");
        let first = &mut readers[0];
        let deadline = Instant::now() + Duration::from_millis(1500);
        let mut seen = false;
        while let Some(m) = first.next(deadline - Instant::now()).await {
            if m["method"] == "notifications/tools/list_changed" {
                seen = true;
                break;
            }
            if Instant::now() >= deadline {
                break;
            }
        }
        if seen {
            for other in readers.iter_mut().skip(1) {
                let m = other
                    .next(Duration::from_secs(5))
                    .await
                    .expect("list_changed on every open stream");
                assert_eq!(m["method"], "notifications/tools/list_changed", "{m}");
            }
            return Some(name);
        }
    }
    None
}

async fn open_reader(mcp: &Mcp) -> SseReader {
    let resp = mcp.open_stream().await;
    assert_eq!(resp.status(), 200);
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    assert!(ct.starts_with("text/event-stream"), "{ct}");
    SseReader::new(resp.into_body())
}

#[tokio::test]
async fn get_stream_relays_upstream_list_changed() {
    let up = Upstream::rust(&[]);
    let (gw, key) = gateway(&up, "");
    let mut all = session(&gw, None, &key).await;
    let mut one = session(&gw, Some("conn_test"), &key).await;
    let before = all.tool_names().await;
    assert!(one.tool_names().await.contains(&"echo".to_string()));
    let mut all_stream = open_reader(&all).await;
    let mut one_stream = open_reader(&one).await;

    let added = add_until_announced(
        &mut all,
        &mut [&mut all_stream, &mut one_stream],
        "announced",
        10,
    )
    .await
    .expect("notifications/tools/list_changed never reached the agent's GET stream");
    let after = all.tool_names().await;
    assert!(
        after.contains(&format!("test-upstream.{added}")),
        "the new tool must be listed after list_changed: {after:?}"
    );
    assert!(after.len() > before.len());
    assert!(one.tool_names().await.contains(&added));
}

#[tokio::test]
async fn sse_event_ids_are_unique_across_a_sessions_streams() {
    let up = Upstream::rust(&[]);
    let (gw, key) = gateway(&up, "");
    let mut mcp = session(&gw, None, &key).await;
    let mut seen: Vec<String> = Vec::new();
    for stream in 0..3 {
        let resp = mcp
            .request_raw(
                "tools/call",
                json!({"name": "test-upstream.progress", "arguments": {"steps": 2},
                       "_meta": {"progressToken": stream}}),
            )
            .await;
        assert!(
            resp.is_sse(),
            "progress makes an event stream: {}",
            resp.body
        );
        let ids: Vec<String> = resp
            .body
            .lines()
            .filter_map(|l| l.strip_prefix("id:"))
            .map(|id| id.trim().to_string())
            .collect();
        assert_eq!(
            ids.len(),
            3,
            "two progress events and the answer: {}",
            resp.body
        );
        seen.extend(ids);
    }
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), seen.len(), "an event id repeats: {seen:?}");
}

#[tokio::test]
async fn list_changed_is_relayed_after_the_upstream_restarts() {
    let port = free_port();
    let first = Upstream::rust_on(port, &["--sessions"]);
    let (key, hash) = new_key();
    let gw = Gateway::start_with_env(
        &config(&first.url, &[("reporter", &hash)]).render(),
        &[("RUST_LOG", "info,portcullis::gateway::catalog=debug")],
    );
    let mut all = session(&gw, None, &key).await;
    all.tool_names().await;
    let mut stream = open_reader(&all).await;
    add_until_announced(&mut all, &mut [&mut stream], "before", 10)
        .await
        .expect("list_changed before the restart");
    // Fill the cache again, so that nothing but the watch can notice the next change.
    all.tool_names().await;

    drop(first);
    let _second = Upstream::rust_on(port, &["--sessions"]);
    // The restarted upstream knows nothing of the gateway's sessions (404): the gateway
    // must re-initialise the session it watches, not only the one it calls on.
    let added = add_until_announced(&mut all, &mut [&mut stream], "after", 15)
        .await
        .unwrap_or_else(|| {
            panic!(
                "list_changed from the restarted upstream never reached the agent; \
                 the gateway's watch said:\n{}",
                gw.proc.lines_with("list_changed stream").join("\n")
            )
        });
    let names = all.tool_names().await;
    assert!(
        names.contains(&format!("test-upstream.{added}")),
        "{names:?}"
    );
}

#[tokio::test]
async fn refresh_by_cli_and_by_sigusr1() {
    let up = Upstream::rust(&["--no-get-stream"]);
    let (key, hash) = new_key();
    let admin_port = free_port();
    let admin = format!("[admin]\nlisten = \"127.0.0.1:{admin_port}\"");
    let gw = Gateway::start(&config(&up.url, &[("reporter", &hash)]).raw(&admin).render());
    let refresh = |args: &[&str]| {
        Cli::new()
            .args(["connectors", "refresh"])
            .config(&gw.config_path)
            .args(args)
            .run()
    };
    let mut mcp = session(&gw, None, &key).await;
    let before = mcp.tool_names().await;
    assert!(before.contains(&"test-upstream.echo".to_string()));

    // The upstream changes its list; with no GET stream the gateway cannot know.
    let msg = mcp
        .call("test-upstream.add_tool", json!({"name": "by_cli"}))
        .await;
    assert!(msg["result"].is_object(), "{msg}");
    let cached = mcp.tool_names().await;
    assert_eq!(cached, before, "the list is cached until refreshed");

    let out = refresh(&[]);
    assert!(out.success(), "refresh failed: {out:?}");
    assert!(out.stdout.contains("conn_test"), "{out:?}");
    let names = mcp.tool_names().await;
    assert!(
        names.contains(&"test-upstream.by_cli".to_string()),
        "after `portcullis connectors refresh`: {names:?}"
    );

    // One connector by id; an unknown id fails.
    let out = refresh(&["conn_test"]);
    assert!(out.success(), "{out:?}");
    let out = refresh(&["conn_nope"]);
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(out.stderr.contains("conn_nope"), "{out:?}");

    // SIGUSR1 does the same.
    let msg = mcp
        .call("test-upstream.add_tool", json!({"name": "by_signal"}))
        .await;
    assert!(msg["result"].is_object(), "{msg}");
    assert!(
        !mcp.tool_names()
            .await
            .contains(&"test-upstream.by_signal".to_string())
    );
    gw.proc.signal("USR1");
    let refreshed = "SIGUSR1 did not refresh";
    mcp.wait_for_tool("test-upstream.by_signal", Duration::from_secs(5), refreshed)
        .await;
}

/// A config with one valid agent and these connectors.
fn with_connectors(connectors: &[Connector]) -> Config {
    connectors
        .iter()
        .cloned()
        .fold(Config::new(), Config::connector)
        .agent(Agent::new("a", &"0".repeat(64)).org("o"))
}

fn refused(config: Config) -> String {
    Gateway::refuses(&config.render())
}

/// The refusal of a config with these `[server]` settings, one connector and one agent.
fn refused_server(settings: &str) -> String {
    refused(
        with_connectors(&[Connector::new("c1", "One", "http://127.0.0.1:9/mcp")]).server(settings),
    )
}

#[test]
fn invalid_configs_refuse_to_start_naming_the_key() {
    let url = "http://127.0.0.1:9/mcp";
    // Unknown key.
    let out = refused_server("bogus_knob = 1");
    assert!(out.contains("bogus_knob"), "{out}");
    let out = refused(with_connectors(&[
        Connector::new("c1", "One", url).extra("tiemout_ms = 5")
    ]));
    assert!(out.contains("tiemout_ms"), "{out}");

    // Slug clash: "My Server" and "my-server!" both become my-server.
    let out = refused(with_connectors(&[
        Connector::new("c1", "My Server", url),
        Connector::new("c2", "my-server!", url),
    ]));
    assert!(out.contains("connectors[1].name"), "{out}");
    assert!(out.contains("my-server"), "{out}");

    // Bad separator.
    for sep in ["/", "", "-"] {
        let out = refused_server(&format!("tool_separator = \"{sep}\""));
        assert!(out.contains("server.tool_separator"), "{sep:?}: {out}");
    }

    // Worker threads: at least one.
    let out = refused_server("workers = 0");
    assert!(out.contains("server.workers"), "{out}");

    // The request-head timeout: 1 s to an hour.
    let out = refused_server("header_read_timeout_secs = 0");
    assert!(out.contains("server.header_read_timeout_secs"), "{out}");

    // Polling before sleeping: at most a millisecond.
    let out = refused_server("idle_spin_us = 5000");
    assert!(out.contains("server.idle_spin_us"), "{out}");

    // Sessions per agent: at least one, at most the gateway's limit.
    for value in [
        "max_sessions_per_agent = 0",
        "max_sessions = 5\nmax_sessions_per_agent = 6",
    ] {
        let out = refused_server(value);
        assert!(
            out.contains("server.max_sessions_per_agent"),
            "{value}: {out}"
        );
    }

    // A credential written into the config is refused, and not echoed back.
    let out = refused(with_connectors(&[
        Connector::new("c1", "One", url).credential("plain-s3cret-value")
    ]));
    assert!(out.contains("connectors[0].credential"), "{out}");
    assert!(!out.contains("plain-s3cret-value"), "secret echoed: {out}");

    // An env: credential whose variable is not set.
    let out = refused(with_connectors(&[
        Connector::new("c1", "One", url).credential("env:PORTCULLIS_TEST_SURELY_UNSET_VAR")
    ]));
    assert!(out.contains("connectors[0].credential"), "{out}");
}

#[tokio::test]
async fn keys_new_prints_a_key_and_its_sha256() {
    use sha2::Digest;
    let parse = |out: &CliOutput| {
        assert!(out.success(), "{out:?}");
        let stdout = &out.stdout;
        let grab = |label: &str| {
            stdout
                .lines()
                .find_map(|l| l.strip_prefix(label))
                .map(|v| v.trim().to_string())
                .unwrap_or_else(|| panic!("no {label:?} line in: {stdout}"))
        };
        (grab("api key:"), grab("key_sha256:"))
    };
    let (key, hash) = parse(&Cli::new().args(["keys", "new"]).run());
    assert_eq!(hex::encode(sha2::Sha256::digest(key.as_bytes())), hash);
    assert!(key.len() >= 32, "{key}");
    let (key2, _) = parse(&Cli::new().args(["keys", "new"]).run());
    assert_ne!(key, key2, "keys must be random");

    // The printed pair works as configured.
    let up = Upstream::rust(&[]);
    let gw = Gateway::start(&config(&up.url, &[("reporter", &hash)]).render());
    let mut mcp = Mcp::new(&gw.url(None), &key);
    mcp.initialize().await;
    let other = Mcp::new(&gw.url(None), &key2);
    assert_eq!(other.post(&initialize_body(), &[]).await.status, 401);
}
