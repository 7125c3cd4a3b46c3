//! Upstreams made for one test: MCP servers served from the test process that
//! answer in unusual ways (raw result bytes, batches, a list or an initialize that
//! never answers), and tools added to a running in-repo upstream.

use serde_json::json;

use crate::client::session;
use crate::rpc::assert_call_ok;

/// The port of an upstream URL such as `http://127.0.0.1:PORT/mcp`.
pub fn port_of(url: &str) -> u16 {
    url.trim_start_matches("http://")
        .split('/')
        .next()
        .and_then(|a| a.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {url}"))
}

/// Adds tools (unannotated; they answer `ok <name>`) to a running in-repo upstream
/// by calling its `add_tool` directly.
pub async fn add_upstream_tools(upstream_url: &str, names: &[&str]) {
    let mut m = session(upstream_url, "unused").await;
    for n in names {
        let msg = m.call("add_tool", json!({ "name": n })).await;
        assert_call_ok(&msg);
    }
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

/// The requests a `--log-requests` upstream (`tests/peers/fastmcp_server.py`) has
/// logged so far, one JSON object each (`method`, `path`, `headers`, `body`).
pub fn logged_requests(proc: &crate::Proc) -> Vec<serde_json::Value> {
    proc.output()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v.get("headers").is_some())
        .collect()
}

/// What [`session_losing_upstream`] has seen.
#[derive(Default)]
pub struct SessionLog {
    /// Session ids it gave out, in order (one per `initialize`).
    pub opened: Vec<String>,
    /// Session ids it was asked to end (DELETE), in order.
    pub deleted: Vec<String>,
}

/// An MCP upstream with sessions (`s-1`, `s-2`, ...) that answers the first
/// `tools/call` it gets with the 400 some SDK servers send for a session they no
/// longer know (`Bad Request: No valid session ID provided`) although the session is
/// alive, and every later call with a result. One tool, `flaky`. Returns its URL and
/// what it has seen.
pub async fn session_losing_upstream() -> (String, std::sync::Arc<std::sync::Mutex<SessionLog>>) {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};

    use http_body_util::{BodyExt, Full};
    use hyper::service::service_fn;
    use hyper_util::rt::{TokioExecutor, TokioIo};

    let log = Arc::new(Mutex::new(SessionLog::default()));
    let failed_once = Arc::new(AtomicBool::new(false));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().unwrap();
    let shared = log.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (log, failed_once) = (shared.clone(), failed_once.clone());
            tokio::spawn(async move {
                let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let (log, failed_once) = (log.clone(), failed_once.clone());
                    async move {
                        let sid = req
                            .headers()
                            .get("mcp-session-id")
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_string);
                        let reply = |status: u16, body: String, sid: Option<String>| {
                            let mut resp =
                                hyper::Response::new(Full::new(bytes::Bytes::from(body)));
                            *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                            resp.headers_mut()
                                .insert("content-type", "application/json".parse().unwrap());
                            if let Some(s) = sid {
                                resp.headers_mut()
                                    .insert("mcp-session-id", s.parse().unwrap());
                            }
                            Ok::<_, std::convert::Infallible>(resp)
                        };
                        match *req.method() {
                            hyper::Method::DELETE => {
                                log.lock().unwrap().deleted.extend(sid);
                                return reply(200, String::new(), None);
                            }
                            hyper::Method::POST => {}
                            _ => return reply(405, String::new(), None),
                        }
                        let body = req.into_body().collect().await.map(|b| b.to_bytes());
                        let msg: serde_json::Value = body
                            .ok()
                            .and_then(|b| serde_json::from_slice(&b).ok())
                            .unwrap_or_default();
                        let Some(id) = msg.get("id") else {
                            return reply(202, String::new(), None);
                        };
                        let answer = |result: &str| {
                            format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{result}}}"#)
                        };
                        match msg["method"].as_str().unwrap_or("") {
                            "initialize" => {
                                let mut log = log.lock().unwrap();
                                let new = format!("s-{}", log.opened.len() + 1);
                                log.opened.push(new.clone());
                                reply(200, answer(INITIALIZE_RESULT), Some(new))
                            }
                            "tools/list" => reply(
                                200,
                                answer(r#"{"tools":[{"name":"flaky","inputSchema":{"type":"object"}}]}"#),
                                None,
                            ),
                            "tools/call" if !failed_once.swap(true, Ordering::SeqCst) => reply(
                                400,
                                r#"{"jsonrpc":"2.0","id":"server-error","error":{"code":-32600,"message":"Bad Request: No valid session ID provided"}}"#.into(),
                                None,
                            ),
                            "tools/call" => reply(
                                200,
                                answer(r#"{"content":[{"type":"text","text":"ok"}]}"#),
                                None,
                            ),
                            _ => reply(200, answer("{}"), None),
                        }
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (format!("http://{addr}/mcp"), log)
}
