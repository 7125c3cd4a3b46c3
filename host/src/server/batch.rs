//! JSON-RPC batches in one POST. MCP 2025-03-26 requires a server to accept them; later
//! revisions removed them, so a session that negotiated 2025-06-18 or later gets -32600
//! (HTTP 400) for a batch.
//!
//! Each member is handled as if it came alone (its own span, policy decisions, quota
//! and audit record), up to [`CONCURRENCY`] at a time, and a malformed member is an
//! error response of its own (`id: null`) while the others still run. `initialize`
//! must not be batched (2025-03-26 lifecycle) and gets -32600. Answers: 202 when the
//! batch held no request; else a JSON array of the responses in the batch's order, or,
//! when an upstream sent progress before its answer and the client accepts SSE, one
//! event stream with every response and notification as it comes.

use std::sync::Arc;

use futures_util::stream::{self, StreamExt};
use http::{HeaderMap, Response, StatusCode};
use tokio::sync::mpsc;
use tracing::Instrument;

use super::body::{Body, empty, sse_stream};
use super::transport::{self, json_response, rpc_error, session, sse_response, with_status};
use crate::auth::Identity;
use crate::gateway::sessions::{AgentSession, Endpoint};
use crate::gateway::{Gateway, Reply};
use crate::mcp;
use crate::mcp::jsonrpc::{self, Incoming as Message, RpcError};
use crate::telemetry;

/// The most members one batch may hold. A batch is read whole and answered whole, so
/// this bounds the memory one POST can make the gateway hold (alongside the body limit).
pub(super) const MAX_MEMBERS: usize = 100;
/// How many members of one batch run at a time.
pub(super) const CONCURRENCY: usize = 16;

/// Answers a batch POSTed by `identity` to `endpoint`.
pub(super) async fn handle(
    gw: Arc<Gateway>,
    identity: Arc<Identity>,
    endpoint: Endpoint,
    headers: HeaderMap,
    members: Vec<Result<Message, RpcError>>,
    accepts_sse: bool,
) -> Response<Body> {
    let session = match session(&gw, &headers, &identity, &endpoint) {
        Ok(s) => s,
        Err(e) => return e.response(),
    };
    if session.protocol_version != mcp::DEFAULT_VERSION {
        let err = RpcError::new(
            jsonrpc::INVALID_REQUEST,
            format!(
                "Invalid Request: JSON-RPC batches are not supported in MCP revision {} \
                 (only in {}; send one message per POST)",
                session.protocol_version,
                mcp::DEFAULT_VERSION
            ),
        );
        return rpc_error(StatusCode::BAD_REQUEST, None, &err);
    }
    if members.len() > MAX_MEMBERS {
        let err = RpcError::new(
            jsonrpc::INVALID_REQUEST,
            format!(
                "Invalid Request: a batch holds at most {MAX_MEMBERS} messages, this one {}",
                members.len()
            ),
        );
        return rpc_error(StatusCode::BAD_REQUEST, None, &err);
    }
    let replies: Vec<Reply> = stream::iter(members)
        .map(|member| answer(&gw, &identity, &session, &headers, member, accepts_sse))
        .buffered(CONCURRENCY)
        .filter_map(|reply| async move { reply })
        .collect()
        .await;
    if replies.is_empty() {
        return with_status(StatusCode::ACCEPTED, empty());
    }
    if replies.iter().any(|r| matches!(r, Reply::Stream(_))) {
        return sse_response(sse_stream(merge(replies), None, session.next_stream()));
    }
    let texts: Vec<String> = replies
        .into_iter()
        .filter_map(|r| match r {
            Reply::Json(text) => Some(text),
            Reply::Stream(_) => None,
        })
        .collect();
    json_response(format!("[{}]", texts.join(",")))
}

/// One member's answer; `None` for a notification or a response.
async fn answer(
    gw: &Arc<Gateway>,
    identity: &Identity,
    session: &Arc<AgentSession>,
    headers: &HeaderMap,
    member: Result<Message, RpcError>,
    accepts_sse: bool,
) -> Option<Reply> {
    let message = match member {
        Err(err) => return Some(Reply::Json(jsonrpc::error(None, &err))),
        Ok(Message::Request { id, method, .. }) if method == "initialize" => {
            let err = RpcError::new(
                jsonrpc::INVALID_REQUEST,
                "Invalid Request: initialize must not be part of a JSON-RPC batch",
            );
            return Some(Reply::Json(jsonrpc::error(Some(&id), &err)));
        }
        Ok(message) => message,
    };
    // Each request its own trace, as when sent alone.
    let span = match &message {
        Message::Request { id, method, params } => {
            let span = telemetry::spans::request(
                method,
                id,
                params,
                identity,
                headers,
                gw.config.server.listen,
            );
            telemetry::spans::session(&span, &session.id, &session.protocol_version);
            span
        }
        _ => tracing::Span::none(),
    };
    transport::answer(gw, session, message, accepts_sse, None)
        .instrument(span)
        .await
}

/// One event stream for the whole batch: the responses already made first, then each
/// streaming reply's messages as they arrive. It ends when every reply has ended.
fn merge(replies: Vec<Reply>) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel(32);
    tokio::spawn(async move {
        let mut streams = Vec::new();
        for reply in replies {
            match reply {
                Reply::Json(text) => {
                    if tx.send(text).await.is_err() {
                        return;
                    }
                }
                Reply::Stream(rx) => streams.push(
                    stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) })
                        .boxed(),
                ),
            }
        }
        let mut all = stream::select_all(streams);
        while let Some(message) = all.next().await {
            if tx.send(message).await.is_err() {
                return;
            }
        }
    });
    rx
}
