//! Slugs: the name prefix agents see on the merged `/mcp` endpoint.
//!
//! A slug is derived from a connector's display name: lowercase ASCII letters and
//! digits, every other run of characters folded into one `-`, no leading or trailing
//! `-`. Slugs therefore never contain `.` or `_`, which is what lets the tool
//! separator (made only of those characters) split `<slug><sep><tool>` unambiguously.

/// Derives the slug of a display name, e.g. `"Everything Server"` -> `"everything-server"`.
pub(crate) fn slugify(name: &str) -> String {
    let mut slug = String::with_capacity(name.len());
    let mut pending_dash = false;
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            if pending_dash && !slug.is_empty() {
                slug.push('-');
            }
            pending_dash = false;
            slug.push(c.to_ascii_lowercase());
        } else {
            pending_dash = true;
        }
    }
    slug
}

#[cfg(test)]
mod tests {
    use super::slugify;

    #[test]
    fn sanitises_to_lowercase_dashes() {
        assert_eq!(slugify("Everything Server"), "everything-server");
        assert_eq!(slugify("  GitHub (prod) -- EU  "), "github-prod-eu");
        assert_eq!(slugify("my_slack.v2"), "my-slack-v2");
        assert_eq!(slugify("Ünïcode Tools"), "n-code-tools");
        assert_eq!(slugify("!!!"), "");
    }
}
