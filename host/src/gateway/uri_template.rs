//! Whether a URI is one a resource template (RFC 6570) expands to, so a read of an
//! unlisted URI is judged by policies with its template's metadata.
//!
//! Hand-written (no crate matches URIs against templates, only expands them): literal
//! parts must match exactly and in order; a simple expression (`{var}`) matches a
//! non-empty run without `/`, `?` or `#`; a reserved or fragment expression
//! (`{+var}`, `{#var}`) any non-empty run; a path, query or continuation expression
//! (`{/var}`, `{?x,y}`, `{&x}`, `{.x}`, `{;x}`) any run, possibly empty, starting with
//! its operator. Good enough to pick a template's metadata; the upstream decides what
//! the URI means.

/// Longest URI matched (longer ones match no template); with at most
/// [`MAX_EXPRESSIONS`] expressions per template this bounds the backtracking.
const MAX_URI: usize = 2048;
const MAX_EXPRESSIONS: usize = 8;

/// Whether `uri` matches `template`.
pub(crate) fn matches(template: &str, uri: &str) -> bool {
    if uri.len() > MAX_URI {
        return false;
    }
    let Some(parts) = parse(template) else {
        return false;
    };
    let expressions = parts
        .iter()
        .filter(|p| matches!(p, Part::Expression(_)))
        .count();
    expressions <= MAX_EXPRESSIONS && match_from(&parts, uri)
}

#[derive(Debug, PartialEq)]
enum Part<'a> {
    Literal(&'a str),
    /// An expression, by its operator (`None` for a simple one).
    Expression(Option<char>),
}

fn parse(template: &str) -> Option<Vec<Part<'_>>> {
    let mut parts = Vec::new();
    let mut rest = template;
    while !rest.is_empty() {
        match rest.find('{') {
            Some(0) => {
                let end = rest.find('}')?;
                let op = rest[1..end]
                    .chars()
                    .next()
                    .filter(|c| "+#./;?&".contains(*c));
                parts.push(Part::Expression(op));
                rest = &rest[end + 1..];
            }
            Some(i) => {
                parts.push(Part::Literal(&rest[..i]));
                rest = &rest[i..];
            }
            None => {
                parts.push(Part::Literal(rest));
                rest = "";
            }
        }
    }
    Some(parts)
}

fn match_from(parts: &[Part], uri: &str) -> bool {
    let Some((first, rest)) = parts.split_first() else {
        return uri.is_empty();
    };
    match first {
        Part::Literal(l) => uri.strip_prefix(l).is_some_and(|u| match_from(rest, u)),
        Part::Expression(op) => {
            let (may_be_empty, stops): (bool, &[char]) = match op {
                None => (false, &['/', '?', '#']),
                Some('+' | '#') => (false, &[]),
                Some(_) => (true, &[]),
            };
            if let Some(o) = op.filter(|o| !"+#".contains(*o))
                && !uri.is_empty()
                && !uri.starts_with(o)
            {
                return may_be_empty && match_from(rest, uri);
            }
            // Every split point, shortest expansion first.
            let limit = uri.find(stops).unwrap_or(uri.len());
            let start = usize::from(!may_be_empty);
            (start..=limit)
                .filter(|i| uri.is_char_boundary(*i))
                .any(|i| match_from(rest, &uri[i..]))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{MAX_URI, matches};

    #[test]
    fn simple_expressions_match_one_segment() {
        let t = "demo://resource/dynamic/text/{resourceId}";
        assert!(matches(t, "demo://resource/dynamic/text/42"));
        assert!(!matches(t, "demo://resource/dynamic/text/"));
        assert!(!matches(t, "demo://resource/dynamic/text/4/2"));
        assert!(!matches(t, "demo://resource/dynamic/blob/42"));
        assert!(matches("file:///{dir}/{name}.md", "file:///docs/readme.md"));
    }

    #[test]
    fn reserved_and_query_expressions() {
        assert!(matches("file:///{+path}", "file:///a/b/c.txt"));
        assert!(matches(
            "logs://{day}{?level,limit}",
            "logs://monday?level=warn&limit=3"
        ));
        assert!(matches("logs://{day}{?level,limit}", "logs://monday"));
        assert!(!matches("logs://{day}{?level}", "logs://monday/x"));
    }

    #[test]
    fn long_uris_and_busy_templates_match_nothing() {
        let long = format!("x://{}", "a-".repeat(MAX_URI));
        assert!(!matches("x://{a}-{b}-{c}", &long));
        let busy = "x://{a}{b}{c}{d}{e}{f}{g}{h}{i}";
        assert!(!matches(busy, "x://abcdefghi"));
    }

    #[test]
    fn a_template_without_expressions_is_a_plain_uri() {
        assert!(matches("file:///a.txt", "file:///a.txt"));
        assert!(!matches("file:///a.txt", "file:///a.txt2"));
        assert!(!matches("file:///{broken", "file:///x"));
    }
}
