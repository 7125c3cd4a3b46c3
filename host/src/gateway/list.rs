//! `tools/list`: the catalogs of the endpoint's connectors, filtered by the policy
//! chain (one batched evaluation per connector and policy), renamed with the slug
//! prefix on `/mcp`, and paginated towards the agent with an opaque cursor.
//!
//! On `/mcp` a connector that cannot be reached is left out of the list (and logged)
//! so one broken upstream does not hide all the others; on `/mcp/<id>` it is an error.

use std::sync::Arc;
use std::time::Instant;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures_util::future::join_all;
use serde_json::Value;

use super::sessions::{AgentSession, Endpoint};
use super::{Gateway, Reply, decide, names};
use crate::audit::now_ms;
use crate::mcp::jsonrpc::{self, RpcError};
use crate::mcp::params::Params;

impl Gateway {
    pub(super) async fn tools_list(
        self: &Arc<Self>,
        session: &Arc<AgentSession>,
        id: &Value,
        params: &Params,
    ) -> Reply {
        let started = Instant::now();
        let time_ms = now_ms();
        let mut record = self.record(session, "tools/list", started, time_ms);
        let connectors = self.endpoint_connectors(&session.endpoint);
        if let Endpoint::One(c) = &session.endpoint {
            record.connector = Some(c.clone());
        }
        let sets = join_all(connectors.iter().map(|c| self.catalog.tools(&c.id))).await;
        let chain = self.policy.current();
        let sep = &self.config.server.tool_separator;
        let mut held = Vec::with_capacity(sets.len());
        let mut versions = Vec::with_capacity(sets.len());
        for (connector, set) in connectors.iter().zip(sets) {
            let set = match set {
                Ok(set) => set,
                Err(e) if session.endpoint == Endpoint::All => {
                    tracing::warn!(connector = %connector.id, error = %e, "connector left out of tools/list");
                    continue;
                }
                Err(e) => {
                    let err = RpcError::new(
                        jsonrpc::INTERNAL_ERROR,
                        format!("Upstream unavailable: {e}"),
                    );
                    record.status = e.audit_status();
                    record.rpc_code = Some(err.code);
                    record.latency_ms = started.elapsed().as_secs_f64() * 1000.0;
                    self.audit.record(record).await;
                    return Reply::Json(jsonrpc::error(Some(id), &err));
                }
            };
            versions.push(set.version);
            let owned = self.owned(&session.identity, connector, &set);
            let visible = decide::filter_tools(&chain, owned).await;
            let prefix = match session.endpoint {
                Endpoint::All => Some(names::prefixed(&connector.slug, sep, "")),
                Endpoint::One(_) => None,
            };
            held.push((set, visible, prefix));
        }
        // Each visible tool's JSON text, in connector order.
        let mut tools: Vec<&str> = Vec::new();
        for (set, visible, prefix) in &held {
            let texts = match prefix {
                Some(p) => set.prefixed_json(p),
                None => set.plain_json(),
            };
            let shown = texts.iter().zip(visible).filter(|(_, v)| **v);
            tools.extend(shown.map(|(t, _)| &**t));
        }
        record.policy = Some(chain.names.clone());
        record.policy_digest = Some(chain.digest.clone());

        let stamp = stamp(&versions, &chain.digest);
        // Absent or null: the first page. Present but unreadable (a number out of
        // range, say) is an invalid cursor like any other.
        let cursor = params.members().and_then(|m| {
            let raw = m.get("cursor")?;
            Some(serde_json::from_str::<Value>(raw.get()).ok())
        });
        let offset = match cursor {
            None | Some(Some(Value::Null)) => 0,
            Some(c) => match c.and_then(|c| decode_cursor(&c, &stamp)) {
                Some(o) if o <= tools.len() => o,
                _ => {
                    let err = RpcError::new(
                        jsonrpc::INVALID_PARAMS,
                        "Invalid cursor (the tool list changed; list again from the start)",
                    );
                    record.status = 400;
                    record.rpc_code = Some(err.code);
                    self.audit.record(record).await;
                    return Reply::Json(jsonrpc::error(Some(id), &err));
                }
            },
        };
        let page_size = self.config.server.list_page_size;
        let end = (offset + page_size).min(tools.len());
        let cursor = (end < tools.len()).then(|| encode_cursor(end, &stamp));
        let text = page(id, &tools[offset..end], cursor.as_deref());
        record.latency_ms = started.elapsed().as_secs_f64() * 1000.0;
        self.audit.record(record).await;
        Reply::Json(text)
    }
}

/// The response `{"jsonrpc","id","result":{"tools":[...],"nextCursor"?}}`, written
/// from the tools' JSON texts without building a `Value` tree.
fn page(id: &Value, tools: &[&str], cursor: Option<&str>) -> String {
    let id = id.to_string();
    let len: usize = tools.iter().map(|t| t.len() + 1).sum();
    let mut out = String::with_capacity(len + id.len() + 96);
    out.push_str(r#"{"jsonrpc":"2.0","id":"#);
    out.push_str(&id);
    out.push_str(r#","result":{"tools":["#);
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
    out.push_str("}}");
    out
}

/// Identifies the exact list a cursor points into.
fn stamp(versions: &[u64], chain_digest: &str) -> String {
    let text = format!("{versions:?}{chain_digest}");
    hex::encode(&crate::auth::sha256(text.as_bytes())[..8])
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
        let text = page(&json!(7), &tools, Some("abc"));
        assert_eq!(
            text,
            r#"{"jsonrpc":"2.0","id":7,"result":{"tools":[{"name":"a.x","z":1,"inputSchema":{"type":"object"}},{"name":"a.y"}],"nextCursor":"abc"}}"#
        );
        let v: Value = serde_json::from_str(&page(&json!("r1"), &[], None)).unwrap();
        assert_eq!(
            v,
            json!({"jsonrpc": "2.0", "id": "r1", "result": {"tools": []}})
        );
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
