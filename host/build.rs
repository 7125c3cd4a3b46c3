//! Builds the built-in policies in `policies/` for `wasm32-wasip2` and leaves the
//! components in `OUT_DIR`, where `policy::builtin` embeds them with `include_bytes!`.
//! Like wasmtime's own test-programs build, it runs a nested cargo with its own target
//! directory (so it never waits on the outer build's lock).

use std::path::PathBuf;
use std::process::Command;

const POLICIES: [&str; 5] = [
    "slug-scope",
    "blocklist",
    "mcp-servers",
    "annotation-hints",
    "redact-secrets",
];

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest_dir.parent().unwrap().to_path_buf();
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    for dir in ["policies", "guest-sdk", "wit"] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }
    let target_dir = out_dir.join("wasm-target");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&root)
        .arg("build")
        .arg("--release")
        .arg("--target=wasm32-wasip2")
        .arg("--target-dir")
        .arg(&target_dir);
    for p in POLICIES {
        cmd.arg("-p").arg(format!("policy-{p}"));
    }
    // The outer build's flags are for the host, not for the guests.
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "RUSTC_WORKSPACE_WRAPPER",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("CARGO_PROFILE_RELEASE_DEBUG", "false");
    let status = cmd
        .status()
        .expect("running cargo to build the built-in policies");
    assert!(
        status.success(),
        "building the built-in policies for wasm32-wasip2 failed (is the target installed? `rustup target add wasm32-wasip2`)"
    );
    for p in POLICIES {
        let file = format!("policy_{}.wasm", p.replace('-', "_"));
        let built = target_dir.join("wasm32-wasip2/release").join(&file);
        std::fs::copy(&built, out_dir.join(&file))
            .unwrap_or_else(|e| panic!("copying {}: {e}", built.display()));
    }
}
