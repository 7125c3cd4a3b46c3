//! Agent-supplied text shown in log lines, spans and audit rows, bounded. An agent
//! chooses tool names, methods and request ids of any length; written in full, one
//! 200 KB name made every log line and audit row of its request that large. Shown
//! text is cut at [`MAX_SHOWN`] bytes (on a character boundary) with a marker that
//! says how much was left out.

use std::borrow::Cow;

/// The most bytes of one agent-supplied string shown in a log line or audit row.
pub(crate) const MAX_SHOWN: usize = 256;

/// `text` as shown: itself when short, else its first [`MAX_SHOWN`] bytes and a
/// marker (`…[+N bytes]`).
pub(crate) fn bounded(text: &str) -> Cow<'_, str> {
    bounded_to(text, MAX_SHOWN)
}

/// [`bounded`] with another limit (an audit reason, which may quote what an agent or
/// an upstream sent, gets more room than a name).
pub(crate) fn bounded_to(text: &str, max: usize) -> Cow<'_, str> {
    if text.len() <= max {
        return Cow::Borrowed(text);
    }
    let head = prefix(text, max);
    Cow::Owned(format!("{head}…[+{} bytes]", text.len() - head.len()))
}

/// The longest prefix of `text` of at most `max` bytes that ends on a character
/// boundary.
pub(crate) fn prefix(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_kept_and_long_text_is_cut_with_a_marker() {
        assert_eq!(bounded("echo"), "echo");
        let long = "x".repeat(200_000);
        let shown = bounded(&long);
        assert_eq!(shown.len(), MAX_SHOWN + "…[+199744 bytes]".len());
        assert!(shown.ends_with("…[+199744 bytes]"), "{shown}");
        assert_eq!(prefix("ééé", 3), "é");
        assert_eq!(prefix("abc", 5), "abc");
    }
}
