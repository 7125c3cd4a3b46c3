//! Resources, resource templates, prompts, completions, subscriptions and logging
//! through the gateway (issue 23), against server-everything over Streamable HTTP,
//! SSE and stdio, a Python MCPServer, the MCP Apps example server and the in-repo
//! upstream:
//! - the lists merged across connectors on `/mcp` (URIs qualified
//!   `portcullis://<slug>/...`, prompt names prefixed) and the upstream's own on
//!   `/mcp/<id>`, paginated towards the agent with a small page size;
//! - `resources/read` (text and blob, a template's URI), `prompts/get` with
//!   arguments and `completion/complete` for a prompt argument and a template;
//! - governance: the blocklist's `disabled_prompts` and `disabled_resources`
//!   answer as for unknown items, slug-scope refuses other connectors' items;
//! - an audit row per read, get and completion, counted against the org's quota;
//! - -32601 for a method no connector offers, and `initialize` advertising only
//!   what a connector the agent may use offers;
//! - URIs handed out in tool results and MCP Apps UI references qualified and
//!   resolvable; subscriptions and log messages for the session that asked, replayed
//!   to a restarted process; a Wasm policy guarding URIs; upstream pages followed.

use std::time::Duration;

use portcullis_tests::audit_lines::{fields, wait_audit};

use portcullis_tests::client::{session, wait_stream_message};
use portcullis_tests::procs::{everything_bin, inspector, py_client};
use portcullis_tests::{Agent, Config, Connector, Gateway, Mcp, Policy, Upstream, new_key};
use serde_json::{Value, json};

/// Every item of a list method, following `nextCursor` (at most 50 pages).
async fn list_all(m: &mut Mcp, method: &str, member: &str) -> Vec<Value> {
    let mut items = Vec::new();
    let mut cursor: Option<Value> = None;
    for _ in 0..50 {
        let params = match &cursor {
            Some(c) => json!({ "cursor": c }),
            None => json!({}),
        };
        let msg = m.request(method, params).await;
        let result = msg
            .get("result")
            .unwrap_or_else(|| panic!("{method}: {msg}"));
        items.extend(result[member].as_array().cloned().unwrap_or_default());
        match result.get("nextCursor") {
            Some(c) if !c.is_null() => cursor = Some(c.clone()),
            _ => return items,
        }
    }
    panic!("{method}: more than 50 pages");
}

fn keys(items: &[Value], key: &str) -> Vec<String> {
    items
        .iter()
        .filter_map(|i| i[key].as_str().map(String::from))
        .collect()
}

fn error_of(msg: &Value) -> (i64, String) {
    let e = msg
        .get("error")
        .unwrap_or_else(|| panic!("an error: {msg}"));
    (
        e["code"].as_i64().unwrap_or_default(),
        e["message"].as_str().unwrap_or_default().to_string(),
    )
}

/// server-everything three ways behind one gateway with the blocklist: on `conn_http`
/// the prompt `simple-prompt`, the resource `features.md` (by URI pattern) and the
/// blob template (by name) are disabled.
fn three_ways(sep: &str) -> (Gateway, String, [Upstream; 2]) {
    let http = Upstream::everything();
    let sse = Upstream::everything_sse();
    let everything = everything_bin().to_string_lossy().into_owned();
    let (key, hash) = new_key();
    let cfg = Config::new()
        .server(&format!("tool_separator = \"{sep}\"\nlist_page_size = 4"))
        .agent(Agent::new("reporter", &hash))
        .connector(Connector::stdio("conn_stdio", "Stdio", &everything, &["stdio"]))
        .connector(Connector::new("conn_sse", "Sse", &sse.url).extra("transport = \"sse\""))
        .connector(Connector::new("conn_http", "Http", &http.url).extra(
            "disabled_prompts = [\"simple-*\"]\ndisabled_resources = [\"*/features.md\", \"Dynamic Blob Resource\"]",
        ))
        .policy(Policy::new("builtin:slug-scope"))
        .policy(Policy::new("builtin:blocklist"))
        .render();
    (Gateway::start(&cfg), key, [http, sse])
}

async fn everything_items(sep: &str) {
    let (gw, key, _upstreams) = three_ways(sep);
    let mut m = session(&gw.url(None), &key).await;
    let init = m.request("initialize", json!({})).await;
    let caps = &init["result"]["capabilities"];
    for c in ["tools", "resources", "prompts", "completions"] {
        assert!(caps.get(c).is_some(), "{c} advertised: {init}");
    }

    // Lists: merged, qualified or prefixed, across pages of 4; the blocklist's items gone.
    let resources = list_all(&mut m, "resources/list", "resources").await;
    let uris = keys(&resources, "uri");
    assert_eq!(uris.len(), 3 * 7 - 1, "{uris:?}");
    for slug in ["stdio", "sse", "http"] {
        let doc = format!("portcullis://{slug}/demo://resource/static/document/architecture.md");
        assert!(uris.contains(&doc), "{doc} in {uris:?}");
    }
    assert!(
        !uris
            .iter()
            .any(|u| u.starts_with("portcullis://http/") && u.ends_with("/features.md")),
        "{uris:?}"
    );
    let templates = list_all(&mut m, "resources/templates/list", "resourceTemplates").await;
    let templates = keys(&templates, "uriTemplate");
    assert_eq!(templates.len(), 3 * 2 - 1, "{templates:?}");
    assert!(
        templates
            .contains(&"portcullis://sse/demo://resource/dynamic/blob/{resourceId}".to_string())
    );
    assert!(
        !templates
            .contains(&"portcullis://http/demo://resource/dynamic/blob/{resourceId}".to_string())
    );
    let prompts = keys(&list_all(&mut m, "prompts/list", "prompts").await, "name");
    assert_eq!(prompts.len(), 3 * 4 - 1, "{prompts:?}");
    assert!(
        prompts.contains(&format!("stdio{sep}args-prompt")),
        "{prompts:?}"
    );
    assert!(
        !prompts.contains(&format!("http{sep}simple-prompt")),
        "{prompts:?}"
    );

    // Reads: text on every transport, a blob through a template's URI; the contents
    // carry the qualified URI back.
    for slug in ["stdio", "sse", "http"] {
        let uri = format!("portcullis://{slug}/demo://resource/static/document/architecture.md");
        let msg = m.request("resources/read", json!({ "uri": uri })).await;
        let content = &msg["result"]["contents"][0];
        assert_eq!(content["uri"], uri.as_str(), "{msg}");
        assert!(
            content["text"]
                .as_str()
                .unwrap_or_default()
                .contains("Architecture"),
            "{msg}"
        );
    }
    let blob = m
        .request(
            "resources/read",
            json!({"uri": "portcullis://stdio/demo://resource/dynamic/blob/7"}),
        )
        .await;
    assert!(blob["result"]["contents"][0]["blob"].is_string(), "{blob}");

    // Prompts with arguments; completions of a prompt argument and a template variable.
    let got = m
        .request("prompts/get", json!({"name": format!("sse{sep}args-prompt"), "arguments": {"city": "Paris", "state": "IDF"}}))
        .await;
    let text = got["result"]["messages"][0]["content"]["text"]
        .as_str()
        .unwrap_or_default();
    assert!(text.contains("Paris"), "{got}");
    let done = m
        .request(
            "completion/complete",
            json!({
            "ref": {"type": "ref/prompt", "name": format!("stdio{sep}completable-prompt")},
            "argument": {"name": "department", "value": "Eng"}}),
        )
        .await;
    assert_eq!(
        done["result"]["completion"]["values"],
        json!(["Engineering"]),
        "{done}"
    );
    let done = m
        .request("completion/complete", json!({
            "ref": {"type": "ref/resource", "uri": "portcullis://http/demo://resource/dynamic/text/{resourceId}"},
            "argument": {"name": "resourceId", "value": "1"}}))
        .await;
    assert!(done["result"]["completion"]["values"].is_array(), "{done}");

    // Blocklisted items answer exactly as unknown ones.
    let hidden = m
        .request(
            "prompts/get",
            json!({"name": format!("http{sep}simple-prompt")}),
        )
        .await;
    let unknown = m
        .request(
            "prompts/get",
            json!({"name": format!("http{sep}no-such-prompt")}),
        )
        .await;
    assert_eq!(
        error_of(&hidden),
        (-32602, "Prompt not found".to_string()),
        "{hidden}"
    );
    assert_eq!(error_of(&hidden), error_of(&unknown), "{unknown}");
    let hidden = m
        .request(
            "resources/read",
            json!({"uri": "portcullis://http/demo://resource/static/document/features.md"}),
        )
        .await;
    let unknown = m
        .request("resources/read", json!({"uri": "portcullis://nowhere/x"}))
        .await;
    assert_eq!(
        error_of(&hidden),
        (-32002, "Resource not found".to_string()),
        "{hidden}"
    );
    assert_eq!(error_of(&hidden), error_of(&unknown), "{unknown}");

    // A connector's own endpoint: the upstream's URIs and names, unchanged.
    let mut own = session(&gw.url(Some("conn_sse")), &key).await;
    let uris = keys(
        &list_all(&mut own, "resources/list", "resources").await,
        "uri",
    );
    assert!(
        uris.contains(&"demo://resource/static/document/architecture.md".to_string()),
        "{uris:?}"
    );
    let prompts = keys(&list_all(&mut own, "prompts/list", "prompts").await, "name");
    assert!(
        prompts.contains(&"simple-prompt".to_string()),
        "{prompts:?}"
    );
    let msg = own
        .request(
            "resources/read",
            json!({"uri": "demo://resource/static/document/features.md"}),
        )
        .await;
    assert_eq!(
        msg["result"]["contents"][0]["uri"], "demo://resource/static/document/features.md",
        "not blocked on conn_sse: {msg}"
    );

    // One audit row per read, get and completion, with connector, item and deciding policy.
    let row = wait_audit(&gw, Duration::from_secs(10), |l| {
        let f = fields(l);
        f.get("method").map(String::as_str) == Some("resources/read")
            && f.get("connector").map(String::as_str) == Some("conn_http")
            && f.get("status").map(String::as_str) == Some("404")
    });
    let f = fields(&row);
    assert_eq!(
        f["tool"], "demo://resource/static/document/features.md",
        "{row}"
    );
    assert_eq!(f["policy"], "blocklist", "{row}");
    for method in ["prompts/get", "completion/complete"] {
        wait_audit(&gw, Duration::from_secs(10), |l| {
            let f = fields(l);
            f.get("method").map(String::as_str) == Some(method)
                && f.get("status").map(String::as_str) == Some("200")
        });
    }
}

#[tokio::test]
async fn resources_prompts_and_completions_across_three_transports_with_dot() {
    everything_items(".").await;
}

#[tokio::test]
async fn resources_prompts_and_completions_across_three_transports_with_double_underscore() {
    everything_items("__").await;
}

/// The Python `mcp` client and the Inspector CLI use the gateway's resources and
/// prompts as they would a server's.
#[test]
fn real_clients_list_read_get_and_complete() {
    let (gw, key, _upstreams) = three_ways(".");
    let url = gw.url(None);
    let listed = py_client(&url, &key, &["resources"]);
    let uris = keys(listed["resources"].as_array().expect("resources"), "uri");
    assert_eq!(uris.len(), 20, "{listed}");
    let uri = "portcullis://sse/demo://resource/static/document/structure.md";
    let read = py_client(&url, &key, &["read", uri]);
    assert_eq!(read["contents"][0]["uri"], uri, "{read}");
    let got = py_client(
        &url,
        &key,
        &["get", "stdio.args-prompt", r#"{"city": "Oslo"}"#],
    );
    assert!(
        got["messages"][0]["content"]["text"]
            .as_str()
            .unwrap_or_default()
            .contains("Oslo"),
        "{got}"
    );
    let done = py_client(
        &url,
        &key,
        &[
            "complete",
            "prompt",
            "http.completable-prompt",
            "department",
            "Sa",
        ],
    );
    assert_eq!(done["completion"]["values"], json!(["Sales"]), "{done}");
    let hidden = py_client(&url, &key, &["get", "http.simple-prompt"]);
    assert_eq!(hidden["error"]["code"], -32602, "{hidden}");

    let args = ["--method", "resources/read", "--uri", uri];
    let (code, out, err) = inspector(&url, &key, &args);
    assert_eq!(code, 0, "inspector {args:?}: {out} {err}");
    assert!(out.contains("Structure"), "{out}");
    let args = [
        "--method",
        "prompts/get",
        "--prompt-name",
        "sse.args-prompt",
        "--prompt-args",
        "city=Rome",
    ];
    let (code, out, err) = inspector(&url, &key, &args);
    assert_eq!(code, 0, "inspector {args:?}: {out} {err}");
    assert!(out.contains("Rome"), "{out}");
}

/// A connector whose upstream offers no resources or prompts: -32601 on its endpoint
/// and on `/mcp` when none does; not advertised. slug-scope keeps an agent to its
/// connectors' items, and each read counts against the org's quota.
#[tokio::test]
async fn scope_quota_and_methods_no_connector_offers() {
    let http = Upstream::everything();
    let tools_only = Upstream::rust(&[]);
    let (key, hash) = new_key();
    let (narrow_key, narrow_hash) = new_key();
    let cfg = Config::new()
        .org("acme", r#"{ calls = 3, per = "hour" }"#)
        .agent(Agent::new("reporter", &hash).org("acme"))
        .agent(Agent::new("narrow", &narrow_hash).scopes(&["mcp:call:conn_tools"]))
        .connector(Connector::new("conn_http", "Http", &http.url))
        .connector(Connector::new("conn_tools", "Tools", &tools_only.url))
        .policy(Policy::new("builtin:slug-scope"))
        .render();
    let gw = Gateway::start(&cfg);

    let mut own = session(&gw.url(Some("conn_tools")), &key).await;
    let init = own.request("initialize", json!({})).await;
    assert!(
        init["result"]["capabilities"].get("resources").is_none(),
        "{init}"
    );
    for (method, params) in [
        ("resources/list", json!({})),
        ("prompts/list", json!({})),
        ("resources/read", json!({"uri": "file:///x"})),
        ("prompts/get", json!({"name": "p"})),
        (
            "completion/complete",
            json!({"ref": {"type": "ref/prompt", "name": "p"}, "argument": {"name": "a", "value": ""}}),
        ),
    ] {
        let msg = own.request(method, params).await;
        assert_eq!(error_of(&msg).0, -32601, "{method}: {msg}");
    }

    // The narrow agent sees none of conn_http's items and may not read them; it is
    // not even told there are resources or prompts (its policies leave it none).
    let mut narrow = session(&gw.url(None), &narrow_key).await;
    let init = narrow.request("initialize", json!({})).await;
    let caps = &init["result"]["capabilities"];
    assert!(
        caps.get("resources").is_none() && caps.get("prompts").is_none(),
        "{init}"
    );
    let mut wide = session(&gw.url(None), &key).await;
    let init = wide.request("initialize", json!({})).await;
    let caps = &init["result"]["capabilities"];
    assert!(
        caps.get("resources").is_some() && caps.get("prompts").is_some(),
        "{init}"
    );
    let msg = narrow.request("resources/list", json!({})).await;
    assert_eq!(msg["result"]["resources"], json!([]), "{msg}");
    let uri = "portcullis://http/demo://resource/static/document/features.md";
    let msg = narrow
        .request("resources/read", json!({ "uri": uri }))
        .await;
    assert_eq!(error_of(&msg).0, -32003, "{msg}");
    // Scope before existence: the same for a subscription; and the connector it may
    // not use is not told its log level (none left that offers logging: -32601).
    let msg = narrow
        .request("resources/subscribe", json!({ "uri": uri }))
        .await;
    assert_eq!(error_of(&msg).0, -32003, "{msg}");
    let msg = narrow
        .request("logging/setLevel", json!({"level": "info"}))
        .await;
    assert_eq!(error_of(&msg).0, -32601, "{msg}");

    // Quota: three reads pass, the fourth is refused with the quota error.
    let mut m = session(&gw.url(None), &key).await;
    for _ in 0..3 {
        let msg = m.request("resources/read", json!({ "uri": uri })).await;
        assert!(msg.get("result").is_some(), "{msg}");
    }
    let msg = m.request("resources/read", json!({ "uri": uri })).await;
    assert_eq!(error_of(&msg).0, -32000, "{msg}");
    wait_audit(&gw, Duration::from_secs(10), |l| {
        let f = fields(l);
        f.get("method").map(String::as_str) == Some("resources/read")
            && f.get("status").map(String::as_str) == Some("429")
    });
}

/// URIs the gateway hands out inside tool results (resource links, embedded
/// resources) and a tool's MCP Apps UI reference come back qualified on `/mcp` and
/// resolve through it; on `/mcp/<id>` they are the upstream's.
#[tokio::test]
async fn uris_handed_out_by_tools_resolve_through_the_gateway() {
    let http = Upstream::everything();
    let apps =
        portcullis_tests::installed("tests/node/node_modules/.bin/mcp-server-basic-vanillajs");
    let (key, hash) = new_key();
    let cfg = Config::new()
        .agent(Agent::new("reporter", &hash))
        .connector(Connector::new("conn_http", "Http", &http.url))
        .connector(Connector::stdio(
            "conn_apps",
            "Apps",
            &apps.to_string_lossy(),
            &["--stdio"],
        ))
        .render();
    let gw = Gateway::start(&cfg);
    let mut m = session(&gw.url(None), &key).await;

    let links = m.call("http.get-resource-links", json!({"count": 2})).await;
    let uris: Vec<String> = links["result"]["content"]
        .as_array()
        .unwrap_or_else(|| panic!("{links}"))
        .iter()
        .filter(|b| b["type"] == "resource_link")
        .filter_map(|b| b["uri"].as_str().map(String::from))
        .collect();
    assert_eq!(uris.len(), 2, "{links}");
    let embedded = m
        .call(
            "http.get-resource-reference",
            json!({"resourceType": "Text", "resourceId": 3}),
        )
        .await;
    let blocks = embedded["result"]["content"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let inner = blocks
        .iter()
        .find(|b| b["type"] == "resource")
        .unwrap_or_else(|| panic!("an embedded resource: {embedded}"));
    let uris = [
        uris,
        vec![
            inner["resource"]["uri"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        ],
    ]
    .concat();
    for uri in &uris {
        assert!(uri.starts_with("portcullis://http/demo://"), "{uri}");
        let read = m.request("resources/read", json!({ "uri": uri })).await;
        assert_eq!(read["result"]["contents"][0]["uri"], uri.as_str(), "{read}");
    }

    // MCP Apps: the tool's UI reference, read through the gateway.
    let tools = m.list_tools().await;
    let app_tool = tools
        .iter()
        .find(|t| t["name"].as_str().is_some_and(|n| n.starts_with("apps.")))
        .unwrap_or_else(|| panic!("an apps tool: {tools:?}"));
    let ui = app_tool["_meta"]["ui"]["resourceUri"]
        .as_str()
        .unwrap_or_default();
    assert!(ui.starts_with("ui://apps/"), "{app_tool}");
    let page = m.request("resources/read", json!({ "uri": ui })).await;
    let content = &page["result"]["contents"][0];
    assert_eq!(content["uri"], ui, "{page}");
    assert!(
        content["mimeType"]
            .as_str()
            .unwrap_or_default()
            .starts_with("text/html"),
        "{page}"
    );
    assert!(
        content["text"].as_str().unwrap_or_default().contains("<"),
        "{page}"
    );

    let mut own = session(&gw.url(Some("conn_apps")), &key).await;
    let tools = own.list_tools().await;
    let original = tools
        .iter()
        .find_map(|t| t["_meta"]["ui"]["resourceUri"].as_str())
        .unwrap_or_default();
    assert!(
        original.starts_with("ui://") && !original.starts_with("ui://apps/"),
        "{tools:?}"
    );
}

/// Subscriptions and logging: the GET stream of the session that subscribed gets
/// `notifications/resources/updated` (qualified) from a Streamable HTTP, an HTTP+SSE
/// and a stdio upstream, another session does not; `logging/setLevel` reaches the upstream and
/// its log messages reach the agent; -32601 where the upstream offers neither.
#[tokio::test]
async fn subscriptions_and_log_messages_reach_the_session_that_asked() {
    let http = Upstream::everything();
    let sse = Upstream::everything_sse();
    let tools_only = Upstream::rust(&[]);
    let everything = everything_bin().to_string_lossy().into_owned();
    let (key, hash) = new_key();
    let cfg = Config::new()
        .agent(Agent::new("reporter", &hash))
        .connector(Connector::new("conn_http", "Http", &http.url))
        .connector(Connector::stdio(
            "conn_stdio",
            "Stdio",
            &everything,
            &["stdio"],
        ))
        .connector(Connector::new("conn_sse", "Sse", &sse.url).extra("transport = \"sse\""))
        .connector(Connector::new("conn_tools", "Tools", &tools_only.url))
        .render();
    let gw = Gateway::start(&cfg);
    let mut a = session(&gw.url(None), &key).await;
    let init = a.request("initialize", json!({})).await;
    assert_eq!(
        init["result"]["capabilities"]["resources"]["subscribe"], true,
        "{init}"
    );
    assert!(
        init["result"]["capabilities"].get("logging").is_some(),
        "{init}"
    );
    let b = session(&gw.url(None), &key).await;
    let mut a_stream = a.open_stream().await.into_body();
    let mut b_stream = b.open_stream().await.into_body();

    let mut subscribed = Vec::new();
    for slug in ["http", "stdio", "sse"] {
        let uri = format!("portcullis://{slug}/demo://resource/static/document/architecture.md");
        let msg = a
            .request("resources/subscribe", json!({ "uri": uri }))
            .await;
        assert_eq!(msg["result"], json!({}), "{msg}");
        let toggled = a
            .call(&format!("{slug}.toggle-subscriber-updates"), json!({}))
            .await;
        assert!(toggled.get("result").is_some(), "{toggled}");
        subscribed.push(uri);
    }
    for uri in &subscribed {
        let updated = wait_stream_message(&mut a_stream, Duration::from_secs(12), |m| {
            m["method"] == "notifications/resources/updated" && m["params"]["uri"] == uri.as_str()
        })
        .await;
        assert!(updated.is_some(), "no update for {uri}");
    }
    let leaked = wait_stream_message(&mut b_stream, Duration::from_millis(500), |m| {
        m["method"] == "notifications/resources/updated"
    })
    .await;
    assert!(leaked.is_none(), "another session got {leaked:?}");
    let msg = a
        .request("resources/unsubscribe", json!({ "uri": subscribed[0] }))
        .await;
    assert_eq!(msg["result"], json!({}), "{msg}");
    wait_audit(&gw, Duration::from_secs(10), |l| {
        let f = fields(l);
        f.get("method").map(String::as_str) == Some("resources/subscribe")
            && f.get("connector").map(String::as_str) == Some("conn_stdio")
            && f.get("status").map(String::as_str) == Some("200")
    });

    // Logging: every level from debug, then simulated log messages arrive.
    let msg = a
        .request("logging/setLevel", json!({"level": "debug"}))
        .await;
    assert_eq!(msg["result"], json!({}), "{msg}");
    let toggled = a.call("stdio.toggle-simulated-logging", json!({})).await;
    assert!(toggled.get("result").is_some(), "{toggled}");
    let logged = wait_stream_message(&mut a_stream, Duration::from_secs(12), |m| {
        m["method"] == "notifications/message"
            && m["params"]["data"]
                .as_str()
                .is_some_and(|d| d.contains("-level message") || d.contains("level-message"))
    })
    .await;
    assert!(logged.is_some(), "no log message");
    let msg = a
        .request("logging/setLevel", json!({"level": "loud"}))
        .await;
    assert_eq!(msg["error"]["code"], -32602, "{msg}");

    // A tools-only upstream: neither method exists there.
    let mut own = session(&gw.url(Some("conn_tools")), &key).await;
    let msg = own
        .request("resources/subscribe", json!({"uri": "file:///x"}))
        .await;
    assert_eq!(msg["error"]["code"], -32601, "{msg}");
    let msg = own
        .request("logging/setLevel", json!({"level": "info"}))
        .await;
    assert_eq!(msg["error"]["code"], -32601, "{msg}");
}

/// A Python server (the `mcp` SDK's MCPServer) with its own resources, template and
/// prompt, through `/mcp` and its own endpoint; requests are counted per method in
/// `/metrics`.
#[tokio::test]
async fn a_python_mcpserver_resources_and_prompts() {
    let py = Upstream::fastmcp(&["--items"]);
    let (key, hash) = new_key();
    let cfg = Config::new()
        .admin()
        .agent(Agent::new("reporter", &hash))
        .connector(Connector::new("conn_py", "Py", &py.url))
        .render();
    let gw = Gateway::start(&cfg);
    let mut m = session(&gw.url(None), &key).await;
    let uris = keys(
        &list_all(&mut m, "resources/list", "resources").await,
        "uri",
    );
    assert_eq!(uris, ["portcullis://py/items://catalog"], "{uris:?}");
    let templates = list_all(&mut m, "resources/templates/list", "resourceTemplates").await;
    assert_eq!(
        keys(&templates, "uriTemplate"),
        ["portcullis://py/items://item/{id}"]
    );
    let read = m
        .request(
            "resources/read",
            json!({"uri": "portcullis://py/items://item/2"}),
        )
        .await;
    let text = read["result"]["contents"][0]["text"]
        .as_str()
        .unwrap_or_default();
    assert!(text.contains("beta"), "{read}");
    let prompts = keys(&list_all(&mut m, "prompts/list", "prompts").await, "name");
    assert_eq!(prompts, ["py.summarise_item"], "{prompts:?}");
    let got = m
        .request(
            "prompts/get",
            json!({"name": "py.summarise_item", "arguments": {"id": "3"}}),
        )
        .await;
    let text = got["result"]["messages"][0]["content"]["text"]
        .as_str()
        .unwrap_or_default();
    assert!(text.contains("item 3"), "{got}");

    let mut own = session(&gw.url(Some("conn_py")), &key).await;
    let read = own
        .request("resources/read", json!({"uri": "items://catalog"}))
        .await;
    assert!(
        read["result"]["contents"][0]["text"]
            .as_str()
            .unwrap_or_default()
            .contains("gamma"),
        "{read}"
    );

    let text = gw.metrics().await;
    for method in [
        "resources/read",
        "prompts/get",
        "resources/list",
        "prompts/list",
    ] {
        let counted = text.lines().any(|l| {
            l.starts_with("portcullis_requests_total")
                && l.contains(&format!("method=\"{method}\""))
        });
        assert!(counted, "{method} in /metrics:\n{text}");
    }
}

/// A stdio server that dies forgets the session's subscriptions: the gateway starts
/// it again and replays them, so updates keep reaching the agent.
#[tokio::test]
async fn subscriptions_are_replayed_to_a_restarted_process() {
    let everything = everything_bin().to_string_lossy().into_owned();
    let (key, hash) = new_key();
    let cfg = Config::new()
        .agent(Agent::new("reporter", &hash))
        .connector(Connector::stdio(
            "conn_stdio",
            "Stdio",
            &everything,
            &["stdio"],
        ))
        .render();
    let mut gw = Gateway::start(&cfg);
    let mut m = session(&gw.url(None), &key).await;
    let before = gw.children();
    let uri = "portcullis://stdio/demo://resource/static/document/features.md";
    let msg = m
        .request("resources/subscribe", json!({ "uri": uri }))
        .await;
    assert_eq!(msg["result"], json!({}), "{msg}");
    let mine: Vec<u32> = gw
        .children()
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    assert_eq!(mine.len(), 1, "the session's own process: {mine:?}");
    let mut stream = m.open_stream().await.into_body();

    let killed = std::process::Command::new("kill")
        .args(["-KILL", &mine[0].to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    gw.proc.wait_line(Duration::from_secs(15), |l| {
        l.contains("upstream notices resumed") && l.contains("conn_stdio")
    });
    // The new process has the subscription again; updates need switching on there.
    let toggled = m.call("stdio.toggle-subscriber-updates", json!({})).await;
    assert!(toggled.get("result").is_some(), "{toggled}");
    let updated = wait_stream_message(&mut stream, Duration::from_secs(12), |msg| {
        msg["method"] == "notifications/resources/updated" && msg["params"]["uri"] == uri
    })
    .await;
    assert!(updated.is_some(), "no update after the restart");
}

/// A Wasm policy built with the guest SDK governs resources in the gateway: the
/// uri-guard fixture refuses URIs containing `secret` exactly like an unknown
/// resource, and `builtin:redact-secrets` masks a secret in a read's contents.
#[tokio::test]
async fn a_wasm_policy_guards_uris_and_redaction_covers_read_contents() {
    let up = Upstream::rust(&["--items", "3"]);
    let (key, hash) = new_key();
    let guard = portcullis_tests::fixture_policy("policy-test-uri-guard");
    let cfg = Config::new()
        .agent(Agent::new("reporter", &hash))
        .connector(Connector::new("conn_docs", "Docs", &up.url))
        .policy(Policy::file(&guard).name("uri-guard"))
        .policy(Policy::new("builtin:redact-secrets"))
        .render();
    let gw = Gateway::start(&cfg);
    let mut m = session(&gw.url(None), &key).await;
    let ok = m
        .request(
            "resources/read",
            json!({"uri": "portcullis://docs/test://doc/1"}),
        )
        .await;
    assert_eq!(ok["result"]["contents"][0]["text"], "document 1", "{ok}");
    let guarded = m
        .request(
            "resources/read",
            json!({"uri": "portcullis://docs/test://doc/secret-plan"}),
        )
        .await;
    assert_eq!(
        error_of(&guarded),
        (-32002, "Resource not found".to_string()),
        "{guarded}"
    );
    let row = wait_audit(&gw, Duration::from_secs(10), |l| {
        let f = fields(l);
        f.get("method").map(String::as_str) == Some("resources/read")
            && f.get("status").map(String::as_str) == Some("404")
    });
    assert_eq!(fields(&row)["policy"], "uri-guard", "{row}");
    let masked = m
        .request(
            "resources/read",
            json!({"uri": "portcullis://docs/test://doc/AKIAIOSFODNN7EXAMPLE"}),
        )
        .await;
    let text = masked["result"]["contents"][0]["text"]
        .as_str()
        .unwrap_or_default();
    assert!(
        text.contains("[redacted secret]") && !text.contains("AKIA"),
        "{masked}"
    );
}

/// Every upstream page of a resource list is followed, and the merged list is paged
/// again towards the agent: 25 resources served 10 a page, listed 4 a page.
#[tokio::test]
async fn every_upstream_page_of_resources_is_followed() {
    let up = Upstream::rust(&["--items", "25", "--page-size", "10"]);
    let (key, hash) = new_key();
    let cfg = Config::new()
        .server("list_page_size = 4")
        .agent(Agent::new("reporter", &hash))
        .connector(Connector::new("conn_docs", "Docs", &up.url))
        .render();
    let gw = Gateway::start(&cfg);
    let mut m = session(&gw.url(None), &key).await;
    let uris = keys(
        &list_all(&mut m, "resources/list", "resources").await,
        "uri",
    );
    assert_eq!(uris.len(), 25, "{uris:?}");
    assert_eq!(uris[24], "portcullis://docs/test://doc/24");
}
