//! The long randomized soak: the chaos schedule of `system.rs` with a fresh random seed (printed;
//! replay it with `CHAOS_SEED`) and more faults.
//!
//! `cargo test -p lumenore-operator --test soak -- --ignored --nocapture`
//! (`SOAK_FAULTS`, default 40; `SOAK_RUNS`, default 1, runs that many schedules in a row).

/// Of the shared fixtures, the fake API server (it evaluates the CRDs' CEL rules on writes).
mod common {
    #[path = "fake_api.rs"]
    pub mod fake_api;
}
mod system_support;

use std::time::Duration;

use system_support::chaos::{self, ChaosPlan};
use system_support::rng::{random_seed, seed_from_env};

#[test]
#[ignore = "long: run with --ignored"]
fn soak_random_chaos() {
    let runs = seed_from_env("SOAK_RUNS", 1);
    let faults = seed_from_env("SOAK_FAULTS", 40) as usize;
    for run in 0..runs {
        let seed = seed_from_env("CHAOS_SEED", random_seed());
        eprintln!("soak run {}/{runs}: CHAOS_SEED={seed}", run + 1);
        chaos::run(&ChaosPlan {
            seed,
            faults,
            budget: Duration::from_secs(60 + 6 * faults as u64),
            namespaces: vec!["ns-a", "ns-b", "ns-c"],
            per_namespace: 20,
            gap_ms: (500, 4000),
            max_unavailable: 2,
        });
    }
}
