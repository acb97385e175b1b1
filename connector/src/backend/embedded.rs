//! The embedded backend: the `lumenore-embedded` engine over local datasets (the bundled demo catalog, or
//! a catalog given with `--catalog`). Queries are CPU work, so they run on the blocking thread pool.

use std::{path::Path, sync::Arc};

use lumenore_embedded::{Engine, EngineError};
use serde_json::Value;

use super::BackendError;
use crate::tools::ToolCall;

pub struct EmbeddedBackend {
    engine: Arc<Engine>,
}

impl EmbeddedBackend {
    /// Loads the catalog at `path`, or the bundled demo catalog when `None`.
    pub fn load(path: Option<&Path>) -> Result<Self, String> {
        let engine = match path {
            Some(path) => Engine::from_path(path),
            None => Engine::demo(),
        }
        .map_err(|error| error.to_string())?;
        Ok(Self {
            engine: Arc::new(engine),
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub async fn call(&self, call: ToolCall) -> Result<Value, BackendError> {
        let engine = self.engine.clone();
        // otel: the engine's plan/query spans are children of the call's span, on the blocking thread too.
        let trace = crate::otel::current();
        tokio::task::spawn_blocking(move || {
            let _current = trace.map(opentelemetry::Context::attach);
            answer(&engine, call)
        })
        .await
        .map_err(|_| BackendError::Engine("the query task stopped unexpectedly".into()))?
    }
}

fn answer(engine: &Engine, call: ToolCall) -> Result<Value, BackendError> {
    let result = match call {
        ToolCall::DatasetMetadata => Ok(engine.dataset_metadata()),
        ToolCall::MetadataInfo { schema_id } => engine.metadata_info(schema_id),
        ToolCall::NlqToData {
            user_query,
            schema_id,
        } => engine.nlq_to_data(&user_query, schema_id),
        ToolCall::Analysis {
            kind,
            user_query,
            schema_id,
        } => engine.analyze(kind, &user_query, schema_id),
    };
    result.map_err(|error: EngineError| {
        if error.is_caller_error() {
            BackendError::Refused(error.to_string())
        } else {
            BackendError::Engine(error.to_string())
        }
    })
}
