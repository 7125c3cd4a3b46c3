//! The module layering of ARCHITECTURE.md ("Layering"), checked: each top-level module
//! of the crate may use only the modules of lower layers (and those of its own layer
//! that the table allows). A `crate::<module>` path in a file is a use of that module.
//! Test-only code (after `#[cfg(test)]`) is not counted: tests may reach anywhere.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// What each module may use; any module missing here fails the test, so a new one
/// must take its place in the table (and in ARCHITECTURE.md).
const ALLOWED: &[(&str, &[&str])] = &[
    ("mcp", &[]),
    ("digest", &[]),
    ("http_client", &[]),
    ("text", &[]),
    ("config", &["digest"]),
    ("auth", &["config", "digest"]),
    (
        "telemetry",
        &["config", "auth", "mcp", "http_client", "text"],
    ),
    ("logging", &["config", "telemetry"]),
    ("audit", &["config", "telemetry"]),
    ("quota", &["config", "telemetry"]),
    ("vault", &["config", "telemetry", "digest"]),
    ("state", &["config"]),
    (
        "upstream",
        &["config", "mcp", "telemetry", "vault", "http_client"],
    ),
    ("policy", &["config", "auth", "mcp", "telemetry", "digest"]),
    (
        "gateway",
        &[
            "mcp",
            "digest",
            "http_client",
            "text",
            "config",
            "auth",
            "telemetry",
            "audit",
            "quota",
            "vault",
            "state",
            "upstream",
            "policy",
        ],
    ),
    ("kit", &["policy", "config", "auth", "digest"]),
    ("server", &["*"]),
    ("serve", &["*"]),
    ("cli", &["*"]),
    ("util", &["*"]),
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The top-level modules and the `.rs` files of each.
fn modules() -> BTreeMap<String, Vec<PathBuf>> {
    let mut out: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for entry in std::fs::read_dir(src()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        if ["lib", "main", "layering"].contains(&name.as_str()) {
            continue;
        }
        if path.is_dir() {
            let files = out.entry(name).or_default();
            let mut stack = vec![path];
            while let Some(dir) = stack.pop() {
                for e in std::fs::read_dir(dir).unwrap() {
                    let p = e.unwrap().path();
                    if p.is_dir() {
                        stack.push(p);
                    } else if p.extension().is_some_and(|x| x == "rs") {
                        files.push(p);
                    }
                }
            }
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.entry(name).or_default().push(path);
        }
    }
    out
}

/// The crate modules a file's non-test code names (`crate::x`).
fn uses(file: &Path) -> BTreeSet<String> {
    let text = std::fs::read_to_string(file).unwrap();
    let code = match text.find("#[cfg(test)]") {
        Some(i) => &text[..i],
        None => &text,
    };
    let mut out = BTreeSet::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() {
            out.insert(name);
        }
    }
    out
}

#[test]
fn no_module_uses_a_module_above_it_in_the_layering() {
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let mut violations = Vec::new();
    for (module, files) in modules() {
        let Some(may) = allowed.get(module.as_str()) else {
            violations.push(format!("{module}: not in the layering table"));
            continue;
        };
        if may.contains(&"*") {
            continue;
        }
        for file in files {
            for used in uses(&file) {
                if used != module && !may.contains(&used.as_str()) {
                    let shown = file.strip_prefix(src()).unwrap().display().to_string();
                    violations.push(format!("{shown}: {module} uses {used}"));
                }
            }
        }
    }
    assert!(
        violations.is_empty(),
        "layering broken:\n{}",
        violations.join("\n")
    );
}

#[test]
fn the_checker_sees_a_use_and_ignores_test_code() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("m.rs");
    std::fs::write(
        &file,
        "use crate::config::Config;\nfn f() { crate::audit::now_ms(); }\n#[cfg(test)]\nmod tests { use crate::gateway; }\n",
    )
    .unwrap();
    let found: Vec<String> = uses(&file).into_iter().collect();
    assert_eq!(found, ["audit", "config"]);
}
