//! [`log`]: one line to the gateway's log through the `host.log` import.
//!
//! On non-wasm targets (native unit tests) there is no host: the line goes to
//! stderr instead, so policies can log freely in code under test.

use crate::Level;

/// Writes one line to the gateway's log (tagged by the host with the policy name).
pub fn log(level: Level, message: &str) {
    #[cfg(target_arch = "wasm32")]
    crate::bindings::portcullis::policy::host::log(level, message);
    #[cfg(not(target_arch = "wasm32"))]
    eprintln!("[policy {}] {message}", level_name(level));
}

#[cfg(not(target_arch = "wasm32"))]
fn level_name(level: Level) -> &'static str {
    match level {
        Level::Debug => "debug",
        Level::Info => "info",
        Level::Warn => "warn",
        Level::Error => "error",
    }
}
