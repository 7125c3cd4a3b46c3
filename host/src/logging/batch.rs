//! Per-thread batching of log lines on the worker threads.
//!
//! Every formatted line goes to the log-writer thread (`tracing-appender`) as one
//! message, and a message to an idle writer wakes it: one futex wake on the request's
//! thread and one wake-up of the writer per line. On a worker that logs often (the
//! per-request audit line, thousands per second) lines that follow the previous send
//! within `HOLD` are kept in a thread-local buffer instead and sent together when it
//! has been held for `HOLD`, or at `MAX_BUFFER` bytes. A line after a quiet spell goes
//! out at once, so a lightly used gateway logs exactly as before; under load the
//! writer wakes about once per `HOLD` per worker instead of once per line.
//!
//! Threads other than the workers (start-up, reloads, background tasks) write
//! through unbuffered. A worker flushes what it holds before its thread ends; lines
//! held when the process is killed (at most `HOLD`'s worth) are lost, like anything
//! still in the writer's queue.
//!
//! Own code rather than a crate: the batching has to follow the worker's runtime (a
//! flush task on each single-threaded runtime, no extra thread or lock), which no
//! writer crate offers.

use std::cell::RefCell;
use std::io::{self, Write};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tracing_appender::non_blocking::NonBlocking;
use tracing_subscriber::fmt::MakeWriter;

/// The longest a line is held back.
pub(super) const HOLD: Duration = Duration::from_millis(1);
/// A buffer this full is sent at once.
const MAX_BUFFER: usize = 32 * 1024;

/// A worker's held lines.
struct Held {
    out: NonBlocking,
    buf: Vec<u8>,
    last_send: Instant,
    flush_soon: Arc<Notify>,
}

impl Held {
    fn send(&mut self, bytes: &[u8]) {
        // The writer thread's queue is not lossy: this only fails once it has stopped.
        let _ = self.out.write_all(bytes);
        self.last_send = Instant::now();
    }

    fn flush(&mut self) {
        if !self.buf.is_empty() {
            let buf = std::mem::take(&mut self.buf);
            self.send(&buf);
            self.buf = buf;
            self.buf.clear();
        }
    }
}

thread_local! {
    static HELD: RefCell<Option<Held>> = const { RefCell::new(None) };
}

/// The `MakeWriter` of the log layer: batches on worker threads, writes through
/// elsewhere.
#[derive(Clone)]
pub(super) struct Batching {
    out: NonBlocking,
}

impl Batching {
    pub(super) fn new(out: NonBlocking) -> Batching {
        Batching { out }
    }
}

impl<'a> MakeWriter<'a> for Batching {
    type Writer = Line<'a>;

    fn make_writer(&'a self) -> Line<'a> {
        Line { out: &self.out }
    }
}

/// One formatted line on its way out.
pub(super) struct Line<'a> {
    out: &'a NonBlocking,
}

impl Write for Line<'_> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let written = HELD.with(|held| {
            let Ok(mut held) = held.try_borrow_mut() else {
                return false;
            };
            let Some(held) = held.as_mut() else {
                return false;
            };
            if held.buf.is_empty() && held.last_send.elapsed() >= HOLD {
                held.send(bytes);
                return true;
            }
            if held.buf.is_empty() {
                held.flush_soon.notify_one();
            }
            held.buf.extend_from_slice(bytes);
            if held.buf.len() >= MAX_BUFFER {
                held.flush();
            }
            true
        });
        if !written {
            self.out.clone().write_all(bytes)?;
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Makes the calling worker thread batch its lines, and spawns the task that sends
/// them `HOLD` after the first one was held. Call inside the worker's runtime.
pub(super) fn batch_this_thread(out: &Batching) {
    let flush_soon = Arc::new(Notify::new());
    HELD.with(|held| {
        *held.borrow_mut() = Some(Held {
            out: out.out.clone(),
            buf: Vec::with_capacity(8 * 1024),
            last_send: Instant::now(),
            flush_soon: flush_soon.clone(),
        });
    });
    tokio::spawn(async move {
        loop {
            flush_soon.notified().await;
            tokio::time::sleep(HOLD).await;
            flush_this_thread();
        }
    });
}

/// Sends what the calling thread holds (a worker's last act before its thread ends).
pub(super) fn flush_this_thread() {
    HELD.with(|held| {
        if let Ok(mut held) = held.try_borrow_mut()
            && let Some(held) = held.as_mut()
        {
            held.flush();
        }
    });
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use tracing_appender::non_blocking::NonBlockingBuilder;

    use super::*;

    /// What the writer thread wrote.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn held_bytes() -> usize {
        HELD.with(|h| h.borrow().as_ref().map_or(0, |h| h.buf.len()))
    }

    /// Waits (bounded, in real time) for the writer thread to have written `want`.
    fn written(sink: &Sink, want: &str) -> String {
        for _ in 0..400 {
            let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
            if text == want {
                return text;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        String::from_utf8(sink.0.lock().unwrap().clone()).unwrap()
    }

    // The clock is paused: it moves only when the test sleeps, so "right behind" is exact.
    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn a_burst_is_held_then_sent_in_order_and_a_quiet_line_goes_at_once() {
        let sink = Sink::default();
        let (out, _guard) = NonBlockingBuilder::default()
            .lossy(false)
            .finish(sink.clone());
        let batching = Batching::new(out);
        batch_this_thread(&batching);
        tokio::time::sleep(HOLD * 3).await;

        // Quiet for longer than HOLD: the line is sent, nothing is held.
        batching.make_writer().write_all(b"one\n").unwrap();
        assert_eq!(held_bytes(), 0);
        // Right behind it: held, then sent by the flush task once HOLD has passed.
        batching.make_writer().write_all(b"two\n").unwrap();
        batching.make_writer().write_all(b"three\n").unwrap();
        assert_eq!(held_bytes(), "two\nthree\n".len());
        tokio::time::sleep(HOLD / 2).await;
        assert_eq!(held_bytes(), "two\nthree\n".len(), "held for HOLD");
        tokio::time::sleep(HOLD).await;
        assert_eq!(held_bytes(), 0);
        assert_eq!(written(&sink, "one\ntwo\nthree\n"), "one\ntwo\nthree\n");

        // A full buffer is sent without waiting for the task.
        let line = vec![b'x'; MAX_BUFFER];
        batching.make_writer().write_all(b"four\n").unwrap();
        batching.make_writer().write_all(&line).unwrap();
        assert_eq!(held_bytes(), 0);

        // What a thread holds when it ends is sent by its last flush.
        batching.make_writer().write_all(b"five\n").unwrap();
        assert!(held_bytes() > 0);
        flush_this_thread();
        assert_eq!(held_bytes(), 0);
        let want = format!("one\ntwo\nthree\nfour\n{}five\n", "x".repeat(MAX_BUFFER));
        assert_eq!(written(&sink, &want).len(), want.len());
    }

    #[test]
    fn other_threads_write_through() {
        let sink = Sink::default();
        let (out, guard) = NonBlockingBuilder::default()
            .lossy(false)
            .finish(sink.clone());
        let batching = Batching::new(out);
        batching.make_writer().write_all(b"direct\n").unwrap();
        assert_eq!(held_bytes(), 0);
        drop(guard); // flushes the writer thread
        assert_eq!(sink.0.lock().unwrap().as_slice(), b"direct\n");
    }
}
