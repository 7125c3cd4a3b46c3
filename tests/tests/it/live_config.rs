//! The whole config reloads without a restart (issue 22): agents, connectors and
//! scopes change under open sessions with the effects the README promises; bad
//! reloads keep the last good config (metric and `/readyz` say so); `portcullis
//! reload` reaches a running gateway; and continuous load through reloads of every
//! section sees no failed request except those the change revokes.

use std::time::{Duration, Instant};

use hyper::body::Incoming;
use portcullis_tests::client::{session, wait_stream_message};
use portcullis_tests::fixtures::write_by_rename;
use portcullis_tests::rpc::{assert_call_ok, assert_rpc_error};
use portcullis_tests::{Agent, Cli, Config, Connector, Gateway, Mcp, Policy, Upstream, new_key};
use serde_json::{Value, json};

const ECHO: &str = "test-upstream.echo";

/// Sessions the in-repo upstream (`--sessions`) has open now, besides the one this
/// asks on (ended before returning).
async fn open_upstream_sessions(up: &Upstream) -> u64 {
    let mut m = session(&up.url, "unused").await;
    let msg = m.call("session_stats", json!({})).await;
    assert_eq!(m.delete().await.status, 200);
    let open = msg["result"]["structuredContent"]["open"]
        .as_u64()
        .unwrap_or_else(|| panic!("session_stats: {msg}"));
    open - 1
}

/// Polls `probe` (every 50 ms, at most 10 s) until it returns true.
async fn eventually<F, Fut>(what: &str, mut probe: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    while !probe().await {
        assert!(Instant::now() < deadline, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether a GET stream ends (the server closes it) within `timeout`.
async fn stream_ends(body: &mut Incoming, timeout: Duration) -> bool {
    use http_body_util::BodyExt;
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => return false,
            Ok(None) | Ok(Some(Err(_))) => return true,
            Ok(Some(Ok(_))) => {}
        }
    }
}

async fn wait_list_changed(stream: &mut Incoming) -> bool {
    wait_stream_message(stream, Duration::from_secs(10), |m| {
        m["method"] == "notifications/tools/list_changed"
    })
    .await
    .is_some()
}

/// The admin listener's `/readyz` and `/metrics`.
async fn admin_get(gw: &Gateway, path: &str) -> String {
    let url = format!("{}{path}", gw.admin.as_ref().expect("admin listener"));
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    use http_body_util::BodyExt;
    let resp = client
        .get(url.parse().unwrap())
        .await
        .expect("admin answers");
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8_lossy(&body).into_owned()
}

fn metric(text: &str, series: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map(|v| v as u64)
        .unwrap_or(0)
}

#[tokio::test]
async fn a_removed_agent_or_changed_key_is_refused_and_its_sessions_close() {
    let up = Upstream::rust(&["--sessions"]);
    let (key_a, hash_a) = new_key();
    let (key_b, hash_b) = new_key();
    let (key_b2, hash_b2) = new_key();
    let config = |agents: &[(&str, &str)]| {
        let mut c = Config::new().connector(Connector::new("conn_test", "Test Upstream", &up.url));
        for (id, hash) in agents {
            c = c.agent(Agent::new(id, hash));
        }
        c.render()
    };
    let gw = Gateway::start(&config(&[("a", &hash_a), ("b", &hash_b)]));
    let mut a = Mcp::new(&gw.url(None), &key_a);
    a.initialize().await;
    let mut b = Mcp::new(&gw.url(None), &key_b);
    b.initialize().await;
    assert_call_ok(&a.call(ECHO, json!({"text": "a"})).await);
    assert_call_ok(&b.call(ECHO, json!({"text": "b"})).await);
    let mut a_stream = a.open_stream().await.into_body();
    // The gateway's own catalog session, and one for each agent session.
    assert_eq!(open_upstream_sessions(&up).await, 3);

    write_by_rename(&gw.config_path, config(&[("b", &hash_b2)]).as_bytes());
    eventually("agent a refused", || {
        let mut a = a.same_session();
        async move { a.request_raw("tools/list", json!({})).await.status == 401 }
    })
    .await;
    let old_b = b.request_raw("tools/list", json!({})).await;
    assert_eq!(old_b.status, 401, "b's old key: {}", old_b.body);
    assert!(
        stream_ends(&mut a_stream, Duration::from_secs(10)).await,
        "a's GET stream stayed open"
    );
    // Both agent sessions' upstream sessions were ended; the catalog's stays.
    eventually("upstream sessions closed", || async {
        open_upstream_sessions(&up).await == 1
    })
    .await;
    // b with its new key: a new session works.
    let mut b2 = Mcp::new(&gw.url(None), &key_b2);
    b2.initialize().await;
    assert_call_ok(&b2.call(ECHO, json!({"text": "b2"})).await);
}

#[tokio::test]
async fn changed_scopes_apply_at_the_next_request_and_are_announced() {
    let one = Upstream::rust(&[]);
    let two = Upstream::rust(&["--name", "second"]);
    let (key, hash) = new_key();
    let config = |scopes: &[&str]| {
        Config::new()
            .connector(Connector::new("conn_one", "One", &one.url))
            .connector(Connector::new("conn_two", "Two", &two.url))
            .agent(Agent::new("agent", &hash).scopes(scopes))
            .policy(Policy::new("builtin:slug-scope"))
            .render()
    };
    let gw = Gateway::start(&config(&["mcp:call:conn_one"]));
    let mut mcp = Mcp::new(&gw.url(None), &key);
    mcp.initialize().await;
    let session = mcp.session.clone();
    let mut stream = mcp.open_stream().await.into_body();
    let names = mcp.tool_names().await;
    assert!(names.contains(&"one.echo".to_string()), "{names:?}");
    assert!(!names.iter().any(|n| n.starts_with("two.")), "{names:?}");
    let denied = mcp.call("two.echo", json!({"text": "x"})).await;
    assert_rpc_error(&denied, -32003, "Insufficient scope");

    write_by_rename(&gw.config_path, config(&["mcp:call:conn_two"]).as_bytes());
    assert!(wait_list_changed(&mut stream).await, "no list_changed");
    let names = mcp.tool_names().await;
    assert!(names.contains(&"two.echo".to_string()), "{names:?}");
    assert!(!names.iter().any(|n| n.starts_with("one.")), "{names:?}");
    assert_call_ok(&mcp.call("two.echo", json!({"text": "x"})).await);
    let denied = mcp.call("one.echo", json!({"text": "x"})).await;
    assert_rpc_error(&denied, -32003, "Insufficient scope");
    assert_eq!(mcp.session, session, "the session is kept");
}

#[tokio::test]
async fn an_added_connector_is_usable_at_once_and_a_removed_one_disappears() {
    let one = Upstream::rust(&[]);
    let two = Upstream::rust(&["--sessions"]);
    let (key, hash) = new_key();
    let config = |with_two: bool| {
        let mut c = Config::new()
            .connector(Connector::new("conn_one", "One", &one.url))
            .agent(Agent::new("agent", &hash));
        if with_two {
            c = c.connector(Connector::new("conn_two", "Two", &two.url));
        }
        c.render()
    };
    let gw = Gateway::start(&config(false));
    let mut mcp = Mcp::new(&gw.url(None), &key);
    mcp.initialize().await;
    let mut stream = mcp.open_stream().await.into_body();
    assert!(!mcp.tool_names().await.iter().any(|n| n.starts_with("two.")));

    write_by_rename(&gw.config_path, config(true).as_bytes());
    assert!(
        wait_list_changed(&mut stream).await,
        "no list_changed on add"
    );
    let names = mcp.tool_names().await;
    assert!(names.contains(&"two.echo".to_string()), "{names:?}");
    assert_call_ok(&mcp.call("two.echo", json!({"text": "x"})).await);
    // Its own endpoint works at once too.
    let mut direct = Mcp::new(&gw.url(Some("conn_two")), &key);
    direct.initialize().await;
    assert_call_ok(&direct.call("echo", json!({"text": "x"})).await);
    // The catalog's, the agent's /mcp session's and the direct session's.
    assert_eq!(open_upstream_sessions(&two).await, 3);

    write_by_rename(&gw.config_path, config(false).as_bytes());
    assert!(
        wait_list_changed(&mut stream).await,
        "no list_changed on removal"
    );
    eventually("two's tools gone", || {
        let mut m = mcp.same_session();
        async move { !m.tool_names().await.iter().any(|n| n.starts_with("two.")) }
    })
    .await;
    let gone = mcp.call("two.echo", json!({"text": "x"})).await;
    assert_rpc_error(&gone, -32601, "Tool not found");
    // Every upstream session of the removed connector was ended.
    eventually("two's upstream sessions closed", || async {
        open_upstream_sessions(&two).await == 0
    })
    .await;
    assert_call_ok(&mcp.call("one.echo", json!({"text": "x"})).await);
}

#[tokio::test]
async fn a_retargeted_connector_reopens_its_upstream_sessions_on_the_new_upstream() {
    let first = Upstream::rust(&["--sessions", "--name", "first"]);
    let second = Upstream::rust(&["--sessions", "--name", "second"]);
    let (key, hash) = new_key();
    let config = |url: &str| {
        Config::new()
            .connector(Connector::new("conn_test", "Test Upstream", url))
            .agent(Agent::new("agent", &hash))
            .render()
    };
    let gw = Gateway::start(&config(&first.url));
    let mut mcp = Mcp::new(&gw.url(None), &key);
    mcp.initialize().await;
    assert_call_ok(&mcp.call(ECHO, json!({"text": "x"})).await);
    assert_eq!(open_upstream_sessions(&first).await, 2);

    write_by_rename(&gw.config_path, config(&second.url).as_bytes());
    eventually("calls reach the new upstream", || {
        let mut m = mcp.same_session();
        let url = second.url.clone();
        async move {
            assert_call_ok(&m.call(ECHO, json!({"text": "x"})).await);
            // count_calls counts itself: more than one means the gateway's call came.
            let mut direct = session(&url, "unused").await;
            let msg = direct.call("count_calls", json!({})).await;
            msg["result"]["structuredContent"]["count"].as_u64() > Some(1)
        }
    })
    .await;
    eventually("the old upstream's sessions closed", || async {
        open_upstream_sessions(&first).await == 0
    })
    .await;
    assert!(open_upstream_sessions(&second).await >= 1);
}

#[tokio::test]
async fn a_changed_credential_is_used_from_the_next_upstream_session() {
    let up = Upstream::rust(&["--sessions", "--require-bearer", "token-b"]);
    let (key, hash) = new_key();
    let config = |var: &str| {
        Config::new()
            .connector(
                Connector::new("conn_test", "Test Upstream", &up.url)
                    .credential(&format!("env:{var}"))
                    .extra("tool_pinning = \"off\""),
            )
            .agent(Agent::new("agent", &hash))
            .render()
    };
    let gw = Gateway::start_with_env(
        &config("TOKEN_A"),
        &[("TOKEN_A", "token-a"), ("TOKEN_B", "token-b")],
    );
    let mut mcp = Mcp::new(&gw.url(Some("conn_test")), &key);
    mcp.initialize().await;
    let refused = mcp.call("echo", json!({"text": "x"})).await;
    assert_eq!(refused["error"]["code"], -32603, "{refused}");

    write_by_rename(&gw.config_path, config("TOKEN_B").as_bytes());
    eventually("calls carry the new credential", || {
        let mut m = mcp.same_session();
        async move {
            m.call("echo", json!({"text": "x"}))
                .await
                .get("result")
                .is_some()
        }
    })
    .await;
    assert!(
        !gw.proc.output().contains("token-b"),
        "the credential is never logged"
    );
}

/// Each kind of bad file keeps the whole last good config; the failed-reload counter
/// and `/readyz` say so until a good reload.
#[tokio::test]
async fn bad_reloads_keep_the_last_good_config_and_are_reported() {
    let up = Upstream::rust(&[]);
    let (key, hash) = new_key();
    let build = |disabled: &[&str], clash: bool| {
        let mut c = Config::new().admin().connector(
            Connector::new("conn_test", "Test Upstream", &up.url).disabled_tools(disabled),
        );
        if clash {
            c = c.connector(Connector::new("conn_other", "Test Upstream", &up.url));
        }
        c.agent(Agent::new("agent", &hash))
            .policy(Policy::new("builtin:blocklist"))
            .render()
    };
    let good = |disabled: &[&str]| build(disabled, false);
    let gw = Gateway::start(&good(&["sleep"]));
    let mut mcp = Mcp::new(&gw.url(None), &key);
    mcp.initialize().await;
    let base = good(&[]);
    let bad: [(&str, String); 5] = [
        ("syntax", format!("{base}\n[[agents]\n")),
        (
            "unknown key",
            base.replace("[server]\n", "[server]\nbogus = 1\n"),
        ),
        (
            "bad value",
            base.replace("[server]\n", "[server]\nmax_body_bytes = 10\n"),
        ),
        ("slug clash", build(&[], true)),
        (
            "policy that fails to load",
            base.replace("builtin:blocklist", "/nonexistent/policy.wasm"),
        ),
    ];
    for (n, (kind, text)) in bad.iter().enumerate() {
        write_by_rename(&gw.config_path, text.as_bytes());
        let failed = (n + 1) as u64;
        eventually(&format!("{kind} counted as failed"), || async {
            let m = admin_get(&gw, "/metrics").await;
            metric(&m, r#"portcullis_config_reloads_total{result="failed"}"#) == failed
        })
        .await;
        let ready: Value = serde_json::from_str(&admin_get(&gw, "/readyz").await).unwrap();
        let failure = &ready["checks"]["policies"]["last_reload_failure"];
        assert!(failure["error"].is_string(), "{kind}: {ready}");
        assert!(failure["at"].is_string(), "{kind}: {ready}");
        assert_eq!(ready["checks"]["policies"]["ready"], true, "{kind}");
        // The last good rules still hold: sleep stays disabled.
        let msg = mcp.call("test-upstream.sleep", json!({"ms": 0})).await;
        assert_rpc_error(&msg, -32601, "Tool not found");
    }
    let logged = gw.proc.lines_with("config reload failed");
    assert!(
        logged.iter().any(|l| l.contains("bogus")),
        "the unknown key is named: {logged:?}"
    );
    assert!(
        logged.iter().any(|l| l.contains("server.max_body_bytes")),
        "the bad value's key is named: {logged:?}"
    );
    // A good reload clears the report and applies.
    write_by_rename(&gw.config_path, base.as_bytes());
    eventually("good reload applied", || {
        let mut m = mcp.same_session();
        async move {
            m.call("test-upstream.sleep", json!({"ms": 0}))
                .await
                .get("result")
                .is_some()
        }
    })
    .await;
    let ready: Value = serde_json::from_str(&admin_get(&gw, "/readyz").await).unwrap();
    assert!(
        ready["checks"]["policies"]
            .get("last_reload_failure")
            .is_none(),
        "{ready}"
    );
}

#[tokio::test]
async fn portcullis_reload_reaches_a_running_gateway_and_reports_failures() {
    let up = Upstream::rust(&[]);
    let (key, hash) = new_key();
    let port = portcullis_tests::free_port();
    let config = |disabled: &[&str], extra: &str| {
        Config::new()
            .raw(&format!("[admin]\nlisten = \"127.0.0.1:{port}\""))
            .server(extra)
            .connector(
                Connector::new("conn_test", "Test Upstream", &up.url).disabled_tools(disabled),
            )
            .agent(Agent::new("agent", &hash))
            .policy(Policy::new("builtin:blocklist"))
            .render()
    };
    let gw = Gateway::start(&config(&[], ""));
    let mut mcp = Mcp::new(&gw.url(None), &key);
    mcp.initialize().await;
    assert_call_ok(&mcp.call(ECHO, json!({"text": "x"})).await);
    // Written in place: the watcher reloads it too, `reload` makes it happen now.
    std::fs::write(&gw.config_path, config(&["echo"], "workers = 1")).unwrap();
    let out = Cli::new()
        .args(["reload", "--config"])
        .arg(&gw.config_path)
        .run_ok();
    let report: Value = serde_json::from_str(out.stdout.trim()).expect("JSON report");
    assert_eq!(report["result"], "ok", "{report}");
    assert_eq!(
        report["restart_required_for"],
        json!(["[server]"]),
        "{report}"
    );
    let msg = mcp.call(ECHO, json!({"text": "x"})).await;
    assert_rpc_error(&msg, -32601, "Tool not found");
    let warned = portcullis_tests::audit_lines::wait_lines(
        &gw.proc,
        "need a restart",
        1,
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(
        warned.len(),
        1,
        "one warning names the sections: {warned:?}"
    );

    std::fs::write(
        &gw.config_path,
        config(&[], "").replace("[server]\n", "[server]\nnope = 1\n"),
    )
    .unwrap();
    let out = Cli::new()
        .args(["reload", "--config"])
        .arg(&gw.config_path)
        .run();
    assert!(!out.success(), "a failed reload exits non-zero");
    assert!(
        out.stderr.contains("422") && out.stderr.contains("nope"),
        "{}",
        out.stderr
    );
    let msg = mcp.call(ECHO, json!({"text": "x"})).await;
    assert_rpc_error(&msg, -32601, "Tool not found");
}

/// Several sessions call in a loop while each reloadable section changes in turn:
/// nothing fails that the change does not revoke, each change is seen within a
/// second, and every session is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reloads_of_every_section_under_load_fail_no_request() {
    let one = Upstream::rust(&[]);
    let two = Upstream::rust(&[]);
    let (key, hash) = new_key();
    let (other_key, other_hash) = new_key();
    let _ = other_key;
    // Each step changes one section; the loaders call one.echo, which no step revokes.
    let steps: Vec<(&str, String)> = vec![
        ("base", String::new()),
        ("disabled_tools", "disabled".into()),
        ("quota", "quota".into()),
        ("agents", "agent".into()),
        ("scopes", "scopes".into()),
        ("connector added", "two".into()),
        ("timeout", "timeout".into()),
        ("policies", "policy".into()),
    ];
    let config = |upto: usize| {
        let on = |name: &str| steps[..=upto].iter().any(|(_, s)| s == name);
        let mut conn_one = Connector::new("conn_one", "One", &one.url);
        if on("disabled") {
            conn_one = conn_one.disabled_tools(&["sleep"]);
        }
        if on("timeout") {
            conn_one = conn_one.timeout_ms(20_000);
        }
        let mut c = Config::new().connector(conn_one);
        if on("two") {
            c = c.connector(Connector::new("conn_two", "Two", &two.url));
        }
        let scopes: &[&str] = if on("scopes") {
            &["mcp:call:conn_one", "mcp:call:conn_two"]
        } else {
            &["mcp:call"]
        };
        c = c.agent(Agent::new("agent", &hash).scopes(scopes));
        if on("agent") {
            c = c.agent(Agent::new("other", &other_hash));
        }
        if on("quota") {
            c = c.org("acme", "{ calls = 1000000, per = \"day\" }");
        }
        c = c.policy(Policy::new("builtin:slug-scope"));
        c = c.policy(Policy::new("builtin:blocklist"));
        if on("policy") {
            // A second blocklist (its module is compiled already: the step measures
            // the reload, not cranelift).
            c = c.policy(Policy::new("builtin:blocklist").name("blocklist-again"));
        }
        c.render()
    };
    let gw = Gateway::start(&config(0));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut loaders = Vec::new();
    for _ in 0..4 {
        let mut m = Mcp::new(&gw.url(None), &key);
        m.initialize().await;
        let stop = stop.clone();
        loaders.push(tokio::spawn(async move {
            let (mut ok, mut failed) = (0u64, Vec::new());
            let session = m.session.clone();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let resp = m
                    .request_raw(
                        "tools/call",
                        json!({"name": "one.echo", "arguments": {"text": "load"}}),
                    )
                    .await;
                let msg = (resp.status == 200).then(|| resp.json());
                match msg {
                    Some(msg) if msg.get("result").is_some() => ok += 1,
                    _ => failed.push(format!("{} {}", resp.status, resp.body)),
                }
            }
            (ok, failed, m.session == session)
        }));
    }
    let mut probe = Mcp::new(&gw.url(None), &key);
    probe.initialize().await;
    for (step, (name, _)) in steps.iter().enumerate().skip(1) {
        tokio::time::sleep(Duration::from_millis(300)).await;
        write_by_rename(&gw.config_path, config(step).as_bytes());
        let started = Instant::now();
        let seen = match *name {
            "disabled_tools" => "sleep hidden",
            "connector added" => "two listed",
            _ => "reloaded",
        };
        let reloads_before = step - 1;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let done = match seen {
                "sleep hidden" => !probe.tool_names().await.contains(&"one.sleep".to_string()),
                "two listed" => probe.tool_names().await.contains(&"two.echo".to_string()),
                _ => gw.proc.lines_with("config reloaded").len() > reloads_before,
            };
            if done {
                break;
            }
            assert!(Instant::now() < deadline, "step {name} never applied");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            started.elapsed() < Duration::from_secs(1) + Duration::from_millis(500),
            "step {name} took {:?} (150 ms debounce + reload)",
            started.elapsed()
        );
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = 0;
    for l in loaders {
        let (ok, failed, kept) = l.await.unwrap();
        assert!(
            failed.is_empty(),
            "failed requests under reload: {failed:?}"
        );
        assert!(kept, "a session was lost");
        total += ok;
    }
    assert!(total > 100, "the load ran: {total} calls");
    assert_eq!(gw.proc.lines_with("config reload failed").len(), 0);
}
