//! The agent-facing Streamable HTTP transport (MCP revisions 2025-03-26, 2025-06-18,
//! 2025-11-25) on `/mcp` and `/mcp/<connector-id>`.
//!
//! Order of checks for every request: path, `Host`/`Origin` (403, DNS rebinding),
//! bearer key (401), HTTP method; then for POST: content type (415), accepted
//! responses (406), body size (413), JSON-RPC shape (-32700/-32600 with 400),
//! `MCP-Protocol-Version` (400), session (400 missing, 404 unknown or not yours).
//! A JSON-RPC batch goes to [`super::batch`] after the same checks.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{
    ACCEPT, ALLOW, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, HOST, ORIGIN, WWW_AUTHENTICATE,
};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde_json::json;
use tracing::Instrument;

use super::body::{Body, empty, full, sse_stream};
use super::{ConnectionSlot, batch, listen};
use crate::auth::{Authenticator, Identity};
use crate::gateway::limits::{AtLimit, Held, Permit};
use crate::gateway::sessions::{AgentSession, Endpoint, TooManySessions};
use crate::gateway::{Gateway, Reply};
use crate::mcp::jsonrpc::{self, Incoming as Message, RpcError};
use crate::mcp::{self, HEADER_SESSION, HEADER_VERSION};
use crate::telemetry;

/// Serves one HTTP request.
pub(super) async fn handle(gw: Arc<Gateway>, mut req: Request<Incoming>) -> Response<Body> {
    host_from_authority(&mut req);
    let path = req.uri().path();
    if path == "/.well-known/oauth-protected-resource"
        || path.starts_with("/.well-known/oauth-protected-resource/")
    {
        return protected_resource_metadata(&gw, req.headers());
    }
    let endpoint = match path.trim_end_matches('/') {
        "/mcp" => Endpoint::All,
        p => match p.strip_prefix("/mcp/") {
            Some(id) if gw.connector(id).is_some() => Endpoint::One(id.to_string()),
            _ => return http_error(StatusCode::NOT_FOUND, "Not found"),
        },
    };
    if let Err(msg) = check_host_origin(
        &gw.config.server.allowed_hosts,
        &gw.config.server.allowed_origins,
        req.headers(),
    ) {
        return http_error(StatusCode::FORBIDDEN, msg);
    }
    let Some(identity) = Authenticator::bearer(req.headers().get(http::header::AUTHORIZATION))
        .and_then(|key| gw.authenticate(key))
    else {
        let mut resp = http_error(
            StatusCode::UNAUTHORIZED,
            "Unauthorized: a valid API key is required (Authorization: Bearer <key>)",
        );
        let challenge = format!(
            "Bearer realm=\"portcullis\", resource_metadata=\"{}\"",
            metadata_url(req.headers())
        );
        resp.headers_mut()
            .insert(WWW_AUTHENTICATE, challenge.parse().expect("valid header"));
        return resp;
    };
    if req.method() != Method::POST
        && let Err(resp) = check_version(req.headers())
    {
        return *resp;
    }
    if let Err(resp) = attribute_connection(&gw, &identity, &req).await {
        return resp;
    }
    match *req.method() {
        Method::POST => {
            let permit = match gw.limits.acquire(&identity.agent, Held::Request) {
                Ok(p) => p,
                Err(at) => return at_limit(&gw, &identity, "POST", at).await,
            };
            post(gw, identity, endpoint, req, permit).await
        }
        Method::GET => match session(&gw, req.headers(), &identity, &endpoint) {
            Ok(s) => match gw.limits.acquire(&identity.agent, Held::Stream) {
                Ok(permit) => listen::open(&gw, s, req.headers(), permit),
                Err(at) => at_limit(&gw, &identity, "GET", at).await,
            },
            Err(e) => e.response(),
        },
        Method::DELETE => match session(&gw, req.headers(), &identity, &endpoint) {
            Ok(s) => {
                gw.end_session(&s).await;
                with_status(StatusCode::OK, empty())
            }
            Err(e) => e.response(),
        },
        _ => {
            let mut resp = http_error(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed");
            resp.headers_mut()
                .insert(ALLOW, "GET, POST, DELETE".parse().expect("valid header"));
            resp
        }
    }
}

async fn post(
    gw: Arc<Gateway>,
    identity: Arc<Identity>,
    endpoint: Endpoint,
    req: Request<Incoming>,
    permit: Permit,
) -> Response<Body> {
    let headers = req.headers().clone();
    let ct = header_str(&headers, CONTENT_TYPE.as_str());
    if !ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .eq_ignore_ascii_case("application/json")
    {
        return http_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Unsupported Media Type: Content-Type must be application/json",
        );
    }
    let accept = header_str(&headers, ACCEPT.as_str()).to_ascii_lowercase();
    let any = accept.is_empty() || accept.contains("*/*");
    let accepts_sse = any || accept.contains("text/event-stream");
    let accepts_json = any || accept.contains("application/json");
    if !accepts_json && !accepts_sse {
        return http_error(
            StatusCode::NOT_ACCEPTABLE,
            "Not Acceptable: accept application/json and text/event-stream",
        );
    }
    let limit = gw.config.server.max_body_bytes;
    let declared = header_str(&headers, CONTENT_LENGTH.as_str())
        .parse::<usize>()
        .ok();
    if declared.is_some_and(|n| n > limit) {
        return too_large(limit);
    }
    let read = Limited::new(req.into_body(), limit).collect();
    let Ok(read) = tokio::time::timeout(gw.config.server.body_read_timeout, read).await else {
        // A body that stops coming holds a connection for nothing: close it.
        let mut resp = http_error(
            StatusCode::REQUEST_TIMEOUT,
            "Request Timeout: the body did not arrive in time",
        );
        resp.headers_mut()
            .insert(CONNECTION, "close".parse().expect("valid header"));
        return resp;
    };
    let body = match read {
        Ok(b) => b.to_bytes(),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            return too_large(limit);
        }
        Err(_) => return http_error(StatusCode::BAD_REQUEST, "Could not read the request body"),
    };
    let body = match jsonrpc::parse_body(&body) {
        Ok(b) => b,
        Err(err) => return rpc_error(StatusCode::BAD_REQUEST, None, &err),
    };
    if let Err(resp) = check_version(&headers) {
        return *resp;
    }
    let message = match body {
        jsonrpc::Body::One(m) => m,
        jsonrpc::Body::Batch(members) => {
            return batch::handle(gw, identity, endpoint, headers, members, accepts_sse).await;
        }
    };

    // One trace per JSON-RPC request: its server span (disabled when tracing is off).
    let span = match &message {
        Message::Request { id, method, params } => telemetry::spans::request(
            method,
            id,
            params,
            &identity,
            &headers,
            gw.config.server.listen,
        ),
        _ => tracing::Span::none(),
    };
    let caller = Caller {
        identity,
        endpoint,
        headers,
        accepts_sse,
        permit,
    };
    dispatch(gw, caller, message, &span)
        .instrument(span.clone())
        .await
}

/// Who sent a POST's message and how it may be answered.
struct Caller {
    identity: Arc<Identity>,
    endpoint: Endpoint,
    headers: HeaderMap,
    accepts_sse: bool,
    /// One of the agent's requests in flight, held until the request is answered (a
    /// call's, until the call ends).
    permit: Permit,
}

/// Hands a valid message to the gateway: initialize, or a message of an open session.
async fn dispatch(
    gw: Arc<Gateway>,
    caller: Caller,
    message: Message,
    span: &tracing::Span,
) -> Response<Body> {
    let Caller {
        identity,
        endpoint,
        headers,
        accepts_sse,
        permit,
    } = caller;
    if let Message::Request { id, method, params } = &message
        && method == "initialize"
    {
        return match gw.initialize(identity, endpoint, id, params).await {
            Ok((session, text)) => {
                telemetry::spans::session(span, &session.id, &session.protocol_version);
                let mut resp = json_response(text);
                resp.headers_mut()
                    .insert(HEADER_SESSION, session.id.parse().expect("hex id"));
                resp
            }
            Err(TooManySessions::Gateway) => {
                telemetry::spans::refused(span, 503, "too_many_sessions");
                http_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Too many sessions; try again later",
                )
            }
            Err(TooManySessions::Agent { limit }) => {
                telemetry::spans::refused(span, 429, "too_many_agent_sessions");
                http_error(
                    StatusCode::TOO_MANY_REQUESTS,
                    &format!(
                        "Too many sessions: this agent has {limit} open; end one (DELETE) \
                         or let one expire"
                    ),
                )
            }
        };
    }

    let session = match session(&gw, &headers, &identity, &endpoint) {
        Ok(s) => s,
        Err(e) => {
            let (status, kind) = match e {
                NoSession::Missing => (400, "session_missing"),
                NoSession::Unknown => (404, "session_not_found"),
            };
            telemetry::spans::refused(span, status, kind);
            return e.response();
        }
    };
    telemetry::spans::session(span, &session.id, &session.protocol_version);
    match answer(&gw, &session, message, accepts_sse, Some(permit)).await {
        Some(Reply::Json(text)) => json_response(text),
        Some(Reply::Stream(rx)) => sse_response(sse_stream(rx, None, session.next_stream())),
        None => with_status(StatusCode::ACCEPTED, empty()),
    }
}

/// Hands one message of an open session to the gateway (alone or as a batch member);
/// `None` for a notification or a response, which get no answer.
pub(super) async fn answer(
    gw: &Arc<Gateway>,
    session: &Arc<AgentSession>,
    message: Message,
    accepts_sse: bool,
    permit: Option<Permit>,
) -> Option<Reply> {
    match message {
        Message::Request { id, method, params } => Some(
            gw.request(session, id, &method, params, accepts_sse, permit)
                .await,
        ),
        Message::Notification { method, params } => {
            gw.notification(session, &method, &params).await;
            None
        }
        Message::Response { id, answer } => {
            gw.response(session, &id, answer);
            None
        }
    }
}

/// Why a request's session could not be used.
pub(super) enum NoSession {
    /// No `MCP-Session-Id` header (400).
    Missing,
    /// Unknown, ended, or someone else's (404).
    Unknown,
}

impl NoSession {
    pub(super) fn response(self) -> Response<Body> {
        match self {
            NoSession::Missing => http_error(
                StatusCode::BAD_REQUEST,
                "Bad Request: MCP-Session-Id header is required (send initialize first)",
            ),
            NoSession::Unknown => http_error(
                StatusCode::NOT_FOUND,
                "Session not found; initialize a new session",
            ),
        }
    }
}

/// Counts the request's connection against its agent, once: the first agent whose
/// request a connection carries holds it until it closes (`ConnectionSlot`). Beyond
/// the agent's limit: 429, and the connection is closed.
async fn attribute_connection(
    gw: &Gateway,
    identity: &Identity,
    req: &Request<Incoming>,
) -> Result<(), Response<Body>> {
    let Some(slot) = req.extensions().get::<ConnectionSlot>() else {
        return Ok(());
    };
    let taken = {
        let mut held = slot.permit.lock().unwrap_or_else(|e| e.into_inner());
        if held.is_some() {
            return Ok(());
        }
        gw.limits
            .acquire(&identity.agent, Held::Connection)
            .map(|permit| *held = Some(permit))
    };
    if taken.is_ok() {
        slot.tracked.attribute(&identity.agent);
    }
    match taken {
        Ok(()) => Ok(()),
        Err(at) => Err(at_limit(gw, identity, req.method().as_str(), at).await),
    }
}

/// An agent at one of its limits: 429 (the connection closed when it is the
/// connection limit) and an audit row.
async fn at_limit(gw: &Gateway, identity: &Identity, method: &str, at: AtLimit) -> Response<Body> {
    let what = match at.held {
        Held::Connection => "connections",
        Held::Request => "requests in flight",
        Held::Stream => "GET streams",
    };
    let reason = format!(
        "agent {} holds {} {what} ({})",
        identity.agent,
        at.limit,
        at.held.key()
    );
    gw.audit_refused(identity, &format!("HTTP {method}"), 429, reason)
        .await;
    let mut resp = http_error(
        StatusCode::TOO_MANY_REQUESTS,
        &format!(
            "Too Many Requests: this agent already holds {} {what}",
            at.limit
        ),
    );
    if at.held == Held::Connection {
        resp.headers_mut()
            .insert(CONNECTION, "close".parse().expect("valid header"));
    }
    resp
}

/// The caller's session from `MCP-Session-Id`.
pub(super) fn session(
    gw: &Gateway,
    headers: &HeaderMap,
    identity: &Arc<Identity>,
    endpoint: &Endpoint,
) -> Result<Arc<AgentSession>, NoSession> {
    let id = match header(headers, HEADER_SESSION) {
        Header::Absent | Header::Text("") => return Err(NoSession::Missing),
        // Not a session id the gateway could have given: unknown, not missing.
        Header::Invalid => return Err(NoSession::Unknown),
        Header::Text(id) => id,
    };
    gw.sessions
        .get(id, identity, endpoint)
        .ok_or(NoSession::Unknown)
}

/// An `MCP-Protocol-Version` header, when present, must name a supported revision
/// (a missing one means 2025-03-26).
fn check_version(headers: &HeaderMap) -> Result<(), Box<Response<Body>>> {
    let shown = match header(headers, HEADER_VERSION) {
        Header::Absent | Header::Text("") => return Ok(()),
        Header::Text(v) if mcp::is_supported(v) => return Ok(()),
        Header::Text(v) => format!("{v:?}"),
        Header::Invalid => "(not visible ASCII)".to_string(),
    };
    let err = RpcError::new(
        jsonrpc::INVALID_REQUEST,
        format!(
            "Unsupported MCP-Protocol-Version {shown}; supported: {}",
            mcp::SUPPORTED_VERSIONS.join(", ")
        ),
    );
    Err(Box::new(rpc_error(StatusCode::BAD_REQUEST, None, &err)))
}

/// DNS-rebinding protection: the `Host` must be an allowed name, and an `Origin`, when
/// present, must be an allowed origin or name one of the allowed hosts.
/// A `Host` or `Origin` that is present but not visible ASCII is refused, never taken
/// for an absent one.
pub(super) fn check_host_origin(
    allowed_hosts: &[String],
    allowed_origins: &[String],
    headers: &HeaderMap,
) -> Result<(), &'static str> {
    if !allowed_hosts.is_empty() {
        let host = match header(headers, HOST.as_str()) {
            Header::Absent => String::new(),
            Header::Invalid => return Err("Forbidden: Host not allowed"),
            Header::Text(h) => host_name(h),
        };
        if !allowed_hosts.contains(&host) {
            return Err("Forbidden: Host not allowed");
        }
    }
    let origin = match header(headers, ORIGIN.as_str()) {
        Header::Absent => return Ok(()),
        Header::Invalid => return Err("Forbidden: Origin not allowed"),
        Header::Text(o) => o.trim_end_matches('/').to_ascii_lowercase(),
    };
    if origin.is_empty() || allowed_origins.contains(&origin) {
        return Ok(());
    }
    let origin_host = origin
        .split_once("://")
        .map(|(_, rest)| host_name(rest))
        .unwrap_or_default();
    if !allowed_hosts.is_empty() && allowed_hosts.contains(&origin_host) {
        return Ok(());
    }
    Err("Forbidden: Origin not allowed")
}

/// HTTP/2 carries the host in the `:authority` pseudo-header, which hyper puts in the
/// URI, and clients usually send no `Host`: give such a request the `Host` its
/// authority names, so the checks and links below read one header for both versions.
/// A request that has a `Host` keeps it.
fn host_from_authority<B>(req: &mut Request<B>) {
    if req.headers().contains_key(HOST) {
        return;
    }
    let Some(value) = req
        .uri()
        .authority()
        .and_then(|a| http::HeaderValue::from_str(a.as_str()).ok())
    else {
        return;
    };
    req.headers_mut().insert(HOST, value);
}

/// `example.com:8080` -> `example.com`; `[::1]:80` -> `[::1]`.
fn host_name(authority: &str) -> String {
    let a = authority.trim().to_ascii_lowercase();
    if a.starts_with('[') {
        return a.split_inclusive(']').next().unwrap_or("").to_string();
    }
    a.split(':').next().unwrap_or("").to_string()
}

/// RFC 9728 metadata: agents authenticate with bearer API keys in the header.
fn protected_resource_metadata(gw: &Gateway, headers: &HeaderMap) -> Response<Body> {
    let host = header_str(headers, HOST.as_str());
    let base = format!(
        "http://{}",
        if host.is_empty() {
            gw.config.server.listen.to_string()
        } else {
            host.to_string()
        }
    );
    let body = json!({
        "resource": format!("{base}/mcp"),
        "bearer_methods_supported": ["header"],
        "resource_name": "Portcullis MCP gateway",
    });
    json_response(body.to_string())
}

fn metadata_url(headers: &HeaderMap) -> String {
    format!(
        "http://{}/.well-known/oauth-protected-resource",
        header_str(headers, HOST.as_str())
    )
}

/// A request header as the checks read it.
enum Header<'a> {
    Absent,
    /// Present, but not visible ASCII (an invalid value is invalid, not missing).
    Invalid,
    Text(&'a str),
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Header<'a> {
    match headers.get(name).map(|v| v.to_str()) {
        None => Header::Absent,
        Some(Ok(text)) => Header::Text(text),
        Some(Err(_)) => Header::Invalid,
    }
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

fn too_large(limit: usize) -> Response<Body> {
    http_error(
        StatusCode::PAYLOAD_TOO_LARGE,
        &format!("Payload Too Large: the limit is {limit} bytes"),
    )
}

pub(super) fn json_response(text: String) -> Response<Body> {
    let mut resp = with_status(StatusCode::OK, full(Bytes::from(text)));
    resp.headers_mut().insert(
        CONTENT_TYPE,
        "application/json".parse().expect("valid header"),
    );
    resp
}

pub(super) fn sse_response(body: Body) -> Response<Body> {
    let mut resp = with_status(StatusCode::OK, body);
    let h = resp.headers_mut();
    h.insert(
        CONTENT_TYPE,
        "text/event-stream".parse().expect("valid header"),
    );
    h.insert(
        http::header::CACHE_CONTROL,
        "no-cache".parse().expect("valid header"),
    );
    resp
}

pub(super) fn rpc_error(
    status: StatusCode,
    id: Option<&serde_json::Value>,
    err: &RpcError,
) -> Response<Body> {
    let mut resp = json_response(jsonrpc::error(id, err));
    *resp.status_mut() = status;
    resp
}

/// An HTTP-level refusal, with a JSON-RPC error body so clients can show the reason.
pub(super) fn http_error(status: StatusCode, message: &str) -> Response<Body> {
    rpc_error(
        status,
        None,
        &RpcError::new(jsonrpc::INVALID_REQUEST, message),
    )
}

pub(super) fn with_status(status: StatusCode, body: Body) -> Response<Body> {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Server;

    fn server(hosts: &[&str], origins: &[&str]) -> Server {
        Server {
            listen: "127.0.0.1:0".parse().unwrap(),
            tool_separator: ".".into(),
            max_body_bytes: 1 << 20,
            list_page_size: 10,
            session_idle: std::time::Duration::from_secs(1),
            max_sessions: 1,
            max_sessions_per_agent: 1,
            workers: 1,
            header_read_timeout: std::time::Duration::from_secs(30),
            body_read_timeout: std::time::Duration::from_secs(30),
            max_connections_per_agent: 1024,
            max_requests_per_agent: 256,
            max_streams_per_agent: 64,
            idle_spin: std::time::Duration::ZERO,
            allowed_hosts: hosts.iter().map(|s| s.to_string()).collect(),
            allowed_origins: origins.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn headers(host: &str, origin: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(HOST, host.parse().unwrap());
        if let Some(o) = origin {
            h.insert(ORIGIN, o.parse().unwrap());
        }
        h
    }

    #[test]
    fn an_http2_authority_stands_in_for_a_missing_host() {
        let mut req = Request::get("http://127.0.0.1:8080/mcp").body(()).unwrap();
        host_from_authority(&mut req);
        assert_eq!(req.headers()[HOST], "127.0.0.1:8080");
        let mut req = Request::get("http://evil.example/mcp")
            .header(HOST, "localhost:8080")
            .body(())
            .unwrap();
        host_from_authority(&mut req);
        assert_eq!(req.headers()[HOST], "localhost:8080");
        let mut req = Request::get("/mcp").body(()).unwrap();
        host_from_authority(&mut req);
        assert!(!req.headers().contains_key(HOST));
    }

    #[test]
    fn rebinding_is_refused() {
        let s = server(
            &["localhost", "127.0.0.1", "[::1]"],
            &["https://app.example.com"],
        );
        assert!(
            check_host_origin(
                &s.allowed_hosts,
                &s.allowed_origins,
                &headers("127.0.0.1:8080", None)
            )
            .is_ok()
        );
        assert!(
            check_host_origin(
                &s.allowed_hosts,
                &s.allowed_origins,
                &headers("[::1]:8080", Some("http://localhost:3000"))
            )
            .is_ok()
        );
        assert!(
            check_host_origin(
                &s.allowed_hosts,
                &s.allowed_origins,
                &headers("evil.example:8080", None)
            )
            .is_err()
        );
        assert!(
            check_host_origin(
                &s.allowed_hosts,
                &s.allowed_origins,
                &headers("127.0.0.1:8080", Some("http://evil.example"))
            )
            .is_err()
        );
        assert!(
            check_host_origin(
                &s.allowed_hosts,
                &s.allowed_origins,
                &headers("localhost", Some("https://app.example.com/"))
            )
            .is_ok()
        );
        let open = server(&[], &[]);
        assert!(
            check_host_origin(
                &open.allowed_hosts,
                &open.allowed_origins,
                &headers("gw.internal", None)
            )
            .is_ok()
        );
        assert!(
            check_host_origin(
                &open.allowed_hosts,
                &open.allowed_origins,
                &headers("gw.internal", Some("http://evil.example"))
            )
            .is_err()
        );
    }

    #[test]
    fn a_header_that_is_not_visible_ascii_is_invalid_not_absent() {
        let mut h = HeaderMap::new();
        assert!(matches!(header(&h, "x"), Header::Absent));
        h.insert(
            "x",
            http::HeaderValue::from_bytes(b"1999-01-01\xe9").unwrap(),
        );
        assert!(matches!(header(&h, "x"), Header::Invalid));
        h.insert("x", http::HeaderValue::from_static("2025-06-18"));
        assert!(matches!(header(&h, "x"), Header::Text("2025-06-18")));

        let mut h = HeaderMap::new();
        h.insert(
            HEADER_VERSION,
            http::HeaderValue::from_bytes(b"2025-06-18\xe9").unwrap(),
        );
        assert!(check_version(&h).is_err());
        let s = server(&["localhost"], &[]);
        let mut h = headers("localhost", None);
        h.insert(
            ORIGIN,
            http::HeaderValue::from_bytes(b"http://evil\xe9").unwrap(),
        );
        assert_eq!(
            check_host_origin(&s.allowed_hosts, &s.allowed_origins, &h),
            Err("Forbidden: Origin not allowed")
        );
        let mut h = HeaderMap::new();
        h.insert(
            HOST,
            http::HeaderValue::from_bytes(b"localhost\xe9").unwrap(),
        );
        assert_eq!(
            check_host_origin(&s.allowed_hosts, &s.allowed_origins, &h),
            Err("Forbidden: Host not allowed")
        );
    }
}
