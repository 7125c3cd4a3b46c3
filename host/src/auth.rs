//! Agent authentication: API keys are random bearer tokens, stored only as their
//! sha256. A presented key is hashed and compared against every configured hash in
//! constant time, so neither the key nor which agent it belongs to leaks through timing.

use std::sync::Arc;

use rand::RngCore;
use subtle::ConstantTimeEq;

use crate::config::Agent;
use crate::digest::sha256;

/// The caller of a request, resolved from its API key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Identity {
    pub agent: String,
    pub org: String,
    pub scopes: Vec<String>,
}

/// Looks up agents by API key.
pub(crate) struct Authenticator {
    agents: Vec<(Arc<Identity>, [u8; 32])>,
}

impl Authenticator {
    pub(crate) fn new(agents: &[Agent]) -> Self {
        let agents = agents
            .iter()
            .map(|a| {
                let id = Identity {
                    agent: a.id.clone(),
                    org: a.org.clone(),
                    scopes: a.scopes.clone(),
                };
                (Arc::new(id), a.key_sha256)
            })
            .collect();
        Authenticator { agents }
    }

    /// The identity whose key is `key`, if any.
    pub(crate) fn authenticate(&self, key: &str) -> Option<Arc<Identity>> {
        let presented = sha256(key.as_bytes());
        let mut found = None;
        for (identity, hash) in &self.agents {
            // No early exit: every hash is compared.
            if bool::from(hash.ct_eq(&presented)) {
                found = Some(identity.clone());
            }
        }
        found
    }

    /// Extracts the key from an `Authorization: Bearer <key>` header value.
    pub(crate) fn bearer(header: Option<&http::HeaderValue>) -> Option<&str> {
        let value = header?.to_str().ok()?;
        let (scheme, key) = value.split_once(' ')?;
        scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| key.trim())
            .filter(|k| !k.is_empty())
    }
}

/// A fresh API key (`pc_` + 32 random bytes, hex) and its sha256 for the config.
pub(crate) fn new_key() -> (String, String) {
    let mut raw = [0u8; 32];
    rand::rng().fill_bytes(&mut raw);
    let key = format!("pc_{}", hex::encode(raw));
    let hash = hex::encode(sha256(key.as_bytes()));
    (key, hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(id: &str, key: &str) -> Agent {
        Agent {
            id: id.into(),
            org: "acme".into(),
            key_sha256: sha256(key.as_bytes()),
            scopes: vec!["mcp:call".into()],
            mcp_servers: None,
        }
    }

    #[test]
    fn resolves_the_right_agent() {
        let auth = Authenticator::new(&[agent("a", "key-a"), agent("b", "key-b")]);
        assert_eq!(auth.authenticate("key-b").unwrap().agent, "b");
        assert!(auth.authenticate("key-c").is_none());
        assert!(auth.authenticate("").is_none());
    }

    #[test]
    fn new_keys_are_distinct_and_hash_matches() {
        let (k1, h1) = new_key();
        let (k2, _) = new_key();
        assert_ne!(k1, k2);
        assert_eq!(hex::encode(sha256(k1.as_bytes())), h1);
        assert!(k1.starts_with("pc_") && k1.len() == 67);
    }

    #[test]
    fn parses_bearer_header() {
        let v = http::HeaderValue::from_static("Bearer abc");
        assert_eq!(Authenticator::bearer(Some(&v)), Some("abc"));
        let v = http::HeaderValue::from_static("Basic abc");
        assert_eq!(Authenticator::bearer(Some(&v)), None);
        let v = http::HeaderValue::from_static("Bearer ");
        assert_eq!(Authenticator::bearer(Some(&v)), None);
    }
}
