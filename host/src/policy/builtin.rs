//! The built-in policies, compiled from `policies/` to `wasm32-wasip2` by the build
//! script and embedded in the binary, so `builtin:<name>` works with no files around.

/// Names accepted after `builtin:`.
pub const NAMES: [&str; 5] = [
    "slug-scope",
    "blocklist",
    "mcp-servers",
    "annotation-hints",
    "redact-secrets",
];

/// The component bytes of a built-in policy.
pub fn bytes(name: &str) -> Option<&'static [u8]> {
    Some(match name {
        "slug-scope" => include_bytes!(concat!(env!("OUT_DIR"), "/policy_slug_scope.wasm")),
        "blocklist" => include_bytes!(concat!(env!("OUT_DIR"), "/policy_blocklist.wasm")),
        "mcp-servers" => include_bytes!(concat!(env!("OUT_DIR"), "/policy_mcp_servers.wasm")),
        "annotation-hints" => {
            include_bytes!(concat!(env!("OUT_DIR"), "/policy_annotation_hints.wasm"))
        }
        "redact-secrets" => include_bytes!(concat!(env!("OUT_DIR"), "/policy_redact_secrets.wasm")),
        _ => return None,
    })
}
