//! The tool catalog: each connector's `tools/list`, fetched through all its pages over
//! the gateway's own upstream session and cached until the upstream announces
//! `notifications/tools/list_changed` or an operator asks for a refresh. A reload
//! adds, removes or replaces connectors (`insert`, `remove`): readers see one set
//! or the other, never a mix.
//!
//! Tools are kept as the JSON the upstream sent, so fields the gateway does not know
//! reach agents unchanged.
//!
//! Concurrent requests for a list that is not cached share one fetch. A fetch that
//! fails is remembered for [`FAILURE_TTL`]: requests in that time get its error at once
//! (on `/mcp` the connector is left out of the list) instead of each waiting for an
//! upstream that is down or silent, up to its full `timeout_ms`, in turn. The first
//! request after that tries again; an operator refresh or a `list_changed` forgets the
//! failure at once.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, ArcSwapOption};
use serde_json::{Value, json};
use tokio::sync::{Mutex, broadcast};

use super::pinning::Pinning;
use crate::config::Connector;
use crate::upstream::{Message, Outcome, UpstreamError, UpstreamSession};

/// Upper bound on pages followed for one connector, against a looping cursor.
const MAX_PAGES: usize = 1000;

/// How long a failed fetch of a connector's list is answered from memory.
pub(crate) const FAILURE_TTL: Duration = Duration::from_secs(5);

/// The least time between two re-fetches of a connector's list asked for by calls
/// to tools missing from it ([`Catalog::refetch`]).
pub(crate) const REFETCH_INTERVAL: Duration = Duration::from_secs(1);

/// One connector's cached tool list.
#[derive(Debug)]
pub(crate) struct ToolSet {
    /// Tools as received (each an object with a string `name`).
    pub tools: Vec<Value>,
    index: HashMap<String, usize>,
    /// Increases with every fetch, for cursors and policy caches.
    pub version: u64,
    /// The sha256 of the list as the upstream sent it (before pinning withheld
    /// anything): a re-fetch that finds it unchanged changes nothing.
    fetched: [u8; 32],
    /// Each tool's JSON text as received, and renamed `<slug><sep><name>` for `/mcp`:
    /// serialized once per list version, so `tools/list` only concatenates text.
    plain: OnceLock<Vec<Box<str>>>,
    prefixed: OnceLock<(String, Vec<Box<str>>)>,
}

impl ToolSet {
    fn new(tools: Vec<Value>, version: u64, fetched: [u8; 32]) -> Self {
        let index = tools
            .iter()
            .enumerate()
            .filter_map(|(i, t)| Some((t.get("name")?.as_str()?.to_string(), i)))
            .collect();
        ToolSet {
            tools,
            index,
            version,
            fetched,
            plain: OnceLock::new(),
            prefixed: OnceLock::new(),
        }
    }

    /// Every tool's JSON text, as the upstream sent it (unknown fields kept).
    pub(crate) fn plain_json(&self) -> &[Box<str>] {
        self.plain
            .get_or_init(|| self.tools.iter().map(|t| t.to_string().into()).collect())
    }

    /// Every tool's JSON text with its name prefixed by `prefix` (`<slug><sep>`; the
    /// same for every caller, as a connector's slug and the separator are fixed).
    pub(crate) fn prefixed_json(&self, prefix: &str) -> &[Box<str>] {
        let (made_with, texts) = self.prefixed.get_or_init(|| {
            let texts = self
                .tools
                .iter()
                .map(|t| {
                    let mut renamed = t.clone();
                    renamed["name"] = Value::String(format!("{prefix}{}", ToolSet::name(t)));
                    renamed.to_string().into()
                })
                .collect();
            (prefix.to_string(), texts)
        });
        debug_assert_eq!(made_with, prefix, "one prefix per connector");
        texts
    }

    /// Where the tool called `name` is in `tools` (calls carry this, not a copy).
    pub(crate) fn position(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    pub(crate) fn name(tool: &Value) -> &str {
        tool.get("name").and_then(Value::as_str).unwrap_or_default()
    }
}

struct Entry {
    /// The connector as currently configured (its `timeout_ms` bounds fetches).
    connector: ArcSwap<Connector>,
    session: Arc<UpstreamSession>,
    tools: ArcSwapOption<ToolSet>,
    fetch_lock: Mutex<()>,
    /// When a call last made the list be fetched again ([`Catalog::refetch`]).
    last_refetch: std::sync::Mutex<Option<Instant>>,
    /// The last fetch's error and when it ended, while no list is cached.
    failure: std::sync::Mutex<Option<(Instant, UpstreamError)>>,
    /// The task watching the upstream's `list_changed`, while one runs.
    watcher: std::sync::Mutex<Option<tokio::task::AbortHandle>>,
}

impl Entry {
    fn new(connector: Arc<Connector>, session: Arc<UpstreamSession>) -> Entry {
        Entry {
            connector: ArcSwap::new(connector),
            session,
            tools: ArcSwapOption::empty(),
            fetch_lock: Mutex::new(()),
            last_refetch: std::sync::Mutex::new(None),
            failure: std::sync::Mutex::new(None),
            watcher: std::sync::Mutex::new(None),
        }
    }

    fn id(&self) -> String {
        self.connector.load().id.clone()
    }

    fn timeout(&self) -> Duration {
        self.connector.load().timeout
    }

    /// The last fetch's error, if it ended less than [`FAILURE_TTL`] ago.
    fn recent_failure(&self) -> Option<UpstreamError> {
        let failure = self.failure.lock().expect("catalog failure lock");
        match &*failure {
            Some((at, e)) if at.elapsed() < FAILURE_TTL => Some(e.clone()),
            _ => None,
        }
    }

    fn set_failure(&self, failure: Option<UpstreamError>) {
        *self.failure.lock().expect("catalog failure lock") = failure.map(|e| (Instant::now(), e));
    }

    /// Stops the watcher and ends the gateway's upstream session (in the background,
    /// bounded): the connector was removed or now reaches another upstream.
    fn retire(&self) {
        if let Some(watcher) = self.watcher.lock().expect("watcher lock").take() {
            watcher.abort();
        }
        let session = self.session.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(super::sessions::CLOSE_TIMEOUT, session.close()).await;
        });
    }
}

/// What agents see may have changed; GET streams pass it on as `list_changed` to the
/// sessions it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Changed {
    /// A connector's list or rules (every session of `/mcp` and of its own endpoint).
    Connector(String),
    /// An agent's rules (its sessions).
    Agent(String),
}

/// The catalog of every connector.
pub(crate) struct Catalog {
    /// Swapped whole when a reload adds, removes or re-targets a connector.
    entries: ArcSwap<HashMap<String, Arc<Entry>>>,
    /// Serializes edits of `entries` (reloads); readers never wait for it.
    edit: std::sync::Mutex<()>,
    versions: AtomicU64,
    changed: broadcast::Sender<Changed>,
    /// Whether connectors get a `list_changed` watcher (set by [`Catalog::spawn_watchers`]).
    watching: AtomicBool,
    /// Screens each fetched list (`pinning.rs`).
    pinning: Arc<Pinning>,
}

impl Catalog {
    /// An empty catalog whose lists `pinning` screens; connectors join by `insert`.
    pub(crate) fn new(pinning: Arc<Pinning>) -> Self {
        Catalog {
            entries: ArcSwap::from_pointee(HashMap::new()),
            pinning,
            edit: std::sync::Mutex::new(()),
            versions: AtomicU64::new(0),
            changed: broadcast::channel(64).0,
            watching: AtomicBool::new(false),
        }
    }

    /// What changed, as it changes.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Changed> {
        self.changed.subscribe()
    }

    /// Adds a connector (or replaces one with the same id, whose upstream session and
    /// watcher end) and tells subscribers. Its list is fetched on first use.
    pub(crate) fn insert(
        self: &Arc<Self>,
        connector: Arc<Connector>,
        session: Arc<UpstreamSession>,
    ) {
        let id = connector.id.clone();
        let entry = Arc::new(Entry::new(connector, session));
        let replaced = {
            let _edit = self.edit.lock().expect("catalog edit lock");
            let mut entries = HashMap::clone(&self.entries.load());
            let replaced = entries.insert(id.clone(), entry.clone());
            self.entries.store(Arc::new(entries));
            replaced
        };
        if let Some(old) = replaced {
            old.retire();
        }
        if self.watching.load(Ordering::Acquire) {
            self.start_watcher(&entry);
        }
        self.announce(&id);
    }

    /// Removes a connector: its watcher and upstream session end, its list is gone,
    /// and subscribers are told.
    pub(crate) fn remove(&self, id: &str) {
        let removed = {
            let _edit = self.edit.lock().expect("catalog edit lock");
            let mut entries = HashMap::clone(&self.entries.load());
            let removed = entries.remove(id);
            self.entries.store(Arc::new(entries));
            removed
        };
        if let Some(old) = removed {
            old.retire();
            self.announce(id);
        }
    }

    /// Takes a connector's reloaded rules (its timeout bounds the next fetch).
    pub(crate) fn update(&self, connector: &Arc<Connector>) {
        if let Ok(entry) = self.entry(&connector.id) {
            entry.connector.store(connector.clone());
        }
    }

    /// The cached tools of a connector, fetched first if not cached; a recent failed
    /// fetch's error at once (module doc).
    pub(crate) async fn tools(&self, connector_id: &str) -> Result<Arc<ToolSet>, UpstreamError> {
        let entry = self.entry(connector_id)?;
        if let Some(tools) = entry.tools.load_full() {
            return Ok(tools);
        }
        if let Some(e) = entry.recent_failure() {
            return Err(e);
        }
        // One fetch at a time; who waited for it takes its list or its error.
        let _guard = entry.fetch_lock.lock().await;
        if let Some(tools) = entry.tools.load_full() {
            return Ok(tools);
        }
        if let Some(e) = entry.recent_failure() {
            return Err(e);
        }
        let set = match self.fetch(&entry).await {
            Ok(set) => set,
            Err(e) => {
                entry.set_failure(Some(e.clone()));
                return Err(e);
            }
        };
        entry.set_failure(None);
        entry.tools.store(Some(set.clone()));
        Ok(set)
    }

    /// Fetches a connector's list again because a call named a tool missing from it,
    /// at most once per [`REFETCH_INTERVAL`] (otherwise the cached list is the
    /// answer). A list that comes back unchanged changes nothing: the cached set, its
    /// version (so cursors and cached decisions) stay and nobody is told. A changed
    /// one replaces it and subscribers are told (`list_changed` to agents). A failed
    /// re-fetch keeps the cached list.
    pub(crate) async fn refetch(&self, connector_id: &str) -> Result<Arc<ToolSet>, UpstreamError> {
        let entry = self.entry(connector_id)?;
        let guard = entry.fetch_lock.lock().await;
        let Some(current) = entry.tools.load_full() else {
            drop(guard);
            return self.tools(connector_id).await;
        };
        {
            let mut last = entry.last_refetch.lock().expect("catalog refetch lock");
            if last.is_some_and(|at| at.elapsed() < REFETCH_INTERVAL) {
                return Ok(current);
            }
            *last = Some(Instant::now());
        }
        let set = match self.fetch(&entry).await {
            Ok(set) if set.fetched == current.fetched => return Ok(current),
            Ok(set) => set,
            Err(_) => return Ok(current),
        };
        entry.tools.store(Some(set.clone()));
        self.announce(connector_id);
        tracing::info!(connector = connector_id, "tool list changed upstream");
        Ok(set)
    }

    /// Fetches a connector's whole list (bounded by its timeout) and screens it
    /// (`pinning.rs`): a new tool set with the next version.
    async fn fetch(&self, entry: &Entry) -> Result<Arc<ToolSet>, UpstreamError> {
        let connector = entry.connector.load_full();
        let fetched = tokio::time::timeout(connector.timeout, fetch_all(&entry.session))
            .await
            .unwrap_or(Err(UpstreamError::Timeout));
        let tools = fetched.inspect_err(|e| {
            crate::telemetry::metrics::upstream_error(&connector.id, e.kind());
        })?;
        let text =
            serde_json::to_string(&tools).map_err(|e| UpstreamError::Protocol(e.to_string()))?;
        let digest = crate::digest::sha256(text.as_bytes());
        let served = self.pinning.screen(&connector, tools).await?;
        let version = self.versions.fetch_add(1, Ordering::Relaxed) + 1;
        Ok(Arc::new(ToolSet::new(served, version, digest)))
    }

    /// Tells subscribers that what agents see of a connector may have changed (its
    /// rules were reloaded), without dropping its list.
    pub(crate) fn announce(&self, connector_id: &str) {
        let _ = self
            .changed
            .send(Changed::Connector(connector_id.to_string()));
    }

    /// Tells subscribers that what an agent sees may have changed (its rules were
    /// reloaded).
    pub(crate) fn announce_agent(&self, agent: &str) {
        let _ = self.changed.send(Changed::Agent(agent.to_string()));
    }

    /// Drops a connector's cached list (and a remembered failure) and tells
    /// subscribers.
    pub(crate) fn invalidate(&self, connector_id: &str) {
        if let Ok(entry) = self.entry(connector_id) {
            entry.set_failure(None);
            entry.tools.store(None);
            self.announce(connector_id);
            tracing::info!(connector = connector_id, "tool list invalidated");
        }
    }

    /// Drops every cached list (operator refresh).
    pub(crate) fn invalidate_all(&self) {
        let ids: Vec<String> = self.entries.load().keys().cloned().collect();
        for id in ids {
            self.invalidate(&id);
        }
    }

    /// Watches each connector's server-to-client stream for `list_changed` (and each
    /// connector added later), until [`Catalog::stop_watchers`]. Reconnects with a
    /// bounded backoff.
    pub(crate) fn spawn_watchers(self: &Arc<Self>) {
        self.watching.store(true, Ordering::Release);
        for entry in self.entries.load().values() {
            self.start_watcher(entry);
        }
    }

    /// Stops every watcher (shutdown).
    pub(crate) fn stop_watchers(&self) {
        self.watching.store(false, Ordering::Release);
        for entry in self.entries.load().values() {
            if let Some(w) = entry.watcher.lock().expect("watcher lock").take() {
                w.abort();
            }
        }
    }

    /// Stops the watchers and ends every connector's catalog session (shutdown).
    pub(crate) async fn close_all(&self) {
        self.stop_watchers();
        let entries = self.entries.load();
        futures_util::future::join_all(
            entries.values().map(|e| {
                tokio::time::timeout(super::sessions::CLOSE_TIMEOUT, e.session.terminate())
            }),
        )
        .await;
    }

    fn start_watcher(self: &Arc<Self>, entry: &Arc<Entry>) {
        let catalog = self.clone();
        let watched = entry.clone();
        let task = tokio::spawn(async move { catalog.watch(&watched).await });
        let old = entry
            .watcher
            .lock()
            .expect("watcher lock")
            .replace(task.abort_handle());
        if let Some(old) = old {
            old.abort();
        }
    }

    async fn watch(&self, entry: &Entry) {
        let mut backoff = Duration::from_secs(1);
        loop {
            match self.watch_once(entry).await {
                Ok(false) => return, // the upstream offers no list_changed or no stream
                Ok(true) => backoff = Duration::from_secs(1),
                Err(e) => {
                    tracing::debug!(connector = %entry.id(), error = %e, "list_changed stream unavailable")
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
    }

    /// One listening period; `Ok(false)` means there is nothing to listen to.
    ///
    /// Setting up (the handshake, opening the stream) is bounded by the connector's
    /// timeout: the handshake holds the session's state lock, and an upstream that
    /// never answered it would otherwise keep the connector's list and calls waiting
    /// for good, even after it recovered.
    async fn watch_once(&self, entry: &Entry) -> Result<bool, UpstreamError> {
        let limit = entry.timeout();
        let caps = tokio::time::timeout(limit, entry.session.capabilities())
            .await
            .unwrap_or(Err(UpstreamError::Timeout))?;
        if caps.pointer("/tools/listChanged") != Some(&Value::Bool(true)) {
            return Ok(false);
        }
        let listen = tokio::time::timeout(limit, entry.session.listen())
            .await
            .unwrap_or(Err(UpstreamError::Timeout));
        let Some(mut stream) = listen? else {
            return Ok(false);
        };
        while let Some(msg) = stream.next().await? {
            if is_list_changed(&msg) {
                self.invalidate(&entry.id());
            } else if let Message::Request { id, method, .. } = msg {
                // No agent is behind this session: answer, so the upstream never waits.
                let session = entry.session.clone();
                tokio::spawn(async move {
                    let answer = crate::upstream::answer_unrelayed(&method);
                    let _ = tokio::time::timeout(limit, session.respond(&id, &answer)).await;
                });
            }
        }
        Ok(true)
    }

    fn entry(&self, id: &str) -> Result<Arc<Entry>, UpstreamError> {
        self.entries
            .load()
            .get(id)
            .cloned()
            .ok_or_else(|| UpstreamError::Protocol(format!("unknown connector {id}")))
    }
}

/// Whether an upstream message announces a changed tool list.
pub(crate) fn is_list_changed(msg: &Message) -> bool {
    matches!(msg, Message::Notification { method, .. } if method == "notifications/tools/list_changed")
}

async fn fetch_all(session: &UpstreamSession) -> Result<Vec<Value>, UpstreamError> {
    let mut tools = Vec::new();
    let mut cursor: Option<Value> = None;
    for _ in 0..MAX_PAGES {
        let params = match &cursor {
            Some(c) => json!({ "cursor": c }),
            None => json!({}),
        };
        let id = session.next_request_id();
        let outcome = session.request(id, "tools/list", &params, Some).await?;
        let page: Value = match outcome {
            Outcome::Result(raw) => serde_json::from_str(raw.get())
                .map_err(|e| UpstreamError::Protocol(e.to_string()))?,
            Outcome::Error(e) => {
                return Err(UpstreamError::Protocol(format!("tools/list failed: {e}")));
            }
        };
        let Some(list) = page.get("tools").and_then(Value::as_array) else {
            return Err(UpstreamError::Protocol(
                "tools/list result has no tools array".into(),
            ));
        };
        tools.extend(
            list.iter()
                .filter(|t| {
                    t.get("name")
                        .and_then(Value::as_str)
                        .is_some_and(|n| !n.is_empty())
                })
                .cloned(),
        );
        match page.get("nextCursor") {
            Some(c) if !c.is_null() && cursor.as_ref() != Some(c) => cursor = Some(c.clone()),
            _ => return Ok(tools),
        }
    }
    Err(UpstreamError::Protocol(format!(
        "tools/list has more than {MAX_PAGES} pages"
    )))
}
