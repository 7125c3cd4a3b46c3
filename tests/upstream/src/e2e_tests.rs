//! End-to-end tests: the real server on an ephemeral port, driven with raw
//! HTTP/1.1 over TCP (one request per connection).

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::state::{Options, ResponseMode, State};

async fn start(response: ResponseMode, sessions: bool) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = Arc::new(State::new(
        Options {
            response,
            sessions,
            delay: Duration::ZERO,
            page_size: None,
            bearer: Some("tok".into()),
            name: "t".into(),
            get_stream: true,
            keepalive: Duration::from_secs(15),
            hang_delete: false,
            ask_on_stream: vec![],
            items: 0,
        },
        0,
        false,
    ));
    tokio::spawn(crate::run(listener, state));
    addr
}

/// Sends one POST and returns the raw response (head and body).
async fn post(addr: std::net::SocketAddr, headers: &[(&str, &str)], body: &str) -> String {
    let mut req = format!(
        "POST /mcp HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).await.unwrap();
    out
}

const AUTH: (&str, &str) = ("Authorization", "Bearer tok");

#[tokio::test]
async fn echo_auth_and_sessions() {
    let addr = start(ResponseMode::Json, true).await;
    let ping = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
    assert!(post(addr, &[], ping).await.starts_with("HTTP/1.1 401"));
    assert!(post(addr, &[AUTH], ping).await.starts_with("HTTP/1.1 400"));
    let unknown = post(addr, &[AUTH, ("Mcp-Session-Id", "nope")], ping).await;
    assert!(unknown.starts_with("HTTP/1.1 404"));

    let init = r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18"}}"#;
    let res = post(addr, &[AUTH], init).await;
    assert!(res.contains(r#""protocolVersion":"2025-06-18""#), "{res}");
    let session = res
        .lines()
        .find_map(|l| l.strip_prefix("mcp-session-id: "))
        .unwrap()
        .trim()
        .to_owned();
    let headers = [AUTH, ("Mcp-Session-Id", session.as_str())];
    let echo = r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi"}}}"#;
    let res = post(addr, &headers, echo).await;
    assert!(res.starts_with("HTTP/1.1 200"), "{res}");
    assert!(res.contains("content-type: application/json"), "{res}");
    assert!(res.contains(r#""x-upstream-extra":{"kept":true}"#), "{res}");
}

#[tokio::test]
async fn cancellation_and_progress() {
    let addr = start(ResponseMode::Sse, false).await;
    let wait = r#"{"jsonrpc":"2.0","id":"w","method":"tools/call","params":{"name":"wait_for_cancel","arguments":{"ms":10000}}}"#;
    let waiting = tokio::spawn(post(addr, &[AUTH], wait));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let cancel =
        r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":"w"}}"#;
    assert!(
        post(addr, &[AUTH], cancel)
            .await
            .starts_with("HTTP/1.1 202")
    );
    let res = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .unwrap()
        .unwrap();
    assert!(res.starts_with("HTTP/1.1 200"), "{res}");
    assert!(!res.contains("data:"), "{res}");

    let ids = r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"cancelled_ids"}}"#;
    assert!(
        post(addr, &[AUTH], ids)
            .await
            .contains(r#""structuredContent":{"ids":["w"]}"#)
    );

    let progress = r#"{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"progress","arguments":{"steps":2},"_meta":{"progressToken":"p"}}}"#;
    let res = post(addr, &[AUTH], progress).await;
    let step2 = res.find(r#""progress":2"#).expect(&res);
    let done = res.find("done 2").expect(&res);
    assert!(res.contains(r#""progress":1"#) && step2 < done, "{res}");

    let error = r#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"http_error","arguments":{"status":502}}}"#;
    assert!(post(addr, &[AUTH], error).await.starts_with("HTTP/1.1 502"));
}
