//! The one way tests run the `portcullis` CLI to completion: [`Cli`] builds the
//! command line (arguments, `--config`, environment, standard input), [`Cli::run`]
//! waits at most a minute while reading the output as it comes (a large
//! `audit query` prints more than a pipe holds), and returns a [`CliOutput`]. Also
//! the operator commands whose output the tests parse (`agents eligible`,
//! `config check`, `audit query`).
//!
//! `portcullis serve` is started by [`crate::Gateway`] instead: it keeps running.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::audit_lines::strip_ansi;

/// A `portcullis` command line to run.
#[derive(Clone, Debug)]
pub struct Cli {
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    stdin: Option<Vec<u8>>,
    timeout: Duration,
}

/// What a finished command printed: exit code (`None` if killed by a signal),
/// standard output, and standard error with ANSI colours removed.
#[derive(Clone, Debug)]
pub struct CliOutput {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Default for Cli {
    fn default() -> Cli {
        Cli::new()
    }
}

impl Cli {
    pub fn new() -> Cli {
        Cli {
            args: Vec::new(),
            env: Vec::new(),
            stdin: None,
            timeout: Duration::from_secs(60),
        }
    }

    pub fn args<I, S>(mut self, args: I) -> Cli
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_os_string()));
        self
    }

    pub fn arg(self, arg: impl AsRef<OsStr>) -> Cli {
        self.args([arg])
    }

    /// `--config <path>`, after the arguments given so far.
    pub fn config(self, path: &Path) -> Cli {
        self.arg("--config").arg(path)
    }

    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Cli {
        self.env
            .push((key.as_ref().to_os_string(), value.as_ref().to_os_string()));
        self
    }

    pub fn envs<K, V>(mut self, vars: impl IntoIterator<Item = (K, V)>) -> Cli
    where
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        for (k, v) in vars {
            self = self.env(k, v);
        }
        self
    }

    /// Bytes for standard input (otherwise it is empty).
    pub fn stdin(mut self, bytes: &[u8]) -> Cli {
        self.stdin = Some(bytes.to_vec());
        self
    }

    /// How long [`Cli::run`] waits (60 s unless set).
    pub fn timeout(mut self, timeout: Duration) -> Cli {
        self.timeout = timeout;
        self
    }

    /// Runs the command to completion; panics if it does not finish in time.
    pub fn run(self) -> CliOutput {
        let mut cmd = Command::new(crate::bin("portcullis"));
        cmd.args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(if self.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("running portcullis");
        let pid = child.id();
        if let (Some(bytes), Some(mut input)) = (self.stdin, child.stdin.take()) {
            // A command that fails early may not read it all.
            std::thread::spawn(move || {
                let _ = input.write_all(&bytes);
            });
        }
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        let out = match rx.recv_timeout(self.timeout) {
            Ok(out) => out.expect("portcullis output"),
            Err(_) => {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
                panic!(
                    "portcullis {:?} did not finish within {:?}",
                    self.args, self.timeout
                );
            }
        };
        CliOutput {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: strip_ansi(&String::from_utf8_lossy(&out.stderr)),
        }
    }

    /// Runs the command and asserts that it exits 0; its output.
    #[track_caller]
    pub fn run_ok(self) -> CliOutput {
        let args = self.args.clone();
        let out = self.run();
        assert!(
            out.success(),
            "portcullis {args:?} failed ({:?}):\n{}{}",
            out.code,
            out.stdout,
            out.stderr
        );
        out
    }
}

impl CliOutput {
    /// Exit code 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

/// `portcullis agents eligible --config <config> <agent>`, parsed: connector id ->
/// (`eligible` / `not eligible` / `unknown`, the listed tool names sorted).
pub fn agents_eligible(config: &Path, agent: &str) -> BTreeMap<String, (String, Vec<String>)> {
    let out = Cli::new()
        .args(["agents", "eligible"])
        .config(config)
        .arg(agent)
        .run_ok();
    let mut report = BTreeMap::new();
    for line in out.stdout.lines().skip(1) {
        let cols: Vec<&str> = line.split('\t').collect();
        assert!(cols.len() >= 4, "unexpected eligibility line {line:?}");
        let tools = cols[3]
            .split_once("tools:")
            .map(|(_, t)| t)
            .unwrap_or_default();
        let mut tools: Vec<String> = tools
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .collect();
        tools.sort();
        report.insert(cols[0].to_string(), (cols[2].to_string(), tools));
    }
    assert!(
        !report.is_empty(),
        "empty eligibility report: {}",
        out.stdout
    );
    report
}

/// The module digest of each policy as `portcullis config check` reports it.
pub fn policy_digests(config: &Path) -> HashMap<String, String> {
    let out = Cli::new().args(["config", "check"]).config(config).run_ok();
    out.stdout
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            (words.next()? == "policy").then_some(())?;
            let name = words.next()?.to_string();
            let digest = words.find_map(|w| w.strip_prefix("sha256:"))?.to_string();
            Some((name, digest))
        })
        .collect()
}

/// `portcullis audit query --config CONFIG --format json ARGS...`: the rows.
pub fn audit_query(config: &Path, args: &[&str]) -> Vec<Value> {
    let out = Cli::new()
        .args(["audit", "query"])
        .config(config)
        .args(["--format", "json"])
        .args(args)
        .run_ok();
    match serde_json::from_str::<Value>(&out.stdout) {
        Ok(Value::Array(rows)) => rows,
        other => panic!(
            "audit query output is not a JSON array ({other:?}): {}",
            out.stdout
        ),
    }
}
