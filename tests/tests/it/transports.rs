//! Upstream transports other than Streamable HTTP: stdio programs the gateway runs
//! (one per agent session, or shared) and the 2024-11-05 HTTP+SSE transport. The
//! process tests read the gateway's children from `/proc`: a process per session,
//! ended at DELETE, at idle expiry and at gateway SIGTERM, never left behind; a
//! server that crashes or prints garbage fails the call in flight and is restarted;
//! `max_processes` refuses with -32603 and an audit row.

use std::time::{Duration, Instant};

use portcullis_tests::audit_lines::wait_audit;
use portcullis_tests::client::{call_checked, session};
use portcullis_tests::procs::{everything_bin, inspector, py_client};
use portcullis_tests::{Agent, Config, Connector, Gateway, Mcp, Upstream, new_key};
use serde_json::{Value, json};

fn upstream_bin() -> String {
    portcullis_tests::bin("portcullis-test-upstream")
        .to_string_lossy()
        .into_owned()
}

/// The in-repo upstream as a stdio connector named "Local" (slug `local`).
fn local(extra_args: &[&str]) -> Connector {
    let mut args = vec!["--stdio"];
    args.extend_from_slice(extra_args);
    Connector::stdio("conn_local", "Local", &upstream_bin(), &args)
}

/// The processes the gateway started (its direct children).
fn children(gw: &Gateway) -> Vec<u32> {
    gw.children()
}

/// Whether `pid` is gone and reaped (no `/proc` entry, so not even a zombie).
fn gone(pid: u32) -> bool {
    !std::path::Path::new(&format!("/proc/{pid}")).exists()
}

async fn wait_until(what: &str, timeout: Duration, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn pid_of(gw: &Gateway, m: &Mcp) -> u32 {
    let msg = call_checked(gw, m, "local.pid", json!({})).await;
    msg["result"]["structuredContent"]["pid"]
        .as_u64()
        .unwrap_or_else(|| panic!("no pid: {msg}")) as u32
}

/// Waits for the audit row of a call of `tool` on `connector` with `status`.
fn audited(gw: &Gateway, connector: &str, tool: &str, status: u16) {
    wait_audit(gw, Duration::from_secs(10), |l| {
        l.contains(&format!("connector=\"{connector}\""))
            && l.contains(&format!("tool=\"{tool}\""))
            && l.contains(&format!("status={status}"))
    });
}

fn start(connectors: Vec<Connector>, server: &str) -> (Gateway, String) {
    let (key, hash) = new_key();
    let mut config = Config::new()
        .server(server)
        .agent(Agent::new("reporter", &hash));
    for c in connectors {
        config = config.connector(c);
    }
    (Gateway::start(&config.render()), key)
}

#[tokio::test]
async fn each_session_gets_its_own_process_ended_with_the_session() {
    let (mut gw, key) = start(vec![local(&[])], "session_idle_secs = 3");
    let mut a = session(&gw.url(None), &key).await;
    let names = a.tool_names().await;
    assert!(names.contains(&"local.echo".to_string()), "{names:?}");
    let catalog: Vec<u32> = children(&gw);
    assert_eq!(catalog.len(), 1, "the catalog's own process: {catalog:?}");

    let b = session(&gw.url(None), &key).await;
    let (pid_a, pid_b) = (pid_of(&gw, &a).await, pid_of(&gw, &b).await);
    assert_ne!(pid_a, pid_b, "one process per session");
    assert_eq!(pid_of(&gw, &a).await, pid_a, "a session keeps its process");
    let now = children(&gw);
    for pid in [pid_a, pid_b, catalog[0]] {
        assert!(now.contains(&pid), "{pid} is the gateway's child: {now:?}");
    }
    let echoed = call_checked(&gw, &a, "local.echo", json!({"text": "over stdio"})).await;
    assert_eq!(
        echoed["result"]["structuredContent"]["text"], "over stdio",
        "{echoed}"
    );

    // Its stderr is in the gateway log, tagged with the connector and the pid.
    let line = gw.proc.wait_line(Duration::from_secs(10), |l| {
        l.contains("serving stdio") && l.contains(&format!("pid {pid_a}"))
    });
    assert!(line.contains("conn_local"), "{line}");

    // DELETE ends the session's process (reaped: no zombie).
    assert_eq!(a.delete().await.status, 200);
    wait_until(
        "session A's process ends at DELETE",
        Duration::from_secs(8),
        || gone(pid_a),
    )
    .await;
    assert!(!gone(pid_b), "B's process is untouched");

    // Idle expiry (3 s) ends B's.
    wait_until(
        "session B's process ends at idle expiry",
        Duration::from_secs(12),
        || gone(pid_b),
    )
    .await;

    // SIGTERM ends the rest: a new session's process and the catalog's.
    let c = session(&gw.url(None), &key).await;
    let pid_c = pid_of(&gw, &c).await;
    gw.proc.signal("TERM");
    assert_eq!(gw.proc.wait_exit(Duration::from_secs(30)), Some(0));
    wait_until(
        "every process ends with the gateway",
        Duration::from_secs(5),
        || gone(pid_c) && gone(catalog[0]),
    )
    .await;
}

#[tokio::test]
async fn a_crashing_or_garbled_server_fails_the_call_and_is_restarted() {
    let crashing = local(&["--exit-after", "2"]);
    let garbled = Connector::stdio(
        "conn_garbled",
        "Garbled",
        &upstream_bin(),
        &["--stdio", "--garbage-after", "2"],
    );
    let (gw, key) = start(vec![crashing, garbled], "");
    let m = session(&gw.url(None), &key).await;
    for (slug, id, what) in [
        ("local", "conn_local", "exited"),
        ("garbled", "conn_garbled", "not JSON-RPC"),
    ] {
        let first = call_checked(&gw, &m, &format!("{slug}.pid"), json!({})).await;
        let pid = first["result"]["structuredContent"]["pid"]
            .as_u64()
            .expect("pid");
        let failed = call_checked(&gw, &m, &format!("{slug}.echo"), json!({"text": "x"})).await;
        assert_eq!(failed["error"]["code"], -32603, "{failed}");
        let message = failed["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(what), "{slug}: {message}");
        audited(&gw, id, "echo", 502);
        wait_until("the failed process is gone", Duration::from_secs(5), || {
            gone(pid as u32)
        })
        .await;
        // The next request gets a new process (after the 1 s backoff).
        let again = call_checked(&gw, &m, &format!("{slug}.pid"), json!({})).await;
        let restarted = again["result"]["structuredContent"]["pid"].as_u64();
        assert!(restarted.is_some_and(|p| p != pid), "{slug}: {again}");
    }
}

#[tokio::test]
async fn max_processes_refuses_a_session_beyond_the_limit() {
    // The catalog's process counts: with 2, one agent session fits.
    let (gw, key) = start(vec![local(&[]).extra("max_processes = 2")], "");
    let a = session(&gw.url(None), &key).await;
    let mut b = session(&gw.url(None), &key).await;
    b.tool_names().await;
    let pid_a = pid_of(&gw, &a).await;
    let refused = call_checked(&gw, &b, "local.echo", json!({"text": "x"})).await;
    assert_eq!(refused["error"]["code"], -32603, "{refused}");
    let message = refused["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("limit of 2 processes"), "{message}");
    audited(&gw, "conn_local", "echo", 503);

    // A's session ends: its slot is B's.
    a.delete().await;
    wait_until("A's process ends", Duration::from_secs(8), || gone(pid_a)).await;
    let ok = call_checked(&gw, &b, "local.echo", json!({"text": "now"})).await;
    assert_eq!(ok["result"]["structuredContent"]["text"], "now", "{ok}");
}

#[tokio::test]
async fn a_result_over_max_result_bytes_fails_only_its_call() {
    let (gw, key) = start(vec![local(&[]).extra("max_result_bytes = 1048576")], "");
    let m = session(&gw.url(None), &key).await;
    let pid = pid_of(&gw, &m).await;
    let big = call_checked(&gw, &m, "local.big", json!({"bytes": 2_000_000})).await;
    assert_eq!(
        big["error"]["code"],
        -32603,
        "{}",
        &big.to_string()[..200.min(big.to_string().len())]
    );
    assert_eq!(
        big["error"]["message"],
        "Upstream result exceeds the connector's max_result_bytes"
    );
    audited(&gw, "conn_local", "big", 502);
    let small = call_checked(&gw, &m, "local.big", json!({"bytes": 1000})).await;
    assert_eq!(
        small["result"]["content"][0]["text"].as_str().map(str::len),
        Some(1000)
    );
    assert_eq!(pid_of(&gw, &m).await, pid, "the process carries on");
}

#[tokio::test]
async fn a_shared_process_serves_every_session() {
    let (gw, key) = start(vec![local(&[]).extra("share_process = true")], "");
    let a = session(&gw.url(None), &key).await;
    let b = session(&gw.url(None), &key).await;
    let (pid_a, pid_b) = (pid_of(&gw, &a).await, pid_of(&gw, &b).await);
    assert_eq!(pid_a, pid_b, "one process for everyone");
    assert_eq!(children(&gw), vec![pid_a], "the catalog uses it too");
    a.delete().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !gone(pid_a),
        "a session's end does not end the shared process"
    );
    assert_eq!(pid_of(&gw, &b).await, pid_a);
}

#[tokio::test]
async fn env_values_reach_the_process_and_never_the_log() {
    let secret = "stdio-env-secret-81f0c2d4";
    let (key, hash) = new_key();
    let config = Config::new()
        .agent(Agent::new("reporter", &hash))
        .connector(local(&[]).extra(
            "env = { FROM_ENV = \"env:PORTCULLIS_TEST_STDIO_SECRET\", PLAIN = \"literal value\" }",
        ))
        .render();
    let gw = Gateway::start_with_env(
        &config,
        &[
            ("PORTCULLIS_TEST_STDIO_SECRET", secret),
            ("RUST_LOG", "debug"),
        ],
    );
    let m = session(&gw.url(None), &key).await;
    let get = |name: &str| call_checked(&gw, &m, "local.getenv", json!({"name": name}));
    assert_eq!(
        get("FROM_ENV").await["result"]["structuredContent"]["value"],
        secret
    );
    assert_eq!(
        get("PLAIN").await["result"]["structuredContent"]["value"],
        "literal value"
    );
    let inherited = get("PORTCULLIS_TEST_STDIO_SECRET").await;
    assert_eq!(
        inherited["result"]["structuredContent"]["value"],
        Value::Null,
        "the gateway's environment is not inherited: {inherited}"
    );
    let output = gw.proc.output();
    assert!(
        output.contains("stdio connector process started"),
        "{output}"
    );
    assert!(
        !output.contains(secret),
        "the secret is in the gateway's output"
    );
}

#[tokio::test]
async fn progress_and_cancellation_cross_a_stdio_connector() {
    let (gw, key) = start(vec![local(&[])], "");
    let mut m = session(&gw.url(None), &key).await;
    let resp = m
        .request_raw(
            "tools/call",
            json!({"name": "local.progress", "arguments": {"steps": 3}, "_meta": {"progressToken": "tok-1"}}),
        )
        .await;
    let messages = resp.messages();
    let tokens: Vec<&Value> = messages
        .iter()
        .filter(|msg| msg["method"] == "notifications/progress")
        .map(|msg| &msg["params"]["progressToken"])
        .collect();
    assert_eq!(
        tokens,
        [&json!("tok-1"); 3],
        "the agent's own token: {messages:?}"
    );
    let last = messages.last().expect("a response");
    assert_eq!(last["result"]["content"][0]["text"], "done 3", "{last}");

    // The agent cancels a call: the session's process is told, with its own id.
    let body = json!({"jsonrpc": "2.0", "id": 41, "method": "tools/call",
                      "params": {"name": "local.wait_for_cancel", "arguments": {"ms": 5000}}});
    let copy = m.same_session();
    let call = tokio::spawn(async move { copy.post(&body.to_string(), &[]).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    m.notify("notifications/cancelled", json!({"requestId": 41}))
        .await;
    let started = Instant::now();
    let _ = call.await.expect("the cancelled call ends");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "not cancelled upstream"
    );
    let ids = call_checked(&gw, &m, "local.cancelled_ids", json!({})).await;
    let ids = ids["result"]["structuredContent"]["ids"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(ids.len(), 1, "the process was told once: {ids:?}");
}

/// server-everything as stdio, SSE and Streamable HTTP connectors behind one gateway.
async fn everything_three_ways(sep: &str) {
    let http = Upstream::everything();
    let sse = Upstream::everything_sse();
    let everything = everything_bin().to_string_lossy().into_owned();
    let (gw, key) = start(
        vec![
            Connector::stdio("conn_stdio", "Stdio", &everything, &["stdio"]),
            Connector::new("conn_sse", "Sse", &sse.url).extra("transport = \"sse\""),
            Connector::new("conn_http", "Http", &http.url),
        ],
        &format!("tool_separator = \"{sep}\""),
    );
    let mut m = session(&gw.url(None), &key).await;
    let names = m.tool_names().await;
    for slug in ["stdio", "sse", "http"] {
        let name = format!("{slug}{sep}echo");
        assert!(names.contains(&name), "{name} in {names:?}");
        let msg = call_checked(&gw, &m, &name, json!({"message": slug})).await;
        assert_eq!(
            msg["result"]["content"][0]["text"],
            format!("Echo: {slug}"),
            "{msg}"
        );
    }
    // Each connector's own endpoint, with the upstream's names.
    for id in ["conn_stdio", "conn_sse", "conn_http"] {
        let mut own = session(&gw.url(Some(id)), &key).await;
        let msg = own.call("get-sum", json!({"a": 2, "b": 3})).await;
        assert_eq!(
            msg["result"]["content"][0]["text"], "The sum of 2 and 3 is 5.",
            "{id}: {msg}"
        );
    }
    // The Python `mcp` client, through the SSE and stdio connectors.
    for slug in ["sse", "stdio"] {
        let out = py_client(
            &gw.url(None),
            &key,
            &["call", &format!("{slug}{sep}echo"), r#"{"message": "py"}"#],
        );
        assert_eq!(out["content"][0]["text"], "Echo: py", "{slug}: {out}");
    }
    // The Inspector CLI, through the stdio and SSE connectors.
    for slug in ["stdio", "sse"] {
        let name = format!("{slug}{sep}get-sum");
        let args = [
            "--method",
            "tools/call",
            "--tool-name",
            &name,
            "--tool-arg",
            "a=4",
            "b=5",
        ];
        let (code, out, err) = inspector(&gw.url(None), &key, &args);
        assert_eq!(code, 0, "inspector {args:?}: {out} {err}");
        assert!(out.contains("The sum of 4 and 5 is 9."), "{out}");
    }
    // Progress from a long-running operation over each transport.
    for slug in ["stdio", "sse"] {
        let resp = m
            .request_raw(
                "tools/call",
                json!({"name": format!("{slug}{sep}trigger-long-running-operation"),
                       "arguments": {"duration": 1, "steps": 2},
                       "_meta": {"progressToken": 99}}),
            )
            .await;
        let messages = resp.messages();
        let progress = messages
            .iter()
            .filter(|msg| {
                msg["method"] == "notifications/progress" && msg["params"]["progressToken"] == 99
            })
            .count();
        assert_eq!(progress, 2, "{slug}: {messages:?}");
        assert!(
            messages
                .last()
                .is_some_and(|msg| msg.get("result").is_some()),
            "{messages:?}"
        );
    }
}

#[tokio::test]
async fn server_everything_over_stdio_sse_and_http_with_dot() {
    everything_three_ways(".").await;
}

#[tokio::test]
async fn server_everything_over_stdio_sse_and_http_with_double_underscore() {
    everything_three_ways("__").await;
}

#[test]
fn sampling_and_elicitation_are_relayed_over_stdio_and_sse() {
    let sse = Upstream::everything_sse();
    let everything = everything_bin().to_string_lossy().into_owned();
    let (gw, key) = start(
        vec![
            Connector::stdio("conn_stdio", "Stdio", &everything, &["stdio"])
                .relay_requests(&["sampling", "elicitation"]),
            Connector::new("conn_sse", "Sse", &sse.url)
                .extra("transport = \"sse\"")
                .relay_requests(&["sampling", "elicitation"]),
        ],
        "",
    );
    for slug in ["stdio", "sse"] {
        let out = py_client(
            &gw.url(None),
            &key,
            &[
                "--sampling-reply",
                "relayed by portcullis",
                "call",
                &format!("{slug}.trigger-sampling-request"),
                r#"{"prompt":"hello","maxTokens":7}"#,
            ],
        );
        let text = out["content"][0]["text"].as_str().unwrap_or_default();
        assert!(text.contains("relayed by portcullis"), "{slug}: {out}");
        assert_eq!(
            out["serverRequests"][0]["method"], "sampling/createMessage",
            "{out}"
        );
        let out = py_client(
            &gw.url(None),
            &key,
            &[
                "--elicit-reply",
                r#"{"action":"decline"}"#,
                "call",
                &format!("{slug}.trigger-elicitation-request"),
                "{}",
            ],
        );
        let text = out["content"][0]["text"].as_str().unwrap_or_default();
        assert!(text.contains("declined"), "{slug}: {out}");
    }
}

#[tokio::test]
async fn list_changed_from_a_stdio_server_reaches_agents() {
    let connector = local(&[]).extra("share_process = true\ntool_pinning = \"off\"");
    let (gw, key) = start(vec![connector], "");
    let mut m = session(&gw.url(None), &key).await;
    let before = m.tool_names().await;
    assert!(!before.contains(&"local.fresh".to_string()));
    let added = call_checked(&gw, &m, "local.add_tool", json!({"name": "fresh"})).await;
    assert!(added.get("result").is_some(), "{added}");
    m.wait_for_tool(
        "local.fresh",
        Duration::from_secs(10),
        "the tool the server added",
    )
    .await;
}

#[tokio::test]
async fn a_dropped_sse_stream_fails_the_call_and_the_next_one_reconnects() {
    let sse = Upstream::everything_sse();
    let port = portcullis_tests::upstreams::port_of(&sse.url);
    let (gw, key) = start(
        vec![Connector::new("conn_sse", "Sse", &sse.url).extra("transport = \"sse\"")],
        "",
    );
    let m = session(&gw.url(None), &key).await;
    let ok = call_checked(&gw, &m, "sse.echo", json!({"message": "before"})).await;
    assert_eq!(ok["result"]["content"][0]["text"], "Echo: before", "{ok}");
    let long = {
        let copy = m.same_session();
        tokio::spawn(async move {
            let mut copy = copy;
            copy.call(
                "sse.trigger-long-running-operation",
                json!({"duration": 5, "steps": 5}),
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(800)).await;
    drop(sse); // the server goes away mid-call
    let failed = long.await.expect("an answer");
    assert_eq!(failed["error"]["code"], -32603, "{failed}");

    let _back = Upstream::everything_sse_on(port);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let msg = call_checked(&gw, &m, "sse.echo", json!({"message": "after"})).await;
        if msg["result"]["content"][0]["text"] == "Echo: after" {
            break;
        }
        assert!(Instant::now() < deadline, "never reconnected: {msg}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[test]
fn transport_keys_are_checked_at_start_up() {
    let (_, hash) = new_key();
    let refuses = |connector: Connector| {
        Gateway::refuses(
            &Config::new()
                .agent(Agent::new("reporter", &hash))
                .connector(connector)
                .render(),
        )
    };
    let no_command = Connector::stdio("c", "C", "", &[]);
    assert!(refuses(no_command).contains("connectors[0].command"));
    let url_and_stdio = Connector::new("c", "C", "http://127.0.0.1:9/mcp")
        .extra("transport = \"stdio\"\ncommand = \"x\"");
    assert!(
        refuses(url_and_stdio)
            .contains("connectors[0].target_url: not used with transport = \"stdio\"")
    );
    let command_on_http =
        Connector::new("c", "C", "http://127.0.0.1:9/mcp").extra("command = \"x\"");
    assert!(
        refuses(command_on_http)
            .contains("connectors[0].command: only used with transport = \"stdio\"")
    );
    let shared_relay = local(&[]).extra("share_process = true\nrelay_requests = [\"sampling\"]");
    assert!(refuses(shared_relay).contains("connectors[0].relay_requests"));
    let bad = Connector::new("c", "C", "http://127.0.0.1:9/mcp").extra("transport = \"websocket\"");
    assert!(refuses(bad).contains("connectors[0].transport"));
    let no_slot_for_agents = local(&[]).extra("max_processes = 1");
    assert!(
        refuses(no_slot_for_agents)
            .contains("connectors[0].max_processes: must be at least 2 without share_process")
    );
}
