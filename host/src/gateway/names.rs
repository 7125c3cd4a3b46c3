//! Tool names on the merged `/mcp` endpoint: `<slug><separator><upstream name>`.
//! Slugs never contain the separator's characters (`.`/`_`), so the first
//! occurrence of the separator always ends the slug.

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

#[cfg(test)]
mod tests {
    use super::*;

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
