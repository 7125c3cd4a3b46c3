//! The bridge from the generated `Guest` trait to the user-facing [`Policy`] trait.
//!
//! [`Exported<T>`] implements `Guest` for any `T: Policy` by delegating each export,
//! and [`crate::export_policy!`] hands `Exported<T>` to the generated export macro.

use core::marker::PhantomData;

use crate::bindings::Guest;
use crate::{Context, INTERNAL_ERROR, Level, Manifest, Policy, ResultVerdict, Tool, Verdict, log};

/// Zero-sized adapter implementing the generated `Guest` trait for a [`Policy`].
pub struct Exported<T>(PhantomData<T>);

impl<T: Policy> Guest for Exported<T> {
    fn validate_settings(settings: String) -> Result<(), String> {
        T::validate_settings(&settings)
    }

    fn describe(settings: String) -> Manifest {
        T::describe(&settings)
    }

    fn filter_tools(settings: String, ctx: Context) -> Vec<Verdict> {
        let mut verdicts = T::filter_tools(&settings, &ctx);
        let expected = ctx.connector.tools.len();
        if verdicts.len() != expected {
            // The contract is one verdict per tool; fail closed rather than let
            // the host guess which verdict belongs to which tool.
            log(
                Level::Error,
                &format!(
                    "filter_tools returned {} verdicts for {expected} tools; denying all",
                    verdicts.len()
                ),
            );
            let reason = "policy returned a verdict list of the wrong length";
            verdicts = vec![INTERNAL_ERROR.deny(reason); expected];
        }
        verdicts
    }

    fn check_call(settings: String, ctx: Context, tool: Tool, arguments: String) -> Verdict {
        T::check_call(&settings, &ctx, &tool, &arguments)
    }

    fn check_result(settings: String, ctx: Context, tool: Tool, result: String) -> ResultVerdict {
        T::check_result(&settings, &ctx, &tool, &result)
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
