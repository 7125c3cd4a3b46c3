//! The policy kit through the real binary:
//! - the polyglot proof: args-guard written in Rust, JavaScript (componentize-js) and
//!   Python (componentize-py), built by `tests/polyglot/build.sh` (`portcullis policy
//!   build`), each passes `portcullis policy test` on the shared fixture table and,
//!   loaded by a running gateway, decides every call of that table identically
//!   (verdict, code, message and audited reason);
//! - the fixture runner's pass and fail paths (TOML and YAML, exit codes, table);
//! - `policy new` / `build` / `inspect` / `annotate` / `keygen` / `sign` / `verify`;
//! - `[policy_trust]`: unsigned, tampered, untrusted and unpinned modules are refused at
//!   start-up (exit 2) and at hot reload (the last good chain stays);
//! - the post-call hook: the redact-secrets policy masks e-mail addresses and secrets in
//!   the in-repo upstream's `echo` results, or withholds them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use portcullis_tests::audit_lines::{audit_records, fields, strip_ansi, wait_lines};
use portcullis_tests::client::session;
use portcullis_tests::config::{toml_path, toml_strs};
use portcullis_tests::fixtures::write_by_rename;
use portcullis_tests::rpc::{assert_call_ok, rpc_error};
use portcullis_tests::{
    Agent, Cli, Config, Connector, Gateway, Policy, Upstream, fixture_policy, new_key, root,
};
use serde_json::{Value, json};

const DENIED: (i64, &str) = (-32001, "Denied: production host");
const RELOADED: &str = "policy chain reloaded";
const KEPT: &str = "keeping the last good chain";

/// `portcullis ARGS...` with extra environment: (exit code, stdout, stderr). Building
/// or compiling a JS or Python policy in a debug build may take minutes.
fn kit(args: &[&str], env: &[(&str, &Path)]) -> (Option<i32>, String, String) {
    let out = Cli::new()
        .args(args)
        .envs(env.iter().copied())
        .timeout(Duration::from_secs(600))
        .run();
    (out.code, out.stdout, out.stderr)
}

fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// The three builds of args-guard (built once per test run; the script is idempotent).
fn polyglot() -> [(&'static str, PathBuf); 3] {
    static BUILT: Mutex<bool> = Mutex::new(false);
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if !*built {
        let out = Command::new("bash")
            .arg(root().join("tests/polyglot/build.sh"))
            .env("PORTCULLIS", portcullis_tests::bin("portcullis"))
            .output()
            .expect("running tests/polyglot/build.sh");
        assert!(
            out.status.success(),
            "tests/polyglot/build.sh failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        *built = true;
    }
    let dir = root().join("target/polyglot");
    [
        ("rust", dir.join("args_guard_rust.wasm")),
        ("js", dir.join("args_guard_js.wasm")),
        ("python", dir.join("args_guard_py.wasm")),
    ]
}

/// The shared decision table.
fn table_path() -> PathBuf {
    root().join("tests/polyglot/args-guard/fixtures.toml")
}

/// Where compiled policies are cached between gateway starts (the big JS and Python
/// components take tens of seconds to compile in a debug build).
fn cache_dir() -> PathBuf {
    root().join("target/policy-cache")
}

/// Starts `portcullis serve` on `config` with the shared compilation cache, waiting up
/// to `timeout` for it to listen (compiling a 12-18 MB component takes a while).
fn start_gateway(config: &Config, timeout: Duration) -> Gateway {
    let cache = cache_dir();
    let cache = cache.to_str().expect("utf-8 path");
    Gateway::start_within(
        &config.render(),
        &[("PORTCULLIS_POLICY_CACHE", cache)],
        timeout,
    )
}

/// One connector (`conn_a`, slug `alpha`), one agent, and `policies`.
fn config(upstream: &str, hash: &str, policies: Vec<Policy>) -> Config {
    policies.into_iter().fold(
        Config::new()
            .connector(Connector::new("conn_a", "Alpha", upstream))
            .agent(Agent::new("agent", hash)),
        Config::policy,
    )
}

/// What the agent saw for one call, plus the audited reason of a denial.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Forwarded,
    Error {
        code: i64,
        message: String,
        reason: String,
    },
}

/// Every `[[calls]]` case of the table that a gateway can replay: (name, arguments,
/// expected denial reason or None for allow). Cases with other settings or raw
/// argument text are for `policy test` only.
fn table_calls() -> Vec<(String, Value, Option<String>)> {
    let text = std::fs::read_to_string(table_path()).expect("fixture table");
    let table: toml::Table = toml::from_str(&text).expect("fixture TOML");
    let calls = table["calls"].as_array().expect("[[calls]]");
    calls
        .iter()
        .filter(|c| c.get("settings").is_none() && c.get("arguments").is_some())
        .map(|c| {
            let args = serde_json::to_value(&c["arguments"]).expect("arguments as JSON");
            let deny = c["expect"].as_str() == Some("deny");
            let reason = deny.then(|| c["reason"].as_str().expect("reason").to_string());
            (c["name"].as_str().expect("name").to_string(), args, reason)
        })
        .collect()
}

/// Replays the table's calls on `alpha.echo` through `gw`; the outcomes in order.
async fn replay(
    gw: &Gateway,
    key: &str,
    calls: &[(String, Value, Option<String>)],
) -> Vec<Outcome> {
    let mut m = session(&gw.url(None), key).await;
    let mut out = Vec::new();
    for (i, (name, args, _)) in calls.iter().enumerate() {
        let msg = m.call("alpha.echo", args.clone()).await;
        // The audit line of this call (calls are sequential: the i-th tools/call record).
        let deadline = Instant::now() + Duration::from_secs(10);
        let record = loop {
            let recs: Vec<_> = audit_records(gw)
                .into_iter()
                .filter(|r| r.get("method").map(String::as_str) == Some("tools/call"))
                .collect();
            if recs.len() > i {
                break recs[i].clone();
            }
            assert!(
                Instant::now() < deadline,
                "no audit record for call {name:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        out.push(match rpc_error(&msg) {
            None => {
                assert!(msg.get("result").is_some(), "{name}: {msg}");
                Outcome::Forwarded
            }
            Some((code, message)) => Outcome::Error {
                code,
                message,
                reason: record.get("reason").cloned().unwrap_or_default(),
            },
        });
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn polyglot_args_guard_decides_identically_through_the_gateway() {
    let modules = polyglot();
    let calls = table_calls();
    assert!(calls.len() >= 10, "the table should have its call cases");

    // 1. Each build passes the whole fixture table offline.
    for (lang, module) in &modules {
        let (code, stdout, stderr) = kit(
            &["policy", "test", p(module), p(&table_path())],
            &[("PORTCULLIS_POLICY_CACHE", &cache_dir())],
        );
        assert_eq!(
            code,
            Some(0),
            "{lang}: policy test failed:\n{stdout}{stderr}"
        );
        assert!(stdout.contains(" 0 failed"), "{lang}: {stdout}");
    }

    // 2. Each build, loaded by a running gateway, decides the table identically.
    let upstream = Upstream::rust(&[]);
    let (key, hash) = new_key();
    let mut results: BTreeMap<&str, Vec<Outcome>> = BTreeMap::new();
    for (lang, module) in &modules {
        let policy = Policy::file(module)
            .name("args-guard")
            .timeout_ms(5000)
            .memory_limit_mb(128);
        let started = Instant::now();
        let gw = start_gateway(
            &config(&upstream.url, &hash, vec![policy]),
            Duration::from_secs(400),
        );
        let loaded = started.elapsed();
        let t = Instant::now();
        let outcomes = replay(&gw, &key, &calls).await;
        eprintln!(
            "{lang}: gateway ready in {loaded:?}; {} calls in {:?}",
            calls.len(),
            t.elapsed()
        );
        for ((name, _, want), got) in calls.iter().zip(&outcomes) {
            match (want, got) {
                (None, Outcome::Forwarded) => {}
                // Allowed by the policy; the upstream itself may refuse (no `text`).
                (None, Outcome::Error { code, .. }) if *code != DENIED.0 => {}
                (
                    Some(reason),
                    Outcome::Error {
                        code,
                        message,
                        reason: audited,
                    },
                ) => {
                    assert_eq!((*code, message.as_str()), DENIED, "{lang}: {name}");
                    assert!(
                        audited.contains(reason.as_str()),
                        "{lang}: {name}: audited {audited:?}, want {reason:?}"
                    );
                }
                _ => panic!("{lang}: {name}: expected {want:?}, got {got:?}"),
            }
        }
        results.insert(lang, outcomes);
    }
    let rust = &results["rust"];
    for lang in ["js", "python"] {
        assert_eq!(&results[lang], rust, "{lang} decides differently from rust");
    }
}

#[test]
fn policy_test_pass_and_fail_paths() {
    let module = fixture_policy("policy-test-args-guard");
    let dir = tempfile::tempdir().unwrap();

    // Pass: the shared table, and the YAML fixtures of redact-secrets.
    let (code, stdout, stderr) = kit(&["policy", "test", p(&module), p(&table_path())], &[]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains("PASS") && !stdout.contains("FAIL"),
        "{stdout}"
    );
    let last = stdout.lines().rev().find(|l| !l.trim().is_empty()).unwrap();
    assert!(last.ends_with(" passed, 0 failed"), "{last}");

    let redact = fixture_policy("policy-redact-secrets");
    let yaml = root().join("policies/redact-secrets/fixtures.yaml");
    let (code, stdout, stderr) = kit(&["policy", "test", p(&redact), p(&yaml)], &[]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("13 passed, 0 failed"), "{stdout}");

    // Fail: wrong verdict, wrong code, wrong reason, a list and a result mismatch.
    let failing = dir.path().join("failing.toml");
    std::fs::write(
        &failing,
        r#"
[connector]
tools = ["echo"]

[[calls]]
name = "right"
tool = "echo"
arguments = { text = "db.prod.internal" }
expect = "deny"
code = -32001

[[calls]]
name = "wrong verdict"
tool = "echo"
arguments = { text = "db.prod.internal" }
expect = "allow"

[[calls]]
name = "wrong code"
tool = "echo"
arguments = { text = "db.prod.internal" }
expect = "deny"
code = -32003

[[calls]]
name = "wrong reason"
tool = "echo"
arguments = { text = "db.prod.internal" }
expect = "deny"
reason = "somewhere.else"

[[lists]]
name = "wrong list"
visible = []

[[results]]
name = "wrong result"
tool = "echo"
result = { content = [] }
expect = "replace"

[[validate]]
name = "wrong settings verdict"
settings = { domains = [] }
expect = "ok"
"#,
    )
    .unwrap();
    let (code, stdout, stderr) = kit(&["policy", "test", p(&module), p(&failing)], &[]);
    assert_eq!(code, Some(1), "failures exit 1:\n{stdout}{stderr}");
    assert!(stdout.contains("1 passed, 6 failed"), "{stdout}");
    for needle in [
        "wrong verdict",
        "denied: arguments mention production host db.prod.internal",
        "code -32001 != -32003",
        "lacks \"somewhere.else\"",
        "different items visible",
        "passed unchanged",
        "must not be empty",
    ] {
        assert!(stdout.contains(needle), "missing {needle:?} in:\n{stdout}");
    }

    // Errors (unreadable fixtures, unknown keys, no cases) exit 2 with a message.
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[[calls]]\ntool = \"echo\"\nexpect = \"maybe\"\n").unwrap();
    let (code, _, stderr) = kit(&["policy", "test", p(&module), p(&bad)], &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("bad.toml"), "{stderr}");
    std::fs::write(&bad, "settings = {}\n").unwrap();
    let (code, _, stderr) = kit(&["policy", "test", p(&module), p(&bad)], &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("no cases"), "{stderr}");
}

#[test]
fn scaffold_build_inspect_annotate_sign_verify() {
    let dir = tempfile::tempdir().unwrap();
    let scaffold_target = root().join("target/kit-scaffold");

    // Rust: new -> build -> test (the sample fixtures) -> inspect.
    let rust_dir = dir.path().join("demo-rust");
    let (code, stdout, stderr) = kit(
        &[
            "policy",
            "new",
            "demo-rust",
            "--lang",
            "rust",
            "--dir",
            p(&rust_dir),
        ],
        &[],
    );
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(rust_dir.join("wit/policy.wit").is_file());
    let (code, stdout, stderr) = kit(
        &["policy", "build", p(&rust_dir)],
        &[("CARGO_TARGET_DIR", &scaffold_target)],
    );
    assert_eq!(code, Some(0), "rust build failed:\n{stdout}{stderr}");
    let built = rust_dir.join("dist/demo-rust.wasm");
    assert!(built.is_file(), "{stdout}");
    let (code, stdout, stderr) = kit(
        &[
            "policy",
            "test",
            p(&built),
            p(&rust_dir.join("fixtures.toml")),
        ],
        &[],
    );
    assert_eq!(code, Some(0), "{stdout}{stderr}");

    let inspect = |module: &Path| -> Value {
        let (code, stdout, stderr) = kit(&["policy", "inspect", "--json", p(module)], &[]);
        assert_eq!(code, Some(0), "{stdout}{stderr}");
        serde_json::from_str(&stdout).unwrap()
    };
    let report = inspect(&built);
    assert_eq!(
        report["world"], "portcullis:policy/policy@0.2.0",
        "{report}"
    );
    assert_eq!(report["compatible"], true);
    assert_eq!(report["describe"], true, "{report}");
    assert_eq!(report["metadata"]["name"], "demo-rust");
    assert_eq!(report["metadata"]["language"], "rust");
    assert_eq!(report["metadata"]["version"], "0.1.0");
    let bytes = std::fs::read(&built).unwrap();
    assert_eq!(report["size"], bytes.len());
    assert_eq!(
        report["sha256"],
        portcullis_tests::fixtures::sha256_hex(&bytes)
    );
    let imports: Vec<&str> = report["imports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert!(
        imports.contains(&"portcullis:policy/types@0.2.0"),
        "{imports:?}"
    );

    // The text form, with --check compiling it like the gateway.
    let (code, stdout, stderr) = kit(&["policy", "inspect", "--check", p(&built)], &[]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    for needle in [
        "world:     portcullis:policy/policy@0.2.0",
        "sha256:",
        "imports:",
        "name:        demo-rust",
        "compiled and linked",
    ] {
        assert!(stdout.contains(needle), "missing {needle:?}:\n{stdout}");
    }

    // annotate rewrites the section in place (and so the digest).
    let (code, stdout, stderr) = kit(
        &[
            "policy",
            "annotate",
            p(&built),
            "--author",
            "Security Team",
            "--source",
            "https://git.example/demo",
            "--version",
            "1.2.0",
        ],
        &[],
    );
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let report2 = inspect(&built);
    assert_eq!(report2["metadata"]["author"], "Security Team");
    assert_eq!(report2["metadata"]["version"], "1.2.0");
    assert_eq!(
        report2["metadata"]["name"], "demo-rust",
        "other fields kept"
    );
    assert_ne!(report2["sha256"], report["sha256"]);
    assert_eq!(report2["compatible"], true, "still a valid component");
    let (code, stdout, stderr) = kit(&["policy", "inspect", "--check", p(&built)], &[]);
    assert_eq!(
        code,
        Some(0),
        "annotated module still loads: {stdout}{stderr}"
    );

    // keygen, sign, verify; a second key does not verify; tampering is caught.
    let keys = dir.path().join("signer");
    let (code, stdout, stderr) = kit(&["policy", "keygen", "--out", p(&keys)], &[]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let pub_hex = std::fs::read_to_string(dir.path().join("signer.pub")).unwrap();
    assert!(stdout.contains(pub_hex.trim()), "{stdout}");
    let (code, _, stderr) = kit(&["policy", "keygen", "--out", p(&keys)], &[]);
    assert_eq!(code, Some(2), "keygen never overwrites silently: {stderr}");
    let (code, stdout, stderr) = kit(
        &[
            "policy",
            "sign",
            p(&built),
            "--key",
            p(&dir.path().join("signer.key")),
        ],
        &[],
    );
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(
        dir.path()
            .join("demo-rust/dist/demo-rust.wasm.sig")
            .is_file()
    );
    let (code, stdout, stderr) = kit(
        &[
            "policy",
            "verify",
            p(&built),
            "--pubkey",
            p(&dir.path().join("signer.pub")),
        ],
        &[],
    );
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("signature ok"), "{stdout}");
    let (code, _, stderr) = kit(
        &["policy", "verify", p(&built), "--pubkey", pub_hex.trim()],
        &[],
    );
    assert_eq!(code, Some(0), "hex key: {stderr}");
    let other = dir.path().join("other");
    kit(&["policy", "keygen", "--out", p(&other)], &[]);
    let (code, _, stderr) = kit(
        &[
            "policy",
            "verify",
            p(&built),
            "--pubkey",
            p(&dir.path().join("other.pub")),
        ],
        &[],
    );
    assert_eq!(code, Some(2));
    assert!(stderr.contains("not trusted"), "{stderr}");
    let (code, stdout, _) = kit(&["policy", "inspect", p(&built)], &[]);
    assert_eq!(code, Some(0));
    assert!(stdout.contains("digest matches"), "{stdout}");
    kit(&["policy", "annotate", p(&built), "--license", "MIT"], &[]);
    let (code, _, stderr) = kit(
        &[
            "policy",
            "verify",
            p(&built),
            "--pubkey",
            p(&dir.path().join("signer.pub")),
        ],
        &[],
    );
    assert_eq!(code, Some(2));
    assert!(stderr.contains("tampered"), "{stderr}");

    // JavaScript and Python projects build as scaffolded, to components of the world.
    let tools: [(&str, &str, PathBuf); 2] = [
        (
            "js",
            "COMPONENTIZE_JS",
            root().join("tests/node/node_modules/.bin/componentize-js"),
        ),
        (
            "python",
            "COMPONENTIZE_PY",
            root().join(".venv/bin/componentize-py"),
        ),
    ];
    for (lang, var, tool) in &tools {
        assert!(
            tool.exists(),
            "{} is missing: run tests/peers/install.sh",
            tool.display()
        );
        let proj = dir.path().join(format!("demo-{lang}"));
        let name = format!("demo-{lang}");
        let (code, stdout, stderr) = kit(
            &["policy", "new", &name, "--lang", lang, "--dir", p(&proj)],
            &[],
        );
        assert_eq!(code, Some(0), "{stdout}{stderr}");
        let (code, stdout, stderr) = kit(&["policy", "build", p(&proj)], &[(var, tool)]);
        assert_eq!(code, Some(0), "{lang} build failed:\n{stdout}{stderr}");
        let report = inspect(&proj.join(format!("dist/{name}.wasm")));
        assert_eq!(report["compatible"], true, "{lang}: {report}");
        assert_eq!(report["metadata"]["language"], *lang);
    }

    // Unknown languages and bad names are refused.
    let (code, _, _) = kit(&["policy", "new", "x", "--lang", "cobol"], &[]);
    assert_eq!(code, Some(2));
    let (code, _, stderr) = kit(
        &[
            "policy",
            "new",
            "Bad Name",
            "--lang",
            "js",
            "--dir",
            p(&dir.path().join("bad")),
        ],
        &[],
    );
    assert_eq!(code, Some(2));
    assert!(stderr.contains("policy name"), "{stderr}");
}

/// A key pair made with `policy keygen` in `dir`: (key path, public key hex).
fn keypair(dir: &Path, name: &str) -> (PathBuf, String) {
    let prefix = dir.join(name);
    let (code, stdout, stderr) = kit(&["policy", "keygen", "--out", p(&prefix)], &[]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let public = std::fs::read_to_string(dir.join(format!("{name}.pub"))).unwrap();
    (dir.join(format!("{name}.key")), public.trim().to_string())
}

fn sign(module: &Path, key: &Path) {
    let (code, stdout, stderr) = kit(&["policy", "sign", p(module), "--key", p(key)], &[]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
}

/// A `[policy_trust]` section requiring signatures by `keys`, pinned by `lock`.
fn trust(keys: &[&str], lock: Option<&Path>) -> String {
    let lock = lock
        .map(|l| format!("lock_file = {}", toml_path(l)))
        .unwrap_or_default();
    format!(
        "[policy_trust]\nrequire_signatures = true\ntrusted_keys = {}\n{lock}",
        toml_strs(keys)
    )
}

fn guard(module: &Path) -> Policy {
    Policy::file(module).name("guard")
}

#[test]
fn unsigned_tampered_untrusted_or_unpinned_modules_are_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = keypair(dir.path(), "signer");
    let (other_key, _) = keypair(dir.path(), "intruder");
    let module = dir.path().join("guard.wasm");
    std::fs::copy(fixture_policy("policy-test-args-guard"), &module).unwrap();
    let (_, hash) = new_key();
    let base = config("http://127.0.0.1:9/mcp", &hash, vec![guard(&module)]);
    let with_trust = base.clone().raw(&trust(&[&public], None)).render();

    // Unsigned.
    let out = Gateway::refuses(&with_trust);
    assert!(out.contains("policy \"guard\""), "{out}");
    assert!(out.contains("unsigned: no signature file"), "{out}");
    assert!(out.contains("guard.wasm.sig"), "{out}");

    // Signed by a key that is not trusted.
    sign(&module, &other_key);
    let out = Gateway::refuses(&with_trust);
    assert!(out.contains("signed by a key that is not trusted"), "{out}");

    // Signed by the trusted key: `config check` accepts it and names the digest.
    sign(&module, &key);
    let cfg = dir.path().join("portcullis.toml");
    std::fs::write(&cfg, &with_trust).unwrap();
    let (code, stdout, stderr) = kit(&["config", "check", "--config", p(&cfg)], &[]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");

    // Tampered after signing (one byte appended: still a loadable component).
    let mut bytes = std::fs::read(&module).unwrap();
    bytes.extend_from_slice(b"\0\x04\x03abc");
    std::fs::write(&module, &bytes).unwrap();
    let out = Gateway::refuses(&with_trust);
    assert!(out.contains("tampered: the module's sha256 is"), "{out}");

    // A signature whose bytes do not verify.
    sign(&module, &key);
    let sig_path = dir.path().join("guard.wasm.sig");
    let sig = std::fs::read_to_string(&sig_path).unwrap();
    let forged: String = sig
        .lines()
        .map(|l| {
            if l.starts_with("signature") {
                format!("signature = \"{}\"", "ab".repeat(64))
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&sig_path, forged).unwrap();
    let out = Gateway::refuses(&with_trust);
    assert!(out.contains("invalid signature"), "{out}");
    sign(&module, &key);

    // A lock file that pins another digest; then one written by `policy lock`.
    let lock = dir.path().join("policies.lock");
    std::fs::write(
        &lock,
        format!("[modules]\n\"guard.wasm\" = \"{}\"\n", "0".repeat(64)),
    )
    .unwrap();
    let with_lock = base.clone().raw(&trust(&[&public], Some(&lock))).render();
    let out = Gateway::refuses(&with_lock);
    assert!(out.contains("does not match the lock file"), "{out}");
    std::fs::write(&cfg, &with_lock).unwrap();
    let (code, stdout, stderr) = kit(&["policy", "lock", "--config", p(&cfg)], &[]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("guard.wasm = "), "{stdout}");
    let (code, stdout, stderr) = kit(&["config", "check", "--config", p(&cfg)], &[]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");

    // A module missing from the lock file.
    std::fs::write(&lock, "[modules]\n").unwrap();
    let out = Gateway::refuses(&with_lock);
    assert!(out.contains("not pinned in the lock file"), "{out}");

    // Config validation names the key.
    let out = Gateway::refuses(
        &base
            .raw("[policy_trust]\nrequire_signatures = true")
            .render(),
    );
    assert!(out.contains("policy_trust.trusted_keys"), "{out}");

    // Built-ins need no signature.
    let builtin = config(
        "http://127.0.0.1:9/mcp",
        &hash,
        vec![Policy::new("builtin:blocklist")],
    );
    std::fs::write(&cfg, builtin.raw(&trust(&[&public], None)).render()).unwrap();
    let (code, stdout, stderr) = kit(&["config", "check", "--config", p(&cfg)], &[]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_module_that_fails_verification_at_reload_keeps_the_last_good_chain() {
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = keypair(dir.path(), "signer");
    let module = dir.path().join("guard.wasm");
    std::fs::copy(fixture_policy("policy-test-args-guard"), &module).unwrap();
    sign(&module, &key);
    let upstream = Upstream::rust(&[]);
    let (api_key, hash) = new_key();
    let gw = start_gateway(
        &config(&upstream.url, &hash, vec![guard(&module)]).raw(&trust(&[&public], None)),
        Duration::from_secs(60),
    );
    let mut m = session(&gw.url(None), &api_key).await;
    let prod = json!({"text": "db1.prod.internal"});
    let denied = |msg: &Value| rpc_error(msg) == Some((DENIED.0, DENIED.1.to_string()));
    let msg = m.call("alpha.echo", prod.clone()).await;
    assert!(denied(&msg), "{msg}");

    // Swap in another policy (misbehave, which allows everything with `{}`) without
    // signing it: the reload is refused and args-guard keeps deciding.
    let other = std::fs::read(fixture_policy("policy-test-misbehave")).unwrap();
    write_by_rename(&module, &other);
    let kept = wait_lines(&gw.proc, KEPT, 1, Duration::from_secs(20)).await;
    assert!(
        kept[0].contains("refused by policy_trust") && kept[0].contains("tampered"),
        "{kept:?}"
    );
    for _ in 0..3 {
        let msg = m.call("alpha.echo", prod.clone()).await;
        assert!(denied(&msg), "the last good chain must stay: {msg}");
    }

    // Signing it (a new .sig beside the module) triggers a reload that succeeds.
    sign(&module, &key);
    wait_lines(&gw.proc, RELOADED, 1, Duration::from_secs(20)).await;
    let msg = m.call("alpha.echo", prod.clone()).await;
    assert_call_ok(&msg);

    // A module signed by an untrusted key is refused at reload too.
    std::fs::copy(fixture_policy("policy-test-args-guard"), &module).unwrap();
    let (intruder, _) = keypair(dir.path(), "intruder");
    let before = gw.proc.lines_with(KEPT).len();
    sign(&module, &intruder);
    wait_lines(&gw.proc, KEPT, before + 1, Duration::from_secs(20)).await;
    let lines = gw.proc.lines_with(KEPT);
    assert!(
        lines.iter().any(|l| strip_ansi(l).contains("not trusted")),
        "{lines:?}"
    );
    let msg = m.call("alpha.echo", prod).await;
    assert_call_ok(&msg);
    let reloads: Vec<_> = gw
        .proc
        .lines_with(RELOADED)
        .iter()
        .map(|l| fields(l))
        .collect();
    assert_eq!(
        reloads.len(),
        1,
        "only the signed swap reloaded: {reloads:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redact_secrets_masks_echo_results_end_to_end() {
    // The built-in embedded in the binary (same crate as policies/redact-secrets).
    let upstream = Upstream::rust(&[]);
    let (key, hash) = new_key();
    let text = "reach alice@example.com or bob.smith+ops@mail.example.org; \
                OPENAI_API_KEY=sk-proj-abcdefghijklmnop1234 aws AKIAIOSFODNN7EXAMPLE; fine: task-sk-1";
    let policy = |settings: &str| {
        vec![
            Policy::new("builtin:redact-secrets")
                .name("redact")
                .settings(settings),
        ]
    };

    let gw = start_gateway(
        &config(&upstream.url, &hash, policy("{}")),
        Duration::from_secs(60),
    );
    let mut m = session(&gw.url(None), &key).await;
    let msg = m.call("alpha.echo", json!({ "text": text })).await;
    assert_call_ok(&msg);
    let want = "reach [redacted email] or [redacted email]; \
                OPENAI_API_KEY=[redacted secret] aws [redacted secret]; fine: task-sk-1";
    assert_eq!(msg["result"]["content"][0]["text"], want, "{msg}");
    assert_eq!(msg["result"]["structuredContent"]["text"], want, "{msg}");
    let raw = msg.to_string();
    for secret in ["alice@", "bob.smith", "sk-proj-", "AKIAIOSFODNN7EXAMPLE"] {
        assert!(!raw.contains(secret), "{secret} reached the agent: {raw}");
    }
    // The upstream's unknown result field survives the rewrite.
    assert_eq!(msg["result"]["x-upstream-extra"]["kept"], true, "{msg}");
    // Clean results are forwarded unchanged.
    let msg = m
        .call("alpha.echo", json!({ "text": "nothing secret" }))
        .await;
    assert_eq!(msg["result"]["content"][0]["text"], "nothing secret");
    let logged = wait_lines(
        &gw.proc,
        "masked 4 e-mail address(es) and 4 secret(s)",
        1,
        Duration::from_secs(5),
    )
    .await;
    assert!(logged[0].contains("redact"), "{logged:?}");

    // on_secret = "deny": the result is withheld and the audit says why.
    let gw = start_gateway(
        &config(&upstream.url, &hash, policy("{ on_secret = \"deny\" }")),
        Duration::from_secs(60),
    );
    let mut m = session(&gw.url(None), &key).await;
    let msg = m.call("alpha.echo", json!({ "text": text })).await;
    assert_eq!(
        rpc_error(&msg),
        Some((-32001, "Result withheld: contains a secret".to_string())),
        "{msg}"
    );
    assert!(!msg.to_string().contains("sk-proj-"), "{msg}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let recs = audit_records(&gw);
        if let Some(r) = recs
            .iter()
            .find(|r| r.get("rpc_code").map(String::as_str) == Some("-32001"))
        {
            assert_eq!(r.get("policy").map(String::as_str), Some("redact"), "{r:?}");
            assert!(r["reason"].contains("4 secret(s)"), "{r:?}");
            break;
        }
        assert!(Instant::now() < deadline, "no audit record: {recs:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // E-mails alone are still only masked.
    let msg = m
        .call("alpha.echo", json!({ "text": "mail carol@example.net" }))
        .await;
    assert_eq!(
        msg["result"]["content"][0]["text"], "mail [redacted email]",
        "{msg}"
    );
}
