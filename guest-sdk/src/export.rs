//! The bridge from the generated `Guest` trait to the user-facing [`Policy`] trait.
//!
//! [`Exported<T>`] implements `Guest` for any `T: Policy` by delegating each export,
//! and [`crate::export_policy!`] hands `Exported<T>` to the generated export macro.
//! The batched filters are held to their contract (one verdict per item): a list
//! of the wrong length is replaced by denials of every item (fail closed).

use core::marker::PhantomData;

use crate::bindings::Guest;
use crate::{
    Context, INTERNAL_ERROR, Level, Manifest, Policy, Prompt, PromptAction, Resource,
    ResourceAction, ResultVerdict, Tool, Verdict, log,
};

/// Zero-sized adapter implementing the generated `Guest` trait for a [`Policy`].
pub struct Exported<T>(PhantomData<T>);

/// `verdicts` if there is one per item, else `expected` denials: the host must
/// never guess which verdict belongs to which item. `hook` and `items` name the
/// filter and what it filters, for the log line.
fn one_per_item(hook: &str, items: &str, verdicts: Vec<Verdict>, expected: usize) -> Vec<Verdict> {
    if verdicts.len() == expected {
        return verdicts;
    }
    log(
        Level::Error,
        &format!(
            "{hook} returned {} verdicts for {expected} {items}; denying all",
            verdicts.len()
        ),
    );
    let reason = "policy returned a verdict list of the wrong length";
    vec![INTERNAL_ERROR.deny(reason); expected]
}

impl<T: Policy> Guest for Exported<T> {
    fn validate_settings(settings: String) -> Result<(), String> {
        T::validate_settings(&settings)
    }

    fn describe(settings: String) -> Manifest {
        T::describe(&settings)
    }

    fn filter_tools(settings: String, ctx: Context) -> Vec<Verdict> {
        let verdicts = T::filter_tools(&settings, &ctx);
        one_per_item("filter_tools", "tools", verdicts, ctx.connector.tools.len())
    }

    fn check_call(settings: String, ctx: Context, tool: Tool, arguments: String) -> Verdict {
        T::check_call(&settings, &ctx, &tool, &arguments)
    }

    fn check_result(settings: String, ctx: Context, tool: Tool, result: String) -> ResultVerdict {
        T::check_result(&settings, &ctx, &tool, &result)
    }

    fn filter_resources(settings: String, ctx: Context, items: Vec<Resource>) -> Vec<Verdict> {
        let verdicts = T::filter_resources(&settings, &ctx, &items);
        one_per_item("filter_resources", "resources", verdicts, items.len())
    }

    fn check_resource(
        settings: String,
        ctx: Context,
        item: Resource,
        action: ResourceAction,
    ) -> Verdict {
        T::check_resource(&settings, &ctx, &item, &action)
    }

    fn check_resource_contents(
        settings: String,
        ctx: Context,
        item: Resource,
        result: String,
    ) -> ResultVerdict {
        T::check_resource_contents(&settings, &ctx, &item, &result)
    }

    fn filter_prompts(settings: String, ctx: Context, items: Vec<Prompt>) -> Vec<Verdict> {
        let verdicts = T::filter_prompts(&settings, &ctx, &items);
        one_per_item("filter_prompts", "prompts", verdicts, items.len())
    }

    fn check_prompt(settings: String, ctx: Context, item: Prompt, action: PromptAction) -> Verdict {
        T::check_prompt(&settings, &ctx, &item, &action)
    }

    fn check_prompt_result(
        settings: String,
        ctx: Context,
        item: Prompt,
        result: String,
    ) -> ResultVerdict {
        T::check_prompt_result(&settings, &ctx, &item, &result)
    }
}

/// Exports a [`Policy`] implementation as the component's `policy` world.
///
/// Use once per policy crate, at module level: `export_policy!(MyPolicy);`.
/// The export is only emitted for `wasm32` targets; native builds (unit tests)
/// compile it out, so several policy crates can be linked into one test binary.
#[macro_export]
macro_rules! export_policy {
    ($ty:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            type __PortcullisExport = $crate::Exported<$ty>;
    $crate::bindings::export!(__PortcullisExport with_types_in $crate::bindings);
        };
    };
}

#[cfg(test)]
mod tests;
