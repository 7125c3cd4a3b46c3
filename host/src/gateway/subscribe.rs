//! `resources/subscribe`, `resources/unsubscribe` and `logging/setLevel`: what an
//! agent asks to be told, forwarded to its upstream sessions with a listener for
//! the answers in place first (`notices.rs`).
//!
//! - subscribe: routed like `resources/read`, checked by `check-resource`
//!   (`subscribe`), the listener started, the subscription recorded, then forwarded;
//!   -32601 where the upstream does not offer `resources.subscribe`.
//! - unsubscribe: routed, forwarded, forgotten; never checked (it only ends
//!   something).
//! - setLevel: on `/mcp` sent to every connector of the endpoint that offers
//!   `logging` and that the agent may use (`Gateway::usable_by`: the chain leaves it
//!   at least one tool, prompt or resource; one that fails is logged and left out),
//!   on `/mcp/<id>` to that connector (its failure is the answer); the level also
//!   filters what reaches the agent. -32601 when no such connector offers `logging`.
//!
//! None of them counts against the quota; each is audited. On a process shared by
//! every agent session (`share_process`) they are refused: what it sends outside a
//! request cannot be told apart by agent.

use std::sync::Arc;

use serde_json::{Value, json};

use super::decide::{self, Ask};
use super::items::{Named, Resolved, invalid, method_not_found, replace_key, string};
use super::limits::Permit;
use super::pipeline::{End, Governed, Refusal, Stage};
use super::sessions::{AgentSession, Endpoint};
use super::{Gateway, Reply};
use crate::config::Connector;
use crate::mcp::jsonrpc::{self, RpcError};
use crate::mcp::params::{self, Params};
use crate::upstream::{Outcome, UpstreamSession};

impl Gateway {
    /// `resources/subscribe` (`subscribe`) or `resources/unsubscribe`.
    pub(super) async fn resource_subscription(
        self: &Arc<Self>,
        session: &Arc<AgentSession>,
        id: Value,
        params: Params,
        subscribe: bool,
        permit: Option<Permit>,
    ) -> Reply {
        let method = if subscribe {
            "resources/subscribe"
        } else {
            "resources/unsubscribe"
        };
        let governed = Governed::start(session, method, id.clone());
        let (gateway, session) = (self.clone(), session.clone());
        self.detached(id, permit, async move {
            let mut governed = governed;
            let subscription = gateway
                .subscription(&mut governed, &session, &params, method, subscribe)
                .await;
            let end = match subscription {
                Ok(resolved) => {
                    gateway
                        .forward_item(&mut governed, &session, resolved)
                        .await
                }
                Err(refusal) => End::Refused(refusal),
            };
            (governed, end)
        })
        .await
    }

    /// Resolve, decide, listen and record; what is left is to forward. Scope
    /// before existence: a subscription is judged before the capability is asked.
    async fn subscription(
        self: &Arc<Self>,
        governed: &mut Governed,
        session: &Arc<AgentSession>,
        params: &Params,
        method: &'static str,
        subscribe: bool,
    ) -> Stage<Resolved> {
        let Some(mut members) = params.members() else {
            return Err(invalid("params must be an object"));
        };
        let named = Named::Resource(string(&members, "uri")?);
        let (connector, uri) = self.route_item(governed, session, &named)?;
        if subscribe {
            let chain = self.policy.current();
            let item = self.resource_item(&chain, &connector, &uri).await?;
            let owned = self.owned_for_items(session, &connector).await;
            let ask = Ask::SubscribeResource(item);
            governed.decide(decide::check_item(&chain, owned, ask).await)?;
        }
        let offers = self
            .catalog
            .offers_feature(&connector.id, "/resources/subscribe")
            .await
            .map_err(super::list::list_unavailable)?;
        if !offers {
            return Err(method_not_found(
                method,
                &connector.id,
                "resources.subscribe",
            ));
        }
        let upstream = self.shared_refused(session, &connector, method)?;
        if subscribe {
            self.listen_for(session, &connector, &upstream)
                .await
                .map_err(super::list::list_unavailable)?;
            session.notices.subscribe(&connector.id, &uri);
        } else {
            session.notices.unsubscribe(&connector.id, &uri);
        }
        replace_key(&mut members, method, &named, &uri);
        Ok(Resolved {
            connector,
            method,
            members,
            item: uri,
            hooked: None,
            empty: false,
        })
    }

    /// The session's upstream session of `connector`, unless it is shared by every
    /// agent session.
    fn shared_refused(
        &self,
        session: &AgentSession,
        connector: &Connector,
        method: &str,
    ) -> Stage<Arc<UpstreamSession>> {
        let upstream = self.upstream(session, connector)?;
        if upstream.is_shared() {
            let error = RpcError::new(
                jsonrpc::INVALID_REQUEST,
                format!(
                    "{method} is not available on a connector whose process is shared (share_process)"
                ),
            );
            return Err(Refusal::new(error, 400)
                .because(format!("connector {} shares its process", connector.id)));
        }
        Ok(upstream)
    }

    /// `logging/setLevel`.
    pub(super) async fn set_level(
        self: &Arc<Self>,
        session: &Arc<AgentSession>,
        id: Value,
        params: Params,
        permit: Option<Permit>,
    ) -> Reply {
        let governed = Governed::start(session, "logging/setLevel", id.clone());
        let (gateway, session) = (self.clone(), session.clone());
        self.detached(id, permit, async move {
            let mut governed = governed;
            let end = gateway
                .set_level_stage(&mut governed, &session, &params)
                .await;
            (governed, end)
        })
        .await
    }

    async fn set_level_stage(
        self: &Arc<Self>,
        governed: &mut Governed,
        session: &Arc<AgentSession>,
        params: &Params,
    ) -> End {
        let level = match params
            .members()
            .and_then(|m| params::member::<String>(&m, "level"))
        {
            Some(l) if super::notices::severity(&l).is_some() => l,
            _ => return End::Refused(invalid("\"level\" must be an MCP logging level")),
        };
        let connectors = match self.level_targets(session).await {
            Ok(c) => c,
            Err(refusal) => return End::Refused(refusal),
        };
        if let Endpoint::One(c) = &session.endpoint {
            governed.audited.connector(c);
        }
        session.notices.set_level(&level);
        let sets = connectors
            .iter()
            .map(|c| self.set_level_on(session, c, &level));
        let outcomes = futures_util::future::join_all(sets).await;
        match (&session.endpoint, outcomes.into_iter().next()) {
            (Endpoint::One(_), Some(Err(end))) => end,
            _ => End::Result("{}".into()),
        }
    }

    /// The endpoint's connectors that offer `logging` and that the agent may use
    /// (`Gateway::usable_by`); none is -32601.
    async fn level_targets(&self, session: &AgentSession) -> Stage<Vec<Arc<Connector>>> {
        let connectors = self
            .offering(session, "logging", "logging/setLevel")
            .await?;
        let targets = self.usable_of(&session.identity(), connectors).await;
        if targets.is_empty() {
            let error = RpcError::new(
                jsonrpc::METHOD_NOT_FOUND,
                "Method not found: logging/setLevel",
            );
            return Err(
                Refusal::new(error, 404).because("no connector the agent may use offers logging")
            );
        }
        Ok(targets)
    }

    /// Sends the level to one connector with a listener in place; on `/mcp` a
    /// failure is logged and left out.
    async fn set_level_on(
        self: &Arc<Self>,
        session: &Arc<AgentSession>,
        connector: &Arc<Connector>,
        level: &str,
    ) -> Result<(), End> {
        let fail = |refusal: Refusal| {
            tracing::warn!(connector = %connector.id, "logging/setLevel not applied on the connector");
            End::Refused(refusal)
        };
        let upstream = self
            .shared_refused(session, connector, "logging/setLevel")
            .map_err(fail)?;
        self.listen_for(session, connector, &upstream)
            .await
            .map_err(|e| fail(super::list::list_unavailable(e)))?;
        let params = json!({ "level": level });
        let asked = super::notices::ask(&upstream, "logging/setLevel", &params, connector.timeout);
        match asked.await {
            Ok(Outcome::Result(_)) => Ok(()),
            Ok(Outcome::Error(e)) => Err(fail(Refusal::new(
                RpcError::new(
                    e["code"].as_i64().unwrap_or(jsonrpc::INTERNAL_ERROR),
                    e["message"]
                        .as_str()
                        .unwrap_or("Upstream error")
                        .to_string(),
                ),
                502,
            ))),
            Err(e) => Err(fail(super::list::list_unavailable(e))),
        }
    }
}
