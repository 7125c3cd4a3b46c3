//! The one pattern language of Portcullis: `*` matches zero or more characters,
//! every other character is literal, matching is case-sensitive and whole-string.

/// Whether `text` matches `pattern` (`*` = zero or more characters, all else literal).
///
/// Iterative with single-star backtracking: O(len(pattern) * len(text)) at worst,
/// no recursion. An empty pattern matches only the empty text.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    // Byte-wise is exact for UTF-8: `*` is ASCII and a literal's first byte is
    // never a continuation byte, so a star can never stop inside a character.
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    // Position after the last star seen, and the text position it resumes from.
    let mut resume: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            pi += 1;
            resume = Some((pi, ti));
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((star_pi, star_ti)) = resume {
            // Let the last star swallow one more byte and retry from there.
            pi = star_pi;
            ti = star_ti + 1;
            resume = Some((star_pi, ti));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&b| b == b'*')
}

/// Whether `text` matches at least one of `patterns`.
pub fn glob_match_any<S: AsRef<str>>(patterns: &[S], text: &str) -> bool {
    patterns.iter().any(|p| glob_match(p.as_ref(), text))
}

#[cfg(test)]
mod tests;
