//! The gateway as an MCP client of upstream servers (connectors), over Streamable
//! HTTP, the 2024-11-05 HTTP+SSE transport, or stdio.
//!
//! - `link`: [`UpstreamSession`], what the rest of the gateway uses, whatever the transport.
//! - `session`: one MCP session over Streamable HTTP: initialize handshake, session id,
//!   re-initialisation when the upstream lost the session, requests and notifications;
//!   the connector's credential.
//! - `stream`: reading a response that is either one JSON object or an SSE stream.
//! - `channel`: one MCP session over a message pipe (stdio, HTTP+SSE): routing what the
//!   upstream sends to the request it belongs to, restarts with backoff.
//! - `stdio`: the programs behind stdio connectors and their lifecycle.
//! - `sse`: the HTTP+SSE pipe.

mod channel;
mod link;
mod session;
mod sse;
mod stdio;
mod stream;

pub(crate) use channel::{ChannelSession, PipeSpec};
pub(crate) use link::{ListenStream, UpstreamSession};
pub(crate) use session::{Credential, CredentialProvider, HttpSession, Outcome, answer_unrelayed};
pub(crate) use sse::SseTarget;
pub(crate) use stdio::{Launcher, findable, kill_all as kill_processes};
pub(crate) use stream::Message;

/// Why an upstream exchange failed (as opposed to the upstream answering with a
/// JSON-RPC error, which is an [`Outcome`]).
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum UpstreamError {
    /// The upstream answered with a non-2xx HTTP status.
    #[error("upstream answered HTTP {0}")]
    Status(u16),
    /// The connection failed or broke.
    #[error("upstream unreachable: {0}")]
    Transport(String),
    /// The upstream's answer was not valid MCP.
    #[error("upstream protocol error: {0}")]
    Protocol(String),
    /// The connector's timeout elapsed.
    #[error("timeout")]
    Timeout,
    /// A message larger than the connector's `max_result_bytes` (the limit).
    #[error("upstream message larger than max_result_bytes ({0} bytes)")]
    TooLarge(usize),
    /// A stdio connector already runs `max_processes` (the limit) processes.
    #[error("the connector is at its limit of {0} processes")]
    AtCapacity(usize),
    /// The request was cancelled by the agent.
    #[error("request cancelled")]
    Cancelled,
    /// The connector's credential could not be obtained (vault secret missing, not
    /// decryptable, KMS unreachable). The text is the operator's detail (connector,
    /// secret name, cause; never secret material), already logged when it happened; it
    /// is left out of `Display` so that no agent-facing message carries it.
    #[error("upstream credential unavailable")]
    Credential(String),
}

impl UpstreamError {
    /// The HTTP status recorded in the audit log for this failure.
    pub(crate) fn audit_status(&self) -> u16 {
        match self {
            UpstreamError::Timeout => 504,
            UpstreamError::Cancelled => 499,
            UpstreamError::Credential(_) => 500,
            UpstreamError::AtCapacity(_) => 503,
            _ => 502,
        }
    }

    /// A short machine-readable kind, for metrics and logs.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            UpstreamError::Status(_) => "http_status",
            UpstreamError::Transport(_) => "transport",
            UpstreamError::Protocol(_) => "protocol",
            UpstreamError::Timeout => "timeout",
            UpstreamError::TooLarge(_) => "too_large",
            UpstreamError::AtCapacity(_) => "at_capacity",
            UpstreamError::Cancelled => "cancelled",
            UpstreamError::Credential(_) => "credential",
        }
    }
}

/// How a forwarded request ended, as its span and metrics record it.
pub(crate) fn span_end(
    outcome: &Result<Outcome, UpstreamError>,
) -> crate::telemetry::spans::UpstreamEnd {
    use crate::telemetry::spans::UpstreamEnd;
    match outcome {
        Ok(Outcome::Result(_)) => UpstreamEnd::Result,
        Ok(Outcome::Error(e)) => {
            UpstreamEnd::RpcError(e.get("code").and_then(serde_json::Value::as_i64))
        }
        Err(e) => UpstreamEnd::Failed(e.kind()),
    }
}
