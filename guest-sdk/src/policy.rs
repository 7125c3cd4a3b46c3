//! The [`Policy`] trait: what a policy author implements.
//!
//! Every method is an associated function (no `self`): the gateway instantiates a
//! policy afresh for each evaluation, so all state arrives as arguments.

use crate::{Context, ResultVerdict, Tool, Verdict, settings_value};

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
