//! Engine errors.

/// Engine errors. Messages go back to the caller only; they never contain data rows.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The schema id is not in the catalog.
    #[error("unknown schemaId; known schema ids: {known}")]
    UnknownSchema { schema_id: i64, known: String },
    /// The question could not be read.
    #[error("{message}")]
    NotUnderstood { part: String, message: String },
    /// A catalog or data file problem at load time.
    #[error("catalog error: {0}")]
    Catalog(String),
    /// The engine failed.
    #[error("query failed: {0}")]
    Query(String),
}

impl EngineError {
    /// Whether the caller can fix it (a tool error rather than a server error).
    pub fn is_caller_error(&self) -> bool {
        matches!(
            self,
            EngineError::UnknownSchema { .. } | EngineError::NotUnderstood { .. }
        )
    }
}
