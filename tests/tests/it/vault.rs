//! The credential vault through the real binary: secrets stored with `portcullis vault
//! put` (stdin), injected into upstream requests as bearer / OAuth / named-header
//! credentials, `vault list`/`rm`/`rotate`, the `local` KMS and `aws-kms` against a real
//! KMS API (`moto_server`), and the failure cases: a tampered ciphertext, a missing
//! secret, a loose master key file, a KMS outage. Each gives the agent -32603 with a
//! generic message and the operator a clear log line; other connectors keep working.
//!
//! Every test scans everything the gateway printed (at `debug` level), every CLI output
//! and every response that is not an upstream's `whoami` echo for the secret values.

use std::path::PathBuf;
use std::time::Duration;

use portcullis_tests::services::{Moto, aws_env};
use portcullis_tests::{Agent, Cli, CliOutput, Config, Connector, Gateway, Mcp, Upstream, new_key};
use serde_json::{Value, json};

const GENERIC: &str = "Upstream credential unavailable";
const FAILURE_LOG: &str = "connector credential unavailable";

/// A fresh random secret value.
fn secret() -> String {
    use rand::RngCore;
    let mut raw = [0u8; 16];
    rand::rng().fill_bytes(&mut raw);
    format!("vault-secret-{}", hex::encode(raw))
}

/// A test's vault directory, CLI config and everything captured for the leak scan.
struct Env {
    dir: tempfile::TempDir,
    /// Extra environment for the CLI and the gateway (AWS credentials).
    env: Vec<(String, String)>,
    /// CLI outputs and agent-facing response bodies, for the final scan.
    captured: Vec<String>,
}

impl Env {
    fn new() -> Env {
        let dir = tempfile::tempdir().expect("temp dir");
        let env = aws_env(dir.path());
        Env {
            dir,
            env,
            captured: Vec::new(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A `[vault]` section with absolute paths in this test's directory.
    fn local_vault(&self, cache_secs: u64) -> String {
        format!(
            "\n[vault]\npath = \"{}\"\ncache_secs = {cache_secs}\n[vault.kms]\nprovider = \"local\"\nmaster_key_path = \"{}\"\n",
            self.path("vault.json").display(),
            self.path("master.key").display()
        )
    }

    fn aws_vault(&self, cache_secs: u64, key_id: &str, endpoint: &str) -> String {
        format!(
            "\n[vault]\npath = \"{}\"\ncache_secs = {cache_secs}\n[vault.kms]\nprovider = \"aws-kms\"\nkey_id = \"{key_id}\"\nregion = \"us-east-1\"\nendpoint = \"{endpoint}\"\n",
            self.path("vault.json").display()
        )
    }

    /// Writes the config the CLI uses (the gateway gets the same text in its own dir).
    fn write_config(&self, config: &Config) {
        std::fs::write(self.path("portcullis.toml"), config.render()).expect("write config");
    }

    /// `portcullis vault <args> --config <this config>`; output captured.
    fn cli(&mut self, args: &[&str], stdin: &[u8]) -> CliOutput {
        let out = Cli::new()
            .arg("vault")
            .args(args)
            .config(&self.path("portcullis.toml"))
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(stdin)
            .run();
        self.captured.push(out.stdout.clone());
        self.captured.push(out.stderr.clone());
        out
    }

    fn cli_ok(&mut self, args: &[&str], stdin: &[u8]) -> String {
        let out = self.cli(args, stdin);
        assert!(
            out.success(),
            "portcullis vault {args:?} failed: {}{}",
            out.stdout,
            out.stderr
        );
        out.stdout
    }

    /// `vault put NAME` with the value (and a trailing newline) on stdin.
    fn put(&mut self, name: &str, value: &str) {
        let out = self.cli_ok(&["put", name], format!("{value}\n").as_bytes());
        assert!(out.contains(&format!("secret {name}")), "{out}");
    }

    fn vault_json(&self) -> Value {
        let text = std::fs::read_to_string(self.path("vault.json")).expect("vault file");
        serde_json::from_str(&text).expect("vault file is JSON")
    }

    fn entry(&self, name: &str) -> Value {
        self.vault_json()["secrets"]
            .as_array()
            .expect("secrets array")
            .iter()
            .find(|e| e["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no entry {name} in {}", self.vault_json()))
    }

    fn write_vault_json(&self, v: &Value) {
        std::fs::write(
            self.path("vault.json"),
            serde_json::to_string_pretty(v).unwrap(),
        )
        .expect("write vault file");
    }

    fn start_gateway(&self, config: &Config) -> Gateway {
        let mut env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        env.push(("RUST_LOG", "debug"));
        Gateway::start_with_env(config, &env)
    }

    /// Calls a tool; keeps the response for the scan unless it is a `whoami` echo
    /// (the upstream reporting the credential it received).
    async fn call(&mut self, mcp: &mut Mcp, name: &str, args: Value) -> Value {
        let msg = mcp.call(name, args).await;
        if !name.ends_with("whoami") || msg.get("error").is_some() {
            self.captured.push(msg.to_string());
        }
        msg
    }

    /// Asserts no captured text and no gateway output line holds any of `secrets`.
    fn assert_no_leak(&self, gw: &Gateway, secrets: &[&str]) {
        let output = gw.proc.output();
        assert!(
            output.lines().count() > 5,
            "expected gateway output to scan:\n{output}"
        );
        for s in secrets {
            for line in output.lines() {
                assert!(!line.contains(s), "the gateway printed a secret: {line}");
            }
            for text in &self.captured {
                assert!(!text.contains(s), "a secret leaked into: {text}");
            }
        }
    }
}

fn whoami_auth(msg: &Value) -> Value {
    assert!(msg.get("error").is_none(), "whoami failed: {msg}");
    msg["result"]["structuredContent"]["authorization"].clone()
}

fn assert_generic_failure(msg: &Value) {
    assert_eq!(msg["error"]["code"], -32603, "{msg}");
    assert_eq!(msg["error"]["message"], GENERIC, "{msg}");
}

/// Waits for a gateway log line with all of `needles`.
fn wait_log(gw: &mut Gateway, needles: &[&str]) -> String {
    gw.proc.wait_line(Duration::from_secs(10), |l| {
        needles.iter().all(|n| l.contains(n))
    })
}

fn base_config(hash: &str) -> Config {
    Config::new().admin().agent(Agent::new("reporter", hash))
}

/// `GET /readyz` on the admin listener: (status, body).
async fn readyz(gw: &Gateway) -> (u16, Value) {
    let admin = gw.admin.as_ref().expect("admin listener");
    let probe = Mcp::new(&format!("{admin}/readyz"), "");
    let resp = probe.send("GET", bytes::Bytes::new(), vec![], &[]).await;
    (
        resp.status,
        serde_json::from_str(&resp.body).expect("readyz JSON"),
    )
}

async fn session(gw: &Gateway, key: &str) -> Mcp {
    let mut mcp = Mcp::new(&gw.url(None), key);
    mcp.initialize().await;
    mcp
}

#[tokio::test]
async fn bearer_and_oauth_secrets_reach_upstreams_and_never_leak() {
    let mut env = Env::new();
    let (bearer, oauth) = (secret(), secret());
    let up_bearer = Upstream::rust(&["--require-bearer", &bearer]);
    let up_oauth = Upstream::rust(&["--require-bearer", &oauth]);
    let plain = Upstream::rust(&[]);
    let (key, hash) = new_key();
    let config = base_config(&hash)
        .raw(&env.local_vault(60))
        .connector(
            Connector::new("conn_secure", "Secure", &up_bearer.url).vault_secret(
                "github",
                Some("bearer"),
                None,
            ),
        )
        .connector(
            Connector::new("conn_oauth", "OAuth", &up_oauth.url).vault_secret(
                "oauth-token",
                Some("oauth"),
                None,
            ),
        )
        .connector(
            Connector::new("conn_missing", "Missing", &plain.url)
                .vault_secret("absent", None, None),
        )
        .connector(Connector::new("conn_plain", "Plain", &plain.url));
    env.write_config(&config);

    // Stored from stdin; "\n" and "\r\n" line ends are trimmed.
    env.put("github", &bearer);
    let out = env.cli_ok(&["put", "oauth-token"], format!("{oauth}\r\n").as_bytes());
    assert!(out.contains("stored secret oauth-token"), "{out}");
    let list = env.cli_ok(&["list"], b"");
    assert!(
        list.contains("github") && list.contains("oauth-token"),
        "{list}"
    );
    assert!(
        list.contains("kms=local") && list.contains("created="),
        "{list}"
    );

    // The files: private, and holding only ciphertext.
    use std::os::unix::fs::PermissionsExt;
    for f in ["vault.json", "master.key"] {
        let mode = std::fs::metadata(env.path(f)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{f}");
    }
    let raw = std::fs::read_to_string(env.path("vault.json")).unwrap();
    assert!(!raw.contains(&bearer) && !raw.contains(&oauth));
    let e = env.entry("github");
    for field in [
        "kms",
        "key_id",
        "wrapped_key",
        "nonce",
        "ciphertext",
        "created",
    ] {
        assert!(e[field].is_string(), "{field} in {e}");
    }
    assert_eq!(e["kms"], "local");

    let mut gw = env.start_gateway(&config);
    wait_log(
        &mut gw,
        &["vault secret not found", "conn_missing", "absent"],
    );
    let mut mcp = session(&gw, &key).await;
    let names = mcp.tool_names().await;
    env.captured.push(format!("{names:?}"));
    for t in ["secure.whoami", "oauth.whoami", "plain.echo"] {
        assert!(names.contains(&t.to_string()), "{t} in {names:?}");
    }
    assert!(
        !names.iter().any(|n| n.starts_with("missing.")),
        "a connector without its credential is left out of /mcp: {names:?}"
    );

    let msg = env.call(&mut mcp, "secure.whoami", json!({})).await;
    assert_eq!(whoami_auth(&msg), format!("Bearer {bearer}"));
    let msg = env.call(&mut mcp, "oauth.whoami", json!({})).await;
    assert_eq!(whoami_auth(&msg), format!("Bearer {oauth}"));
    let msg = env.call(&mut mcp, "plain.whoami", json!({})).await;
    assert_eq!(whoami_auth(&msg), Value::Null, "no credential for plain");

    // A missing secret: generic -32603 to the agent, the name and cause in the log.
    let msg = env
        .call(&mut mcp, "missing.echo", json!({"text": "x"}))
        .await;
    assert_generic_failure(&msg);
    assert!(!msg.to_string().contains("absent"), "{msg}");
    let line = wait_log(&mut gw, &[FAILURE_LOG, "conn_missing", "absent"]);
    assert!(line.contains("is not in the vault"), "{line}");
    // The single-connector endpoint says the same.
    let mut one = Mcp::new(&gw.url(Some("conn_missing")), &key);
    one.initialize().await;
    let resp = one.request_raw("tools/list", json!({})).await;
    env.captured.push(resp.body.clone());
    assert!(resp.body.contains("-32603"), "{}", resp.body);
    for detail in ["absent", "vault.json", "not in the vault"] {
        assert!(
            !resp.body.contains(detail),
            "operator detail {detail:?} reached the agent: {}",
            resp.body
        );
    }

    // Concurrent calls share the cached data key and all authenticate.
    let mut handles = Vec::new();
    for _ in 0..8 {
        let mut m = session(&gw, &key).await;
        handles.push(tokio::spawn(async move {
            m.call("secure.whoami", json!({})).await
        }));
    }
    for h in handles {
        assert_eq!(whoami_auth(&h.await.unwrap()), format!("Bearer {bearer}"));
    }
    env.assert_no_leak(&gw, &[&bearer, &oauth]);
}

#[tokio::test]
async fn header_kind_sends_the_named_header() {
    let mut env = Env::new();
    let api_key = secret();
    let mut up = Upstream::fastmcp(&["--log-requests", "--json-response"]);
    let (key, hash) = new_key();
    let config = base_config(&hash).raw(&env.local_vault(60)).connector(
        Connector::new("conn_fast", "Fast", &up.url).vault_secret(
            "api-key",
            Some("header"),
            Some("X-API-Key"),
        ),
    );
    env.write_config(&config);
    env.put("api-key", &api_key);
    let gw = env.start_gateway(&config);
    let mut mcp = session(&gw, &key).await;
    let msg = env.call(&mut mcp, "fast.list_items", json!({})).await;
    assert!(msg.get("result").is_some(), "{msg}");

    // What the upstream received, from its request log (read by a thread: wait for it).
    up.proc.wait_line(Duration::from_secs(10), |l| {
        l.contains("\"headers\"") && l.contains("tools/call")
    });
    let calls: Vec<Value> = up
        .proc
        .lines_with("\"headers\"")
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|r| r["method"] == "POST")
        .collect();
    assert!(!calls.is_empty(), "no request log:\n{}", up.proc.output());
    for r in &calls {
        assert_eq!(r["headers"]["x-api-key"], api_key.as_str(), "{r}");
        assert!(
            r["headers"].get("authorization").is_none(),
            "no Authorization with kind = header: {r}"
        );
    }
    assert!(
        calls
            .iter()
            .any(|r| r["body"].to_string().contains("tools/call")),
        "the call itself carried the header"
    );
    env.assert_no_leak(&gw, &[&api_key]);
}

/// Flips the first base64 character of an entry's field (changes its first byte).
fn tamper(env: &Env, name: &str, field: &str) -> Value {
    let original = env.vault_json();
    let mut v = original.clone();
    let entry = v["secrets"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|e| e["name"] == name)
        .unwrap();
    let text = entry[field].as_str().unwrap().to_string();
    let first = if text.starts_with('A') { "B" } else { "A" };
    entry[field] = Value::String(format!("{first}{}", &text[1..]));
    env.write_vault_json(&v);
    original
}

#[tokio::test]
async fn tampered_ciphertext_fails_closed_and_others_keep_working() {
    let mut env = Env::new();
    let token = secret();
    let up = Upstream::rust(&["--require-bearer", &token]);
    let plain = Upstream::rust(&[]);
    let (key, hash) = new_key();
    let config = base_config(&hash)
        .raw(&env.local_vault(60))
        .connector(
            Connector::new("conn_secure", "Secure", &up.url).vault_secret(
                "github",
                Some("bearer"),
                None,
            ),
        )
        .connector(Connector::new("conn_plain", "Plain", &plain.url));
    env.write_config(&config);
    env.put("github", &token);
    let mut gw = env.start_gateway(&config);
    let mut mcp = session(&gw, &key).await;
    let msg = env.call(&mut mcp, "secure.whoami", json!({})).await;
    assert_eq!(whoami_auth(&msg), format!("Bearer {token}"));

    // The data key is cached now; the altered ciphertext still fails authentication.
    let original = tamper(&env, "github", "ciphertext");
    let msg = env.call(&mut mcp, "secure.whoami", json!({})).await;
    assert_generic_failure(&msg);
    let line = wait_log(&mut gw, &[FAILURE_LOG, "conn_secure", "github"]);
    assert!(
        line.contains("tampered") && line.contains("AES-GCM"),
        "{line}"
    );
    // Nothing else breaks: the other connector, a new session, listing.
    let msg = env
        .call(&mut mcp, "plain.echo", json!({"text": "still here"}))
        .await;
    assert_eq!(msg["result"]["structuredContent"]["text"], "still here");
    let mut other = session(&gw, &key).await;
    let msg = env
        .call(&mut other, "plain.echo", json!({"text": "new"}))
        .await;
    assert_eq!(msg["result"]["structuredContent"]["text"], "new");
    let msg = env.call(&mut other, "secure.whoami", json!({})).await;
    assert_generic_failure(&msg);

    // A tampered wrapped key fails too (the KMS cannot unwrap it).
    env.write_vault_json(&original);
    tamper(&env, "github", "wrapped_key");
    let msg = env.call(&mut mcp, "secure.whoami", json!({})).await;
    assert_generic_failure(&msg);
    wait_log(
        &mut gw,
        &[FAILURE_LOG, "conn_secure", "cannot unwrap the data key"],
    );

    // Restored: works again without a restart.
    env.write_vault_json(&original);
    let msg = env.call(&mut mcp, "secure.whoami", json!({})).await;
    assert_eq!(whoami_auth(&msg), format!("Bearer {token}"));
    env.assert_no_leak(&gw, &[&token]);
}

#[tokio::test]
async fn local_rotate_rm_and_loose_master_key() {
    use std::os::unix::fs::PermissionsExt;
    let mut env = Env::new();
    let token = secret();
    let up = Upstream::rust(&["--require-bearer", &token]);
    let (key, hash) = new_key();
    // No data-key cache: every call unwraps, so rotation is exercised for real.
    let config = base_config(&hash).raw(&env.local_vault(0)).connector(
        Connector::new("conn_secure", "Secure", &up.url).vault_secret("github", None, None),
    );
    env.write_config(&config);
    env.put("github", &token);
    env.put("unused", &secret());
    let mut gw = env.start_gateway(&config);
    let mut mcp = session(&gw, &key).await;
    let msg = env.call(&mut mcp, "secure.whoami", json!({})).await;
    assert_eq!(whoami_auth(&msg), format!("Bearer {token}"));

    let before = env.entry("github");
    let master_before = std::fs::read(env.path("master.key")).unwrap();
    let out = env.cli_ok(&["rotate"], b"");
    assert!(out.contains("re-wrapped 2 data key(s)"), "{out}");
    let after = env.entry("github");
    assert_ne!(before["wrapped_key"], after["wrapped_key"]);
    assert_ne!(before["key_id"], after["key_id"]);
    assert_eq!(
        before["ciphertext"], after["ciphertext"],
        "secret unchanged"
    );
    assert_eq!(before["nonce"], after["nonce"]);
    assert!(after["rotated"].is_string());
    assert_ne!(
        std::fs::read(env.path("master.key")).unwrap(),
        master_before
    );
    let mode = std::fs::metadata(env.path("master.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(!env.path("master.key.next").exists());
    let list = env.cli_ok(&["list"], b"");
    assert!(list.contains("rotated=20"), "{list}");
    // The running gateway follows the new master key.
    let msg = env.call(&mut mcp, "secure.whoami", json!({})).await;
    assert_eq!(whoami_auth(&msg), format!("Bearer {token}"));

    // A master key file others can read is refused.
    std::fs::set_permissions(
        env.path("master.key"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let msg = env.call(&mut mcp, "secure.whoami", json!({})).await;
    assert_generic_failure(&msg);
    wait_log(&mut gw, &[FAILURE_LOG, "conn_secure", "mode 0644"]);
    std::fs::set_permissions(
        env.path("master.key"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();

    // rm: the connector fails cleanly; put again: it works, no restart.
    let out = env.cli_ok(&["rm", "github"], b"");
    assert!(out.contains("removed secret github"), "{out}");
    let out = env.cli(&["rm", "github"], b"");
    assert_eq!(out.code, Some(2), "rm of a missing secret fails");
    let msg = env.call(&mut mcp, "secure.whoami", json!({})).await;
    assert_generic_failure(&msg);
    wait_log(&mut gw, &[FAILURE_LOG, "\"github\" is not in the vault"]);
    env.put("github", &token);
    let msg = env.call(&mut mcp, "secure.whoami", json!({})).await;
    assert_eq!(whoami_auth(&msg), format!("Bearer {token}"));

    // Bad input never gets stored and is never echoed.
    let out = env.cli(&["put", "bad"], b"");
    assert_eq!(out.code, Some(2));
    let out = env.cli(&["put", "bad"], format!("a\x01{token}").as_bytes());
    assert_eq!(out.code, Some(2));
    assert!(!env.cli_ok(&["list"], b"").contains("bad"));
    env.assert_no_leak(&gw, &[&token]);
}

#[tokio::test]
async fn aws_kms_via_moto_rotate_and_outage() {
    let mut env = Env::new();
    let moto = Moto::start();
    let key1 = moto.create_key();
    let token = secret();
    let up = Upstream::rust(&["--require-bearer", &token]);
    let plain = Upstream::rust(&[]);
    let (key, hash) = new_key();
    let connectors = [
        Connector::new("conn_secure", "Secure", &up.url).vault_secret(
            "github",
            Some("bearer"),
            None,
        ),
        Connector::new("conn_plain", "Plain", &plain.url),
    ];
    let with_vault = |vault: String| {
        connectors
            .iter()
            .cloned()
            .fold(base_config(&hash).raw(&vault), Config::connector)
    };
    let config = with_vault(env.aws_vault(1, &key1, &moto.endpoint));
    env.write_config(&config);
    env.put("github", &token);
    let e = env.entry("github");
    assert_eq!(e["kms"], "aws-kms");
    assert_eq!(e["key_id"], key1.as_str());
    assert!(
        !env.path("master.key").exists(),
        "no local key with aws-kms"
    );

    let mut gw = env.start_gateway(&config);
    let mut mcp = session(&gw, &key).await;
    let msg = env.call(&mut mcp, "secure.whoami", json!({})).await;
    assert_eq!(whoami_auth(&msg), format!("Bearer {token}"));
    let (status, body) = readyz(&gw).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["checks"]["kms"]["provider"], "aws-kms", "{body}");

    // Rotate to a new KMS key: change key_id in the config, run `vault rotate`.
    let key2 = moto.create_key();
    assert_ne!(key1, key2);
    env.write_config(&with_vault(env.aws_vault(1, &key2, &moto.endpoint)));
    let out = env.cli_ok(&["rotate"], b"");
    assert!(out.contains("re-wrapped 1 data key(s)"), "{out}");
    let rotated = env.entry("github");
    assert_eq!(rotated["key_id"], key2.as_str());
    assert_ne!(rotated["wrapped_key"], e["wrapped_key"]);
    assert_eq!(rotated["ciphertext"], e["ciphertext"]);
    // After the 1 s key cache, the gateway unwraps the re-wrapped key with KMS: once
    // for a burst of concurrent calls (one Decrypt, shared, then cached).
    let mut sessions = Vec::new();
    for _ in 0..8 {
        sessions.push(session(&gw, &key).await);
    }
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let kms_requests = || moto.proc.lines_with("\"POST / HTTP").len();
    let before = kms_requests();
    let mut handles = Vec::new();
    for mut m in sessions {
        handles.push(tokio::spawn(async move {
            m.call("secure.whoami", json!({})).await
        }));
    }
    for h in handles {
        assert_eq!(whoami_auth(&h.await.unwrap()), format!("Bearer {token}"));
    }
    // moto logs a request after answering it: wait for the line, then for strays.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while kms_requests() == before && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(kms_requests() - before, 1, "one KMS Decrypt for 8 calls");

    // A wrapped key KMS cannot decrypt: refused by KMS, reported as such.
    let original = tamper(&env, "github", "wrapped_key");
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let msg = env.call(&mut mcp, "secure.whoami", json!({})).await;
    assert_generic_failure(&msg);
    wait_log(
        &mut gw,
        &[FAILURE_LOG, "conn_secure", "KMS refused the request"],
    );
    env.write_vault_json(&original);
    let msg = env.call(&mut mcp, "secure.whoami", json!({})).await;
    assert_eq!(whoami_auth(&msg), format!("Bearer {token}"));

    // KMS outage: the agent gets -32603, the operator a clear line; the gateway goes on.
    drop(moto);
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let msg = env.call(&mut mcp, "secure.whoami", json!({})).await;
    assert_generic_failure(&msg);
    let line = wait_log(&mut gw, &[FAILURE_LOG, "conn_secure", "KMS unavailable"]);
    assert!(line.contains("secret=github"), "{line}");
    assert!(line.contains("Decrypt failed"), "{line}");
    let msg = env
        .call(&mut mcp, "plain.echo", json!({"text": "ok"}))
        .await;
    assert_eq!(msg["result"]["structuredContent"]["text"], "ok");
    let msg = env.call(&mut mcp, "secure.whoami", json!({})).await;
    assert_generic_failure(&msg);
    let mut other = session(&gw, &key).await;
    let msg = env
        .call(&mut other, "plain.echo", json!({"text": "ok2"}))
        .await;
    assert_eq!(msg["result"]["structuredContent"]["text"], "ok2");

    // Readiness says the KMS is down, and names it.
    let (status, body) = readyz(&gw).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["not_ready"], json!(["kms"]), "{body}");

    // The CLI reports the outage too, without the secret.
    let out = env.cli(&["put", "other"], b"value-for-other\n");
    assert_eq!(out.code, Some(2));
    assert!(out.stderr.contains("KMS unavailable"), "{}", out.stderr);
    env.assert_no_leak(&gw, &[&token, "value-for-other"]);
}
