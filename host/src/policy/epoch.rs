//! The epoch ticker. Policy deadlines are whole epoch ticks (wasmtime's epoch
//! interruption), so something must advance the engine's epoch every [`TICK`] while a
//! policy runs. This thread does, and only then: with no evaluation in progress it
//! sleeps, because a gateway whose chain is empty or whose decisions are reused would
//! otherwise wake it 500 times a second for nothing. An evaluation marks itself busy
//! ([`Ticker::busy`]); the first one wakes the thread, which ticks until the last one
//! is done.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::Thread;
use std::time::Duration;

use wasmtime::Engine;

/// How often the epoch advances while a policy runs; deadlines are whole ticks.
pub(super) const TICK: Duration = Duration::from_millis(2);
/// How often an idle ticker looks whether its engine is still there.
const IDLE_CHECK: Duration = Duration::from_secs(1);

pub(super) struct Ticker {
    running: Arc<AtomicUsize>,
    thread: Thread,
}

impl Ticker {
    /// Starts the thread; it ends once `engine` is dropped.
    pub(super) fn start(engine: &Engine) -> std::io::Result<Ticker> {
        let running = Arc::new(AtomicUsize::new(0));
        let weak = engine.weak();
        let busy = running.clone();
        let handle = std::thread::Builder::new()
            .name("policy-epoch".into())
            .spawn(move || {
                loop {
                    if busy.load(Ordering::Acquire) == 0 {
                        // Woken by the next evaluation (an unpark before this park is
                        // not lost: it makes the park return at once).
                        std::thread::park_timeout(IDLE_CHECK);
                        if weak.upgrade().is_none() {
                            return;
                        }
                        continue;
                    }
                    // A whole tick after the evaluation started, not at once, so a
                    // one-tick deadline still gives the policy one tick.
                    std::thread::sleep(TICK);
                    match weak.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => return,
                    }
                }
            })?;
        Ok(Ticker {
            running,
            thread: handle.thread().clone(),
        })
    }

    /// Marks an evaluation as running until the guard is dropped; the epoch advances
    /// while any is.
    pub(super) fn busy(&self) -> Busy<'_> {
        if self.running.fetch_add(1, Ordering::AcqRel) == 0 {
            self.thread.unpark();
        }
        Busy(self)
    }
}

/// An evaluation in progress (see [`Ticker::busy`]).
pub(super) struct Busy<'a>(&'a Ticker);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::AcqRel);
    }
}
