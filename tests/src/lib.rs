//! The integration-test harness. Tests start real processes — the `portcullis`
//! binary, the in-repo upstream, server-everything (npm), a Python `mcp` server and
//! client (PyPI), redis-server, moto — on free loopback ports, and talk to them over
//! HTTP. Every process is killed when its handle drops.
//!
//! Prerequisites are installed by `make test` (`tests/peers/install.sh`) and the
//! binaries are built by `cargo build --workspace`; a missing one fails the test with
//! a message saying so, never skips it.
//!
//! What is where: [`config`] builds gateway configs, [`procs`] runs the gateway and
//! the upstreams, [`cli`] runs the `portcullis` CLI, [`client`] speaks MCP,
//! [`sse`] reads answers as they stream, [`rpc`] checks JSON-RPC shapes,
//! [`audit_lines`] reads and waits for log and audit lines, [`audit_db`] reads the
//! audit tables, [`upstreams`] serves odd upstreams from the test process,
//! [`fixtures`] holds the guest policies `build.rs` built, and [`otlp`], [`redis`]
//! and [`services`] run the collector, Redis and the KMS.

pub mod audit_db;
pub mod audit_lines;
pub mod cli;
pub mod client;
pub mod config;
pub mod fixtures;
pub mod otlp;
pub mod procs;
pub mod redis;
pub mod rpc;
pub mod services;
pub mod sse;
pub mod upstreams;

use std::path::PathBuf;

pub use cli::{Cli, CliOutput};
pub use client::{Mcp, Response};
pub use config::{Agent, Config, Connector, Policy};
pub use fixtures::fixture_policy;
pub use procs::{Gateway, Proc, Upstream};

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repo root")
        .to_path_buf()
}

/// A binary built by this workspace (`target/<profile>/<name>`).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test>-<hash>
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` (make test does) first",
        path.display()
    );
    path
}

/// A path under the repository that `make test` installs; panics with a hint when absent.
pub fn installed(rel: &str) -> PathBuf {
    let p = root().join(rel);
    assert!(
        p.exists(),
        "{} is missing: run `make test` (tests/peers/install.sh) first",
        p.display()
    );
    p
}

/// A free TCP port on 127.0.0.1 (bound then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// A fresh API key and its sha256 (hex), as `portcullis keys new` makes them.
pub fn new_key() -> (String, String) {
    use rand::RngCore;
    use sha2::Digest;
    let mut raw = [0u8; 32];
    rand::rng().fill_bytes(&mut raw);
    let key = format!("pc_{}", hex::encode(raw));
    let hash = hex::encode(sha2::Sha256::digest(key.as_bytes()));
    (key, hash)
}
