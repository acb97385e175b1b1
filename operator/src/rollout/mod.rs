//! Fleet upgrades in waves (`LumenoreFleetRollout`).
//!
//! - [`crd`]: the resource and the `status.connector` a LumenoreConnector reports;
//! - [`image`]: image reference grammar;
//! - [`plan`]: pure wave planning and each tenant's image;
//! - [`decide`]: the pure decision of one rollout reconcile;
//! - [`fleet`]: the caches shared with the tenant reconciler;
//! - [`controller`]: API I/O, Events, and the wiring of both controllers;
//! - [`metrics`]: tenants per version, rollout phase.

pub mod controller;
pub mod crd;
pub mod decide;
pub mod fleet;
pub mod image;
pub mod metrics;
pub mod plan;

pub use crd::{LumenoreFleetRollout, LumenoreFleetRolloutSpec, LumenoreFleetRolloutStatus};
pub use fleet::FleetView;

/// Cut `s` to at most `max` bytes on a character boundary.
pub fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}
