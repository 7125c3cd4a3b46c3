//! [`ChannelSession`]: an MCP session over a message pipe, the stdio and HTTP+SSE
//! transports. Unlike Streamable HTTP, nothing ties what the upstream sends to the
//! request it belongs to, so this module routes it:
//!
//! - a response goes to the request with its id (ids are unique per session);
//! - `notifications/progress` goes to the request whose progress token it names:
//!   outgoing tokens are replaced by session-unique ones (`portcullis-<id>`) and
//!   restored on the way back, so agents sharing a process never see each other's;
//! - `list_changed` and `resources/updated` go to the listener
//!   ([`ChannelSession::listen`]) if one is open;
//! - anything else (logging, server-to-client requests) goes to the most recent
//!   request in flight, else to the listener; a request nobody takes is answered
//!   at once ([`super::answer_unrelayed`]). A process shared by every agent
//!   session (`share_process`) cannot tell whose request it serves, so there it
//!   goes to the listener only (the catalog's session), never to an agent.
//!
//! The pipe opens lazily (process spawn or SSE connect, then the handshake). When it
//! dies (the process exits, writes something that is not JSON-RPC, or the SSE stream
//! ends) every request in flight fails with [`UpstreamError::Transport`] and the next
//! request opens a new one, after a backoff of 1 s doubling to 30 s while openings
//! keep failing; a successful response resets it.
//!
//! The session owns its pipe: the dispatcher task holds it weakly, so dropping or
//! terminating the session ends the process even if a task is still reading it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use tokio::sync::{OwnedSemaphorePermit, mpsc};

use super::session::{initialize_params, initialize_result};
use super::sse::{SseConnection, SseTarget};
use super::stdio::{Launcher, Process};
use super::stream::Message;
use super::{Outcome, UpstreamError, answer_unrelayed};
use crate::mcp::jsonrpc;

/// The first backoff after a pipe died or failed to open; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Messages waiting for a listener before the oldest are dropped.
const LISTEN_BUFFER: usize = 256;
/// The prefix of the progress tokens this module sends upstream.
const TOKEN_PREFIX: &str = "portcullis-";
/// How long the answer to a server-to-client request nobody takes may take to send.
const UNRELAYED_SEND: Duration = Duration::from_secs(5);

/// How a channel session opens its pipe.
pub(crate) enum PipeSpec {
    Stdio(Arc<Launcher>),
    Sse(SseTarget),
}

/// An open pipe.
pub(super) enum Pipe {
    Stdio(Process),
    Sse(SseConnection),
}

/// What a pipe's reader hands the session.
#[derive(Debug)]
pub(super) enum Inbound {
    Message(Message),
    /// A line or event that is not JSON-RPC (its length only: its text is the
    /// upstream's and is not logged).
    Garbage(usize),
    /// A message over `max_result_bytes` (the limit); the id of the request it
    /// answers, when it could be read from its edges.
    TooLarge(Option<Value>, usize),
    /// The pipe ended (why, for the requests it fails).
    Closed(String),
}

impl Pipe {
    async fn send(&self, line: String) -> Result<(), UpstreamError> {
        match self {
            Pipe::Stdio(p) => p.send(line).await,
            Pipe::Sse(c) => c.send(line).await,
        }
    }

    /// Ends it at once.
    fn kill(&self) {
        match self {
            Pipe::Stdio(p) => p.kill(),
            Pipe::Sse(c) => c.kill(),
        }
    }

    /// Ends it gracefully (a process: stdin closed, then SIGTERM, then SIGKILL).
    async fn close(&self) {
        match self {
            Pipe::Stdio(p) => p.close().await,
            Pipe::Sse(c) => c.kill(),
        }
    }
}

pub(crate) struct ChannelSession {
    spec: PipeSpec,
    /// The client capabilities declared at `initialize`.
    declared: Value,
    limit: usize,
    /// One pipe for every agent session of the connector (`share_process`): only
    /// [`ChannelSession::terminate`] ends it.
    shared: bool,
    next_id: AtomicI64,
    conn: tokio::sync::Mutex<Conn>,
    closed: AtomicBool,
    routes: Arc<Routes>,
}

#[derive(Default)]
struct Conn {
    live: Option<Live>,
    generation: u64,
    /// The connector's process slot, held from the first spawn until the session ends.
    permit: Option<OwnedSemaphorePermit>,
}

#[derive(Clone)]
struct Live {
    pipe: Arc<Pipe>,
    capabilities: Arc<Value>,
    generation: u64,
}

/// Where what the upstream sends goes, shared with the pipe's dispatcher task.
#[derive(Default)]
struct Routes {
    /// The pipe serves every agent session: nothing unattributed goes to a request.
    shared: bool,
    waiting: Mutex<HashMap<i64, Waiter>>,
    listener: Mutex<Option<mpsc::Sender<Message>>>,
    /// The newest generation whose pipe died (one pipe lives at a time, so every
    /// older generation is dead too).
    dead: AtomicU64,
    /// Openings or pipes that failed since the last successful response.
    failures: AtomicU32,
    /// The newest generation counted in `failures` (each counts once, whether its
    /// opening failed, its pipe died, or both).
    counted: AtomicU64,
    /// When the last one failed, in ms since `epoch`.
    failed_at_ms: AtomicU64,
    epoch: OnceInstant,
}

#[derive(Default)]
struct OnceInstant(std::sync::OnceLock<Instant>);

impl OnceInstant {
    fn get(&self) -> Instant {
        *self.0.get_or_init(Instant::now)
    }
}

struct Waiter {
    tx: mpsc::UnboundedSender<Result<Message, UpstreamError>>,
    generation: u64,
    /// The agent's own progress token, replaced upstream by `portcullis-<id>`.
    progress: Option<Value>,
}

impl ChannelSession {
    pub(crate) fn new(spec: PipeSpec, declared: Value, limit: usize, shared: bool) -> Self {
        ChannelSession {
            spec,
            declared,
            limit,
            shared,
            next_id: AtomicI64::new(1),
            conn: tokio::sync::Mutex::new(Conn::default()),
            closed: AtomicBool::new(false),
            routes: Arc::new(Routes {
                shared,
                ..Routes::default()
            }),
        }
    }

    pub(crate) fn next_request_id(&self) -> i64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Whether every agent session of the connector shares this one.
    pub(crate) fn is_shared(&self) -> bool {
        self.shared
    }

    pub(crate) async fn capabilities(&self) -> Result<Value, UpstreamError> {
        Ok(Value::clone(&self.ready().await?.capabilities))
    }

    pub(crate) async fn request(
        &self,
        id: i64,
        method: &str,
        params: &(impl Serialize + ?Sized),
        mut on_message: impl FnMut(Message) -> Option<Message>,
    ) -> Result<Outcome, UpstreamError> {
        let live = self.ready().await?;
        let (params, progress) = tokenise_progress(id, params)?;
        let line = jsonrpc::request(&json!(id), method, &params);
        let mut rx = self.routes.wait(id, live.generation, progress);
        let _registered = Registered(&self.routes, id);
        self.routes.alive(live.generation)?;
        live.pipe.send(line).await?;
        while let Some(received) = rx.recv().await {
            match received? {
                Message::Response { result, error, .. } => {
                    self.routes.failures.store(0, Ordering::Relaxed);
                    return Outcome::of(result, error);
                }
                other => {
                    if let Some(Message::Request {
                        id: rid, method, ..
                    }) = on_message(other)
                    {
                        let answer = answer_unrelayed(&method).response(&rid);
                        let _ = live.pipe.send(answer).await;
                    }
                }
            }
        }
        Err(UpstreamError::Transport(
            "the upstream connection ended".into(),
        ))
    }

    /// Sends a notification on the open pipe; never opens one (a cancellation
    /// or an answer is for the pipe that asked, and means nothing to a new one).
    pub(crate) async fn notify(&self, method: &str, params: &Value) -> Result<(), UpstreamError> {
        let live = self.current().await?;
        let raw = crate::mcp::params::to_raw(params);
        live.pipe
            .send(jsonrpc::notification(method, Some(&raw)))
            .await
    }

    /// Sends the answer to a server-to-client request on the open pipe.
    pub(crate) async fn respond(
        &self,
        id: &Value,
        answer: &jsonrpc::Answer,
    ) -> Result<(), UpstreamError> {
        let live = self.current().await?;
        live.pipe.send(answer.response(id)).await
    }

    /// The open pipe, if it is alive.
    async fn current(&self) -> Result<Live, UpstreamError> {
        let conn = self.conn.lock().await;
        match &conn.live {
            Some(live) if !self.routes.is_dead(live.generation) => Ok(live.clone()),
            _ => Err(UpstreamError::Transport(
                "the upstream connection has ended".into(),
            )),
        }
    }

    /// Opens the pipe if needed and takes what the upstream sends outside any
    /// request, until the pipe dies (then the stream ends) or another listener
    /// takes over.
    pub(crate) async fn listen(&self) -> Result<mpsc::Receiver<Message>, UpstreamError> {
        self.ready().await?;
        let (tx, rx) = mpsc::channel(LISTEN_BUFFER);
        *self.routes.listener.lock().expect("listener lock") = Some(tx);
        Ok(rx)
    }

    /// Ends the session, unless it is shared by every agent session.
    pub(crate) async fn close(&self) {
        if !self.shared {
            self.terminate().await;
        }
    }

    /// Ends the session and its pipe; the process slot is given back once the
    /// process is gone.
    pub(crate) async fn terminate(&self) {
        self.closed.store(true, Ordering::Release);
        let mut conn = self.conn.lock().await;
        let live = conn.live.take();
        let permit = conn.permit.take();
        drop(conn);
        if let Some(live) = live {
            live.pipe.close().await;
        }
        drop(permit);
    }

    /// The open pipe, opening one (after the backoff, if openings are failing).
    async fn ready(&self) -> Result<Live, UpstreamError> {
        loop {
            if self.closed.load(Ordering::Acquire) {
                return Err(UpstreamError::Transport("the session has ended".into()));
            }
            let wait = self.routes.backoff_left();
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
                continue;
            }
            let mut conn = self.conn.lock().await;
            if let Some(live) = &conn.live {
                if !self.routes.is_dead(live.generation) {
                    return Ok(live.clone());
                }
                let old = conn.live.take().expect("checked");
                tokio::spawn(async move { old.pipe.close().await });
                if !self.routes.backoff_left().is_zero() {
                    continue;
                }
            }
            if self.closed.load(Ordering::Acquire) {
                continue;
            }
            if conn.permit.is_none()
                && let PipeSpec::Stdio(launcher) = &self.spec
            {
                conn.permit = Some(launcher.permit()?);
            }
            conn.generation += 1;
            let generation = conn.generation;
            return match self.open(generation).await {
                Ok(live) if self.closed.load(Ordering::Acquire) => {
                    // Terminated while opening: the new pipe must not outlive it.
                    live.pipe.kill();
                    Err(UpstreamError::Transport("the session has ended".into()))
                }
                Ok(live) => {
                    conn.live = Some(live.clone());
                    Ok(live)
                }
                Err(e) => {
                    self.routes.failed(generation);
                    Err(e)
                }
            };
        }
    }

    /// Opens a pipe, starts its dispatcher and runs the handshake. A pipe whose
    /// handshake fails or is abandoned (the caller timed out) is killed.
    async fn open(&self, generation: u64) -> Result<Live, UpstreamError> {
        let (pipe, inbound) = match &self.spec {
            PipeSpec::Stdio(launcher) => {
                let (p, rx) = launcher.spawn(self.limit).await?;
                (Pipe::Stdio(p), rx)
            }
            PipeSpec::Sse(target) => {
                let (c, rx) = target.connect(self.limit).await?;
                (Pipe::Sse(c), rx)
            }
        };
        let pipe = Arc::new(pipe);
        tokio::spawn(dispatch(
            self.routes.clone(),
            inbound,
            generation,
            Arc::downgrade(&pipe),
        ));
        let guard = KillUnlessKept(Some(pipe.clone()));
        let capabilities = self.handshake(&pipe, generation).await?;
        guard.keep();
        Ok(Live {
            pipe,
            capabilities: Arc::new(capabilities),
            generation,
        })
    }

    async fn handshake(&self, pipe: &Pipe, generation: u64) -> Result<Value, UpstreamError> {
        let id = self.next_request_id();
        let params = initialize_params(&self.declared);
        let mut rx = self.routes.wait(id, generation, None);
        let _registered = Registered(&self.routes, id);
        self.routes.alive(generation)?;
        pipe.send(jsonrpc::request(&json!(id), "initialize", &params))
            .await?;
        let result = loop {
            match rx.recv().await {
                Some(Ok(Message::Response {
                    result: Some(r), ..
                })) => break r,
                Some(Ok(Message::Response { error: Some(e), .. })) => {
                    return Err(UpstreamError::Protocol(format!("initialize refused: {e}")));
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(e),
                None => return Err(UpstreamError::Protocol("no initialize result".into())),
            }
        };
        let result = initialize_result(&result)?;
        pipe.send(jsonrpc::notification("notifications/initialized", None))
            .await?;
        Ok(result.get("capabilities").cloned().unwrap_or(Value::Null))
    }
}

/// Kills a pipe when dropped, unless [`KillUnlessKept::keep`] was called.
struct KillUnlessKept(Option<Arc<Pipe>>);

impl KillUnlessKept {
    fn keep(mut self) {
        self.0 = None;
    }
}

impl Drop for KillUnlessKept {
    fn drop(&mut self) {
        if let Some(pipe) = self.0.take() {
            pipe.kill();
        }
    }
}

/// Removes a request's route when it ends, however it ends.
struct Registered<'a>(&'a Routes, i64);

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.0.waiting.lock().expect("waiting lock").remove(&self.1);
    }
}

impl Routes {
    fn wait(
        &self,
        id: i64,
        generation: u64,
        progress: Option<Value>,
    ) -> mpsc::UnboundedReceiver<Result<Message, UpstreamError>> {
        let (tx, rx) = mpsc::unbounded_channel();
        let waiter = Waiter {
            tx,
            generation,
            progress,
        };
        self.waiting
            .lock()
            .expect("waiting lock")
            .insert(id, waiter);
        rx
    }

    fn is_dead(&self, generation: u64) -> bool {
        generation <= self.dead.load(Ordering::Acquire)
    }

    /// Fails a request registered after its pipe died (the dispatcher failed
    /// what was registered before and will not see it). [`Routes::bury`] marks
    /// the generation dead before it takes the waiting lock, so a request either
    /// is failed there or sees the mark here.
    fn alive(&self, generation: u64) -> Result<(), UpstreamError> {
        if self.is_dead(generation) {
            return Err(UpstreamError::Transport(
                "the upstream connection ended".into(),
            ));
        }
        Ok(())
    }

    fn failed(&self, generation: u64) {
        if self.counted.fetch_max(generation, Ordering::AcqRel) >= generation {
            return;
        }
        let now = self.epoch.get().elapsed().as_millis() as u64;
        self.failed_at_ms.store(now, Ordering::Relaxed);
        self.failures.fetch_add(1, Ordering::Relaxed);
    }

    /// How long the next opening must still wait.
    fn backoff_left(&self) -> Duration {
        let failures = self.failures.load(Ordering::Relaxed);
        if failures == 0 {
            return Duration::ZERO;
        }
        let backoff = backoff(failures);
        let since = Duration::from_millis(
            (self.epoch.get().elapsed().as_millis() as u64)
                .saturating_sub(self.failed_at_ms.load(Ordering::Relaxed)),
        );
        backoff.saturating_sub(since)
    }

    /// Routes one message from generation `generation`'s pipe (module doc).
    fn route(&self, msg: Message) -> Option<Message> {
        let msg = match msg {
            Message::Response { .. } => {
                let Message::Response { id, .. } = &msg else {
                    unreachable!()
                };
                let key = id.as_i64();
                let waiting = self.waiting.lock().expect("waiting lock");
                match key.and_then(|k| waiting.get(&k)) {
                    Some(w) => {
                        let _ = w.tx.send(Ok(msg));
                    }
                    None => tracing::debug!("upstream response to no request in flight"),
                }
                return None;
            }
            Message::Notification { method, params } if method == "notifications/progress" => {
                match self.progress(params) {
                    Ok(()) => return None,
                    Err(params) => Message::Notification { method, params },
                }
            }
            other => other,
        };
        // Announcements about the session, not a request: the listener's if one is open.
        let list_changed = matches!(&msg, Message::Notification { method, .. }
            if method.ends_with("/list_changed") || method == "notifications/resources/updated");
        if self.shared {
            let unheard = self.to_listener(msg);
            if unheard.is_some() {
                tracing::debug!("message from a shared upstream process dropped: nobody listens");
            }
            return unheard.filter(|m| matches!(m, Message::Request { .. }));
        }
        let msg = if list_changed {
            self.to_listener(msg)?
        } else {
            msg
        };
        let msg = self.to_latest(msg)?;
        if list_changed {
            return None;
        }
        self.to_listener(msg)
    }

    /// Hands a progress notification to the request whose token it names, with the
    /// agent's token restored; one naming a token of ours whose request has ended is
    /// dropped; gives the params back when the token is not one of ours.
    fn progress(&self, params: Option<Box<RawValue>>) -> Result<(), Option<Box<RawValue>>> {
        let Some(mut value) = params
            .as_deref()
            .and_then(|p| serde_json::from_str::<Value>(p.get()).ok())
        else {
            return Err(params);
        };
        let id = value
            .get("progressToken")
            .and_then(Value::as_str)
            .and_then(|t| t.strip_prefix(TOKEN_PREFIX))
            .and_then(|n| n.parse::<i64>().ok());
        let Some(id) = id else {
            return Err(params);
        };
        let waiting = self.waiting.lock().expect("waiting lock");
        let Some((w, original)) = waiting
            .get(&id)
            .and_then(|w| Some((w, w.progress.clone()?)))
        else {
            tracing::debug!("progress for a request no longer in flight dropped");
            return Ok(());
        };
        value["progressToken"] = original;
        let params = Some(crate::mcp::params::to_raw(&value));
        let _ = w.tx.send(Ok(Message::Notification {
            method: "notifications/progress".into(),
            params,
        }));
        Ok(())
    }

    fn to_latest(&self, msg: Message) -> Option<Message> {
        let waiting = self.waiting.lock().expect("waiting lock");
        match waiting.iter().max_by_key(|(id, _)| **id) {
            Some((_, w)) => match w.tx.send(Ok(msg)) {
                Ok(()) => None,
                Err(e) => e.0.ok(),
            },
            None => Some(msg),
        }
    }

    fn to_listener(&self, msg: Message) -> Option<Message> {
        let listener = self.listener.lock().expect("listener lock");
        match listener.as_ref() {
            Some(tx) => match tx.try_send(msg) {
                Ok(()) => None,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    tracing::debug!("upstream message dropped: its listener is behind");
                    None
                }
                Err(mpsc::error::TrySendError::Closed(m)) => Some(m),
            },
            None => Some(msg),
        }
    }

    /// Fails what generation `generation` had in flight and marks it dead.
    fn bury(&self, generation: u64, error: &UpstreamError) {
        self.dead.fetch_max(generation, Ordering::AcqRel);
        self.failed(generation);
        let waiting = self.waiting.lock().expect("waiting lock");
        for w in waiting.values().filter(|w| w.generation == generation) {
            let _ = w.tx.send(Err(error.clone()));
        }
        drop(waiting);
        self.listener.lock().expect("listener lock").take();
    }
}

/// Reads a pipe until it ends, routing what it sends; the pipe is killed when it
/// sends something that is not JSON-RPC. It holds the pipe weakly: the session
/// owns it.
async fn dispatch(
    routes: Arc<Routes>,
    mut inbound: mpsc::Receiver<Inbound>,
    generation: u64,
    pipe: Weak<Pipe>,
) {
    let error = loop {
        let Some(next) = inbound.recv().await else {
            break UpstreamError::Transport("the upstream connection ended".into());
        };
        match next {
            Inbound::Message(msg) => {
                if let Some(Message::Request { id, method, .. }) = routes.route(msg) {
                    answer_later(&pipe, answer_unrelayed(&method).response(&id));
                }
            }
            Inbound::TooLarge(Some(id), limit) => {
                let waiting = routes.waiting.lock().expect("waiting lock");
                if let Some(w) = id.as_i64().and_then(|k| waiting.get(&k)) {
                    let _ = w.tx.send(Err(UpstreamError::TooLarge(limit)));
                }
            }
            Inbound::TooLarge(None, limit) => {
                tracing::warn!(
                    limit,
                    "upstream sent a message over max_result_bytes that answers no request; skipped"
                );
            }
            Inbound::Garbage(bytes) => {
                tracing::warn!(
                    bytes,
                    "upstream wrote something that is not JSON-RPC; its in-flight requests fail and it is restarted"
                );
                break UpstreamError::Transport(
                    "the upstream wrote something that is not JSON-RPC".into(),
                );
            }
            Inbound::Closed(why) => break UpstreamError::Transport(why),
        }
    };
    routes.bury(generation, &error);
    if let Some(pipe) = pipe.upgrade() {
        pipe.kill();
    }
}

/// Sends an answer without holding up the dispatcher (a process that does not
/// read its stdin must not stop the session from reading its stdout).
fn answer_later(pipe: &Weak<Pipe>, line: String) {
    let Some(pipe) = pipe.upgrade() else {
        return;
    };
    tokio::spawn(async move {
        if tokio::time::timeout(UNRELAYED_SEND, pipe.send(line))
            .await
            .is_err()
        {
            tracing::debug!("answer to an upstream request not sent in time; dropped");
        }
    });
}

/// The request's params with the agent's progress token replaced by
/// `portcullis-<id>`, and the agent's token.
fn tokenise_progress(
    id: i64,
    params: &(impl Serialize + ?Sized),
) -> Result<(Box<RawValue>, Option<Value>), UpstreamError> {
    let raw = serde_json::value::to_raw_value(params)
        .map_err(|e| UpstreamError::Protocol(e.to_string()))?;
    if !raw.get().contains("progressToken") {
        return Ok((raw, None));
    }
    let mut value: Value =
        serde_json::from_str(raw.get()).map_err(|e| UpstreamError::Protocol(e.to_string()))?;
    let Some(token) = value
        .pointer_mut("/_meta/progressToken")
        .map(|t| std::mem::replace(t, Value::String(format!("{TOKEN_PREFIX}{id}"))))
    else {
        return Ok((raw, None));
    };
    Ok((crate::mcp::params::to_raw(&value), Some(token)))
}

/// The wait before the next opening after `failures` failures in a row.
fn backoff(failures: u32) -> Duration {
    let doubled = FIRST_BACKOFF.saturating_mul(1 << failures.saturating_sub(1).min(5));
    doubled.min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_thirty_seconds() {
        let secs: Vec<u64> = (1..=8).map(|f| backoff(f).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 30, 30, 30]);
    }

    #[test]
    fn progress_tokens_are_replaced_and_restored() {
        let params = json!({"name": "p", "_meta": {"progressToken": 7}});
        let (raw, token) = tokenise_progress(42, &params).unwrap();
        assert_eq!(token, Some(json!(7)));
        let sent: Value = serde_json::from_str(raw.get()).unwrap();
        assert_eq!(sent["_meta"]["progressToken"], "portcullis-42");

        let routes = Routes::default();
        let mut rx = routes.wait(42, 1, token);
        let note =
            crate::mcp::params::to_raw(&json!({"progressToken": "portcullis-42", "progress": 1}));
        assert!(routes.progress(Some(note)).is_ok());
        let Ok(Message::Notification { params, .. }) = rx.try_recv().unwrap() else {
            panic!("a notification");
        };
        let restored: Value = serde_json::from_str(params.unwrap().get()).unwrap();
        assert_eq!(restored["progressToken"], 7);
    }

    #[test]
    fn params_without_a_token_are_sent_as_they_are() {
        let (raw, token) = tokenise_progress(1, &json!({"b": 1, "a": "progressToken"})).unwrap();
        assert_eq!(token, None);
        assert_eq!(raw.get(), r#"{"b":1,"a":"progressToken"}"#);
    }

    #[test]
    fn notifications_go_to_the_latest_request_then_the_listener() {
        let routes = Routes::default();
        let mut first = routes.wait(1, 1, None);
        let mut second = routes.wait(2, 1, None);
        let log = || Message::Notification {
            method: "notifications/message".into(),
            params: None,
        };
        assert!(routes.route(log()).is_none());
        assert!(second.try_recv().is_ok(), "the most recent request gets it");
        assert!(first.try_recv().is_err());
        routes.waiting.lock().unwrap().clear();
        let (tx, mut listener) = mpsc::channel(4);
        *routes.listener.lock().unwrap() = Some(tx);
        assert!(routes.route(log()).is_none());
        assert!(
            listener.try_recv().is_ok(),
            "no request in flight: the listener"
        );
        let changed = Message::Notification {
            method: "notifications/tools/list_changed".into(),
            params: None,
        };
        let _third = routes.wait(3, 1, None);
        assert!(routes.route(changed).is_none());
        assert!(
            listener.try_recv().is_ok(),
            "list_changed prefers the listener"
        );
    }

    #[test]
    fn a_shared_pipe_never_hands_an_agent_what_it_cannot_attribute() {
        let routes = Routes {
            shared: true,
            ..Routes::default()
        };
        let mut request = routes.wait(1, 1, None);
        let log = || Message::Notification {
            method: "notifications/message".into(),
            params: None,
        };
        assert!(routes.route(log()).is_none(), "dropped, not given back");
        assert!(request.try_recv().is_err(), "not the request in flight");
        let (tx, mut listener) = mpsc::channel(4);
        *routes.listener.lock().unwrap() = Some(tx);
        assert!(routes.route(log()).is_none());
        assert!(listener.try_recv().is_ok(), "the listener gets it");
        assert!(request.try_recv().is_err());
        routes.listener.lock().unwrap().take();
        let ask = Message::Request {
            id: json!(5),
            method: "sampling/createMessage".into(),
            params: None,
        };
        assert!(
            matches!(routes.route(ask), Some(Message::Request { .. })),
            "a request nobody takes is given back to be answered"
        );
    }

    #[test]
    fn progress_for_an_ended_request_is_dropped() {
        let routes = Routes::default();
        let mut other = routes.wait(2, 1, None);
        let ours = crate::mcp::params::to_raw(&json!({"progressToken": "portcullis-1"}));
        assert!(routes.progress(Some(ours)).is_ok(), "ours: dropped");
        assert!(other.try_recv().is_err());
        let theirs = crate::mcp::params::to_raw(&json!({"progressToken": "abc"}));
        assert!(
            routes.progress(Some(theirs)).is_err(),
            "not ours: routed like any notification"
        );
    }

    #[test]
    fn a_request_registered_after_its_pipe_died_fails() {
        let routes = Routes::default();
        routes.bury(1, &UpstreamError::Transport("exited".into()));
        let _rx = routes.wait(7, 1, None);
        assert!(matches!(routes.alive(1), Err(UpstreamError::Transport(_))));
        assert!(routes.alive(2).is_ok());
    }

    #[test]
    fn a_dead_generation_fails_its_requests_only() {
        let routes = Routes::default();
        let mut old = routes.wait(1, 1, None);
        let mut new = routes.wait(2, 2, None);
        assert!(!routes.is_dead(1));
        routes.bury(1, &UpstreamError::Transport("exited".into()));
        assert!(matches!(
            old.try_recv(),
            Ok(Err(UpstreamError::Transport(_)))
        ));
        assert!(new.try_recv().is_err());
        assert!(routes.is_dead(1) && !routes.is_dead(2));
        assert!(
            !routes.backoff_left().is_zero(),
            "a failure starts the backoff"
        );
    }
}
