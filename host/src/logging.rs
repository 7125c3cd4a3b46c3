//! Log output: human-readable text by default, one JSON object per line with
//! `--log-format json`. `RUST_LOG` overrides the default `info` level.
//!
//! Lines are formatted on the calling thread and written to stderr by a dedicated
//! thread (`tracing-appender`), buffered and flushed whenever its queue runs empty:
//! a request never waits on a write syscall, and under load many lines share one.
//! The queue is not lossy (a full queue makes the caller wait), because the audit
//! trail is also written as log lines. Keep the returned guard alive: dropping it
//! flushes what is left. Worker threads hand their lines over in batches under load
//! (`batch`), so the writer thread is not woken for every request's line.
//!
//! The same subscriber carries the OpenTelemetry layer (`telemetry::traces::layer`),
//! which exports nothing until `serve` starts it. Trace spans are kept out of the log
//! output, so log lines look the same with tracing on or off.

mod batch;

use std::io::IsTerminal;
use std::sync::OnceLock;

use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{FilterExt, filter_fn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::telemetry::traces;

/// The log layer's writer, for the worker threads to batch through.
static WRITER: OnceLock<batch::Batching> = OnceLock::new();

/// How log lines are written (`--log-format`).
#[derive(Clone, Copy, clap::ValueEnum)]
pub(crate) enum LogFormat {
    /// Human-readable lines (colour on a terminal).
    Text,
    /// One JSON object per line.
    Json,
}

pub(crate) fn init(format: LogFormat) -> WorkerGuard {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(false)
        .thread_name("portcullis-log")
        .finish(std::io::BufWriter::with_capacity(
            64 * 1024,
            std::io::stderr(),
        ));
    let writer = WRITER.get_or_init(|| batch::Batching::new(writer)).clone();
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_ansi(std::io::stderr().is_terminal());
    let fmt = match format {
        LogFormat::Text => fmt.boxed(),
        LogFormat::Json => fmt.json().flatten_event(true).boxed(),
    };
    let not_trace_spans = filter_fn(|meta| !traces::is_trace_span(meta));
    let _ = tracing_subscriber::registry()
        .with(fmt.with_filter(filter.and(not_trace_spans)))
        .with(traces::layer())
        .try_init();
    guard
}

/// Makes the calling worker thread hand its log lines over in batches under load
/// (`batch`). Call inside the worker's runtime; without `init` it does nothing.
pub(crate) fn batch_this_thread() {
    if let Some(writer) = WRITER.get() {
        batch::batch_this_thread(writer);
    }
}

/// Sends the lines the calling thread holds (before a worker thread ends).
pub(crate) fn flush_this_thread() {
    batch::flush_this_thread();
}
