//! The four built-in policies end to end: the real `portcullis` binary in front of
//! real upstreams (the FastMCP server with annotated `list_*`, `get_*`, `send_*`,
//! `post_*`, `delete_*` and `write_*` tools, and the in-repo Rust upstream), checked
//! through filtered `tools/list`, guarded `tools/call`, the audit trail and
//! `portcullis agents eligible`.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use portcullis_tests::audit_lines::{wait_call_audit, wait_lines_blocking};
use portcullis_tests::cli::{agents_eligible, policy_digests};
use portcullis_tests::client::{session, sorted, sorted_names};
use portcullis_tests::fixtures::is_sha256_hex;
use portcullis_tests::rpc::{assert_call_ok, assert_rpc_error};
use portcullis_tests::upstreams::add_upstream_tools;
use portcullis_tests::{Agent, Config, Connector, Gateway, Mcp, Policy, Upstream, new_key};
use serde_json::{Value, json};

/// The FastMCP peer's tools (without `--test-tools`).
const FAST_TOOLS: [&str; 9] = [
    "list_items",
    "get_item",
    "send_message",
    "post_note",
    "delete_item",
    "delete_all",
    "write_file",
    "unannotated_tool",
    "read_config",
];

/// The in-repo upstream's built-in tools.
const RUST_TOOLS: [&str; 14] = [
    "echo",
    "sleep",
    "http_error",
    "rpc_error",
    "big",
    "progress",
    "whoami",
    "wait_for_cancel",
    "cancelled_ids",
    "add_tool",
    "delete_thing",
    "list_things",
    "unannotated",
    "count_calls",
];

/// Tools added to the "messaging" Rust upstream (unannotated).
const MSG_EXTRA: [&str; 3] = ["send_message", "post_update", "list_channels"];

/// Arguments that make each tool's call succeed.
fn args_for(tool: &str) -> Value {
    match tool {
        "get_item" | "delete_item" => json!({"id": "1"}),
        "send_message" => json!({"channel": "#general", "text": "hi"}),
        "post_note" => json!({"text": "note"}),
        "write_file" => json!({"path": "/tmp/x", "content": "y"}),
        "unannotated_tool" => json!({"x": "1"}),
        "echo" => json!({"text": "hi"}),
        _ => json!({}),
    }
}

/// Splits a merged `/mcp` list into slug -> sorted upstream tool names.
fn by_slug(names: &[String]) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for n in names {
        let (slug, tool) = n.split_once('.').expect("prefixed tool name");
        out.entry(slug.to_string())
            .or_default()
            .push(tool.to_string());
    }
    for v in out.values_mut() {
        v.sort();
    }
    out
}

/// One agent's expected view: connector id -> visible upstream tool names.
struct View<'a> {
    /// (connector id, slug, visible tools)
    rows: Vec<(&'a str, &'a str, Vec<String>)>,
}

/// Asserts an agent's merged `/mcp` tools/list, each `/mcp/<id>` list, and the
/// `portcullis agents eligible` report all equal `view`.
async fn assert_view(gw: &Gateway, key: &str, agent: &str, view: &View<'_>) {
    let mut all = session(&gw.url(None), key).await;
    let merged = by_slug(&all.tool_names().await);
    for (id, slug, tools) in &view.rows {
        let got = merged.get(*slug).cloned().unwrap_or_default();
        assert_eq!(
            &got, tools,
            "agent {agent}: tools of {id} on /mcp (merged list {merged:?})"
        );
        let mut one = session(&gw.url(Some(id)), key).await;
        assert_eq!(
            &sorted_names(&mut one).await,
            tools,
            "agent {agent}: tools on /mcp/{id}"
        );
    }
    let known: Vec<&str> = view.rows.iter().map(|(_, s, _)| *s).collect();
    for slug in merged.keys() {
        assert!(
            known.contains(&slug.as_str()),
            "agent {agent}: unexpected slug {slug}"
        );
    }
    assert_eligible(&gw.config_path, agent, view);
}

/// `portcullis agents eligible` agrees with the view.
fn assert_eligible(config: &Path, agent: &str, view: &View<'_>) {
    let report = agents_eligible(config, agent);
    for (id, _, tools) in &view.rows {
        let (verdict, listed) = report
            .get(*id)
            .unwrap_or_else(|| panic!("agents eligible {agent}: no line for {id}: {report:?}"));
        let want = if tools.is_empty() {
            "not eligible"
        } else {
            "eligible"
        };
        assert_eq!(verdict, want, "agents eligible {agent}: verdict for {id}");
        assert_eq!(listed, tools, "agents eligible {agent}: tools of {id}");
    }
}

/// Calls `name` (merged form) and expects `-32601 Tool not found`, audited 404 by `policy`.
async fn expect_hidden(gw: &Gateway, m: &mut Mcp, name: &str, policy: &str) {
    let tool = name.split_once('.').map_or(name, |(_, t)| t);
    let msg = m.call(name, args_for(tool)).await;
    assert_rpc_error(&msg, -32601, "Tool not found");
    let session = m.session.clone().unwrap_or_default();
    let rec = wait_call_audit(gw, tool, |r| {
        r.get("status").map(String::as_str) == Some("404")
            && r.get("session_id") == Some(&session)
            && r.get("policy").map(String::as_str) == Some(policy)
    })
    .await;
    assert_eq!(rec["rpc_code"], "-32601", "{rec:?}");
    assert!(is_sha256_hex(&rec["policy_digest"]), "{rec:?}");
}

async fn expect_ok(m: &mut Mcp, name: &str) {
    let tool = name.split_once('.').map_or(name, |(_, t)| t);
    let msg = m.call(name, args_for(tool)).await;
    assert_call_ok(&msg);
}

// ---------------------------------------------------------------------------
// slug-scope

#[tokio::test]
async fn slug_scope_limits_agents_to_their_connectors() {
    let fast = Upstream::fastmcp(&[]);
    let rust = Upstream::rust(&[]);
    let (k_one, h_one) = new_key();
    let (k_none, h_none) = new_key();
    let (k_all, h_all) = new_key();
    let (k_other, h_other) = new_key();
    let config = Config::new()
        .connector(Connector::new("conn_a", "Alpha", &fast.url))
        .connector(Connector::new("conn_b", "Beta", &rust.url))
        .agent(Agent::new("one", &h_one).scopes(&["mcp:call:conn_a"]))
        .agent(Agent::new("none", &h_none).scopes(&[]))
        .agent(Agent::new("all", &h_all))
        .agent(Agent::new("other", &h_other).scopes(&["mcp:read", "mcp:call:conn_", "mcp:callx"]))
        .policy(Policy::new("builtin:slug-scope"))
        .render();
    let gw = Gateway::start(&config);
    let fast_all = sorted(&FAST_TOOLS);
    let rust_all = sorted(&RUST_TOOLS);

    // mcp:call:conn_a: only conn_a's tools, everywhere.
    let view = View {
        rows: vec![
            ("conn_a", "alpha", fast_all.clone()),
            ("conn_b", "beta", vec![]),
        ],
    };
    assert_view(&gw, &k_one, "one", &view).await;
    let mut one = session(&gw.url(None), &k_one).await;
    expect_ok(&mut one, "alpha.list_items").await;
    let msg = one.call("beta.echo", json!({"text": "x"})).await;
    assert_rpc_error(&msg, -32003, "Insufficient scope");
    let rec = wait_call_audit(&gw, "echo", |r| r["status"] == "403").await;
    assert_eq!(rec["agent"], "one");
    assert_eq!(rec["connector"], "conn_b");
    assert_eq!(rec["rpc_code"], "-32003");
    assert_eq!(rec["policy"], "slug-scope");
    assert!(is_sha256_hex(&rec["policy_digest"]), "{rec:?}");
    let digests = policy_digests(&gw.config_path);
    assert_eq!(
        rec["policy_digest"], digests["slug-scope"],
        "the audit names the module digest that `config check` reports"
    );
    // The same refusal on the connector's own endpoint.
    let mut direct = session(&gw.url(Some("conn_b")), &k_one).await;
    let msg = direct.call("echo", json!({"text": "x"})).await;
    assert_rpc_error(&msg, -32003, "Insufficient scope");

    // No scopes, or only look-alike scopes: nothing at all.
    for (agent, key) in [("none", &k_none), ("other", &k_other)] {
        let view = View {
            rows: vec![("conn_a", "alpha", vec![]), ("conn_b", "beta", vec![])],
        };
        assert_view(&gw, key, agent, &view).await;
        let mut m = session(&gw.url(None), key).await;
        for name in ["alpha.list_items", "beta.echo"] {
            let msg = m.call(name, json!({"text": "x"})).await;
            assert_rpc_error(&msg, -32003, "Insufficient scope");
        }
    }

    // mcp:call: every connector.
    let view = View {
        rows: vec![("conn_a", "alpha", fast_all), ("conn_b", "beta", rust_all)],
    };
    assert_view(&gw, &k_all, "all", &view).await;
    let mut all = session(&gw.url(None), &k_all).await;
    expect_ok(&mut all, "beta.echo").await;
    expect_ok(&mut all, "alpha.get_item").await;
}

// ---------------------------------------------------------------------------
// blocklist

#[tokio::test]
async fn blocklist_hides_and_refuses_disabled_tools() {
    let fast = Upstream::fastmcp(&[]);
    let rust = Upstream::rust(&[]);
    let (key, hash) = new_key();
    let config = Config::new()
        .connector(
            Connector::new("conn_fast", "Fast", &fast.url)
                .disabled_tools(&["delete_*", "write_file"]),
        )
        .connector(Connector::new("conn_rust", "Rust", &rust.url))
        .agent(Agent::new("agent", &hash))
        .policy(Policy::new("builtin:blocklist"))
        .render();
    let gw = Gateway::start(&config);
    let kept: Vec<&str> = FAST_TOOLS
        .iter()
        .copied()
        .filter(|t| !t.starts_with("delete_") && *t != "write_file")
        .collect();
    assert_eq!(kept.len(), 6);
    let view = View {
        rows: vec![
            ("conn_fast", "fast", sorted(&kept)),
            // disabled_tools is per connector: delete_thing stays on the other one.
            ("conn_rust", "rust", sorted(&RUST_TOOLS)),
        ],
    };
    assert_view(&gw, &key, "agent", &view).await;

    let mut m = session(&gw.url(None), &key).await;
    for name in ["fast.delete_item", "fast.delete_all", "fast.write_file"] {
        expect_hidden(&gw, &mut m, name, "blocklist").await;
    }
    let mut direct = session(&gw.url(Some("conn_fast")), &key).await;
    let msg = direct.call("delete_all", json!({})).await;
    assert_rpc_error(&msg, -32601, "Tool not found");
    for name in ["fast.get_item", "fast.send_message", "rust.delete_thing"] {
        expect_ok(&mut m, name).await;
    }
}

// ---------------------------------------------------------------------------
// mcp-servers: the four examples of the source document

/// Upstreams and a gateway for the `mcpServers` examples:
/// - `conn_fast` / `conn_fast_lh`: the FastMCP server as `http://127.0.0.1:P/mcp`
///   and as `http://localhost:P/mcp` (same tools, different target URL);
/// - `conn_msg` / `conn_msg_lh`: a Rust upstream with `send_message`,
///   `post_update` and `list_channels` added, under both host names;
/// - `conn_plain`: a plain Rust upstream as `http://localhost:Q/mcp`.
struct Servers {
    _fast: Upstream,
    _msg: Upstream,
    _plain: Upstream,
    gw: Gateway,
    keys: BTreeMap<&'static str, String>,
}

const CONNS: [(&str, &str); 5] = [
    ("conn_fast", "fast"),
    ("conn_fast_lh", "fast-lh"),
    ("conn_msg", "msg"),
    ("conn_msg_lh", "msg-lh"),
    ("conn_plain", "plain"),
];

impl Servers {
    /// `agents`: (agent id, `mcp_servers = ...` line or "").
    async fn start(agents: &[(&'static str, &str)]) -> Servers {
        let fast = Upstream::fastmcp(&[]);
        let msg = Upstream::rust(&[]);
        add_upstream_tools(&msg.url, &MSG_EXTRA).await;
        let plain = Upstream::rust(&[]);
        let lh = |u: &str| u.replace("127.0.0.1", "localhost");
        let mut config = Config::new()
            .connector(Connector::new("conn_fast", "Fast", &fast.url))
            .connector(Connector::new("conn_fast_lh", "Fast LH", &lh(&fast.url)))
            .connector(Connector::new("conn_msg", "Msg", &msg.url))
            .connector(Connector::new("conn_msg_lh", "Msg LH", &lh(&msg.url)))
            .connector(Connector::new("conn_plain", "Plain", &lh(&plain.url)));
        let mut keys = BTreeMap::new();
        for (agent, decl) in agents {
            let (key, hash) = new_key();
            config = config.agent(Agent::new(agent, &hash).extra(decl));
            keys.insert(*agent, key);
        }
        let gw = Gateway::start(&config.policy(Policy::new("builtin:mcp-servers")).render());
        Servers {
            _fast: fast,
            _msg: msg,
            _plain: plain,
            gw,
            keys,
        }
    }

    /// The view from per-connector tool lists, in [`CONNS`] order.
    fn view(rows: [&[&str]; 5]) -> View<'static> {
        View {
            rows: CONNS
                .iter()
                .zip(rows)
                .map(|((id, slug), tools)| (*id, *slug, sorted(tools)))
                .collect(),
        }
    }

    async fn check(&self, agent: &str, view: &View<'_>) {
        assert_view(&self.gw, &self.keys[agent], agent, view).await;
    }

    async fn mcp(&self, agent: &str) -> Mcp {
        session(&self.gw.url(None), &self.keys[agent]).await
    }
}

fn all_msg_tools() -> Vec<&'static str> {
    RUST_TOOLS.iter().chain(MSG_EXTRA.iter()).copied().collect()
}

/// "Read-only Slack monitor": required list_*/get_*/read_*, readOnly, not
/// destructive, idempotent. With the document's URL nothing here matches; with a
/// URL pattern matching only the 127.0.0.1 connectors, the FastMCP server is
/// eligible (it has list_*, get_* and read_* tools) and `list_items`, `get_item` and
/// `read_config` pass the hints: the last two are annotated only readOnlyHint: true,
/// and a read-only tool counts as non-destructive and idempotent (the MCP schema:
/// those hints mean something only when readOnlyHint is false); the Rust upstreams
/// lack get_*/read_* tools, and the localhost URLs do not match.
#[tokio::test]
async fn mcp_servers_read_only_slack_monitor() {
    let tools = r#"tools = { required = ["list_*", "get_*", "read_*"], read_only = true, destructive = false, idempotent = true }"#;
    let seed = format!("mcp_servers = [{{ url = \"https://mcp.slack.com/mcp\", {tools} }}]");
    let local = format!("mcp_servers = [{{ url = \"http://127.0.0.1:*\", {tools} }}]");
    let s = Servers::start(&[("monitor_seed", &seed), ("monitor", &local)]).await;

    s.check("monitor_seed", &Servers::view([&[], &[], &[], &[], &[]]))
        .await;
    let mut m = s.mcp("monitor_seed").await;
    expect_hidden(&s.gw, &mut m, "fast.list_items", "mcp-servers").await;

    s.check(
        "monitor",
        &Servers::view([
            &["list_items", "get_item", "read_config"],
            &[],
            &[],
            &[],
            &[],
        ]),
    )
    .await;
    let mut m = s.mcp("monitor").await;
    for name in ["fast.list_items", "fast.get_item", "fast.read_config"] {
        expect_ok(&mut m, name).await;
    }
    for name in [
        "fast.send_message",
        "fast.delete_all",
        "fast-lh.list_items",
        "msg.list_things",
        "plain.echo",
    ] {
        expect_hidden(&s.gw, &mut m, name, "mcp-servers").await;
    }
}

/// "General-purpose agent": `{ url = "*" }` — every tool of every connector; an
/// agent with no declaration at all is not restricted either.
#[tokio::test]
async fn mcp_servers_general_purpose_agent() {
    let s = Servers::start(&[
        ("general", r#"mcp_servers = [{ url = "*" }]"#),
        ("undeclared", ""),
        ("empty", "mcp_servers = []"),
    ])
    .await;
    let everything = Servers::view([
        &FAST_TOOLS,
        &FAST_TOOLS,
        &all_msg_tools(),
        &all_msg_tools(),
        &RUST_TOOLS,
    ]);
    s.check("general", &everything).await;
    s.check("undeclared", &everything).await;
    let mut m = s.mcp("general").await;
    for name in [
        "fast.delete_item",
        "fast-lh.unannotated_tool",
        "msg.list_channels",
        "plain.echo",
    ] {
        expect_ok(&mut m, name).await;
    }
    // An empty declaration makes nothing eligible.
    s.check("empty", &Servers::view([&[], &[], &[], &[], &[]]))
        .await;
    let mut m = s.mcp("empty").await;
    expect_hidden(&s.gw, &mut m, "plain.echo", "mcp-servers").await;
}

/// "Multi-service messaging": two servers, each requiring send_message, post_* and
/// list_channels. With the document's Slack/Discord URLs nothing matches; with one
/// rule per local host name, both messaging connectors are eligible (each through
/// its own rule) and only the required tools are usable; the FastMCP server has
/// no list_channels and the plain upstream no send_message, so neither is.
#[tokio::test]
async fn mcp_servers_multi_service_messaging() {
    let req = r#"tools = { required = ["send_message", "post_*", "list_channels"] }"#;
    let seed = format!(
        "mcp_servers = [{{ url = \"https://mcp.slack.com/mcp\", {req} }}, {{ url = \"https://mcp.discord.com/mcp\", {req} }}]"
    );
    let local = format!(
        "mcp_servers = [{{ url = \"http://127.0.0.1:*/mcp\", {req} }}, {{ url = \"http://localhost:*/mcp\", {req} }}]"
    );
    let s = Servers::start(&[("messaging_seed", &seed), ("messaging", &local)]).await;

    s.check("messaging_seed", &Servers::view([&[], &[], &[], &[], &[]]))
        .await;
    let mut m = s.mcp("messaging_seed").await;
    expect_hidden(&s.gw, &mut m, "msg.send_message", "mcp-servers").await;

    s.check(
        "messaging",
        &Servers::view([&[], &[], &MSG_EXTRA, &MSG_EXTRA, &[]]),
    )
    .await;
    let mut m = s.mcp("messaging").await;
    for name in [
        "msg.send_message",
        "msg-lh.post_update",
        "msg.list_channels",
    ] {
        expect_ok(&mut m, name).await;
    }
    for name in [
        "msg.echo",
        "msg-lh.delete_thing",
        "fast.send_message",
        "fast-lh.post_note",
        "plain.echo",
    ] {
        expect_hidden(&s.gw, &mut m, name, "mcp-servers").await;
    }
}

/// "Output-writing Actor": any server with at least one send_*, post_*, write_*
/// or log_* tool; the usable tools are those within a matching rule.
#[tokio::test]
async fn mcp_servers_output_writing() {
    let decl = r#"mcp_servers = [
  { url = "*", tools = { required = ["send_*"] } },
  { url = "*", tools = { required = ["post_*"] } },
  { url = "*", tools = { required = ["write_*"] } },
  { url = "*", tools = { required = ["log_*"] } },
]"#;
    let s = Servers::start(&[("writer", decl)]).await;
    let fast = ["send_message", "post_note", "write_file"];
    let msg = ["send_message", "post_update"];
    s.check("writer", &Servers::view([&fast, &fast, &msg, &msg, &[]]))
        .await;
    let mut m = s.mcp("writer").await;
    for name in ["fast.write_file", "fast-lh.send_message", "msg.post_update"] {
        expect_ok(&mut m, name).await;
    }
    for name in [
        "fast.delete_item",
        "fast.list_items",
        "msg.list_channels",
        "plain.echo",
    ] {
        expect_hidden(&s.gw, &mut m, name, "mcp-servers").await;
    }
}

// ---------------------------------------------------------------------------
// annotation-hints

#[tokio::test]
async fn annotation_hints_read_only_profile_for_one_agent() {
    let fast = Upstream::fastmcp(&[]);
    let rust = Upstream::rust(&[]);
    let (k_reader, h_reader) = new_key();
    let (k_writer, h_writer) = new_key();
    let config = Config::new()
        .connector(Connector::new("conn_fast", "Fast", &fast.url))
        .connector(Connector::new("conn_rust", "Rust", &rust.url))
        .agent(Agent::new("reader", &h_reader))
        .agent(Agent::new("writer", &h_writer))
        .policy(
            Policy::new("builtin:annotation-hints")
                .settings("{ read_only = true, agents = [\"reader\"] }"),
        )
        .render();
    let gw = Gateway::start(&config);

    // Effective readOnlyHint true: annotated true; unannotated tools default to false.
    let view = View {
        rows: vec![
            (
                "conn_fast",
                "fast",
                sorted(&["list_items", "get_item", "read_config"]),
            ),
            ("conn_rust", "rust", sorted(&["echo", "list_things"])),
        ],
    };
    assert_view(&gw, &k_reader, "reader", &view).await;
    let mut reader = session(&gw.url(None), &k_reader).await;
    expect_ok(&mut reader, "fast.get_item").await;
    expect_ok(&mut reader, "rust.echo").await;
    for name in [
        "fast.send_message",
        "fast.unannotated_tool",
        "fast.delete_all",
        "rust.unannotated",
    ] {
        expect_hidden(&gw, &mut reader, name, "annotation-hints").await;
    }

    let view = View {
        rows: vec![
            ("conn_fast", "fast", sorted(&FAST_TOOLS)),
            ("conn_rust", "rust", sorted(&RUST_TOOLS)),
        ],
    };
    assert_view(&gw, &k_writer, "writer", &view).await;
    let mut writer = session(&gw.url(None), &k_writer).await;
    expect_ok(&mut writer, "fast.send_message").await;
    expect_ok(&mut writer, "fast.unannotated_tool").await;
}

// ---------------------------------------------------------------------------
// the chain

fn chain_config(fast: &str, h_out: &str, h_in: &str, order: [&str; 2]) -> String {
    let config = Config::new()
        .connector(Connector::new("conn_fast", "Fast", fast).disabled_tools(&["delete_*"]))
        .agent(Agent::new("outsider", h_out).scopes(&[]))
        .agent(Agent::new("insider", h_in).scopes(&["mcp:call:conn_fast"]));
    order
        .into_iter()
        .fold(config, |c, p| {
            c.policy(Policy::new(&format!("builtin:{p}")))
        })
        .render()
}

/// The first denying policy of the chain decides the code, the message and the
/// audited policy; an allowed call is audited with the whole chain and its digest.
#[tokio::test]
async fn chain_first_denial_wins() {
    let fast = Upstream::fastmcp(&[]);
    let (k_out, h_out) = new_key();
    let (k_in, h_in) = new_key();

    let gw = Gateway::start(&chain_config(
        &fast.url,
        &h_out,
        &h_in,
        ["slug-scope", "blocklist"],
    ));
    let loaded = wait_lines_blocking(&gw.proc, "policy chain loaded", 1, Duration::from_secs(5));
    let chain_digest = portcullis_tests::audit_lines::fields(&loaded[0])["digest"].clone();
    assert!(is_sha256_hex(&chain_digest), "{loaded:?}");

    let mut out = session(&gw.url(None), &k_out).await;
    // Both policies deny delete_item: slug-scope comes first.
    let msg = out.call("fast.delete_item", json!({"id": "1"})).await;
    assert_rpc_error(&msg, -32003, "Insufficient scope");
    let rec = wait_call_audit(&gw, "delete_item", |r| r["agent"] == "outsider").await;
    assert_eq!(
        (rec["status"].as_str(), rec["policy"].as_str()),
        ("403", "slug-scope")
    );
    let mut inside = session(&gw.url(None), &k_in).await;
    let msg = inside.call("fast.delete_item", json!({"id": "1"})).await;
    assert_rpc_error(&msg, -32601, "Tool not found");
    let rec = wait_call_audit(&gw, "delete_item", |r| r["agent"] == "insider").await;
    assert_eq!(
        (rec["status"].as_str(), rec["policy"].as_str()),
        ("404", "blocklist")
    );
    // Allowed: every policy allowed, recorded with the chain and its digest.
    expect_ok(&mut inside, "fast.list_items").await;
    let rec = wait_call_audit(&gw, "list_items", |r| r["status"] == "200").await;
    assert_eq!(rec["policy"], "slug-scope,blocklist", "{rec:?}");
    assert_eq!(rec["policy_digest"], chain_digest, "{rec:?}");
    drop(gw);

    // The other order: the blocklist answers first.
    let gw = Gateway::start(&chain_config(
        &fast.url,
        &h_out,
        &h_in,
        ["blocklist", "slug-scope"],
    ));
    let mut out = session(&gw.url(None), &k_out).await;
    let msg = out.call("fast.delete_item", json!({"id": "1"})).await;
    assert_rpc_error(&msg, -32601, "Tool not found");
    let rec = wait_call_audit(&gw, "delete_item", |r| r["agent"] == "outsider").await;
    assert_eq!(
        (rec["status"].as_str(), rec["policy"].as_str()),
        ("404", "blocklist")
    );
    // A tool only slug-scope refuses.
    let msg = out.call("fast.list_items", json!({})).await;
    assert_rpc_error(&msg, -32003, "Insufficient scope");
}
