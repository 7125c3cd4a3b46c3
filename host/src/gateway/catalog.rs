//! The catalog: each connector's lists of the four kinds ([`Kind`]: tools, resources,
//! resource templates, prompts), each fetched through all its pages over the
//! gateway's own upstream session and cached until the upstream announces the kind's
//! `list_changed` or an operator asks for a refresh. A reload adds, removes or
//! replaces connectors (`insert`, `remove`): readers see one set or the other, never
//! a mix. Only tool lists are screened by pinning. A kind the upstream did not
//! declare in its capabilities is an empty list, never an upstream call.
//!
//! Items are kept as the JSON the upstream sent, so fields the gateway does not know
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

/// How long `initialize` does not wait again for an upstream whose capabilities
/// could not be had.
pub(crate) const CAPABILITIES_RETRY: Duration = Duration::from_secs(30);

/// How long a failed fetch of a connector's list is answered from memory.
pub(crate) const FAILURE_TTL: Duration = Duration::from_secs(5);

/// The least time between two re-fetches of a connector's list asked for by calls
/// to tools missing from it ([`Catalog::refetch`]).
pub(crate) const REFETCH_INTERVAL: Duration = Duration::from_secs(1);

/// What a connector lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    Tools,
    Resources,
    Templates,
    Prompts,
}

impl Kind {
    /// The list method.
    pub(crate) fn method(self) -> &'static str {
        match self {
            Kind::Tools => "tools/list",
            Kind::Resources => "resources/list",
            Kind::Templates => "resources/templates/list",
            Kind::Prompts => "prompts/list",
        }
    }

    /// The member of the list result holding the items.
    pub(crate) fn member(self) -> &'static str {
        match self {
            Kind::Tools => "tools",
            Kind::Resources => "resources",
            Kind::Templates => "resourceTemplates",
            Kind::Prompts => "prompts",
        }
    }

    /// The item member that identifies an item.
    pub(crate) fn key(self) -> &'static str {
        match self {
            Kind::Tools | Kind::Prompts => "name",
            Kind::Resources => "uri",
            Kind::Templates => "uriTemplate",
        }
    }

    /// The server capability that offers the kind.
    pub(crate) fn capability(self) -> &'static str {
        match self {
            Kind::Tools => "tools",
            Kind::Resources | Kind::Templates => "resources",
            Kind::Prompts => "prompts",
        }
    }

    /// The kind a `notifications/<capability>/list_changed` names (resources: both
    /// resource lists).
    fn changed(method: &str) -> Option<&'static [Kind]> {
        match method {
            "notifications/tools/list_changed" => Some(&[Kind::Tools]),
            "notifications/resources/list_changed" => Some(&[Kind::Resources, Kind::Templates]),
            "notifications/prompts/list_changed" => Some(&[Kind::Prompts]),
            _ => None,
        }
    }

    /// The policy hook that filters the kind.
    pub(crate) fn list_kind(self) -> crate::policy::ListKind {
        use crate::policy::ListKind;
        match self {
            Kind::Tools => ListKind::Tools,
            Kind::Resources => ListKind::Resources,
            Kind::Templates => ListKind::Templates,
            Kind::Prompts => ListKind::Prompts,
        }
    }

    fn slot(self) -> usize {
        self as usize
    }
}

/// One connector's cached list of one kind.
#[derive(Debug)]
pub(crate) struct ItemSet {
    pub kind: Kind,
    /// Items as received (each an object with a non-empty string key member).
    pub items: Vec<Value>,
    index: HashMap<String, usize>,
    /// Increases with every fetch, for cursors and policy caches.
    pub version: u64,
    /// The sha256 of the list as the upstream sent it (before pinning withheld
    /// anything): a re-fetch that finds it unchanged changes nothing.
    fetched: [u8; 32],
    /// Each item's JSON text as received, and as agents see it on `/mcp` (names
    /// `<slug><sep><name>`, URIs qualified: `names.rs`): serialized once per list
    /// version, so a list request only concatenates text.
    plain: OnceLock<Vec<Box<str>>>,
    renamed: OnceLock<(String, Vec<Box<str>>)>,
}

impl ItemSet {
    fn new(kind: Kind, items: Vec<Value>, version: u64, fetched: [u8; 32]) -> Self {
        let index = items
            .iter()
            .enumerate()
            .filter_map(|(i, t)| Some((t.get(kind.key())?.as_str()?.to_string(), i)))
            .collect();
        ItemSet {
            kind,
            items,
            index,
            version,
            fetched,
            plain: OnceLock::new(),
            renamed: OnceLock::new(),
        }
    }

    /// An empty list (a connector whose upstream lists nothing of the kind).
    pub(crate) fn empty(kind: Kind) -> ItemSet {
        ItemSet::new(kind, Vec::new(), 0, [0; 32])
    }

    /// The item keyed `key`.
    pub(crate) fn get(&self, key: &str) -> Option<&Value> {
        self.position(key).map(|i| &self.items[i])
    }

    /// Every item's JSON text, as the upstream sent it (unknown fields kept).
    pub(crate) fn plain_json(&self) -> &[Box<str>] {
        self.plain
            .get_or_init(|| self.items.iter().map(|t| t.to_string().into()).collect())
    }

    /// Every item's JSON text as `/mcp` shows it: its key renamed by `rename`, then
    /// `adjust`ed (the same for every caller, as a connector's slug and the separator
    /// are fixed; `made_with` names them, to catch a second renaming in tests).
    pub(crate) fn renamed_json(
        &self,
        made_with: &str,
        rename: impl Fn(&str) -> String,
        adjust: impl Fn(&mut Value),
    ) -> &[Box<str>] {
        let key = self.kind.key();
        let (made, texts) = self.renamed.get_or_init(|| {
            let texts = self
                .items
                .iter()
                .map(|t| {
                    let mut renamed = t.clone();
                    renamed[key] = Value::String(rename(ItemSet::key_str(t, key)));
                    adjust(&mut renamed);
                    renamed.to_string().into()
                })
                .collect();
            (made_with.to_string(), texts)
        });
        debug_assert_eq!(made, made_with, "one renaming per connector");
        texts
    }

    /// Where the item keyed `key` is in `items` (requests carry this, not a copy).
    pub(crate) fn position(&self, key: &str) -> Option<usize> {
        self.index.get(key).copied()
    }

    /// A tool's or prompt's name.
    pub(crate) fn name(item: &Value) -> &str {
        ItemSet::key_str(item, "name")
    }

    /// An item's string member `key` (empty when missing).
    pub(crate) fn key_str<'v>(item: &'v Value, key: &str) -> &'v str {
        item.get(key).and_then(Value::as_str).unwrap_or_default()
    }
}

/// One kind's cached list of a connector, and how it is being fetched.
#[derive(Default)]
struct Slot {
    set: ArcSwapOption<ItemSet>,
    fetch_lock: Mutex<()>,
    /// When a request last made the list be fetched again ([`Catalog::refetch`]).
    last_refetch: std::sync::Mutex<Option<Instant>>,
    /// The last fetch's error and when it ended, while no list is cached.
    failure: std::sync::Mutex<Option<(Instant, UpstreamError)>>,
}

impl Slot {
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
}

struct Entry {
    /// The connector as currently configured (its `timeout_ms` bounds fetches).
    connector: ArcSwap<Connector>,
    session: Arc<UpstreamSession>,
    /// One per [`Kind`], in its order.
    slots: [Slot; 4],
    /// The upstream's capabilities, once its catalog session has initialised.
    capabilities: ArcSwapOption<Value>,
    /// When asking for them last failed (`initialize` then does not wait for this
    /// upstream again for [`CAPABILITIES_RETRY`]).
    capabilities_failed: std::sync::Mutex<Option<Instant>>,
    /// The task watching the upstream's `list_changed`, while one runs.
    watcher: std::sync::Mutex<Option<tokio::task::AbortHandle>>,
}

impl Entry {
    fn new(connector: Arc<Connector>, session: Arc<UpstreamSession>) -> Entry {
        Entry {
            connector: ArcSwap::new(connector),
            session,
            slots: Default::default(),
            capabilities: ArcSwapOption::empty(),
            capabilities_failed: std::sync::Mutex::new(None),
            watcher: std::sync::Mutex::new(None),
        }
    }

    fn id(&self) -> String {
        self.connector.load().id.clone()
    }

    fn timeout(&self) -> Duration {
        self.connector.load().timeout
    }

    fn slot(&self, kind: Kind) -> &Slot {
        &self.slots[kind.slot()]
    }

    /// The upstream's capabilities (initialising the catalog session if needed,
    /// bounded by the connector's timeout), remembered for [`Catalog::offered`].
    async fn capabilities(&self) -> Result<Arc<Value>, UpstreamError> {
        if let Some(caps) = self.capabilities.load_full() {
            return Ok(caps);
        }
        let asked = tokio::time::timeout(self.timeout(), self.session.capabilities())
            .await
            .unwrap_or(Err(UpstreamError::Timeout));
        let mut failed = self.capabilities_failed.lock().expect("capabilities lock");
        *failed = asked.is_err().then(Instant::now);
        drop(failed);
        let caps = Arc::new(asked?);
        self.capabilities.store(Some(caps.clone()));
        Ok(caps)
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
    /// A connector's list of one kind, or (`None`) its rules or every list (every
    /// session of `/mcp` and of its own endpoint).
    Connector(String, Option<Kind>),
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

    /// The cached tools of a connector ([`Catalog::list`]).
    pub(crate) async fn tools(&self, connector_id: &str) -> Result<Arc<ItemSet>, UpstreamError> {
        self.list(connector_id, Kind::Tools).await
    }

    /// The cached list of one kind of a connector, fetched first if not cached; a
    /// recent failed fetch's error at once (module doc).
    pub(crate) async fn list(
        &self,
        connector_id: &str,
        kind: Kind,
    ) -> Result<Arc<ItemSet>, UpstreamError> {
        let entry = self.entry(connector_id)?;
        let slot = entry.slot(kind);
        if let Some(set) = slot.set.load_full() {
            return Ok(set);
        }
        if let Some(e) = slot.recent_failure() {
            return Err(e);
        }
        // One fetch at a time; who waited for it takes its list or its error.
        let _guard = slot.fetch_lock.lock().await;
        if let Some(set) = slot.set.load_full() {
            return Ok(set);
        }
        if let Some(e) = slot.recent_failure() {
            return Err(e);
        }
        let set = match self.fetch(&entry, kind).await {
            Ok(set) => set,
            Err(e) => {
                slot.set_failure(Some(e.clone()));
                return Err(e);
            }
        };
        slot.set_failure(None);
        slot.set.store(Some(set.clone()));
        Ok(set)
    }

    /// Fetches a connector's list of one kind again because a request named an item
    /// missing from it, at most once per [`REFETCH_INTERVAL`] (otherwise the cached
    /// list is the answer). A list that comes back unchanged changes nothing: the
    /// cached set, its version (so cursors and cached decisions) stay and nobody is
    /// told. A changed one replaces it and subscribers are told (`list_changed` to
    /// agents). A failed re-fetch keeps the cached list.
    pub(crate) async fn refetch(
        &self,
        connector_id: &str,
        kind: Kind,
    ) -> Result<Arc<ItemSet>, UpstreamError> {
        let entry = self.entry(connector_id)?;
        let slot = entry.slot(kind);
        let guard = slot.fetch_lock.lock().await;
        let Some(current) = slot.set.load_full() else {
            drop(guard);
            return self.list(connector_id, kind).await;
        };
        {
            let mut last = slot.last_refetch.lock().expect("catalog refetch lock");
            if last.is_some_and(|at| at.elapsed() < REFETCH_INTERVAL) {
                return Ok(current);
            }
            *last = Some(Instant::now());
        }
        let set = match self.fetch(&entry, kind).await {
            Ok(set) if set.fetched == current.fetched => return Ok(current),
            Ok(set) => set,
            Err(_) => return Ok(current),
        };
        slot.set.store(Some(set.clone()));
        self.announce_kind(connector_id, kind);
        tracing::info!(
            connector = connector_id,
            list = kind.method(),
            "list changed upstream"
        );
        Ok(set)
    }

    /// Whether the connector's upstream offers `capability` (`tools`, `resources`,
    /// `prompts`, `completions`, `logging`), asking it if not known yet.
    pub(crate) async fn offers(
        &self,
        connector_id: &str,
        capability: &str,
    ) -> Result<bool, UpstreamError> {
        let caps = self.entry(connector_id)?.capabilities().await?;
        Ok(caps.get(capability).is_some_and(|c| !c.is_null()))
    }

    /// Whether the connector's upstream declares `pointer` (a JSON pointer into its
    /// capabilities, e.g. `/resources/subscribe`) `true`, asking it if not known yet.
    pub(crate) async fn offers_feature(
        &self,
        connector_id: &str,
        pointer: &str,
    ) -> Result<bool, UpstreamError> {
        let caps = self.entry(connector_id)?.capabilities().await?;
        Ok(caps.pointer(pointer) == Some(&Value::Bool(true)))
    }

    /// [`Catalog::offers_feature`] without asking (unknown: no).
    pub(crate) fn offered_feature(&self, connector_id: &str, pointer: &str) -> bool {
        self.entry(connector_id).is_ok_and(|e| {
            e.capabilities
                .load()
                .as_ref()
                .is_some_and(|caps| caps.pointer(pointer) == Some(&Value::Bool(true)))
        })
    }

    /// Whether the connector's upstream capabilities are known, or asking for them
    /// failed less than [`CAPABILITIES_RETRY`] ago (so there is no point waiting).
    pub(crate) fn knows_capabilities(&self, connector_id: &str) -> bool {
        self.entry(connector_id).is_ok_and(|e| {
            e.capabilities.load().is_some()
                || e.capabilities_failed
                    .lock()
                    .expect("capabilities lock")
                    .is_some_and(|at| at.elapsed() < CAPABILITIES_RETRY)
        })
    }

    /// Whether the connector's upstream is known to offer `capability`, without
    /// asking (`initialize` answers from this: unknown is not offered).
    pub(crate) fn offered(&self, connector_id: &str, capability: &str) -> bool {
        let Ok(entry) = self.entry(connector_id) else {
            return false;
        };
        entry
            .capabilities
            .load()
            .as_ref()
            .is_some_and(|caps| caps.get(capability).is_some_and(|c| !c.is_null()))
    }

    /// Fetches a connector's whole list of one kind (bounded by its timeout) and, for
    /// tools, screens it (`pinning.rs`): a new set with the next version. A kind whose
    /// capability the upstream did not declare is an empty list, not a request.
    async fn fetch(&self, entry: &Entry, kind: Kind) -> Result<Arc<ItemSet>, UpstreamError> {
        let connector = entry.connector.load_full();
        let items = if kind == Kind::Tools || self.offers(&connector.id, kind.capability()).await? {
            let fetched = tokio::time::timeout(connector.timeout, fetch_all(&entry.session, kind))
                .await
                .unwrap_or(Err(UpstreamError::Timeout));
            fetched.inspect_err(|e| {
                crate::telemetry::metrics::upstream_error(&connector.id, e.kind());
            })?
        } else {
            Vec::new()
        };
        let text =
            serde_json::to_string(&items).map_err(|e| UpstreamError::Protocol(e.to_string()))?;
        let digest = crate::digest::sha256(text.as_bytes());
        let served = match kind {
            Kind::Tools => self.pinning.screen(&connector, items).await?,
            _ => items,
        };
        let version = self.versions.fetch_add(1, Ordering::Relaxed) + 1;
        Ok(Arc::new(ItemSet::new(kind, served, version, digest)))
    }

    /// Tells subscribers that what agents see of a connector may have changed (its
    /// rules were reloaded), without dropping its list.
    pub(crate) fn announce(&self, connector_id: &str) {
        let _ = self
            .changed
            .send(Changed::Connector(connector_id.to_string(), None));
    }

    /// Tells subscribers that a connector's list of one kind changed.
    fn announce_kind(&self, connector_id: &str, kind: Kind) {
        let _ = self
            .changed
            .send(Changed::Connector(connector_id.to_string(), Some(kind)));
    }

    /// Tells subscribers that what an agent sees may have changed (its rules were
    /// reloaded).
    pub(crate) fn announce_agent(&self, agent: &str) {
        let _ = self.changed.send(Changed::Agent(agent.to_string()));
    }

    /// Drops a connector's cached lists of every kind (and remembered failures) and
    /// its remembered capabilities, and tells subscribers.
    pub(crate) fn invalidate(&self, connector_id: &str) {
        if let Ok(entry) = self.entry(connector_id) {
            for slot in &entry.slots {
                slot.set_failure(None);
                slot.set.store(None);
            }
            entry.capabilities.store(None);
            self.announce(connector_id);
            tracing::info!(connector = connector_id, "lists invalidated");
        }
    }

    /// Drops a connector's cached lists of `kinds` (the upstream announced a change).
    pub(crate) fn invalidate_kinds(&self, connector_id: &str, kinds: &[Kind]) {
        if let Ok(entry) = self.entry(connector_id) {
            for kind in kinds {
                let slot = entry.slot(*kind);
                slot.set_failure(None);
                slot.set.store(None);
                self.announce_kind(connector_id, *kind);
            }
            tracing::info!(connector = connector_id, lists = ?kinds, "lists changed upstream");
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
        let caps = entry.capabilities().await?;
        let announces = ["tools", "resources", "prompts"]
            .iter()
            .any(|c| caps.get(*c).and_then(|c| c.get("listChanged")) == Some(&Value::Bool(true)));
        if !announces {
            return Ok(false);
        }
        let listen = tokio::time::timeout(limit, entry.session.listen())
            .await
            .unwrap_or(Err(UpstreamError::Timeout));
        let Some(mut stream) = listen? else {
            return Ok(false);
        };
        while let Some(msg) = stream.next().await? {
            if let Some(kinds) = list_changed(&msg) {
                self.invalidate_kinds(&entry.id(), kinds);
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

/// The kinds whose list an upstream message announces changed, if it does.
pub(crate) fn list_changed(msg: &Message) -> Option<&'static [Kind]> {
    match msg {
        Message::Notification { method, .. } => Kind::changed(method),
        _ => None,
    }
}

/// Every page of one kind's list; items without a non-empty key are dropped.
async fn fetch_all(session: &UpstreamSession, kind: Kind) -> Result<Vec<Value>, UpstreamError> {
    let (method, member, key) = (kind.method(), kind.member(), kind.key());
    let mut items = Vec::new();
    let mut cursor: Option<Value> = None;
    for _ in 0..MAX_PAGES {
        let params = match &cursor {
            Some(c) => json!({ "cursor": c }),
            None => json!({}),
        };
        let id = session.next_request_id();
        let outcome = session.request(id, method, &params, Some).await?;
        let page: Value = match outcome {
            Outcome::Result(raw) => serde_json::from_str(raw.get())
                .map_err(|e| UpstreamError::Protocol(e.to_string()))?,
            Outcome::Error(e) => {
                return Err(UpstreamError::Protocol(format!("{method} failed: {e}")));
            }
        };
        let Some(list) = page.get(member).and_then(Value::as_array) else {
            return Err(UpstreamError::Protocol(format!(
                "{method} result has no {member} array"
            )));
        };
        items.extend(
            list.iter()
                .filter(|t| {
                    t.get(key)
                        .and_then(Value::as_str)
                        .is_some_and(|n| !n.is_empty())
                })
                .cloned(),
        );
        match page.get("nextCursor") {
            Some(c) if !c.is_null() && cursor.as_ref() != Some(c) => cursor = Some(c.clone()),
            _ => return Ok(items),
        }
    }
    Err(UpstreamError::Protocol(format!(
        "{method} has more than {MAX_PAGES} pages"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_list_changed_names_its_kinds() {
        let note = |m: &str| Message::Notification {
            method: m.into(),
            params: None,
        };
        assert_eq!(
            list_changed(&note("notifications/tools/list_changed")),
            Some(&[Kind::Tools][..])
        );
        assert_eq!(
            list_changed(&note("notifications/resources/list_changed")),
            Some(&[Kind::Resources, Kind::Templates][..])
        );
        assert_eq!(
            list_changed(&note("notifications/prompts/list_changed")),
            Some(&[Kind::Prompts][..])
        );
        assert_eq!(list_changed(&note("notifications/message")), None);
    }

    #[test]
    fn items_are_keyed_and_renamed_by_kind() {
        let set = ItemSet::new(
            Kind::Templates,
            vec![json!({"uriTemplate": "file:///{x}", "name": "x", "extra": 1})],
            1,
            [0; 32],
        );
        assert!(set.get("file:///{x}").is_some());
        let texts = set.renamed_json("d", |uri| format!("q:{uri}"), |_| ());
        let v: Value = serde_json::from_str(&texts[0]).unwrap();
        assert_eq!(
            v,
            json!({"uriTemplate": "q:file:///{x}", "name": "x", "extra": 1})
        );
    }
}
