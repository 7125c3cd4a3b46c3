//! Portcullis: a governance gateway in front of MCP servers. See ARCHITECTURE.md for
//! where each concern lives, how a request flows, and which module may depend on
//! which. The binary (`main.rs`) calls [`run`]; nothing else of the library is public.
#![warn(unreachable_pub)]

// Leaves: depend on no other module of the crate.
mod digest;
mod http_client;
mod mcp;
mod text;
// What the operator wrote, checked.
mod config;
// Identity and observability.
mod auth;
mod telemetry;
// Services the gateway calls.
mod audit;
mod logging;
mod policy;
mod quota;
mod state;
mod upstream;
mod vault;
// The gateway and its front doors.
mod cli;
mod gateway;
mod kit;
mod serve;
mod server;
mod util;

pub use cli::run;

#[cfg(test)]
mod layering;
