//! The audit trail: one [`Record`] per `tools/list` and `tools/call`, allowed or not,
//! answering "who called what, and which policy allowed it".
//!
//! Records never carry secrets or call arguments. They are written as one structured
//! log line each (target `portcullis::audit`).

mod config;

use std::time::SystemTime;

use serde::Serialize;

pub use config::{AuditRaw, AuditSettings, OnFull, SinkSettings, validate as validate_config};

/// One audited request.
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    /// Unix time in milliseconds when the request arrived.
    pub time_ms: u64,
    pub request_id: String,
    pub session_id: Option<String>,
    pub org: String,
    pub agent: String,
    pub connector: Option<String>,
    pub tool: Option<String>,
    pub method: String,
    /// HTTP-like outcome: 200, 401, 403 scope, 404 hidden/unknown, 429 quota,
    /// 500 policy error, 502 upstream, 504 timeout.
    pub status: u16,
    /// JSON-RPC error code sent to the agent, if any.
    pub rpc_code: Option<i64>,
    pub latency_ms: f64,
    /// The policy that decided (the denying one, or the last of the chain that allowed).
    pub policy: Option<String>,
    pub policy_digest: Option<String>,
    /// Why a request was refused, for the operator (never shown to the agent).
    pub reason: Option<String>,
}

/// Where audit records go.
#[derive(Default)]
pub struct AuditLog {}

impl AuditLog {
    pub fn new() -> Self {
        AuditLog {}
    }

    pub fn record(&self, r: Record) {
        tracing::info!(
            target: "portcullis::audit",
            request_id = %r.request_id,
            session_id = r.session_id.as_deref().unwrap_or("-"),
            org = %r.org,
            agent = %r.agent,
            connector = r.connector.as_deref().unwrap_or("-"),
            tool = r.tool.as_deref().unwrap_or("-"),
            method = %r.method,
            status = r.status,
            rpc_code = r.rpc_code.unwrap_or(0),
            latency_ms = r.latency_ms,
            policy = r.policy.as_deref().unwrap_or("-"),
            policy_digest = r.policy_digest.as_deref().unwrap_or("-"),
            reason = r.reason.as_deref().unwrap_or("-"),
            "request"
        );
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
