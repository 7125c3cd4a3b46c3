//! The spans of one agent request, named and attributed after the OpenTelemetry
//! semantic conventions for MCP and GenAI, plus `portcullis.*` attributes:
//!
//! ```text
//! tools/call <tool>          server  mcp.method.name, jsonrpc.request.id, mcp.session.id,
//!  │                                 gen_ai.tool.name, portcullis.{org,agent,connector,status},
//!  │                                 server.address, error.type (on failure)
//!  ├─ policy <name>          internal  portcullis.policy.{name,digest,hook,mode,verdict}
//!  ├─ quota check            internal  portcullis.org, portcullis.quota.verdict
//!  ├─ upstream tools/call    client    portcullis.connector, server.address,
//!  │   │                               http.response.status_code, portcullis.upstream.outcome
//!  │   └─ vault unwrap       internal  portcullis.connector, portcullis.vault.secret (a name)
//!  └─ policy <name>          (check_result, after the upstream answered)
//! ```
//!
//! Attributes never carry a secret or the call's arguments. When tracing is off every
//! constructor returns a disabled span and does no work.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use http::HeaderMap;
use serde_json::Value;
use tracing::Span;
use tracing::field::Empty;

use super::metrics;
use super::traces::{self, TARGET};
use crate::auth::Identity;
use crate::config::{Connector, PolicyMode};
use crate::mcp::params::Params;
use crate::text::prefix as truncate;

/// Longest tool name put in a span name (agents choose what they send).
const MAX_NAME: usize = 128;

/// The server span of one JSON-RPC request; continues an incoming `traceparent`.
pub(crate) fn request(
    method: &str,
    id: &Value,
    params: &Params,
    identity: &Identity,
    headers: &HeaderMap,
    listen: SocketAddr,
) -> Span {
    if !traces::enabled() {
        return Span::none();
    }
    let tool = (method == "tools/call")
        .then(|| params.field::<String>("name"))
        .flatten();
    let tool = tool.as_deref().map(|t| truncate(t, MAX_NAME));
    let method = truncate(method, MAX_NAME);
    let name = match tool {
        Some(t) => format!("{method} {t}"),
        None => method.to_string(),
    };
    let request_id = match id {
        Value::String(s) => truncate(s, MAX_NAME).to_string(),
        other => other.to_string(),
    };
    let (address, port) = server_address(headers, listen);
    let span = tracing::info_span!(
        target: TARGET,
        "mcp.server",
        otel.name = %name,
        otel.kind = "server",
        otel.status_code = Empty,
        "mcp.method.name" = method,
        "jsonrpc.request.id" = %request_id,
        "mcp.session.id" = Empty,
        "mcp.protocol.version" = Empty,
        "gen_ai.tool.name" = tool,
        "gen_ai.operation.name" = (method == "tools/call").then_some("execute_tool"),
        "portcullis.org" = %identity.org,
        "portcullis.agent" = %identity.agent,
        "portcullis.connector" = Empty,
        "portcullis.status" = Empty,
        "portcullis.policy" = Empty,
        "portcullis.policy_digest" = Empty,
        "error.type" = Empty,
        "rpc.response.status_code" = Empty,
        "server.address" = %address,
        "server.port" = port,
        "network.protocol.name" = "http",
        "network.transport" = "tcp",
    );
    traces::continue_remote(&span, headers);
    span
}

/// The session a request belongs to (known after the lookup, or after initialize).
pub(crate) fn session(span: &Span, id: &str, protocol_version: &str) {
    if span.is_disabled() {
        return;
    }
    span.record("mcp.session.id", id);
    span.record("mcp.protocol.version", protocol_version);
}

/// An HTTP-level refusal of a request that has a span (e.g. unknown session).
pub(crate) fn refused(span: &Span, status: u16, error_type: &str) {
    if span.is_disabled() {
        return;
    }
    span.record("portcullis.status", status);
    span.record("error.type", error_type);
    span.record("otel.status_code", "error");
}

/// What an audit row says of a request's outcome, for its metrics and span.
pub(crate) struct Audited<'a> {
    pub method: &'a str,
    pub connector: Option<&'a str>,
    pub status: u16,
    pub rpc_code: Option<i64>,
    pub latency_ms: f64,
    pub policy: Option<&'a str>,
    pub policy_digest: Option<&'a str>,
}

/// Called for every audit row: the request metrics, and the outcome on the current
/// (server) span.
pub(crate) fn audited(r: &Audited<'_>) {
    metrics::request(r.method, r.connector, r.status, r.latency_ms);
    if !traces::enabled() {
        return;
    }
    let span = Span::current();
    if span.is_disabled() {
        return;
    }
    span.record("portcullis.status", r.status);
    if let Some(c) = r.connector {
        span.record("portcullis.connector", c);
    }
    if let Some(p) = r.policy {
        span.record("portcullis.policy", p);
    }
    if let Some(d) = r.policy_digest {
        span.record("portcullis.policy_digest", d);
    }
    let error = match r.rpc_code {
        Some(code) => {
            span.record("rpc.response.status_code", code.to_string().as_str());
            Some(code.to_string())
        }
        None if r.status >= 400 => Some(r.status.to_string()),
        None => None,
    };
    if let Some(e) = error {
        span.record("error.type", e.as_str());
        span.record("otel.status_code", "error");
    }
}

/// One policy evaluation; finish it with the verdict.
pub(crate) struct PolicySpan {
    span: tracing::span::EnteredSpan,
    started: Instant,
    policy: String,
    hook: &'static str,
}

impl PolicySpan {
    pub(crate) fn enter(
        policy: &str,
        digest: &str,
        mode: PolicyMode,
        hook: &'static str,
    ) -> PolicySpan {
        let span = if traces::enabled() {
            tracing::info_span!(
                target: TARGET,
                "policy",
                otel.name = %format_args!("policy {policy}"),
                otel.status_code = Empty,
                "portcullis.policy.name" = policy,
                "portcullis.policy.digest" = digest,
                "portcullis.policy.hook" = hook,
                "portcullis.policy.mode" = match mode {
                    PolicyMode::Enforce => "enforce",
                    PolicyMode::Monitor => "monitor",
                },
                "portcullis.policy.verdict" = Empty,
            )
        } else {
            Span::none()
        };
        PolicySpan {
            span: span.entered(),
            started: Instant::now(),
            policy: policy.to_string(),
            hook,
        }
    }

    /// `verdict`: "allow", "deny", "replace" or "error".
    pub(crate) fn finish(self, verdict: &'static str) {
        metrics::policy(&self.policy, self.hook, verdict, self.started.elapsed());
        if !self.span.is_disabled() {
            self.span.record("portcullis.policy.verdict", verdict);
            if verdict == "error" {
                self.span.record("otel.status_code", "error");
            }
        }
    }
}

/// The quota check of one call.
pub(crate) fn quota(org: &str) -> Span {
    if !traces::enabled() {
        return Span::none();
    }
    tracing::info_span!(
        target: TARGET,
        "quota",
        otel.name = "quota check",
        "portcullis.org" = org,
        "portcullis.quota.verdict" = Empty,
        "portcullis.quota.used" = Empty,
    )
}

/// The quota's answer: `verdict` is "allowed", "unlimited", "exceeded",
/// "unavailable" (refused) or "unavailable_allowed".
pub(crate) fn quota_verdict(span: &Span, org: &str, verdict: &'static str, used: Option<u64>) {
    match verdict {
        "exceeded" | "unavailable" => metrics::quota_rejection(org, verdict),
        _ => {}
    }
    if span.is_disabled() {
        return;
    }
    span.record("portcullis.quota.verdict", verdict);
    if let Some(n) = used {
        span.record("portcullis.quota.used", n);
    }
}

/// Reading a connector credential from the vault (KMS unwrap of the data key on a
/// cache miss, then decryption). Attributes name the secret, never its value.
pub(crate) fn vault(connector: &str, secret: &str) -> Span {
    if !traces::enabled() {
        return Span::none();
    }
    tracing::info_span!(
        target: TARGET,
        "vault",
        otel.name = "vault unwrap",
        "portcullis.connector" = connector,
        "portcullis.vault.secret" = secret,
    )
}

/// The forwarded `tools/call` at the upstream.
pub(crate) fn upstream(connector: &Connector, tool: &str, upstream_id: i64) -> Span {
    if !traces::enabled() {
        return Span::none();
    }
    let uri: Option<http::Uri> = connector.target_url.parse().ok();
    let host = uri
        .as_ref()
        .and_then(|u| u.host())
        .unwrap_or("")
        .to_string();
    let port = uri.as_ref().and_then(|u| {
        u.port_u16().or(match u.scheme_str() {
            Some("https") => Some(443),
            _ => Some(80),
        })
    });
    tracing::info_span!(
        target: TARGET,
        "upstream",
        otel.name = %format_args!("tools/call {}", truncate(tool, MAX_NAME)),
        otel.kind = "client",
        otel.status_code = Empty,
        "mcp.method.name" = "tools/call",
        "jsonrpc.request.id" = upstream_id,
        "gen_ai.tool.name" = truncate(tool, MAX_NAME),
        "gen_ai.operation.name" = "execute_tool",
        "portcullis.connector" = %connector.id,
        "server.address" = %host,
        "server.port" = port,
        "http.response.status_code" = Empty,
        "portcullis.upstream.outcome" = Empty,
        "error.type" = Empty,
    )
}

/// How a forwarded call ended, as its span and metrics record it.
pub(crate) enum UpstreamEnd {
    /// A JSON-RPC result.
    Result,
    /// A JSON-RPC error, with its code when it has one.
    RpcError(Option<i64>),
    /// No answer: the failure's kind (`timeout`, `status`, ...).
    Failed(&'static str),
}

/// How the forwarded call ended: span attributes and the upstream metrics.
pub(crate) fn upstream_done(
    span: &Span,
    connector: &str,
    method: &'static str,
    end: UpstreamEnd,
    elapsed: Duration,
) {
    metrics::upstream_call(connector, method, elapsed);
    let (what, error): (&str, Option<String>) = match end {
        UpstreamEnd::Result => ("ok", None),
        UpstreamEnd::RpcError(code) => (
            "rpc_error",
            Some(code.map_or_else(|| "rpc_error".into(), |c| c.to_string())),
        ),
        UpstreamEnd::Failed(kind) => {
            metrics::upstream_error(connector, kind);
            (kind, Some(kind.to_string()))
        }
    };
    if span.is_disabled() {
        return;
    }
    span.record("portcullis.upstream.outcome", what);
    if let Some(e) = error {
        span.record("error.type", e.as_str());
        span.record("otel.status_code", "error");
    }
}

/// The HTTP status an upstream answered (recorded on the current upstream span).
pub(crate) fn upstream_status(status: u16) {
    if traces::enabled() {
        Span::current().record("http.response.status_code", status);
    }
}

/// `server.address`/`server.port` as the agent addressed us (`Host`), else the listener.
fn server_address(headers: &HeaderMap, listen: SocketAddr) -> (String, u16) {
    let host = headers
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .and_then(|h| h.parse::<http::uri::Authority>().ok());
    match host {
        Some(a) => (a.host().to_string(), a.port_u16().unwrap_or(listen.port())),
        None => (listen.ip().to_string(), listen.port()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_address_prefers_the_host_header() {
        let listen: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let mut h = HeaderMap::new();
        assert_eq!(server_address(&h, listen), ("127.0.0.1".into(), 8080));
        h.insert(http::header::HOST, "gw.example:9000".parse().unwrap());
        assert_eq!(server_address(&h, listen), ("gw.example".into(), 9000));
    }
}
