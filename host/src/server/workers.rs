//! Thread-per-core serving. `server.workers` threads each run a single-threaded tokio
//! runtime; the acceptor hands every new agent connection to the next worker in turn.
//! From then on the connection, each request on it, the upstream connections it uses
//! (one pool per thread, see `upstream::http`) and the tasks it spawns stay on that
//! thread, so a request never waits for another thread to be woken. The multi-threaded
//! runtime this replaces spent most of a lightly loaded request in those wake-ups.
//!
//! A connection is handed over as a `std::net::TcpStream` and registered with the
//! worker's own reactor, because a tokio socket belongs to the runtime that made it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::watch;

use super::spin::Spin;

/// How long a stopping worker waits for its blocking tasks (policy evaluations).
const STOP_GRACE: Duration = Duration::from_secs(2);

pub(crate) struct Workers {
    handles: Vec<Handle>,
    next: AtomicUsize,
    stop: watch::Sender<bool>,
    threads: Vec<JoinHandle<()>>,
}

impl Workers {
    /// Starts `n` worker threads (at least one), each polling for up to `idle_spin`
    /// before it sleeps (`server.idle_spin_us`, see `spin`).
    pub(crate) fn start(n: usize, idle_spin: Duration) -> std::io::Result<Workers> {
        let (stop, _) = watch::channel(false);
        let mut handles = Vec::with_capacity(n);
        let mut threads = Vec::with_capacity(n);
        for i in 0..n.max(1) {
            let spin = Spin::new(idle_spin);
            let hook = spin.clone();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .thread_name(format!("portcullis-w{i}-blocking"))
                .on_thread_park(move || hook.before_park())
                .build()?;
            spin.attach(&rt);
            handles.push(rt.handle().clone());
            let mut stopped = stop.subscribe();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("portcullis-w{i}"))
                    .spawn(move || {
                        rt.block_on(async move {
                            crate::logging::batch_this_thread();
                            let _ = stopped.wait_for(|s| *s).await;
                        });
                        rt.shutdown_timeout(STOP_GRACE);
                        crate::logging::flush_this_thread();
                    })?,
            );
        }
        Ok(Workers {
            handles,
            next: AtomicUsize::new(0),
            stop,
            threads,
        })
    }

    /// The runtime of the worker that takes the next connection (round robin).
    pub(crate) fn next(&self) -> &Handle {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len();
        &self.handles[i]
    }

    pub(crate) fn count(&self) -> usize {
        self.handles.len()
    }

    /// Stops every worker (tasks still running are cancelled) and waits for the threads.
    pub(crate) fn stop(self) {
        let _ = self.stop.send(true);
        for t in self.threads {
            let _ = t.join();
        }
    }
}
