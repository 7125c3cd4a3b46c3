//! `portcullis agents eligible`: which connectors an agent may use, and which of their
//! tools, under the current policy chain — the operator's view of what the agent's
//! `tools/list` would show, computed by the same chain.

use std::fmt::Write as _;

use super::Gateway;
use super::catalog::ItemSet;

impl Gateway {
    pub(crate) async fn eligibility(&self, agent: &str) -> anyhow::Result<String> {
        let identity = self
            .agents
            .load()
            .auth
            .identity(agent)
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("no agent {agent:?} in the config"))?;
        let chain = self.policy.current();
        let mut out = String::new();
        writeln!(
            out,
            "agent {} (org {}), policy chain {} ({})",
            identity.agent,
            identity.org,
            chain.names,
            &chain.digest[..12]
        )?;
        for c in &self.all_connectors() {
            let set = match self.catalog.tools(&c.id).await {
                Ok(set) => set,
                Err(e) => {
                    writeln!(
                        out,
                        "{}\t{}\tunknown\tupstream unavailable: {e}",
                        c.id, c.slug
                    )?;
                    continue;
                }
            };
            let owned = self.owned(&identity, c, &set);
            let verdicts = super::decide::filter_tools(&chain, owned).await;
            let visible: Vec<&str> = set
                .items
                .iter()
                .zip(verdicts)
                .filter(|(_, v)| *v)
                .map(|(t, _)| ItemSet::name(t))
                .collect();
            let verdict = if visible.is_empty() {
                "not eligible"
            } else {
                "eligible"
            };
            writeln!(
                out,
                "{}\t{}\t{verdict}\t{}/{} tools: {}",
                c.id,
                c.slug,
                visible.len(),
                set.items.len(),
                visible.join(", ")
            )?;
        }
        Ok(out)
    }
}
