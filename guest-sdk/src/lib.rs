//! Portcullis policy SDK: write a gateway policy in Rust.
//!
//! A policy is a WebAssembly component targeting the `policy` world of
//! `wit/policy.wit` (`portcullis:policy@0.2.0`). With this crate a policy is a type
//! implementing [`Policy`] (every method has a permissive default) plus one
//! [`export_policy!`] line:
//!
//! ```
//! use portcullis_policy_sdk::{
//!     Context, Manifest, Policy, RESOURCE_NOT_FOUND, Resource, TOOL_NOT_FOUND, Tool, Verdict,
//!     glob_match, item_rules_manifest,
//! };
//!
//! pub struct NoDeletes;
//!
//! impl Policy for NoDeletes {
//!     // Listing and requesting tools, resources and prompts; nothing else.
//!     fn describe(_settings: &str) -> Manifest {
//!         item_rules_manifest()
//!     }
//!
//!     fn check_tool(_settings: &str, _ctx: &Context, tool: &Tool) -> Verdict {
//!         if glob_match("delete_*", &tool.name) {
//!             TOOL_NOT_FOUND.deny(format!("tool {} is a delete tool", tool.name))
//!         } else {
//!             Verdict::Allow
//!         }
//!     }
//!
//!     fn check_resource_item(_settings: &str, _ctx: &Context, item: &Resource) -> Verdict {
//!         if glob_match("file:///etc/*", &item.uri) {
//!             RESOURCE_NOT_FOUND.deny(format!("resource {} is a system file", item.uri))
//!         } else {
//!             Verdict::Allow
//!         }
//!     }
//! }
//!
//! portcullis_policy_sdk::export_policy!(NoDeletes);
//! ```
//!
//! The gateway asks a policy about three kinds of item, each with a list filter, a
//! request check and a result hook; the trait's defaults route the filter and the
//! request check of a kind through one item check, so overriding that alone keeps
//! listing and requesting consistent:
//!
//! | kind | item check | list filter | request check | result hook |
//! |------|------------|-------------|---------------|-------------|
//! | tools | [`Policy::check_tool`] | `filter_tools` | `check_call` | `check_result` |
//! | resources, templates | [`Policy::check_resource_item`] | `filter_resources` | `check_resource` | `check_resource_contents` |
//! | prompts | [`Policy::check_prompt_item`] | `filter_prompts` | `check_prompt` | `check_prompt_result` |
//!
//! [`Policy::describe`] tells the gateway which hooks the policy implements and
//! which inputs it reads ([`manifest`], [`tool_rules_manifest`],
//! [`item_rules_manifest`]). Deny with the gateway's own not-found answers
//! ([`TOOL_NOT_FOUND`], [`RESOURCE_NOT_FOUND`], [`PROMPT_NOT_FOUND`]) to make a
//! hidden item indistinguishable from one that does not exist.
//!
//! Build with `cargo build --target wasm32-wasip2`; the `.wasm` in the target
//! directory is the component. On other targets the export is compiled out, so
//! `cargo test` exercises the same `Policy` methods natively ([`testing`] builds
//! the records), and [`log`] prints to stderr instead of calling the host.

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
    Annotations, Completion, Connector, Context, Denial, Identity, Level, Manifest, Prompt,
    PromptAction, PromptArgument, Resource, ResourceAction, ResourceAnnotations, ResourceKind,
    ResultVerdict, ServerRule, Tool, ToolConstraints, Verdict,
};
pub use glob::{glob_match, glob_match_any};
pub use hints::{
    Hint, HintFilter, HintMismatch, effective_destructive, effective_idempotent,
    effective_open_world, effective_read_only, hint_mismatch, hints_pass,
};
pub use log::log;
pub use policy::{Policy, item_rules_manifest, manifest, tool_rules_manifest};
pub use rules::{
    required_patterns, restricts_tool_names, rule_allows_tool, rule_hints, rule_matches_connector,
    tool_name_allowed,
};
pub use settings::{SettingsObject, expect_empty_settings, parse_settings, settings_value};
pub use verdict::{
    ErrorCode, INSUFFICIENT_SCOPE, INTERNAL_ERROR, PROMPT_NOT_FOUND, RESOURCE_NOT_FOUND,
    TOOL_NOT_FOUND, allow, deny,
};

pub use serde;
pub use serde_json;

#[doc(hidden)]
pub use export::Exported;
