//! The integration tests, as one test binary: each module is one area, and the
//! harness (`portcullis_tests`) and its dependencies are linked once instead of once
//! per file. Run an area with `cargo test -p portcullis-tests --test it audit::`, one
//! test with its full name (`audit::sink_none_keeps_the_log_lines_and_writes_no_table`).
//!
//! No test changes process-wide state (environment, working directory, limits):
//! they all start their own processes, so they share this one safely.

mod audit;
mod core_smoke;
mod gateway_batches;
mod gateway_failures;
mod gateway_http;
mod gateway_peers;
mod gateway_relay;
mod hardening;
mod live_config;
mod live_rules;
mod observability;
mod pinning;
mod policy_builtins;
mod policy_failures;
mod policy_items;
mod policy_kit;
mod policy_manifest;
mod policy_reload;
mod quota;
mod resources_prompts;
mod transports;
mod vault;
