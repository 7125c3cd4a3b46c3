//! Names and URIs on the merged `/mcp` endpoint.
//!
//! Tools and prompts are `<slug><separator><upstream name>`. Slugs never contain the
//! separator's characters (`.`/`_`), so the first occurrence of the separator always
//! ends the slug.
//!
//! Resource URIs and URI templates are always qualified with the connector's slug,
//! so each routes to exactly one connector whoever else lists the same URI:
//! `portcullis://<slug>/<upstream URI>`, the upstream URI kept verbatim (query,
//! fragment, template expressions and all). `ui://` URIs (MCP Apps user interfaces,
//! which hosts recognise by that scheme) keep it: `ui://<slug>/<rest>`. On
//! `/mcp/<id>` URIs are the upstream's, unchanged.
//!
//! URIs the gateway hands out inside results are qualified the same way
//! ([`qualify_result`], [`qualify_tool_meta`]), so they resolve through it.

/// `slug` + `sep` + `tool`.
pub(crate) fn prefixed(slug: &str, sep: &str, tool: &str) -> String {
    let mut name = String::with_capacity(slug.len() + sep.len() + tool.len());
    name.push_str(slug);
    name.push_str(sep);
    name.push_str(tool);
    name
}

/// Splits a prefixed name into `(slug, upstream tool name)`.
pub(crate) fn split<'a>(name: &'a str, sep: &str) -> Option<(&'a str, &'a str)> {
    let (slug, tool) = name.split_once(sep)?;
    (!slug.is_empty() && !tool.is_empty()).then_some((slug, tool))
}

/// The scheme of qualified URIs.
const SCHEME: &str = "portcullis://";
/// The MCP Apps scheme, kept when qualifying.
const UI_SCHEME: &str = "ui://";

/// The URI (or URI template) agents see on `/mcp` for `uri` of connector `slug`.
pub(crate) fn qualify(slug: &str, uri: &str) -> String {
    match uri.strip_prefix(UI_SCHEME) {
        Some(rest) => format!("{UI_SCHEME}{slug}/{rest}"),
        None => format!("{SCHEME}{slug}/{uri}"),
    }
}

/// Splits a qualified URI into `(slug, upstream URI)`; `None` if it is not one.
pub(crate) fn unqualify(uri: &str) -> Option<(&str, std::borrow::Cow<'_, str>)> {
    if let Some(rest) = uri.strip_prefix(SCHEME) {
        let (slug, upstream) = rest.split_once('/')?;
        return (!slug.is_empty() && !upstream.is_empty()).then_some((slug, upstream.into()));
    }
    let rest = uri.strip_prefix(UI_SCHEME)?;
    let (slug, path) = rest.split_once('/')?;
    (!slug.is_empty() && !path.is_empty()).then(|| (slug, format!("{UI_SCHEME}{path}").into()))
}

/// A result with the URIs it hands out qualified: `contents[].uri`
/// (`resources/read`), and in `content[]` (`tools/call`) and `messages[].content`
/// (`prompts/get`) a `resource_link`'s `uri` and an embedded resource's
/// `resource.uri`. `None` when there is nothing to qualify (the result is then
/// forwarded byte for byte); a result that does not parse is left alone.
pub(crate) fn qualify_result(text: &str, slug: &str) -> Option<String> {
    if !text.contains("\"uri\"") {
        return None;
    }
    let mut value: serde_json::Value = serde_json::from_str(text).ok()?;
    let mut changed = false;
    let mut qualify_in = |holder: &mut serde_json::Value| {
        if let Some(uri) = holder.get_mut("uri")
            && let Some(u) = uri.as_str()
        {
            *uri = serde_json::Value::String(qualify(slug, u));
            changed = true;
        }
    };
    if let Some(contents) = value.get_mut("contents").and_then(|c| c.as_array_mut()) {
        contents.iter_mut().for_each(&mut qualify_in);
    }
    let object = value.as_object_mut()?;
    let mut blocks: Vec<&mut serde_json::Value> = Vec::new();
    for (key, member) in object.iter_mut() {
        match (key.as_str(), member.as_array_mut()) {
            ("content", Some(content)) => blocks.extend(content.iter_mut()),
            ("messages", Some(messages)) => {
                blocks.extend(messages.iter_mut().filter_map(|m| m.get_mut("content")))
            }
            _ => {}
        }
    }
    for block in blocks {
        match block.get("type").and_then(|t| t.as_str()) {
            Some("resource_link") => qualify_in(block),
            Some("resource") => {
                if let Some(resource) = block.get_mut("resource") {
                    qualify_in(resource);
                }
            }
            _ => {}
        }
    }
    changed.then(|| value.to_string())
}

/// A tool's `_meta` reference to its MCP Apps user interface (`ui.resourceUri`,
/// and the older `ui/resourceUri`), qualified.
pub(crate) fn qualify_tool_meta(tool: &mut serde_json::Value, slug: &str) {
    let Some(meta) = tool.get_mut("_meta").and_then(|m| m.as_object_mut()) else {
        return;
    };
    let rewrite = |uri: &mut serde_json::Value| {
        if let Some(u) = uri.as_str() {
            *uri = serde_json::Value::String(qualify(slug, u));
        }
    };
    if let Some(uri) = meta.get_mut("ui").and_then(|ui| ui.get_mut("resourceUri")) {
        rewrite(uri);
    }
    if let Some(uri) = meta.get_mut("ui/resourceUri") {
        rewrite(uri);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    #[test]
    fn handed_out_uris_are_qualified_in_every_result_shape() {
        let text = json!({
            "contents": [{"uri": "file:///a.txt", "text": "x"}],
            "content": [
                {"type": "resource_link", "uri": "file:///b", "name": "b"},
                {"type": "resource", "resource": {"uri": "ui://app/x", "text": "y"}},
                {"type": "text", "text": "has a uri in it", "uri": "not a link"}
            ],
            "messages": [{"role": "user", "content": {"type": "resource_link", "uri": "file:///c", "name": "c"}}],
            "structuredContent": {"uri": "kept"}
        })
        .to_string();
        let v: Value = serde_json::from_str(&qualify_result(&text, "docs").unwrap()).unwrap();
        assert_eq!(v["contents"][0]["uri"], "portcullis://docs/file:///a.txt");
        assert_eq!(v["content"][0]["uri"], "portcullis://docs/file:///b");
        assert_eq!(v["content"][1]["resource"]["uri"], "ui://docs/app/x");
        assert_eq!(v["content"][2]["uri"], "not a link");
        assert_eq!(
            v["messages"][0]["content"]["uri"],
            "portcullis://docs/file:///c"
        );
        assert_eq!(v["structuredContent"]["uri"], "kept");
        assert_eq!(
            qualify_result(r#"{"content":[{"type":"text","text":"hi"}]}"#, "d"),
            None
        );
        assert_eq!(
            qualify_result(r#"{"content":[{"type":"text","uri":"x"}]}"#, "d"),
            None
        );
    }

    #[test]
    fn a_tools_ui_reference_is_qualified_in_both_spellings() {
        let mut tool = json!({"name": "t", "_meta": {"ui": {"resourceUri": "ui://t/app.html", "x": 1}, "ui/resourceUri": "ui://t/app.html"}});
        qualify_tool_meta(&mut tool, "apps");
        assert_eq!(tool["_meta"]["ui"]["resourceUri"], "ui://apps/t/app.html");
        assert_eq!(tool["_meta"]["ui"]["x"], 1);
        assert_eq!(tool["_meta"]["ui/resourceUri"], "ui://apps/t/app.html");
        let mut plain = json!({"name": "t"});
        qualify_tool_meta(&mut plain, "apps");
        assert_eq!(plain, json!({"name": "t"}));
    }

    #[test]
    fn uris_round_trip_verbatim() {
        for uri in [
            "file:///a%20b/c.txt?x=1#frag",
            "demo://resource/static/document/architecture.md",
            "urn:isbn:0451450523",
            "file:///logs/{day}{?level}",
            "ui://get-time/app.html",
        ] {
            let q = qualify("docs-server", uri);
            let (slug, back) = unqualify(&q).expect("qualified");
            assert_eq!((slug, back.as_ref()), ("docs-server", uri), "{q}");
        }
        assert_eq!(qualify("d", "ui://x/y"), "ui://d/x/y");
        assert_eq!(
            qualify("d", "https://e.x/y"),
            "portcullis://d/https://e.x/y"
        );
        assert_eq!(unqualify("file:///a"), None);
        assert_eq!(unqualify("portcullis://nosuffix"), None);
        assert_eq!(unqualify("portcullis:///x"), None);
    }

    #[test]
    fn round_trips_with_both_separators() {
        for sep in [".", "__"] {
            let n = prefixed("everything-server", sep, "get_tiny.image");
            assert_eq!(
                split(&n, sep),
                Some(("everything-server", "get_tiny.image"))
            );
        }
        assert_eq!(split("noprefix", "."), None);
        assert_eq!(split(".tool", "."), None);
        assert_eq!(split("slug.", "."), None);
        assert_eq!(split("a__b__c", "__"), Some(("a", "b__c")));
    }
}
