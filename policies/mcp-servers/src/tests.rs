//! The seed document's four `mcpServers` examples against matching and
//! non-matching connectors, plus the edge cases of the declaration.

use portcullis_policy_sdk::testing::{
    annotations, connector, context, identity, rule, rule_with, tool, tool_with, tools, url_rule,
};
use portcullis_policy_sdk::{
    Annotations, Connector, Context, HintFilter, Policy, ResultVerdict, ServerRule, Tool, Verdict,
};

use super::McpServers;

const SLACK: &str = "https://mcp.slack.com/mcp";
const DISCORD: &str = "https://mcp.discord.com/mcp";
const TEAMS: &str = "https://mcp.teams.com/mcp";
const FILES: &str = "https://files.example.com/mcp";

fn ctx(declaration: Option<Vec<ServerRule>>, connector: Connector) -> Context {
    context(
        identity("actor", "org", &["mcp:call"]),
        declaration,
        connector,
    )
}

/// Names listed by filter_tools; check_call of each connector tool must agree.
fn listed(c: &Context) -> Vec<&str> {
    let v = McpServers::filter_tools("{}", c);
    assert_eq!(v.len(), c.connector.tools.len());
    for (t, v) in c.connector.tools.iter().zip(&v) {
        assert_eq!(&McpServers::check_call("{}", c, t, "{}"), v, "{}", t.name);
    }
    c.connector
        .tools
        .iter()
        .zip(&v)
        .filter(|(_, v)| v.is_allow())
        .map(|(t, _)| t.name.as_str())
        .collect()
}

/// The audit reason of the call verdict for the connector's tool `name`,
/// asserting it is `-32601 Tool not found`.
fn reason(c: &Context, name: &str) -> String {
    let t = c.connector.tools.iter().find(|t| t.name == name).unwrap();
    let v = McpServers::check_call("{}", c, t, "{}");
    let d = v.denial().unwrap_or_else(|| panic!("{name} allowed"));
    assert_eq!((d.code, d.message.as_str()), (-32601, "Tool not found"));
    d.reason.clone()
}

fn safe_read() -> Annotations {
    // readOnly, non-destructive, idempotent.
    annotations(Some(true), Some(false), Some(true), None)
}

// ---- Read-only Slack monitor -------------------------------------------------

fn slack_monitor() -> Vec<ServerRule> {
    vec![rule_with(
        SLACK,
        Some(&["list_*", "get_*", "read_*"]),
        HintFilter {
            read_only: Some(true),
            destructive: Some(false),
            idempotent: Some(true),
            open_world: None,
        },
    )]
}

fn slack_tools() -> Vec<Tool> {
    vec![
        tool_with("list_channels", safe_read()),
        tool_with("get_user", safe_read()),
        tool_with("read_messages", safe_read()),
        // Only readOnlyHint: a read-only tool is non-destructive and idempotent.
        tool_with("get_topic", annotations(Some(true), None, None, None)),
        // Within the name patterns but failing a hint.
        tool_with(
            "get_secret",
            annotations(Some(true), Some(true), Some(true), None),
        ),
        tool_with(
            "list_drafts",
            annotations(Some(true), Some(false), Some(false), None),
        ),
        tool("read_unannotated"),
        // Outside the name patterns.
        tool_with(
            "send_message",
            annotations(Some(false), Some(false), Some(false), None),
        ),
        tool_with(
            "delete_message",
            annotations(Some(false), Some(true), Some(true), None),
        ),
        tool_with("search", safe_read()),
    ]
}

#[test]
fn slack_monitor_on_matching_connector() {
    let c = ctx(
        Some(slack_monitor()),
        connector("conn_slack", SLACK, slack_tools()),
    );
    assert_eq!(
        listed(&c),
        ["list_channels", "get_user", "read_messages", "get_topic"]
    );
    assert_eq!(
        reason(&c, "get_secret"),
        "tool get_secret is outside the declared tools for connector conn_slack \
         (mcpServers[0]: destructive is true (annotated) but false is required)"
    );
    assert_eq!(
        reason(&c, "list_drafts"),
        "tool list_drafts is outside the declared tools for connector conn_slack \
         (mcpServers[0]: idempotent is false (annotated) but true is required)"
    );
    assert!(reason(&c, "read_unannotated").contains("readOnly is false (not annotated"));
    assert_eq!(
        reason(&c, "send_message"),
        "tool send_message is outside the declared tools for connector conn_slack \
         (mcpServers[0]: name not in required)"
    );
    assert!(reason(&c, "delete_message").contains("outside the declared tools"));
    assert!(reason(&c, "search").contains("name not in required"));
}

#[test]
fn slack_monitor_on_other_urls() {
    for url in [
        DISCORD,
        "https://mcp.slack.com/mcp/",
        "http://mcp.slack.com/mcp",
        "https://mcp.slack.com",
        "https://evil.example/https://mcp.slack.com/mcp",
    ] {
        let c = ctx(
            Some(slack_monitor()),
            connector("conn_x", url, slack_tools()),
        );
        assert!(listed(&c).is_empty(), "{url}");
        assert_eq!(
            reason(&c, "list_channels"),
            format!(
                "connector conn_x ({url}) not eligible under the agent's mcpServers \
                 declaration: mcpServers[0]: url `{SLACK}` does not match"
            )
        );
    }
}

#[test]
fn slack_monitor_needs_a_usable_tool_for_each_required_pattern() {
    // No read_* tool at all.
    let c = ctx(
        Some(slack_monitor()),
        connector(
            "conn_slack",
            SLACK,
            vec![
                tool_with("list_channels", safe_read()),
                tool_with("get_user", safe_read()),
            ],
        ),
    );
    assert!(listed(&c).is_empty());
    assert!(reason(&c, "get_user").ends_with("mcpServers[0]: no tool for required `read_*`"));
    // A read_* tool exists but, unannotated, fails readOnly: the connector is
    // eligible (names only) and the tool is outside the ceiling.
    let c = ctx(
        Some(slack_monitor()),
        connector(
            "conn_slack",
            SLACK,
            vec![
                tool_with("list_channels", safe_read()),
                tool_with("get_user", safe_read()),
                tool("read_messages"),
            ],
        ),
    );
    assert_eq!(listed(&c), ["list_channels", "get_user"]);
    assert!(reason(&c, "read_messages").contains("outside the declared tools"));
}

// ---- General-purpose agent ---------------------------------------------------

#[test]
fn general_purpose_agent_reaches_everything() {
    let decl = || Some(vec![url_rule("*")]);
    let all = tools(&["send_message", "delete_everything", "get_user"]);
    for url in [SLACK, DISCORD, "http://localhost:9/x", ""] {
        let c = ctx(decl(), connector("conn_any", url, all.clone()));
        assert_eq!(
            listed(&c),
            ["send_message", "delete_everything", "get_user"]
        );
    }
    // Hints are irrelevant without `tools`: annotated tools pass too.
    let c = ctx(
        decl(),
        connector(
            "conn_any",
            SLACK,
            vec![tool_with(
                "drop",
                annotations(Some(false), Some(true), Some(false), Some(true)),
            )],
        ),
    );
    assert_eq!(listed(&c), ["drop"]);
    // A connector without tools is eligible with nothing to list.
    let c = ctx(decl(), connector("conn_empty", SLACK, vec![]));
    assert!(listed(&c).is_empty());
    assert_eq!(
        McpServers::check_call("{}", &c, &tool("made_up"), "{}"),
        Verdict::Allow
    );
}

// ---- Multi-service messaging -------------------------------------------------

fn messaging() -> Vec<ServerRule> {
    let req: &[&str] = &["send_message", "post_*", "list_channels"];
    vec![rule(SLACK, Some(req)), rule(DISCORD, Some(req))]
}

fn messaging_tools() -> Vec<Tool> {
    tools(&[
        "send_message",
        "post_announcement",
        "list_channels",
        "delete_channel",
        "get_user",
        "send_message_later",
    ])
}

#[test]
fn messaging_on_slack_and_discord() {
    for (id, url) in [("conn_slack", SLACK), ("conn_discord", DISCORD)] {
        let c = ctx(Some(messaging()), connector(id, url, messaging_tools()));
        assert_eq!(
            listed(&c),
            ["send_message", "post_announcement", "list_channels"],
            "{url}"
        );
        // Only the rule for this URL matches, so only it is named.
        let i = if url == SLACK { 0 } else { 1 };
        assert_eq!(
            reason(&c, "delete_channel"),
            format!(
                "tool delete_channel is outside the declared tools for connector {id} \
                 (mcpServers[{i}]: name not in required)"
            )
        );
        assert!(reason(&c, "get_user").contains("outside the declared tools"));
        assert!(reason(&c, "send_message_later").contains("outside the declared tools"));
    }
}

#[test]
fn messaging_on_other_server_or_missing_tools() {
    let c = ctx(
        Some(messaging()),
        connector("conn_teams", TEAMS, messaging_tools()),
    );
    assert!(listed(&c).is_empty());
    assert_eq!(
        reason(&c, "send_message"),
        format!(
            "connector conn_teams ({TEAMS}) not eligible under the agent's mcpServers \
             declaration: mcpServers[0]: url `{SLACK}` does not match; \
             mcpServers[1]: url `{DISCORD}` does not match"
        )
    );
    // Slack without any post_* tool.
    let c = ctx(
        Some(messaging()),
        connector(
            "conn_slack",
            SLACK,
            tools(&["send_message", "list_channels", "postal"]),
        ),
    );
    assert!(listed(&c).is_empty());
    assert!(reason(&c, "send_message").ends_with(&format!(
        "mcpServers[0]: no tool for required `post_*`; \
         mcpServers[1]: url `{DISCORD}` does not match"
    )));
    // Discord without list_channels.
    let c = ctx(
        Some(messaging()),
        connector("conn_discord", DISCORD, tools(&["send_message", "post_x"])),
    );
    assert!(listed(&c).is_empty());
    assert!(reason(&c, "post_x").ends_with("no tool for required `list_channels`"));
}

// ---- Output-writing Actor ----------------------------------------------------

fn output_writing() -> Vec<ServerRule> {
    ["send_*", "post_*", "write_*", "log_*"]
        .iter()
        .map(|p| rule("*", Some(&[p])))
        .collect()
}

#[test]
fn output_writing_matches_any_server_with_an_output_tool() {
    let c = ctx(
        Some(output_writing()),
        connector(
            "conn_files",
            FILES,
            tools(&["write_file", "read_file", "delete_file"]),
        ),
    );
    assert_eq!(listed(&c), ["write_file"]);
    assert_eq!(
        reason(&c, "read_file"),
        "tool read_file is outside the declared tools for connector conn_files \
         (mcpServers[2]: name not in required)"
    );
    // Two rules match: the tools of both are allowed.
    let c = ctx(
        Some(output_writing()),
        connector(
            "conn_mail",
            SLACK,
            tools(&["send_email", "get_inbox", "log_event"]),
        ),
    );
    assert_eq!(listed(&c), ["send_email", "log_event"]);
    assert_eq!(
        reason(&c, "get_inbox"),
        "tool get_inbox is outside the declared tools for connector conn_mail \
         (mcpServers[0]: name not in required; mcpServers[3]: name not in required)"
    );
}

#[test]
fn output_writing_refuses_servers_without_output_tools() {
    for tools_ in [tools(&["read_file", "list_dir", "sendmail"]), vec![]] {
        let c = ctx(
            Some(output_writing()),
            connector("conn_ro", FILES, tools_.clone()),
        );
        assert!(listed(&c).is_empty());
        let v = McpServers::check_call("{}", &c, &tool("send_x"), "{}");
        let d = v.denial().unwrap();
        assert_eq!(d.code, -32601);
        assert_eq!(
            d.reason,
            "connector conn_ro (https://files.example.com/mcp) not eligible under the agent's \
             mcpServers declaration: mcpServers[0]: no tool for required `send_*`; \
             mcpServers[1]: no tool for required `post_*`; \
             mcpServers[2]: no tool for required `write_*`; \
             mcpServers[3]: no tool for required `log_*`"
        );
    }
}

// ---- Declaration edge cases --------------------------------------------------

#[test]
fn no_declaration_restricts_nothing() {
    let c = ctx(None, connector("conn_x", TEAMS, tools(&["a", "delete_b"])));
    assert_eq!(listed(&c), ["a", "delete_b"]);
    assert_eq!(
        McpServers::check_call("{}", &c, &tool("anything"), "{}"),
        Verdict::Allow
    );
}

#[test]
fn empty_declaration_makes_nothing_eligible() {
    let c = ctx(Some(vec![]), connector("conn_x", SLACK, tools(&["a"])));
    assert!(listed(&c).is_empty());
    assert_eq!(
        reason(&c, "a"),
        format!(
            "connector conn_x ({SLACK}) not eligible under the agent's mcpServers \
             declaration: the declaration is empty"
        )
    );
}

#[test]
fn empty_required_list_allows_no_tool() {
    // Lead decision: eligible (vacuously), but no tool name is allowed.
    let c = ctx(
        Some(vec![rule(SLACK, Some(&[]))]),
        connector("conn_s", SLACK, tools(&["a", "b"])),
    );
    assert!(listed(&c).is_empty());
    assert!(reason(&c, "a").contains("outside the declared tools"));
    // Another matching rule still grants its tools.
    let c = ctx(
        Some(vec![rule(SLACK, Some(&[])), rule("*", Some(&["b"]))]),
        connector("conn_s", SLACK, tools(&["a", "b"])),
    );
    assert_eq!(listed(&c), ["b"]);
}

#[test]
fn star_required_with_hints_filters_by_hints_only() {
    let ro = HintFilter {
        read_only: Some(true),
        ..HintFilter::default()
    };
    let c = ctx(
        Some(vec![rule_with("*", Some(&["*"]), ro)]),
        connector(
            "conn_s",
            SLACK,
            vec![
                tool_with("get", annotations(Some(true), None, None, None)),
                tool("set"),
            ],
        ),
    );
    assert_eq!(listed(&c), ["get"]);
    assert!(reason(&c, "set").contains("readOnly is false (not annotated, MCP default)"));
}

#[test]
fn calls_to_unlisted_names_are_judged_by_the_rules() {
    let c = ctx(
        Some(messaging()),
        connector("conn_slack", SLACK, messaging_tools()),
    );
    assert!(McpServers::check_call("{}", &c, &tool("post_new"), "{}").is_allow());
    assert!(!McpServers::check_call("{}", &c, &tool("drop_db"), "{}").is_allow());
}

#[test]
fn result_passes_and_settings_must_be_empty() {
    let c = ctx(Some(vec![]), connector("conn_x", SLACK, vec![]));
    assert_eq!(
        McpServers::check_result("{}", &c, &tool("a"), "{}"),
        ResultVerdict::Pass
    );
    assert_eq!(McpServers::validate_settings("{}"), Ok(()));
    assert_eq!(
        McpServers::validate_settings(r#"{"mcpServers": []}"#),
        Err("unknown settings key `mcpServers`".to_string())
    );
}

#[test]
fn manifest_governs_tools_only() {
    let m = McpServers::describe("{}");
    assert!(m.filter_tools && m.check_call && m.reads_connector_tools && m.deterministic);
    assert!(!m.filter_resources && !m.check_resource && !m.check_resource_contents);
    assert!(!m.filter_prompts && !m.check_prompt && !m.check_prompt_result);
    assert!(!m.check_result && !m.reads_arguments && !m.reads_tool_definitions);
}
