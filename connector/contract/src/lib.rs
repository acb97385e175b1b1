//! What crosses crates in the Lumenore connector fleet, defined once:
//!
//! - [`ToolName`], [`AnalysisKind`] and [`ToolCall`]: the nine MCP tools, the six analysis kinds the
//!   embedded engine and the Lumenore backend both answer, and one validated call. The connector's `tools`
//!   module gives them their MCP definitions and validation; the embedded engine answers them.
//! - [`env`]: the environment variables the connector reads. Its clap definitions name these constants,
//!   and the operator's builders set only these constants, so a renamed variable breaks the build of both
//!   instead of a tenant's pods.
//!
//! Pure data, no dependencies.

pub mod env;
mod tool;

pub use tool::{AnalysisKind, ToolCall, ToolName};
