//! Edge cases of [`super::glob_match`].

use super::{glob_match, glob_match_any};

#[test]
fn empty_pattern_matches_only_empty_text() {
    assert!(glob_match("", ""));
    assert!(!glob_match("", "a"));
    assert!(!glob_match("", "*"));
}

#[test]
fn lone_star_matches_everything() {
    assert!(glob_match("*", ""));
    assert!(glob_match("*", "anything at all"));
    assert!(glob_match("**", ""));
    assert!(glob_match("***", "abc"));
}

#[test]
fn exact_literal() {
    assert!(glob_match("send_message", "send_message"));
    assert!(!glob_match("send_message", "send_messages"));
    assert!(!glob_match("send_message", "send_messag"));
    assert!(!glob_match("send_message", "xsend_message"));
}

#[test]
fn case_sensitive() {
    assert!(!glob_match("Send_*", "send_message"));
    assert!(!glob_match(
        "https://MCP.slack.com/mcp",
        "https://mcp.slack.com/mcp"
    ));
}

#[test]
fn trailing_star() {
    assert!(glob_match("delete_*", "delete_"));
    assert!(glob_match("delete_*", "delete_repo"));
    assert!(!glob_match("delete_*", "delete"));
    assert!(!glob_match("delete_*", "undelete_repo"));
}

#[test]
fn leading_star() {
    assert!(glob_match("*_repo", "_repo"));
    assert!(glob_match("*_repo", "delete_repo"));
    assert!(!glob_match("*_repo", "delete_repos"));
}

#[test]
fn leading_and_trailing_star() {
    assert!(glob_match("*slack*", "slack"));
    assert!(glob_match("*slack*", "https://mcp.slack.com/mcp"));
    assert!(!glob_match("*slack*", "https://mcp.discord.com/mcp"));
}

#[test]
fn several_stars_in_order() {
    assert!(glob_match("a*b*c", "abc"));
    assert!(glob_match("a*b*c", "aXXbYYc"));
    assert!(glob_match("a*b*c", "abbbcc"));
    assert!(glob_match("a*b*c", "acbc"));
    assert!(!glob_match("a*b*c", "acb"));
    assert!(!glob_match("a*b*c", "ab"));
    assert!(!glob_match("a*b*c", "abcd"));
    assert!(!glob_match("a*b*c", "xabc"));
}

#[test]
fn backtracking_needed() {
    // The first candidate for `b` is wrong; the star must give it back.
    assert!(glob_match("*ab", "aab"));
    assert!(glob_match("*aab", "aaab"));
    assert!(glob_match("a*aa*b", "aaaab"));
    assert!(!glob_match("a*aa*b", "aab"));
}

#[test]
fn url_patterns_from_the_spec() {
    assert!(glob_match(
        "https://*.slack.com/*",
        "https://mcp.slack.com/mcp"
    ));
    assert!(!glob_match(
        "https://*.slack.com/*",
        "https://slack.com/mcp"
    ));
    assert!(!glob_match(
        "https://*.slack.com/*",
        "http://mcp.slack.com/mcp"
    ));
    assert!(glob_match(
        "https://mcp.example.com/*",
        "https://mcp.example.com/"
    ));
    assert!(!glob_match(
        "https://mcp.example.com/*",
        "https://mcp.example.com.evil.io/"
    ));
}

#[test]
fn regex_metacharacters_are_literal() {
    assert!(glob_match("a.c", "a.c"));
    assert!(!glob_match("a.c", "abc"));
    assert!(glob_match("get?", "get?"));
    assert!(!glob_match("get?", "gets"));
    assert!(glob_match("[ab]", "[ab]"));
    assert!(!glob_match("[ab]", "a"));
    assert!(glob_match("^x+$", "^x+$"));
    assert!(!glob_match("^x+$", "xx"));
    assert!(glob_match("(a|b)*", "(a|b)zzz"));
    assert!(!glob_match("(a|b)*", "a"));
    assert!(glob_match(r"a\*", r"a\anything"));
    assert!(!glob_match(r"a\*", "a*"));
    assert!(glob_match("{x}", "{x}"));
}

#[test]
fn star_in_text_is_an_ordinary_character() {
    assert!(glob_match("a*", "a*"));
    assert!(!glob_match("a", "*"));
}

#[test]
fn non_ascii_text() {
    assert!(glob_match("*é", "café"));
    assert!(glob_match("c*f*", "cåfé"));
    assert!(glob_match("*", "日本語"));
    assert!(glob_match("日*語", "日本語"));
    assert!(!glob_match("日*本", "日本語"));
}

#[test]
fn pathological_input_is_fast() {
    let text = "a".repeat(10_000);
    let pattern = format!("{}b", "*a".repeat(50));
    assert!(!glob_match(&pattern, &text));
    assert!(glob_match(&"*a".repeat(50), &text));
}

#[test]
fn any_of_several() {
    assert!(glob_match_any(&["send_*", "post_*"], "post_update"));
    assert!(!glob_match_any(&["send_*", "post_*"], "read_update"));
    assert!(!glob_match_any::<&str>(&[], "anything"));
}
