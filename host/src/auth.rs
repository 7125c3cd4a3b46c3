//! Agent authentication: API keys are random bearer tokens, stored only as their
//! sha256. A presented key is hashed and compared against every configured hash in
//! constant time, so neither the key nor which agent it belongs to leaks through timing.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use rand::RngCore;
use subtle::ConstantTimeEq;

use crate::config::{Agent, ServerRule};
use crate::digest::sha256;

/// The caller of a request, resolved from its API key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Identity {
    pub agent: String,
    pub org: String,
    pub scopes: Vec<String>,
    /// The agent's `mcp_servers` declaration, if any.
    pub declaration: Option<Arc<Vec<ServerRule>>>,
    /// A digest of everything above: reused policy decisions are keyed by it, so a
    /// reloaded agent (new org, scopes or declaration) never gets an old one.
    pub stamp: u64,
    /// Which load of the agents this identity comes from (a reload makes a newer
    /// one): a session only ever takes a newer identity than it has.
    pub revision: u64,
}

impl Identity {
    /// The identity of a configured agent.
    pub(crate) fn of(agent: &Agent) -> Identity {
        Identity::new(
            &agent.id,
            &agent.org,
            agent.scopes.clone(),
            agent.mcp_servers.clone(),
        )
    }

    pub(crate) fn new(
        agent: &str,
        org: &str,
        scopes: Vec<String>,
        declaration: Option<Vec<ServerRule>>,
    ) -> Identity {
        let mut h = std::hash::DefaultHasher::new();
        (agent, org, &scopes).hash(&mut h);
        // ServerRule has no Hash; its Debug text names every field.
        format!("{declaration:?}").hash(&mut h);
        Identity {
            agent: agent.to_string(),
            org: org.to_string(),
            scopes,
            declaration: declaration.map(Arc::new),
            stamp: h.finish(),
            revision: 0,
        }
    }
}

/// Looks up agents by API key.
pub(crate) struct Authenticator {
    agents: Vec<(Arc<Identity>, [u8; 32])>,
}

impl Authenticator {
    pub(crate) fn new(agents: &[Agent]) -> Self {
        Authenticator::at_revision(agents, 0)
    }

    /// The agents of one load of the config, numbered `revision` (increasing).
    pub(crate) fn at_revision(agents: &[Agent], revision: u64) -> Self {
        let agents = agents
            .iter()
            .map(|a| {
                let identity = Identity {
                    revision,
                    ..Identity::of(a)
                };
                (Arc::new(identity), a.key_sha256)
            })
            .collect();
        Authenticator { agents }
    }

    /// The identity of agent `id`, if configured.
    pub(crate) fn identity(&self, id: &str) -> Option<&Arc<Identity>> {
        self.agents
            .iter()
            .find(|(i, _)| i.agent == id)
            .map(|(i, _)| i)
    }

    /// The key hash of agent `id`, if configured.
    pub(crate) fn key_hash(&self, id: &str) -> Option<&[u8; 32]> {
        self.agents
            .iter()
            .find(|(i, _)| i.agent == id)
            .map(|(_, h)| h)
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
