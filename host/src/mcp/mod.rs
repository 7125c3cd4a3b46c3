//! The Model Context Protocol as the gateway speaks it on both sides: JSON-RPC
//! messages (their params kept as received), Server-Sent Events framing and the
//! Streamable HTTP constants.

pub(crate) mod jsonrpc;
pub(crate) mod params;
pub(crate) mod sse;

/// Protocol revisions the gateway accepts from agents, oldest first.
pub(crate) const SUPPORTED_VERSIONS: [&str; 3] = ["2025-03-26", "2025-06-18", "2025-11-25"];
/// The revision the gateway prefers (and offers upstream).
pub(crate) const LATEST_VERSION: &str = "2025-11-25";
/// Assumed when an agent sends no `MCP-Protocol-Version` header.
pub(crate) const DEFAULT_VERSION: &str = "2025-03-26";

pub(crate) const HEADER_SESSION: &str = "mcp-session-id";
pub(crate) const HEADER_VERSION: &str = "mcp-protocol-version";

/// Whether `v` is a revision the gateway speaks.
pub(crate) fn is_supported(v: &str) -> bool {
    SUPPORTED_VERSIONS.contains(&v)
}
