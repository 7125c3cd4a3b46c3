//! The audit trail: one [`Record`] per `tools/list` and `tools/call`, allowed or not,
//! per relayed server-to-client request and per request refused at a per-agent limit,
//! answering "who called what, and which policy allowed it".
//!
//! Records never carry secrets or call arguments. Each is written twice:
//! - at once, as one structured log line (target `portcullis::audit`, `key=value`
//!   fields), whatever happens to the sink;
//! - as a row of the `request_logs` table of the configured sink (`[audit]`): SQLite
//!   (the default, `audit.db` beside the config, WAL mode) or PostgreSQL. The table and
//!   its indexes are created when missing.
//!
//! Rows never touch the sink on the request path: [`AuditLog::record`] puts the record
//! on a bounded queue (`queue_capacity`) and a background writer takes them off in
//! batches (up to `batch_size` rows, or whatever arrived within `flush_interval_ms` of
//! the first one), one transaction per batch.
//!
//! When the queue is full:
//! - `on_full = "wait"` (the default): the request waits for room before it answers.
//!   Nothing is lost and memory stays bounded; a warning is logged at most once a
//!   second while requests wait. If the sink stays down long enough for the queue to
//!   fill, requests stall until it comes back.
//! - `on_full = "drop"`: the row is dropped (its log line was still written), counted
//!   in [`AuditLog::dropped`], and a warning with the running total is logged at most
//!   once a second. Requests never wait.
//!
//! A failing sink (database down, locked, schema missing) is retried with exponential
//! backoff (100 ms doubling to 5 s). The writer keeps the failed batch and retries it
//! whole; meanwhile rows pile up in the queue, so the loss-or-wait rule above applies.
//! Each failure is logged with the sink, the error, and the rows held back.
//!
//! On SIGTERM/SIGINT `serve` calls [`AuditLog::shutdown`] after the connections have
//! drained: the queue is closed and the writer flushes everything in it (for at most
//! [`SHUTDOWN_FLUSH`]), then logs how many rows it wrote and dropped.
//!
//! Operational messages of this module use the target `portcullis::request_log`, so
//! that only the per-request lines carry `portcullis::audit`.

mod postgres;
pub(crate) mod query;
mod sqlite;
pub(crate) mod time;
mod writer;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::config::{AuditSettings, OnFull, SinkSettings};
pub(crate) use writer::{BoxFuture, Sink};

/// The tracing target of this module's operational messages (not the audit lines).
pub(crate) const LOG_TARGET: &str = "portcullis::request_log";

/// How long shutdown waits for the writer to store what is queued.
pub(crate) const SHUTDOWN_FLUSH: Duration = Duration::from_secs(30);

/// One audited request.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Record {
    /// Unix time in milliseconds when the request arrived.
    pub time_ms: u64,
    pub request_id: String,
    pub session_id: Option<String>,
    pub org: String,
    pub agent: String,
    pub connector: Option<String>,
    pub tool: Option<String>,
    pub method: String,
    /// HTTP-like outcome: 200, 401, 403 scope, 404 hidden/unknown, 429 quota or a
    /// per-agent limit, 500 policy error, 502 upstream, 504 timeout.
    pub status: u16,
    /// JSON-RPC error code sent to the agent, if any.
    pub rpc_code: Option<i64>,
    pub latency_ms: f64,
    /// The policy that decided (the denying one, or the last of the chain that allowed).
    pub policy: Option<String>,
    pub policy_digest: Option<String>,
    /// Why a request was refused, for the operator (never shown to the agent).
    pub reason: Option<String>,
}

/// Counters shared by the queue and its writer.
#[derive(Default)]
pub(crate) struct Stats {
    /// Rows that entered the queue.
    accepted: AtomicU64,
    /// Rows the sink committed.
    written: AtomicU64,
    /// Rows not stored: queue full with `on_full = "drop"`, or sent after shutdown.
    dropped: AtomicU64,
}

struct Queue {
    tx: mpsc::Sender<Record>,
    on_full: OnFull,
    sink: String,
    stats: Arc<Stats>,
    /// `now_ms()` of the last "queue full" warning (at most one a second).
    last_warning_ms: AtomicU64,
    /// Set by `shutdown`: later rows are not queued.
    closed: AtomicBool,
    stop: Mutex<Option<oneshot::Sender<()>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    /// Wakes the writer early when a full batch is waiting; otherwise it wakes once
    /// per flush interval, not once per row.
    full: Arc<tokio::sync::Notify>,
    batch_size: usize,
}

impl Queue {
    /// Tells the writer when a full batch is waiting.
    fn queued(&self) {
        self.stats.accepted.fetch_add(1, Ordering::Relaxed);
        if self.tx.max_capacity() - self.tx.capacity() >= self.batch_size {
            self.full.notify_one();
        }
    }
}

/// Where audit records go: the log, and with a sink, the `request_logs` table.
#[derive(Default)]
pub(crate) struct AuditLog {
    queue: Option<Queue>,
}

impl AuditLog {
    /// Log lines only, no table: for commands that do not serve (e.g. `agents eligible`).
    pub(crate) fn new() -> Self {
        AuditLog { queue: None }
    }

    /// Opens the configured sink (creating the table and indexes) and starts the
    /// background writer. Needs a Tokio runtime. A SQLite file that cannot be opened is
    /// an error; a PostgreSQL server that cannot be reached is logged and retried by
    /// the writer, so the gateway starts anyway.
    pub(crate) async fn start(settings: &AuditSettings) -> anyhow::Result<AuditLog> {
        let sink: Box<dyn Sink> = match &settings.sink {
            SinkSettings::Sqlite { path } => Box::new(sqlite::SqliteSink::open(path)?),
            SinkSettings::Postgres { url } => Box::new(postgres::PgSink::start(url).await?),
            SinkSettings::None => {
                tracing::warn!(
                    "audit sink is \"none\": no request_logs table is written; each request is still logged"
                );
                return Ok(AuditLog::new());
            }
        };
        Ok(AuditLog::spawn(sink, settings))
    }

    /// Starts the writer on `sink` with the queue settings of `settings` (its `sink`
    /// field is not used).
    pub(crate) fn spawn(sink: Box<dyn Sink>, settings: &AuditSettings) -> AuditLog {
        let (tx, rx) = mpsc::channel(settings.queue_capacity);
        let (stop_tx, stop_rx) = oneshot::channel();
        let stats = Arc::new(Stats::default());
        let name = sink.describe();
        tracing::info!(
            target: LOG_TARGET,
            sink = %name,
            queue_capacity = settings.queue_capacity,
            batch_size = settings.batch_size,
            flush_interval_ms = settings.flush_interval.as_millis() as u64,
            on_full = ?settings.on_full,
            "audit log writer started"
        );
        let full = Arc::new(tokio::sync::Notify::new());
        let writer = tokio::spawn(writer::run(
            rx,
            sink,
            settings.batch_size,
            settings.flush_interval,
            stats.clone(),
            full.clone(),
            stop_rx,
        ));
        AuditLog {
            queue: Some(Queue {
                tx,
                on_full: settings.on_full,
                sink: name,
                stats,
                last_warning_ms: AtomicU64::new(0),
                closed: AtomicBool::new(false),
                stop: Mutex::new(Some(stop_tx)),
                writer: Mutex::new(Some(writer)),
                full,
                batch_size: settings.batch_size,
            }),
        }
    }

    /// Logs the record and queues it for the sink. Returns at once unless the queue is
    /// full and `on_full = "wait"`; then it waits for room.
    pub(crate) async fn record(&self, r: Record) {
        log_line(&r);
        // request metrics, outcome on the trace
        crate::telemetry::spans::audited(&crate::telemetry::spans::Audited {
            method: &r.method,
            connector: r.connector.as_deref(),
            status: r.status,
            rpc_code: r.rpc_code,
            latency_ms: r.latency_ms,
            policy: r.policy.as_deref(),
            policy_digest: r.policy_digest.as_deref(),
        });
        let Some(q) = &self.queue else { return };
        if q.closed.load(Ordering::Relaxed) {
            return q.count_closed();
        }
        match q.tx.try_send(r) {
            Ok(()) => q.queued(),
            Err(mpsc::error::TrySendError::Full(r)) => match q.on_full {
                OnFull::Wait => {
                    if q.may_warn() {
                        tracing::warn!(
                            target: LOG_TARGET,
                            sink = %q.sink,
                            queue_capacity = q.tx.max_capacity(),
                            "audit queue full: requests wait for the writer (on_full = \"wait\")"
                        );
                    }
                    match q.tx.send(r).await {
                        Ok(()) => q.queued(),
                        Err(_) => q.count_closed(),
                    }
                }
                OnFull::Drop => {
                    let total = q.stats.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                    if q.may_warn() {
                        tracing::warn!(
                            target: LOG_TARGET,
                            sink = %q.sink,
                            queue_capacity = q.tx.max_capacity(),
                            dropped_total = total,
                            "audit queue full: row dropped (on_full = \"drop\")"
                        );
                    }
                }
            },
            Err(mpsc::error::TrySendError::Closed(_)) => q.count_closed(),
        }
    }

    /// Rows waiting in the queue (not counting the batch the writer holds).
    pub(crate) fn queue_depth(&self) -> usize {
        self.queue
            .as_ref()
            .map_or(0, |q| q.tx.max_capacity() - q.tx.capacity())
    }

    /// Rows dropped so far (queue full with `on_full = "drop"`, or after shutdown).
    pub(crate) fn dropped(&self) -> u64 {
        self.queue
            .as_ref()
            .map_or(0, |q| q.stats.dropped.load(Ordering::Relaxed))
    }

    /// Rows the sink has committed so far (the writer's tests count them).
    #[cfg(test)]
    pub(crate) fn written(&self) -> u64 {
        self.queue
            .as_ref()
            .map_or(0, |q| q.stats.written.load(Ordering::Relaxed))
    }

    /// Closes the queue and waits (up to `timeout`) for the writer to store every
    /// queued row. Returns false if it did not finish in time (what it still held is
    /// logged as lost). Rows recorded afterwards are counted as dropped.
    pub(crate) async fn shutdown(&self, timeout: Duration) -> bool {
        let Some(q) = &self.queue else { return true };
        q.closed.store(true, Ordering::Relaxed);
        if let Some(stop) = q.stop.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = stop.send(());
        }
        let Some(mut writer) = q.writer.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            return true;
        };
        tracing::info!(
            target: LOG_TARGET,
            sink = %q.sink,
            queued = self.queue_depth(),
            "flushing the audit log"
        );
        let done = tokio::time::timeout(timeout, &mut writer).await.is_ok();
        if !done {
            writer.abort();
        }
        let written = q.stats.written.load(Ordering::Relaxed);
        let dropped = q.stats.dropped.load(Ordering::Relaxed);
        if done {
            tracing::info!(target: LOG_TARGET, sink = %q.sink, written, dropped, "audit log flushed");
        } else {
            let accepted = q.stats.accepted.load(Ordering::Relaxed);
            tracing::error!(
                target: LOG_TARGET,
                sink = %q.sink,
                written,
                dropped,
                lost = accepted.saturating_sub(written),
                "audit log: the sink did not take the remaining rows within {timeout:?}; they are lost"
            );
        }
        done
    }
}

impl Queue {
    fn may_warn(&self) -> bool {
        let now = now_ms();
        let last = self.last_warning_ms.load(Ordering::Relaxed);
        now >= last + 1000
            && self
                .last_warning_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    fn count_closed(&self) {
        let total = self.stats.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        if self.may_warn() {
            tracing::warn!(
                target: LOG_TARGET,
                dropped_total = total,
                "audit log already closed (shutting down): row not stored"
            );
        }
    }
}

/// The one-line-per-request log (target `portcullis::audit`).
fn log_line(r: &Record) {
    tracing::info!(
        target: "portcullis::audit",
        request_id = %r.request_id,
        session_id = r.session_id.as_deref().unwrap_or("-"),
        org = %r.org,
        agent = %r.agent,
        connector = r.connector.as_deref().unwrap_or("-"),
        tool = r.tool.as_deref().unwrap_or("-"),
        method = %r.method,
        status = r.status,
        rpc_code = r.rpc_code.unwrap_or(0),
        latency_ms = r.latency_ms,
        policy = r.policy.as_deref().unwrap_or("-"),
        policy_digest = r.policy_digest.as_deref().unwrap_or("-"),
        reason = r.reason.as_deref().unwrap_or("-"),
        "request"
    );
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
