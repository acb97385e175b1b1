//! Fleet upgrades in waves (`LumenoreFleetRollout`).
//!
//! - [`crd`] (in [`crate::crd::rollout`]): the resource and the `status.connector` a LumenoreConnector reports;
//! - [`image`]: image reference grammar;
//! - [`plan`]: pure wave planning and each tenant's image;
//! - [`analysis`]: metric analysis of a wave's bake from Prometheus;
//! - [`decide`]: the pure decision of one rollout reconcile;
//! - [`fleet`]: the caches shared with the tenant reconciler;
//! - [`controller`]: the rollout controller's API I/O and Events (wired by [`crate::run`]);
//! - [`metrics`]: tenants per version, rollout phase.

pub mod analysis;
pub mod controller;
pub use crate::crd::rollout as crd;
pub mod decide;
pub mod feed;
pub mod fleet;
pub mod image;
pub mod metrics;
pub mod plan;

pub use crd::{LumenoreFleetRollout, LumenoreFleetRolloutSpec, LumenoreFleetRolloutStatus};
pub use fleet::FleetView;

pub use crate::events::truncate;
