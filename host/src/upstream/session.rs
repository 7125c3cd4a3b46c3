//! One MCP session with one upstream server over Streamable HTTP.
//!
//! The handshake (`initialize` + `notifications/initialized`) runs lazily before the
//! first request. When the upstream says the session is gone (404, or a 400 whose
//! body names the session, which is what some SDK servers answer), the session is
//! re-initialised and the request retried, once; the abandoned session is ended
//! upstream (DELETE). Any other 400 is the request's own answer. The agent's own token never reaches
//! this module: requests carry only the connector's credential, which a
//! [`CredentialProvider`] resolves for each request (a vault secret is decrypted then,
//! so a `vault put` or `rotate` takes effect without a restart).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use bytes::Bytes;
use http::header::{ACCEPT, CONTENT_TYPE, HeaderName, HeaderValue};
use http::{Method, Request, StatusCode, Uri};
use http_body_util::Full;
use hyper::body::Incoming;
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use tokio::sync::Mutex;

use super::UpstreamError;
use super::stream::{Message, MessageStream};
use crate::config::CredentialKind;
use crate::http_client::HttpClient;
use crate::mcp::params::to_raw;
use crate::mcp::{self, HEADER_SESSION, HEADER_VERSION, jsonrpc};
use crate::vault::Vault;

/// How much of an upstream's 400 body is read to tell a lost session from a bad request.
const ERROR_BODY_LIMIT: usize = 4096;
/// How long reading that body may take.
const ERROR_BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);
/// How long the DELETE of an abandoned upstream session may take.
const ABANDON_DELETE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The header that carries the connector's credential upstream.
#[derive(Clone)]
pub(crate) struct Credential {
    pub header: HeaderName,
    /// Marked sensitive: hyper never logs it and `Debug` prints `Sensitive`.
    pub value: HeaderValue,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credential({}: ***)", self.header)
    }
}

/// Where an upstream session's credential comes from, resolved per request.
#[derive(Clone, Default)]
pub(crate) enum CredentialProvider {
    /// No credential is sent.
    #[default]
    None,
    /// A fixed header (e.g. a bearer token from an environment variable).
    Static(Credential),
    /// A vault secret, decrypted when a request needs it.
    Vault {
        vault: Arc<Vault>,
        /// The connector id, for the operator's log line.
        connector: String,
        secret: String,
        kind: CredentialKind,
    },
}

impl std::fmt::Debug for CredentialProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CredentialProvider::None => write!(f, "None"),
            CredentialProvider::Static(c) => write!(f, "Static({c:?})"),
            CredentialProvider::Vault { secret, kind, .. } => {
                write!(f, "Vault({secret:?}, {kind:?})")
            }
        }
    }
}

impl CredentialProvider {
    /// The header to send. A vault failure is logged for the operator (connector,
    /// secret name, cause; never the secret) and returned as
    /// [`UpstreamError::Credential`], which the agent sees only as a generic error.
    pub(crate) async fn get(&self) -> Result<Option<Credential>, UpstreamError> {
        let (vault, connector, secret, kind) = match self {
            CredentialProvider::None => return Ok(None),
            CredentialProvider::Static(c) => return Ok(Some(c.clone())),
            CredentialProvider::Vault {
                vault,
                connector,
                secret,
                kind,
            } => (vault, connector, secret, kind),
        };
        let fail = |reason: String| {
            tracing::error!(
                connector = %connector,
                secret = %secret,
                error = %reason,
                "connector credential unavailable; the call is refused"
            );
            UpstreamError::Credential(format!(
                "connector {connector}: vault secret {secret:?}: {reason}"
            ))
        };
        let traced = crate::telemetry::spans::vault(connector, secret); // no secret value in it
        let value = tracing::Instrument::instrument(vault.get(secret), traced)
            .await
            .map_err(|e| fail(e.to_string()))?;
        let (header, text) = match kind {
            CredentialKind::Bearer | CredentialKind::OAuth => (
                http::header::AUTHORIZATION,
                zeroize::Zeroizing::new(format!("Bearer {}", value.as_str())),
            ),
            CredentialKind::Header(name) => (
                HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| fail(format!("{name:?} is not a valid header name")))?,
                value,
            ),
        };
        let mut value = HeaderValue::from_str(&text).map_err(|_| {
            fail("the secret contains characters not allowed in an HTTP header value".into())
        })?;
        value.set_sensitive(true);
        Ok(Some(Credential { header, value }))
    }
}

/// How an upstream answered a request.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// A result, as the exact JSON text received.
    Result(Box<RawValue>),
    /// A JSON-RPC error object, as received.
    Error(Value),
}

impl Outcome {
    /// The outcome a response's members describe (a response with neither is broken).
    pub(super) fn of(
        result: Option<Box<RawValue>>,
        error: Option<Value>,
    ) -> Result<Outcome, UpstreamError> {
        match (result, error) {
            (_, Some(err)) => Ok(Outcome::Error(err)),
            (Some(result), None) => Ok(Outcome::Result(result)),
            (None, None) => Err(UpstreamError::Protocol("empty response".into())),
        }
    }
}

/// The `initialize` params the gateway sends, declaring `capabilities`.
pub(super) fn initialize_params(capabilities: &Value) -> Value {
    json!({
        "protocolVersion": mcp::LATEST_VERSION,
        "capabilities": capabilities,
        "clientInfo": {"name": "portcullis", "version": env!("CARGO_PKG_VERSION")},
    })
}

/// The InitializeResult's text parsed, with a `protocolVersion` checked for.
pub(super) fn initialize_result(result: &RawValue) -> Result<Value, UpstreamError> {
    let result: Value =
        serde_json::from_str(result.get()).map_err(|e| UpstreamError::Protocol(e.to_string()))?;
    if result
        .get("protocolVersion")
        .and_then(Value::as_str)
        .is_none()
    {
        return Err(UpstreamError::Protocol(
            "InitializeResult has no protocolVersion".into(),
        ));
    }
    Ok(result)
}

#[derive(Clone, Default)]
struct State {
    ready: bool,
    session_id: Option<HeaderValue>,
    version: Option<HeaderValue>,
    /// Bumped at every handshake, so concurrent callers re-initialise only once.
    generation: u64,
    /// Shared: every request takes a copy of the state.
    capabilities: Arc<Value>,
}

pub(crate) struct HttpSession {
    client: HttpClient,
    uri: Uri,
    credential: CredentialProvider,
    /// The client capabilities declared at `initialize` (`{}` unless requests are relayed).
    capabilities: Value,
    state: Mutex<State>,
    next_id: AtomicI64,
    /// The largest message read from the upstream (`max_result_bytes`).
    max_message_bytes: usize,
}

impl HttpSession {
    pub(crate) fn new(client: HttpClient, uri: Uri, credential: CredentialProvider) -> Self {
        HttpSession {
            client,
            uri,
            credential,
            capabilities: json!({}),
            state: Mutex::new(State::default()),
            next_id: AtomicI64::new(1),
            max_message_bytes: super::stream::DEFAULT_MAX_MESSAGE_BYTES,
        }
    }

    /// Fails any message from the upstream larger than `bytes` (`max_result_bytes`)
    /// with [`UpstreamError::TooLarge`], before it is held whole.
    pub(crate) fn limiting(mut self, bytes: usize) -> Self {
        self.max_message_bytes = bytes;
        self
    }

    /// Declares these client capabilities at `initialize` (the gateway's relayed
    /// server-to-client requests, `gateway/relay.rs`).
    pub(crate) fn declaring(mut self, capabilities: Value) -> Self {
        self.capabilities = capabilities;
        self
    }

    /// A fresh id for the next request on this session.
    pub(crate) fn next_request_id(&self) -> i64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// The upstream's capabilities from its InitializeResult (initialising if needed).
    pub(crate) async fn capabilities(&self) -> Result<Value, UpstreamError> {
        let cred = self.credential.get().await?;
        Ok(Value::clone(&self.ready(&cred).await?.capabilities))
    }

    /// Sends request `id` and waits for its response. Every other message the upstream
    /// sends meanwhile (progress, logging, list_changed, server-to-client requests) is
    /// handed to `on_message`, which gives back what it did not take: a request given
    /// back is answered at once ([`answer_unrelayed`]: `{}` for `ping`, -32601 for
    /// anything else), so the upstream never waits for it.
    pub(crate) async fn request(
        &self,
        id: i64,
        method: &str,
        params: &(impl Serialize + ?Sized),
        mut on_message: impl FnMut(Message) -> Option<Message>,
    ) -> Result<Outcome, UpstreamError> {
        let body = Bytes::from(jsonrpc::request(&json!(id), method, params));
        let cred = self.credential.get().await?;
        let mut retried = false;
        loop {
            let state = self.ready(&cred).await?;
            let resp = self.post(&state, body.clone(), &cred).await?;
            let status = resp.status();
            crate::telemetry::spans::upstream_status(status.as_u16());
            if !status.is_success() {
                // Retried once at most, and only when the upstream says our session
                // is gone: any other refusal is this request's answer.
                if !retried && session_lost(&state, resp).await {
                    retried = true;
                    self.abandon(state.generation, status, &cred).await;
                    continue;
                }
                return Err(UpstreamError::Status(status.as_u16()));
            }
            if status == StatusCode::ACCEPTED {
                return Err(UpstreamError::Protocol(
                    "request answered with 202 and no response".into(),
                ));
            }
            let mut stream = message_stream(resp, self.max_message_bytes);
            while let Some(msg) = stream.next().await? {
                match msg {
                    Message::Response {
                        id: rid,
                        result,
                        error,
                    } if rid == json!(id) => return Outcome::of(result, error),
                    other => {
                        if let Some(Message::Request {
                            id: rid, method, ..
                        }) = on_message(other)
                        {
                            self.refuse(&state, rid, &method, &cred);
                        }
                    }
                }
            }
            return Err(UpstreamError::Protocol(
                "the stream ended before the response".into(),
            ));
        }
    }

    /// Sends a notification (e.g. `notifications/cancelled`).
    pub(crate) async fn notify(&self, method: &str, params: &Value) -> Result<(), UpstreamError> {
        let body = jsonrpc::notification(method, Some(&to_raw(params)));
        self.post_message(body).await
    }

    /// Sends the answer to server-to-client request `id` (relayed from the agent).
    pub(crate) async fn respond(
        &self,
        id: &Value,
        answer: &jsonrpc::Answer,
    ) -> Result<(), UpstreamError> {
        self.post_message(answer.response(id)).await
    }

    /// POSTs a message that gets no response (a notification or an answer): any 2xx
    /// is success.
    async fn post_message(&self, body: String) -> Result<(), UpstreamError> {
        let cred = self.credential.get().await?;
        let state = self.ready(&cred).await?;
        let resp = self.post(&state, Bytes::from(body), &cred).await?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(UpstreamError::Status(resp.status().as_u16()))
        }
    }

    /// Opens the server-to-client stream (GET); `None` when the upstream offers none (405).
    pub(crate) async fn listen(&self) -> Result<Option<MessageStream>, UpstreamError> {
        let cred = self.credential.get().await?;
        let mut retried = false;
        loop {
            let state = self.ready(&cred).await?;
            let req = self
                .builder(Method::GET, &state, &cred)
                .header(ACCEPT, "text/event-stream");
            let resp = self
                .send(req.body(Full::new(Bytes::new())).expect("valid request"))
                .await?;
            let status = resp.status();
            if status.is_success() {
                return Ok(Some(message_stream(resp, self.max_message_bytes)));
            }
            if status == StatusCode::METHOD_NOT_ALLOWED {
                return Ok(None);
            }
            if !retried && session_lost(&state, resp).await {
                // The upstream restarted or dropped us: a new session, then listen again.
                retried = true;
                self.abandon(state.generation, status, &cred).await;
                continue;
            }
            return Err(UpstreamError::Status(status.as_u16()));
        }
    }

    /// Ends the session upstream (DELETE); errors are ignored, the session is gone for us.
    pub(crate) async fn close(&self) {
        let state = self.state.lock().await.clone();
        if state.session_id.is_none() {
            return;
        }
        // Without its credential the upstream would refuse the DELETE anyway.
        let Ok(cred) = self.credential.get().await else {
            return;
        };
        let req = self
            .builder(Method::DELETE, &state, &cred)
            .body(Full::new(Bytes::new()));
        if let Ok(req) = req {
            let _ = self.send(req).await;
        }
    }

    async fn ready(&self, cred: &Option<Credential>) -> Result<State, UpstreamError> {
        let mut state = self.state.lock().await;
        if !state.ready {
            let generation = state.generation + 1;
            *state = self.handshake(cred).await?;
            state.generation = generation;
        }
        Ok(state.clone())
    }

    /// Gives up the session of `generation` (unless a concurrent caller already
    /// did): the next request opens a new one. Unless the upstream said the session
    /// does not exist (404), it is also ended upstream (DELETE, in the background and
    /// bounded), so a session the gateway abandons is never left open there.
    async fn abandon(&self, generation: u64, status: StatusCode, cred: &Option<Credential>) {
        let mut state = self.state.lock().await;
        if state.generation != generation {
            return;
        }
        let old = state.clone();
        state.ready = false;
        state.session_id = None;
        drop(state);
        if status == StatusCode::NOT_FOUND || old.session_id.is_none() {
            return;
        }
        let Ok(req) = self
            .builder(Method::DELETE, &old, cred)
            .body(Full::new(Bytes::new()))
        else {
            return;
        };
        let client = self.client.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(ABANDON_DELETE_TIMEOUT, client.request(req)).await;
        });
    }

    async fn handshake(&self, cred: &Option<Credential>) -> Result<State, UpstreamError> {
        let body = jsonrpc::request(
            &json!(0),
            "initialize",
            &initialize_params(&self.capabilities),
        );
        let resp = self
            .post(&State::default(), Bytes::from(body), cred)
            .await?;
        if !resp.status().is_success() {
            return Err(UpstreamError::Status(resp.status().as_u16()));
        }
        let session_id = resp.headers().get(HEADER_SESSION).cloned();
        let mut stream = message_stream(resp, self.max_message_bytes);
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
        let result = initialize_result(&result)?;
        let version = result
            .get("protocolVersion")
            .and_then(Value::as_str)
            .and_then(|v| HeaderValue::from_str(v).ok())
            .ok_or_else(|| {
                UpstreamError::Protocol("the protocolVersion is not a header value".into())
            })?;
        let state = State {
            ready: true,
            session_id,
            version: Some(version),
            generation: 0,
            capabilities: Arc::new(result.get("capabilities").cloned().unwrap_or(Value::Null)),
        };
        let note = jsonrpc::notification("notifications/initialized", None);
        let resp = self.post(&state, Bytes::from(note), cred).await?;
        if !resp.status().is_success() {
            return Err(UpstreamError::Status(resp.status().as_u16()));
        }
        Ok(state)
    }

    /// Answers a server-to-client request the gateway does not relay
    /// ([`answer_unrelayed`]), so the upstream does not wait for it forever.
    fn refuse(&self, state: &State, id: Value, method: &str, cred: &Option<Credential>) {
        let body = Bytes::from(answer_unrelayed(method).response(&id));
        let req = self
            .builder(Method::POST, state, cred)
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
        cred: &Option<Credential>,
    ) -> Result<hyper::Response<Incoming>, UpstreamError> {
        let req = self
            .builder(Method::POST, state, cred)
            .header(CONTENT_TYPE, "application/json")
            .header(ACCEPT, "application/json, text/event-stream")
            .body(Full::new(body))
            .expect("valid request");
        self.send(req).await
    }

    fn builder(
        &self,
        method: Method,
        state: &State,
        cred: &Option<Credential>,
    ) -> http::request::Builder {
        let mut b = Request::builder().method(method).uri(self.uri.clone());
        if let Some(cred) = cred {
            b = b.header(cred.header.clone(), cred.value.clone());
        }
        if let Some(sid) = &state.session_id {
            b = b.header(HEADER_SESSION, sid.clone());
        }
        if let Some(v) = &state.version {
            b = b.header(HEADER_VERSION, v.clone());
        }
        crate::telemetry::traces::inject_headers(b.headers_mut()); // W3C traceparent
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

/// The gateway's own answer to a server-to-client request it does not relay: `{}`
/// for `ping`, -32601 for anything else.
pub(crate) fn answer_unrelayed(method: &str) -> jsonrpc::Answer {
    let raw = |v: Value| RawValue::from_string(v.to_string()).expect("valid JSON");
    if method == "ping" {
        return jsonrpc::Answer::Result(raw(json!({})));
    }
    let err = jsonrpc::RpcError::new(
        jsonrpc::METHOD_NOT_FOUND,
        format!("{method} is not supported through the Portcullis gateway"),
    );
    jsonrpc::Answer::Error(raw(err.to_value()))
}

/// Whether a refusal of a request sent on our session says the session is gone: a
/// 404, or a 400 whose body names the session (server-everything answers an unknown
/// session id that way). Any other 400 is about the request itself (a Python `mcp`
/// upstream answers 400 to a number it cannot parse) and is that request's answer.
async fn session_lost(state: &State, resp: hyper::Response<Incoming>) -> bool {
    if state.session_id.is_none() {
        return false;
    }
    match resp.status() {
        StatusCode::NOT_FOUND => true,
        StatusCode::BAD_REQUEST => names_the_session(resp).await,
        _ => false,
    }
}

/// Whether an error body (its first [`ERROR_BODY_LIMIT`] bytes, read for at most
/// [`ERROR_BODY_TIMEOUT`]) mentions the session.
async fn names_the_session(resp: hyper::Response<Incoming>) -> bool {
    use http_body_util::{BodyExt, Limited};
    let body = Limited::new(resp.into_body(), ERROR_BODY_LIMIT).collect();
    match tokio::time::timeout(ERROR_BODY_TIMEOUT, body).await {
        Ok(Ok(collected)) => {
            let text = String::from_utf8_lossy(&collected.to_bytes()).to_ascii_lowercase();
            text.contains("session")
        }
        _ => false,
    }
}

fn message_stream(resp: hyper::Response<Incoming>, limit: usize) -> MessageStream {
    let is_sse = resp
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.trim_start().starts_with("text/event-stream"));
    MessageStream::new(resp.into_body(), is_sse, limit)
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
