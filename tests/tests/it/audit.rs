//! The audit log through the binary: 10,000 concurrent `tools/call` (allowed, hidden by
//! the blocklist, unknown, refused by slug-scope) become exactly 10,000 rows after the
//! SIGTERM flush, in SQLite and in PostgreSQL, read back with `portcullis audit query`
//! (filters, formats) and directly; `on_full = "drop"` behind a locked database counts
//! what it drops; a PostgreSQL sink that fails at start is retried and catches up.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use portcullis_tests::audit_db::{PgSchema, pg_groups, sqlite_count, sqlite_groups};
use portcullis_tests::audit_lines::field;
use portcullis_tests::cli::audit_query;
use portcullis_tests::{Agent, Cli, Config, Connector, Gateway, Mcp, Policy, Upstream, new_key};
use serde_json::{Value, json};

const SESSIONS: usize = 16;
const CALLS_PER_SESSION: usize = 625;
const CALLS: usize = SESSIONS * CALLS_PER_SESSION;

/// Two connectors on one upstream; `delete_thing` blocklisted on `conn_test`; alice
/// (org acme) may call everything, bob (org globex) only `conn_test`. Generous policy
/// timeouts: this is a load on 2 cores in a debug build, not a test of policy limits.
fn config(upstream: &str, alice: &str, bob: &str, audit: &str) -> String {
    Config::new()
        .raw(audit)
        .connector(Connector::new("conn_test", "Test", upstream).disabled_tools(&["delete_thing"]))
        .connector(Connector::new("conn_other", "Other", upstream))
        .agent(Agent::new("alice", alice))
        .agent(
            Agent::new("bob", bob)
                .org("globex")
                .scopes(&["mcp:call:conn_test"]),
        )
        .policy(Policy::new("builtin:slug-scope").timeout_ms(5000))
        .policy(Policy::new("builtin:blocklist").timeout_ms(5000))
        .render()
}

/// `(method, status, agent) -> rows` that [`load`] produces.
fn expected_groups() -> Vec<(String, i64, String, i64)> {
    let per_kind = (SESSIONS / 2 * CALLS_PER_SESSION / 5) as i64; // per agent and kind
    let lists = (SESSIONS / 2) as i64;
    let g = |m: &str, s: i64, a: &str, n: i64| (m.to_string(), s, a.to_string(), n);
    vec![
        g("tools/call", 200, "alice", 2 * per_kind),
        g("tools/call", 200, "bob", per_kind),
        g("tools/call", 403, "bob", per_kind),
        g("tools/call", 404, "alice", 3 * per_kind),
        g("tools/call", 404, "bob", 3 * per_kind),
        g("tools/list", 200, "alice", lists),
        g("tools/list", 200, "bob", lists),
    ]
}

/// Rows [`load`] writes: every call plus one `tools/list` per session.
const ROWS: usize = CALLS + SESSIONS;

/// 16 concurrent sessions (8 alice, 8 bob), one `tools/list` each, then 625 calls each
/// cycling through: allowed echo, blocklisted tool, unknown connector, unknown tool,
/// the other connector (allowed for alice, 403 for bob). Checks every answer; returns
/// how long it took (no request's latency can be longer).
async fn load(gw: &Gateway, alice: &str, bob: &str) -> Duration {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for s in 0..SESSIONS {
        let (agent, key) = if s % 2 == 0 {
            ("alice", alice)
        } else {
            ("bob", bob)
        };
        let mut m = Mcp::new(&gw.url(None), key);
        tasks.push(tokio::spawn(async move {
            m.initialize().await;
            let list = m.request("tools/list", json!({})).await;
            assert!(list["result"]["tools"].is_array(), "{list}");
            for k in 0..CALLS_PER_SESSION {
                let (name, expect): (&str, Option<i64>) = match k % 5 {
                    0 => ("test.echo", None),
                    1 => ("test.delete_thing", Some(-32601)),
                    2 => ("nope.echo", Some(-32601)),
                    3 => ("test.no_such_tool", Some(-32601)),
                    _ if agent == "alice" => ("other.echo", None),
                    _ => ("other.echo", Some(-32003)),
                };
                let msg = m.call(name, json!({"text": "audit"})).await;
                match expect {
                    None => assert!(msg.get("result").is_some(), "{agent} {name}: {msg}"),
                    Some(code) => assert_eq!(msg["error"]["code"], code, "{agent} {name}: {msg}"),
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("session task");
    }
    let took = started.elapsed();
    eprintln!("{CALLS} tools/call over {SESSIONS} sessions in {took:?}");
    took
}

/// SIGTERM, then the exit and the writer's final counts `(written, dropped)`.
fn stop(gw: &mut Gateway) -> (u64, u64) {
    gw.proc.signal("TERM");
    let code = gw.proc.wait_exit(Duration::from_secs(60));
    assert_eq!(code, Some(0), "exit after SIGTERM; output:\n{}", tail(gw));
    let lines = gw.proc.lines_with("audit log flushed");
    let line = lines
        .first()
        .unwrap_or_else(|| panic!("no 'audit log flushed' line; output:\n{}", tail(gw)));
    let n = |k| {
        field(line, k)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{k} in {line}"))
    };
    (n("written"), n("dropped"))
}

fn tail(gw: &Gateway) -> String {
    let out = gw.proc.output();
    let lines: Vec<&str> = out.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

fn groups_of(rows: &[Value]) -> Vec<(String, i64, String, i64)> {
    let mut g: BTreeMap<(String, i64, String), i64> = BTreeMap::new();
    for r in rows {
        let key = (
            r["method"].as_str().unwrap().to_string(),
            r["status"].as_i64().unwrap(),
            r["agent"].as_str().unwrap().to_string(),
        );
        *g.entry(key).or_default() += 1;
    }
    g.into_iter().map(|((m, s, a), n)| (m, s, a, n)).collect()
}

/// Everything `audit query` must say about the rows of [`load`], whatever the sink;
/// `load_took` is what [`load`] returned.
fn check_query(config: &Path, load_took: Duration) {
    let all = audit_query(config, &["--limit", "0"]);
    assert_eq!(all.len(), ROWS, "audit query --limit 0");
    assert_eq!(groups_of(&all), expected_groups());
    let ids: HashSet<&str> = all
        .iter()
        .map(|r| r["request_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), ROWS, "request ids are unique");
    for r in &all {
        let (status, method) = (r["status"].as_i64().unwrap(), r["method"].as_str().unwrap());
        let expected_code = match status {
            200 => Value::Null,
            403 => json!(-32003),
            _ => json!(-32601),
        };
        assert_eq!(r["rpc_code"], expected_code, "{r}");
        assert!(r["session_id"].is_string(), "{r}");
        // Measured, and within the load that made the request.
        let latency = r["latency_ms"].as_f64().unwrap();
        assert!(
            latency > 0.0 && latency < load_took.as_secs_f64() * 1000.0,
            "latency {latency} ms not within the load's {load_took:?}: {r}"
        );
        assert_eq!(
            r["org"],
            if r["agent"] == "alice" {
                "acme"
            } else {
                "globex"
            }
        );
        match (method, status) {
            ("tools/call", 200) | ("tools/list", _) => {
                assert_eq!(r["policy"], "slug-scope,blocklist", "{r}");
                assert!(r["policy_digest"].as_str().unwrap().len() == 64, "{r}");
            }
            ("tools/call", 403) => assert_eq!(r["policy"], "slug-scope", "{r}"),
            _ => {}
        }
        if r["tool"] == "delete_thing" {
            assert_eq!(
                (r["status"].as_i64(), r["policy"].as_str()),
                (Some(404), Some("blocklist"))
            );
        }
        let time = r["time"].as_str().unwrap();
        assert!(time.len() == 24 && time.ends_with('Z'), "{time}");
    }
    // Oldest first, and the default limit is the newest 100.
    let newest = audit_query(config, &[]);
    assert_eq!(newest.len(), 100);
    assert_eq!(newest.as_slice(), &all[ROWS - 100..]);

    // Filters.
    let quarter = CALLS / 5;
    let by = |args: &[&str]| audit_query(config, &[&["--limit", "0"], args].concat());
    let hidden = by(&["--status", "404"]);
    assert_eq!(hidden.len(), 3 * quarter);
    assert!(hidden.iter().all(|r| r["status"] == 404));
    let bob = by(&["--agent", "bob"]);
    assert_eq!(bob.len(), ROWS / 2);
    assert!(bob.iter().all(|r| r["agent"] == "bob"));
    let scope = by(&["--org", "globex", "--status", "403"]);
    assert_eq!(scope.len(), quarter / 2);
    let other = by(&["--connector", "conn_other"]);
    assert_eq!(other.len(), quarter, "other.echo calls of both agents");
    assert!(
        other
            .iter()
            .all(|r| r["connector"] == "conn_other" && r["tool"] == "echo")
    );
    assert_eq!(by(&["--agent", "carol"]).len(), 0);
    // --since: an RFC 3339 time from the rows, a duration, Unix milliseconds.
    let mid = all[ROWS / 2]["time"].as_str().unwrap();
    let after = all
        .iter()
        .filter(|r| r["time"].as_str().unwrap() >= mid)
        .count();
    assert_eq!(by(&["--since", mid]).len(), after);
    assert!((ROWS / 2..ROWS).contains(&after), "{after}");
    assert_eq!(by(&["--since", "1h"]).len(), ROWS);
    assert_eq!(by(&["--since", "2999-01-01T00:00:00Z"]).len(), 0);
    assert_eq!(by(&["--since", "0"]).len(), ROWS);
    assert_eq!(
        by(&["--since", "2999-01-01T00:00:00+02:00", "--status", "200"]).len(),
        0
    );

    // Table output: a header and aligned rows.
    let out = Cli::new()
        .args(["audit", "query"])
        .config(config)
        .args(["--limit", "3", "--status", "403"])
        .run_ok();
    let text = &out.stdout;
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert!(
        lines[0].starts_with("TIME") && lines[0].contains("STATUS"),
        "{text}"
    );
    assert!(
        lines[1..]
            .iter()
            .all(|l| l.contains(" 403 ") && l.contains("bob")),
        "{text}"
    );
    // A bad --since is refused with a hint.
    let bad = Cli::new()
        .args(["audit", "query"])
        .config(config)
        .args(["--since", "yesterday"])
        .run();
    assert_eq!(bad.code, Some(2));
    assert!(bad.stderr.contains("RFC 3339"), "{}", bad.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_ten_thousand_concurrent_calls_are_ten_thousand_rows() {
    let up = Upstream::rust(&[]);
    let (alice, ha) = new_key();
    let (bob, hb) = new_key();
    // No [audit] section: the default SQLite file beside the config.
    let mut gw = Gateway::start(&config(&up.url, &ha, &hb, ""));
    let db = gw.dir.path().join("audit.db");
    assert!(db.exists(), "audit.db created at start");
    let took = load(&gw, &alice, &bob).await;
    let (written, dropped) = stop(&mut gw);
    assert_eq!((written, dropped), (ROWS as u64, 0));

    // Directly in the file.
    assert_eq!(sqlite_count(&db, "1"), ROWS as i64);
    assert_eq!(sqlite_groups(&db), expected_groups());
    assert_eq!(
        sqlite_count(
            &db,
            "method = 'tools/call' AND status = 200 AND rpc_code IS NULL"
        ),
        (3 * CALLS / 10) as i64
    );
    assert_eq!(
        sqlite_count(
            &db,
            "status = 404 AND policy = 'blocklist' AND tool = 'delete_thing'"
        ),
        (CALLS / 5) as i64
    );
    let conn = rusqlite::Connection::open(&db).unwrap();
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    drop(conn);

    check_query(&gw.config_path, took);
    // Every audited request also kept its log line.
    assert_eq!(gw.audit_lines().len(), ROWS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_ten_thousand_concurrent_calls_are_ten_thousand_rows() {
    let schema = PgSchema::new(true).await;
    let up = Upstream::rust(&[]);
    let (alice, ha) = new_key();
    let (bob, hb) = new_key();
    let audit = format!(
        "[audit]\nsink = \"postgres\"\npostgres_url = \"{}\"\n",
        schema.url()
    );
    let mut gw = Gateway::start(&config(&up.url, &ha, &hb, &audit));
    let took = load(&gw, &alice, &bob).await;
    let (written, dropped) = stop(&mut gw);
    assert_eq!((written, dropped), (ROWS as u64, 0));

    let client = schema.client().await;
    let count: i64 = client
        .query_one("SELECT count(*) FROM request_logs", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, ROWS as i64);
    assert_eq!(pg_groups(&client).await, expected_groups());
    let hidden: i64 = client
        .query_one(
            "SELECT count(*) FROM request_logs WHERE status = 404 AND rpc_code = -32601",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(hidden, (3 * CALLS / 5) as i64);
    check_query(&gw.config_path, took);
    drop(client);
    drop(schema);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_mode_counts_rows_it_cannot_queue_while_the_sink_is_locked() {
    let up = Upstream::rust(&[]);
    let (alice, ha) = new_key();
    let (_, hb) = new_key();
    let audit =
        "[audit]\non_full = \"drop\"\nqueue_capacity = 1\nbatch_size = 1\nflush_interval_ms = 1\n";
    let mut gw = Gateway::start(&config(&up.url, &ha, &hb, audit));
    let db = gw.dir.path().join("audit.db");
    // Another process holds the write lock: the writer blocks, then fails and retries.
    let lock = rusqlite::Connection::open(&db).unwrap();
    lock.execute_batch("BEGIN EXCLUSIVE").unwrap();

    let mut m = Mcp::new(&gw.url(None), &alice);
    m.initialize().await;
    let started = Instant::now();
    const N: usize = 60;
    for _ in 0..N {
        let msg = m.call("test.echo", json!({"text": "x"})).await;
        assert!(msg.get("result").is_some(), "{msg}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "calls never wait for the audit sink in drop mode ({:?})",
        started.elapsed()
    );
    gw.proc.wait_line(Duration::from_secs(5), |l| {
        l.contains("row dropped") && l.contains("dropped_total=")
    });
    // The writer's first attempt times out on the lock (5 s) and is logged; release.
    gw.proc.wait_line(Duration::from_secs(15), |l| {
        l.contains("audit sink write failed") && l.contains("sqlite:")
    });
    lock.execute_batch("COMMIT").unwrap();
    drop(lock);

    let (written, dropped) = stop(&mut gw);
    assert_eq!(
        written + dropped,
        N as u64,
        "every call is written or counted"
    );
    assert!(dropped >= (N - 5) as u64, "dropped {dropped}");
    assert_eq!(sqlite_count(&db, "1"), written as i64);
    assert!(!gw.proc.lines_with("audit sink recovered").is_empty());
    // The log lines were all written regardless.
    assert_eq!(gw.audit_lines().len(), N);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_sink_failing_at_start_is_retried_and_catches_up() {
    // The schema does not exist yet: creating the table fails until it does.
    let schema = PgSchema::new(false).await;
    let up = Upstream::rust(&[]);
    let (alice, ha) = new_key();
    let (_, hb) = new_key();
    let audit = format!(
        "[audit]\nsink = \"postgres\"\npostgres_url = \"{}\"\nflush_interval_ms = 10\n",
        schema.url()
    );
    let mut gw = Gateway::start(&config(&up.url, &ha, &hb, &audit));
    assert!(
        !gw.proc
            .lines_with("audit sink unavailable at start")
            .is_empty(),
        "{}",
        tail(&gw)
    );
    let mut m = Mcp::new(&gw.url(None), &alice);
    m.initialize().await;
    const N: usize = 20;
    for _ in 0..N {
        let msg = m.call("test.echo", json!({"text": "x"})).await;
        assert!(
            msg.get("result").is_some(),
            "the gateway keeps serving: {msg}"
        );
    }
    gw.proc.wait_line(Duration::from_secs(10), |l| {
        l.contains("audit sink write failed") && l.contains("postgres://")
    });
    schema.create().await;
    let client = schema.client().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let n: i64 = match client
            .query_one("SELECT count(*) FROM request_logs", &[])
            .await
        {
            Ok(r) => r.get(0),
            Err(_) => 0,
        };
        if n == N as i64 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{n} rows of {N}; output:\n{}",
            tail(&gw)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Logged by the writer after the rows landed; through the log thread and a pipe.
    gw.proc.wait_line(Duration::from_secs(5), |l| {
        l.contains("audit sink recovered")
    });
    let (written, dropped) = stop(&mut gw);
    assert_eq!((written, dropped), (N as u64, 0));
    assert_eq!(audit_query(&gw.config_path, &["--limit", "0"]).len(), N);
    drop(client);
    drop(schema);
}

/// `[audit] sink = "none"`: calls are served and each still leaves its audit log
/// line, no table (no `audit.db`) is created, and `audit query` says why it has
/// nothing to read instead of pretending the log is empty.
#[tokio::test]
async fn sink_none_keeps_the_log_lines_and_writes_no_table() {
    let up = Upstream::rust(&[]);
    let (alice_key, alice) = new_key();
    let (_bob_key, bob) = new_key();
    let mut gw = Gateway::start(&config(&up.url, &alice, &bob, "[audit]\nsink = \"none\"\n"));
    assert!(
        !gw.proc.lines_with("audit sink is \"none\"").is_empty(),
        "no warning that the table is off:\n{}",
        tail(&gw)
    );
    let mut m = Mcp::new(&gw.url(None), &alice_key);
    m.initialize().await;
    for i in 0..3 {
        let msg = m
            .call("test.echo", json!({ "text": format!("n{i}") }))
            .await;
        assert!(msg.get("result").is_some(), "{msg}");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while gw
        .audit_lines()
        .iter()
        .filter(|l| l.contains("tools/call"))
        .count()
        < 3
    {
        assert!(Instant::now() < deadline, "audit lines:\n{}", tail(&gw));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!gw.dir.path().join("audit.db").exists());
    let out = Cli::new()
        .args(["audit", "query"])
        .config(&gw.config_path)
        .run();
    assert!(!out.success(), "{out:?}");
    assert!(out.stderr.contains("sink = \"none\""), "{}", out.stderr);
    gw.proc.signal("TERM");
    assert_eq!(gw.proc.wait_exit(Duration::from_secs(30)), Some(0));
}
