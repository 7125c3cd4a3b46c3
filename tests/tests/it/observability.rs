//! Observability through the binary: OpenTelemetry traces exported to a collector the
//! test runs (OTLP over HTTP/protobuf and gRPC), W3C trace-context propagation to the
//! upstream, Prometheus metrics on the admin listener, and `/healthz` / `/readyz`.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use portcullis_tests::config::toml_str;
use portcullis_tests::otlp::{Receiver, Span};
use portcullis_tests::redis::Redis;
use portcullis_tests::{Agent, Config, Connector, Gateway, Mcp, Policy, Upstream, new_key};
use serde_json::{Value, json};

const UPSTREAM_TOKEN: &str = "upstream-secret-token-4711";
const SECRET_ARG: &str = "argument-value-never-exported";

/// Trace and parent ids of the agent's incoming `traceparent`.
const AGENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const AGENT_PARENT: &str = "00f067aa0ba902b7";

/// An admin listener, `extra` TOML, one connector (behind a credential, with
/// `delete_thing` blocklisted), agent alice, and two built-in policies evaluating
/// every decision (no reuse), so the policy counters equal the calls.
fn config(upstream: &str, hash: &str, extra: &str) -> Config {
    Config::new()
        .admin()
        .raw(extra)
        .connector(
            Connector::new("conn_test", "Test", upstream)
                .credential("env:OBS_UPSTREAM_TOKEN")
                .disabled_tools(&["delete_thing"]),
        )
        .agent(Agent::new("alice", hash))
        .policy(
            Policy::new("builtin:slug-scope")
                .timeout_ms(5000)
                .cache_decisions(false),
        )
        .policy(
            Policy::new("builtin:blocklist")
                .timeout_ms(5000)
                .cache_decisions(false),
        )
}

fn start(config: &Config) -> Gateway {
    Gateway::start_with_env(
        &config.render(),
        &[
            ("OBS_UPSTREAM_TOKEN", UPSTREAM_TOKEN),
            // Export batches quickly so the test does not wait 5 s.
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    )
}

fn upstream() -> Upstream {
    Upstream::rust(&["--require-bearer", UPSTREAM_TOKEN])
}

/// `tools/call` with extra HTTP headers; returns the JSON-RPC response.
async fn call(m: &mut Mcp, id: i64, name: &str, params: Value, headers: &[(&str, &str)]) -> Value {
    let mut p = params;
    p["name"] = json!(name);
    let body = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": p});
    let resp = m.post(&body.to_string(), headers).await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    resp.json()
}

/// What the upstream's `whoami` saw.
fn whoami(msg: &Value) -> Value {
    let result = &msg["result"];
    assert!(result.is_object(), "whoami failed: {msg}");
    if result["structuredContent"].is_object() {
        return result["structuredContent"].clone();
    }
    serde_json::from_str(result["content"][0]["text"].as_str().expect("text")).expect("json")
}

/// `(trace id, parent span id)` of a `traceparent` value.
fn parse_traceparent(tp: &str) -> (String, String) {
    let parts: Vec<&str> = tp.split('-').collect();
    assert_eq!(parts.len(), 4, "traceparent {tp:?}");
    assert_eq!(parts[0], "00");
    (parts[1].to_string(), parts[2].to_string())
}

fn children<'a>(spans: &'a [Span], parent: &Span) -> Vec<&'a Span> {
    spans
        .iter()
        .filter(|s| s.parent_span_id == parent.span_id && s.trace_id == parent.trace_id)
        .collect()
}

fn server_span<'a>(spans: &'a [Span], name: &str) -> Option<&'a Span> {
    spans.iter().find(|s| s.name == name && s.kind == 2)
}

/// One `tools/call` continues the agent's trace: server span (child of the agent's
/// span) with the MCP attributes, one span per policy, the quota check and the upstream
/// call as its children; the upstream sees the same trace id in its `traceparent`
/// header and in `params._meta` (the agent's other `_meta` fields kept). A hidden tool
/// is a server span with `error.type`. Secrets and arguments never reach the collector.
#[tokio::test]
async fn a_tools_call_is_one_trace_continued_upstream() {
    let otlp = Receiver::start();
    let up = upstream();
    let (key, hash) = new_key();
    let telemetry = format!(
        "[telemetry]\notlp_endpoint = \"{}\"\nservice_name = \"portcullis-obs-test\"\notlp_headers = {{ \"x-collector-token\" = \"collector-t0ken\" }}\n",
        otlp.url()
    );
    let gw = start(&config(&up.url, &hash, &telemetry));
    assert!(!gw.proc.lines_with("exporting traces (OTLP)").is_empty());
    assert!(
        gw.proc.lines_with("collector-t0ken").is_empty(),
        "header values are never logged"
    );

    let mut m = Mcp::new(&gw.url(None), &key);
    m.initialize().await;
    let session_id = m.session.clone().unwrap();
    let incoming = format!("00-{AGENT_TRACE}-{AGENT_PARENT}-01");
    let msg = call(
        &mut m,
        41,
        "test.whoami",
        json!({"arguments": {"note": SECRET_ARG}, "_meta": {"agent.note": "keep-me"}}),
        &[("traceparent", &incoming)],
    )
    .await;
    let seen = whoami(&msg);

    // The upstream HTTP request carried a traceparent of the same trace.
    let header = seen["traceparent"]
        .as_str()
        .expect("traceparent header upstream");
    let (header_trace, header_parent) = parse_traceparent(header);
    assert_eq!(header_trace, AGENT_TRACE, "the agent's trace is continued");
    // ... and so did params._meta, next to the agent's own field.
    let meta = &seen["_meta"];
    assert_eq!(meta["agent.note"], "keep-me", "{meta}");
    assert_eq!(
        seen["tracestate"],
        Value::Null,
        "no empty tracestate header"
    );
    assert!(meta.get("tracestate").is_none(), "{meta}");
    let (meta_trace, meta_parent) =
        parse_traceparent(meta["traceparent"].as_str().expect("_meta.traceparent"));
    assert_eq!(meta_trace, AGENT_TRACE);
    assert_eq!(meta_parent, header_parent);

    let spans = otlp.wait(Duration::from_secs(15), |s| {
        server_span(s, "tools/call test.whoami").is_some_and(|srv| children(s, srv).len() >= 4)
    });
    let srv = server_span(&spans, "tools/call test.whoami").unwrap();
    assert_eq!(srv.trace_id, AGENT_TRACE);
    assert_eq!(
        srv.parent_span_id, AGENT_PARENT,
        "child of the agent's span"
    );
    assert_eq!(srv.service_name, "portcullis-obs-test");
    for (k, v) in [
        ("mcp.method.name", "tools/call"),
        ("mcp.session.id", session_id.as_str()),
        ("jsonrpc.request.id", "41"),
        ("gen_ai.tool.name", "test.whoami"),
        ("gen_ai.operation.name", "execute_tool"),
        ("portcullis.org", "acme"),
        ("portcullis.agent", "alice"),
        ("portcullis.connector", "conn_test"),
        ("portcullis.status", "200"),
        ("server.address", "127.0.0.1"),
    ] {
        assert_eq!(srv.attr(k), Some(v), "server span {k}: {srv:#?}");
    }
    assert_eq!(srv.attr("error.type"), None);

    let kids = children(&spans, srv);
    let policies: Vec<&&Span> = kids
        .iter()
        .filter(|s| s.attr("portcullis.policy.hook") == Some("check_call"))
        .collect();
    let names: Vec<&str> = policies
        .iter()
        .map(|s| s.attr("portcullis.policy.name").unwrap())
        .collect();
    assert_eq!(names, ["slug-scope", "blocklist"], "{kids:#?}");
    for p in &policies {
        assert_eq!(p.attr("portcullis.policy.verdict"), Some("allow"));
        let digest = p.attr("portcullis.policy.digest").unwrap();
        assert!(digest.len() == 64 && digest.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(
            p.name,
            format!("policy {}", p.attr("portcullis.policy.name").unwrap())
        );
    }
    let quota = kids
        .iter()
        .find(|s| s.name == "quota check")
        .expect("quota span");
    assert_eq!(quota.attr("portcullis.org"), Some("acme"));
    assert_eq!(quota.attr("portcullis.quota.verdict"), Some("unlimited"));
    let upstream = kids
        .iter()
        .find(|s| s.name == "tools/call whoami")
        .expect("upstream span");
    assert_eq!(upstream.kind, 3, "client span");
    assert_eq!(upstream.attr("portcullis.connector"), Some("conn_test"));
    assert_eq!(upstream.attr("http.response.status_code"), Some("200"));
    assert_eq!(upstream.attr("portcullis.upstream.outcome"), Some("ok"));
    assert_eq!(
        header_parent, upstream.span_id,
        "the upstream request's traceparent names the upstream span"
    );
    // Spans in order: policies, then quota, then the upstream call.
    assert!(kids.len() >= 4);

    // A hidden tool: the blocklist denies, the server span says why.
    let msg = call(
        &mut m,
        42,
        "test.delete_thing",
        json!({"arguments": {}}),
        &[],
    )
    .await;
    assert_eq!(msg["error"]["code"], -32601, "{msg}");
    let spans = otlp.wait(Duration::from_secs(15), |s| {
        server_span(s, "tools/call test.delete_thing").is_some()
    });
    let denied = server_span(&spans, "tools/call test.delete_thing").unwrap();
    assert_ne!(
        denied.trace_id, AGENT_TRACE,
        "a new trace without traceparent"
    );
    assert_eq!(denied.parent_span_id, "");
    assert_eq!(denied.attr("error.type"), Some("-32601"));
    assert_eq!(denied.attr("portcullis.status"), Some("404"));
    assert_eq!(denied.status, 2, "span status error");
    let verdicts: Vec<_> = children(&spans, denied)
        .iter()
        .filter_map(|s| s.attr("portcullis.policy.verdict").map(str::to_string))
        .collect();
    assert_eq!(verdicts, ["allow", "deny"]);

    // The collector got our headers; nothing secret reached it.
    let exports = otlp.exports();
    assert!(exports.iter().all(|e| e.transport == "http"));
    assert!(
        exports
            .iter()
            .all(|e| e.headers.get("x-collector-token").map(String::as_str)
                == Some("collector-t0ken"))
    );
    let dump = format!("{:?}", otlp.spans());
    assert!(
        !dump.contains(UPSTREAM_TOKEN),
        "upstream credential exported"
    );
    assert!(!dump.contains(SECRET_ARG), "call arguments exported");
    assert!(!dump.contains(&key), "agent API key exported");

    // Trace spans stay out of the log: the audit lines look as with tracing off.
    let lines = gw.audit_lines();
    assert!(lines.len() >= 2, "{lines:?}");
    assert!(
        lines.iter().all(|l| !l.contains("mcp.method.name")),
        "{lines:?}"
    );
}

/// The same spans reach a collector over OTLP/gRPC.
#[tokio::test]
async fn traces_export_over_grpc() {
    let otlp = Receiver::start();
    let up = upstream();
    let (key, hash) = new_key();
    let telemetry = format!(
        "[telemetry]\notlp_endpoint = \"{}\"\notlp_protocol = \"grpc\"\notlp_headers = {{ \"x-collector-token\" = \"grpc-t0ken\" }}\n",
        otlp.url()
    );
    let gw = start(&config(&up.url, &hash, &telemetry));
    let mut m = Mcp::new(&gw.url(None), &key);
    m.initialize().await;
    let msg = m.call("test.echo", json!({"text": "hi"})).await;
    assert!(msg.get("result").is_some(), "{msg}");
    let spans = otlp.wait(Duration::from_secs(15), |s| {
        server_span(s, "tools/call test.echo").is_some_and(|srv| children(s, srv).len() >= 4)
    });
    let srv = server_span(&spans, "tools/call test.echo").unwrap();
    assert_eq!(srv.service_name, "portcullis");
    assert_eq!(srv.parent_span_id, "");
    let exports = otlp.exports();
    assert!(!exports.is_empty() && exports.iter().all(|e| e.transport == "grpc"));
    assert!(
        exports
            .iter()
            .all(|e| e.headers.get("x-collector-token").map(String::as_str) == Some("grpc-t0ken"))
    );
}

async fn get(url: &str) -> (u16, String, String) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let resp = client
        .request(
            hyper::Request::get(url)
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .expect("GET");
    let status = resp.status().as_u16();
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, ct, String::from_utf8_lossy(&body).into_owned())
}

/// The value of one sample, e.g. `portcullis_requests_total{method="tools/call",...}`;
/// labels in any order. 0 when absent.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (metric, label_text) = match series.split_once('{') {
            Some((m, rest)) => (m, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        if metric != name {
            continue;
        }
        let have: Vec<(String, String)> = label_text
            .split("\",")
            .filter(|kv| !kv.is_empty())
            .filter_map(|kv| {
                let (k, v) = kv.split_once('=')?;
                Some((k.to_string(), v.trim_matches('"').to_string()))
            })
            .collect();
        if labels
            .iter()
            .all(|(k, v)| have.iter().any(|(hk, hv)| hk == k && hv == v))
        {
            return value.parse().expect("numeric sample");
        }
    }
    0.0
}

/// A scripted mix of calls, then `/metrics`: the request counters equal the calls made,
/// by status; policy, upstream, quota and reload families follow; tracing is off, so
/// nothing is propagated upstream.
#[tokio::test]
async fn metrics_count_the_calls_by_status() {
    let up = upstream();
    let (key, hash) = new_key();
    let (tiny_key, tiny_hash) = new_key();
    let cfg = config(&up.url, &hash, "")
        .org("tiny", "{ calls = 1, per = \"day\" }")
        .agent(Agent::new("small", &tiny_hash).org("tiny"));
    let gw = start(&cfg);
    let admin = gw.admin.clone().expect("admin listener");

    let mut m = Mcp::new(&gw.url(None), &key);
    m.initialize().await;
    assert!(!m.tool_names().await.is_empty()); // tools/list 200
    for _ in 0..3 {
        let msg = m.call("test.echo", json!({"text": "x"})).await;
        assert!(msg.get("result").is_some(), "{msg}");
    }
    for _ in 0..2 {
        let msg = m.call("test.delete_thing", json!({})).await; // blocklisted: 404
        assert_eq!(msg["error"]["code"], -32601, "{msg}");
    }
    let msg = m.call("test.http_error", json!({"status": 500})).await; // 502
    assert_eq!(msg["error"]["code"], -32603, "{msg}");
    let msg = m.call("nosuch.tool", json!({})).await; // no connector: 404
    assert_eq!(msg["error"]["code"], -32601, "{msg}");
    // Tracing is off: the upstream sees no traceparent.
    let seen = whoami(&m.call("test.whoami", json!({})).await);
    assert_eq!(seen["traceparent"], Value::Null);
    assert!(seen["_meta"].get("traceparent").is_none(), "{seen}");

    let mut small = Mcp::new(&gw.url(None), &tiny_key);
    small.initialize().await;
    assert!(
        small
            .call("test.echo", json!({"text": "1"}))
            .await
            .get("result")
            .is_some()
    );
    let refused = small.call("test.echo", json!({"text": "2"})).await;
    assert_eq!(refused["error"]["code"], -32000, "{refused}"); // quota: 429

    gw.proc.signal("HUP"); // one policy reload
    let deadline = Instant::now() + Duration::from_secs(15);
    let text = loop {
        let (status, ct, text) = get(&format!("{admin}/metrics")).await;
        assert_eq!(status, 200);
        assert!(ct.starts_with("application/openmetrics-text"), "{ct}");
        if sample(
            &text,
            "portcullis_policy_reloads_total",
            &[("result", "ok")],
        ) >= 1.0
        {
            break text;
        }
        assert!(Instant::now() < deadline, "no reload counted:\n{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    let req = |method: &str, connector: &str, status: &str| {
        sample(
            &text,
            "portcullis_requests_total",
            &[
                ("method", method),
                ("connector", connector),
                ("status", status),
            ],
        )
    };
    assert_eq!(req("tools/list", "-", "200"), 1.0, "{text}");
    assert_eq!(req("tools/call", "conn_test", "200"), 3.0 + 1.0 + 1.0); // echo x3, whoami, small's echo
    assert_eq!(req("tools/call", "conn_test", "404"), 2.0);
    assert_eq!(req("tools/call", "conn_test", "502"), 1.0);
    assert_eq!(req("tools/call", "conn_test", "429"), 1.0);
    assert_eq!(req("tools/call", "-", "404"), 1.0);
    let calls = 3 + 2 + 1 + 1 + 1 + 2;
    assert_eq!(
        sample(
            &text,
            "portcullis_request_duration_seconds_count",
            &[("method", "tools/call")]
        ),
        calls as f64
    );
    assert_eq!(
        sample(
            &text,
            "portcullis_upstream_errors_total",
            &[("connector", "conn_test"), ("kind", "http_status")]
        ),
        1.0
    );
    // Forwarded: echo x3, http_error, whoami, small's echo.
    assert_eq!(
        sample(
            &text,
            "portcullis_upstream_duration_seconds_count",
            &[("connector", "conn_test")]
        ),
        6.0
    );
    assert_eq!(
        sample(
            &text,
            "portcullis_quota_rejections_total",
            &[("org", "tiny"), ("reason", "exceeded")]
        ),
        1.0
    );
    let policy = |name: &str, verdict: &str| {
        sample(
            &text,
            "portcullis_policy_evaluations_total",
            &[
                ("policy", name),
                ("hook", "check_call"),
                ("verdict", verdict),
            ],
        )
    };
    // Every call that reached the chain (all but the unknown connector) passed
    // slug-scope; blocklist denied the two hidden ones.
    assert_eq!(policy("slug-scope", "allow"), 9.0);
    assert_eq!(policy("blocklist", "allow"), 7.0);
    assert_eq!(policy("blocklist", "deny"), 2.0);
    assert_eq!(
        sample(
            &text,
            "portcullis_policy_duration_seconds_count",
            &[("policy", "blocklist"), ("hook", "check_call")]
        ),
        9.0
    );
    assert_eq!(sample(&text, "portcullis_active_sessions", &[]), 2.0);
    assert!(text.contains("portcullis_audit_queue_depth "), "{text}");
    assert!(
        text.contains("portcullis_audit_dropped_rows_total "),
        "{text}"
    );
    assert!(text.ends_with("# EOF\n"));
}

/// `/readyz` flips to 503 naming the quota backend when Redis stops, and back to 200
/// when it returns on the same port; `/healthz` stays 200.
#[tokio::test]
async fn readyz_follows_the_quota_backend() {
    let redis = Redis::start();
    let port = redis.port;
    let up = upstream();
    let (_key, hash) = new_key();
    let extra = format!(
        "[quota]\nbackend = \"redis\"\nredis_url = {}",
        toml_str(&redis.url())
    );
    let cfg = config(&up.url, &hash, &extra).org("acme", "{ calls = 100, per = \"day\" }");
    let gw = start(&cfg);
    let admin = gw.admin.clone().expect("admin listener");
    let ready = format!("{admin}/readyz");

    let wait = |want: u16| {
        let ready = ready.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let (status, ct, body) = get(&ready).await;
                if status == want {
                    assert_eq!(ct, "application/json");
                    return serde_json::from_str::<Value>(&body).expect("JSON body");
                }
                assert!(
                    Instant::now() < deadline,
                    "/readyz never answered {want}; last: {status} {body}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };

    let body = wait(200).await;
    assert_eq!(body["ready"], true);
    assert_eq!(body["checks"]["quota"]["backend"], "redis");
    assert_eq!(
        body["checks"]["upstreams"]["reachable"],
        json!(["conn_test"])
    );
    assert!(body["checks"]["policies"]["digest"].is_string());

    drop(redis);
    let body = wait(503).await;
    assert_eq!(body["not_ready"], json!(["quota"]), "{body}");
    assert_eq!(body["checks"]["quota"]["ready"], false);
    assert_eq!(get(&format!("{admin}/healthz")).await.0, 200);

    let _redis = Redis::start_on(port);
    let body = wait(200).await;
    assert_eq!(body["not_ready"], json!([]));
}

/// `/readyz` needs at least one reachable upstream.
#[tokio::test]
async fn readyz_needs_a_reachable_upstream() {
    let up = upstream();
    let (_key, hash) = new_key();
    let gw = start(&config(&up.url, &hash, ""));
    let admin = gw.admin.clone().expect("admin listener");
    let (status, _, _) = get(&format!("{admin}/readyz")).await;
    assert_eq!(status, 200);
    drop(up);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, _, body) = get(&format!("{admin}/readyz")).await;
        if status == 503 {
            let v: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(v["not_ready"], json!(["upstreams"]), "{v}");
            assert!(v["checks"]["upstreams"]["unreachable"]["conn_test"].is_string());
            break;
        }
        assert!(Instant::now() < deadline, "still ready: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
