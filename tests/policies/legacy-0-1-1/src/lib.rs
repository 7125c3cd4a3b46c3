//! Test fixture: a policy built against `portcullis:policy@0.1.1` (`wit/` is a copy
//! of the frozen `wit/compat/0.1.1/`), so it has `describe` but none of 0.2.0's
//! resource and prompt hooks. A 0.2.0 gateway must still load it and let it govern
//! tools (resources and prompts are not its business):
//! - the tool `delete_everything` is hidden from listing and a call to it is
//!   refused with `-32601 Tool not found`; every other tool is allowed;
//! - results pass unchanged;
//! - `describe` declares listing and calling, from the tool alone, deterministic.
//!
//! Settings: anything (ignored).

#[cfg(target_arch = "wasm32")]
mod component {
    wit_bindgen::generate!({
        path: "wit",
        world: "policy",
    });

    use portcullis::policy::types::Denial;

    /// The one tool this policy refuses.
    const BLOCKED: &str = "delete_everything";

    struct Legacy;

    fn verdict(tool: &Tool) -> Verdict {
        if tool.name == BLOCKED {
            Verdict::Deny(Denial {
                code: -32601,
                message: "Tool not found".into(),
                reason: format!("legacy 0.1.1 policy blocks {}", tool.name),
            })
        } else {
            Verdict::Allow
        }
    }

    impl Guest for Legacy {
        fn validate_settings(_settings: String) -> Result<(), String> {
            Ok(())
        }

        fn describe(_settings: String) -> Manifest {
            Manifest {
                filter_tools: true,
                check_call: true,
                check_result: false,
                reads_connector_tools: false,
                reads_arguments: false,
                deterministic: true,
            }
        }

        fn filter_tools(_settings: String, ctx: Context) -> Vec<Verdict> {
            ctx.connector.tools.iter().map(verdict).collect()
        }

        fn check_call(_settings: String, _ctx: Context, tool: Tool, _arguments: String) -> Verdict {
            verdict(&tool)
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
