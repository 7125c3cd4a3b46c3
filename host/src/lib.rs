//! Portcullis: a governance gateway in front of MCP servers. See ARCHITECTURE.md for
//! where each concern lives and how a request flows.

pub mod audit;
pub mod auth;
pub mod cli;
pub mod config;
pub mod gateway;
pub mod kit;
mod logging;
pub mod mcp;
pub mod policy;
pub mod quota;
mod serve;
pub mod server;
pub mod telemetry;
pub mod upstream;
mod util;
pub mod vault;
