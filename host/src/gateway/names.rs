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

#[cfg(test)]
mod tests {
    use super::*;

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
