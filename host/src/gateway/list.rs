//! The list methods (`tools/list`, `resources/list`, `resources/templates/list`,
//! `prompts/list`): the catalogs of the endpoint's connectors, filtered by the policy
//! chain (one batched evaluation per connector and policy), renamed on `/mcp` (names
//! prefixed with the slug, URIs qualified: `names.rs`), and paginated towards the
//! agent with an opaque cursor.
//!
//! On `/mcp` a connector that cannot be reached is left out of the list (and logged)
//! so one broken upstream does not hide all the others; on `/mcp/<id>` it is an error.
//! Resources and prompts are listed from the connectors whose upstream declared the
//! capability; when none of the endpoint's did, the method is not found (-32601).

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures_util::future::join_all;
use serde_json::Value;

use super::catalog::{ItemSet, Kind};
use super::pipeline::{Governed, Refusal, Stage};
use super::sessions::{AgentSession, Endpoint};
use super::{Gateway, Reply, decide, names};
use crate::config::Connector;
use crate::mcp::jsonrpc::{self, RpcError};
use crate::mcp::params::Params;

/// One connector's list as resolved for a request, and which of its items the agent
/// may see.
struct Listed {
    set: Arc<ItemSet>,
    visible: Vec<bool>,
    /// The connector's slug on `/mcp` (items are renamed); nothing on `/mcp/<id>`.
    slug: Option<String>,
}

impl Gateway {
    /// A list method (`kind.method()`).
    pub(super) async fn list(
        self: &Arc<Self>,
        session: &Arc<AgentSession>,
        id: &Value,
        params: &Params,
        kind: Kind,
    ) -> Reply {
        let mut governed = Governed::start(session, kind.method(), id.clone());
        let end = self.list_kind(&mut governed, session, params, kind).await;
        governed.reply(&self.audit, end.into()).await
    }

    /// resolve (the connectors' lists) → decide (the chain filters each) → reply (a
    /// page of what is visible). Lists come from the catalog: nothing is forwarded
    /// and no quota is used.
    async fn list_kind(
        &self,
        governed: &mut Governed,
        session: &AgentSession,
        params: &Params,
        kind: Kind,
    ) -> Stage<String> {
        if let Endpoint::One(c) = &session.endpoint {
            governed.audited.connector(c);
        }
        let connectors = self
            .offering(session, kind.capability(), kind.method())
            .await?;
        let sets = self.resolve_lists(session, &connectors, kind).await?;
        let chain = self.policy.current();
        governed.decided_by_chain(&chain);
        let mut listed = Vec::with_capacity(sets.len());
        for (connector, set) in sets {
            let visible = match kind {
                Kind::Tools => {
                    let owned = self.owned(&session.identity(), &connector, &set);
                    decide::filter_tools(&chain, owned).await
                }
                _ => {
                    let owned = self.owned_for_items(session, &connector).await;
                    decide::filter_items(&chain, owned, set.clone()).await
                }
            };
            let slug = match session.endpoint {
                Endpoint::All => Some(connector.slug.clone()),
                Endpoint::One(_) => None,
            };
            listed.push(Listed { set, visible, slug });
        }
        let versions: Vec<u64> = listed.iter().map(|l| l.set.version).collect();
        self.page_of(
            kind,
            &listed,
            &stamp(kind, &versions, &chain.digest),
            params,
        )
    }

    /// The endpoint's connectors whose upstream offers `capability`: every one for
    /// tools; on `/mcp` the ones known to (an upstream that cannot be asked is left
    /// out); none is -32601, as for an unknown method.
    pub(super) async fn offering(
        &self,
        session: &AgentSession,
        capability: &str,
        method: &str,
    ) -> Stage<Vec<Arc<Connector>>> {
        let connectors = self.endpoint_connectors(&session.endpoint);
        if capability == "tools" {
            return Ok(connectors);
        }
        let offers = join_all(
            connectors
                .iter()
                .map(|c| self.catalog.offers(&c.id, capability)),
        )
        .await;
        let mut out = Vec::with_capacity(connectors.len());
        for (connector, offer) in connectors.into_iter().zip(offers) {
            match offer {
                Ok(true) => out.push(connector),
                Ok(false) => {}
                Err(e) if session.endpoint == Endpoint::All => {
                    tracing::warn!(connector = %connector.id, error = %e, "connector left out of {method}");
                }
                Err(e) => return Err(list_unavailable(e)),
            }
        }
        if out.is_empty() {
            let error = RpcError::new(
                jsonrpc::METHOD_NOT_FOUND,
                format!("Method not found: {method}"),
            );
            return Err(
                Refusal::new(error, 404).because(format!("no connector offers {capability}"))
            );
        }
        Ok(out)
    }

    /// The resolve stage: each connector's cached list. On `/mcp` a connector that
    /// cannot be listed is left out (logged); on `/mcp/<id>` it is the answer.
    async fn resolve_lists(
        &self,
        session: &AgentSession,
        connectors: &[Arc<Connector>],
        kind: Kind,
    ) -> Stage<Vec<(Arc<Connector>, Arc<ItemSet>)>> {
        let sets = join_all(connectors.iter().map(|c| self.catalog.list(&c.id, kind))).await;
        let mut out = Vec::with_capacity(sets.len());
        for (connector, set) in connectors.iter().zip(sets) {
            match set {
                Ok(set) => out.push((connector.clone(), set)),
                Err(e) if session.endpoint == Endpoint::All => {
                    tracing::warn!(connector = %connector.id, error = %e, "connector left out of {}", kind.method());
                }
                Err(e) => return Err(list_unavailable(e)),
            }
        }
        Ok(out)
    }

    /// The page the agent's cursor asks for, as the result's JSON text.
    fn page_of(
        &self,
        kind: Kind,
        listed: &[Listed],
        stamp: &str,
        params: &Params,
    ) -> Stage<String> {
        let sep = &self.config.server.tool_separator;
        // Each visible item's JSON text, in connector order.
        let mut items: Vec<&str> = Vec::new();
        for l in listed {
            let texts = match (&l.slug, kind) {
                (None, _) => l.set.plain_json(),
                (Some(slug), Kind::Tools) => l.set.renamed_json(
                    slug,
                    |name| names::prefixed(slug, sep, name),
                    |tool| names::qualify_tool_meta(tool, slug),
                ),
                (Some(slug), Kind::Prompts) => {
                    l.set
                        .renamed_json(slug, |name| names::prefixed(slug, sep, name), |_| ())
                }
                (Some(slug), Kind::Resources | Kind::Templates) => {
                    l.set
                        .renamed_json(slug, |uri| names::qualify(slug, uri), |_| ())
                }
            };
            let shown = texts.iter().zip(&l.visible).filter(|(_, v)| **v);
            items.extend(shown.map(|(t, _)| &**t));
        }
        let offset = offset(params, stamp, items.len())?;
        let end = (offset + self.config.server.list_page_size).min(items.len());
        let cursor = (end < items.len()).then(|| encode_cursor(end, stamp));
        Ok(page(kind.member(), &items[offset..end], cursor.as_deref()))
    }
}

/// An upstream that cannot be listed or asked: -32603, audited with its status.
pub(super) fn list_unavailable(e: crate::upstream::UpstreamError) -> Refusal {
    let error = RpcError::new(
        jsonrpc::INTERNAL_ERROR,
        format!("Upstream unavailable: {e}"),
    );
    Refusal::new(error, e.audit_status())
}

/// Where the agent's cursor points. Absent or null: the first page. Present but
/// unreadable (a number out of range, say) is an invalid cursor like any other.
fn offset(params: &Params, stamp: &str, len: usize) -> Stage<usize> {
    let cursor = params.members().and_then(|m| {
        let raw = m.get("cursor")?;
        Some(serde_json::from_str::<Value>(raw.get()).ok())
    });
    match cursor {
        None | Some(Some(Value::Null)) => Ok(0),
        Some(c) => match c.and_then(|c| decode_cursor(&c, stamp)) {
            Some(o) if o <= len => Ok(o),
            _ => Err(Refusal::new(
                RpcError::new(
                    jsonrpc::INVALID_PARAMS,
                    "Invalid cursor (the list changed; list again from the start)",
                ),
                400,
            )),
        },
    }
}

/// The result `{"<member>":[...],"nextCursor"?}`, written from the items' JSON
/// texts without building a `Value` tree.
fn page(member: &str, items: &[&str], cursor: Option<&str>) -> String {
    let len: usize = items.iter().map(|t| t.len() + 1).sum();
    let mut out = String::with_capacity(len + member.len() + 64);
    out.push_str("{\"");
    out.push_str(member);
    out.push_str("\":[");
    for (i, t) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(t);
    }
    out.push(']');
    if let Some(c) = cursor {
        out.push_str(r#","nextCursor":"#);
        out.push_str(&Value::String(c.to_string()).to_string());
    }
    out.push('}');
    out
}

/// Identifies the exact list a cursor points into (a cursor of one method is
/// invalid for another).
fn stamp(kind: Kind, versions: &[u64], chain_digest: &str) -> String {
    let text = format!("{}{versions:?}{chain_digest}", kind.method());
    hex::encode(&crate::digest::sha256(text.as_bytes())[..8])
}

fn encode_cursor(offset: usize, stamp: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{offset}:{stamp}"))
}

fn decode_cursor(cursor: &Value, stamp: &str) -> Option<usize> {
    let bytes = URL_SAFE_NO_PAD.decode(cursor.as_str()?).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (offset, s) = text.split_once(':')?;
    (s == stamp).then(|| offset.parse().ok()).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_page_is_the_tools_texts_verbatim_with_the_cursor_after_them() {
        let tools = [
            r#"{"name":"a.x","z":1,"inputSchema":{"type":"object"}}"#,
            r#"{"name":"a.y"}"#,
        ];
        let text = page("tools", &tools, Some("abc"));
        assert_eq!(
            text,
            r#"{"tools":[{"name":"a.x","z":1,"inputSchema":{"type":"object"}},{"name":"a.y"}],"nextCursor":"abc"}"#
        );
        let v: Value = serde_json::from_str(&page("prompts", &[], None)).unwrap();
        assert_eq!(v, json!({"prompts": []}));
    }

    #[test]
    fn cursors_round_trip_and_expire() {
        let s = stamp(Kind::Tools, &[1, 2], "abc");
        let c = Value::String(encode_cursor(500, &s));
        assert_eq!(decode_cursor(&c, &s), Some(500));
        assert_eq!(decode_cursor(&c, &stamp(Kind::Tools, &[1, 3], "abc")), None);
        assert_eq!(
            decode_cursor(&c, &stamp(Kind::Prompts, &[1, 2], "abc")),
            None,
            "a tools/list cursor is not a prompts/list cursor"
        );
        assert_eq!(decode_cursor(&Value::String("garbage".into()), &s), None);
        assert_eq!(decode_cursor(&json!(5), &s), None);
    }
}
