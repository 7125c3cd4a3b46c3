//! The integration-test harness. Tests start real processes — the `portcullis`
//! binary, the in-repo upstream, server-everything (npm), a Python `mcp` server and
//! client (PyPI), redis-server, moto — on free loopback ports, and talk to them over
//! HTTP. Every process is killed when its handle drops.
//!
//! Prerequisites are installed by `make test` (`tests/peers/install.sh`) and the
//! binaries are built by `cargo build --workspace`; a missing one fails the test with
//! a message saying so, never skips it.

pub mod audit_support;
pub mod client;
pub mod extra;
pub mod otlp;
pub mod policy_support;
pub mod procs;
pub mod redis;
pub mod services;

use std::path::PathBuf;

pub use client::{Mcp, Response};
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

/// A built test-fixture policy component (`tests/policies/*`), built on first use.
pub fn fixture_policy(package: &str) -> PathBuf {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let target = root().join("target/test-policies");
    let file = target
        .join("wasm32-wasip2/release")
        .join(format!("{}.wasm", package.replace('-', "_")));
    let status =
        std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .current_dir(root())
            .args([
                "build",
                "--quiet",
                "--release",
                "--target",
                "wasm32-wasip2",
                "-p",
                package,
                "--target-dir",
            ])
            .arg(&target)
            .env("CARGO_PROFILE_RELEASE_DEBUG", "false")
            .status()
            .expect("running cargo");
    assert!(status.success(), "building test policy {package} failed");
    file
}
