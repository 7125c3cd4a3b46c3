//! The [`Policy`] trait: what a policy author implements, and the manifests a
//! policy describes itself with.
//!
//! Every method is an associated function (no `self`): the gateway instantiates a
//! policy afresh for each evaluation, so all state arrives as arguments.

use crate::{
    Context, Manifest, Prompt, PromptAction, Resource, ResourceAction, ResultVerdict, Tool,
    Verdict, settings_value,
};

/// The manifest of a deterministic policy that decides listing and calling of
/// tools from the identity, the declaration, the connector's settings and the tool
/// itself (not the connector's other tools, not the arguments, not the tool's
/// definition), with no result hook and no say over resources or prompts: what
/// most tool access rules are. Narrow or widen it with struct update syntax.
pub fn tool_rules_manifest() -> Manifest {
    Manifest {
        filter_tools: true,
        check_call: true,
        check_result: false,
        reads_connector_tools: false,
        reads_arguments: false,
        deterministic: true,
        reads_tool_definitions: false,
        filter_resources: false,
        check_resource: false,
        check_resource_contents: false,
        filter_prompts: false,
        check_prompt: false,
        check_prompt_result: false,
    }
}

/// The manifest of a deterministic policy that decides listing and requesting of
/// every kind of item (tools, resources and resource templates, prompts) from the
/// request's context and the item itself, with no result hook: what access rules
/// over the whole MCP surface are (e.g. scopes, blocklists).
///
/// ```
/// use portcullis_policy_sdk::item_rules_manifest;
///
/// let m = item_rules_manifest();
/// assert!(m.filter_tools && m.check_call && m.filter_resources && m.check_prompt);
/// assert!(m.deterministic && !m.check_result && !m.check_resource_contents);
/// ```
pub fn item_rules_manifest() -> Manifest {
    Manifest {
        filter_resources: true,
        check_resource: true,
        filter_prompts: true,
        check_prompt: true,
        ..tool_rules_manifest()
    }
}

/// The manifest of a policy that says nothing about itself: every hook, every input
/// (tool definitions included), no reuse of decisions. Start from it and switch off
/// what the policy does not do:
///
/// ```
/// use portcullis_policy_sdk::{Manifest, manifest};
///
/// let m = Manifest { check_result: false, reads_arguments: false, deterministic: true, ..manifest() };
/// assert!(m.filter_tools && m.check_call && m.reads_connector_tools);
/// assert!(m.filter_resources && m.check_prompt_result && m.reads_tool_definitions);
/// ```
pub fn manifest() -> Manifest {
    Manifest {
        filter_tools: true,
        check_call: true,
        check_result: true,
        reads_connector_tools: true,
        reads_arguments: true,
        deterministic: false,
        reads_tool_definitions: true,
        filter_resources: true,
        check_resource: true,
        check_resource_contents: true,
        filter_prompts: true,
        check_prompt: true,
        check_prompt_result: true,
    }
}

/// A Portcullis policy. Every method has a default, so implement only what the
/// policy decides about; the defaults allow everything and pass every result.
///
/// The defaults are layered, one item check per kind:
/// - [`Policy::filter_tools`] and [`Policy::check_call`] both ask
///   [`Policy::check_tool`];
/// - [`Policy::filter_resources`] and [`Policy::check_resource`] both ask
///   [`Policy::check_resource_item`];
/// - [`Policy::filter_prompts`] and [`Policy::check_prompt`] both ask
///   [`Policy::check_prompt_item`].
///
/// So a policy that only overrides an item check hides the item from its list and
/// refuses every request about it consistently.
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
    /// passes no tool list, arguments or tool definitions where they are declared
    /// unread (an empty list, `{}`, `None`), and may reuse the decisions of a
    /// deterministic policy (one that reads no clock and no randomness) for
    /// identical inputs. See [`tool_rules_manifest`] and [`item_rules_manifest`]
    /// for the usual shapes.
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

    /// Decides about one resource or resource template of `ctx.connector`, for
    /// listing and for every request about it (read, subscribe, complete).
    ///
    /// Default: allow.
    fn check_resource_item(settings: &str, ctx: &Context, item: &Resource) -> Verdict {
        let _ = (settings, ctx, item);
        Verdict::Allow
    }

    /// One verdict per item of a `resources/list` or `resources/templates/list`
    /// (all of one kind), in the same order; only allowed items are listed.
    ///
    /// Default: [`Policy::check_resource_item`] for each item.
    fn filter_resources(settings: &str, ctx: &Context, items: &[Resource]) -> Vec<Verdict> {
        items
            .iter()
            .map(|item| Self::check_resource_item(settings, ctx, item))
            .collect()
    }

    /// Decides about a read, a subscription or a completion of a resource before
    /// it is forwarded.
    ///
    /// Default: [`Policy::check_resource_item`], whatever the action.
    fn check_resource(
        settings: &str,
        ctx: &Context,
        item: &Resource,
        action: &ResourceAction,
    ) -> Verdict {
        let _ = action;
        Self::check_resource_item(settings, ctx, item)
    }

    /// Decides about a `resources/read` result (JSON text of the ReadResourceResult).
    ///
    /// Default: pass it unchanged.
    fn check_resource_contents(
        settings: &str,
        ctx: &Context,
        item: &Resource,
        result: &str,
    ) -> ResultVerdict {
        let _ = (settings, ctx, item, result);
        ResultVerdict::Pass
    }

    /// Decides about one prompt of `ctx.connector`, for listing and for every
    /// request about it (get, complete).
    ///
    /// Default: allow.
    fn check_prompt_item(settings: &str, ctx: &Context, item: &Prompt) -> Verdict {
        let _ = (settings, ctx, item);
        Verdict::Allow
    }

    /// One verdict per prompt of a `prompts/list`, in the same order; only allowed
    /// prompts are listed.
    ///
    /// Default: [`Policy::check_prompt_item`] for each prompt.
    fn filter_prompts(settings: &str, ctx: &Context, items: &[Prompt]) -> Vec<Verdict> {
        items
            .iter()
            .map(|item| Self::check_prompt_item(settings, ctx, item))
            .collect()
    }

    /// Decides about a `prompts/get` (with its arguments) or a completion of a
    /// prompt argument before it is forwarded.
    ///
    /// Default: [`Policy::check_prompt_item`], whatever the action.
    fn check_prompt(
        settings: &str,
        ctx: &Context,
        item: &Prompt,
        action: &PromptAction,
    ) -> Verdict {
        let _ = action;
        Self::check_prompt_item(settings, ctx, item)
    }

    /// Decides about a `prompts/get` result (JSON text of the GetPromptResult).
    ///
    /// Default: pass it unchanged.
    fn check_prompt_result(
        settings: &str,
        ctx: &Context,
        item: &Prompt,
        result: &str,
    ) -> ResultVerdict {
        let _ = (settings, ctx, item, result);
        ResultVerdict::Pass
    }
}
