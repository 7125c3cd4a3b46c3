//! One MCP session with one upstream server.
//!
//! The handshake (`initialize` + `notifications/initialized`) runs lazily before the
//! first request. When the upstream says the session is gone (404, or 400 while we
//! sent a session id, which is what some SDK servers answer), the session is
//! re-initialised once and the request retried. The agent's own token never reaches
//! this module: requests carry only the connector's credential.

use std::sync::atomic::{AtomicI64, Ordering};

use bytes::Bytes;
use http::header::{ACCEPT, CONTENT_TYPE, HeaderName, HeaderValue};
use http::{Method, Request, StatusCode, Uri};
use http_body_util::Full;
use hyper::body::Incoming;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use tokio::sync::Mutex;

use super::stream::{ListenStream, Message, MessageStream};
use super::{HttpClient, UpstreamError};
use crate::mcp::{self, HEADER_SESSION, HEADER_VERSION, jsonrpc};

/// The header that carries the connector's credential upstream.
#[derive(Clone)]
pub struct Credential {
    pub header: HeaderName,
    /// Marked sensitive: hyper never logs it and `Debug` prints `Sensitive`.
    pub value: HeaderValue,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credential({}: ***)", self.header)
    }
}

/// How an upstream answered a request.
#[derive(Debug)]
pub enum Outcome {
    /// A result, as the exact JSON text received.
    Result(Box<RawValue>),
    /// A JSON-RPC error object, as received.
    Error(Value),
}

#[derive(Clone, Default)]
struct State {
    ready: bool,
    session_id: Option<HeaderValue>,
    version: Option<HeaderValue>,
    /// Bumped at every handshake, so concurrent callers re-initialise only once.
    generation: u64,
    capabilities: Value,
}

pub struct UpstreamSession {
    client: HttpClient,
    uri: Uri,
    credential: Option<Credential>,
    state: Mutex<State>,
    next_id: AtomicI64,
}

impl UpstreamSession {
    pub fn new(client: HttpClient, uri: Uri, credential: Option<Credential>) -> Self {
        UpstreamSession {
            client,
            uri,
            credential,
            state: Mutex::new(State::default()),
            next_id: AtomicI64::new(1),
        }
    }

    /// A fresh id for the next request on this session.
    pub fn next_request_id(&self) -> i64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// The upstream's capabilities from its InitializeResult (initialising if needed).
    pub async fn capabilities(&self) -> Result<Value, UpstreamError> {
        Ok(self.ready().await?.capabilities)
    }

    /// Sends request `id` and waits for its response. Every other message the upstream
    /// sends meanwhile (progress, logging, list_changed) is handed to `on_message`.
    pub async fn request(
        &self,
        id: i64,
        method: &str,
        params: &Value,
        mut on_message: impl FnMut(Message),
    ) -> Result<Outcome, UpstreamError> {
        let body = Bytes::from(jsonrpc::request(&json!(id), method, params));
        let mut retried = false;
        loop {
            let state = self.ready().await?;
            let resp = self.post(&state, body.clone()).await?;
            let status = resp.status();
            if session_lost(status, &state) && !retried {
                retried = true;
                self.reset(state.generation).await;
                continue;
            }
            if !status.is_success() {
                return Err(UpstreamError::Status(status.as_u16()));
            }
            if status == StatusCode::ACCEPTED {
                return Err(UpstreamError::Protocol(
                    "request answered with 202 and no response".into(),
                ));
            }
            let mut stream = message_stream(resp);
            while let Some(msg) = stream.next().await? {
                match msg {
                    Message::Response {
                        id: rid,
                        result,
                        error,
                    } if rid == json!(id) => {
                        return match (result, error) {
                            (_, Some(err)) => Ok(Outcome::Error(err)),
                            (Some(result), None) => Ok(Outcome::Result(result)),
                            (None, None) => Err(UpstreamError::Protocol("empty response".into())),
                        };
                    }
                    Message::Request { id: rid, method } => self.refuse(&state, rid, &method),
                    other => on_message(other),
                }
            }
            return Err(UpstreamError::Protocol(
                "the stream ended before the response".into(),
            ));
        }
    }

    /// Sends a notification (e.g. `notifications/cancelled`).
    pub async fn notify(&self, method: &str, params: &Value) -> Result<(), UpstreamError> {
        let state = self.ready().await?;
        let resp = self
            .post(&state, Bytes::from(jsonrpc::notification(method, params)))
            .await?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(UpstreamError::Status(resp.status().as_u16()))
        }
    }

    /// Opens the server-to-client stream (GET); `None` when the upstream offers none (405).
    pub async fn listen(&self) -> Result<Option<ListenStream>, UpstreamError> {
        let state = self.ready().await?;
        let req = self
            .builder(Method::GET, &state)
            .header(ACCEPT, "text/event-stream");
        let resp = self
            .send(req.body(Full::new(Bytes::new())).expect("valid request"))
            .await?;
        match resp.status() {
            s if s.is_success() => Ok(Some(message_stream(resp))),
            StatusCode::METHOD_NOT_ALLOWED => Ok(None),
            s => Err(UpstreamError::Status(s.as_u16())),
        }
    }

    /// Ends the session upstream (DELETE); errors are ignored, the session is gone for us.
    pub async fn close(&self) {
        let state = self.state.lock().await.clone();
        if state.session_id.is_none() {
            return;
        }
        let req = self
            .builder(Method::DELETE, &state)
            .body(Full::new(Bytes::new()));
        if let Ok(req) = req {
            let _ = self.send(req).await;
        }
    }

    async fn ready(&self) -> Result<State, UpstreamError> {
        let mut state = self.state.lock().await;
        if !state.ready {
            let generation = state.generation + 1;
            *state = self.handshake().await?;
            state.generation = generation;
        }
        Ok(state.clone())
    }

    async fn reset(&self, generation: u64) {
        let mut state = self.state.lock().await;
        if state.generation == generation {
            state.ready = false;
            state.session_id = None;
        }
    }

    async fn handshake(&self) -> Result<State, UpstreamError> {
        let params = json!({
            "protocolVersion": mcp::LATEST_VERSION,
            "capabilities": {},
            "clientInfo": {"name": "portcullis", "version": env!("CARGO_PKG_VERSION")},
        });
        let body = jsonrpc::request(&json!(0), "initialize", &params);
        let resp = self.post(&State::default(), Bytes::from(body)).await?;
        if !resp.status().is_success() {
            return Err(UpstreamError::Status(resp.status().as_u16()));
        }
        let session_id = resp.headers().get(HEADER_SESSION).cloned();
        let mut stream = message_stream(resp);
        let result = loop {
            match stream.next().await? {
                Some(Message::Response {
                    result: Some(r), ..
                }) => break r,
                Some(Message::Response { error: Some(e), .. }) => {
                    return Err(UpstreamError::Protocol(format!("initialize refused: {e}")));
                }
                Some(_) => continue,
                None => return Err(UpstreamError::Protocol("no initialize result".into())),
            }
        };
        let result: Value = serde_json::from_str(result.get())
            .map_err(|e| UpstreamError::Protocol(e.to_string()))?;
        let version = result
            .get("protocolVersion")
            .and_then(Value::as_str)
            .and_then(|v| HeaderValue::from_str(v).ok())
            .ok_or_else(|| {
                UpstreamError::Protocol("InitializeResult has no protocolVersion".into())
            })?;
        let state = State {
            ready: true,
            session_id,
            version: Some(version),
            generation: 0,
            capabilities: result.get("capabilities").cloned().unwrap_or(Value::Null),
        };
        let note = jsonrpc::notification("notifications/initialized", &Value::Null);
        let resp = self.post(&state, Bytes::from(note)).await?;
        if !resp.status().is_success() {
            return Err(UpstreamError::Status(resp.status().as_u16()));
        }
        Ok(state)
    }

    /// Answers a server-to-client request the gateway cannot relay, so the upstream
    /// does not wait for it forever.
    fn refuse(&self, state: &State, id: Value, method: &str) {
        let err = jsonrpc::RpcError::new(
            jsonrpc::METHOD_NOT_FOUND,
            format!("{method} is not supported through the Portcullis gateway"),
        );
        let body = Bytes::from(jsonrpc::error(Some(&id), &err));
        let req = self
            .builder(Method::POST, state)
            .body(Full::new(body))
            .expect("valid request");
        let client = self.client.clone();
        tokio::spawn(async move {
            let _ = client.request(req).await;
        });
    }

    async fn post(
        &self,
        state: &State,
        body: Bytes,
    ) -> Result<hyper::Response<Incoming>, UpstreamError> {
        let req = self
            .builder(Method::POST, state)
            .header(CONTENT_TYPE, "application/json")
            .header(ACCEPT, "application/json, text/event-stream")
            .body(Full::new(body))
            .expect("valid request");
        self.send(req).await
    }

    fn builder(&self, method: Method, state: &State) -> http::request::Builder {
        let mut b = Request::builder().method(method).uri(self.uri.clone());
        if let Some(cred) = &self.credential {
            b = b.header(cred.header.clone(), cred.value.clone());
        }
        if let Some(sid) = &state.session_id {
            b = b.header(HEADER_SESSION, sid.clone());
        }
        if let Some(v) = &state.version {
            b = b.header(HEADER_VERSION, v.clone());
        }
        b
    }

    async fn send(
        &self,
        req: Request<Full<Bytes>>,
    ) -> Result<hyper::Response<Incoming>, UpstreamError> {
        self.client
            .request(req)
            .await
            .map_err(|e| UpstreamError::Transport(error_chain(&e)))
    }
}

fn session_lost(status: StatusCode, state: &State) -> bool {
    state.session_id.is_some()
        && (status == StatusCode::NOT_FOUND || status == StatusCode::BAD_REQUEST)
}

fn message_stream(resp: hyper::Response<Incoming>) -> MessageStream {
    let is_sse = resp
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.trim_start().starts_with("text/event-stream"));
    MessageStream::new(resp.into_body(), is_sse)
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}
