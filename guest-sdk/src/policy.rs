//! The [`Policy`] trait: what a policy author implements.
//!
//! Every method is an associated function (no `self`): the gateway instantiates a
//! policy afresh for each evaluation, so all state arrives as arguments.

use crate::{Context, Manifest, ResultVerdict, Tool, Verdict, settings_value};

/// The manifest of a deterministic policy that decides listing and calling from the
/// identity, the declaration, the connector's settings and the tool itself (not the
/// connector's other tools, not the arguments), with no post-call hook: what most
/// access rules are. Narrow or widen it with struct update syntax.
pub fn tool_rules_manifest() -> Manifest {
    Manifest {
        filter_tools: true,
        check_call: true,
        check_result: false,
        reads_connector_tools: false,
        reads_arguments: false,
        deterministic: true,
    }
}

/// The manifest of a policy that says nothing about itself: every hook, every input,
/// no reuse of decisions. Start from it and switch off what the policy does not do:
///
/// ```
/// use portcullis_policy_sdk::{Manifest, manifest};
///
/// let m = Manifest { check_result: false, reads_arguments: false, deterministic: true, ..manifest() };
/// assert!(m.filter_tools && m.check_call && m.reads_connector_tools);
/// ```
pub fn manifest() -> Manifest {
    Manifest {
        filter_tools: true,
        check_call: true,
        check_result: true,
        reads_connector_tools: true,
        reads_arguments: true,
        deterministic: false,
    }
}

/// A Portcullis policy. Every method has a default, so implement only what the
/// policy decides about; the defaults allow everything and pass every result.
///
/// The defaults are layered: [`Policy::filter_tools`] and [`Policy::check_call`]
/// both ask [`Policy::check_tool`], so a policy that only overrides `check_tool`
/// hides a tool from `tools/list` and refuses calls to it consistently.
pub trait Policy {
    /// Checks the operator's settings (JSON text) when the policy is loaded.
    /// An `Err` refuses the policy with that message.
    ///
    /// Default: any JSON value (empty text counts as `{}`).
    fn validate_settings(settings: &str) -> Result<(), String> {
        settings_value(settings).map(|_| ())
    }

    /// What this policy implements and reads, asked once at load (after
    /// [`Policy::validate_settings`]). The gateway skips hooks declared absent,
    /// passes no tool list or arguments where they are declared unread (an empty
    /// list, `{}`), and may reuse the decisions of a deterministic policy (one that
    /// reads no clock and no randomness) for identical inputs.
    ///
    /// Default: [`manifest()`] (everything, no reuse): always correct, never fast.
    fn describe(settings: &str) -> Manifest {
        let _ = settings;
        manifest()
    }

    /// Decides about one tool of `ctx.connector`, for both listing and calling.
    ///
    /// Default: allow.
    fn check_tool(settings: &str, ctx: &Context, tool: &Tool) -> Verdict {
        let _ = (settings, ctx, tool);
        Verdict::Allow
    }

    /// One verdict per tool of `ctx.connector.tools`, in the same order; only
    /// allowed tools are listed to the agent.
    ///
    /// Default: [`Policy::check_tool`] for each tool.
    fn filter_tools(settings: &str, ctx: &Context) -> Vec<Verdict> {
        ctx.connector
            .tools
            .iter()
            .map(|tool| Self::check_tool(settings, ctx, tool))
            .collect()
    }

    /// Decides about a `tools/call` before it is forwarded. `arguments` is the
    /// JSON text of the call's `arguments` object.
    ///
    /// Default: [`Policy::check_tool`], ignoring the arguments.
    fn check_call(settings: &str, ctx: &Context, tool: &Tool, arguments: &str) -> Verdict {
        let _ = arguments;
        Self::check_tool(settings, ctx, tool)
    }

    /// Decides about a `tools/call` result (JSON text of the CallToolResult).
    ///
    /// Default: pass it unchanged.
    fn check_result(settings: &str, ctx: &Context, tool: &Tool, result: &str) -> ResultVerdict {
        let _ = (settings, ctx, tool, result);
        ResultVerdict::Pass
    }
}
