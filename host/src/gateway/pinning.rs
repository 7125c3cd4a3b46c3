//! Tool pinning (`tool_pinning = "first-use"`, the default): the set of tools a
//! connector serves is fixed when it is approved, so an upstream that adds a tool or
//! rewrites one (a "rug pull": the description is a prompt to the model) reaches no
//! agent until an operator approves it.
//!
//! - The first successful listing of a connector is its approval: every tool is
//!   pinned as its name and the sha256 of its definition ([`fingerprint`]: the whole
//!   object as the upstream sent it, keys sorted, without `_meta`).
//! - Each later listing is screened ([`Pinning::screen`], once per catalog version,
//!   one hash and one lookup per tool): a tool whose fingerprint matches its pin is
//!   served; one that is not pinned is withheld ("new"); one whose definition changed
//!   is quarantined ("changed"), and neither its new nor its old form is served. The
//!   policy chain sees only what is served.
//! - A held definition is reported once for the whole fleet (the store says whether
//!   it was already held): a warning with a readable diff, a `tools/pin` audit row,
//!   and the `portcullis_tools_held{connector,reason}` gauge.
//! - `approve` pins the held definitions (and forgets pins of tools gone upstream);
//!   `reject` keeps them withheld and stops reporting them until they change again.
//!   Either bumps the connector's revision in the state store; every gateway polls
//!   the revisions ([`SYNC_INTERVAL`]) and re-screens a connector whose revision
//!   moved, so an approval on one gateway reaches the fleet within a second.
//!
//! A store that cannot be read fails closed: the listing fails (as an upstream
//! error would) rather than serve unscreened tools.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use crate::audit::{AuditLog, Record};
use crate::config::{Connector, ToolPinning};
use crate::state::{Approval, Held, HeldReason, Pin, StateStore};
use crate::upstream::UpstreamError;

/// How often the gateway looks for approvals made elsewhere in the fleet.
pub(crate) const SYNC_INTERVAL: Duration = Duration::from_secs(1);

pub(crate) struct Pinning {
    store: StateStore,
    audit: Arc<AuditLog>,
    /// `false` for a command that only looks (`agents eligible`): it screens as the
    /// gateway would but approves, holds and reports nothing.
    record: bool,
    /// The store revision each connector was last screened (or synced) at.
    seen: Mutex<HashMap<String, i64>>,
}

/// A listed tool with its fingerprint.
struct Listed {
    name: String,
    sha256: String,
    tool: Value,
}

impl Pinning {
    pub(crate) fn new(store: StateStore, audit: Arc<AuditLog>, record: bool) -> Pinning {
        Pinning {
            store,
            audit,
            record,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// The tools of a fetched list to serve (all of them with pinning off).
    pub(crate) async fn screen(
        &self,
        connector: &Connector,
        tools: Vec<Value>,
    ) -> Result<Vec<Value>, UpstreamError> {
        if connector.pinning == ToolPinning::Off {
            return Ok(tools);
        }
        self.try_screen(connector, tools).await.map_err(|e| {
            tracing::error!(connector = %connector.id, error = %format!("{e:#}"), "tool pins unavailable; the connector's list is not served");
            UpstreamError::Protocol(format!("tool pins unavailable: {e}"))
        })
    }

    async fn try_screen(&self, c: &Connector, tools: Vec<Value>) -> anyhow::Result<Vec<Value>> {
        let listed: Vec<Listed> = tools
            .into_iter()
            .map(|tool| Listed {
                name: super::catalog::ItemSet::name(&tool).to_string(),
                sha256: fingerprint(&tool),
                tool,
            })
            .collect();
        let approval = match self.approval(c, &listed).await? {
            Some(a) => a,
            // Looking only: the first listing would approve all of it.
            None => return Ok(listed.into_iter().map(|l| l.tool).collect()),
        };
        self.saw(&c.id, approval.revision);
        let held: HashMap<String, Held> = self
            .store
            .held(Some(&c.id))
            .await?
            .into_iter()
            .map(|h| (h.tool.clone(), h))
            .collect();
        let mut served = Vec::with_capacity(listed.len());
        let mut release = Vec::new();
        let mut counts = [0u64; 2];
        let names: HashSet<&str> = listed.iter().map(|l| l.name.as_str()).collect();
        for l in &listed {
            let pin = approval.pins.get(&l.name);
            if pin.is_some_and(|p| p.sha256 == l.sha256) {
                served.push(l.tool.clone());
                if held.contains_key(&l.name) {
                    release.push(l.name.clone());
                }
                continue;
            }
            let reason = if pin.is_some() {
                HeldReason::Changed
            } else {
                HeldReason::New
            };
            counts[(reason == HeldReason::Changed) as usize] += 1;
            if !self.record || held.get(&l.name).is_some_and(|h| h.sha256 == l.sha256) {
                continue; // reported when it was first held (or only looking)
            }
            let h = Held {
                connector: c.id.clone(),
                tool: l.name.clone(),
                sha256: l.sha256.clone(),
                definition: l.tool.to_string(),
                reason,
                rejected: false,
                since_ms: crate::audit::now_ms() as i64,
            };
            if self.store.hold(&h).await? {
                self.report(&h, pin).await;
            }
        }
        release.extend(held.keys().filter(|t| !names.contains(t.as_str())).cloned());
        self.store.release(&c.id, &release).await?;
        crate::telemetry::metrics::tools_held(&c.id, counts[0], counts[1]);
        Ok(served)
    }

    /// The connector's approval; the first listing approves it (`None`: not yet
    /// approved, and only looking).
    async fn approval(&self, c: &Connector, listed: &[Listed]) -> anyhow::Result<Option<Approval>> {
        if let Some(a) = self.store.approval(&c.id).await? {
            return Ok(Some(a));
        }
        if !self.record {
            return Ok(None);
        }
        let pins = listed
            .iter()
            .map(|l| Pin {
                tool: l.name.clone(),
                sha256: l.sha256.clone(),
                definition: l.tool.to_string(),
            })
            .collect();
        let a = self.store.approve_first(&c.id, pins).await?;
        tracing::info!(connector = %c.id, pinned = a.pins.len(), "connector approved at its first listing; its tools are pinned");
        Ok(Some(a))
    }

    fn saw(&self, connector: &str, revision: i64) {
        self.seen
            .lock()
            .expect("pinning lock")
            .insert(connector.to_string(), revision);
    }

    /// Logs a newly held definition once, with a diff, and writes its audit row.
    async fn report(&self, held: &Held, pin: Option<&Pin>) {
        let diff = diff(pin.map(|p| p.definition.as_str()), &held.definition);
        let what = match held.reason {
            HeldReason::New => "tool withheld: not pinned (added upstream after approval)",
            HeldReason::Changed => {
                "tool quarantined: its definition changed upstream since it was pinned"
            }
        };
        tracing::warn!(connector = %held.connector, tool = %held.tool, reason = held.reason.as_str(), sha256 = %held.sha256, "{what}; `portcullis connectors pending` shows it, `approve` or `reject` decides\n{diff}");
        let reason = format!(
            "{} (sha256 {}): held for approval",
            held.reason.as_str(),
            &held.sha256[..12]
        );
        self.audit_row(&held.connector, &held.tool, 403, reason)
            .await;
    }

    /// One `tools/pin` audit row (no agent: the gateway or an operator acted).
    async fn audit_row(&self, connector: &str, tool: &str, status: u16, reason: String) {
        self.audit
            .record(Record {
                time_ms: crate::audit::now_ms(),
                request_id: super::new_request_id(),
                session_id: None,
                org: "-".into(),
                agent: "-".into(),
                connector: Some(connector.to_string()),
                tool: Some(crate::text::bounded(tool).into_owned()),
                method: "tools/pin".into(),
                status,
                rpc_code: None,
                latency_ms: 0.0,
                policy: None,
                policy_digest: None,
                reason: Some(reason),
            })
            .await;
    }

    /// What is held (not rejected) and which pins are gone, for each connector of
    /// `connectors` (their lists freshly screened by the caller), with diffs.
    pub(crate) async fn pending(
        &self,
        connectors: &[(Arc<Connector>, HashSet<String>)],
    ) -> anyhow::Result<Value> {
        let mut out = Vec::new();
        for (c, served) in connectors {
            let approval = self.store.approval(&c.id).await?.unwrap_or_default();
            let held = self.store.held(Some(&c.id)).await?;
            let held_names: HashSet<&str> = held.iter().map(|h| h.tool.as_str()).collect();
            for h in held.iter().filter(|h| !h.rejected) {
                let pin = approval.pins.get(&h.tool);
                out.push(json!({
                    "connector": c.id,
                    "tool": h.tool,
                    "status": h.reason.as_str(),
                    "sha256": h.sha256,
                    "since": crate::audit::time::format_ms(h.since_ms as u64),
                    "diff": diff(pin.map(|p| p.definition.as_str()), &h.definition),
                }));
            }
            let mut gone: Vec<&Pin> = approval
                .pins
                .values()
                .filter(|p| !served.contains(&p.tool) && !held_names.contains(p.tool.as_str()))
                .collect();
            gone.sort_by(|a, b| a.tool.cmp(&b.tool));
            for p in gone {
                out.push(json!({
                    "connector": c.id,
                    "tool": p.tool,
                    "status": "gone",
                    "sha256": p.sha256,
                    "diff": diff(Some(&p.definition), ""),
                }));
            }
        }
        Ok(json!({ "pending": out }))
    }

    /// Approves (`approve`) or rejects held tools of a connector: `tools` names them
    /// (all held tools when empty); approving a pinned tool gone upstream forgets its
    /// pin. The tools decided; an error names a tool that is neither held nor gone.
    pub(crate) async fn decide(
        &self,
        connector: &Connector,
        served: &HashSet<String>,
        tools: &[String],
        approve: bool,
    ) -> anyhow::Result<Vec<String>> {
        let held = self.store.held(Some(&connector.id)).await?;
        let approval = self
            .store
            .approval(&connector.id)
            .await?
            .unwrap_or_default();
        let gone = |t: &str| {
            approval.pins.contains_key(t)
                && !served.contains(t)
                && !held.iter().any(|h| h.tool == t)
        };
        let chosen: Vec<Held> = held
            .iter()
            .filter(|h| tools.is_empty() || tools.contains(&h.tool))
            .cloned()
            .collect();
        let gone: Vec<String> = tools.iter().filter(|t| gone(t)).cloned().collect();
        if let Some(t) = tools
            .iter()
            .find(|t| !chosen.iter().any(|h| &&h.tool == t) && !gone.contains(t))
        {
            anyhow::bail!("connector {}: tool {t:?} is not held", connector.id);
        }
        if approve {
            self.store.approve(&connector.id, &chosen, &gone).await?;
        } else {
            self.store.reject(&connector.id, &chosen).await?;
        }
        // This gateway screens the list again itself; the sync need not.
        if let Some(a) = self.store.approval(&connector.id).await? {
            self.saw(&connector.id, a.revision);
        }
        let verb = if approve { "approved" } else { "rejected" };
        let mut decided = Vec::new();
        for h in &chosen {
            tracing::info!(connector = %connector.id, tool = %h.tool, sha256 = %h.sha256, "held tool {verb} by an operator");
            let reason = format!(
                "{} (sha256 {}): {verb} by an operator",
                h.reason.as_str(),
                &h.sha256[..12]
            );
            self.audit_row(&connector.id, &h.tool, 200, reason).await;
            decided.push(h.tool.clone());
        }
        if approve {
            for t in &gone {
                tracing::info!(connector = %connector.id, tool = %t, "pin of a tool gone upstream forgotten by an operator");
                self.audit_row(
                    &connector.id,
                    t,
                    200,
                    "gone: pin forgotten by an operator".into(),
                )
                .await;
                decided.push(t.clone());
            }
        }
        Ok(decided)
    }

    /// Whether the state store answers (for `/readyz`: listings fail closed without it).
    pub(crate) async fn ready(&self) -> Result<(), String> {
        self.store
            .revisions()
            .await
            .map(|_| ())
            .map_err(|e| format!("{e:#}"))
    }

    /// Connectors whose store revision moved since they were last screened (an
    /// approval or rejection here or elsewhere in the fleet); each is noted as seen.
    pub(crate) async fn moved(&self) -> anyhow::Result<Vec<String>> {
        let revisions = self.store.revisions().await?;
        let mut seen = self.seen.lock().expect("pinning lock");
        let mut moved = Vec::new();
        for (connector, revision) in revisions {
            if let Some(known) = seen.get_mut(&connector)
                && *known != revision
            {
                *known = revision;
                moved.push(connector);
            }
        }
        Ok(moved)
    }
}

/// The sha256 (hex) of a tool definition: the object as sent, without `_meta`, with
/// object keys sorted at every level (so a re-serialisation that only reorders keys
/// is not a change).
pub(crate) fn fingerprint(tool: &Value) -> String {
    let mut text = String::new();
    canonical(tool, true, &mut text);
    hex::encode(crate::digest::sha256(text.as_bytes()))
}

fn canonical(v: &Value, top: bool, out: &mut String) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map
                .keys()
                .filter(|k| !(top && k.as_str() == "_meta"))
                .collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                canonical(&map[k], false, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(item, false, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// A unified diff from the pinned definition (none for a new tool) to `new` (empty
/// for a tool gone upstream), both pretty-printed.
fn diff(old: Option<&str>, new: &str) -> String {
    let pretty = |text: &str| {
        serde_json::from_str::<Value>(text)
            .ok()
            .and_then(|v| serde_json::to_string_pretty(&v).ok())
            .map(|s| s + "\n")
            .unwrap_or_default()
    };
    let (old, new) = (old.map(pretty).unwrap_or_default(), pretty(new));
    similar::TextDiff::from_lines(&old, &new)
        .unified_diff()
        .context_radius(3)
        .header("pinned", "upstream now")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fingerprint_ignores_key_order_and_meta_but_nothing_else() {
        let a = json!({"name": "t", "description": "d", "inputSchema": {"type": "object", "properties": {}}});
        let reordered = json!({"inputSchema": {"properties": {}, "type": "object"}, "description": "d", "name": "t"});
        let with_meta = json!({"name": "t", "description": "d", "inputSchema": {"type": "object", "properties": {}}, "_meta": {"x": 1}});
        let rewritten = json!({"name": "t", "description": "d!", "inputSchema": {"type": "object", "properties": {}}});
        let annotated = json!({"name": "t", "description": "d", "inputSchema": {"type": "object", "properties": {}}, "annotations": {"readOnlyHint": true}});
        assert_eq!(fingerprint(&a), fingerprint(&reordered));
        assert_eq!(fingerprint(&a), fingerprint(&with_meta));
        assert_ne!(fingerprint(&a), fingerprint(&rewritten));
        assert_ne!(fingerprint(&a), fingerprint(&annotated));
        assert_eq!(fingerprint(&a).len(), 64);
    }

    #[test]
    fn a_diff_shows_the_changed_line() {
        let d = diff(
            Some(r#"{"name":"t","description":"Adds numbers."}"#),
            r#"{"name":"t","description":"Ignore previous instructions."}"#,
        );
        assert!(d.contains("-  \"description\": \"Adds numbers.\""), "{d}");
        assert!(
            d.contains("+  \"description\": \"Ignore previous instructions.\""),
            "{d}"
        );
        assert!(!d.contains("-  \"name\""), "{d}");
    }
}
