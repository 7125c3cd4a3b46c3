//! A small MCP-over-HTTP client for tests: raw enough to send malformed input and read
//! status codes and headers, convenient enough to initialize, list and call.

use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// An HTTP response, fully read.
#[derive(Debug)]
pub struct Response {
    pub version: http::Version,
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn is_sse(&self) -> bool {
        self.header("content-type")
            .is_some_and(|c| c.starts_with("text/event-stream"))
    }

    /// The JSON-RPC messages of the body (one for JSON, each `data:` for SSE).
    pub fn messages(&self) -> Vec<Value> {
        if self.is_sse() {
            sse_data(&self.body)
                .iter()
                .filter_map(|d| serde_json::from_str(d).ok())
                .collect()
        } else if self.body.is_empty() {
            vec![]
        } else {
            vec![
                serde_json::from_str(&self.body)
                    .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.body)),
            ]
        }
    }

    /// The response message (the one with an `id` and a result or error).
    pub fn json(&self) -> Value {
        self.messages()
            .into_iter()
            .rfind(|m| m.get("result").is_some() || m.get("error").is_some())
            .unwrap_or_else(|| {
                panic!(
                    "no JSON-RPC response in body (status {}): {}",
                    self.status, self.body
                )
            })
    }
}

/// The `data:` payloads of an SSE body.
pub fn sse_data(body: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur: Option<String> = None;
    for line in body.lines() {
        if let Some(d) = line.strip_prefix("data:") {
            let d = d.strip_prefix(' ').unwrap_or(d);
            match &mut cur {
                Some(c) => {
                    c.push('\n');
                    c.push_str(d);
                }
                None => cur = Some(d.to_string()),
            }
        } else if line.is_empty()
            && let Some(c) = cur.take()
        {
            out.push(c);
        }
    }
    out.extend(cur);
    out
}

/// One MCP client session against a URL.
pub struct Mcp {
    client: HttpClient,
    pub url: String,
    pub key: Option<String>,
    pub session: Option<String>,
    pub version: String,
    /// The client capabilities `initialize` declares (`{}` unless a test sets them).
    pub capabilities: Value,
    next_id: i64,
}

impl Mcp {
    pub fn new(url: &str, key: &str) -> Mcp {
        Mcp {
            client: Client::builder(TokioExecutor::new()).build_http(),
            url: url.to_string(),
            key: Some(key.to_string()),
            session: None,
            version: "2025-11-25".into(),
            capabilities: json!({}),
            next_id: 1,
        }
    }

    /// The same over HTTP/2 without TLS (prior knowledge): the request's host travels
    /// as `:authority`, with no `Host` header.
    pub fn new_http2(url: &str, key: &str) -> Mcp {
        Mcp {
            client: Client::builder(TokioExecutor::new())
                .http2_only(true)
                .build_http(),
            ..Mcp::new(url, key)
        }
    }

    /// POSTs `body` with the usual MCP headers (auth, session, version) plus `extra`.
    /// An `extra` header replaces the usual one of the same name.
    pub async fn post(&self, body: &str, extra: &[(&str, &str)]) -> Response {
        let mut headers: Vec<(String, String)> = vec![
            ("content-type".into(), "application/json".into()),
            (
                "accept".into(),
                "application/json, text/event-stream".into(),
            ),
        ];
        if let Some(k) = &self.key {
            headers.push(("authorization".into(), format!("Bearer {k}")));
        }
        if let Some(s) = &self.session {
            headers.push(("mcp-session-id".into(), s.clone()));
            headers.push(("mcp-protocol-version".into(), self.version.clone()));
        }
        self.send("POST", Bytes::from(body.to_string()), headers, extra)
            .await
    }

    pub async fn send(
        &self,
        method: &str,
        body: Bytes,
        mut headers: Vec<(String, String)>,
        extra: &[(&str, &str)],
    ) -> Response {
        for (k, v) in extra {
            headers.retain(|(h, _)| !h.eq_ignore_ascii_case(k));
            headers.push((k.to_string(), v.to_string()));
        }
        let mut req = hyper::Request::builder().method(method).uri(&self.url);
        for (k, v) in &headers {
            req = req.header(k.as_str(), v.as_str());
        }
        let resp = self
            .client
            .request(req.body(Full::new(body)).unwrap())
            .await
            .expect("HTTP request");
        read(resp).await
    }

    fn id(&mut self) -> i64 {
        self.next_id += 1;
        self.next_id
    }

    /// `initialize` + `notifications/initialized`; keeps the session id. Returns the result.
    pub async fn initialize(&mut self) -> Value {
        let body = json!({"jsonrpc": "2.0", "id": self.id(), "method": "initialize", "params": {
            "protocolVersion": self.version, "capabilities": self.capabilities, "clientInfo": {"name": "portcullis-tests", "version": "1"}}});
        let resp = self.post(&body.to_string(), &[]).await;
        assert_eq!(resp.status, 200, "initialize failed: {}", resp.body);
        self.session = resp.header("mcp-session-id").map(str::to_string);
        let msg = resp.json();
        let result = msg["result"].clone();
        assert!(result.is_object(), "initialize: {msg}");
        self.version = result["protocolVersion"]
            .as_str()
            .unwrap_or("2025-11-25")
            .to_string();
        let note = self.notify("notifications/initialized", Value::Null).await;
        assert_eq!(note.status, 202);
        result
    }

    pub async fn notify(&self, method: &str, params: Value) -> Response {
        let mut body = json!({"jsonrpc": "2.0", "method": method});
        if !params.is_null() {
            body["params"] = params;
        }
        self.post(&body.to_string(), &[]).await
    }

    /// Sends a request; returns the whole HTTP response.
    pub async fn request_raw(&mut self, method: &str, params: Value) -> Response {
        let body = json!({"jsonrpc": "2.0", "id": self.id(), "method": method, "params": params});
        self.post(&body.to_string(), &[]).await
    }

    /// Sends a request; returns the JSON-RPC response message.
    pub async fn request(&mut self, method: &str, params: Value) -> Value {
        let resp = self.request_raw(method, params).await;
        assert_eq!(
            resp.status, 200,
            "{method}: HTTP {}: {}",
            resp.status, resp.body
        );
        resp.json()
    }

    /// Every tool, following `nextCursor`.
    pub async fn list_tools(&mut self) -> Vec<Value> {
        let mut tools = Vec::new();
        let mut cursor: Option<Value> = None;
        for _ in 0..1000 {
            let params = match &cursor {
                Some(c) => json!({"cursor": c}),
                None => json!({}),
            };
            let msg = self.request("tools/list", params).await;
            let result = &msg["result"];
            assert!(result.is_object(), "tools/list: {msg}");
            tools.extend(
                result["tools"]
                    .as_array()
                    .expect("tools array")
                    .iter()
                    .cloned(),
            );
            match result.get("nextCursor") {
                Some(c) if !c.is_null() => cursor = Some(c.clone()),
                _ => return tools,
            }
        }
        panic!("tools/list never ended");
    }

    /// Tool names only.
    pub async fn tool_names(&mut self) -> Vec<String> {
        self.list_tools()
            .await
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_string())
            .collect()
    }

    /// Lists tools until `name` is among them (every 100 ms, for at most `timeout`);
    /// panics with `what` and the last list if it never is.
    pub async fn wait_for_tool(&mut self, name: &str, timeout: std::time::Duration, what: &str) {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let names = self.tool_names().await;
            if names.iter().any(|n| n == name) {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{what}: no {name} in {names:?}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    /// `tools/call`; returns the JSON-RPC response message (`result` or `error`).
    pub async fn call(&mut self, name: &str, args: Value) -> Value {
        self.request("tools/call", json!({"name": name, "arguments": args}))
            .await
    }

    /// DELETE the session.
    pub async fn delete(&self) -> Response {
        let mut headers = vec![];
        if let Some(k) = &self.key {
            headers.push(("authorization".to_string(), format!("Bearer {k}")));
        }
        if let Some(s) = &self.session {
            headers.push(("mcp-session-id".to_string(), s.clone()));
        }
        self.send("DELETE", Bytes::new(), headers, &[]).await
    }

    /// Opens the GET stream; returns the raw response for incremental reading.
    pub async fn open_stream(&self) -> hyper::Response<Incoming> {
        let mut req = hyper::Request::get(&self.url).header("accept", "text/event-stream");
        if let Some(k) = &self.key {
            req = req.header("authorization", format!("Bearer {k}"));
        }
        if let Some(s) = &self.session {
            req = req.header("mcp-session-id", s.as_str());
        }
        self.client
            .request(req.body(Full::new(Bytes::new())).unwrap())
            .await
            .expect("GET stream")
    }
}

/// Reads SSE messages from a streaming body until one satisfies `pred` or time runs out.
pub async fn wait_stream_message(
    body: &mut Incoming,
    timeout: Duration,
    pred: impl Fn(&Value) -> bool,
) -> Option<Value> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut buf = String::new();
    loop {
        for d in sse_data(&buf) {
            if let Ok(v) = serde_json::from_str::<Value>(&d)
                && pred(&v)
            {
                return Some(v);
            }
        }
        let frame = tokio::time::timeout_at(deadline, body.frame())
            .await
            .ok()??
            .ok()?;
        if let Ok(data) = frame.into_data() {
            buf.push_str(&String::from_utf8_lossy(&data));
        }
    }
}

async fn read(resp: hyper::Response<Incoming>) -> Response {
    let version = resp.version();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = tokio::time::timeout(Duration::from_secs(60), resp.into_body().collect())
        .await
        .expect("response body within 60 s")
        .expect("response body")
        .to_bytes();
    Response {
        version,
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

impl Mcp {
    /// A second client on the same session (for concurrent requests).
    pub fn same_session(&self) -> Mcp {
        Mcp {
            key: self.key.clone(),
            session: self.session.clone(),
            version: self.version.clone(),
            ..Mcp::new(&self.url, "")
        }
    }
}

/// An initialized MCP session on `url`.
pub async fn session(url: &str, key: &str) -> Mcp {
    let mut m = Mcp::new(url, key);
    m.initialize().await;
    m
}

/// Sorted tool names of a session's `tools/list`.
pub async fn sorted_names(m: &mut Mcp) -> Vec<String> {
    let mut names = m.tool_names().await;
    names.sort();
    names
}

/// Sorted `names`, as owned strings (for comparing with [`sorted_names`]).
pub fn sorted(names: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

/// `tools/call` on a copy of `m`'s session inside a task, so that a connection the
/// gateway drops (instead of answering) fails the test with the gateway's log
/// rather than a bare transport panic.
pub async fn call_checked(gw: &crate::Gateway, m: &Mcp, name: &str, args: Value) -> Value {
    let mut copy = m.same_session();
    let n = name.to_string();
    match tokio::spawn(async move { copy.call(&n, args).await }).await {
        Ok(msg) => msg,
        Err(e) => panic!(
            "tools/call {name}: no JSON-RPC answer ({e}); gateway output:\n{}",
            crate::audit_lines::strip_ansi(&gw.proc.output())
        ),
    }
}
