//! Fleet metrics: tenants per connector version and the rollout's phase. Labels are versions (image
//! tags) and phase names, never tenant names.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::collections::BTreeMap;

use super::crd::Phase;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VersionLabels {
    pub version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    pub phase: String,
}

/// Gauges of the fleet, set by the rollout controller from what the tenants report.
#[derive(Clone, Default)]
pub struct FleetMetrics {
    tenants: Family<VersionLabels, Gauge>,
    phase: Family<PhaseLabels, Gauge>,
    updated: Gauge,
}

impl FleetMetrics {
    /// Create the gauges and register them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = FleetMetrics::default();
        registry.register(
            "fleet_tenants",
            "LumenoreConnectors by the connector version (image tag or digest) their Deployment runs",
            m.tenants.clone(),
        );
        registry.register(
            "fleet_rollout_phase",
            "1 for the phase of the LumenoreFleetRollout governing the fleet, 0 for the others",
            m.phase.clone(),
        );
        registry.register(
            "fleet_rollout_updated_tenants",
            "Tenants running the rollout's goal image and Ready",
            m.updated.clone(),
        );
        m
    }

    /// Replace the per-version counts.
    pub fn set_versions(&self, versions: BTreeMap<String, i64>) {
        self.tenants.clear();
        for (version, n) in versions {
            self.tenants.get_or_create(&VersionLabels { version }).set(n);
        }
    }

    /// Record the active rollout's phase (`None`: no rollout).
    pub fn set_phase(&self, phase: Option<Phase>, updated: u32) {
        for p in Phase::ALL {
            self.phase
                .get_or_create(&PhaseLabels {
                    phase: p.as_str().to_string(),
                })
                .set(i64::from(Some(p) == phase));
        }
        self.updated.set(i64::from(updated));
    }

    /// Current count of tenants on `version`.
    pub fn tenants_on(&self, version: &str) -> i64 {
        self.tenants
            .get_or_create(&VersionLabels {
                version: version.to_string(),
            })
            .get()
    }

    /// Current value of the phase gauge.
    pub fn phase_value(&self, phase: Phase) -> i64 {
        self.phase
            .get_or_create(&PhaseLabels {
                phase: phase.as_str().to_string(),
            })
            .get()
    }
}
