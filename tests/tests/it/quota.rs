//! Per-org quotas through the binary: the exact message and code, the audit status,
//! two gateways sharing one Redis admitting exactly N calls, window resets, and
//! Redis going away and coming back.

use std::time::Duration;

use portcullis_tests::audit_lines::{field, wait_audit};
use portcullis_tests::config::toml_str;
use portcullis_tests::redis::Redis;
use portcullis_tests::{
    Agent, Config, Connector, Gateway, Mcp, Policy, Upstream, fixture_policy, new_key,
};
use serde_json::{Value, json};

const QUOTA_MESSAGE: &str = "API quota exceeded. Upgrade your plan to continue.";

/// `quota` (a `[quota]` section or nothing), org acme limited to `limit`, one
/// connector, agent `reporter` of acme and `other-org` of globex.
fn config(upstream: &str, hash: &str, quota: &str, limit: &str) -> Config {
    Config::new()
        .raw(quota)
        .org("acme", limit)
        .connector(Connector::new("conn_test", "Test", upstream))
        .agent(Agent::new("reporter", hash))
        .agent(Agent::new("other-org", &new_key().1).org("globex"))
}

/// A `[quota]` section for the Redis at `url`, with `extra` lines.
fn redis_quota(url: &str, extra: &str) -> String {
    format!(
        "[quota]\nbackend = \"redis\"\nredis_url = {}\n{extra}",
        toml_str(url)
    )
}

async fn session(gw: &Gateway, key: &str) -> Mcp {
    let mut m = Mcp::new(&gw.url(None), key);
    m.initialize().await;
    m
}

async fn echo(m: &mut Mcp) -> Value {
    m.call("test.echo", json!({"text": "q"})).await
}

fn is_quota_error(msg: &Value) -> bool {
    msg["error"]["code"] == -32000 && msg["error"]["message"] == QUOTA_MESSAGE
}

#[tokio::test]
async fn memory_quota_refuses_with_the_documented_error_and_audits_429() {
    let up = Upstream::rust(&[]);
    let (key, hash) = new_key();
    let gw = Gateway::start(&config(&up.url, &hash, "", r#"{ calls = 3, per = "day" }"#));
    let mut m = session(&gw, &key).await;
    for i in 0..3 {
        let msg = echo(&mut m).await;
        assert!(msg.get("result").is_some(), "call {i} should pass: {msg}");
    }
    let msg = echo(&mut m).await;
    assert!(is_quota_error(&msg), "{msg}");
    // tools/list does not count and still works.
    assert!(!m.tool_names().await.is_empty());
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !gw.audit_lines().iter().any(|l| l.contains("status=429")) {
        assert!(
            std::time::Instant::now() < deadline,
            "no audit line with status=429"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn two_gateways_sharing_redis_admit_exactly_the_limit() {
    let redis = Redis::start();
    let up = Upstream::rust(&[]);
    let (key, hash) = new_key();
    let quota = redis_quota(&redis.url(), "key_prefix = \"pc-test\"");
    let cfg = config(&up.url, &hash, &quota, r#"{ calls = 25, per = "hour" }"#);
    let a = Gateway::start(&cfg);
    let b = Gateway::start(&cfg);
    let counted = calls_on(&[&a, &b], &key, 4, 10, false).await;
    assert_eq!(counted, (25, 55), "80 calls against a limit of 25");
}

/// `sessions` sessions on each gateway, all at once, each making up to `calls` calls
/// (stopping at its first refusal if `stop_when_refused`); (admitted, refused).
async fn calls_on(
    gateways: &[&Gateway],
    key: &str,
    sessions: usize,
    calls: usize,
    stop_when_refused: bool,
) -> (u64, u64) {
    let mut tasks = Vec::new();
    for gw in gateways {
        for _ in 0..sessions {
            let mut m = session(gw, key).await;
            tasks.push(tokio::spawn(async move {
                let (mut ok, mut refused) = (0, 0);
                for _ in 0..calls {
                    let msg = echo(&mut m).await;
                    if msg.get("result").is_some() {
                        ok += 1;
                    } else {
                        assert!(is_quota_error(&msg), "{msg}");
                        refused += 1;
                        if stop_when_refused {
                            break;
                        }
                    }
                }
                (ok, refused)
            }));
        }
    }
    let (mut ok, mut refused) = (0, 0);
    for t in tasks {
        let (o, r) = t.await.unwrap();
        ok += o;
        refused += r;
    }
    (ok, refused)
}

/// Polls `key`'s counter until it reads `want` (reserved calls are given back a
/// second after they were taken); the last value read.
async fn counter_settles(redis: &Redis, key: &str, want: u64) -> u64 {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let got: u64 = redis.query(redis::cmd("GET").arg(key));
        if got == want || std::time::Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_busy_org_counts_calls_ahead_and_gives_back_what_it_did_not_use() {
    let redis = Redis::start();
    let up = Upstream::rust(&[]);
    let (key, hash) = new_key();
    let quota = redis_quota(&redis.url(), "key_prefix = \"pc-blocks\"");
    let limit = r#"{ calls = 1000000, per = "day" }"#;
    let gw = Gateway::start(&config(&up.url, &hash, &quota, limit));
    let counted = calls_on(&[&gw], &key, 16, 50, false).await;
    assert_eq!(counted, (800, 0));
    // Checks that queue up take blocks of 64 calls: far fewer script calls than
    // calls (batching alone gives about one per three).
    let scripts = redis.script_calls();
    assert!(scripts * 4 < 800, "{scripts} script calls for 800 calls");
    let counters = redis.keys("pc-blocks:quota:acme:day:*");
    assert_eq!(counters.len(), 1, "{counters:?}");
    // Right after the calls the counter includes what the threads still hold.
    let held: u64 = redis.query(redis::cmd("GET").arg(&counters[0]));
    assert!(held >= 800, "{held}");
    assert_eq!(counter_settles(&redis, &counters[0], 800).await, 800);
}

#[tokio::test]
async fn with_blocks_two_gateways_still_admit_exactly_the_limit() {
    let redis = Redis::start();
    let up = Upstream::rust(&[]);
    let (key, hash) = new_key();
    let quota = redis_quota(&redis.url(), "key_prefix = \"pc-exact\"\nreserve = 4");
    // Blocks of 4 while the counter is below 2,000, then one script call per check.
    let cfg = config(&up.url, &hash, &quota, r#"{ calls = 4000, per = "day" }"#);
    let a = Gateway::start(&cfg);
    let b = Gateway::start(&cfg);
    let mut m = session(&a, &key).await;
    assert!(echo(&mut m).await.get("result").is_some());
    let counter = redis.keys("pc-exact:quota:acme:day:*").remove(0);
    let () = redis.query(redis::cmd("SET").arg(&counter).arg(1950).arg("KEEPTTL"));
    let (ok, refused) = calls_on(&[&a, &b], &key, 8, 400, true).await;
    assert_eq!(
        ok, 2050,
        "admitted after the counter was set to 1,950 of 4,000"
    );
    assert_eq!(refused, 16, "each session stops at its first refusal");
    // Refused calls are not kept in the counter.
    assert_eq!(counter_settles(&redis, &counter, 4000).await, 4000);
}

#[tokio::test]
async fn the_window_resets() {
    let up = Upstream::rust(&[]);
    let (key, hash) = new_key();
    let gw = Gateway::start(&config(
        &up.url,
        &hash,
        "",
        r#"{ calls = 2, per = "second" }"#,
    ));
    let mut m = session(&gw, &key).await;
    // Reach the limit within one second window, then see it lift in the next one.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "never saw the limit reached"
        );
        let results: Vec<Value> = vec![echo(&mut m).await, echo(&mut m).await, echo(&mut m).await];
        if is_quota_error(&results[2]) {
            break;
        }
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let msg = echo(&mut m).await;
    assert!(
        msg.get("result").is_some(),
        "a new window admits calls again: {msg}"
    );
}

#[tokio::test]
async fn redis_outage_refuses_then_recovers() {
    let redis = Redis::start();
    let port = redis.port;
    let up = Upstream::rust(&[]);
    let (key, hash) = new_key();
    let quota = redis_quota(&redis.url(), "");
    let mut gw = Gateway::start(&config(
        &up.url,
        &hash,
        &quota,
        r#"{ calls = 1000, per = "day" }"#,
    ));
    let mut m = session(&gw, &key).await;
    assert!(echo(&mut m).await.get("result").is_some());

    drop(redis); // killed
    let msg = echo(&mut m).await;
    assert_eq!(msg["error"]["code"], -32603, "{msg}");
    assert_eq!(
        msg["error"]["message"], "Quota service unavailable; try again later",
        "{msg}"
    );
    // The gateway keeps serving everything else.
    assert!(!m.tool_names().await.is_empty());
    // Logged on the worker, written by the log thread, read from the pipe: bounded wait.
    gw.proc.wait_line(Duration::from_secs(5), |l| {
        l.contains("quota backend unavailable")
    });

    let _redis = Redis::start_on(port);
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let msg = echo(&mut m).await;
        if msg.get("result").is_some() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "did not recover: {msg}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn on_unavailable_allow_lets_calls_through() {
    let up = Upstream::rust(&[]);
    let (key, hash) = new_key();
    let dead = format!("redis://127.0.0.1:{}/0", portcullis_tests::free_port());
    let quota = redis_quota(&dead, "on_unavailable = \"allow\"");
    let mut gw = Gateway::start(&config(
        &up.url,
        &hash,
        &quota,
        r#"{ calls = 1, per = "day" }"#,
    ));
    let mut m = session(&gw, &key).await;
    for _ in 0..3 {
        let msg = echo(&mut m).await;
        assert!(msg.get("result").is_some(), "{msg}");
    }
    gw.proc.wait_line(Duration::from_secs(5), |l| {
        l.contains("letting the call through")
    });
}

/// A call whose session is ended (DELETE) while its policies run is refused before the
/// quota check: it uses none of the org's quota.
#[tokio::test]
async fn a_call_whose_session_ended_uses_no_quota() {
    let up = Upstream::rust(&[]);
    let (key, hash) = new_key();
    // echo spends 1.5 s in a looping policy, then goes on (on_error = "allow").
    let slow = Policy::file(&fixture_policy("policy-test-misbehave"))
        .name("slow")
        .settings("{ behaviour = \"loop\", tools = [\"echo\"] }")
        .on_error("allow")
        .timeout_ms(1500)
        .cache_decisions(false);
    let cfg = config(&up.url, &hash, "", r#"{ calls = 1, per = "day" }"#).policy(slow);
    let gw = Gateway::start(&cfg.render());
    let mut m = session(&gw, &key).await;
    let other = m.same_session();
    let (msg, deleted) = tokio::join!(echo(&mut m), async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        other.delete().await.status
    });
    assert_eq!(deleted, 200);
    assert_eq!(msg["error"]["code"], -32600, "{msg}");
    wait_audit(&gw, Duration::from_secs(10), |l| {
        field(l, "status").as_deref() == Some("404") && l.contains("session ended")
    });

    // The org's one call is still there.
    let mut fresh = session(&gw, &key).await;
    let msg = echo(&mut fresh).await;
    assert!(
        msg.get("result").is_some(),
        "the ended session's call used the quota: {msg}"
    );
}
