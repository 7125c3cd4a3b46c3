//! The stdio transport's processes: starting a connector's program, its stdin
//! writer, its stdout reader (newline-delimited JSON-RPC, each line bounded by
//! `max_result_bytes`), its stderr in the gateway log, and ending it.
//!
//! Never an orphan: each program leads its own process group (so `npx` and shell
//! wrappers' children are signalled with it) and gets `PR_SET_PDEATHSIG` (it is
//! killed if the gateway dies without cleaning up; the kernel signals only that
//! direct child, so a wrapper's own children are left to notice their closed
//! stdin, as MCP servers do). Ending it closes its stdin,
//! then sends SIGTERM to the group after [`STDIN_GRACE`], then SIGKILL after
//! [`TERM_GRACE`]; whatever is still running at shutdown is killed by [`kill_all`].
//! A process's environment is only `PATH`, `HOME`, `LANG`, `LC_ALL`, `TMPDIR`,
//! `USER` from the gateway's plus the connector's `env` (vault values are
//! decrypted when the process starts and never logged).

use std::collections::{HashSet, VecDeque};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use super::UpstreamError;
use super::channel::Inbound;
use crate::config::{EnvSource, StdioSpec};
use crate::vault::Vault;

/// How long a process may take to exit once its stdin is closed.
const STDIN_GRACE: Duration = Duration::from_secs(1);
/// How long it may take after SIGTERM before SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(2);
/// The variables passed on from the gateway's environment.
const INHERITED: [&str; 6] = ["PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "USER"];
/// Longest stderr line logged (the rest is cut).
const STDERR_LINE: usize = 2048;
/// Stderr lines logged per second per process; more are counted and dropped.
const STDERR_RATE: u32 = 50;
/// The edges of an over-long line kept to find its id.
const EDGE: usize = 256;

/// Process groups started and not yet known to have exited.
static LIVE: Mutex<Option<HashSet<i32>>> = Mutex::new(None);

/// Kills every process group still running (gateway shutdown, after sessions closed).
pub(crate) fn kill_all() {
    let left: Vec<i32> = LIVE
        .lock()
        .expect("live lock")
        .as_ref()
        .map(|s| s.iter().copied().collect())
        .unwrap_or_default();
    for pgid in left {
        signal_group(pgid, libc::SIGKILL);
    }
}

/// Whether a stdio connector's program can be found (`/readyz`): a path must name
/// an executable file, a bare name must be one in `PATH`.
pub(crate) fn findable(spec: &StdioSpec) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &std::path::Path| {
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    let command = std::path::Path::new(&spec.command);
    let found = if spec.command.contains('/') {
        executable(command)
    } else {
        std::env::var_os("PATH")
            .is_some_and(|path| std::env::split_paths(&path).any(|d| executable(&d.join(command))))
    };
    if found {
        Ok(())
    } else {
        Err(format!(
            "command {:?} not found or not executable",
            spec.command
        ))
    }
}

/// Starts a stdio connector's processes, at most `max_processes` at a time.
pub(crate) struct Launcher {
    connector: String,
    spec: Arc<StdioSpec>,
    vault: Option<Arc<Vault>>,
    slots: Arc<Semaphore>,
}

impl Launcher {
    pub(crate) fn new(connector: &str, spec: Arc<StdioSpec>, vault: Option<Arc<Vault>>) -> Self {
        Launcher {
            connector: connector.to_string(),
            slots: Arc::new(Semaphore::new(spec.max_processes)),
            spec,
            vault,
        }
    }

    /// One of the connector's process slots, or [`UpstreamError::AtCapacity`].
    pub(super) fn permit(&self) -> Result<OwnedSemaphorePermit, UpstreamError> {
        self.slots.clone().try_acquire_owned().map_err(|_| {
            tracing::warn!(connector = %self.connector, max_processes = self.spec.max_processes, "stdio connector at its process limit; the request is refused");
            UpstreamError::AtCapacity(self.spec.max_processes)
        })
    }

    /// Starts the program; its stdout arrives on the receiver.
    pub(super) async fn spawn(
        &self,
        limit: usize,
    ) -> Result<(Process, mpsc::Receiver<Inbound>), UpstreamError> {
        let env = self.environment().await?;
        let mut cmd = tokio::process::Command::new(&self.spec.command);
        cmd.args(&self.spec.args).env_clear();
        for name in INHERITED {
            if let Some(v) = std::env::var_os(name) {
                cmd.env(name, v);
            }
        }
        for (name, value) in env.iter() {
            cmd.env(name, value.as_str());
        }
        if let Some(dir) = &self.spec.cwd {
            cmd.current_dir(dir);
        }
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(false);
        let gateway = std::process::id() as libc::pid_t;
        // SAFETY: prctl and getppid are async-signal-safe; nothing else runs
        // between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                // The gateway died before prctl took effect: the signal never comes.
                if libc::getppid() != gateway {
                    return Err(std::io::Error::other("the gateway exited"));
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(|e| {
            tracing::error!(connector = %self.connector, command = %self.spec.command, error = %e, "stdio connector could not start");
            UpstreamError::Transport(format!("could not start {}: {e}", self.spec.command))
        })?;
        let pid = child.id().expect("a running child has a pid") as i32;
        LIVE.lock()
            .expect("live lock")
            .get_or_insert_with(HashSet::new)
            .insert(pid);
        tracing::info!(connector = %self.connector, pid, command = %self.spec.command, "stdio connector process started");
        let (stdin, stdout, stderr) = (
            child.stdin.take().expect("piped"),
            child.stdout.take().expect("piped"),
            child.stderr.take().expect("piped"),
        );
        let exited = Arc::new(AtomicBool::new(false));
        let (status_tx, status_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(reap(child, pid, exited.clone(), status_tx));
        let (lines_tx, lines_rx) = mpsc::channel::<String>(64);
        tokio::spawn(write_stdin(stdin, lines_rx));
        let (inbound_tx, inbound_rx) = mpsc::channel(64);
        tokio::spawn(read_stdout(stdout, limit, inbound_tx, status_rx));
        tokio::spawn(log_stderr(stderr, self.connector.clone(), pid));
        let process = Process {
            pid,
            stdin: Mutex::new(Some(lines_tx)),
            exited,
        };
        Ok((process, inbound_rx))
    }

    /// The connector's `env`, resolved now.
    async fn environment(
        &self,
    ) -> Result<Vec<(String, zeroize::Zeroizing<String>)>, UpstreamError> {
        let mut out = Vec::with_capacity(self.spec.env.len());
        for (name, source) in &self.spec.env {
            let value = match source {
                EnvSource::Literal(v) => zeroize::Zeroizing::new(v.clone()),
                EnvSource::Env(var) => zeroize::Zeroizing::new(std::env::var(var).map_err(|_| {
                    tracing::error!(connector = %self.connector, variable = %var, "environment variable for a stdio connector is not set");
                    UpstreamError::Credential(format!("connector {}: environment variable {var} is not set", self.connector))
                })?),
                EnvSource::Vault(secret) => self.secret(secret).await?,
            };
            out.push((name.clone(), value));
        }
        Ok(out)
    }

    async fn secret(&self, secret: &str) -> Result<zeroize::Zeroizing<String>, UpstreamError> {
        let fail = |reason: String| {
            tracing::error!(connector = %self.connector, secret, error = %reason, "stdio connector's vault secret unavailable; the process is not started");
            UpstreamError::Credential(format!(
                "connector {}: vault secret {secret:?}: {reason}",
                self.connector
            ))
        };
        let vault = self
            .vault
            .as_ref()
            .ok_or_else(|| fail("no vault is configured".into()))?;
        let value = vault.get(secret).await.map_err(|e| fail(e.to_string()))?;
        Ok(zeroize::Zeroizing::new(value.as_str().to_string()))
    }
}

/// A running program.
pub(crate) struct Process {
    pid: i32,
    /// Dropping the sender closes the program's stdin.
    stdin: Mutex<Option<mpsc::Sender<String>>>,
    exited: Arc<AtomicBool>,
}

impl Process {
    pub(super) async fn send(&self, line: String) -> Result<(), UpstreamError> {
        let tx = self.stdin.lock().expect("stdin lock").clone();
        let closed = || UpstreamError::Transport("the upstream process's stdin is closed".into());
        tx.ok_or_else(closed)?
            .send(line)
            .await
            .map_err(|_| closed())
    }

    pub(super) fn kill(&self) {
        self.stdin.lock().expect("stdin lock").take();
        if !self.exited.load(Ordering::Acquire) {
            signal_group(self.pid, libc::SIGKILL);
        }
    }

    /// Closes stdin, then SIGTERM, then SIGKILL, each after its grace period.
    pub(super) async fn close(&self) {
        self.stdin.lock().expect("stdin lock").take();
        if self.wait_gone(STDIN_GRACE).await {
            return;
        }
        signal_group(self.pid, libc::SIGTERM);
        if self.wait_gone(TERM_GRACE).await {
            return;
        }
        tracing::warn!(
            pid = self.pid,
            "stdio connector process ignored SIGTERM; killed"
        );
        signal_group(self.pid, libc::SIGKILL);
    }

    async fn wait_gone(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.exited.load(Ordering::Acquire) || !running(self.pid) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Whether `pid` is running (not gone, not a zombie waiting to be reaped).
fn running(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .is_some_and(|state| state != 'Z' && state != 'X'),
        Err(_) => false,
    }
}

fn signal_group(pgid: i32, signal: i32) {
    // SAFETY: killpg has no memory effects; a group that is gone gives ESRCH.
    unsafe {
        libc::killpg(pgid, signal);
    }
}

/// Waits for the program to exit, kills what is left of its group, and tells the
/// stdout reader how it ended.
async fn reap(
    mut child: tokio::process::Child,
    pid: i32,
    exited: Arc<AtomicBool>,
    status: tokio::sync::oneshot::Sender<String>,
) {
    let how = match child.wait().await {
        Ok(s) => format!("the upstream process exited ({s})"),
        Err(e) => format!("the upstream process could not be waited for: {e}"),
    };
    exited.store(true, Ordering::Release);
    signal_group(pid, libc::SIGKILL); // children it left behind
    if let Some(live) = LIVE.lock().expect("live lock").as_mut() {
        live.remove(&pid);
    }
    tracing::debug!(pid, "{how}");
    let _ = status.send(how);
}

async fn write_stdin(mut stdin: tokio::process::ChildStdin, mut lines: mpsc::Receiver<String>) {
    while let Some(mut line) = lines.recv().await {
        line.push('\n');
        if stdin.write_all(line.as_bytes()).await.is_err() || stdin.flush().await.is_err() {
            return;
        }
    }
}

async fn read_stdout(
    stdout: tokio::process::ChildStdout,
    limit: usize,
    tx: mpsc::Sender<Inbound>,
    status: tokio::sync::oneshot::Receiver<String>,
) {
    let mut reader = BufReader::new(stdout);
    let mut line = Vec::new();
    loop {
        let next = match read_line(&mut reader, limit, &mut line).await {
            Ok(Line::End) | Err(_) => break,
            Ok(Line::Whole) => match parse_line(&line) {
                Some(messages) => messages,
                None => vec![Inbound::Garbage(line.len())],
            },
            Ok(Line::TooLong { head, tail }) => {
                vec![Inbound::TooLarge(edge_id(&head, &tail), limit)]
            }
        };
        for inbound in next {
            if tx.send(inbound).await.is_err() {
                return;
            }
        }
    }
    let how = tokio::time::timeout(TERM_GRACE, status)
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_else(|| "the upstream process closed its stdout".into());
    let _ = tx.send(Inbound::Closed(how)).await;
}

/// The messages of one line (a message or a batch); `None` if it is not JSON-RPC.
fn parse_line(line: &[u8]) -> Option<Vec<Inbound>> {
    let text = std::str::from_utf8(line).ok()?;
    let mut out = VecDeque::new();
    super::stream::parse_messages(text, &mut out).ok()?;
    Some(out.into_iter().map(Inbound::Message).collect())
}

#[derive(Debug, PartialEq)]
enum Line {
    /// `line` holds a whole non-empty line, without its newline.
    Whole,
    /// A line over the limit, skipped; its first and last bytes.
    TooLong {
        head: Vec<u8>,
        tail: Vec<u8>,
    },
    End,
}

/// Reads the next non-empty line into `line`, holding at most `limit` bytes of it.
async fn read_line(
    reader: &mut (impl AsyncBufRead + Unpin),
    limit: usize,
    line: &mut Vec<u8>,
) -> std::io::Result<Line> {
    line.clear();
    let (mut head, mut tail, mut over) = (Vec::new(), VecDeque::new(), false);
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(match (over, line.is_empty()) {
                (true, _) => Line::TooLong {
                    head,
                    tail: tail.into(),
                },
                (false, true) => Line::End,
                (false, false) => Line::Whole,
            });
        }
        let (chunk, ends) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (&available[..i], true),
            None => (available, false),
        };
        if !over && line.len() + chunk.len() > limit {
            over = true;
            head = line[..line.len().min(EDGE)].to_vec();
            tail.extend(line.iter().rev().take(EDGE).rev());
            line.clear();
        }
        if over {
            tail.extend(chunk.iter().rev().take(EDGE).rev());
            let excess = tail.len().saturating_sub(EDGE);
            tail.drain(..excess);
            if head.len() < EDGE {
                head.extend(chunk.iter().take(EDGE - head.len()));
            }
        } else {
            line.extend_from_slice(chunk);
        }
        let used = chunk.len() + usize::from(ends);
        reader.consume(used);
        if ends {
            if over {
                return Ok(Line::TooLong {
                    head,
                    tail: tail.into(),
                });
            }
            if line.iter().all(u8::is_ascii_whitespace) {
                line.clear();
                continue;
            }
            return Ok(Line::Whole);
        }
    }
}

/// The id of an over-long response, read from its edges: SDKs write it first
/// (`{"jsonrpc": "2.0", "id": 7, ...`) or last (`..., "id": 7}`), compact or
/// spaced. A message whose head names a `method` is a request or notification,
/// not a response, and has none.
fn edge_id(head: &[u8], tail: &[u8]) -> Option<Value> {
    let head = compact(&String::from_utf8_lossy(head));
    let tail = compact(&String::from_utf8_lossy(tail));
    if head.contains("\"method\":") {
        return None;
    }
    let first = ["{\"jsonrpc\":\"2.0\",\"id\":", "{\"id\":"]
        .iter()
        .find_map(|p| head.strip_prefix(p))
        .and_then(|rest| rest.split([',', '}']).next());
    let last = tail
        .strip_suffix('}')
        .and_then(|t| t.rsplit_once("\"id\":"))
        .map(|(_, v)| v);
    [first, last].into_iter().flatten().find_map(|v| {
        match serde_json::from_str::<Value>(v.trim()) {
            Ok(id @ (Value::Number(_) | Value::String(_))) => Some(id),
            _ => None,
        }
    })
}

/// An edge without the whitespace JSON allows between tokens (whitespace inside
/// strings goes too, which only matters for ids with spaces: those are not found).
fn compact(edge: &str) -> String {
    edge.chars().filter(|c| !c.is_ascii_whitespace()).collect()
}

/// Logs each stderr line, tagged with the connector and pid, at most
/// [`STDERR_RATE`] a second.
async fn log_stderr(stderr: tokio::process::ChildStderr, connector: String, pid: i32) {
    let mut reader = BufReader::new(stderr);
    let mut line = Vec::new();
    let (mut second, mut logged, mut dropped) = (Instant::now(), 0u32, 0u64);
    while let Ok(Line::Whole | Line::TooLong { .. }) =
        read_line(&mut reader, STDERR_LINE, &mut line).await
    {
        if second.elapsed() >= Duration::from_secs(1) {
            if dropped > 0 {
                tracing::warn!(target: "portcullis::upstream::stderr", connector = %connector, pid, dropped, "stderr lines dropped (more than {STDERR_RATE} a second)");
            }
            (second, logged, dropped) = (Instant::now(), 0, 0);
        }
        if logged >= STDERR_RATE {
            dropped += 1;
            continue;
        }
        logged += 1;
        let text = String::from_utf8_lossy(&line);
        tracing::info!(target: "portcullis::upstream::stderr", connector = %connector, pid, "{}", text.trim_end());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn lines(input: &[u8], limit: usize) -> Vec<Line> {
        let mut reader = BufReader::with_capacity(8, input);
        let (mut out, mut line) = (Vec::new(), Vec::new());
        loop {
            match read_line(&mut reader, limit, &mut line).await.unwrap() {
                Line::End => return out,
                Line::Whole => out.push(Line::TooLong {
                    head: line.clone(),
                    tail: Vec::new(),
                }),
                long => out.push(long),
            }
        }
    }

    #[tokio::test]
    async fn lines_are_split_and_blank_ones_skipped() {
        let got = lines(b"{\"a\":1}\n\n  \n{\"b\":2}", 64).await;
        let texts: Vec<_> = got
            .iter()
            .map(|l| match l {
                Line::TooLong { head, .. } => String::from_utf8_lossy(head).into_owned(),
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(texts, ["{\"a\":1}", "{\"b\":2}"]);
    }

    #[tokio::test]
    async fn an_over_long_line_is_skipped_keeping_its_edges() {
        let mut input = br#"{"jsonrpc":"2.0","id":9,"result":""#.to_vec();
        input.extend(std::iter::repeat_n(b'x', 5000));
        input.extend_from_slice(b"\"}\n{\"id\":1}\n");
        let mut reader = BufReader::with_capacity(8, &input[..]);
        let mut line = Vec::new();
        let Line::TooLong { head, tail } = read_line(&mut reader, 1024, &mut line).await.unwrap()
        else {
            panic!("too long");
        };
        assert!(head.len() <= EDGE && tail.len() <= EDGE);
        assert_eq!(edge_id(&head, &tail), Some(Value::from(9)));
        assert_eq!(
            read_line(&mut reader, 1024, &mut line).await.unwrap(),
            Line::Whole
        );
        assert_eq!(line, b"{\"id\":1}");
    }

    #[test]
    fn the_id_is_found_at_either_edge() {
        let tail = br#"xxxx","jsonrpc":"2.0","id":"abc"}"#;
        assert_eq!(edge_id(b"{\"result\":{\"x", tail), Some(Value::from("abc")));
        assert_eq!(
            edge_id(b"{\"id\":12,\"result\"", b"xx]}}"),
            Some(Value::from(12))
        );
        assert_eq!(edge_id(b"{\"result\":", b"{\"nested\":{\"id\":[1]}}"), None);
    }

    #[test]
    fn the_id_is_found_in_spaced_json_and_never_in_a_request() {
        assert_eq!(
            edge_id(b"{ \"jsonrpc\": \"2.0\", \"id\": 4, \"result\"", b"x\"}"),
            Some(Value::from(4))
        );
        assert_eq!(
            edge_id(b"{\"result\": {", b"\"x\"}, \"id\" : \"q\" }\n"),
            Some(Value::from("q"))
        );
        assert_eq!(
            edge_id(
                b"{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"sampling/createMessage\"",
                b"}}"
            ),
            None
        );
    }

    #[test]
    fn garbage_is_not_a_message() {
        assert!(parse_line(b"hello").is_none());
        assert!(parse_line(b"{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}").is_some());
    }
}
