//! [`UpstreamSession`]: one MCP session with one upstream, whatever carries it.
//! Streamable HTTP is [`HttpSession`]; the HTTP+SSE and stdio transports are a
//! [`ChannelSession`] over a message pipe. Enum dispatch, so the HTTP path pays no
//! indirection.

use serde::Serialize;
use serde_json::Value;
use tokio::sync::mpsc;

use super::channel::ChannelSession;
use super::session::HttpSession;
use super::stream::{Message, MessageStream};
use super::{Outcome, UpstreamError};
use crate::mcp::jsonrpc;

pub(crate) enum UpstreamSession {
    Http(HttpSession),
    Channel(ChannelSession),
}

/// What the upstream sends outside any request (list_changed, server-to-client
/// requests), as [`UpstreamSession::listen`] hands it out.
pub(crate) enum ListenStream {
    Http(Box<MessageStream>),
    Channel(mpsc::Receiver<Message>),
}

impl ListenStream {
    /// A stream that has already ended.
    pub(crate) fn ended() -> ListenStream {
        ListenStream::Channel(mpsc::channel(1).1)
    }

    /// The next message; `None` when the stream (or the process, or the SSE
    /// connection) ended.
    pub(crate) async fn next(&mut self) -> Result<Option<Message>, UpstreamError> {
        match self {
            ListenStream::Http(s) => s.next().await,
            ListenStream::Channel(rx) => Ok(rx.recv().await),
        }
    }
}

impl UpstreamSession {
    /// A fresh id for the next request on this session.
    pub(crate) fn next_request_id(&self) -> i64 {
        match self {
            UpstreamSession::Http(s) => s.next_request_id(),
            UpstreamSession::Channel(s) => s.next_request_id(),
        }
    }

    /// The upstream's capabilities from its InitializeResult (initialising if needed).
    pub(crate) async fn capabilities(&self) -> Result<Value, UpstreamError> {
        match self {
            UpstreamSession::Http(s) => s.capabilities().await,
            UpstreamSession::Channel(s) => s.capabilities().await,
        }
    }

    /// Sends request `id` and waits for its response; every other message the
    /// upstream sends meanwhile goes to `on_message`, which gives back what it did
    /// not take (a request given back is answered with [`super::answer_unrelayed`]).
    pub(crate) async fn request(
        &self,
        id: i64,
        method: &str,
        params: &(impl Serialize + ?Sized),
        on_message: impl FnMut(Message) -> Option<Message>,
    ) -> Result<Outcome, UpstreamError> {
        match self {
            UpstreamSession::Http(s) => s.request(id, method, params, on_message).await,
            UpstreamSession::Channel(s) => s.request(id, method, params, on_message).await,
        }
    }

    /// Sends a notification (e.g. `notifications/cancelled`).
    pub(crate) async fn notify(&self, method: &str, params: &Value) -> Result<(), UpstreamError> {
        match self {
            UpstreamSession::Http(s) => s.notify(method, params).await,
            UpstreamSession::Channel(s) => s.notify(method, params).await,
        }
    }

    /// Sends the answer to server-to-client request `id`.
    pub(crate) async fn respond(
        &self,
        id: &Value,
        answer: &jsonrpc::Answer,
    ) -> Result<(), UpstreamError> {
        match self {
            UpstreamSession::Http(s) => s.respond(id, answer).await,
            UpstreamSession::Channel(s) => s.respond(id, answer).await,
        }
    }

    /// What the upstream sends outside any request; `None` when it offers nothing.
    pub(crate) async fn listen(&self) -> Result<Option<ListenStream>, UpstreamError> {
        match self {
            UpstreamSession::Http(s) => {
                Ok(s.listen().await?.map(|m| ListenStream::Http(Box::new(m))))
            }
            UpstreamSession::Channel(s) => Ok(Some(ListenStream::Channel(s.listen().await?))),
        }
    }

    /// Ends the session: a DELETE over HTTP; the process or SSE connection ends
    /// otherwise (a process shared by every session is ended only by
    /// [`UpstreamSession::terminate`]).
    pub(crate) async fn close(&self) {
        match self {
            UpstreamSession::Http(s) => s.close().await,
            UpstreamSession::Channel(s) => s.close().await,
        }
    }

    /// Whether one upstream session serves every agent session of the connector
    /// (a stdio process with `share_process`): what it sends outside a request
    /// cannot be told apart by agent.
    pub(crate) fn is_shared(&self) -> bool {
        match self {
            UpstreamSession::Http(_) => false,
            UpstreamSession::Channel(s) => s.is_shared(),
        }
    }

    /// Ends the session even when it is shared (shutdown, connector removed).
    pub(crate) async fn terminate(&self) {
        match self {
            UpstreamSession::Http(s) => s.close().await,
            UpstreamSession::Channel(s) => s.terminate().await,
        }
    }
}
