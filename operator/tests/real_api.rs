//! Behaviour a real API server shows and a lenient fake hides: names it refuses, writes refused by
//! admission or quota, field ownership of `spec.replicas`, kstatus' reading of the status, and
//! deletions. Each scenario runs against the strict in-memory API server (`common::fake_api`).

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::fake_api::FakeApi;
use common::kstatus::{KStatus, compute};
use common::*;
use http::Method;
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::ObjectMeta;
use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::runtime::watcher;
use lumenore_operator::controller::to_reconcile;
use lumenore_operator::crd::{Cloud, LumenoreConnector, MANAGER, REPLICAS_HANDOVER_MANAGER};
use lumenore_operator::metrics::Metrics;
use lumenore_operator::reconcile::{Context, OperatorConfig, error_policy, reconcile};
use lumenore_operator::validate::ClusterIdentity;
use serde_json::json;

const NS: &str = "tenants";

struct Env {
    api: FakeApi,
    ctx: Arc<Context>,
}

fn env_with(config: impl FnOnce(&mut OperatorConfig)) -> Env {
    let api = FakeApi::new();
    let mut cfg = OperatorConfig::new(
        ClusterIdentity {
            cloud: Some(Cloud::Aws),
            region: Some("eu-west-1".into()),
        },
        "ghcr.io/lumenore/lumenore-connector:0.1.0".into(),
    );
    config(&mut cfg);
    let ctx = Arc::new(Context::new(api.client(), cfg, Arc::new(Metrics::new())));
    Env { api, ctx }
}

fn env() -> Env {
    env_with(|_| {})
}

fn acme_secret() -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some("acme-creds".into()),
            namespace: Some(NS.into()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([
            ("client-id".to_string(), ByteString(b"acme-client".to_vec())),
            ("client-secret".to_string(), ByteString(b"s3cr3t".to_vec())),
        ])),
        ..Default::default()
    }
}

impl Env {
    fn cr(&self, name: &str) -> LumenoreConnector {
        self.api.get::<LumenoreConnector>(NS, name).expect("CR exists")
    }

    /// Reconcile like the controller does: on error, apply the error policy.
    async fn reconcile(&self, name: &str) -> (Result<(), &'static str>, Action) {
        let guard = Arc::new(DeserializeGuard(Ok(self.cr(name))));
        match reconcile(guard.clone(), self.ctx.clone()).await {
            Ok(a) => (Ok(()), a),
            Err(e) => {
                let reason = e.reason();
                (Err(reason), error_policy(guard, &e, self.ctx.clone()))
            }
        }
    }

    fn condition(&self, name: &str, type_: &str) -> Option<Condition> {
        self.cr(name)
            .status?
            .conditions
            .into_iter()
            .find(|c| c.type_ == type_)
    }

    fn ready(&self, name: &str) -> (String, String, String) {
        let c = self.condition(name, "Ready").expect("Ready condition");
        (c.status, c.reason, c.message)
    }

    fn kstatus(&self, name: &str) -> KStatus {
        compute(&self.api.get_raw::<LumenoreConnector>(NS, name).unwrap())
    }

    fn replicas(&self, name: &str) -> Option<i32> {
        self.api.get::<Deployment>(NS, name).unwrap().spec.replicas
    }
}

// ---- 1. names the API server rejects, and a status that says so ----

#[tokio::test]
async fn a_name_the_service_cannot_carry_is_reported_in_the_status_not_retried_forever() {
    let e = env();
    e.api.put(&acme_secret());
    // Stored before the CRD's name rule existed: "acme.eu" is a valid object name but not a Service name.
    e.api.put(&connector(NS, "acme.eu", minimal_spec()));
    let (r, action) = e.reconcile("acme.eu").await;
    assert_eq!(r, Ok(()));
    assert_eq!(
        action,
        Action::await_change(),
        "nothing will change until the user acts"
    );
    let (status, reason, message) = e.ready("acme.eu");
    assert_eq!((status.as_str(), reason.as_str()), ("False", "InvalidSpec"));
    assert!(
        message.contains("metadata.name") && message.contains("DNS-1035"),
        "{message}"
    );
    assert!(e.api.names::<Deployment>(NS).is_empty());
    assert_eq!(e.kstatus("acme.eu"), KStatus::Failed);
}

#[tokio::test]
async fn a_region_that_is_not_a_label_value_is_reported_in_the_status() {
    let e = env_with(|c| c.cluster.region = None);
    e.api.put(&acme_secret());
    let mut spec = minimal_spec();
    spec["region"]["name"] = json!("eu west 1");
    e.api.put(&connector(NS, "acme", spec));
    let (r, _) = e.reconcile("acme").await;
    assert_eq!(r, Ok(()));
    let (status, reason, message) = e.ready("acme");
    assert_eq!((status.as_str(), reason.as_str()), ("False", "InvalidSpec"));
    assert!(message.contains("spec.region.name"), "{message}");
    assert!(e.api.names::<Service>(NS).is_empty());
}

#[tokio::test]
async fn a_refused_child_write_sets_ready_false_apply_failed_with_the_message_and_an_event() {
    let e = env();
    e.api.put(&acme_secret());
    e.api.put(&connector(NS, "acme", minimal_spec()));
    let webhook = "admission webhook \"validate.kyverno.svc\" denied the request: policy require-team-label: label 'team' is required";
    e.api
        .fail_next_with(Method::PATCH, "/deployments/acme", 400, webhook, 1);

    let (r, action) = e.reconcile("acme").await;
    assert_eq!(r, Err("ApiError"));
    assert_eq!(
        action,
        Action::requeue(Duration::from_secs(1)),
        "retried with backoff"
    );
    let (status, reason, message) = e.ready("acme");
    assert_eq!((status.as_str(), reason.as_str()), ("False", "ApplyFailed"));
    assert!(
        message.contains("Deployment") && message.contains(webhook),
        "{message}"
    );
    let stalled = e.condition("acme", "Stalled").expect("a refusal needs a person");
    assert_eq!(stalled.status, "True");
    assert_eq!(e.kstatus("acme"), KStatus::Failed);
    let events = e.api.events(NS);
    let ev = events
        .iter()
        .find(|ev| ev["reason"] == "ApplyFailed")
        .expect("an ApplyFailed event");
    assert_eq!(ev["type"], "Warning");
    assert!(ev["note"].as_str().unwrap().contains("denied the request"));

    // The policy is fixed: the next attempt deploys and the failure is gone from the status.
    let (r, _) = e.reconcile("acme").await;
    assert_eq!(r, Ok(()));
    assert_eq!(e.ready("acme").1, "RolloutInProgress");
    assert!(e.condition("acme", "Stalled").is_none());
    assert_eq!(e.ctx.failure_count("tenants/acme"), 0);
}

#[tokio::test]
async fn a_transient_write_failure_is_reconciling_and_a_quota_refusal_names_the_child() {
    let e = env();
    e.api.put(&acme_secret());
    e.api.put(&connector(NS, "acme", minimal_spec()));
    e.api.fail_next(Method::PATCH, "/services/acme", 503, 1);
    let (r, _) = e.reconcile("acme").await;
    assert_eq!(r, Err("ServerError"));
    assert_eq!(e.ready("acme").1, "ApplyFailed");
    assert_eq!(e.condition("acme", "Reconciling").unwrap().status, "True");
    assert_eq!(e.kstatus("acme"), KStatus::InProgress);

    let quota = "poddisruptionbudgets.policy \"acme\" is forbidden: exceeded quota: tenant-quota, requested: count/poddisruptionbudgets.policy=1, used: count/poddisruptionbudgets.policy=5, limited: count/poddisruptionbudgets.policy=5";
    e.api
        .fail_next_with(Method::PATCH, "/poddisruptionbudgets/acme", 403, quota, 1);
    let (r, action) = e.reconcile("acme").await;
    assert_eq!(r, Err("Forbidden"));
    assert_eq!(
        action,
        Action::requeue(Duration::from_secs(2)),
        "second failure: longer backoff"
    );
    let (_, reason, message) = e.ready("acme");
    assert_eq!(reason, "ApplyFailed");
    assert!(
        message.contains("PodDisruptionBudget") && message.contains("exceeded quota"),
        "{message}"
    );
}

// ---- 3. replicas hand-over ----

#[tokio::test]
async fn removing_spec_replicas_keeps_the_live_count_and_hands_it_to_an_hpa() {
    let e = env();
    e.api.put(&acme_secret());
    let mut spec = minimal_spec();
    spec["replicas"] = json!(3);
    e.api.put(&connector(NS, "acme", spec));
    e.reconcile("acme").await.0.unwrap();
    assert_eq!(e.replicas("acme"), Some(3));
    assert!(
        e.api
            .owns::<Deployment>(NS, "acme", MANAGER, &["spec", "replicas"])
    );

    // The user removes spec.replicas to let an HPA own the count.
    e.api.edit::<LumenoreConnector>(NS, "acme", |o| {
        o["spec"].as_object_mut().unwrap().remove("replicas");
    });
    e.reconcile("acme").await.0.unwrap();
    assert_eq!(e.replicas("acme"), Some(3), "not reset to the default of 1");
    assert!(
        !e.api
            .owns::<Deployment>(NS, "acme", MANAGER, &["spec", "replicas"])
    );
    assert!(
        e.api
            .owns::<Deployment>(NS, "acme", REPLICAS_HANDOVER_MANAGER, &["spec", "replicas"])
    );

    // The HPA scales the Deployment; the operator's reconciles leave its count alone.
    e.api
        .edit_as::<Deployment>(NS, "acme", "kube-controller-manager", |d| {
            d["spec"]["replicas"] = json!(6)
        });
    e.api.clear_log();
    e.reconcile("acme").await.0.unwrap();
    e.reconcile("acme").await.0.unwrap();
    assert_eq!(e.replicas("acme"), Some(6));
    assert!(
        !e.api
            .log()
            .iter()
            .any(|l| l.field_manager.as_deref() == Some(REPLICAS_HANDOVER_MANAGER)),
        "the hand-over happens once"
    );

    // Setting spec.replicas again takes the count back.
    e.api
        .edit::<LumenoreConnector>(NS, "acme", |o| o["spec"]["replicas"] = json!(2));
    e.reconcile("acme").await.0.unwrap();
    assert_eq!(e.replicas("acme"), Some(2));
}

#[tokio::test]
async fn after_a_restart_the_hand_over_still_happens() {
    let e = env();
    e.api.put(&acme_secret());
    let mut spec = minimal_spec();
    spec["replicas"] = json!(4);
    e.api.put(&connector(NS, "acme", spec));
    e.reconcile("acme").await.0.unwrap();
    e.api.edit::<LumenoreConnector>(NS, "acme", |o| {
        o["spec"].as_object_mut().unwrap().remove("replicas");
    });
    // A fresh operator process: nothing remembered about who owns the field.
    let restarted = Env {
        api: e.api.clone(),
        ctx: Arc::new(Context::new(
            e.api.client(),
            e.ctx.config.clone(),
            Arc::new(Metrics::new()),
        )),
    };
    restarted.reconcile("acme").await.0.unwrap();
    assert_eq!(restarted.replicas("acme"), Some(4));
}

// ---- 5. kstatus ----

#[tokio::test]
async fn kstatus_reads_progress_readiness_and_what_needs_a_person() {
    let e = env();
    e.api.put(&acme_secret());
    e.api.put(&connector(NS, "acme", minimal_spec()));
    e.reconcile("acme").await.0.unwrap();
    assert_eq!(
        e.condition("acme", "Reconciling").unwrap().reason,
        "RolloutInProgress"
    );
    assert_eq!(e.kstatus("acme"), KStatus::InProgress);
    e.api.set_deployment_ready(NS, "acme", 1);
    e.reconcile("acme").await.0.unwrap();
    assert_eq!(e.kstatus("acme"), KStatus::Current);
    assert!(
        e.condition("acme", "Reconciling").is_none(),
        "abnormal-true: absent when done"
    );
    assert!(e.condition("acme", "Stalled").is_none());

    // A spec change the operator has not seen yet: observedGeneration lags.
    e.api
        .edit::<LumenoreConnector>(NS, "acme", |o| o["spec"]["replicas"] = json!(2));
    assert_eq!(e.kstatus("acme"), KStatus::InProgress);

    // Another region: a person must move it, kstatus fails fast instead of waiting for a timeout.
    let other = env_with(|c| c.cluster.region = Some("eu-central-1".into()));
    other.api.put(&connector(NS, "acme", minimal_spec()));
    other.reconcile("acme").await.0.unwrap();
    assert_eq!(
        other.condition("acme", "Stalled").unwrap().reason,
        "RegionMismatch"
    );
    assert_eq!(other.kstatus("acme"), KStatus::Failed);
}

#[tokio::test]
async fn a_missing_secret_is_waited_for_then_stalled_after_the_grace_period() {
    let e = env_with(|c| c.secret_grace = Duration::from_secs(2));
    e.api.put(&connector(NS, "acme", minimal_spec()));
    let (r, action) = e.reconcile("acme").await;
    assert_eq!(r, Ok(()));
    assert_eq!(
        action,
        Action::requeue(Duration::from_secs(2)),
        "requeued for the end of the grace"
    );
    assert_eq!(
        e.condition("acme", "Reconciling").unwrap().reason,
        "SecretNotFound"
    );
    assert_eq!(e.kstatus("acme"), KStatus::InProgress);

    tokio::time::sleep(Duration::from_millis(2100)).await;
    e.reconcile("acme").await.0.unwrap();
    let stalled = e.condition("acme", "Stalled").expect("stalled after the grace");
    assert_eq!(stalled.reason, "SecretNotFound");
    assert!(e.condition("acme", "Reconciling").is_none());
    assert_eq!(e.kstatus("acme"), KStatus::Failed);

    // The Secret appears: deployed, and no longer stalled.
    e.api.put(&acme_secret());
    e.reconcile("acme").await.0.unwrap();
    assert!(e.condition("acme", "Stalled").is_none());
    assert_eq!(e.kstatus("acme"), KStatus::InProgress);
}

// ---- 6. deleted resources ----

#[tokio::test]
async fn a_delete_event_forgets_the_object_instead_of_reconciling_it() {
    let e = env();
    e.api.put(&acme_secret());
    e.api.put(&connector(NS, "acme", minimal_spec()));
    e.api.fail_next(Method::PATCH, "/deployments/acme", 500, 1);
    e.reconcile("acme").await.0.unwrap_err();
    assert_eq!(e.ctx.failure_count("tenants/acme"), 1);
    assert_eq!(e.ctx.metrics.connectors("Ready", "False"), 1);
    assert_eq!(e.ctx.tracked_objects(), 1);

    // `kubectl delete`: the watch delivers the last state, without deletionTimestamp (no finalizer).
    let last = DeserializeGuard(Ok(e.cr("acme")));
    e.api.remove::<LumenoreConnector>(NS, "acme");
    e.api.clear_log();
    assert!(to_reconcile(&e.ctx, watcher::Event::Delete(last)).is_none());
    assert_eq!(e.ctx.metrics.connectors("Ready", "False"), 0);
    assert_eq!(e.ctx.failure_count("tenants/acme"), 0);
    assert_eq!(e.ctx.tracked_objects(), 0);
    assert!(e.api.log().is_empty(), "no API call for a deleted object");

    // Other events still reconcile.
    let applied = DeserializeGuard(Ok(connector(NS, "other", minimal_spec())));
    assert!(to_reconcile(&e.ctx, watcher::Event::Apply(applied)).is_some());
}

#[tokio::test]
async fn a_reconcile_racing_a_deletion_ends_quietly_and_forgets() {
    let e = env();
    e.api.put(&acme_secret());
    e.api.put(&connector(NS, "acme", minimal_spec()));
    e.reconcile("acme").await.0.unwrap();
    let cached = Arc::new(DeserializeGuard(Ok(e.cr("acme"))));
    e.api.remove::<LumenoreConnector>(NS, "acme");
    e.api.set_deployment_ready(NS, "acme", 1);
    // The status write finds the object gone: not an error, nothing kept.
    let r = reconcile(cached, e.ctx.clone()).await;
    assert!(r.is_ok(), "{r:?}");
    assert_eq!(e.ctx.tracked_objects(), 0);
    assert_eq!(e.ctx.metrics.connectors("Ready", "False"), 0);
    assert_eq!(e.ctx.metrics.connectors("Ready", "True"), 0);
}
