//! Guest-policy components for the tests, built once by `tests/build.rs` before the
//! tests compile (their paths are the generated constants below), and the ways tests
//! alter them: a private copy to overwrite, the same component with different bytes,
//! a file replaced the way editors save it.

use std::path::{Path, PathBuf};

include!(concat!(env!("OUT_DIR"), "/fixtures.rs"));

/// The built component of fixture package `package` (e.g. `policy-test-misbehave`).
pub fn fixture_policy(package: &str) -> PathBuf {
    let (_, path) = ALL
        .iter()
        .find(|(p, _)| *p == package)
        .unwrap_or_else(|| panic!("{package} is not a fixture built by tests/build.rs"));
    let path = PathBuf::from(path);
    assert!(
        path.exists(),
        "{} is gone: `cargo clean -p portcullis-tests` makes tests/build.rs build it again",
        path.display()
    );
    path
}

/// Whether `s` is a lowercase hex sha256 (64 hex digits).
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
}

/// The misbehave fixture component copied into `dir` (so a test may overwrite it).
pub fn misbehave_copy(dir: &Path, file: &str) -> PathBuf {
    let src = fixture_policy("policy-test-misbehave");
    let dst = dir.join(file);
    std::fs::copy(&src, &dst).expect("copy misbehave fixture");
    dst
}

/// Writes `text` to `path` by writing a sibling temp file and renaming it over
/// `path`, the way many editors save.
pub fn write_by_rename(path: &Path, text: &[u8]) {
    let tmp = path.with_extension("tmp-save");
    std::fs::write(&tmp, text).expect("write temp file");
    std::fs::rename(&tmp, path).expect("rename over file");
}

/// Hex sha256 of `bytes` (module digests are this over the component file).
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// `component` with a custom section appended: the same policy, different bytes
/// (and so a different digest).
pub fn with_custom_section(component: &[u8], tag: &str) -> Vec<u8> {
    let name = b"portcullis-test";
    let mut contents = vec![name.len() as u8];
    contents.extend_from_slice(name);
    contents.extend_from_slice(tag.as_bytes());
    assert!(
        contents.len() < 128,
        "keep the tag short (one-byte LEB128 size)"
    );
    let mut out = component.to_vec();
    out.push(0); // custom section id
    out.push(contents.len() as u8);
    out.extend_from_slice(&contents);
    out
}
