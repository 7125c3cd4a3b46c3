//! Portcullis policy SDK: write a gateway policy in Rust.
//!
//! A policy is a WebAssembly component targeting the `policy` world of
//! `wit/policy.wit`. With this crate a policy is a type implementing [`Policy`]
//! (every method has a permissive default) plus one [`export_policy!`] line:
//!
//! ```
//! use portcullis_policy_sdk::{Context, Policy, TOOL_NOT_FOUND, Tool, Verdict, glob_match};
//!
//! pub struct NoDeletes;
//!
//! impl Policy for NoDeletes {
//!     fn check_tool(_settings: &str, _ctx: &Context, tool: &Tool) -> Verdict {
//!         if glob_match("delete_*", &tool.name) {
//!             TOOL_NOT_FOUND.deny(format!("tool {} is a delete tool", tool.name))
//!         } else {
//!             Verdict::Allow
//!         }
//!     }
//! }
//!
//! portcullis_policy_sdk::export_policy!(NoDeletes);
//! ```
//!
//! Build with `cargo build --target wasm32-wasip2`; the `.wasm` in the target
//! directory is the component. On other targets the export is compiled out, so
//! `cargo test` exercises the same `Policy` methods natively, and [`log`] prints
//! to stderr instead of calling the host.

pub mod bindings;
mod export;
mod glob;
mod hints;
mod log;
mod policy;
mod rules;
mod settings;
pub mod testing;
mod verdict;

pub use bindings::portcullis::policy::types::{
    Annotations, Connector, Context, Denial, Identity, Level, Manifest, ResultVerdict, ServerRule,
    Tool, ToolConstraints, Verdict,
};
pub use glob::{glob_match, glob_match_any};
pub use hints::{
    Hint, HintFilter, HintMismatch, effective_destructive, effective_idempotent,
    effective_open_world, effective_read_only, hint_mismatch, hints_pass,
};
pub use log::log;
pub use policy::{Policy, manifest, tool_rules_manifest};
pub use rules::{
    required_patterns, restricts_tool_names, rule_allows_tool, rule_hints, rule_matches_connector,
    tool_name_allowed,
};
pub use settings::{SettingsObject, expect_empty_settings, parse_settings, settings_value};
pub use verdict::{ErrorCode, INSUFFICIENT_SCOPE, INTERNAL_ERROR, TOOL_NOT_FOUND, allow, deny};

pub use serde;
pub use serde_json;

#[doc(hidden)]
pub use export::Exported;
