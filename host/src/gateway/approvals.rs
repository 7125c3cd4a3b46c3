//! The operator's side of tool pinning (`pinning.rs`): what is held, approving and
//! rejecting it (the admin listener's `/admin/connectors/{pending,approve,reject}`,
//! behind `portcullis connectors pending|approve|reject`), and the task that brings
//! approvals made elsewhere in the fleet to this gateway. A decision takes effect at
//! once: the connector's list is fetched and screened again, and sessions get
//! `list_changed`.

use std::collections::HashSet;
use std::sync::Arc;

use serde_json::{Value, json};

use super::Gateway;
use super::catalog::ItemSet;
use crate::config::{Connector, ToolPinning};

impl Gateway {
    /// Held tools and gone pins of one pinning connector, or of all (a connector
    /// whose list cannot be fetched now is named under `unavailable`).
    pub(crate) async fn pending(&self, id: Option<&str>) -> anyhow::Result<Value> {
        let connectors = match id {
            Some(id) => vec![self.pinned_connector(id)?],
            None => self
                .all_connectors()
                .into_iter()
                .filter(|c| c.pinning == ToolPinning::FirstUse)
                .collect(),
        };
        let mut listed = Vec::with_capacity(connectors.len());
        let mut unavailable = Vec::new();
        for c in connectors {
            match self.served(&c).await {
                Ok(served) => listed.push((c, served)),
                // One upstream down hides none of the others' held tools.
                Err(e) => unavailable.push(json!({"connector": c.id, "error": format!("{e:#}")})),
            }
        }
        let mut report = self.pinning.pending(&listed).await?;
        if !unavailable.is_empty() {
            report["unavailable"] = Value::Array(unavailable);
        }
        Ok(report)
    }

    /// Approves (or rejects) held tools of connector `id` (`tools`: all when empty).
    pub(crate) async fn decide_pins(
        &self,
        id: &str,
        tools: &[String],
        approve: bool,
    ) -> anyhow::Result<Value> {
        let c = self.pinned_connector(id)?;
        let served = self.served(&c).await?;
        let decided = self.pinning.decide(&c, &served, tools, approve).await?;
        // Screen again now; the fleet follows through the store's revision.
        self.catalog.invalidate(id);
        let verb = if approve { "approved" } else { "rejected" };
        Ok(json!({ "connector": id, verb: decided }))
    }

    /// Re-screens connectors whose pins changed in the store (another gateway's
    /// approval), every `pinning::SYNC_INTERVAL`, for as long as the task runs.
    pub(crate) fn spawn_pin_sync(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let gw = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(super::pinning::SYNC_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(gw) = gw.upgrade() else { return };
                match gw.pinning.moved().await {
                    Ok(moved) => {
                        for id in moved {
                            if gw.connector(&id).is_some() {
                                tracing::info!(connector = %id, "tool pins changed in the state store; screening the list again");
                                gw.catalog.invalidate(&id);
                            }
                        }
                    }
                    Err(e) => {
                        tracing::debug!(error = %format!("{e:#}"), "state store unavailable for pin sync")
                    }
                }
            }
        })
    }

    fn pinned_connector(&self, id: &str) -> anyhow::Result<Arc<Connector>> {
        let c = self
            .connector(id)
            .ok_or_else(|| anyhow::anyhow!("unknown connector {id}"))?;
        if c.pinning == ToolPinning::Off {
            anyhow::bail!("connector {id} has tool_pinning = \"off\"");
        }
        Ok(c)
    }

    /// The names a connector serves now (its list fetched and screened if needed).
    async fn served(&self, c: &Connector) -> anyhow::Result<HashSet<String>> {
        let set = self
            .catalog
            .tools(&c.id)
            .await
            .map_err(|e| anyhow::anyhow!("connector {}: {e}", c.id))?;
        Ok(set
            .items
            .iter()
            .map(|t| ItemSet::name(t).to_string())
            .collect())
    }
}
