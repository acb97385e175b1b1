//! The custom resources, as Rust types (the CRD YAML in `crds/` is generated from them):
//! - [`connector`]: `LumenoreConnector`, one tenant's connector;
//! - [`rollout`]: `LumenoreFleetRollout`, a staged upgrade of the fleet's connector image.
//! - [`secret_ref`]: a key of a Secret, referenced by both.

pub mod connector;
pub mod rollout;
pub mod secret_ref;

pub use connector::*;

use kube::core::DeserializeGuard;

/// The object the tenant controller watches: a LumenoreConnector that may fail to deserialize (a
/// malformed object is reported in its status instead of stopping the watch).
pub type Guarded = DeserializeGuard<LumenoreConnector>;
