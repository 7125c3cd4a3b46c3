//! Test fixture: a policy built against `portcullis:policy@0.1.0` (`wit/` is that
//! version, frozen), so it has no `describe`. The gateway must load it and call every
//! hook with every input. Its rules read the inputs a 0.1.1 host could leave out:
//! - listing hides a tool when the connector lists a tool named `<tool>_guard`;
//! - a call is denied (-32010 "legacy: denied") when its arguments mention
//!   `forbidden`, or when the connector lists no tool named `guard`;
//! - results pass unchanged.

#[cfg(target_arch = "wasm32")]
mod component {
    wit_bindgen::generate!({
        path: "wit",
        world: "policy",
    });

    use portcullis::policy::types::Denial;

    struct Legacy;

    fn has_tool(ctx: &Context, name: &str) -> bool {
        ctx.connector.tools.iter().any(|t| t.name == name)
    }

    fn deny(reason: String) -> Verdict {
        Verdict::Deny(Denial {
            code: -32010,
            message: "legacy: denied".into(),
            reason,
        })
    }

    impl Guest for Legacy {
        fn validate_settings(_settings: String) -> Result<(), String> {
            Ok(())
        }

        fn filter_tools(_settings: String, ctx: Context) -> Vec<Verdict> {
            ctx.connector
                .tools
                .iter()
                .map(|t| {
                    if has_tool(&ctx, &format!("{}_guard", t.name)) {
                        deny(format!("{} is guarded", t.name))
                    } else {
                        Verdict::Allow
                    }
                })
                .collect()
        }

        fn check_call(_settings: String, ctx: Context, tool: Tool, arguments: String) -> Verdict {
            if arguments.contains("forbidden") {
                deny(format!("arguments of {} mention forbidden", tool.name))
            } else if !has_tool(&ctx, "guard") {
                deny("the connector has no guard tool".into())
            } else {
                Verdict::Allow
            }
        }

        fn check_result(
            _settings: String,
            _ctx: Context,
            _tool: Tool,
            _result: String,
        ) -> ResultVerdict {
            ResultVerdict::Pass
        }
    }

    export!(Legacy);
}
