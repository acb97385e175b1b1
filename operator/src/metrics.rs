//! Prometheus metrics of the operator. Labels carry only low-cardinality values (reasons, condition
//! names), never object names or tenant data.

use std::collections::HashMap;
use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConditionLabels {
    pub condition: String,
    pub status: String,
}

/// The operator's metrics and their registry.
pub struct Metrics {
    registry: Registry,
    pub reconciles: Counter,
    pub failures: Family<ReasonLabels, Counter>,
    pub duration: Histogram,
    /// Leadership, errors and durations by stage, connectors by reason (see `observe`).
    pub stages: crate::observe::StageMetrics,
    connectors: Family<ConditionLabels, Gauge>,
    /// Tenants per connector version, fleet rollout phase.
    pub fleet: crate::rollout::metrics::FleetMetrics,
    /// Last known condition statuses per object key, to keep `connectors` exact.
    known: Mutex<HashMap<String, Vec<(String, String)>>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("lumenore_operator");
        let reconciles = Counter::default();
        let failures = Family::<ReasonLabels, Counter>::default();
        let duration = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        let connectors = Family::<ConditionLabels, Gauge>::default();
        registry.register("reconciles", "Reconciles started", reconciles.clone());
        registry.register(
            "reconcile_failures",
            "Reconciles that failed, by reason",
            failures.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Wall time of one reconcile, API calls included",
            duration.clone(),
        );
        registry.register(
            "connectors",
            "LumenoreConnectors by condition and status",
            connectors.clone(),
        );
        let stages = crate::observe::StageMetrics::register(&mut registry);
        let fleet = crate::rollout::metrics::FleetMetrics::register(&mut registry);
        Metrics {
            fleet,
            registry,
            reconciles,
            failures,
            duration,
            stages,
            connectors,
            known: Mutex::new(HashMap::new()),
        }
    }

    /// Count a failed reconcile.
    pub fn failure(&self, reason: &str) {
        self.failures
            .get_or_create(&ReasonLabels {
                reason: reason.to_string(),
            })
            .inc();
    }

    /// Record the current conditions (type, status) of object `key`; `None` forgets it (deleted).
    pub fn set_conditions(&self, key: &str, conditions: Option<Vec<(String, String)>>) {
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        let old = match conditions.clone() {
            Some(c) => known.insert(key.to_string(), c),
            None => known.remove(key),
        };
        for (condition, status) in old.unwrap_or_default() {
            self.connectors
                .get_or_create(&ConditionLabels { condition, status })
                .dec();
        }
        for (condition, status) in conditions.unwrap_or_default() {
            self.connectors
                .get_or_create(&ConditionLabels { condition, status })
                .inc();
        }
    }

    /// Keys of the objects whose conditions are counted.
    pub fn known_keys(&self) -> Vec<String> {
        self.known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect()
    }

    /// Current value of the `connectors` gauge for one condition/status.
    pub fn connectors(&self, condition: &str, status: &str) -> i64 {
        self.connectors
            .get_or_create(&ConditionLabels {
                condition: condition.to_string(),
                status: status.to_string(),
            })
            .get()
    }

    /// Text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connectors_gauge_follows_condition_changes() {
        let m = Metrics::new();
        m.set_conditions("ns/a", Some(vec![("Ready".into(), "False".into())]));
        m.set_conditions("ns/b", Some(vec![("Ready".into(), "False".into())]));
        assert_eq!(m.connectors("Ready", "False"), 2);
        m.set_conditions("ns/a", Some(vec![("Ready".into(), "True".into())]));
        assert_eq!(m.connectors("Ready", "False"), 1);
        assert_eq!(m.connectors("Ready", "True"), 1);
        m.set_conditions("ns/a", None);
        assert_eq!(m.connectors("Ready", "True"), 0);
        m.failure("Conflict");
        let text = m.encode();
        assert!(
            text.contains("lumenore_operator_reconcile_failures_total{reason=\"Conflict\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("lumenore_operator_connectors{condition=\"Ready\",status=\"False\"} 1"),
            "{text}"
        );
    }
}
