//! System-test harness: the real `lumenore-operator` binary, as processes (replicas with leader
//! election), against the in-memory API server served over loopback HTTP; a simulated Deployment
//! controller; and invariants judged over every write the API server records ([`checker`]).
//!
//! - [`cluster`]: the fake API server, the operator processes, the Deployment controller, objects;
//! - [`checker`]: the invariants (a)–(e), checked as each write lands, (f) at the end;
//! - [`chaos`]: a seeded random schedule of faults over a rollout (the chaos test and the soak);
//! - [`rng`]: the seeded PRNG;
//! - [`connectors`]: real connector processes and the kubelet's projection of a ConfigMap into them;
//! - [`fleet_analysis`]: a real Prometheus scraping real connectors, for the rollout analysis.
#![allow(dead_code)]

pub mod chaos;
pub mod checker;
pub mod cluster;
pub mod connectors;
pub mod fleet_analysis;
pub mod rng;
