//! A key of a Secret: referenced by both custom resources (a connector's credentials, a rollout's
//! analysis credentials), so it lives apart from either.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One key of a Secret in the resource's namespace.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key in the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}
