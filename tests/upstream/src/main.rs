//! `portcullis-test-upstream`: a small, fast and controllable MCP server
//! speaking the Streamable HTTP transport (revisions 2025-03-26, 2025-06-18
//! and 2025-11-25) on a single `/mcp` endpoint, or with `--stdio` the stdio
//! transport (see [`stdio`]).
//!
//! It is the upstream used by Portcullis' integration tests and benchmarks.
//! Its behaviour is chosen on the command line (answer style, sessions,
//! bearer token, delays, tool-list size and paging) and per call through its
//! tools (errors, big payloads, progress, cancellation, header echo, ...).
//!
//! After binding it prints exactly one line, `listening on http://IP:PORT/mcp`,
//! to stdout and then serves until killed. Nothing is logged while serving, except
//! the responses to `--ask-on-stream` requests.
//!
//! Module map: [`server`] routes HTTP requests, [`rpc`] parses and answers
//! JSON-RPC messages, [`tools`] holds the tool catalogue and implementations,
//! [`sse`] builds event streams, [`stdio`] serves stdin/stdout, [`body`] is the response body type and
//! [`state`] the shared server state.

mod body;
mod items;
mod rpc;
mod server;
mod sse;
mod state;
mod stdio;
mod tools;

#[cfg(test)]
mod e2e_tests;

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use crate::state::{Options, ResponseMode, State};

/// Command-line interface.
#[derive(Debug, Parser)]
#[command(
    name = "portcullis-test-upstream",
    version,
    about = "Controllable MCP Streamable HTTP upstream for Portcullis tests and benchmarks"
)]
struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
    /// How POST requests are answered: a JSON body or an SSE stream.
    #[arg(long, value_enum, default_value_t = ResponseMode::Json)]
    response: ResponseMode,
    /// Assign an MCP-Session-Id at initialize and require it afterwards.
    #[arg(long)]
    sessions: bool,
    /// Fixed delay in milliseconds before every tools/call answer.
    #[arg(long, default_value_t = 0)]
    delay_ms: u64,
    /// Number of generated tools (`tool_0000`, ...) added to the catalogue.
    #[arg(long, default_value_t = 0)]
    extra_tools: usize,
    /// Add the tool `raw_echo`, which answers with the exact text of the params it
    /// received (for checking that a proxy forwards them unchanged).
    #[arg(long)]
    raw_echo: bool,
    /// Page size of tools/list (default: everything in one page).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    page_size: Option<u64>,
    /// Require `Authorization: Bearer TOKEN` on every request (else 401).
    #[arg(long, value_name = "TOKEN")]
    require_bearer: Option<String>,
    /// serverInfo.name reported by initialize.
    #[arg(long, default_value = "portcullis-test-upstream")]
    name: String,
    /// Answer GET /mcp with 405 instead of opening an SSE stream.
    #[arg(long)]
    no_get_stream: bool,
    /// Never answer DELETE /mcp (a hung upstream, for shutdown and expiry tests).
    #[arg(long)]
    hang_delete: bool,
    /// Send a request with this method on every GET stream as it opens (ids
    /// `ask-<n>`, in order; repeatable), and print every response a client POSTs as
    /// `client answered: <JSON>` on stdout: how does a client answer server-to-client
    /// requests it gets outside any call?
    #[arg(long, value_name = "METHOD")]
    ask_on_stream: Vec<String>,
    /// Seconds between `: keepalive` comments on GET SSE streams.
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..))]
    keepalive_secs: u64,
    /// Serve the stdio transport (JSON-RPC lines on stdin/stdout) instead of HTTP.
    #[arg(long)]
    stdio: bool,
    /// With `--stdio`: exit (status 3) when the Nth tools/call arrives.
    #[arg(long, value_name = "N", default_value_t = 0)]
    exit_after: u64,
    /// With `--stdio`: answer the Nth tools/call with a line that is not JSON-RPC.
    #[arg(long, value_name = "N", default_value_t = 0)]
    garbage_after: u64,
    /// Serve resources and prompts too: N resources `test://doc/<i>`, the template
    /// `test://doc/{id}` and the prompt `greet` (0: tools only).
    #[arg(long, value_name = "N", default_value_t = 0)]
    items: usize,
    /// Tokio worker threads (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
}

fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = args.threads {
        runtime.worker_threads(threads.max(1));
    }
    runtime.enable_all().build()?.block_on(serve(args))
}

async fn serve(args: Args) -> std::io::Result<()> {
    let state = Arc::new(State::serving(
        Options {
            response: args.response,
            sessions: args.sessions,
            delay: Duration::from_millis(args.delay_ms),
            page_size: args.page_size.map(|n| n as usize),
            bearer: args.require_bearer,
            name: args.name,
            get_stream: !args.no_get_stream,
            hang_delete: args.hang_delete,
            keepalive: Duration::from_secs(args.keepalive_secs),
            ask_on_stream: args.ask_on_stream,
            items: args.items,
        },
        tools::Catalog::with_process_tools(args.extra_tools, args.raw_echo, args.stdio),
    ));
    if args.stdio {
        let faults = stdio::Faults {
            exit_after: args.exit_after,
            garbage_after: args.garbage_after,
        };
        return stdio::serve(state, faults).await;
    }
    let listener = TcpListener::bind(&args.listen).await?;
    let addr = listener.local_addr()?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on http://{addr}/mcp")?;
        out.flush()?;
    }
    run(listener, state).await
}

/// Accepts connections forever, serving HTTP/1.1 (keep-alive) and h2c.
async fn run(listener: TcpListener, state: Arc<State>) -> std::io::Result<()> {
    let builder = auto::Builder::new(TokioExecutor::new());
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            // Typically EMFILE under load: back off briefly instead of spinning.
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let builder = builder.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| server::handle(state.clone(), req));
            // Connection errors (client went away, ...) are not interesting here.
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
