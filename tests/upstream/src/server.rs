//! HTTP layer of the Streamable HTTP transport: routing of `/mcp`, bearer
//! and session checks, and turning JSON-RPC replies into JSON or SSE
//! responses.
//!
//! Status codes: 401 without the required bearer token, 400 without a
//! session id (when sessions are on), 404 for an unknown session or another
//! path, 405 for other methods, 202 for notifications and responses, and 400
//! with a JSON-RPC error body for unparsable or invalid messages.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::body::Body;
use crate::rpc::{self, Message, Reply};
use crate::sse;
use crate::state::{ResponseMode, State};

const SESSION: &str = "mcp-session-id";
const JSON: HeaderValue = HeaderValue::from_static("application/json");
const EVENT_STREAM: HeaderValue = HeaderValue::from_static("text/event-stream");

/// The hyper service.
pub async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    Ok(route(state, req).await)
}

async fn route(state: Arc<State>, req: Request<Incoming>) -> Response<Body> {
    if req.uri().path() != "/mcp" {
        return plain(StatusCode::NOT_FOUND, "not found\n");
    }
    if !authorized(&state, req.headers()) {
        let mut res = plain(StatusCode::UNAUTHORIZED, "unauthorized\n");
        res.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return res;
    }
    match *req.method() {
        Method::POST => post(state, req).await,
        Method::GET => get(&state, req.headers()),
        Method::DELETE if state.opts.hang_delete => std::future::pending().await,
        Method::DELETE => delete(&state, req.headers()),
        _ => method_not_allowed(),
    }
}

fn authorized(state: &State, headers: &HeaderMap) -> bool {
    let Some(token) = &state.opts.bearer else {
        return true;
    };
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return false;
    };
    let value = value.as_bytes();
    value.len() == 7 + token.len()
        && value[..7].eq_ignore_ascii_case(b"bearer ")
        && &value[7..] == token.as_bytes()
}

/// The error response if sessions are on and the session header is missing
/// (400) or names no live session (404).
fn session_error(state: &State, headers: &HeaderMap) -> Option<Response<Body>> {
    if !state.opts.sessions {
        return None;
    }
    match headers.get(SESSION).map(|v| v.to_str()) {
        None => Some(plain(StatusCode::BAD_REQUEST, "missing mcp-session-id\n")),
        Some(Ok(id)) if state.has_session(id) => None,
        Some(_) => Some(plain(StatusCode::NOT_FOUND, "unknown session\n")),
    }
}

async fn post(state: Arc<State>, req: Request<Incoming>) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let Ok(body) = body.collect().await.map(|b| b.to_bytes()) else {
        return plain(StatusCode::BAD_REQUEST, "unreadable body\n");
    };
    let request = match rpc::parse(&body) {
        Ok(Message::Request(request)) => request,
        Ok(Message::Notification { method, params }) => {
            if let Some(res) = session_error(&state, &parts.headers) {
                return res;
            }
            rpc::notify(&state, &method, params.as_deref());
            return status(StatusCode::ACCEPTED);
        }
        Ok(Message::Response) => {
            if let Some(res) = session_error(&state, &parts.headers) {
                return res;
            }
            if !state.opts.ask_on_stream.is_empty() {
                println!("client answered: {}", String::from_utf8_lossy(&body));
            }
            return status(StatusCode::ACCEPTED);
        }
        Err(error) => return json(StatusCode::BAD_REQUEST, error),
    };

    let mut session = None;
    if request.method == "initialize" {
        if state.opts.sessions {
            session = Some(state.new_session());
        }
    } else if let Some(res) = session_error(&state, &parts.headers) {
        return res;
    }

    let call = if request.method == "tools/call" {
        match rpc::call_params(&request) {
            Ok(call) => Some(call),
            Err(reply) => return respond(reply, &request.id, None),
        }
    } else {
        None
    };
    let with_progress = call
        .as_ref()
        .is_some_and(|c| c.name == "progress" && c.progress_token().is_some());
    let http_error = call.as_ref().is_some_and(|c| c.name == "http_error");
    let headers = parts.headers;

    if with_progress || (state.opts.response == ResponseMode::Sse && !http_error) {
        // Headers go out at once; the messages follow as they are produced.
        let (tx, body) = sse::channel();
        tokio::spawn(async move {
            let reply = rpc::answer(&state, &request, call, &headers, Some(&tx)).await;
            if let Some(message) = reply.into_message(&request.id) {
                let _ = tx.send(sse::event(&message)).await;
            }
        });
        return with_session(stream(body), session);
    }

    let reply = rpc::answer(&state, &request, call, &headers, None).await;
    respond(reply, &request.id, session)
}

/// A complete (non-streamed) answer.
fn respond(
    reply: Reply,
    id: &serde_json::value::RawValue,
    session: Option<String>,
) -> Response<Body> {
    let res = match reply {
        Reply::Http { status, body } => plain(status, body),
        // A cancelled request gets no JSON-RPC response: an empty event stream.
        Reply::Silent => stream(Body::empty()),
        reply => {
            let message = reply.into_message(id).unwrap_or_default();
            json(StatusCode::OK, message)
        }
    };
    with_session(res, session)
}

fn get(state: &Arc<State>, headers: &HeaderMap) -> Response<Body> {
    if !state.opts.get_stream {
        return method_not_allowed();
    }
    if let Some(res) = session_error(state, headers) {
        return res;
    }
    let accepts = headers
        .get_all(header::ACCEPT)
        .iter()
        .any(|v| v.to_str().is_ok_and(|v| v.contains("text/event-stream")));
    if !accepts {
        return plain(
            StatusCode::NOT_ACCEPTABLE,
            "GET needs Accept: text/event-stream\n",
        );
    }
    stream(sse::get_stream(state))
}

fn delete(state: &State, headers: &HeaderMap) -> Response<Body> {
    if !state.opts.sessions {
        return method_not_allowed();
    }
    match headers.get(SESSION).map(|v| v.to_str()) {
        None => plain(StatusCode::BAD_REQUEST, "missing mcp-session-id\n"),
        Some(Ok(id)) if state.end_session(id) => status(StatusCode::OK),
        Some(_) => plain(StatusCode::NOT_FOUND, "unknown session\n"),
    }
}

fn with_session(mut res: Response<Body>, session: Option<String>) -> Response<Body> {
    if let Some(id) = session.and_then(|id| HeaderValue::try_from(id).ok()) {
        res.headers_mut().insert(SESSION, id);
    }
    res
}

fn status(status: StatusCode) -> Response<Body> {
    let mut res = Response::new(Body::empty());
    *res.status_mut() = status;
    res
}

fn plain(code: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut res = Response::new(Body::full(body));
    *res.status_mut() = code;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    res
}

fn json(code: StatusCode, body: Vec<u8>) -> Response<Body> {
    let mut res = Response::new(Body::full(body));
    *res.status_mut() = code;
    res.headers_mut().insert(header::CONTENT_TYPE, JSON);
    res
}

fn stream(body: Body) -> Response<Body> {
    let mut res = Response::new(body);
    let headers = res.headers_mut();
    headers.insert(header::CONTENT_TYPE, EVENT_STREAM);
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    res
}

fn method_not_allowed() -> Response<Body> {
    let mut res = plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    res.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("GET, POST, DELETE"));
    res
}
