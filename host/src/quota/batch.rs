//! Group commit for quota checks. While one check of a key is on its way to Redis,
//! the checks of the same key that arrive meanwhile wait and then go out together
//! as one script call adding their number to the counter (`INCRBY n`); each learns
//! its own position in the window from the new total. N checks in one call count
//! exactly as N calls of one would, so the limit stays exact across a fleet. A leader
//! lets the thread's other ready tasks run once before it sends (no timer), so checks
//! that arrived in the same burst join its batch; a lone check goes out at once. Under
//! load this cuts the Redis round trips, and the CPU they cost the gateway and Redis,
//! by the batch size.
//!
//! One caller at a time "leads": it sends the batch and then hands the lead to the
//! first check that arrived meanwhile. A leader or a waiter dropped mid-way (its
//! request was cancelled) passes the lead on, so a group never stalls.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Mutex, PoisonError};

use tokio::sync::oneshot;

/// What a waiting check is told: its count, or that it now leads the next batch.
enum Turn {
    Counted(Result<u64, String>),
    Lead,
}

#[derive(Default)]
struct Group {
    waiting: VecDeque<oneshot::Sender<Turn>>,
}

/// The batches of one thread, by key. A key has a group only while a check of it is
/// in flight.
#[derive(Default)]
pub(super) struct Batcher {
    groups: Mutex<HashMap<String, Group>>,
}

impl Batcher {
    /// Counts one call under `key`. `add(n)` adds `n` to the key's counter and returns
    /// the new total; it is called only if this caller leads a batch. Returns the
    /// call's position in the window (1 for the first call).
    pub(super) async fn count<F, Fut>(&self, key: &str, add: F) -> Result<u64, String>
    where
        F: FnOnce(u64) -> Fut,
        Fut: Future<Output = Result<u64, String>>,
    {
        let waiting = {
            let mut groups = self.lock();
            match groups.get_mut(key) {
                Some(group) => {
                    let (tx, rx) = oneshot::channel();
                    group.waiting.push_back(tx);
                    Some(rx)
                }
                None => {
                    groups.insert(key.to_string(), Group::default());
                    None
                }
            }
        };
        if let Some(rx) = waiting {
            let mut wait = Waiting {
                batcher: self,
                key,
                rx: Some(rx),
            };
            match wait.turn().await {
                Turn::Counted(counted) => return counted,
                Turn::Lead => {}
            }
        }
        self.lead(key, add).await
    }

    async fn lead<F, Fut>(&self, key: &str, add: F) -> Result<u64, String>
    where
        F: FnOnce(u64) -> Fut,
        Fut: Future<Output = Result<u64, String>>,
    {
        let mut leading = Leading {
            batcher: self,
            key,
            others: Vec::new(),
            done: false,
        };
        // Let the checks that are ready to run on this thread now join the batch.
        tokio::task::yield_now().await;
        leading.others = {
            let mut groups = self.lock();
            let group = groups.entry(key.to_string()).or_default();
            group.waiting.drain(..).collect()
        };
        let n = leading.others.len() as u64 + 1;
        let total = add(n).await;
        leading.done = true;
        let others = std::mem::take(&mut leading.others);
        // The next batch goes out before this one's answers are handed round.
        self.pass_lead(key);
        for (i, tx) in others.into_iter().enumerate() {
            let position = total.clone().map(|t| (t + 2 + i as u64).saturating_sub(n));
            let _ = tx.send(Turn::Counted(position));
        }
        total.map(|t| (t + 1).saturating_sub(n))
    }

    /// Gives the lead to the oldest live waiter, or closes the group if none is left.
    fn pass_lead(&self, key: &str) {
        let mut groups = self.lock();
        let Some(group) = groups.get_mut(key) else {
            return;
        };
        while let Some(tx) = group.waiting.pop_front() {
            if tx.send(Turn::Lead).is_ok() {
                return;
            }
        }
        groups.remove(key);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Group>> {
        self.groups.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A check waiting for its turn; if dropped after being handed the lead, it passes
/// the lead on.
struct Waiting<'a> {
    batcher: &'a Batcher,
    key: &'a str,
    rx: Option<oneshot::Receiver<Turn>>,
}

impl Waiting<'_> {
    async fn turn(&mut self) -> Turn {
        let rx = self.rx.as_mut().expect("waiting");
        let turn = rx.await;
        self.rx = None;
        // The sender is only dropped with the batcher (never while a check waits).
        turn.unwrap_or_else(|_| Turn::Counted(Err("quota check abandoned".into())))
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if let Some(mut rx) = self.rx.take() {
            rx.close();
            if let Ok(Turn::Lead) = rx.try_recv() {
                self.batcher.pass_lead(self.key);
            }
        }
    }
}

/// A leader's batch; if dropped before its call finished, the batch goes back to the
/// front of the queue and the lead is passed on.
struct Leading<'a> {
    batcher: &'a Batcher,
    key: &'a str,
    others: Vec<oneshot::Sender<Turn>>,
    done: bool,
}

impl Drop for Leading<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        {
            let mut groups = self.batcher.lock();
            let group = groups.entry(self.key.to_string()).or_default();
            for tx in self.others.drain(..).rev() {
                group.waiting.push_front(tx);
            }
        }
        self.batcher.pass_lead(self.key);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;

    struct Counter {
        total: AtomicU64,
        calls: AtomicU64,
    }

    impl Counter {
        fn new() -> Arc<Counter> {
            Arc::new(Counter {
                total: AtomicU64::new(0),
                calls: AtomicU64::new(0),
            })
        }

        async fn add(&self, n: u64) -> Result<u64, String> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            Ok(self.total.fetch_add(n, Ordering::SeqCst) + n)
        }
    }

    #[tokio::test]
    async fn concurrent_checks_share_calls_and_get_distinct_positions() {
        let batcher = Arc::new(Batcher::default());
        let counter = Counter::new();
        let mut tasks = Vec::new();
        for _ in 0..200 {
            let (b, c) = (batcher.clone(), counter.clone());
            tasks.push(tokio::spawn(async move {
                b.count("k", |n| async move { c.add(n).await }).await
            }));
        }
        let mut positions = Vec::new();
        for t in tasks {
            positions.push(t.await.unwrap().unwrap());
        }
        positions.sort_unstable();
        assert_eq!(positions, (1..=200).collect::<Vec<_>>());
        assert_eq!(counter.total.load(Ordering::SeqCst), 200);
        let calls = counter.calls.load(Ordering::SeqCst);
        assert!(
            calls < 200,
            "{calls} script calls for 200 checks: no batching"
        );
        assert!(batcher.lock().is_empty(), "idle groups are removed");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn checks_ready_together_go_out_in_one_call() {
        let batcher = Arc::new(Batcher::default());
        let counter = Counter::new();
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (b, c) = (batcher.clone(), counter.clone());
                tokio::spawn(async move { b.count("k", |n| async move { c.add(n).await }).await })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        // The first leader waits one turn of the scheduler, so the seven checks
        // spawned with it join its batch instead of the next one.
        assert_eq!(counter.calls.load(Ordering::SeqCst), 1);
        assert_eq!(counter.total.load(Ordering::SeqCst), 8);
    }

    #[tokio::test]
    async fn a_lone_check_goes_out_alone() {
        let batcher = Batcher::default();
        let counter = Counter::new();
        for expected in 1..=3 {
            let got = batcher.count("k", |n| counter.add(n)).await.unwrap();
            assert_eq!(got, expected);
        }
        assert_eq!(counter.calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn errors_reach_every_check_of_the_batch() {
        let batcher = Arc::new(Batcher::default());
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let b = batcher.clone();
            tasks.push(tokio::spawn(async move {
                b.count("k", |_| async {
                    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                    Err::<u64, _>("redis down".to_string())
                })
                .await
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap(), Err("redis down".to_string()));
        }
    }

    #[tokio::test]
    async fn cancelled_leaders_and_waiters_do_not_stall_the_group() {
        let batcher = Arc::new(Batcher::default());
        let counter = Counter::new();
        // A leader that never finishes, and waiters behind it; then the leader and
        // every other waiter are cancelled while the survivors still get counted.
        let b = batcher.clone();
        let stuck = tokio::spawn(async move {
            b.count("k", |_| std::future::pending::<Result<u64, String>>())
                .await
        });
        tokio::task::yield_now().await;
        let mut tasks = Vec::new();
        for _ in 0..10 {
            let (b, c) = (batcher.clone(), counter.clone());
            tasks.push(tokio::spawn(async move {
                b.count("k", |n| async move { c.add(n).await }).await
            }));
        }
        tokio::task::yield_now().await;
        stuck.abort();
        for (i, t) in tasks.iter().enumerate() {
            if i % 2 == 1 {
                t.abort();
            }
        }
        let mut done = 0;
        for t in tasks {
            if let Ok(counted) = tokio::time::timeout(std::time::Duration::from_secs(5), t)
                .await
                .expect("a check stalled")
            {
                assert!(counted.is_ok());
                done += 1;
            }
        }
        assert!(done >= 5, "{done} checks finished");
        assert!(batcher.lock().is_empty());
    }
}
