//! Fleet metrics: tenants per connector version, the rollout's phase and its analysis. Labels are
//! versions (image tags), phase names, check names (built-in, or a custom check's name from the spec)
//! and verdicts, never tenant names.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::collections::BTreeMap;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;

use super::analysis::AnalysisRun;
use super::crd::{AnalysisStatus, Phase, Verdict};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RunLabels {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CheckLabels {
    pub check: String,
    pub verdict: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ValueLabels {
    pub check: String,
    pub side: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VersionLabels {
    pub version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    pub phase: String,
}

/// Gauges of the fleet, set by the rollout controller from what the tenants report.
#[derive(Clone)]
pub struct FleetMetrics {
    tenants: Family<VersionLabels, Gauge>,
    phase: Family<PhaseLabels, Gauge>,
    updated: Gauge,
    analysis_runs: Family<RunLabels, Counter>,
    analysis_duration: Histogram,
    verdicts: Family<CheckLabels, Counter>,
    check_verdict: Family<CheckLabels, Gauge>,
    check_value: Family<ValueLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
}

impl Default for FleetMetrics {
    fn default() -> Self {
        FleetMetrics {
            tenants: Family::default(),
            phase: Family::default(),
            updated: Gauge::default(),
            analysis_runs: Family::default(),
            analysis_duration: Histogram::new([0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
            verdicts: Family::default(),
            check_verdict: Family::default(),
            check_value: Family::default(),
        }
    }
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
        registry.register(
            "fleet_analysis_runs",
            "Analyses of a wave's bake by outcome (measured: every query answered; unavailable: the query API failed)",
            m.analysis_runs.clone(),
        );
        registry.register(
            "fleet_analysis_duration_seconds",
            "Time to read the credentials and answer every query of one analysis",
            m.analysis_duration.clone(),
        );
        registry.register(
            "fleet_analysis_verdicts",
            "Check verdicts of the analyses, by check and verdict (Pass, Fail, Inconclusive)",
            m.verdicts.clone(),
        );
        registry.register(
            "fleet_analysis_check_verdict",
            "1 for the last verdict of each check of the governing rollout's current analysis, 0 for the others",
            m.check_verdict.clone(),
        );
        registry.register(
            "fleet_analysis_check_value",
            "Last figure of each check of the governing rollout's current analysis: the wave's, the baseline's and the limit",
            m.check_value.clone(),
        );
        // Known label values from the start, so a dashboard or an alert sees the series before the
        // first analysis.
        for outcome in ["measured", "unavailable"] {
            m.analysis_runs.get_or_create(&RunLabels { outcome }).inc_by(0);
        }
        m.set_analysis(None);
        m
    }

    /// Count one analysis.
    pub fn record_analysis(&self, run: &AnalysisRun, took: std::time::Duration) {
        self.analysis_duration.observe(took.as_secs_f64());
        let outcome = if run.outcome.is_ok() {
            "measured"
        } else {
            "unavailable"
        };
        self.analysis_runs.get_or_create(&RunLabels { outcome }).inc();
        for c in run.outcome.iter().flatten() {
            self.verdicts
                .get_or_create(&CheckLabels {
                    check: c.name.clone(),
                    verdict: c.verdict.as_str(),
                })
                .inc();
        }
    }

    /// Show the governing rollout's current analysis. Without one (or before its first answer), the
    /// built-in checks show 0 for every verdict.
    pub fn set_analysis(&self, analysis: Option<&AnalysisStatus>) {
        self.check_verdict.clear();
        self.check_value.clear();
        if analysis.is_none_or(|a| a.checks.is_empty()) {
            for check in ["error-ratio", "latency-p95", "latency-p99"] {
                for v in [Verdict::Pass, Verdict::Fail, Verdict::Inconclusive] {
                    self.check_verdict
                        .get_or_create(&CheckLabels {
                            check: check.to_string(),
                            verdict: v.as_str(),
                        })
                        .set(0);
                }
            }
        }
        for c in analysis.iter().flat_map(|a| &a.checks) {
            for v in [Verdict::Pass, Verdict::Fail, Verdict::Inconclusive] {
                self.check_verdict
                    .get_or_create(&CheckLabels {
                        check: c.name.clone(),
                        verdict: v.as_str(),
                    })
                    .set(i64::from(c.verdict == v));
            }
            for (side, value) in [("wave", c.wave), ("baseline", c.baseline), ("limit", c.limit)] {
                if let Some(v) = value {
                    self.check_value
                        .get_or_create(&ValueLabels {
                            check: c.name.clone(),
                            side,
                        })
                        .set(v);
                }
            }
        }
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
