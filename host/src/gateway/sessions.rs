//! Agent sessions: created at `initialize`, identified by a random `MCP-Session-Id`,
//! bound to the agent that created them and to the endpoint they were opened on.
//! Each session lazily opens one upstream session per connector it uses, and closes
//! them when it ends (DELETE, idle expiry or shutdown).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use rand::RngCore;
use tokio::sync::oneshot;

use serde_json::Value;

use crate::auth::Identity;
use crate::config::Connector;
use crate::gateway::rules::same_upstream;
use crate::mcp::jsonrpc::Answer;
use crate::upstream::UpstreamSession;

/// The longest an upstream session's DELETE may take when an agent session ends.
pub(crate) const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Server-to-client requests that may wait for one session's agent at once; an
/// upstream sending more is refused (each waiting one holds a task and an entry).
pub(crate) const MAX_RELAYED: usize = 16;

/// Which endpoint a session was opened on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Endpoint {
    /// `/mcp`: every connector, names prefixed with the slug.
    All,
    /// `/mcp/<connector-id>`: one connector, upstream names.
    One(String),
}

/// A request of this session still waiting for its upstream.
pub(crate) struct InFlight {
    /// Fired when the agent cancels; the forwarding task then tells the upstream.
    pub cancel: oneshot::Sender<()>,
}

pub(crate) struct AgentSession {
    pub id: String,
    /// The agent's id; a session never changes hands.
    pub agent: String,
    /// The agent as currently configured: a reload that changes its org, scopes or
    /// declaration swaps it (`gateway::rules`), and the session's next request reads it.
    identity: arc_swap::ArcSwap<Identity>,
    pub endpoint: Endpoint,
    pub protocol_version: String,
    /// What the session keeps of the `capabilities` its agent declared at
    /// `initialize` (`relay::kept`: the relayable ones, a few KB at most).
    pub client_capabilities: Value,
    created: Instant,
    last_seen_ms: AtomicU64,
    /// By connector id, with the connector as it was when the upstream session opened.
    upstreams: Mutex<HashMap<String, Opened>>,
    /// Keyed by the JSON text of the agent's request id.
    inflight: Mutex<HashMap<String, InFlight>>,
    /// Becomes `true` when the session ends (GET streams stop then).
    ended: tokio::sync::watch::Sender<bool>,
    /// SSE streams opened so far (their number prefixes their event ids).
    streams: AtomicU64,
    /// Server-to-client requests relayed to the agent and not yet answered, keyed by
    /// the JSON text of the id the gateway gave them (`gateway/relay.rs`).
    relayed: Mutex<HashMap<String, oneshot::Sender<Answer>>>,
    /// Requests relayed so far (numbers their ids).
    relays: AtomicU64,
    /// Subscriptions, log level and the listeners of upstream notices
    /// (`gateway/notices.rs`).
    pub(crate) notices: super::notices::Notices,
}

impl AgentSession {
    /// The agent as currently configured (load once per decision).
    pub(crate) fn identity(&self) -> Arc<Identity> {
        self.identity.load_full()
    }

    /// Takes the agent's identity from a newer load of the config (an older one is
    /// ignored, so a request authenticated before a reload cannot undo it); whether
    /// what policies read of the agent changed.
    pub(crate) fn set_identity(&self, identity: &Arc<Identity>) -> bool {
        let before = self.identity.rcu(|current| {
            if identity.revision > current.revision {
                identity.clone()
            } else {
                current.clone()
            }
        });
        identity.revision > before.revision && before.stamp != identity.stamp
    }

    /// A number for a new SSE stream of this session, so that event ids
    /// (`<stream>-<n>`) are unique across all its streams, as Streamable HTTP requires.
    pub(crate) fn next_stream(&self) -> u64 {
        self.streams.fetch_add(1, Ordering::Relaxed)
    }

    /// An id for a server-to-client request relayed to the agent, and where the
    /// agent's answer to it will arrive. Ids are strings (`portcullis-relay-<n>`), so
    /// they never look like the upstream's own.
    /// `None` when [`MAX_RELAYED`] of them already wait for the agent.
    pub(crate) fn relay_request(&self) -> Option<(Value, oneshot::Receiver<Answer>)> {
        let mut relayed = self.relayed.lock().expect("relayed lock");
        if relayed.len() >= MAX_RELAYED {
            return None;
        }
        let n = self.relays.fetch_add(1, Ordering::Relaxed);
        let id = Value::String(format!("portcullis-relay-{n}"));
        let (tx, rx) = oneshot::channel();
        relayed.insert(id.to_string(), tx);
        Some((id, rx))
    }

    /// Delivers the agent's answer to relayed request `id`; `false` when no relayed
    /// request of this session has that id (unknown, already answered, or given up).
    pub(crate) fn answer_relayed(&self, id: &Value, answer: Answer) -> bool {
        let waiting = self
            .relayed
            .lock()
            .expect("relayed lock")
            .remove(&id.to_string());
        waiting.is_some_and(|tx| tx.send(answer).is_ok())
    }

    /// Stops waiting for the answer to relayed request `id`.
    pub(crate) fn forget_relayed(&self, id: &Value) {
        self.relayed
            .lock()
            .expect("relayed lock")
            .remove(&id.to_string());
    }

    pub(crate) fn touch(&self) {
        self.last_seen_ms
            .store(self.created.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_seen_ms.load(Ordering::Relaxed));
        self.created.elapsed().saturating_sub(last)
    }

    /// The upstream session for a connector, created by `make` on first use or when
    /// the one open was made for another upstream of the connector (a reload changed
    /// its `target_url` or credential; the old one is closed in the background);
    /// `None` once this session has ended. `close` marks the end before it takes the
    /// map, so an upstream session made here is either in the map it closes or never
    /// made: a call racing the agent's DELETE cannot leave one open upstream.
    pub(crate) fn upstream(
        &self,
        connector: &Arc<Connector>,
        make: impl FnOnce() -> Arc<UpstreamSession>,
    ) -> Option<Arc<UpstreamSession>> {
        let mut map = self.upstreams.lock().expect("upstreams lock");
        if self.has_ended() {
            return None;
        }
        if let Some((made_for, open)) = map.get(&connector.id) {
            if same_upstream(made_for, connector) {
                return Some(open.clone());
            }
            close_in_background(open.clone());
        }
        let made = make();
        map.insert(connector.id.clone(), (connector.clone(), made.clone()));
        Some(made)
    }

    /// Whether `upstream` is still this session's upstream session of `connector`
    /// (and the session has not ended): a listener on it may carry on.
    pub(crate) fn listens_on(&self, connector: &str, upstream: &Arc<UpstreamSession>) -> bool {
        let map = self.upstreams.lock().expect("upstreams lock");
        !self.has_ended()
            && map
                .get(connector)
                .is_some_and(|(_, open)| Arc::ptr_eq(open, upstream))
    }

    /// Closes this session's upstream session of a connector, if one is open (the
    /// connector was removed or re-targeted); the next call opens a new one.
    pub(crate) async fn drop_upstream(&self, connector: &str) {
        let open = self
            .upstreams
            .lock()
            .expect("upstreams lock")
            .remove(connector);
        if let Some((_, s)) = open {
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, s.close()).await;
        }
    }

    pub(crate) fn start_request(&self, agent_id: &serde_json::Value, flight: InFlight) {
        self.inflight
            .lock()
            .expect("inflight lock")
            .insert(agent_id.to_string(), flight);
    }

    pub(crate) fn finish_request(&self, agent_id: &serde_json::Value) {
        self.inflight
            .lock()
            .expect("inflight lock")
            .remove(&agent_id.to_string());
    }

    /// Takes an in-flight request out for cancellation.
    pub(crate) fn take_request(&self, agent_id: &serde_json::Value) -> Option<InFlight> {
        self.inflight
            .lock()
            .expect("inflight lock")
            .remove(&agent_id.to_string())
    }

    /// Whether the session has ended (DELETE, expiry or shutdown).
    pub(crate) fn has_ended(&self) -> bool {
        *self.ended.borrow()
    }

    /// Resolves when the session has ended.
    pub(crate) fn ended(&self) -> tokio::sync::watch::Receiver<bool> {
        self.ended.subscribe()
    }

    /// Closes every upstream session this session opened.
    pub(crate) async fn close(&self) {
        self.ended.send_replace(true);
        self.relayed.lock().expect("relayed lock").clear();
        self.notices.stop();
        let upstreams: Vec<_> = self
            .upstreams
            .lock()
            .expect("upstreams lock")
            .drain()
            .map(|(_, (_, s))| s)
            .collect();
        // Each upstream gets its DELETE at once and at most CLOSE_TIMEOUT: an upstream
        // that never answers must not hold up the others, expiry or shutdown.
        futures_util::future::join_all(
            upstreams
                .iter()
                .map(|s| tokio::time::timeout(CLOSE_TIMEOUT, s.close())),
        )
        .await;
    }
}

/// An upstream session and the connector as it was when it opened.
type Opened = (Arc<Connector>, Arc<UpstreamSession>);

/// Ends an upstream session without waiting for it (bounded by [`CLOSE_TIMEOUT`]).
fn close_in_background(session: Arc<UpstreamSession>) {
    tokio::spawn(async move {
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, session.close()).await;
    });
}

/// Why a session could not be created.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum TooManySessions {
    /// `server.max_sessions` sessions are open, all agents together.
    Gateway,
    /// The agent has `server.max_sessions_per_agent` sessions open.
    Agent { limit: usize },
}

/// The open sessions, and how many of them each agent holds.
#[derive(Default)]
struct Open {
    sessions: HashMap<String, Arc<AgentSession>>,
    per_agent: HashMap<String, usize>,
}

impl Open {
    fn remove(&mut self, id: &str) -> Option<Arc<AgentSession>> {
        let s = self.sessions.remove(id)?;
        if let Some(n) = self.per_agent.get_mut(&s.agent) {
            *n -= 1;
            if *n == 0 {
                self.per_agent.remove(&s.agent);
            }
        }
        Some(s)
    }
}

pub(crate) struct SessionStore {
    open: RwLock<Open>,
    idle: Duration,
    max: usize,
    max_per_agent: usize,
}

impl SessionStore {
    pub(crate) fn new(idle: Duration, max: usize, max_per_agent: usize) -> Self {
        SessionStore {
            open: RwLock::new(Open::default()),
            idle,
            max,
            max_per_agent,
        }
    }

    pub(crate) fn create(
        &self,
        identity: Arc<Identity>,
        endpoint: Endpoint,
        protocol_version: String,
        client_capabilities: Value,
    ) -> Result<Arc<AgentSession>, TooManySessions> {
        let mut raw = [0u8; 24];
        rand::rng().fill_bytes(&mut raw);
        let session = Arc::new(AgentSession {
            id: hex::encode(raw),
            agent: identity.agent.clone(),
            identity: arc_swap::ArcSwap::new(identity),
            endpoint,
            protocol_version,
            client_capabilities,
            created: Instant::now(),
            last_seen_ms: AtomicU64::new(0),
            upstreams: Mutex::new(HashMap::new()),
            inflight: Mutex::new(HashMap::new()),
            ended: tokio::sync::watch::channel(false).0,
            streams: AtomicU64::new(0),
            relayed: Mutex::new(HashMap::new()),
            relays: AtomicU64::new(0),
            notices: Default::default(),
        });
        let mut open = self.open.write().expect("sessions lock");
        // An agent at its own limit is told so, even when the gateway is full too.
        let held = open.per_agent.get(&session.agent).copied();
        if held.unwrap_or(0) >= self.max_per_agent {
            return Err(TooManySessions::Agent {
                limit: self.max_per_agent,
            });
        }
        if open.sessions.len() >= self.max {
            return Err(TooManySessions::Gateway);
        }
        *open.per_agent.entry(session.agent.clone()).or_insert(0) += 1;
        open.sessions.insert(session.id.clone(), session.clone());
        Ok(session)
    }

    /// The session `id` if it exists and belongs to this agent on this endpoint.
    /// Someone else's session is reported as unknown, never as forbidden. The
    /// session takes `identity`, the agent as the request was authenticated: a
    /// session opened while a reload swapped the agent's rules gets them here.
    pub(crate) fn get(
        &self,
        id: &str,
        identity: &Arc<Identity>,
        endpoint: &Endpoint,
    ) -> Option<Arc<AgentSession>> {
        let open = self.open.read().expect("sessions lock");
        let s = open.sessions.get(id)?;
        (s.agent == identity.agent && &s.endpoint == endpoint).then(|| {
            s.touch();
            if s.identity.load().revision < identity.revision {
                s.set_identity(identity);
            }
            s.clone()
        })
    }

    pub(crate) fn remove(&self, id: &str) -> Option<Arc<AgentSession>> {
        self.open.write().expect("sessions lock").remove(id)
    }

    /// Every open session.
    pub(crate) fn all(&self) -> Vec<Arc<AgentSession>> {
        let open = self.open.read().expect("sessions lock");
        open.sessions.values().cloned().collect()
    }

    /// Removes every session of the agents `gone` names and returns them for closing.
    pub(crate) fn remove_agents(&self, gone: impl Fn(&str) -> bool) -> Vec<Arc<AgentSession>> {
        let mut open = self.open.write().expect("sessions lock");
        let ids: Vec<String> = open
            .sessions
            .iter()
            .filter(|(_, s)| gone(&s.agent))
            .map(|(k, _)| k.clone())
            .collect();
        ids.iter().filter_map(|k| open.remove(k)).collect()
    }

    pub(crate) fn len(&self) -> usize {
        self.open.read().expect("sessions lock").sessions.len()
    }

    /// Removes sessions idle longer than the limit and returns them for closing.
    pub(crate) fn expire(&self) -> Vec<Arc<AgentSession>> {
        let mut open = self.open.write().expect("sessions lock");
        let expired: Vec<String> = open
            .sessions
            .iter()
            .filter(|(_, s)| s.idle_for() > self.idle)
            .map(|(k, _)| k.clone())
            .collect();
        expired.iter().filter_map(|k| open.remove(k)).collect()
    }

    pub(crate) fn drain(&self) -> Vec<Arc<AgentSession>> {
        let mut open = self.open.write().expect("sessions lock");
        open.per_agent.clear();
        open.sessions.drain().map(|(_, s)| s).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ident(agent: &str) -> Arc<Identity> {
        Arc::new(Identity::new(agent, "o", vec![], None))
    }

    fn test_connector() -> Connector {
        Connector {
            id: "c".into(),
            slug: "c".into(),
            target_url: "http://127.0.0.1:9/mcp".into(),
            transport: Default::default(),
            credential: None,
            disabled_tools: vec![],
            disabled_prompts: vec![],
            disabled_resources: vec![],
            timeout: Duration::from_secs(1),
            relay: Default::default(),
            pinning: Default::default(),
            max_result_bytes: 1 << 20,
        }
    }

    #[test]
    fn a_session_takes_only_newer_identities() {
        let store = SessionStore::new(Duration::from_secs(60), 10, 10);
        let s = store
            .create(ident("a"), Endpoint::All, "v".into(), Value::Null)
            .unwrap();
        let at = |revision, scopes: &[&str]| {
            let scopes = scopes.iter().map(|x| x.to_string()).collect();
            Arc::new(Identity {
                revision,
                ..Identity::new("a", "o", scopes, None)
            })
        };
        assert!(
            s.set_identity(&at(2, &["mcp:call"])),
            "newer, changed rules"
        );
        assert!(!s.set_identity(&at(3, &["mcp:call"])), "newer, same rules");
        assert!(!s.set_identity(&at(1, &[])), "older: ignored");
        assert_eq!(s.identity().revision, 3);
        assert_eq!(s.identity().scopes, ["mcp:call"]);
        // A request authenticated before the reload cannot undo it through `get`.
        assert!(store.get(&s.id, &at(2, &[]), &Endpoint::All).is_some());
        assert_eq!(s.identity().revision, 3);
    }

    #[tokio::test]
    async fn a_retargeted_connector_gets_a_new_upstream_session() {
        let store = SessionStore::new(Duration::from_secs(60), 10, 10);
        let s = store
            .create(ident("a"), Endpoint::All, "v".into(), Value::Null)
            .unwrap();
        let client = crate::http_client::new_client();
        let make = |url: &str| {
            let (client, uri) = (client.clone(), url.parse().unwrap());
            move || {
                Arc::new(UpstreamSession::Http(crate::upstream::HttpSession::new(
                    client,
                    uri,
                    crate::upstream::CredentialProvider::None,
                )))
            }
        };
        let before = Arc::new(test_connector());
        let first = s.upstream(&before, make(&before.target_url)).unwrap();
        let again = s.upstream(&before, make(&before.target_url)).unwrap();
        assert!(
            Arc::ptr_eq(&first, &again),
            "reused while the upstream is the same"
        );
        let moved = Arc::new(Connector {
            target_url: "http://127.0.0.1:10/mcp".into(),
            ..test_connector()
        });
        let second = s.upstream(&moved, make(&moved.target_url)).unwrap();
        assert!(
            !Arc::ptr_eq(&first, &second),
            "a new upstream, a new session"
        );
    }

    #[test]
    fn relayed_requests_are_answered_once_and_bounded() {
        let store = SessionStore::new(Duration::from_secs(60), 10, 10);
        let s = store
            .create(ident("a"), Endpoint::All, "v".into(), Value::Null)
            .unwrap();
        let (id, mut rx) = s.relay_request().unwrap();
        assert_eq!(id, Value::String("portcullis-relay-0".into()));
        let answer =
            || Answer::Result(serde_json::value::RawValue::from_string("{}".into()).unwrap());
        assert!(!s.answer_relayed(&Value::from(0), answer()), "unknown id");
        assert!(s.answer_relayed(&id, answer()));
        assert!(matches!(rx.try_recv(), Ok(Answer::Result(_))));
        assert!(!s.answer_relayed(&id, answer()), "answered once");
        let waiting: Vec<_> = (0..MAX_RELAYED)
            .map(|_| s.relay_request().unwrap())
            .collect();
        assert!(s.relay_request().is_none(), "bounded");
        s.forget_relayed(&waiting[0].0);
        assert!(s.relay_request().is_some());
    }

    #[test]
    fn sessions_are_bound_to_agent_and_endpoint() {
        let store = SessionStore::new(Duration::from_secs(60), 10, 10);
        let s = store
            .create(ident("a"), Endpoint::All, "2025-11-25".into(), Value::Null)
            .unwrap();
        assert!(s.id.len() == 48 && s.id.bytes().all(|b| (0x21..=0x7e).contains(&b)));
        assert!(store.get(&s.id, &ident("a"), &Endpoint::All).is_some());
        assert!(store.get(&s.id, &ident("b"), &Endpoint::All).is_none());
        assert!(
            store
                .get(&s.id, &ident("a"), &Endpoint::One("c".into()))
                .is_none()
        );
        assert!(store.remove(&s.id).is_some());
        assert!(store.get(&s.id, &ident("a"), &Endpoint::All).is_none());
    }

    #[tokio::test]
    async fn an_ended_session_opens_no_upstream_session() {
        let store = SessionStore::new(Duration::from_secs(60), 10, 10);
        let s = store
            .create(ident("a"), Endpoint::All, "v".into(), Value::Null)
            .unwrap();
        let client = crate::http_client::new_client();
        let connector = Arc::new(test_connector());
        let make = || {
            let uri = "http://127.0.0.1:9/mcp".parse().unwrap();
            Arc::new(UpstreamSession::Http(crate::upstream::HttpSession::new(
                client.clone(),
                uri,
                crate::upstream::CredentialProvider::None,
            )))
        };
        assert!(s.upstream(&connector, make).is_some());
        s.close().await;
        assert!(s.upstream(&connector, make).is_none());
        assert!(s.upstreams.lock().unwrap().is_empty());
    }

    #[test]
    fn capacity_is_enforced() {
        let store = SessionStore::new(Duration::from_secs(60), 1, 1);
        store
            .create(ident("a"), Endpoint::All, "v".into(), Value::Null)
            .unwrap();
        assert_eq!(
            store
                .create(ident("b"), Endpoint::All, "v".into(), Value::Null)
                .err(),
            Some(TooManySessions::Gateway)
        );
    }

    #[test]
    fn one_agent_cannot_hold_every_session() {
        let store = SessionStore::new(Duration::from_secs(60), 10, 2);
        let a1 = store
            .create(ident("a"), Endpoint::All, "v".into(), Value::Null)
            .unwrap();
        store
            .create(
                ident("a"),
                Endpoint::One("c".into()),
                "v".into(),
                Value::Null,
            )
            .unwrap();
        assert_eq!(
            store
                .create(ident("a"), Endpoint::All, "v".into(), Value::Null)
                .err(),
            Some(TooManySessions::Agent { limit: 2 })
        );
        // Others are not affected, and an ended session frees its place.
        store
            .create(ident("b"), Endpoint::All, "v".into(), Value::Null)
            .unwrap();
        store.remove(&a1.id).unwrap();
        store
            .create(ident("a"), Endpoint::All, "v".into(), Value::Null)
            .unwrap();
        assert_eq!(store.len(), 3);
        assert_eq!(store.drain().len(), 3);
        for _ in 0..2 {
            store
                .create(ident("a"), Endpoint::All, "v".into(), Value::Null)
                .unwrap();
        }
    }
}
