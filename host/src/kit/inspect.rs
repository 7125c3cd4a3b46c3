//! `portcullis policy inspect MODULE`: what an auditor needs to know about a policy
//! artifact without running it — the WIT world and version it implements (read
//! from the component's imports and exports), its embedded metadata, sha256
//! digest, size, every import, and whether a signature file sits beside it.

use std::path::Path;

use serde_json::{Value, json};
use wasmparser::{Chunk, ComponentExternalKind, ComponentTypeRef, Parser, Payload};

use super::metadata::{self, Metadata};

/// The package the gateway implements and every version it loads (0.1.0 lacks
/// `describe`, so the gateway assumes the worst of it; 0.1.x governs tools only).
pub(crate) const PACKAGE: &str = "portcullis:policy";
pub(crate) const LOADS: [&str; 3] = ["0.1.0", "0.1.1", "0.2.0"];
/// The export added in 0.1.1 (required since 0.2.0): the policy's manifest.
pub(crate) const DESCRIBE: &str = "describe";
/// The world's exports every loadable version has (function names).
pub(crate) const EXPORTS: [&str; 4] = [
    "validate-settings",
    "filter-tools",
    "check-call",
    "check-result",
];
/// The exports 0.2.0 adds: resources and prompts.
pub(crate) const EXPORTS_0_2: [&str; 7] = [
    DESCRIBE,
    "filter-resources",
    "check-resource",
    "check-resource-contents",
    "filter-prompts",
    "check-prompt",
    "check-prompt-result",
];

/// One import or export of the component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Item {
    pub name: String,
    /// `instance`, `func`, `type`, `module`, `component`, `value`.
    pub kind: &'static str,
}

/// Everything `inspect` reports.
#[derive(Debug, Clone)]
pub(crate) struct Report {
    pub size: usize,
    pub sha256: String,
    pub component: bool,
    pub imports: Vec<Item>,
    pub exports: Vec<Item>,
    pub metadata: Option<Metadata>,
    /// `portcullis:policy/policy@<version>` when the exports and imports fit the
    /// world; the version comes from the `portcullis:policy/*@V` imports.
    pub world: Option<String>,
    pub version: Option<String>,
    /// Exports of the world that are missing.
    pub missing: Vec<String>,
}

impl Report {
    /// Whether this gateway can load the component's world version.
    pub(crate) fn compatible(&self) -> bool {
        self.world.is_some() && self.version.as_deref().is_some_and(|v| LOADS.contains(&v))
    }

    /// What the gateway lets the component govern: 0.1.x components see tools only.
    pub(crate) fn governs(&self) -> &'static str {
        match self.version.as_deref() {
            Some(v) if v.starts_with("0.1.") => "tools only",
            _ => "tools, resources and prompts",
        }
    }

    /// Whether the component exports `describe` (0.1.1): without it the gateway
    /// calls every hook with every input and never reuses a decision.
    pub(crate) fn describes(&self) -> bool {
        self.exports
            .iter()
            .any(|x| x.name == DESCRIBE && x.kind == "func")
    }

    pub(crate) fn to_json(&self) -> Value {
        let items = |v: &[Item]| -> Value {
            v.iter()
                .map(|i| json!({"name": i.name, "kind": i.kind}))
                .collect()
        };
        json!({
            "size": self.size,
            "sha256": self.sha256,
            "component": self.component,
            "world": self.world,
            "version": self.version,
            "compatible": self.compatible(),
            "governs": self.compatible().then(|| self.governs()),
            "missing_exports": self.missing,
            "describe": self.describes(),
            "imports": items(&self.imports),
            "exports": items(&self.exports),
            "metadata": self.metadata.as_ref().map(|m| serde_json::to_value(m).unwrap_or(Value::Null)),
        })
    }
}

fn type_ref_kind(t: &ComponentTypeRef) -> &'static str {
    match t {
        ComponentTypeRef::Module(_) => "module",
        ComponentTypeRef::Func(_) => "func",
        ComponentTypeRef::Value(_) => "value",
        ComponentTypeRef::Type(_) => "type",
        ComponentTypeRef::Instance(_) => "instance",
        ComponentTypeRef::Component(_) => "component",
    }
}

fn extern_kind(k: ComponentExternalKind) -> &'static str {
    match k {
        ComponentExternalKind::Module => "module",
        ComponentExternalKind::Func => "func",
        ComponentExternalKind::Value => "value",
        ComponentExternalKind::Type => "type",
        ComponentExternalKind::Instance => "instance",
        ComponentExternalKind::Component => "component",
    }
}

/// Reads the top-level imports and exports of a component (or core module).
fn imports_exports(bytes: &[u8]) -> anyhow::Result<(Vec<Item>, Vec<Item>)> {
    let (mut imports, mut exports) = (Vec::new(), Vec::new());
    let mut parser = Parser::new(0);
    let mut offset = 0usize;
    loop {
        let (payload, consumed) = match parser.parse(&bytes[offset..], true)? {
            Chunk::NeedMoreData(_) => anyhow::bail!("truncated WebAssembly binary"),
            Chunk::Parsed { consumed, payload } => (payload, consumed),
        };
        offset += consumed;
        match payload {
            Payload::ComponentImportSection(reader) => {
                for imp in reader {
                    let imp = imp?;
                    imports.push(Item {
                        name: imp.name.name.to_string(),
                        kind: type_ref_kind(&imp.ty),
                    });
                }
            }
            Payload::ComponentExportSection(reader) => {
                for exp in reader {
                    let exp = exp?;
                    exports.push(Item {
                        name: exp.name.name.to_string(),
                        kind: extern_kind(exp.kind),
                    });
                }
            }
            Payload::ImportSection(reader) => {
                for imp in reader.into_imports() {
                    let imp = imp?;
                    imports.push(Item {
                        name: format!("{}::{}", imp.module, imp.name),
                        kind: "core",
                    });
                }
            }
            Payload::ExportSection(reader) => {
                for exp in reader {
                    let exp = exp?;
                    exports.push(Item {
                        name: exp.name.to_string(),
                        kind: "core",
                    });
                }
            }
            Payload::CodeSectionStart { size, .. } => {
                parser.skip_section();
                offset += size as usize;
            }
            Payload::ModuleSection {
                unchecked_range, ..
            }
            | Payload::ComponentSection {
                unchecked_range, ..
            } => {
                // The parent parser has already accounted for the nested binary.
                offset = unchecked_range.end;
            }
            Payload::End(_) => break,
            _ => {}
        }
    }
    Ok((imports, exports))
}

/// Inspects component bytes.
pub(crate) fn inspect(bytes: &[u8]) -> anyhow::Result<Report> {
    let component = metadata::is_component(bytes)
        .ok_or_else(|| anyhow::anyhow!("not a WebAssembly binary (no \\0asm header)"))?;
    let (imports, exports) = imports_exports(bytes)
        .map_err(|e| anyhow::anyhow!("not a valid WebAssembly binary: {e:#}"))?;
    let metadata = metadata::read(bytes)?;
    let prefix = format!("{PACKAGE}/");
    let version = imports
        .iter()
        .chain(&exports)
        .filter_map(|i| i.name.strip_prefix(&prefix))
        .filter_map(|rest| rest.split_once('@').map(|(_, v)| v.to_string()))
        .next();
    let newer = version.as_deref().is_some_and(|v| !v.starts_with("0.1."));
    let required = EXPORTS.iter().chain(EXPORTS_0_2.iter().filter(|_| newer));
    let missing: Vec<String> = required
        .filter(|e| !exports.iter().any(|x| x.name == **e && x.kind == "func"))
        .map(|e| e.to_string())
        .collect();
    let world = (component && missing.is_empty()).then(|| {
        format!(
            "{PACKAGE}/policy@{}",
            version.as_deref().unwrap_or("(unversioned)")
        )
    });
    Ok(Report {
        size: bytes.len(),
        sha256: crate::digest::sha256_hex(bytes),
        component,
        imports,
        exports,
        metadata,
        world,
        version,
        missing,
    })
}

/// Human-readable report for the CLI.
pub(crate) fn render(path: &Path, r: &Report, signature: &str) -> String {
    let mut out = String::new();
    let mut line = |k: &str, v: String| out.push_str(&format!("{k:<11}{v}\n"));
    line("module:", path.display().to_string());
    line(
        "size:",
        format!("{} bytes ({:.1} MiB)", r.size, r.size as f64 / 1048576.0),
    );
    line("sha256:", r.sha256.clone());
    line(
        "kind:",
        if r.component {
            "component".into()
        } else {
            "core module (not a component: the gateway cannot load it)".into()
        },
    );
    match &r.world {
        Some(w) => line(
            "world:",
            format!(
                "{w} ({})",
                match (r.compatible(), r.describes()) {
                    (true, true) => format!(
                        "this gateway loads {PACKAGE}@{}: compatible; governs {}",
                        LOADS.join(", "),
                        r.governs()
                    ),
                    (true, false) => format!(
                        "this gateway loads {PACKAGE}@{}: compatible; governs {}; no `describe`, so every hook is called with every input",
                        LOADS.join(", "),
                        r.governs()
                    ),
                    (false, _) => format!(
                        "this gateway loads {PACKAGE}@{}: NOT compatible",
                        LOADS.join(", ")
                    ),
                }
            ),
        ),
        None => line(
            "world:",
            format!(
                "does not implement {PACKAGE}/policy (missing exports: {})",
                r.missing.join(", ")
            ),
        ),
    }
    line(
        "exports:",
        r.exports
            .iter()
            .map(|e| format!("{} ({})", e.name, e.kind))
            .collect::<Vec<_>>()
            .join(", "),
    );
    line("imports:", format!("{}", r.imports.len()));
    for i in &r.imports {
        out.push_str(&format!("  {} ({})\n", i.name, i.kind));
    }
    match &r.metadata {
        None => out.push_str(&format!(
            "metadata:  none (no {} section; see `portcullis policy annotate`)\n",
            metadata::SECTION
        )),
        Some(m) => {
            out.push_str(&format!("metadata:  ({} section)\n", metadata::SECTION));
            for (k, v) in m.fields() {
                out.push_str(&format!("  {:<13}{v}\n", format!("{k}:")));
            }
        }
    }
    out.push_str(&format!("{:<11}{signature}\n", "signature:"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_is_a_policy_component() {
        let bytes = crate::policy::builtin::bytes("blocklist").unwrap();
        let r = inspect(bytes).unwrap();
        assert!(r.component);
        assert_eq!(r.missing, Vec::<String>::new(), "{:?}", r.exports);
        assert_eq!(r.version.as_deref(), Some("0.2.0"), "{:?}", r.imports);
        assert_eq!(r.governs(), "tools, resources and prompts");
        assert!(r.compatible());
        assert!(r.describes());
        assert_eq!(r.world.as_deref(), Some("portcullis:policy/policy@0.2.0"));
        assert!(
            r.imports
                .iter()
                .any(|i| i.name == "portcullis:policy/types@0.2.0"),
            "{:?}",
            r.imports
        );
    }

    #[test]
    fn core_module_is_not_a_policy() {
        let r = inspect(b"\0asm\x01\x00\x00\x00").unwrap();
        assert!(!r.component);
        assert!(r.world.is_none());
        assert_eq!(r.missing.len(), 4);
    }
}
