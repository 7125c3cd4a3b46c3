//! Helpers for the gateway core tests (`gateway_peers`, `gateway_failures`,
//! `gateway_http`): upstreams on a fixed port (to restart them in place), audit-line
//! polling and field extraction, and running the `portcullis` CLI.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::{Gateway, Proc, Upstream};

/// The in-repo Rust upstream listening on `127.0.0.1:<port>` (to restart it on the
/// same address after dropping an earlier one).
pub fn rust_upstream_on(port: u16, args: &[&str]) -> Upstream {
    let mut cmd = Command::new(crate::bin("portcullis-test-upstream"));
    cmd.args(["--listen", &format!("127.0.0.1:{port}")])
        .args(args);
    let mut proc = Proc::spawn("rust-upstream", cmd);
    proc.wait_line(Duration::from_secs(10), |l| l.starts_with("listening on "));
    Upstream {
        url: format!("http://127.0.0.1:{port}/mcp"),
        proc,
    }
}

/// server-everything (`streamableHttp`) listening on `<port>`.
pub fn everything_on(port: u16) -> Upstream {
    let mut cmd = Command::new(crate::installed(
        "tests/node/node_modules/.bin/mcp-server-everything",
    ));
    cmd.arg("streamableHttp").env("PORT", port.to_string());
    let mut proc = Proc::spawn("server-everything", cmd);
    proc.wait_line(Duration::from_secs(30), |l| l.contains("listening on port"));
    Upstream {
        url: format!("http://127.0.0.1:{port}/mcp"),
        proc,
    }
}

/// The port of an upstream URL such as `http://127.0.0.1:PORT/mcp`.
pub fn port_of(url: &str) -> u16 {
    url.trim_start_matches("http://")
        .split('/')
        .next()
        .and_then(|a| a.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {url}"))
}

/// `line` without ANSI colour sequences (`ESC [ ... letter`).
pub fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The value of `key=value` in a log line (colours and quotes removed), if present.
pub fn field(line: &str, key: &str) -> Option<String> {
    let line = strip_ansi(line);
    let needle = format!("{key}=");
    let mut rest = line.as_str();
    while let Some(pos) = rest.find(&needle) {
        let at_word_start = pos == 0 || rest.as_bytes()[pos - 1] == b' ';
        let value = &rest[pos + needle.len()..];
        if at_word_start {
            if let Some(quoted) = value.strip_prefix('"') {
                let end = quoted.find('"').unwrap_or(quoted.len());
                return Some(quoted[..end].to_string());
            }
            let end = value.find(' ').unwrap_or(value.len());
            return Some(value[..end].to_string());
        }
        rest = value;
    }
    None
}

/// Polls the gateway's audit lines (bounded) until one satisfies `pred`; returns it.
pub fn wait_audit(gw: &Gateway, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(l) = gw.audit_lines().into_iter().find(|l| pred(l)) {
            return l;
        }
        assert!(
            Instant::now() < deadline,
            "no matching audit line within {timeout:?}; audit lines:\n{}",
            gw.audit_lines().join("\n")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The audit line for tool `tool` (upstream name) with the given status, waited for.
pub fn wait_audit_status(gw: &Gateway, tool: &str, status: u16) -> String {
    wait_audit(gw, Duration::from_secs(10), |l| {
        field(l, "tool").as_deref() == Some(tool)
            && field(l, "status").as_deref() == Some(&status.to_string())
    })
}

/// Runs `portcullis <args>` to completion (at most 60 s).
pub fn portcullis(args: &[&str]) -> Output {
    let mut child = Command::new(crate::bin("portcullis"))
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("running portcullis");
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().expect("portcullis status").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("portcullis {args:?} did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("portcullis output")
}

/// A `[[agents]]` block for an agent with full `mcp:call` scope.
pub fn agent(id: &str, hash: &str) -> String {
    format!(
        "\n[[agents]]\nid = \"{id}\"\norg = \"acme\"\nkey_sha256 = \"{hash}\"\nscopes = [\"mcp:call\"]\n"
    )
}

/// A `[[connectors]]` block; `extra` holds more `key = value` lines.
pub fn connector(id: &str, name: &str, url: &str, extra: &str) -> String {
    format!("\n[[connectors]]\nid = \"{id}\"\nname = \"{name}\"\ntarget_url = \"{url}\"\n{extra}\n")
}

/// The exact JSON text of top-level member `key` of a JSON object (e.g. the `result`
/// of a JSON-RPC response), as it appears in `body`.
pub fn raw_member(body: &str, key: &str) -> Option<String> {
    let map: std::collections::HashMap<String, Box<serde_json::value::RawValue>> =
        serde_json::from_str(body).ok()?;
    map.get(key).map(|v| v.get().to_string())
}

/// The JSON text of the JSON-RPC response in a response body (the body itself for
/// JSON, the last `data:` payload carrying a result or error for SSE).
pub fn response_text(resp: &crate::Response) -> String {
    if resp.is_sse() {
        crate::client::sse_data(&resp.body)
            .into_iter()
            .rfind(|d| {
                serde_json::from_str::<serde_json::Value>(d)
                    .is_ok_and(|v| v.get("result").is_some() || v.get("error").is_some())
            })
            .unwrap_or_else(|| panic!("no response in SSE body: {}", resp.body))
    } else {
        resp.body.clone()
    }
}

/// POSTs `body` with the session's usual headers and returns the response unread,
/// for reading an SSE answer as it arrives.
pub async fn post_streaming(
    mcp: &crate::Mcp,
    body: &str,
) -> hyper::Response<hyper::body::Incoming> {
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    let client: Client<_, http_body_util::Full<bytes::Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let mut req = hyper::Request::post(&mcp.url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream");
    if let Some(k) = &mcp.key {
        req = req.header("authorization", format!("Bearer {k}"));
    }
    if let Some(s) = &mcp.session {
        req = req
            .header("mcp-session-id", s.as_str())
            .header("mcp-protocol-version", mcp.version.as_str());
    }
    client
        .request(
            req.body(http_body_util::Full::new(bytes::Bytes::from(
                body.to_string(),
            )))
            .unwrap(),
        )
        .await
        .expect("HTTP request")
}

/// Reads the JSON messages of an SSE body one at a time, as they arrive.
pub struct SseReader {
    body: hyper::body::Incoming,
    buf: String,
}

impl SseReader {
    pub fn new(body: hyper::body::Incoming) -> SseReader {
        SseReader {
            body,
            buf: String::new(),
        }
    }

    /// The next message with a JSON `data:` payload; `None` at the end of the stream
    /// or when `timeout` passes first.
    pub async fn next(&mut self, timeout: Duration) -> Option<serde_json::Value> {
        use http_body_util::BodyExt;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let normalized = self.buf.replace("\r\n", "\n");
            if let Some(pos) = normalized.find("\n\n") {
                let event = normalized[..pos].to_string();
                self.buf = normalized[pos + 2..].to_string();
                let data = crate::client::sse_data(&format!("{event}\n\n"));
                if let Some(v) = data
                    .iter()
                    .find_map(|d| serde_json::from_str::<serde_json::Value>(d).ok())
                {
                    return Some(v);
                }
                continue;
            }
            let frame = tokio::time::timeout_at(deadline, self.body.frame())
                .await
                .ok()??
                .ok()?;
            if let Ok(data) = frame.into_data() {
                self.buf.push_str(&String::from_utf8_lossy(&data));
            }
        }
    }
}

impl SseReader {
    /// Reads until the stream ends; false if it is still open after `timeout`.
    pub async fn wait_end(&mut self, timeout: Duration) -> bool {
        use http_body_util::BodyExt;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.body.frame()).await {
                Err(_) => return false,
                Ok(None) | Ok(Some(Err(_))) => return true,
                Ok(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.push_str(&String::from_utf8_lossy(&data));
                    }
                }
            }
        }
    }
}

/// Sends a bodiless request and returns only the status (the body, which may be an
/// endless SSE stream, is not read).
pub async fn request_status(url: &str, method: &str, headers: &[(String, String)]) -> u16 {
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    let client: Client<_, http_body_util::Full<bytes::Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let mut req = hyper::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(k.as_str(), v.as_str());
    }
    let resp = tokio::time::timeout(
        Duration::from_secs(30),
        client.request(
            req.body(http_body_util::Full::new(bytes::Bytes::new()))
                .unwrap(),
        ),
    )
    .await
    .expect("response head within 30 s")
    .expect("HTTP request");
    resp.status().as_u16()
}

/// A second client on the same session as `mcp` (for concurrent requests).
pub fn same_session(mcp: &crate::Mcp) -> crate::Mcp {
    let mut other = crate::Mcp::new(&mcp.url, mcp.key.as_deref().unwrap_or(""));
    other.key = mcp.key.clone();
    other.session = mcp.session.clone();
    other.version = mcp.version.clone();
    other
}

/// An MCP upstream served from the test process: every POST's JSON body goes to
/// `answer`, which returns the response's status and JSON text (or never returns, for
/// an upstream that hangs); text starting with `data:` is sent as an SSE stream. Other
/// methods get 405. Returns the URL; the server lives as long as the test's runtime.
async fn in_process_upstream<F, Fut>(answer: F) -> String
where
    F: Fn(serde_json::Value) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = (u16, String)> + Send + 'static,
{
    use http_body_util::{BodyExt, Full};
    use hyper::service::service_fn;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let answer = answer.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let answer = answer.clone();
                    async move {
                        let (status, text) = if req.method() == hyper::Method::POST {
                            let body = req.into_body().collect().await.map(|b| b.to_bytes());
                            let msg = body
                                .ok()
                                .and_then(|b| serde_json::from_slice(&b).ok())
                                .unwrap_or_default();
                            answer(msg).await
                        } else {
                            (405, String::new())
                        };
                        let content_type = if text.starts_with("data:") {
                            "text/event-stream"
                        } else {
                            "application/json"
                        };
                        let mut resp = hyper::Response::new(Full::new(bytes::Bytes::from(text)));
                        *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                        resp.headers_mut()
                            .insert("content-type", content_type.parse().unwrap());
                        Ok::<_, std::convert::Infallible>(resp)
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    format!("http://{addr}/mcp")
}

/// The InitializeResult of the in-process upstreams.
const INITIALIZE_RESULT: &str = r#"{"protocolVersion":"2025-06-18","capabilities":{"tools":{}},"serverInfo":{"name":"in-process","version":"1"}}"#;

/// A minimal MCP upstream served from the test process: it answers `initialize`,
/// `tools/list` (one tool, `raw`) and every `tools/call` with `result_text` spliced in
/// verbatim, so tests can check that the gateway relays a result's exact bytes even
/// when they are not in serde's canonical form. GET gets 405. Returns the URL.
pub async fn raw_result_upstream(result_text: &'static str) -> String {
    in_process_upstream(move |msg: serde_json::Value| async move {
        let Some(id) = msg.get("id") else {
            return (202, String::new());
        };
        let result = match msg["method"].as_str().unwrap_or("") {
            "initialize" => INITIALIZE_RESULT,
            "tools/list" => r#"{"tools":[{"name":"raw","inputSchema":{"type":"object"}}]}"#,
            "tools/call" => result_text,
            _ => "{}",
        };
        (
            200,
            format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{result}}}"#),
        )
    })
    .await
}

/// An MCP upstream speaking 2025-03-26 that batches what it sends, as that revision
/// allows: `tools/list` (one tool, `batched`) comes as a JSON body holding a batch of
/// one, and a `tools/call` with a progress token as an SSE stream whose first event is
/// a batch of two progress notifications and whose second is a batch holding the
/// result `{"content":[],"order": "kept" ,"n":1e2}` (bytes as written). Returns its URL.
pub async fn batching_upstream() -> String {
    in_process_upstream(move |msg: serde_json::Value| async move {
        let Some(id) = msg.get("id") else {
            return (202, String::new());
        };
        let response = |result: &str| format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{result}}}"#);
        match msg["method"].as_str().unwrap_or("") {
            "initialize" => (
                200,
                response(&INITIALIZE_RESULT.replace("2025-06-18", "2025-03-26")),
            ),
            "tools/list" => (
                200,
                format!(
                    "[{}]",
                    response(r#"{"tools":[{"name":"batched","inputSchema":{"type":"object"}}]}"#)
                ),
            ),
            "tools/call" => {
                let token = &msg["params"]["_meta"]["progressToken"];
                let progress = |n: u32| {
                    format!(
                        r#"{{"jsonrpc":"2.0","method":"notifications/progress","params":{{"progressToken":{token},"progress":{n}}}}}"#
                    )
                };
                let result = response(r#"{"content":[],"order": "kept" ,"n":1e2}"#);
                (
                    200,
                    format!(
                        "data: [{},{}]\n\ndata: [{result}]\n\n",
                        progress(1),
                        progress(2)
                    ),
                )
            }
            _ => (200, response("{}")),
        }
    })
    .await
}

/// An MCP upstream whose `tools/list` never answers (alive, but stuck on the list):
/// `initialize` and notifications are answered, GET gets 405. Returns its URL and the
/// number of `tools/list` requests it has received so far.
pub async fn stalled_list_upstream() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let lists = Arc::new(AtomicUsize::new(0));
    let counter = lists.clone();
    let url = in_process_upstream(move |msg: serde_json::Value| {
        let counter = counter.clone();
        async move {
            match (msg.get("id"), msg["method"].as_str()) {
                (Some(id), Some("initialize")) => (
                    200,
                    format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{INITIALIZE_RESULT}}}"#),
                ),
                (Some(_), Some("tools/list")) => {
                    counter.fetch_add(1, Ordering::SeqCst);
                    std::future::pending().await
                }
                _ => (202, String::new()),
            }
        }
    })
    .await;
    (url, lists)
}

/// An MCP upstream that never answers the first `initialize` it receives (a server
/// stuck while it starts) and answers everything after it: `initialize`, notifications,
/// and `tools/list` with one tool, `late_tool`. Returns its URL.
pub async fn first_initialize_hangs_upstream() -> String {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let hung = Arc::new(AtomicBool::new(false));
    in_process_upstream(move |msg: serde_json::Value| {
        let hung = hung.clone();
        async move {
            let result = match (msg.get("id"), msg["method"].as_str()) {
                (Some(_), Some("initialize")) if !hung.swap(true, Ordering::SeqCst) => {
                    std::future::pending().await
                }
                (Some(_), Some("initialize")) => INITIALIZE_RESULT,
                (Some(_), Some("tools/list")) => {
                    r#"{"tools":[{"name":"late_tool","inputSchema":{"type":"object"}}]}"#
                }
                (Some(_), _) => "{}",
                (None, _) => return (202, String::new()),
            };
            let id = &msg["id"];
            (
                200,
                format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{result}}}"#),
            )
        }
    })
    .await
}
