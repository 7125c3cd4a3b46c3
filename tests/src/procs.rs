//! Child processes for tests: the gateway, upstreams, services. Output is captured
//! line by line (for readiness lines, log assertions and secret scans); the process
//! is killed when its handle drops.

use std::fmt::Display;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A running child process with captured output.
pub struct Proc {
    pub name: String,
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    /// The stdout/stderr reader threads (joined once the process exited, so that its
    /// last lines are in `lines`).
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Proc {
    /// Spawns `cmd` with stdout and stderr captured.
    pub fn spawn(name: &str, mut cmd: Command) -> Proc {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        let lines = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().expect("stdout");
        let err = child.stderr.take().expect("stderr");
        let mut readers: Vec<std::thread::JoinHandle<()>> = Vec::new();
        for (stream, tag) in [
            (Box::new(out) as Box<dyn std::io::Read + Send>, "out"),
            (Box::new(err), "err"),
        ] {
            let lines = lines.clone();
            let name = name.to_string();
            readers.push(std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if std::env::var_os("PORTCULLIS_TEST_ECHO").is_some() {
                        eprintln!("[{name} {tag}] {line}");
                    }
                    lines.lock().unwrap().push(line);
                }
            }));
        }
        Proc {
            name: name.to_string(),
            child,
            lines,
            readers,
        }
    }

    /// Waits until some output line satisfies `pred`; returns that line.
    pub fn wait_line(&mut self, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = self.lines.lock().unwrap().iter().find(|l| pred(l)) {
                return l.clone();
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "{} exited ({status}) before it was ready; output:\n{}",
                    self.name,
                    self.output()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{} not ready in {timeout:?}; output:\n{}",
                self.name,
                self.output()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything the process printed so far (stdout and stderr interleaved).
    pub fn output(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    /// Lines printed so far that contain `needle`.
    pub fn lines_with(&self, needle: &str) -> Vec<String> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .cloned()
            .collect()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal by name (`TERM`, `HUP`, `USR1`, `STOP`, `CONT`).
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -{sig} {}", self.pid());
    }

    /// Waits for the process to exit, up to `timeout`; its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                // The pipes close with the process: collect its last lines.
                for r in self.readers.drain(..) {
                    let _ = r.join();
                }
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An upstream MCP server for the gateway to front.
pub struct Upstream {
    pub proc: Proc,
    /// e.g. `http://127.0.0.1:PORT/mcp`
    pub url: String,
}

fn url_from_listening(line: &str) -> String {
    line.split_whitespace()
        .find(|w| w.starts_with("http://"))
        .expect("url in listening line")
        .to_string()
}

impl Upstream {
    /// The in-repo Rust upstream with extra flags (`--response sse`, `--sessions`, ...).
    pub fn rust(args: &[&str]) -> Upstream {
        Upstream::rust_at("127.0.0.1:0", args)
    }

    /// The in-repo Rust upstream listening on `127.0.0.1:<port>` (to restart it on the
    /// same address after dropping an earlier one).
    pub fn rust_on(port: u16, args: &[&str]) -> Upstream {
        Upstream::rust_at(&format!("127.0.0.1:{port}"), args)
    }

    fn rust_at(listen: &str, args: &[&str]) -> Upstream {
        let mut cmd = Command::new(crate::bin("portcullis-test-upstream"));
        cmd.args(["--listen", listen]).args(args);
        let mut proc = Proc::spawn("rust-upstream", cmd);
        let line = proc.wait_line(Duration::from_secs(10), |l| l.starts_with("listening on "));
        Upstream {
            url: url_from_listening(&line),
            proc,
        }
    }

    /// `@modelcontextprotocol/server-everything` over Streamable HTTP.
    pub fn everything() -> Upstream {
        Upstream::everything_on(crate::free_port())
    }

    /// server-everything listening on `<port>`.
    pub fn everything_on(port: u16) -> Upstream {
        let mut cmd = Command::new(everything_bin());
        cmd.arg("streamableHttp").env("PORT", port.to_string());
        let mut proc = Proc::spawn("server-everything", cmd);
        proc.wait_line(Duration::from_secs(30), |l| l.contains("listening on port"));
        Upstream {
            url: format!("http://127.0.0.1:{port}/mcp"),
            proc,
        }
    }

    /// server-everything over the 2024-11-05 HTTP+SSE transport (`/sse`).
    pub fn everything_sse() -> Upstream {
        Upstream::everything_sse_on(crate::free_port())
    }

    /// server-everything's HTTP+SSE transport on `<port>`.
    pub fn everything_sse_on(port: u16) -> Upstream {
        let mut cmd = Command::new(everything_bin());
        cmd.arg("sse").env("PORT", port.to_string());
        let mut proc = Proc::spawn("server-everything-sse", cmd);
        proc.wait_line(Duration::from_secs(30), |l| {
            l.contains("Server is running on port")
        });
        Upstream {
            url: format!("http://127.0.0.1:{port}/sse"),
            proc,
        }
    }

    /// The Python `mcp` server with annotated tools (`tests/peers/fastmcp_server.py`).
    pub fn fastmcp(args: &[&str]) -> Upstream {
        let mut cmd = Command::new(crate::installed(".venv/bin/python"));
        cmd.arg(crate::root().join("tests/peers/fastmcp_server.py"))
            .args(["--port", "0"])
            .args(args);
        let mut proc = Proc::spawn("fastmcp", cmd);
        let line = proc.wait_line(Duration::from_secs(30), |l| l.starts_with("listening on "));
        Upstream {
            url: url_from_listening(&line),
            proc,
        }
    }
}

/// server-everything's program (installed by `tests/peers/install.sh`); a stdio
/// connector runs it directly (not through `npx`), so its pid is the server's.
pub fn everything_bin() -> PathBuf {
    crate::installed("tests/node/node_modules/.bin/mcp-server-everything")
}

/// A running `portcullis serve`.
pub struct Gateway {
    pub proc: Proc,
    /// Base URL, e.g. `http://127.0.0.1:PORT` (the MCP endpoint is `{base}/mcp`).
    pub base: String,
    pub admin: Option<String>,
    pub config_path: PathBuf,
    pub dir: tempfile::TempDir,
}

impl Gateway {
    /// The gateway's child processes (its stdio connectors' programs), sorted.
    pub fn children(&self) -> Vec<u32> {
        let mut out = Vec::new();
        let tasks =
            std::fs::read_dir(format!("/proc/{}/task", self.proc.pid())).expect("gateway tasks");
        for task in tasks.flatten() {
            let text = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            out.extend(
                text.split_whitespace()
                    .filter_map(|p| p.parse::<u32>().ok()),
            );
        }
        out.sort();
        out.dedup();
        out
    }

    /// The admin listener's `/metrics` text (the gateway must run with `.admin()`).
    pub async fn metrics(&self) -> String {
        use http_body_util::BodyExt;
        let admin = self.admin.clone().expect("admin listener");
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<http_body_util::Full<hyper::body::Bytes>>();
        let resp = client
            .get(format!("{admin}/metrics").parse().expect("admin URL"))
            .await
            .expect("GET /metrics");
        let body = resp
            .into_body()
            .collect()
            .await
            .expect("metrics body")
            .to_bytes();
        String::from_utf8_lossy(&body).into_owned()
    }

    /// Writes `config` (full TOML, or a [`crate::Config`]; use `listen =
    /// "127.0.0.1:0"`) to a temp dir and starts the gateway on it.
    pub fn start(config: &(impl Display + ?Sized)) -> Gateway {
        Gateway::start_with_env(config, &[])
    }

    pub fn start_with_env(config: &(impl Display + ?Sized), env: &[(&str, &str)]) -> Gateway {
        Gateway::start_within(config, env, Duration::from_secs(60))
    }

    /// Like [`Gateway::start_with_env`], waiting up to `timeout` for it to listen
    /// (compiling a large policy component takes a while).
    pub fn start_within(
        config: &(impl Display + ?Sized),
        env: &[(&str, &str)],
        timeout: Duration,
    ) -> Gateway {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("portcullis.toml");
        std::fs::write(&path, config.to_string()).expect("write config");
        let mut gw = Gateway::launch(&path, env, dir);
        gw.wait_ready(timeout);
        gw
    }

    /// Like [`Gateway::start`], with the process's descriptor limit (soft and hard)
    /// set to `nofile` (`prlimit`, util-linux).
    pub fn start_with_descriptor_limit(config: &(impl Display + ?Sized), nofile: u32) -> Gateway {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("portcullis.toml");
        std::fs::write(&path, config.to_string()).expect("write config");
        let mut cmd = Command::new("prlimit");
        cmd.arg(format!("--nofile={nofile}:{nofile}"))
            .arg(crate::bin("portcullis"));
        let mut gw = Gateway::launch_command(cmd, &path, &[], dir);
        gw.wait_ready(Duration::from_secs(60));
        gw
    }

    /// Stops the gateway (SIGTERM, at most 30 s) and starts it again on the same
    /// config file and directory (its `state.db` and `audit.db` kept).
    pub fn restart(self) -> Gateway {
        let Gateway {
            mut proc,
            config_path,
            dir,
            ..
        } = self;
        proc.signal("TERM");
        proc.wait_exit(Duration::from_secs(30));
        drop(proc);
        let mut gw = Gateway::launch(&config_path, &[], dir);
        gw.wait_ready(Duration::from_secs(60));
        gw
    }

    /// Starts the gateway and expects it to refuse to start (exit 2); returns its
    /// output (ANSI colours removed) once the error message has been read, which may
    /// be a moment after the process exited.
    pub fn refuses(config: &(impl Display + ?Sized)) -> String {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("portcullis.toml");
        std::fs::write(&path, config.to_string()).expect("write config");
        let mut gw = Gateway::launch(&path, &[], dir);
        let code = gw.proc.wait_exit(Duration::from_secs(30));
        // The output is read by threads: wait until the error line has arrived.
        let deadline = Instant::now() + Duration::from_secs(5);
        while gw.proc.lines_with("error").is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let out = crate::audit_lines::strip_ansi(&gw.proc.output());
        assert_eq!(
            code,
            Some(2),
            "gateway should refuse to start; output:\n{out}"
        );
        out
    }

    fn launch(path: &Path, env: &[(&str, &str)], dir: tempfile::TempDir) -> Gateway {
        Gateway::launch_command(Command::new(crate::bin("portcullis")), path, env, dir)
    }

    /// `cmd` (the binary, or a wrapper with the binary as its last argument so far)
    /// with `serve --config PATH` and `env`.
    fn launch_command(
        mut cmd: Command,
        path: &Path,
        env: &[(&str, &str)],
        dir: tempfile::TempDir,
    ) -> Gateway {
        cmd.arg("serve")
            .arg("--config")
            .arg(path)
            .env("RUST_LOG", "info");
        for (k, v) in env {
            cmd.env(k, v);
        }
        Gateway {
            proc: Proc::spawn("portcullis", cmd),
            base: String::new(),
            admin: None,
            config_path: path.to_path_buf(),
            dir,
        }
    }

    /// Waits for the address on stdout and for the "portcullis started" log line on
    /// stderr. The two pipes are read by separate threads, so seeing the first says
    /// nothing about the second: without the wait, a test that reads a start-up log
    /// line (or the started line itself) right after `start` may find it missing.
    fn wait_ready(&mut self, timeout: Duration) {
        let line = self
            .proc
            .wait_line(timeout, |l| l.starts_with("listening on "));
        self.proc.wait_line(Duration::from_secs(10), |l| {
            l.contains("portcullis started")
        });
        self.base = url_from_listening(&line)
            .trim_end_matches("/mcp")
            .to_string();
        if let Some(l) = self.proc.lines_with("admin listening on ").first() {
            self.admin = Some(url_from_listening(l));
        }
    }

    /// The MCP endpoint URL (`/mcp` or `/mcp/<connector>`).
    pub fn url(&self, connector: Option<&str>) -> String {
        match connector {
            Some(c) => format!("{}/mcp/{c}", self.base),
            None => format!("{}/mcp", self.base),
        }
    }

    /// Audit lines (`portcullis::audit`) printed so far.
    pub fn audit_lines(&self) -> Vec<String> {
        self.proc.lines_with("portcullis::audit")
    }
}

/// Runs the real Python `mcp` client (`tests/peers/py_client.py`); returns its JSON
/// output line, or panics with its stderr on exit 2.
pub fn py_client(url: &str, key: &str, args: &[&str]) -> serde_json::Value {
    let out = Command::new(crate::installed(".venv/bin/python"))
        .arg(crate::root().join("tests/peers/py_client.py"))
        .arg(url)
        .args(["--key", key, "--timeout", "20"])
        .args(args)
        .output()
        .expect("running py_client.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "py_client {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("py_client output not JSON ({e}): {stdout}"))
}

/// Runs the Inspector CLI; returns (exit code, stdout, stderr).
pub fn inspector(url: &str, key: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(crate::installed(
        "tests/node/node_modules/.bin/mcp-inspector",
    ))
    .args(["--cli", url, "--transport", "http", "--header"])
    .arg(format!("Authorization: Bearer {key}"))
    .args(args)
    .output()
    .expect("running the inspector CLI");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
