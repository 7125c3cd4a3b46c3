//! The tool catalogue (built-in tools, `--extra-tools` generated ones and
//! those added at run time by `add_tool`) and the tool implementations.
//! Two control tools are answered but never listed: `set_description` rewrites a
//! listed tool's description (a "rug pull") and `session_stats` counts sessions.
//!
//! Tool definitions are serialised once; `tools/list` only concatenates them.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;
use tokio::time::sleep;

use crate::rpc::{CallParams, INVALID_PARAMS, Reply, Request};
use crate::sse;
use crate::state::State;

/// Upper bound of `big`'s `bytes` argument.
const MAX_BIG: u64 = 1 << 30;
/// Upper bound of `progress`' `steps` argument.
const MAX_STEPS: u64 = 10_000;
const STEP: Duration = Duration::from_millis(20);
/// Cursors are offsets, lightly scrambled so that nobody mistakes them for numbers.
const CURSOR_MASK: usize = 0x5eed_c0de;

/// The tool that answers with its params as received (`--raw-echo`).
pub const RAW_ECHO: &str = "raw_echo";

/// Definitions of the built-in tools.
fn builtin() -> Vec<Value> {
    let obj = |props: Value, required: &[&str]| json!({ "type": "object", "properties": props, "required": required });
    let int =
        |description: &str| json!({ "type": "integer", "minimum": 0, "description": description });
    let none = || json!({ "type": "object", "properties": {} });
    vec![
        json!({
            "name": "echo",
            "description": "Returns its text argument (plus an unknown result field).",
            "inputSchema": obj(json!({ "text": { "type": "string" } }), &["text"]),
            "outputSchema": obj(json!({ "text": { "type": "string" } }), &["text"]),
            "annotations": { "readOnlyHint": true, "destructiveHint": false,
                             "idempotentHint": true, "openWorldHint": false },
        }),
        json!({
            "name": "sleep",
            "description": "Waits `ms` milliseconds.",
            "inputSchema": obj(json!({ "ms": int("milliseconds") }), &["ms"]),
        }),
        json!({
            "name": "http_error",
            "description": "Answers the HTTP request itself with this status.",
            "inputSchema": obj(json!({ "status": { "type": "integer", "minimum": 100, "maximum": 999 } }), &["status"]),
        }),
        json!({
            "name": "rpc_error",
            "description": "Answers with a JSON-RPC error with this code and message.",
            "inputSchema": obj(json!({ "code": { "type": "integer" }, "message": { "type": "string" } }), &["code"]),
        }),
        json!({
            "name": "big",
            "description": "Returns a text of exactly `bytes` 'x' characters.",
            "inputSchema": obj(json!({ "bytes": int("length of the text") }), &["bytes"]),
        }),
        json!({
            "name": "progress",
            "description": "Sends `steps` progress notifications (if given a progressToken), 20 ms apart, each with the message `<message> <i>` (default `step`).",
            "inputSchema": obj(json!({ "steps": int("number of notifications"), "message": { "type": "string" } }), &["steps"]),
        }),
        json!({
            "name": "whoami",
            "description": "Returns the request headers and _meta it saw.",
            "inputSchema": none(),
        }),
        json!({
            "name": "wait_for_cancel",
            "description": "Waits up to `ms` milliseconds for notifications/cancelled; never answers if cancelled.",
            "inputSchema": obj(json!({ "ms": int("milliseconds") }), &["ms"]),
        }),
        json!({
            "name": "cancelled_ids",
            "description": "Lists the request ids cancelled so far.",
            "inputSchema": none(),
        }),
        json!({
            "name": "add_tool",
            "description": "Adds an (unannotated) tool and announces notifications/tools/list_changed.",
            "inputSchema": obj(json!({ "name": { "type": "string" } }), &["name"]),
        }),
        json!({
            "name": "delete_thing",
            "description": "Pretends to delete a thing.",
            "inputSchema": obj(json!({ "id": { "type": "string" } }), &[]),
            "annotations": { "readOnlyHint": false, "destructiveHint": true },
        }),
        json!({
            "name": "list_things",
            "description": "Lists things.",
            "inputSchema": none(),
            "annotations": { "readOnlyHint": true },
        }),
        json!({
            "name": "unannotated",
            "description": "A tool without annotations.",
            "inputSchema": none(),
        }),
        json!({
            "name": "count_calls",
            "description": "Number of tools/call requests received so far (this one included).",
            "inputSchema": none(),
        }),
    ]
}

/// Definition of generated tool number `i`; annotations cycle through
/// read-only, destructive and none.
fn generated(i: usize) -> Value {
    let mut tool = json!({
        "name": format!("tool_{i:04}"),
        "description": format!("Generated tool number {i}."),
        "inputSchema": { "type": "object", "properties": { "value": { "type": "string" } } },
    });
    match i % 3 {
        0 => tool["annotations"] = json!({ "readOnlyHint": true, "destructiveHint": false }),
        1 => tool["annotations"] = json!({ "readOnlyHint": false, "destructiveHint": true }),
        _ => {}
    }
    tool
}

fn added(name: &str) -> Value {
    json!({
        "name": name,
        "description": "Added at run time by add_tool.",
        "inputSchema": { "type": "object" },
    })
}

/// The current set of tools.
pub struct Catalog {
    current: RwLock<Arc<Snapshot>>,
}

struct Snapshot {
    names: HashSet<String>,
    /// Serialised tool definitions, in list order.
    tools: Vec<String>,
    /// The whole list as one `tools/list` result.
    full: String,
}

impl Snapshot {
    fn new(names: HashSet<String>, tools: Vec<String>) -> Self {
        let full = page(&tools, None);
        Snapshot { names, tools, full }
    }
}

fn page(tools: &[String], next: Option<usize>) -> String {
    let len = tools.iter().map(|t| t.len() + 1).sum::<usize>();
    let mut out = String::with_capacity(len + 48);
    out.push_str(r#"{"tools":["#);
    for (i, tool) in tools.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(tool);
    }
    out.push(']');
    if let Some(next) = next {
        out.push_str(&format!(r#","nextCursor":"c{:x}""#, next ^ CURSOR_MASK));
    }
    out.push('}');
    out
}

fn decode_cursor(cursor: &str) -> Option<usize> {
    let hex = cursor.strip_prefix('c')?;
    Some(usize::from_str_radix(hex, 16).ok()? ^ CURSOR_MASK)
}

impl Catalog {
    /// The built-in tools, `extra` generated ones and, if asked for, `raw_echo`.
    #[cfg(test)]
    pub fn new(extra: usize, raw_echo: bool) -> Self {
        Catalog::with_process_tools(extra, raw_echo, false)
    }

    /// Like [`Catalog::new`]; with `process` (the stdio transport) `pid` and `getenv`
    /// are listed too, so a gateway in front can call them.
    pub fn with_process_tools(extra: usize, raw_echo: bool, process: bool) -> Self {
        let process_tools = process.then(|| {
            [
                json!({
                    "name": "pid",
                    "description": "The server's process id.",
                    "inputSchema": { "type": "object" },
                }),
                json!({
                    "name": "getenv",
                    "description": "The value of the environment variable `name` (null if unset).",
                    "inputSchema": { "type": "object", "properties": { "name": { "type": "string" } }, "required": ["name"] },
                }),
            ]
        });
        let raw_echo = raw_echo.then(|| {
            json!({
                "name": RAW_ECHO,
                "description": "Answers with the exact text of the params it received.",
                "inputSchema": { "type": "object" },
            })
        });
        let defs = builtin()
            .into_iter()
            .chain((0..extra).map(generated))
            .chain(raw_echo)
            .chain(process_tools.into_iter().flatten());
        let (mut names, mut tools) = (HashSet::new(), Vec::new());
        for def in defs {
            names.insert(def["name"].as_str().unwrap_or_default().to_owned());
            tools.push(def.to_string());
        }
        Catalog {
            current: RwLock::new(Arc::new(Snapshot::new(names, tools))),
        }
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.snapshot().names.contains(name)
    }

    /// Adds a tool; returns false if the name already exists.
    pub fn add(&self, name: &str) -> bool {
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        if current.names.contains(name) {
            return false;
        }
        let mut names = current.names.clone();
        let mut tools = current.tools.clone();
        names.insert(name.to_owned());
        tools.push(added(name).to_string());
        *current = Arc::new(Snapshot::new(names, tools));
        true
    }

    /// Rewrites a tool's description; returns false if there is no such tool.
    pub fn set_description(&self, name: &str, description: &str) -> bool {
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        let mut tools = current.tools.clone();
        let mut found = false;
        for text in &mut tools {
            let mut def: Value = serde_json::from_str(text).unwrap_or_default();
            if def["name"] == name {
                def["description"] = Value::String(description.to_owned());
                *text = def.to_string();
                found = true;
            }
        }
        if found {
            *current = Arc::new(Snapshot::new(current.names.clone(), tools));
        }
        found
    }

    /// One serialised `tools/list` result; `None` for an invalid cursor.
    pub fn list(&self, cursor: Option<&str>, page_size: Option<usize>) -> Option<String> {
        let snap = self.snapshot();
        let start = match cursor {
            None => 0,
            Some(c) => decode_cursor(c).filter(|&s| s <= snap.tools.len())?,
        };
        let size = page_size.unwrap_or(usize::MAX);
        if start == 0 && size >= snap.tools.len() {
            return Some(snap.full.clone());
        }
        let end = start.saturating_add(size).min(snap.tools.len());
        let next = (end < snap.tools.len()).then_some(end);
        Some(page(&snap.tools[start..end], next))
    }
}

#[derive(Serialize)]
struct Text<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    text: &'a str,
}

#[derive(Serialize)]
struct ToolResult<'a, S> {
    content: [Text<'a>; 1],
    #[serde(rename = "structuredContent", skip_serializing_if = "Option::is_none")]
    structured: Option<S>,
    #[serde(rename = "isError", skip_serializing_if = "std::ops::Not::not")]
    is_error: bool,
}

#[derive(Serialize)]
struct EchoResult<'a> {
    content: [Text<'a>; 1],
    #[serde(rename = "structuredContent")]
    structured: EchoText<'a>,
    #[serde(rename = "x-upstream-extra")]
    extra: Kept,
}

#[derive(Serialize)]
struct EchoText<'a> {
    text: &'a str,
}

#[derive(Serialize)]
struct Kept {
    kept: bool,
}

fn result<S: Serialize>(text: &str, structured: Option<S>, is_error: bool) -> Reply {
    let r = ToolResult {
        content: [Text { kind: "text", text }],
        structured,
        is_error,
    };
    Reply::Result(serde_json::to_string(&r).unwrap_or_default())
}

fn text(text: &str) -> Reply {
    result::<()>(text, None, false)
}

/// A result whose text is the JSON of its structured content.
fn structured(value: Value) -> Reply {
    result(&value.to_string(), Some(&value), false)
}

/// A tool execution error (`isError: true`), e.g. for bad arguments.
fn tool_error(message: String) -> Reply {
    result::<()>(&message, None, true)
}

fn u64_arg(args: &Map<String, Value>, key: &str) -> Result<u64, Reply> {
    args.get(key)
        .and_then(Value::as_u64)
        .ok_or_else(|| tool_error(format!("argument `{key}` must be a non-negative integer")))
}

fn str_arg<'a>(args: &'a Map<String, Value>, key: &str) -> Result<&'a str, Reply> {
    args.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| tool_error(format!("argument `{key}` must be a string")))
}

/// Runs `tools/call`. `events` is the SSE stream of the request, if any.
pub async fn call(
    state: &State,
    request: &Request,
    call: CallParams,
    headers: &HeaderMap,
    events: Option<&mpsc::Sender<Bytes>>,
) -> Reply {
    state.count_call();
    if !state.opts.delay.is_zero() {
        sleep(state.opts.delay).await;
    }
    if call.name == RAW_ECHO && state.catalog.contains(RAW_ECHO) {
        return text(request.params.as_deref().map_or("", RawValue::get));
    }
    run(state, &request.id, &call, headers, events)
        .await
        .unwrap_or_else(|reply| reply)
}

async fn run(
    state: &State,
    id: &RawValue,
    call: &CallParams,
    headers: &HeaderMap,
    events: Option<&mpsc::Sender<Bytes>>,
) -> Result<Reply, Reply> {
    let empty = Map::new();
    let args = call.arguments.as_ref().unwrap_or(&empty);
    Ok(match call.name.as_str() {
        "echo" => {
            let text = str_arg(args, "text")?;
            let r = EchoResult {
                content: [Text { kind: "text", text }],
                structured: EchoText { text },
                extra: Kept { kept: true },
            };
            Reply::Result(serde_json::to_string(&r).unwrap_or_default())
        }
        "sleep" => {
            let ms = u64_arg(args, "ms")?;
            sleep(Duration::from_millis(ms)).await;
            text(&format!("slept {ms}"))
        }
        "http_error" => {
            let status = u64_arg(args, "status")?;
            let status = u16::try_from(status)
                .ok()
                .and_then(|s| StatusCode::from_u16(s).ok())
                .ok_or_else(|| tool_error(format!("invalid HTTP status {status}")))?;
            Reply::Http {
                status,
                body: format!("upstream http_error {}\n", status.as_u16()),
            }
        }
        "rpc_error" => {
            let code = args.get("code").and_then(Value::as_i64);
            let code =
                code.ok_or_else(|| tool_error("argument `code` must be an integer".into()))?;
            let message = args.get("message").and_then(Value::as_str);
            Reply::Error {
                code,
                message: message.unwrap_or("upstream error").to_owned(),
                data: Some(json!({ "from": "upstream" })),
            }
        }
        "big" => {
            let n = u64_arg(args, "bytes")?;
            if n > MAX_BIG {
                return Err(tool_error(format!("`bytes` is limited to {MAX_BIG}")));
            }
            const HEAD: &str = r#"{"content":[{"type":"text","text":""#;
            const TAIL: &str = r#""}]}"#;
            let mut out = String::with_capacity(HEAD.len() + n as usize + TAIL.len());
            out.push_str(HEAD);
            out.extend(std::iter::repeat_n('x', n as usize));
            out.push_str(TAIL);
            Reply::Result(out)
        }
        "progress" => {
            let steps = u64_arg(args, "steps")?;
            if steps > MAX_STEPS {
                return Err(tool_error(format!("`steps` is limited to {MAX_STEPS}")));
            }
            let stream = call.progress_token().zip(events);
            let label = args
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("step");
            for i in 1..=steps {
                if let Some((token, events)) = stream {
                    let note = json!({
                        "jsonrpc": "2.0",
                        "method": "notifications/progress",
                        "params": { "progressToken": token, "progress": i, "total": steps,
                                    "message": format!("{label} {i}") },
                    });
                    if events
                        .send(sse::event(note.to_string().as_bytes()))
                        .await
                        .is_err()
                    {
                        return Ok(Reply::Silent);
                    }
                }
                sleep(STEP).await;
            }
            text(&format!("done {steps}"))
        }
        "whoami" => {
            let header = |name: &str| {
                headers
                    .get(name)
                    .map(|v| Value::String(String::from_utf8_lossy(v.as_bytes()).into_owned()))
                    .unwrap_or(Value::Null)
            };
            structured(json!({
                "authorization": header("authorization"),
                "traceparent": header("traceparent"),
                "tracestate": header("tracestate"),
                "mcp-session-id": header("mcp-session-id"),
                "mcp-protocol-version": header("mcp-protocol-version"),
                "_meta": call.meta.clone().unwrap_or(Value::Null),
            }))
        }
        "wait_for_cancel" => {
            let ms = u64_arg(args, "ms")?;
            let key = serde_json::from_str::<Value>(id.get())
                .map(|v| v.to_string())
                .unwrap_or_else(|_| id.get().to_owned());
            let (_guard, cancelled) = state.cancellable(key);
            // The sender is dropped without firing if another request with the
            // same id replaced this one: then only the timeout applies.
            let cancelled = async {
                if cancelled.await.is_err() {
                    std::future::pending::<()>().await;
                }
            };
            tokio::select! {
                _ = sleep(Duration::from_millis(ms)) => text("not cancelled"),
                _ = cancelled => Reply::Silent,
            }
        }
        "cancelled_ids" => structured(json!({ "ids": state.cancelled_ids() })),
        "add_tool" => {
            let name = str_arg(args, "name")?;
            if name.is_empty() {
                return Err(tool_error("argument `name` must not be empty".into()));
            }
            let added = state.catalog.add(name);
            let note = br#"{"jsonrpc":"2.0","method":"notifications/tools/list_changed"}"#;
            state.broadcast(sse::event(note));
            text(&if added {
                format!("added {name}")
            } else {
                format!("exists {name}")
            })
        }
        // Control tools for tests, answered but never listed (so lists stay as they
        // were): rewrite a tool's description (a "rug pull"), count sessions, tell
        // the process id and an environment variable (stdio process tests).
        "set_description" => {
            let name = str_arg(args, "name")?;
            let description = str_arg(args, "description")?;
            if !state.catalog.set_description(name, description) {
                return Err(tool_error(format!("no tool {name}")));
            }
            let note = br#"{"jsonrpc":"2.0","method":"notifications/tools/list_changed"}"#;
            state.broadcast(sse::event(note));
            text(&format!("described {name}"))
        }
        "pid" => structured(json!({ "pid": std::process::id() })),
        "getenv" => {
            let name = str_arg(args, "name")?;
            structured(json!({ "value": std::env::var(name).ok() }))
        }
        "session_stats" => {
            let (opened, open) = state.session_stats();
            structured(json!({ "opened": opened, "open": open }))
        }
        "delete_thing" => {
            let id = args.get("id").and_then(Value::as_str).unwrap_or("thing");
            text(&format!("deleted {id}"))
        }
        "list_things" => structured(json!({ "things": ["thing-1", "thing-2", "thing-3"] })),
        "unannotated" => text("unannotated ok"),
        "count_calls" => structured(json!({ "count": state.calls() })),
        other if state.catalog.contains(other) => text(&format!("ok {other}")),
        other => Reply::error(INVALID_PARAMS, format!("Unknown tool: {other}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &str) -> Vec<String> {
        let v: Value = serde_json::from_str(list).unwrap();
        v["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn pages_through_all_tools() {
        let catalog = Catalog::new(10, false);
        let all = names(&catalog.list(None, None).unwrap());
        assert_eq!(all.len(), 24);
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page = catalog.list(cursor.as_deref(), Some(5)).unwrap();
            seen.extend(names(&page));
            let v: Value = serde_json::from_str(&page).unwrap();
            match v.get("nextCursor") {
                Some(c) => cursor = Some(c.as_str().unwrap().to_owned()),
                None => break,
            }
        }
        assert_eq!(seen, all);
        assert!(catalog.list(Some("bogus"), Some(5)).is_none());
    }

    #[test]
    fn adds_tools_once() {
        let catalog = Catalog::new(0, false);
        assert!(catalog.add("fresh"));
        assert!(!catalog.add("fresh"));
        assert!(catalog.contains("fresh"));
        assert_eq!(
            names(&catalog.list(None, None).unwrap()).last().unwrap(),
            "fresh"
        );
    }
}
