//! `portcullis-loadgen`: a load generator for MCP servers speaking Streamable
//! HTTP, used by `make bench`.
//!
//! It opens `--sessions` concurrent MCP sessions, each on its own HTTP/1.1
//! keep-alive connection and initialized once (initialize +
//! notifications/initialized, keeping `MCP-Session-Id`), then sends
//! `tools/call` or `tools/list` back to back from every session for a
//! duration or a total count (both bounded), after an optional warm-up that
//! is not measured. Latencies go into an HDR histogram; the report gives
//! throughput, p50/p90/p99/max and the errors (non-200 HTTP, JSON-RPC error,
//! `isError: true`, no answer). Answers may be JSON or SSE.
//!
//! It only talks to loopback addresses (127.0.0.1, localhost, [::1]).
//!
//! With `--hold SECS` it prints `ready: N sessions` on stderr once every
//! session is initialized and keeps them idle for SECS before the load starts,
//! so that a caller can measure the server's memory per idle session.

mod parse;
mod session;

use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use hyper::Uri;
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::parse::Outcome;
use crate::session::{Session, Target};

/// Upper bounds, whatever the command line says.
const MAX_SESSIONS: u32 = 10_000;
const MAX_SECONDS: f64 = 3600.0;
const MAX_REQUESTS: u64 = 100_000_000;
/// Time bound of a run given only `--requests`.
const COUNT_RUN_MAX_SECONDS: f64 = 600.0;
/// Duration of a run given neither `--duration` nor `--requests`.
const DEFAULT_SECONDS: f64 = 10.0;
/// Sessions initialized at the same time.
const CONNECT_PARALLELISM: usize = 64;
/// Histogram range: 1 us .. 1 hour, 3 significant digits.
const HIST_MAX_US: u64 = 3_600_000_000;

#[derive(Debug, Parser)]
#[command(
    name = "portcullis-loadgen",
    version,
    about = "Loopback-only load generator for MCP Streamable HTTP servers (tools/call, tools/list)"
)]
struct Args {
    /// MCP endpoint, e.g. http://127.0.0.1:8080/mcp (loopback hosts only).
    #[arg(long)]
    url: String,
    /// API key sent as `Authorization: Bearer KEY`.
    #[arg(long, env = "PORTCULLIS_LOADGEN_KEY", hide_env_values = true)]
    key: Option<String>,
    /// Concurrent MCP sessions (one connection each), at most 10000.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=MAX_SESSIONS as i64))]
    sessions: u32,
    /// What every request does.
    #[arg(long, value_enum, default_value_t = Kind::Call)]
    method: Kind,
    /// Tool name for `--method call`, prompt name for `--method get`.
    #[arg(long, default_value = "echo")]
    tool: String,
    /// Arguments (a JSON object) for `--method call` and `--method get`.
    #[arg(long, default_value = "{}")]
    args: String,
    /// Resource URI for `--method read`.
    #[arg(long, default_value = "")]
    uri: String,
    /// Measured seconds (at most 3600). Default 10 unless --requests is given.
    #[arg(long)]
    duration: Option<f64>,
    /// Total measured requests over all sessions (at most 100000000). Without
    /// --duration the run still stops after 600 s.
    #[arg(long)]
    requests: Option<u64>,
    /// Unmeasured seconds of load before measuring (at most 3600).
    #[arg(long, default_value_t = 0.0)]
    warmup: f64,
    /// Seconds to keep the initialized sessions idle before the load (at most 3600).
    #[arg(long, default_value_t = 0.0)]
    hold: f64,
    /// Per-request timeout in seconds (at most 600); a timeout counts as an error.
    #[arg(long, default_value_t = 30.0)]
    timeout: f64,
    /// Runtime worker threads (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// protocolVersion offered at initialize.
    #[arg(long, default_value = "2025-06-18")]
    protocol_version: String,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Kind {
    /// tools/call --tool with --args.
    Call,
    /// tools/list (first page).
    List,
    /// resources/read --uri.
    Read,
    /// prompts/get --tool (the prompt's name) with --args.
    Get,
}

/// A validated run.
struct Plan {
    target: Target,
    sessions: u32,
    method: &'static str,
    /// Serialised params of every request.
    params: String,
    warmup: Duration,
    hold: Duration,
    duration: Duration,
    max_requests: u64,
}

impl Plan {
    fn new(args: &Args) -> Result<Plan, String> {
        let (addr, authority, path) = loopback_target(&args.url)?;
        let secs = |name: &str, v: f64, max: f64| {
            if v.is_finite() && (0.0..=max).contains(&v) {
                Ok(Duration::from_secs_f64(v))
            } else {
                Err(format!("--{name} must be between 0 and {max} seconds"))
            }
        };
        if let Some(n) = args.requests
            && !(1..=MAX_REQUESTS).contains(&n)
        {
            return Err(format!("--requests must be between 1 and {MAX_REQUESTS}"));
        }
        let duration = match (args.duration, args.requests) {
            (Some(d), _) => secs("duration", d, MAX_SECONDS)?,
            (None, Some(_)) => Duration::from_secs_f64(COUNT_RUN_MAX_SECONDS),
            (None, None) => Duration::from_secs_f64(DEFAULT_SECONDS),
        };
        let timeout = secs("timeout", args.timeout, 600.0)?;
        if timeout.is_zero() {
            return Err("--timeout must be positive".into());
        }
        let arguments = || -> Result<Value, String> {
            let arguments: Value =
                serde_json::from_str(&args.args).map_err(|e| format!("--args is not JSON: {e}"))?;
            if !arguments.is_object() {
                return Err("--args must be a JSON object".into());
            }
            Ok(arguments)
        };
        let (method, params) = match args.method {
            Kind::Call => {
                let params = json!({ "name": args.tool, "arguments": arguments()? });
                ("tools/call", params.to_string())
            }
            Kind::List => ("tools/list", "{}".to_string()),
            Kind::Read if args.uri.is_empty() => return Err("--method read needs --uri".into()),
            Kind::Read => ("resources/read", json!({ "uri": args.uri }).to_string()),
            Kind::Get => {
                let params = json!({ "name": args.tool, "arguments": arguments()? });
                ("prompts/get", params.to_string())
            }
        };
        Ok(Plan {
            target: Target {
                addr,
                authority,
                path,
                key: args.key.clone().filter(|k| !k.is_empty()),
                protocol_version: args.protocol_version.clone(),
                request_timeout: timeout,
            },
            sessions: args.sessions,
            method,
            params,
            warmup: secs("warmup", args.warmup, MAX_SECONDS)?,
            hold: secs("hold", args.hold, MAX_SECONDS)?,
            duration,
            max_requests: args.requests.unwrap_or(MAX_REQUESTS),
        })
    }
}

/// Parses the URL and refuses anything that is not plain HTTP to a loopback host.
/// Returns the socket address, the Host header value and the path.
fn loopback_target(url: &str) -> Result<(SocketAddr, String, String), String> {
    let uri: Uri = url.parse().map_err(|e| format!("--url {url:?}: {e}"))?;
    if uri.scheme_str() != Some("http") {
        return Err(format!("--url {url:?}: only http:// URLs are supported"));
    }
    let authority = uri
        .authority()
        .ok_or_else(|| format!("--url {url:?}: no host"))?;
    if authority.as_str().contains('@') {
        return Err(format!("--url {url:?}: user info is not allowed"));
    }
    let host = authority.host();
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if !(bare == "127.0.0.1" || bare == "::1" || bare.eq_ignore_ascii_case("localhost")) {
        return Err(format!(
            "--url {url:?}: refusing non-loopback host {host:?} (only 127.0.0.1, localhost, [::1])"
        ));
    }
    let port = authority.port_u16().unwrap_or(80);
    let addr = (bare, port)
        .to_socket_addrs()
        .map_err(|e| format!("--url {url:?}: {e}"))?
        .find(|a| a.ip().is_loopback())
        .ok_or_else(|| format!("--url {url:?}: {host} does not resolve to a loopback address"))?;
    let path = uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "/".into());
    Ok((addr, authority.as_str().to_string(), path))
}

/// Measurements shared by all sessions (one short lock per request).
struct Stats {
    hist: Histogram<u64>,
    requests: u64,
    errors: u64,
    warmup_errors: u64,
    first_error: Option<String>,
    last_done: Option<Instant>,
    tools: Option<usize>,
}

impl Stats {
    fn error(&mut self, measured: bool, e: String) {
        if measured {
            self.errors += 1;
        } else {
            self.warmup_errors += 1;
        }
        self.first_error.get_or_insert(e);
    }
}

struct Report {
    requests: u64,
    errors: u64,
    warmup_errors: u64,
    seconds: f64,
    p50: u64,
    p90: u64,
    p99: u64,
    max: u64,
    tools: Option<usize>,
    first_error: Option<String>,
    /// CPU ticks this process used while measuring.
    cpu_ticks: Option<u64>,
}

impl Report {
    fn rps(&self) -> f64 {
        if self.seconds > 0.0 {
            self.requests as f64 / self.seconds
        } else {
            0.0
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let plan = match Plan::new(&args) {
        Ok(p) => Arc::new(p),
        Err(e) => {
            eprintln!("portcullis-loadgen: {e}");
            return ExitCode::from(2);
        }
    };
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .clamp(1, 64);
    let runtime = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(r) => r,
        Err(e) => {
            eprintln!("portcullis-loadgen: runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(plan.clone())) {
        Ok(report) => {
            print_report(&args, &plan, &report);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("portcullis-loadgen: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(plan: Arc<Plan>) -> Result<Report, String> {
    let sessions = open_sessions(&plan).await?;
    if !plan.hold.is_zero() {
        eprintln!("ready: {} sessions", sessions.len());
        tokio::time::sleep(plan.hold).await;
    }

    let start = Instant::now();
    let warmup_end = start + plan.warmup;
    let end = warmup_end + plan.duration;
    let issued = Arc::new(AtomicU64::new(0));
    let stats = Arc::new(Mutex::new(Stats {
        hist: Histogram::new_with_bounds(1, HIST_MAX_US, 3).map_err(|e| e.to_string())?,
        requests: 0,
        errors: 0,
        warmup_errors: 0,
        first_error: None,
        last_done: None,
        tools: None,
    }));
    // This process's CPU time over the measured window (for CPU per request).
    let cpu_at_warmup_end = tokio::spawn(async move {
        tokio::time::sleep_until(warmup_end.into()).await;
        cpu_ticks()
    });
    let mut workers = JoinSet::new();
    for session in sessions {
        let (plan, stats, issued) = (plan.clone(), stats.clone(), issued.clone());
        workers
            .spawn(async move { worker(session, &plan, &stats, &issued, warmup_end, end).await });
    }
    let mut survivors = Vec::new();
    while let Some(r) = workers.join_next().await {
        if let Ok(Some(session)) = r {
            survivors.push(session);
        }
    }
    let cpu_ticks_measured = match (cpu_at_warmup_end.await.ok().flatten(), cpu_ticks()) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a)),
        _ => None,
    };
    // End the sessions on the server, a bounded number at a time.
    let gate = Arc::new(Semaphore::new(CONNECT_PARALLELISM));
    let mut closing = JoinSet::new();
    for session in survivors {
        let (plan, gate) = (plan.clone(), gate.clone());
        closing.spawn(async move {
            let _permit = gate.acquire_owned().await;
            session.close(&plan.target).await;
        });
    }
    while closing.join_next().await.is_some() {}

    let s = stats.lock().unwrap_or_else(|e| e.into_inner());
    let seconds = s.last_done.map_or(0.0, |t| {
        t.saturating_duration_since(warmup_end).as_secs_f64()
    });
    let q = |p: f64| {
        if s.requests > 0 {
            s.hist.value_at_quantile(p)
        } else {
            0
        }
    };
    Ok(Report {
        requests: s.requests,
        errors: s.errors,
        warmup_errors: s.warmup_errors,
        seconds,
        p50: q(0.50),
        p90: q(0.90),
        p99: q(0.99),
        max: if s.requests > 0 { s.hist.max() } else { 0 },
        tools: s.tools,
        first_error: s.first_error.clone(),
        cpu_ticks: cpu_ticks_measured,
    })
}

/// User + system CPU time of this process in clock ticks (USER_HZ, 100 per second
/// on Linux), from `/proc/self/stat`; `None` elsewhere.
fn cpu_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are the 14th and
    // 15th fields of the whole line, i.e. the 12th and 13th after it.
    let rest = stat.rsplit_once(')')?.1;
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Opens every session, at most `CONNECT_PARALLELISM` at a time; any failure
/// fails the run (a partial set of sessions would mislead).
async fn open_sessions(plan: &Arc<Plan>) -> Result<Vec<Session>, String> {
    let gate = Arc::new(Semaphore::new(CONNECT_PARALLELISM));
    let mut opening = JoinSet::new();
    for _ in 0..plan.sessions {
        let (plan, gate) = (plan.clone(), gate.clone());
        opening.spawn(async move {
            let _permit = gate.acquire_owned().await;
            Session::open(&plan.target).await
        });
    }
    let mut sessions = Vec::with_capacity(plan.sessions as usize);
    let (mut failed, mut first) = (0, None);
    while let Some(r) = opening.join_next().await {
        match r {
            Ok(Ok(s)) => sessions.push(s),
            Ok(Err(e)) => {
                failed += 1;
                first.get_or_insert(e);
            }
            Err(e) => {
                failed += 1;
                first.get_or_insert(e.to_string());
            }
        }
    }
    match first {
        None => Ok(sessions),
        Some(e) => Err(format!(
            "{failed} of {} sessions failed to initialize; first error: {e}",
            plan.sessions
        )),
    }
}

/// Sends requests back to back until `end` or until the request budget is spent.
/// A broken connection counts as an error and is replaced by a new session
/// (once per failure); returns the session still open at the end.
async fn worker(
    mut session: Session,
    plan: &Plan,
    stats: &Mutex<Stats>,
    issued: &AtomicU64,
    warmup_end: Instant,
    end: Instant,
) -> Option<Session> {
    loop {
        let now = Instant::now();
        if now >= end {
            return Some(session);
        }
        let measured = now >= warmup_end;
        if measured && issued.fetch_add(1, Ordering::Relaxed) >= plan.max_requests {
            return Some(session);
        }
        let t0 = Instant::now();
        let result = session.call(&plan.target, plan.method, &plan.params).await;
        let done = Instant::now();
        let micros = (done - t0).as_micros().min(u128::from(HIST_MAX_US)) as u64;
        {
            let mut s = stats.lock().unwrap_or_else(|e| e.into_inner());
            if measured {
                s.requests += 1;
                s.hist.saturating_record(micros.max(1));
                s.last_done = Some(done);
            }
            match &result {
                Ok(Outcome::Ok { tools }) => {
                    if tools.is_some() {
                        s.tools = *tools;
                    }
                }
                Ok(Outcome::Error(e)) => s.error(measured, e.clone()),
                Err(e) => s.error(measured, e.clone()),
            }
        }
        if result.is_err() {
            match Session::open(&plan.target).await {
                Ok(fresh) => session = fresh,
                Err(e) => {
                    let mut s = stats.lock().unwrap_or_else(|e| e.into_inner());
                    s.first_error.get_or_insert(format!("reconnect: {e}"));
                    return None;
                }
            }
        }
    }
}

fn print_report(args: &Args, plan: &Plan, r: &Report) {
    if args.json {
        let mut out = json!({
            "requests": r.requests,
            "errors": r.errors,
            "seconds": (r.seconds * 1000.0).round() / 1000.0,
            "rps": (r.rps() * 10.0).round() / 10.0,
            "p50_us": r.p50,
            "p90_us": r.p90,
            "p99_us": r.p99,
            "max_us": r.max,
            "sessions": plan.sessions,
            "method": plan.method,
            "warmup_errors": r.warmup_errors,
        });
        if let Some(n) = r.tools {
            out["tools"] = json!(n);
        }
        if let Some(t) = r.cpu_ticks.filter(|_| r.requests > 0) {
            // 100 ticks a second: 10,000 us a tick.
            out["loadgen_cpu_us_per_req"] =
                json!((t as f64 * 10_000.0 / r.requests as f64).round());
        }
        if let Some(e) = &r.first_error {
            out["first_error"] = json!(e);
        }
        println!("{out}");
    } else {
        println!(
            "{} {} x {} sessions: {} requests, {} errors in {:.2} s = {:.1} req/s",
            plan.method,
            plan.target.path,
            plan.sessions,
            r.requests,
            r.errors,
            r.seconds,
            r.rps()
        );
        println!(
            "latency us: p50 {}  p90 {}  p99 {}  max {}",
            r.p50, r.p90, r.p99, r.max
        );
        if let Some(n) = r.tools {
            println!("tools in the last list: {n}");
        }
        if r.warmup_errors > 0 {
            println!("errors during warm-up: {}", r.warmup_errors);
        }
        if let Some(e) = &r.first_error {
            println!("first error: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_urls_are_accepted() {
        let (addr, authority, path) = loopback_target("http://127.0.0.1:8080/mcp").unwrap();
        assert_eq!(addr, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(authority, "127.0.0.1:8080");
        assert_eq!(path, "/mcp");
        let (addr, _, path) = loopback_target("http://[::1]:9/mcp/conn_a?x=1").unwrap();
        assert!(addr.ip().is_loopback());
        assert_eq!(path, "/mcp/conn_a?x=1");
        assert!(loopback_target("http://localhost:1/mcp").is_ok());
        assert!(loopback_target("http://LOCALHOST:1").is_ok());
        for bad in [
            "http://10.0.0.1:80/mcp",
            "http://example.com/mcp",
            "http://127.0.0.2/mcp",
            "http://127.0.0.1.example.com/mcp",
            "https://127.0.0.1/mcp",
            "http://user@127.0.0.1/mcp",
            "127.0.0.1:80",
        ] {
            assert!(loopback_target(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn limits_are_enforced() {
        let parse = |extra: &[&str]| {
            let mut argv = vec!["portcullis-loadgen", "--url", "http://127.0.0.1:1/mcp"];
            argv.extend_from_slice(extra);
            Args::try_parse_from(argv)
                .map_err(|e| e.to_string())
                .and_then(|a| Plan::new(&a).map(|_| ()))
        };
        assert!(parse(&[]).is_ok());
        assert!(parse(&["--duration", "5", "--requests", "100"]).is_ok());
        assert!(parse(&["--duration", "4000"]).is_err());
        assert!(parse(&["--duration", "-1"]).is_err());
        assert!(parse(&["--requests", "0"]).is_err());
        assert!(parse(&["--requests", "1000000000"]).is_err());
        assert!(parse(&["--sessions", "0"]).is_err());
        assert!(parse(&["--sessions", "10001"]).is_err());
        assert!(parse(&["--args", "[1]"]).is_err());
        assert!(parse(&["--args", "{nope"]).is_err());
        assert!(parse(&["--timeout", "0"]).is_err());
    }
}
