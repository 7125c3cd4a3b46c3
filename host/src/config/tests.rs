//! Unit tests of config parsing and validation: every error names its key.

use std::path::Path;

use super::{Config, ConfigError, ModuleRef, PolicyMode};

const HASH: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("/etc/portcullis"))
}

fn err_key(text: &str) -> String {
    parse(text).expect_err("config should be refused").key
}

#[test]
fn minimal_config_gets_defaults() {
    let c = parse("").unwrap();
    assert_eq!(c.server.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(c.server.tool_separator, ".");
    assert_eq!(c.server.allowed_hosts, ["localhost", "127.0.0.1", "[::1]"]);
    assert!(c.connectors.is_empty());
}

#[test]
fn full_example_parses() {
    let c = parse(&format!(
        r#"
        [server]
        listen = "127.0.0.1:9000"
        tool_separator = "__"
        [[connectors]]
        id = "conn_everything"
        name = "Everything Server"
        target_url = "http://127.0.0.1:3001/mcp"
        disabled_tools = ["toggle-*"]
        disabled_prompts = ["internal-*"]
        disabled_resources = ["file:///secret/*", "payroll"]
        timeout_ms = 5000
        relay_requests = ["sampling"]
        [[agents]]
        id = "reporter"
        org = "acme"
        key_sha256 = "{HASH}"
        scopes = ["mcp:call"]
        mcp_servers = [{{ url = "http://127.0.0.1:*", tools = {{ required = ["echo"], read_only = true }} }}]
        [[policies]]
        module = "builtin:blocklist"
        [[policies]]
        name = "custom"
        module = "policies/custom.wasm"
        mode = "monitor"
        settings = {{ deny = ["a"] }}
        "#
    ))
    .unwrap();
    let conn = &c.connectors[0];
    assert_eq!(conn.slug, "everything-server");
    assert_eq!(conn.disabled_prompts, ["internal-*"]);
    assert_eq!(conn.disabled_resources, ["file:///secret/*", "payroll"]);
    assert_eq!(conn.timeout.as_millis(), 5000);
    assert!(conn.relay.sampling && !conn.relay.elicitation);
    assert_eq!(c.server.tool_separator, "__");
    let rules = c.agents[0].mcp_servers.as_ref().unwrap();
    assert_eq!(rules[0].tools.as_ref().unwrap().read_only, Some(true));
    assert_eq!(c.policies[0].name, "blocklist");
    assert_eq!(
        c.policies[1].module,
        ModuleRef::File("/etc/portcullis/policies/custom.wasm".into())
    );
    assert_eq!(c.policies[1].mode, PolicyMode::Monitor);
    assert_eq!(c.policies[1].settings, r#"{"deny":["a"]}"#);
}

#[test]
fn unknown_keys_are_errors_naming_the_key() {
    assert_eq!(err_key("[server]\nlisten_on = \"x\""), "listen_on");
    let e = parse("[[connectors]]\nid='a'\nname='A'\ntarget_url='http://x/'\ncredentials='env:X'")
        .unwrap_err();
    assert!(e.to_string().contains("credentials"), "{e}");
}

#[test]
fn empty_blocklist_entries_are_refused_by_key() {
    let conn = "[[connectors]]\nid='a'\nname='A'\ntarget_url='http://x/'\n";
    for key in ["disabled_tools", "disabled_prompts", "disabled_resources"] {
        assert_eq!(
            err_key(&format!("{conn}{key} = ['ok', '']")),
            format!("connectors[0].{key}[1]")
        );
    }
}

#[test]
fn semantic_errors_name_the_key() {
    assert_eq!(err_key("[server]\nlisten = 'nope'"), "server.listen");
    assert_eq!(
        err_key("[server]\ntool_separator = '-'"),
        "server.tool_separator"
    );
    assert_eq!(
        err_key("[server]\nidle_spin_us = 1001"),
        "server.idle_spin_us"
    );
    let conn = "[[connectors]]\nid='a'\nname='A'\ntarget_url='http://x/'\n";
    assert_eq!(
        err_key(&format!("{conn}max_result_bytes = 10")),
        "connectors[0].max_result_bytes"
    );
    assert_eq!(
        err_key(&format!("{conn}tool_pinning = 'later'")),
        "connectors[0].tool_pinning"
    );
    assert_eq!(
        err_key(
            "[state]
store = 'redis'"
        ),
        "state.store"
    );
    assert_eq!(
        err_key(
            "[state]
store = 'postgres'"
        ),
        "state.postgres_url"
    );
    let two = "[[connectors]]\nid='a'\nname='My Server'\ntarget_url='http://x/'\n[[connectors]]\nid='b'\nname='my server!'\ntarget_url='http://y/'";
    assert_eq!(err_key(two), "connectors[1].name");
    assert_eq!(
        err_key("[[connectors]]\nid='a'\nname='A'\ntarget_url='ftp://x/'"),
        "connectors[0].target_url"
    );
    assert_eq!(
        err_key(
            "[[connectors]]\nid='a'\nname='A'\ntarget_url='http://x/'\ncredential='plaintext-token'"
        ),
        "connectors[0].credential"
    );
    assert_eq!(
        err_key(
            "[[connectors]]\nid='a'\nname='A'\ntarget_url='http://x/'\ncredential='env:PORTCULLIS_SURELY_UNSET_VAR'"
        ),
        "connectors[0].credential"
    );
    let e = parse(
        "[[connectors]]\nid='a'\nname='A'\ntarget_url='http://x/'\nrelay_requests=['elicitation','roots']",
    )
    .unwrap_err();
    assert_eq!(e.key, "connectors[0].relay_requests[1]");
    assert!(e.reason.contains("\"roots\" is not one of"), "{e}");
    assert_eq!(
        err_key("[[agents]]\nid='a'\norg='o'\nkey_sha256='abc'"),
        "agents[0].key_sha256"
    );
    assert_eq!(
        err_key("[[policies]]\nmodule='builtin:nope'"),
        "policies[0].module"
    );
    assert_eq!(
        err_key("[[policies]]\nmodule='builtin:blocklist'\nmode='audit'"),
        "policies[0].mode"
    );
    assert_eq!(
        err_key("[quota]\nbackend='redis'\nredis_url='redis://127.0.0.1/0'\nreserve=20000"),
        "quota.reserve"
    );
}
