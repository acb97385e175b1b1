//! Observability of the reconciles: the stage a reconcile is in (validate, read inputs, build, apply,
//! status), a trace span per reconcile with one child span per stage, and the metrics the alerts and
//! the dashboard need (leadership, errors and durations by stage, connectors by condition reason).
//!
//! Spans and labels carry the object's namespace and name, the stage and low-cardinality reasons only:
//! never spec values, Secret contents or messages.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::Instant;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tracing::Instrument;

/// The stages of one reconcile, in order.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Stage {
    validate,
    read_inputs,
    build,
    apply,
    status,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::validate => "validate",
            Stage::read_inputs => "read_inputs",
            Stage::build => "build",
            Stage::apply => "apply",
            Stage::status => "status",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabels {
    pub stage: Stage,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageErrorLabels {
    pub stage: Stage,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConditionReasonLabels {
    pub condition: String,
    pub status: String,
    pub reason: String,
}

/// (condition type, status, reason) of one object's conditions.
pub type ConditionReasons = Vec<(String, String, String)>;

/// The (type, status, reason) triples of `conditions`.
pub fn condition_reasons(conditions: &[Condition]) -> ConditionReasons {
    conditions
        .iter()
        .map(|c| (c.type_.clone(), c.status.clone(), c.reason.clone()))
        .collect()
}

/// Metrics registered beside the operator's own (same registry, same prefix).
pub struct StageMetrics {
    /// 1 while this replica runs the controllers (leads), else 0.
    pub leader: Gauge,
    pub errors: Family<StageErrorLabels, Counter>,
    pub stage_duration: Family<StageLabels, Histogram>,
    conditions: Family<ConditionReasonLabels, Gauge>,
    /// Last recorded conditions per object key, to keep `conditions` exact.
    known: Mutex<HashMap<String, ConditionReasons>>,
}

impl StageMetrics {
    /// Create the metrics and register them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica leads and runs the controllers, else 0",
            leader.clone(),
        );
        let errors = Family::<StageErrorLabels, Counter>::default();
        registry.register(
            "reconcile_errors",
            "Failed reconciles by the stage that failed (validate, read_inputs, build, apply, status) and reason",
            errors.clone(),
        );
        let stage_duration = Family::<StageLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 16))
        });
        registry.register(
            "reconcile_stage_duration_seconds",
            "Wall time of one reconcile stage, API calls included",
            stage_duration.clone(),
        );
        let conditions = Family::<ConditionReasonLabels, Gauge>::default();
        registry.register(
            "connector_conditions",
            "LumenoreConnectors by condition, status and reason",
            conditions.clone(),
        );
        StageMetrics {
            leader,
            errors,
            stage_duration,
            conditions,
            known: Mutex::new(HashMap::new()),
        }
    }

    /// Record the current conditions (type, status, reason) of object `key`; `None` forgets it.
    pub fn set_conditions(&self, key: &str, conditions: Option<ConditionReasons>) {
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        let old = match conditions.clone() {
            Some(c) => known.insert(key.to_string(), c),
            None => known.remove(key),
        };
        let labels = |(condition, status, reason)| ConditionReasonLabels {
            condition,
            status,
            reason,
        };
        for c in old.unwrap_or_default() {
            self.conditions.get_or_create(&labels(c)).dec();
        }
        for c in conditions.unwrap_or_default() {
            self.conditions.get_or_create(&labels(c)).inc();
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

    /// Current value of `connector_conditions` for one label set.
    pub fn conditions(&self, condition: &str, status: &str, reason: &str) -> i64 {
        self.conditions
            .get_or_create(&ConditionReasonLabels {
                condition: condition.into(),
                status: status.into(),
                reason: reason.into(),
            })
            .get()
    }

    /// Keep `leader` equal to the election's view until the sender goes away.
    pub async fn follow_leadership(&self, mut leading: watch::Receiver<bool>) {
        loop {
            self.leader.set(i64::from(*leading.borrow_and_update()));
            if leading.changed().await.is_err() {
                self.leader.set(0);
                return;
            }
        }
    }
}

/// The stage clock of the reconcile running in this task.
struct Clock {
    current: Option<(Stage, Instant, tracing::Span)>,
    parent: tracing::Span,
}

tokio::task_local! {
    static CLOCK: RefCell<Clock>;
}

fn stage_span(parent: &tracing::Span, stage: Stage) -> tracing::Span {
    tracing::info_span!(
        target: crate::otel::TARGET,
        parent: parent,
        "reconcile.stage",
        otel.name = format!("reconcile {}", stage.as_str()),
        lumenore.reconcile.stage = stage.as_str(),
        otel.status_code = tracing::field::Empty,
        error.type = tracing::field::Empty,
    )
}

/// Mark the start of `stage` in the reconcile running in this task (a no-op outside one). The previous
/// stage ends here: its duration is observed and its span closed.
pub fn stage(metrics: &StageMetrics, stage: Stage) {
    let _ = CLOCK.try_with(|clock| {
        let mut clock = clock.borrow_mut();
        if let Some((previous, started, _span)) = clock.current.take() {
            observe(metrics, previous, started);
        }
        let span = stage_span(&clock.parent, stage);
        clock.current = Some((stage, Instant::now(), span));
    });
}

fn observe(metrics: &StageMetrics, stage: Stage, started: Instant) {
    metrics
        .stage_duration
        .get_or_create(&StageLabels { stage })
        .observe(started.elapsed().as_secs_f64());
}

/// Run one reconcile of `namespace`/`name` inside a `reconcile` span; the stages it marks with
/// [`stage`] become child spans, and a failure is counted under the stage it happened in.
pub async fn reconcile<T, E, F>(
    metrics: &StageMetrics,
    namespace: &str,
    name: &str,
    reason: impl Fn(&E) -> &'static str,
    fut: F,
) -> Result<T, E>
where
    F: Future<Output = Result<T, E>>,
{
    let span = tracing::info_span!(
        target: crate::otel::TARGET,
        parent: None,
        "reconcile",
        otel.name = "reconcile LumenoreConnector",
        otel.kind = "internal",
        k8s.namespace.name = namespace,
        lumenore.connector.name = name,
        otel.status_code = tracing::field::Empty,
        error.type = tracing::field::Empty,
    );
    let clock = RefCell::new(Clock {
        current: None,
        parent: span.clone(),
    });
    let (result, clock) = CLOCK
        .scope(clock, async {
            let result = fut.await;
            (result, CLOCK.with(|c| c.borrow_mut().current.take()))
        })
        .instrument(span.clone())
        .await;
    if let Some((stage, started, stage_span)) = clock {
        observe(metrics, stage, started);
        if let Err(error) = &result {
            let reason = reason(error);
            metrics
                .errors
                .get_or_create(&StageErrorLabels { stage, reason })
                .inc();
            for s in [&stage_span, &span] {
                s.record("otel.status_code", "error");
                s.record("error.type", reason);
            }
        }
    } else if let Err(error) = &result {
        span.record("otel.status_code", "error");
        span.record("error.type", reason(error));
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(registry: &Registry) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, registry).unwrap();
        out
    }

    #[tokio::test]
    async fn a_failure_is_counted_under_the_stage_it_happened_in() {
        let mut registry = Registry::with_prefix("lumenore_operator");
        let m = StageMetrics::register(&mut registry);
        let result: Result<(), &str> = reconcile(
            &m,
            "ns",
            "a",
            |e: &&str| if *e == "x" { "Conflict" } else { "Other" },
            async {
                stage(&m, Stage::validate);
                stage(&m, Stage::read_inputs);
                stage(&m, Stage::apply);
                Err("x")
            },
        )
        .await;
        assert!(result.is_err());
        let ok: Result<(), &str> = reconcile(&m, "ns", "b", |_| "Other", async {
            stage(&m, Stage::validate);
            stage(&m, Stage::status);
            Ok(())
        })
        .await;
        assert!(ok.is_ok());
        let out = text(&registry);
        assert!(
            out.contains(r#"lumenore_operator_reconcile_errors_total{stage="apply",reason="Conflict"} 1"#),
            "{out}"
        );
        assert_eq!(
            out.matches("lumenore_operator_reconcile_errors_total{").count(),
            1,
            "{out}"
        );
        assert!(
            out.contains(r#"lumenore_operator_reconcile_stage_duration_seconds_count{stage="validate"} 2"#),
            "{out}"
        );
        assert!(
            out.contains(r#"lumenore_operator_reconcile_stage_duration_seconds_count{stage="status"} 1"#),
            "{out}"
        );
        // Outside a reconcile a stage mark does nothing.
        stage(&m, Stage::build);
        assert!(!text(&registry).contains(r#"stage="build""#));
    }

    #[test]
    fn condition_gauge_follows_changes_and_deletion() {
        let mut registry = Registry::default();
        let m = StageMetrics::register(&mut registry);
        let cond = |s: &str, r: &str| vec![("Accepted".to_string(), s.to_string(), r.to_string())];
        m.set_conditions("ns/a", Some(cond("False", "RegionMismatch")));
        m.set_conditions("ns/b", Some(cond("False", "RegionMismatch")));
        assert_eq!(m.conditions("Accepted", "False", "RegionMismatch"), 2);
        m.set_conditions("ns/a", Some(cond("True", "Accepted")));
        assert_eq!(m.conditions("Accepted", "False", "RegionMismatch"), 1);
        assert_eq!(m.conditions("Accepted", "True", "Accepted"), 1);
        m.set_conditions("ns/a", None);
        m.set_conditions("ns/b", None);
        assert_eq!(m.conditions("Accepted", "True", "Accepted"), 0);
        assert_eq!(m.conditions("Accepted", "False", "RegionMismatch"), 0);
    }

    #[tokio::test]
    async fn leader_gauge_follows_the_election() {
        let mut registry = Registry::default();
        let m = std::sync::Arc::new(StageMetrics::register(&mut registry));
        let (tx, rx) = watch::channel(false);
        let task = {
            let m = m.clone();
            tokio::spawn(async move { m.follow_leadership(rx).await })
        };
        tx.send(true).unwrap();
        for _ in 0..100 {
            if m.leader.get() == 1 {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(m.leader.get(), 1);
        drop(tx);
        task.await.unwrap();
        assert_eq!(m.leader.get(), 0);
    }
}
