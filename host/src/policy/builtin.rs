//! The built-in policies, compiled from `policies/` to `wasm32-wasip2` by the build
//! script and embedded in the binary, so `builtin:<name>` works with no files around.
//! The names the config accepts are `config::BUILTIN_POLICIES`.

/// The component bytes of a built-in policy.
pub(crate) fn bytes(name: &str) -> Option<&'static [u8]> {
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

#[cfg(test)]
mod tests {
    #[test]
    fn every_name_the_config_accepts_is_embedded() {
        for name in crate::config::BUILTIN_POLICIES {
            let bytes = super::bytes(name).unwrap_or_else(|| panic!("{name} not embedded"));
            assert!(
                bytes.starts_with(b"\0asm"),
                "{name} is not a wasm component"
            );
        }
        assert!(super::bytes("nope").is_none());
    }
}
