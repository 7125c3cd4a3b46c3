//! Shared server state: options, sessions, the call counter, pending
//! cancellable requests with the log of cancelled ids, and the broadcast
//! channel feeding GET SSE streams.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::{broadcast, oneshot};

use crate::tools::Catalog;

/// How POST requests are answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ResponseMode {
    /// `Content-Type: application/json` with the response message.
    Json,
    /// `Content-Type: text/event-stream` ending after the response message.
    Sse,
}

/// Behaviour chosen on the command line.
pub struct Options {
    pub response: ResponseMode,
    pub sessions: bool,
    pub delay: Duration,
    pub page_size: Option<usize>,
    pub bearer: Option<String>,
    pub name: String,
    pub get_stream: bool,
    pub keepalive: Duration,
    pub hang_delete: bool,
    /// Requests sent on every GET stream as it opens (`--ask-on-stream`).
    pub ask_on_stream: Vec<String>,
    /// Resources served (`--items`); 0: no resources or prompts at all.
    pub items: usize,
}

/// Everything the handlers share.
pub struct State {
    pub opts: Options,
    pub catalog: Catalog,
    sessions: Mutex<HashSet<String>>,
    session_ids: AtomicU64,
    session_keys: RandomState,
    calls: AtomicU64,
    pending: Mutex<HashMap<String, (u64, oneshot::Sender<()>)>>,
    pending_ids: AtomicU64,
    cancelled: Mutex<Vec<Value>>,
    events: broadcast::Sender<Bytes>,
}

impl State {
    #[cfg(test)]
    pub fn new(opts: Options, extra_tools: usize, raw_echo: bool) -> Self {
        State::serving(opts, Catalog::new(extra_tools, raw_echo))
    }

    /// A state around a given tool catalogue.
    pub fn serving(opts: Options, catalog: Catalog) -> Self {
        State {
            opts,
            catalog,
            sessions: Mutex::default(),
            session_ids: AtomicU64::new(0),
            session_keys: RandomState::new(),
            calls: AtomicU64::new(0),
            pending: Mutex::default(),
            pending_ids: AtomicU64::new(0),
            cancelled: Mutex::default(),
            events: broadcast::channel(64).0,
        }
    }

    /// Creates and records a new, unguessable session id (32 hex digits).
    pub fn new_session(&self) -> String {
        let n = self.session_ids.fetch_add(1, Ordering::Relaxed);
        let hi = self.session_keys.hash_one((n, 1u8));
        let lo = self.session_keys.hash_one((n, 2u8));
        let id = format!("{hi:016x}{lo:016x}");
        lock(&self.sessions).insert(id.clone());
        id
    }

    pub fn has_session(&self, id: &str) -> bool {
        lock(&self.sessions).contains(id)
    }

    /// Sessions opened so far and sessions still open.
    pub fn session_stats(&self) -> (u64, usize) {
        (
            self.session_ids.load(Ordering::Relaxed),
            lock(&self.sessions).len(),
        )
    }

    pub fn end_session(&self, id: &str) -> bool {
        lock(&self.sessions).remove(id)
    }

    /// Counts one tools/call and returns the new total.
    pub fn count_call(&self) -> u64 {
        self.calls.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// Registers a request (by canonical id text) as cancellable. The guard
    /// unregisters it when dropped; the receiver fires on cancellation.
    pub fn cancellable(&self, key: String) -> (CancelGuard<'_>, oneshot::Receiver<()>) {
        let (tx, rx) = oneshot::channel();
        let token = self.pending_ids.fetch_add(1, Ordering::Relaxed);
        lock(&self.pending).insert(key.clone(), (token, tx));
        (
            CancelGuard {
                state: self,
                key,
                token,
            },
            rx,
        )
    }

    /// Handles `notifications/cancelled`: logs the id and wakes the request.
    pub fn cancel(&self, request_id: Value) {
        let key = request_id.to_string();
        if let Some((_, tx)) = lock(&self.pending).remove(&key) {
            let _ = tx.send(());
        }
        lock(&self.cancelled).push(request_id);
    }

    pub fn cancelled_ids(&self) -> Vec<Value> {
        lock(&self.cancelled).clone()
    }

    /// Subscribes a GET SSE stream to server-initiated messages.
    pub fn subscribe(&self) -> broadcast::Receiver<Bytes> {
        self.events.subscribe()
    }

    /// Sends an SSE event to every open GET stream.
    pub fn broadcast(&self, event: Bytes) {
        let _ = self.events.send(event);
    }
}

/// Unregisters a cancellable request when it finishes.
pub struct CancelGuard<'a> {
    state: &'a State,
    key: String,
    token: u64,
}

impl Drop for CancelGuard<'_> {
    fn drop(&mut self) {
        let mut pending = lock(&self.state.pending);
        if pending
            .get(&self.key)
            .is_some_and(|(t, _)| *t == self.token)
        {
            pending.remove(&self.key);
        }
    }
}

/// Locks a mutex, ignoring poisoning (the data stays usable for a test server).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
