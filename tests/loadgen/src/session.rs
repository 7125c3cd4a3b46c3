//! One MCP session over one HTTP/1.1 keep-alive connection: the initialize
//! handshake (keeping `MCP-Session-Id` and the negotiated protocol version),
//! then requests, then DELETE.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HOST, HeaderMap, HeaderValue};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::parse::{Outcome, classify};

/// Where and how to connect; shared by all sessions.
pub struct Target {
    pub addr: SocketAddr,
    /// `host[:port]` for the Host header.
    pub authority: String,
    /// Path and query of the MCP endpoint.
    pub path: String,
    pub key: Option<String>,
    pub protocol_version: String,
    pub request_timeout: Duration,
}

pub struct Session {
    sender: SendRequest<Full<Bytes>>,
    headers: HeaderMap,
    session_id: Option<HeaderValue>,
    next_id: u64,
}

/// A failed exchange: the connection is unusable or the answer is wrong.
pub type Error = String;

impl Session {
    /// Connects and performs initialize + notifications/initialized.
    pub async fn open(target: &Target) -> Result<Session, Error> {
        let stream = timeout(target.request_timeout, TcpStream::connect(target.addr))
            .await
            .map_err(|_| "connect: timeout".to_string())?
            .map_err(|e| format!("connect {}: {e}", target.addr))?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("HTTP handshake: {e}"))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut headers = HeaderMap::new();
        let hv = |s: &str| HeaderValue::from_str(s).map_err(|e| format!("header {s:?}: {e}"));
        headers.insert(HOST, hv(&target.authority)?);
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(
            ACCEPT,
            HeaderValue::from_static("application/json, text/event-stream"),
        );
        if let Some(key) = &target.key {
            headers.insert(AUTHORIZATION, hv(&format!("Bearer {key}"))?);
        }
        let mut session = Session {
            sender,
            headers,
            session_id: None,
            next_id: 1,
        };

        let init = serde_json::json!({
            "jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {
                "protocolVersion": target.protocol_version,
                "capabilities": {},
                "clientInfo": { "name": "portcullis-loadgen", "version": env!("CARGO_PKG_VERSION") }
            }
        });
        let (status, headers, body) = session.post(target, Bytes::from(init.to_string())).await?;
        if status != 200 {
            return Err(format!(
                "initialize: HTTP {status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(200)]).trim()
            ));
        }
        let ct = content_type(&headers);
        if let Outcome::Error(e) = classify(status, &ct, &body) {
            return Err(format!("initialize: {e}"));
        }
        let version = init_version(&ct, &body).unwrap_or_else(|| target.protocol_version.clone());
        session.session_id = headers.get("mcp-session-id").cloned();
        if let Some(id) = &session.session_id {
            session.headers.insert("mcp-session-id", id.clone());
        }
        session
            .headers
            .insert("mcp-protocol-version", hv(&version)?);

        let note = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
        let (status, _, _) = session
            .post(target, Bytes::from_static(note.as_bytes()))
            .await?;
        if !(200..300).contains(&status) {
            return Err(format!("notifications/initialized: HTTP {status}"));
        }
        Ok(session)
    }

    /// Sends one request with `params` (already serialised JSON) and classifies the
    /// answer. `Err` means the connection is broken (or timed out) and the session
    /// must be dropped; a wrong answer is an `Ok(Outcome::Error)`.
    pub async fn call(
        &mut self,
        target: &Target,
        method: &str,
        params: &str,
    ) -> Result<Outcome, Error> {
        let id = self.next_id;
        self.next_id += 1;
        let body =
            format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"{method}","params":{params}}}"#);
        let (status, headers, body) = self.post(target, Bytes::from(body)).await?;
        Ok(classify(status, &content_type(&headers), &body))
    }

    /// Ends the session on the server (best effort).
    pub async fn close(mut self, target: &Target) {
        if self.session_id.is_none() {
            return;
        }
        let Ok(mut req) = Request::builder()
            .method(Method::DELETE)
            .uri(target.path.as_str())
            .body(Full::new(Bytes::new()))
        else {
            return;
        };
        let mut headers = self.headers.clone();
        headers.remove(CONTENT_TYPE);
        *req.headers_mut() = headers;
        let _ = timeout(Duration::from_secs(2), async {
            if self.sender.ready().await.is_ok()
                && let Ok(resp) = self.sender.send_request(req).await
            {
                let _ = resp.into_body().collect().await;
            }
        })
        .await;
    }

    async fn post(
        &mut self,
        target: &Target,
        body: Bytes,
    ) -> Result<(u16, HeaderMap, Bytes), Error> {
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(target.path.as_str())
            .body(Full::new(body))
            .map_err(|e| format!("request: {e}"))?;
        *req.headers_mut() = self.headers.clone();
        let exchange = async {
            self.sender
                .ready()
                .await
                .map_err(|e| format!("connection: {e}"))?;
            let resp = self
                .sender
                .send_request(req)
                .await
                .map_err(|e| format!("send: {e}"))?;
            let (parts, body) = resp.into_parts();
            let body = body
                .collect()
                .await
                .map_err(|e| format!("response body: {e}"))?
                .to_bytes();
            Ok((parts.status.as_u16(), parts.headers, body))
        };
        timeout(target.request_timeout, exchange)
            .await
            .map_err(|_| format!("no answer within {:?}", target.request_timeout))?
    }
}

fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

/// The protocol version from an InitializeResult (JSON or SSE body).
fn init_version(content_type: &str, body: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    let candidates: Vec<&str> = if content_type.starts_with("text/event-stream") {
        text.lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .map(str::trim)
            .collect()
    } else {
        vec![text]
    };
    candidates.into_iter().find_map(|c| {
        let v: Value = serde_json::from_str(c).ok()?;
        Some(v["result"]["protocolVersion"].as_str()?.to_string())
    })
}
