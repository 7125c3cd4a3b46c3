//! The background writer: takes records off the queue in batches and stores each batch
//! in one transaction, retrying a failing sink with backoff while keeping the batch.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::{Notify, mpsc, oneshot};
use tokio::time::Instant;

use super::{LOG_TARGET, Record, Stats};

pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A place rows go (`request_logs` in SQLite or PostgreSQL).
pub(crate) trait Sink: Send + 'static {
    /// Stores `rows` in one transaction: all of them or, on error, none. The rows come
    /// back with the outcome (the writer keeps them for a retry, and reuses the
    /// buffer), so a sink that works on another thread moves them there and back
    /// instead of copying them.
    fn write(&mut self, rows: Vec<Record>) -> BoxFuture<'_, (Vec<Record>, anyhow::Result<()>)>;
    /// For log lines: the kind and location, never a password.
    fn describe(&self) -> String;
}

const FIRST_RETRY: Duration = Duration::from_millis(100);
const MAX_RETRY: Duration = Duration::from_secs(5);

/// Runs until the queue is closed (by `stop`, or because every sender is gone) and
/// everything in it has been stored.
pub(super) async fn run(
    mut rx: mpsc::Receiver<Record>,
    mut sink: Box<dyn Sink>,
    batch_size: usize,
    flush_interval: Duration,
    stats: Arc<Stats>,
    full: Arc<Notify>,
    mut stop: oneshot::Receiver<()>,
) {
    let mut batch: Vec<Record> = Vec::with_capacity(batch_size);
    let mut stopping = false;
    loop {
        let got = tokio::select! {
            n = rx.recv_many(&mut batch, batch_size) => n,
            _ = &mut stop, if !stopping => {
                stopping = true;
                rx.close();
                continue;
            }
        };
        if got == 0 {
            break;
        }
        if batch.len() < batch_size && !stopping {
            // Let the batch gather without waking for every row: until the flush
            // deadline, or until the producers see a full batch waiting (`full`).
            let deadline = Instant::now() + flush_interval;
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => {}
                _ = full.notified() => {}
                _ = &mut stop => {
                    stopping = true;
                    rx.close();
                }
            }
            while batch.len() < batch_size {
                match rx.try_recv() {
                    Ok(r) => batch.push(r),
                    Err(_) => break,
                }
            }
        }
        batch = store(sink.as_mut(), batch, &stats, &rx).await;
        batch.clear();
    }
    tracing::debug!(target: LOG_TARGET, "audit writer finished");
}

/// Stores `batch`, retrying until the sink takes it; the batch's buffer, for reuse.
async fn store(
    sink: &mut dyn Sink,
    mut batch: Vec<Record>,
    stats: &Stats,
    rx: &mpsc::Receiver<Record>,
) -> Vec<Record> {
    let mut delay = FIRST_RETRY;
    let mut failures = 0u32;
    loop {
        let (rows, result) = sink.write(batch).await;
        batch = rows;
        match result {
            Ok(()) => {
                stats
                    .written
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                if failures > 0 {
                    tracing::info!(
                        target: LOG_TARGET,
                        sink = %sink.describe(),
                        rows = batch.len(),
                        failures,
                        "audit sink recovered: held rows written"
                    );
                }
                return batch;
            }
            Err(e) => {
                failures += 1;
                tracing::error!(
                    target: LOG_TARGET,
                    sink = %sink.describe(),
                    error = %format!("{e:#}"),
                    held_rows = batch.len(),
                    queued = rx.len(),
                    retry_in_ms = delay.as_millis() as u64,
                    failures,
                    "audit sink write failed; the rows are kept and retried"
                );
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(MAX_RETRY);
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::AtomicU32;

    use super::super::AuditLog;
    use super::*;
    use crate::config::{AuditSettings, OnFull, SinkSettings};

    /// A sink that keeps rows in memory, sleeps `delay` per batch and fails its first
    /// `fail_first` writes.
    struct MemSink {
        rows: Arc<Mutex<Vec<Record>>>,
        batches: Arc<Mutex<Vec<usize>>>,
        delay: Duration,
        fail_first: Arc<AtomicU32>,
    }

    impl Sink for MemSink {
        fn write(&mut self, rows: Vec<Record>) -> BoxFuture<'_, (Vec<Record>, anyhow::Result<()>)> {
            Box::pin(async move {
                tokio::time::sleep(self.delay).await;
                if self
                    .fail_first
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                    .is_ok()
                {
                    return (rows, Err(anyhow::anyhow!("sink unavailable (test)")));
                }
                self.rows.lock().unwrap().extend_from_slice(&rows);
                self.batches.lock().unwrap().push(rows.len());
                (rows, Ok(()))
            })
        }
        fn describe(&self) -> String {
            "memory".into()
        }
    }

    struct Harness {
        log: AuditLog,
        rows: Arc<Mutex<Vec<Record>>>,
        batches: Arc<Mutex<Vec<usize>>>,
    }

    fn harness(
        capacity: usize,
        batch: usize,
        flush_ms: u64,
        on_full: OnFull,
        delay: Duration,
        fail_first: u32,
    ) -> Harness {
        let rows = Arc::new(Mutex::new(Vec::new()));
        let batches = Arc::new(Mutex::new(Vec::new()));
        let sink = MemSink {
            rows: rows.clone(),
            batches: batches.clone(),
            delay,
            fail_first: Arc::new(AtomicU32::new(fail_first)),
        };
        let settings = AuditSettings {
            sink: SinkSettings::Sqlite {
                path: "unused".into(),
            },
            queue_capacity: capacity,
            batch_size: batch,
            flush_interval: Duration::from_millis(flush_ms),
            on_full,
        };
        Harness {
            log: AuditLog::spawn(Box::new(sink), &settings),
            rows,
            batches,
        }
    }

    pub(crate) fn record(i: usize) -> Record {
        Record {
            time_ms: 1_700_000_000_000 + i as u64,
            request_id: format!("req-{i}"),
            session_id: Some("s".into()),
            org: "acme".into(),
            agent: "agent".into(),
            connector: Some("conn".into()),
            tool: Some("echo".into()),
            method: "tools/call".into(),
            status: 200,
            rpc_code: None,
            latency_ms: 1.5,
            policy: None,
            policy_digest: None,
            reason: None,
        }
    }

    #[tokio::test]
    async fn batches_by_size_and_flushes_everything_on_shutdown() {
        let h = harness(10_000, 100, 50, OnFull::Wait, Duration::ZERO, 0);
        for i in 0..1000 {
            h.log.record(record(i)).await;
        }
        assert!(h.log.shutdown(Duration::from_secs(10)).await);
        let rows = h.rows.lock().unwrap();
        assert_eq!(rows.len(), 1000);
        // In order, nothing twice.
        assert!(
            rows.iter()
                .enumerate()
                .all(|(i, r)| r.request_id == format!("req-{i}"))
        );
        assert!(h.batches.lock().unwrap().iter().all(|&n| n <= 100));
        assert_eq!((h.log.written(), h.log.dropped()), (1000, 0));
    }

    #[tokio::test]
    async fn flushes_a_partial_batch_after_the_interval() {
        let h = harness(100, 100, 30, OnFull::Wait, Duration::ZERO, 0);
        h.log.record(record(0)).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(h.rows.lock().unwrap().len(), 1, "written without shutdown");
        assert!(h.log.shutdown(Duration::from_secs(5)).await);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn wait_mode_loses_nothing_behind_a_slow_sink() {
        let h = harness(4, 2, 1, OnFull::Wait, Duration::from_millis(5), 0);
        let log = Arc::new(h.log);
        let mut tasks = Vec::new();
        for t in 0..4 {
            let log = log.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..50 {
                    log.record(record(t * 1000 + i)).await;
                    assert!(log.queue_depth() <= 4);
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert!(log.shutdown(Duration::from_secs(10)).await);
        assert_eq!(h.rows.lock().unwrap().len(), 200);
        assert_eq!(log.dropped(), 0);
    }

    #[tokio::test]
    async fn drop_mode_drops_and_counts_when_full() {
        let h = harness(3, 1, 1, OnFull::Drop, Duration::from_millis(200), 0);
        let started = std::time::Instant::now();
        for i in 0..50 {
            h.log.record(record(i)).await;
        }
        assert!(
            started.elapsed() < Duration::from_millis(150),
            "recording never waits in drop mode"
        );
        let dropped = h.log.dropped();
        // The writer holds at most one batch and the queue three rows.
        assert!((46..=47).contains(&dropped), "dropped {dropped}");
        assert!(h.log.shutdown(Duration::from_secs(10)).await);
        assert_eq!(h.rows.lock().unwrap().len() as u64 + h.log.dropped(), 50);
        assert_eq!(h.log.written() + h.log.dropped(), 50);
    }

    #[tokio::test]
    async fn a_failing_sink_is_retried_and_keeps_its_rows() {
        let h = harness(1000, 10, 1, OnFull::Wait, Duration::ZERO, 3);
        for i in 0..25 {
            h.log.record(record(i)).await;
        }
        assert!(h.log.shutdown(Duration::from_secs(10)).await);
        let rows = h.rows.lock().unwrap();
        assert_eq!(rows.len(), 25);
        assert!(
            rows.iter()
                .enumerate()
                .all(|(i, r)| r.request_id == format!("req-{i}"))
        );
    }

    #[tokio::test]
    async fn shutdown_gives_up_on_a_dead_sink_and_later_rows_count_as_dropped() {
        let h = harness(100, 10, 1, OnFull::Wait, Duration::ZERO, u32::MAX);
        h.log.record(record(0)).await;
        assert!(!h.log.shutdown(Duration::from_millis(300)).await);
        h.log.record(record(1)).await;
        assert_eq!(h.log.dropped(), 1);
        assert!(h.rows.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn without_a_sink_only_the_line_is_written() {
        let log = AuditLog::new();
        log.record(record(0)).await;
        assert_eq!((log.queue_depth(), log.dropped(), log.written()), (0, 0, 0));
        assert!(log.shutdown(Duration::from_millis(10)).await);
    }
}
