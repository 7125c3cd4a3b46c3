//! `tools/list`: the catalogs of the endpoint's connectors, filtered by the policy
//! chain (one batched evaluation per connector and policy), renamed with the slug
//! prefix on `/mcp`, and paginated towards the agent with an opaque cursor.
//!
//! On `/mcp` a connector that cannot be reached is left out of the list (and logged)
//! so one broken upstream does not hide all the others; on `/mcp/<id>` it is an error.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures_util::future::join_all;
use serde_json::Value;

use super::catalog::ToolSet;
use super::pipeline::{Governed, Refusal, Stage};
use super::sessions::{AgentSession, Endpoint};
use super::{Gateway, Reply, decide, names};
use crate::config::Connector;
use crate::mcp::jsonrpc::{self, RpcError};
use crate::mcp::params::Params;

/// One connector's list as resolved for a request, and which of its tools the agent
/// may see.
struct Listed {
    set: Arc<ToolSet>,
    visible: Vec<bool>,
    /// `<slug><sep>` on `/mcp`; nothing on `/mcp/<id>`.
    prefix: Option<String>,
}

impl Gateway {
    pub(super) async fn tools_list(
        self: &Arc<Self>,
        session: &Arc<AgentSession>,
        id: &Value,
        params: &Params,
    ) -> Reply {
        let mut governed = Governed::start(session, "tools/list", id.clone());
        let end = self.list_tools(&mut governed, session, params).await;
        governed.reply(&self.audit, end.into()).await
    }

    /// resolve (the connectors' lists) → decide (the chain filters each) → reply (a
    /// page of what is visible). Lists come from the catalog: nothing is forwarded
    /// and no quota is used.
    async fn list_tools(
        &self,
        governed: &mut Governed,
        session: &AgentSession,
        params: &Params,
    ) -> Stage<String> {
        let connectors = self.endpoint_connectors(&session.endpoint);
        if let Endpoint::One(c) = &session.endpoint {
            governed.audited.connector(c);
        }
        let sets = self.resolve_lists(session, &connectors).await?;
        let chain = self.policy.current();
        governed.decided_by_chain(&chain);
        let mut listed = Vec::with_capacity(sets.len());
        for (connector, set) in sets {
            let owned = self.owned(&session.identity(), &connector, &set);
            let visible = decide::filter_tools(&chain, owned).await;
            let prefix = match session.endpoint {
                Endpoint::All => Some(names::prefixed(
                    &connector.slug,
                    &self.config.server.tool_separator,
                    "",
                )),
                Endpoint::One(_) => None,
            };
            listed.push(Listed {
                set,
                visible,
                prefix,
            });
        }
        let versions: Vec<u64> = listed.iter().map(|l| l.set.version).collect();
        self.page_of(&listed, &stamp(&versions, &chain.digest), params)
    }

    /// The resolve stage: each connector's cached list. On `/mcp` a connector that
    /// cannot be listed is left out (logged); on `/mcp/<id>` it is the answer.
    async fn resolve_lists(
        &self,
        session: &AgentSession,
        connectors: &[Arc<Connector>],
    ) -> Stage<Vec<(Arc<Connector>, Arc<ToolSet>)>> {
        let sets = join_all(connectors.iter().map(|c| self.catalog.tools(&c.id))).await;
        let mut out = Vec::with_capacity(sets.len());
        for (connector, set) in connectors.iter().zip(sets) {
            match set {
                Ok(set) => out.push((connector.clone(), set)),
                Err(e) if session.endpoint == Endpoint::All => {
                    tracing::warn!(connector = %connector.id, error = %e, "connector left out of tools/list");
                }
                Err(e) => {
                    let error = RpcError::new(
                        jsonrpc::INTERNAL_ERROR,
                        format!("Upstream unavailable: {e}"),
                    );
                    return Err(Refusal::new(error, e.audit_status()));
                }
            }
        }
        Ok(out)
    }

    /// The page the agent's cursor asks for, as the result's JSON text.
    fn page_of(&self, listed: &[Listed], stamp: &str, params: &Params) -> Stage<String> {
        // Each visible tool's JSON text, in connector order.
        let mut tools: Vec<&str> = Vec::new();
        for l in listed {
            let texts = match &l.prefix {
                Some(p) => l.set.prefixed_json(p),
                None => l.set.plain_json(),
            };
            let shown = texts.iter().zip(&l.visible).filter(|(_, v)| **v);
            tools.extend(shown.map(|(t, _)| &**t));
        }
        let offset = offset(params, stamp, tools.len())?;
        let end = (offset + self.config.server.list_page_size).min(tools.len());
        let cursor = (end < tools.len()).then(|| encode_cursor(end, stamp));
        Ok(page(&tools[offset..end], cursor.as_deref()))
    }
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
                    "Invalid cursor (the tool list changed; list again from the start)",
                ),
                400,
            )),
        },
    }
}

/// The result `{"tools":[...],"nextCursor"?}`, written from the tools' JSON texts
/// without building a `Value` tree.
fn page(tools: &[&str], cursor: Option<&str>) -> String {
    let len: usize = tools.iter().map(|t| t.len() + 1).sum();
    let mut out = String::with_capacity(len + 64);
    out.push_str(r#"{"tools":["#);
    for (i, t) in tools.iter().enumerate() {
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

/// Identifies the exact list a cursor points into.
fn stamp(versions: &[u64], chain_digest: &str) -> String {
    let text = format!("{versions:?}{chain_digest}");
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
        let text = page(&tools, Some("abc"));
        assert_eq!(
            text,
            r#"{"tools":[{"name":"a.x","z":1,"inputSchema":{"type":"object"}},{"name":"a.y"}],"nextCursor":"abc"}"#
        );
        let v: Value = serde_json::from_str(&page(&[], None)).unwrap();
        assert_eq!(v, json!({"tools": []}));
    }

    #[test]
    fn cursors_round_trip_and_expire() {
        let s = stamp(&[1, 2], "abc");
        let c = Value::String(encode_cursor(500, &s));
        assert_eq!(decode_cursor(&c, &s), Some(500));
        assert_eq!(decode_cursor(&c, &stamp(&[1, 3], "abc")), None);
        assert_eq!(decode_cursor(&Value::String("garbage".into()), &s), None);
        assert_eq!(decode_cursor(&json!(5), &s), None);
    }
}
