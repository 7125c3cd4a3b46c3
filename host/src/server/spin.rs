//! Polling before sleeping. A worker that runs out of work would sleep in
//! `epoll_wait` until the next event; with `server.idle_spin_us` it first watches its
//! epoll instance for up to that long, yielding the core to any other runnable
//! thread between looks, and sleeps only if nothing arrived. A request's upstream
//! answer and the agent's next request then usually find the worker awake: on a
//! virtual machine a sleeping core halts and waking it costs tens of microseconds,
//! twice per request, which is more than the gateway's own work on a call.
//!
//! Tokio does not expose its epoll descriptor, so [`Spin::attach`] finds it (the
//! epoll instance that a probe socket registered with the runtime shows up in). If
//! it cannot (not Linux), the worker sleeps at once as it would without the setting. Looking is `poll(2)` on the epoll descriptor, which reports
//! ready events without taking them; tokio's own `epoll_wait` then returns at once.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

/// The epoll descriptor of one worker's runtime, once known (-1 until then, or if
/// it could not be found).
#[derive(Clone)]
pub(super) struct Spin {
    epfd: Arc<AtomicI32>,
    budget: Duration,
}

impl Spin {
    /// Looks for up to `budget` before each sleep (a zero budget never looks).
    pub(super) fn new(budget: Duration) -> Spin {
        Spin {
            epfd: Arc::new(AtomicI32::new(-1)),
            budget,
        }
    }

    /// Finds the epoll descriptor of `rt` (built with [`Spin::before_park`] as its
    /// `on_thread_park` hook): a probe socket is registered with the runtime, and
    /// the epoll instance whose `/proc/self/fdinfo` lists it is the runtime's. If none
    /// does (not Linux, no /proc), the worker sleeps without polling first.
    pub(super) fn attach(&self, rt: &tokio::runtime::Runtime) {
        if self.budget.is_zero() {
            return;
        }
        match probe(rt).and_then(|p| runtime_epoll(p.as_raw_fd())) {
            Some(fd) => self.epfd.store(fd, Ordering::Release),
            None => tracing::warn!(
                "server.idle_spin_us: cannot find this worker's epoll descriptor; it will sleep without polling first"
            ),
        }
    }

    /// The `on_thread_park` hook: returns when an event is ready or the budget is
    /// spent, whichever comes first.
    pub(super) fn before_park(&self) {
        let fd = self.epfd.load(Ordering::Acquire);
        if fd < 0 {
            return;
        }
        let start = Instant::now();
        while !ready(fd) && start.elapsed() < self.budget {
            // Another runnable thread on this core (the upstream, a policy evaluation)
            // gets the core; with none, this returns at once.
            std::thread::yield_now();
        }
    }
}

/// A socket registered with `rt`'s reactor (None if no socket can be had, e.g. no
/// IPv4 loopback).
fn probe(rt: &tokio::runtime::Runtime) -> Option<tokio::net::UdpSocket> {
    let s = std::net::UdpSocket::bind("127.0.0.1:0")
        .or_else(|_| std::net::UdpSocket::bind("[::1]:0"))
        .ok()?;
    s.set_nonblocking(true).ok()?;
    let _in = rt.enter();
    tokio::net::UdpSocket::from_std(s).ok()
}

/// Whether the epoll instance `fd` has events ready (without taking them).
fn ready(fd: RawFd) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, a zero timeout; the descriptor is the runtime's own and
    // open for as long as the runtime (and so this hook) lives.
    unsafe { libc::poll(&mut p, 1, 0) > 0 }
}

/// The epoll descriptor of this process that watches `target`.
fn runtime_epoll(target: RawFd) -> Option<RawFd> {
    let watched = format!("{target}");
    std::fs::read_dir("/proc/self/fd")
        .ok()?
        .flatten()
        .filter(|e| {
            std::fs::read_link(e.path()).is_ok_and(|t| t.as_os_str() == "anon_inode:[eventpoll]")
        })
        .filter_map(|e| e.file_name().to_str()?.parse::<RawFd>().ok())
        .find(|fd| {
            // Each watched descriptor is a line "tfd: <fd> events: ... data: ...".
            std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).is_ok_and(|info| {
                info.lines().any(|l| {
                    let mut w = l.split_whitespace();
                    w.next() == Some("tfd:") && w.next() == Some(watched.as_str())
                })
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A worker-like runtime whose park hook is `spin`'s, attached.
    fn runtime(spin: &Spin) -> tokio::runtime::Runtime {
        let hook = spin.clone();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .on_thread_park(move || hook.before_park())
            .build()
            .unwrap();
        spin.attach(&rt);
        rt
    }

    #[test]
    fn finds_the_runtime_epoll_descriptor_and_sees_its_events() {
        let spin = Spin::new(Duration::from_millis(200));
        let rt = runtime(&spin);
        let fd = spin.epfd.load(Ordering::Acquire);
        assert!(fd >= 0, "the runtime's epoll descriptor was not found");
        rt.block_on(async {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = l.local_addr().unwrap();
            assert!(!ready(fd), "nothing has happened yet");
            // A connection arriving makes the listener readable: the epoll instance
            // reports it, and the park hook returns long before its budget.
            let c = std::net::TcpStream::connect(addr).unwrap();
            let t = Instant::now();
            while !ready(fd) {
                assert!(t.elapsed() < Duration::from_secs(5));
                std::thread::yield_now();
            }
            let t = Instant::now();
            spin.before_park();
            assert!(t.elapsed() < Duration::from_millis(100));
            let (_s, _) = l.accept().await.unwrap();
            drop(c);
        });
    }

    #[test]
    fn with_nothing_ready_the_hook_returns_after_its_budget() {
        let spin = Spin::new(Duration::from_millis(30));
        let rt = runtime(&spin);
        rt.block_on(async {
            let t = Instant::now();
            spin.before_park();
            let took = t.elapsed();
            assert!(took >= Duration::from_millis(30), "{took:?}");
        });
    }
}
