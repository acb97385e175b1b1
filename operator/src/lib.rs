//! `lumenore-operator`: reconciles `LumenoreConnector` resources into per-tenant, region-pinned
//! connector deployments.

pub mod builders;
pub mod client;
pub mod controller;
pub mod crd;
pub mod crdgen;
pub mod events;
pub mod inputs;
pub mod leader;
pub mod metrics;
pub mod observe;
pub mod otel;
pub mod reconcile;
pub mod rollout;
pub mod run;
pub mod server;
pub mod status;
pub mod validate;
