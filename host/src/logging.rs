//! Log output: human-readable text by default, one JSON object per line with
//! `--log-format json`. `RUST_LOG` overrides the default `info` level.
//!
//! The same subscriber carries the OpenTelemetry layer (`telemetry::traces::layer`),
//! which exports nothing until `serve` starts it. Trace spans are kept out of the log
//! output, so log lines look the same with tracing on or off.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{FilterExt, filter_fn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::cli::LogFormat;
use crate::telemetry::traces;

pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
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
}
