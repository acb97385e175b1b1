//! `lumenore-connector`: a stateless MCP server (Streamable HTTP) that serves the Lumenore analytics tools
//! from a tenant's Lumenore backend or from the embedded analytics engine.

pub mod app;
pub mod auth;
pub mod backend;
pub mod budget;
pub mod config;
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod metrics;
pub mod otel;
pub mod server;
pub mod telemetry;
#[cfg(test)]
mod test_support;
pub mod tools;
pub mod ui;
