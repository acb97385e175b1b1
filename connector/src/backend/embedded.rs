//! The embedded backend: the `lumenore-embedded` engine over local datasets.
//! (Wired in by the embedded-backend issue.)

use serde_json::Value;

use super::{BackendCall, BackendError};

pub struct EmbeddedBackend {}

impl EmbeddedBackend {
    pub async fn call(&self, _call: BackendCall) -> Result<Value, BackendError> {
        Err(BackendError::Engine(
            "the embedded engine is not built into this binary yet".into(),
        ))
    }
}
