//! Embedded analytics engine for `lumenore-connector --backend embedded`.
//!
//! A catalog (YAML) describes datasets (CSV files) and their columns. The files are loaded into an
//! in-memory SQLite database; questions are read by a rule-based parser against the catalog vocabulary
//! into a [`plan::Plan`], turned into SQL with bound parameters, and run. The analysis tools add
//! statistics on top (augurs for forecasts and change points, statrs for distributions).
//!
//! The library never prints or logs anything: questions and results only go back to the caller.

pub mod analytics;
pub mod catalog;
pub mod compare;
pub mod demo;
mod engine;
mod errors;
pub mod intent;
pub mod nlq;
pub mod otel;
pub mod plan;
pub mod stats;
pub mod store;
pub mod table;

pub use engine::Engine;
pub use errors::EngineError;
pub use intent::{AnalysisKind, Tool};
