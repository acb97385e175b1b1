//! Reconcile scenarios against the in-memory API server (`common::fake_api`).

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::fake_api::FakeApi;
use common::*;
use http::Method;
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::ObjectMeta;
use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::watcher;
use lumenore_operator::builders::CREDENTIALS_HASH_ANNOTATION;
use lumenore_operator::controller::connectors_for_secret;
use lumenore_operator::crd::{Cloud, LumenoreConnector, MANAGER};
use lumenore_operator::metrics::Metrics;
use lumenore_operator::reconcile::{Context, Error, Guarded, OperatorConfig, error_policy, reconcile};
use lumenore_operator::validate::ClusterIdentity;
use serde_json::{Value, json};

const NS: &str = "tenants";

struct Env {
    api: FakeApi,
    ctx: Arc<Context>,
}

fn env_with(cluster: ClusterIdentity) -> Env {
    let api = FakeApi::new();
    let config = OperatorConfig::new(cluster, "ghcr.io/lumenore/lumenore-connector:0.1.0".into());
    let ctx = Arc::new(Context::new(api.client(), config, Arc::new(Metrics::new())));
    Env { api, ctx }
}

fn env() -> Env {
    env_with(ClusterIdentity {
        cloud: Some(Cloud::Aws),
        region: Some("eu-west-1".into()),
    })
}

fn secret(name: &str, pairs: &[(&str, &str)]) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(NS.into()),
            ..Default::default()
        },
        data: Some(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                .collect::<BTreeMap<_, _>>(),
        ),
        ..Default::default()
    }
}

fn acme_secret() -> Secret {
    secret(
        "acme-creds",
        &[("client-id", "acme-client"), ("client-secret", "s3cr3t-v1")],
    )
}

impl Env {
    fn cr(&self, name: &str) -> LumenoreConnector {
        self.api.get::<LumenoreConnector>(NS, name).expect("CR exists")
    }

    async fn reconcile(&self, name: &str) -> Result<Action, Error> {
        let guard = Arc::new(DeserializeGuard(Ok(self.cr(name))));
        reconcile(guard, self.ctx.clone()).await
    }

    /// Reconcile like the controller does: on error, apply the error policy.
    async fn reconcile_with_policy(&self, name: &str) -> (Result<(), &'static str>, Action) {
        let guard = Arc::new(DeserializeGuard(Ok(self.cr(name))));
        match reconcile(guard.clone(), self.ctx.clone()).await {
            Ok(a) => (Ok(()), a),
            Err(e) => {
                let reason = e.reason();
                let a = error_policy(guard, &e, self.ctx.clone());
                (Err(reason), a)
            }
        }
    }

    fn condition(&self, name: &str, type_: &str) -> Condition {
        self.cr(name)
            .status
            .expect("status written")
            .conditions
            .into_iter()
            .find(|c| c.type_ == type_)
            .unwrap_or_else(|| panic!("condition {type_} missing"))
    }

    fn deployment(&self, name: &str) -> Deployment {
        self.api.get::<Deployment>(NS, name).expect("deployment exists")
    }

    fn hash(&self, name: &str) -> String {
        self.deployment(name)
            .spec
            .template
            .metadata
            .unwrap()
            .annotations
            .unwrap()[CREDENTIALS_HASH_ANNOTATION]
            .clone()
    }

    fn event_reasons(&self) -> Vec<String> {
        self.api
            .events(NS)
            .iter()
            .map(|e| e["reason"].as_str().unwrap_or("").to_string())
            .collect()
    }

    fn status_patches(&self) -> usize {
        self.api
            .log()
            .iter()
            .filter(|l| l.method == Method::PATCH && l.path.ends_with("/status"))
            .count()
    }
}

fn assert_condition(c: &Condition, status: &str, reason: &str) {
    assert_eq!((c.status.as_str(), c.reason.as_str()), (status, reason), "{c:?}");
}

#[tokio::test]
async fn create_builds_every_child_and_reports_progress_until_ready() {
    let e = env();
    e.api.put(&acme_secret());
    e.api.put(&connector(NS, "acme", minimal_spec()));

    let action = e.reconcile("acme").await.unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(300)));
    assert!(e.api.get::<ServiceAccount>(NS, "acme").is_some());
    assert!(e.api.get::<Service>(NS, "acme").is_some());
    assert!(e.api.get::<NetworkPolicy>(NS, "acme").is_some());
    assert!(e.api.get::<PodDisruptionBudget>(NS, "acme").is_some());
    let d = e.deployment("acme");
    assert_eq!(
        d.metadata.owner_references.as_ref().unwrap()[0].uid,
        e.cr("acme").metadata.uid.unwrap()
    );
    assert_eq!(e.hash("acme").len(), 64);

    // Every apply used the operator's field manager, with force.
    for l in e.api.log().iter().filter(|l| l.method == Method::PATCH) {
        assert_eq!(l.field_manager.as_deref(), Some(MANAGER), "{l:?}");
    }

    let st = e.cr("acme").status.unwrap();
    assert_eq!(st.observed_generation, Some(1));
    assert_eq!(st.endpoint.as_deref(), Some("http://acme.tenants.svc:8080/mcp"));
    assert_eq!(
        st.selector.as_deref(),
        Some("app.kubernetes.io/instance=acme,app.kubernetes.io/name=lumenore-connector")
    );
    assert_condition(&e.condition("acme", "Accepted"), "True", "Accepted");
    assert!(
        e.condition("acme", "Accepted")
            .message
            .contains("auth.mode is none")
    );
    assert_condition(&e.condition("acme", "Available"), "False", "NoReplicasAvailable");
    assert_condition(&e.condition("acme", "Ready"), "False", "RolloutInProgress");

    // The Deployment controller brings the pod up; the next reconcile (triggered by the owned
    // Deployment) reports Ready.
    e.api.set_deployment_ready(NS, "acme", 1);
    e.reconcile("acme").await.unwrap();
    assert_condition(
        &e.condition("acme", "Available"),
        "True",
        "MinimumReplicasAvailable",
    );
    assert_condition(&e.condition("acme", "Ready"), "True", "Ready");
    assert_eq!(e.cr("acme").status.unwrap().ready_replicas, Some(1));

    // Events on transitions only: 3 at first, then Available and Ready changed.
    assert_eq!(
        e.event_reasons(),
        vec![
            "Accepted",
            "NoReplicasAvailable",
            "RolloutInProgress",
            "MinimumReplicasAvailable",
            "Ready"
        ]
    );
    let ready_since = e.condition("acme", "Ready").last_transition_time;

    // Nothing changed: no status write, no event, transition time kept.
    e.api.clear_log();
    e.reconcile("acme").await.unwrap();
    assert_eq!(e.status_patches(), 0);
    assert_eq!(e.api.events(NS).len(), 5);
    assert_eq!(e.condition("acme", "Ready").last_transition_time, ready_since);
    assert_eq!(e.ctx.metrics.connectors("Ready", "True"), 1);
}

#[tokio::test]
async fn update_reaches_the_deployment_and_observed_generation() {
    let e = env();
    e.api.put(&acme_secret());
    e.api.put(&connector(NS, "acme", minimal_spec()));
    e.reconcile("acme").await.unwrap();
    e.api.set_deployment_ready(NS, "acme", 1);
    e.reconcile("acme").await.unwrap();
    assert_condition(&e.condition("acme", "Ready"), "True", "Ready");

    e.api.edit::<LumenoreConnector>(NS, "acme", |o| {
        o["spec"]["replicas"] = json!(3);
        o["spec"]["image"] = json!("ghcr.io/lumenore/lumenore-connector:9.9.9");
    });
    e.reconcile("acme").await.unwrap();
    let d = e.deployment("acme");
    assert_eq!(d.spec.replicas, Some(3));
    assert_eq!(
        d.spec.template.spec.unwrap().containers[0].image.as_deref(),
        Some("ghcr.io/lumenore/lumenore-connector:9.9.9")
    );
    let st = e.cr("acme").status.unwrap();
    assert_eq!(st.observed_generation, Some(2));
    assert!(st.conditions.iter().all(|c| c.observed_generation == Some(2)));
    assert_condition(&e.condition("acme", "Ready"), "False", "RolloutInProgress");

    e.api.set_deployment_ready(NS, "acme", 3);
    e.reconcile("acme").await.unwrap();
    assert_condition(&e.condition("acme", "Ready"), "True", "Ready");
    assert_eq!(e.cr("acme").status.unwrap().ready_replicas, Some(3));
}

#[tokio::test]
async fn missing_secret_then_missing_key_then_created_recovers_by_itself() {
    let e = env();
    e.api.put(&connector(NS, "acme", minimal_spec()));

    e.reconcile("acme").await.unwrap();
    assert_condition(&e.condition("acme", "Ready"), "False", "SecretNotFound");
    assert!(e.condition("acme", "Ready").message.contains("acme-creds"));
    assert_condition(&e.condition("acme", "Accepted"), "True", "Accepted");
    assert!(
        e.api.get::<Deployment>(NS, "acme").is_none(),
        "nothing deployed without credentials"
    );
    let ev = e.api.events(NS);
    let warn = ev
        .iter()
        .find(|e| e["reason"] == "SecretNotFound")
        .expect("event");
    assert_eq!(warn["type"], "Warning");

    e.api.put(&secret("acme-creds", &[("client-id", "acme-client")]));
    e.reconcile("acme").await.unwrap();
    assert_condition(&e.condition("acme", "Ready"), "False", "SecretKeyMissing");
    assert!(e.condition("acme", "Ready").message.contains("client-secret"));
    assert!(e.event_reasons().contains(&"SecretKeyMissing".to_string()));

    e.api.put(&acme_secret());
    e.reconcile("acme").await.unwrap();
    assert!(e.api.get::<Deployment>(NS, "acme").is_some());
    assert_condition(&e.condition("acme", "Ready"), "False", "RolloutInProgress");
    e.api.set_deployment_ready(NS, "acme", 1);
    e.reconcile("acme").await.unwrap();
    assert_condition(&e.condition("acme", "Ready"), "True", "Ready");

    // Secret values never reach status, events or the Deployment.
    let everything = format!(
        "{} {} {}",
        serde_json::to_string(&e.cr("acme")).unwrap(),
        serde_json::to_string(&e.api.events(NS)).unwrap(),
        serde_json::to_string(&e.deployment("acme")).unwrap()
    );
    assert!(!everything.contains("s3cr3t-v1") && !everything.contains("acme-client"));
}

#[tokio::test]
async fn rotating_the_secret_changes_the_pod_template_hash() {
    let e = env();
    e.api.put(&acme_secret());
    e.api.put(&connector(NS, "acme", minimal_spec()));
    e.reconcile("acme").await.unwrap();
    let before = e.hash("acme");
    let gen_before = e.deployment("acme").metadata.generation;

    // Unrelated keys in the Secret do not roll the pods.
    e.api.put(&secret(
        "acme-creds",
        &[
            ("client-id", "acme-client"),
            ("client-secret", "s3cr3t-v1"),
            ("unused", "x"),
        ],
    ));
    e.reconcile("acme").await.unwrap();
    assert_eq!(e.hash("acme"), before);
    assert_eq!(e.deployment("acme").metadata.generation, gen_before);

    e.api.put(&secret(
        "acme-creds",
        &[("client-id", "acme-client"), ("client-secret", "s3cr3t-v2")],
    ));
    e.reconcile("acme").await.unwrap();
    let after = e.hash("acme");
    assert_ne!(before, after);
    assert!(
        e.deployment("acme").metadata.generation > gen_before,
        "pod template changed: new rollout"
    );
}

#[tokio::test]
async fn secret_events_map_to_the_connectors_that_use_them() {
    let (reader, mut writer) = reflector::store::<Guarded>();
    let mut apply = |ns: &str, name: &str, spec: Value| {
        let g = DeserializeGuard(Ok(connector(ns, name, spec)));
        writer.apply_watcher_event(&watcher::Event::Apply(g));
    };
    apply(NS, "acme", minimal_spec());
    let mut other = minimal_spec();
    other["tenant"] = json!("acme2");
    apply(NS, "acme2", other.clone());
    apply("elsewhere", "acme3", other);
    apply(NS, "globex", full_spec());

    let names = |refs: Vec<ObjectRef<Guarded>>| {
        let mut v: Vec<String> = refs.into_iter().map(|r| r.name).collect();
        v.sort();
        v
    };
    assert_eq!(
        names(connectors_for_secret(&reader, NS, "acme-creds")),
        vec!["acme", "acme2"]
    );
    assert_eq!(
        names(connectors_for_secret(&reader, "elsewhere", "acme-creds")),
        vec!["acme3"]
    );
    assert_eq!(
        names(connectors_for_secret(&reader, NS, "globex-api-keys")),
        vec!["globex"]
    );
    assert!(connectors_for_secret(&reader, NS, "unrelated").is_empty());
}

#[tokio::test]
async fn a_connector_for_another_region_is_not_deployed_and_says_why() {
    let e = env_with(ClusterIdentity {
        cloud: Some(Cloud::Aws),
        region: Some("eu-central-1".into()),
    });
    e.api.put(&acme_secret());
    e.api.put(&connector(NS, "acme", minimal_spec()));
    let action = e.reconcile("acme").await.unwrap();
    assert_eq!(action, Action::await_change());
    let c = e.condition("acme", "Accepted");
    assert_condition(&c, "False", "RegionMismatch");
    assert!(
        c.message.contains("eu-central-1") && c.message.contains("eu-west-1"),
        "{}",
        c.message
    );
    assert_condition(&e.condition("acme", "Ready"), "False", "RegionMismatch");
    assert!(e.api.names::<Deployment>(NS).is_empty());
    assert!(e.api.names::<Service>(NS).is_empty());
    assert!(e.event_reasons().contains(&"RegionMismatch".to_string()));

    let e = env_with(ClusterIdentity {
        cloud: Some(Cloud::Gcp),
        region: None,
    });
    e.api.put(&connector(NS, "acme", minimal_spec()));
    e.reconcile("acme").await.unwrap();
    let c = e.condition("acme", "Accepted");
    assert_condition(&c, "False", "RegionMismatch");
    assert!(c.message.contains("cloud gcp"), "{}", c.message);
}

#[tokio::test]
async fn suspend_scales_to_zero_keeps_objects_and_says_so() {
    let e = env();
    e.api.put(&acme_secret());
    let mut spec = minimal_spec();
    spec["replicas"] = json!(2);
    e.api.put(&connector(NS, "acme", spec));
    e.reconcile("acme").await.unwrap();
    e.api.set_deployment_ready(NS, "acme", 2);
    e.reconcile("acme").await.unwrap();
    assert!(e.api.get::<PodDisruptionBudget>(NS, "acme").is_some());

    e.api
        .edit::<LumenoreConnector>(NS, "acme", |o| o["spec"]["suspend"] = json!(true));
    e.reconcile("acme").await.unwrap();
    assert_eq!(e.deployment("acme").spec.replicas, Some(0));
    assert!(
        e.api.get::<PodDisruptionBudget>(NS, "acme").is_none(),
        "a PDB would block a scale to zero drain"
    );
    assert!(e.api.get::<Service>(NS, "acme").is_some());
    assert!(e.api.get::<ServiceAccount>(NS, "acme").is_some());
    assert_condition(&e.condition("acme", "Ready"), "False", "Suspended");
    assert_condition(&e.condition("acme", "Available"), "False", "Suspended");
    assert!(e.condition("acme", "Ready").message.contains("suspend"));

    e.api
        .edit::<LumenoreConnector>(NS, "acme", |o| o["spec"]["suspend"] = json!(false));
    e.reconcile("acme").await.unwrap();
    assert_eq!(e.deployment("acme").spec.replicas, Some(2));
    assert!(e.api.get::<PodDisruptionBudget>(NS, "acme").is_some());
}

#[tokio::test]
async fn children_no_longer_asked_for_are_pruned_but_foreign_objects_are_not() {
    let e = env();
    e.api.put(&acme_secret());
    e.api.put(&connector(NS, "acme", minimal_spec()));
    e.reconcile("acme").await.unwrap();
    assert!(e.api.get::<NetworkPolicy>(NS, "acme").is_some());

    e.api.edit::<LumenoreConnector>(NS, "acme", |o| {
        o["spec"]["network"]["networkPolicy"] = json!(false);
        o["spec"]["replicas"] = json!(1);
    });
    e.reconcile("acme").await.unwrap();
    assert!(e.api.get::<NetworkPolicy>(NS, "acme").is_none());
    assert!(e.api.get::<PodDisruptionBudget>(NS, "acme").is_none());

    // Someone else's PDB with the same name is left alone.
    e.api.put(&PodDisruptionBudget {
        metadata: ObjectMeta {
            name: Some("acme".into()),
            namespace: Some(NS.into()),
            ..Default::default()
        },
        ..Default::default()
    });
    e.reconcile("acme").await.unwrap();
    assert!(e.api.get::<PodDisruptionBudget>(NS, "acme").is_some());
}

#[tokio::test]
async fn deleting_the_cr_removes_its_children_through_owner_references() {
    let e = env();
    e.api.put(&acme_secret());
    e.api.put(&connector(NS, "acme", minimal_spec()));
    e.reconcile("acme").await.unwrap();
    e.api.put(&secret("unrelated", &[("a", "b")]));

    // A CR being deleted is not reconciled again.
    e.api.edit::<LumenoreConnector>(NS, "acme", |o| {
        o["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z")
    });
    e.api.clear_log();
    assert_eq!(e.reconcile("acme").await.unwrap(), Action::await_change());
    assert!(
        e.api.log().is_empty(),
        "no API call for a deleted CR: {:?}",
        e.api.log()
    );

    e.api.remove::<LumenoreConnector>(NS, "acme");
    assert_eq!(e.api.collect_garbage(), 5);
    assert!(e.api.names::<Deployment>(NS).is_empty());
    assert!(
        e.api.get::<Secret>(NS, "acme-creds").is_some(),
        "the Secret is not owned"
    );
}

#[tokio::test]
async fn out_of_band_edits_survive_reconciles() {
    let e = env();
    e.api.put(&acme_secret());
    e.api.put(&connector(NS, "acme", minimal_spec()));
    e.reconcile("acme").await.unwrap();

    // An HPA sets replicas, `kubectl rollout restart` sets the restart annotation, another tool labels the Service.
    e.api.edit::<Deployment>(NS, "acme", |d| {
        d["spec"]["replicas"] = json!(7);
        d["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"] =
            json!("2026-11-21T10:00:00Z");
    });
    e.api
        .edit::<Service>(NS, "acme", |s| s["metadata"]["labels"]["team"] = json!("data"));
    e.reconcile("acme").await.unwrap();

    let d = e.deployment("acme");
    assert_eq!(d.spec.replicas, Some(7));
    let ann = d.spec.template.metadata.unwrap().annotations.unwrap();
    assert_eq!(ann["kubectl.kubernetes.io/restartedAt"], "2026-11-21T10:00:00Z");
    assert!(ann.contains_key(CREDENTIALS_HASH_ANNOTATION));
    assert_eq!(
        e.api.get::<Service>(NS, "acme").unwrap().metadata.labels.unwrap()["team"],
        "data"
    );

    // …because the operator never claims those fields in what it applies.
    let applied = e.api.applied_by::<Deployment>(NS, "acme", MANAGER).unwrap();
    assert!(applied["spec"].get("replicas").is_none());
    assert!(
        applied["spec"]["template"]["metadata"]["annotations"]
            .get("kubectl.kubernetes.io/restartedAt")
            .is_none()
    );
}

#[tokio::test]
async fn conflicts_and_server_errors_back_off_per_object_and_recover() {
    let e = env();
    e.api.put(&acme_secret());
    e.api.put(&connector(NS, "acme", minimal_spec()));
    e.api.put(&connector(NS, "other", {
        let mut s = minimal_spec();
        s["tenant"] = json!("other");
        s
    }));

    e.api.fail_next(Method::PATCH, "/deployments/acme", 409, 2);
    let (r, a) = e.reconcile_with_policy("acme").await;
    assert_eq!(r, Err("Conflict"));
    assert_eq!(a, Action::requeue(Duration::from_secs(1)));
    let (r, a) = e.reconcile_with_policy("acme").await;
    assert_eq!(r, Err("Conflict"));
    assert_eq!(a, Action::requeue(Duration::from_secs(2)), "exponential backoff");
    assert_eq!(e.ctx.failure_count("tenants/acme"), 2);
    // Another object is not slowed down by acme's failures.
    assert_eq!(e.ctx.failure_count("tenants/other"), 0);
    let (r, _) = e.reconcile_with_policy("other").await;
    assert_eq!(r, Ok(()));

    // The fault is gone: success resets the backoff.
    let (r, a) = e.reconcile_with_policy("acme").await;
    assert_eq!(r, Ok(()));
    assert_eq!(a, Action::requeue(Duration::from_secs(300)));
    assert_eq!(e.ctx.failure_count("tenants/acme"), 0);

    // A 500 reading the Secret: nothing applied, nothing written to status, retried.
    e.api.fail_next(Method::GET, "/secrets/acme-creds", 500, 1);
    e.api.clear_log();
    let (r, a) = e.reconcile_with_policy("acme").await;
    assert_eq!(r, Err("ServerError"));
    assert_eq!(a, Action::requeue(Duration::from_secs(1)));
    assert_eq!(e.status_patches(), 0);
    let (r, _) = e.reconcile_with_policy("acme").await;
    assert_eq!(r, Ok(()));

    // A 503 on the status write is an error too (the next attempt writes it).
    e.api
        .fail_next(Method::PATCH, "/lumenoreconnectors/acme/status", 503, 1);
    e.api.set_deployment_ready(NS, "acme", 1);
    let (r, _) = e.reconcile_with_policy("acme").await;
    assert_eq!(r, Err("ServerError"));
    let (r, _) = e.reconcile_with_policy("acme").await;
    assert_eq!(r, Ok(()));
    assert_condition(&e.condition("acme", "Ready"), "True", "Ready");

    let metrics = e.ctx.metrics.encode();
    assert!(
        metrics.contains("lumenore_operator_reconcile_failures_total{reason=\"Conflict\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("lumenore_operator_reconcile_failures_total{reason=\"ServerError\"} 2"),
        "{metrics}"
    );
}

#[tokio::test]
async fn backoff_is_capped() {
    let e = env();
    let cfg = &e.ctx.config;
    assert_eq!(
        lumenore_operator::reconcile::backoff_delay(cfg, 1),
        Duration::from_secs(1)
    );
    assert_eq!(
        lumenore_operator::reconcile::backoff_delay(cfg, 4),
        Duration::from_secs(8)
    );
    assert_eq!(
        lumenore_operator::reconcile::backoff_delay(cfg, 40),
        Duration::from_secs(300)
    );
}

#[tokio::test]
async fn a_malformed_object_is_reported_and_skipped() {
    let e = env();
    // Stored before a schema existed: an unknown cloud does not deserialize.
    let raw = json!({
        "apiVersion": "lumenore.io/v1alpha1", "kind": "LumenoreConnector",
        "metadata": {"name": "broken", "namespace": NS},
        "spec": {"tenant": "broken", "region": {"cloud": "mars", "name": "olympus"}}
    });
    let mut cr: LumenoreConnector = serde_json::from_value(json!({
        "apiVersion": "lumenore.io/v1alpha1", "kind": "LumenoreConnector",
        "metadata": {"name": "broken", "namespace": NS},
        "spec": minimal_spec()
    }))
    .unwrap();
    cr.metadata.name = Some("broken".into());
    e.api.put(&cr);
    e.api
        .edit::<LumenoreConnector>(NS, "broken", |o| o["spec"] = raw["spec"].clone());
    let stored = e.api.get_raw::<LumenoreConnector>(NS, "broken").unwrap();
    let guard: Guarded = serde_json::from_value(stored).unwrap();
    assert!(guard.0.is_err(), "the object must not deserialize");

    let action = reconcile(Arc::new(guard), e.ctx.clone()).await.unwrap();
    assert_eq!(action, Action::await_change(), "skipped until it changes");
    let status = &e.api.get_raw::<LumenoreConnector>(NS, "broken").unwrap()["status"];
    let accepted = status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Accepted")
        .unwrap();
    assert_eq!(accepted["status"], "False");
    assert_eq!(accepted["reason"], "InvalidObject");
    assert!(
        accepted["message"].as_str().unwrap().contains("mars"),
        "{accepted}"
    );
    assert!(e.event_reasons().contains(&"InvalidObject".to_string()));

    // Other objects keep working.
    e.api.put(&acme_secret());
    e.api.put(&connector(NS, "acme", minimal_spec()));
    e.reconcile("acme").await.unwrap();
    assert!(e.api.get::<Deployment>(NS, "acme").is_some());
}

#[tokio::test]
async fn an_invalid_spec_is_rejected_with_the_rule() {
    let e = env();
    e.api.put(&acme_secret());
    let mut spec = minimal_spec();
    spec["tenant"] = json!("Not_A_Label");
    e.api.put(&connector(NS, "acme", spec));
    assert_eq!(e.reconcile("acme").await.unwrap(), Action::await_change());
    let c = e.condition("acme", "Accepted");
    assert_condition(&c, "False", "InvalidSpec");
    assert!(c.message.contains("DNS label"));
    assert!(e.api.names::<Deployment>(NS).is_empty());
}

/// A bad `spec.telemetry.otlp` (stored before the CRD's rules, or through a server without them) is
/// refused in the status and an Event naming the field and the rule, and nothing is deployed. The
/// headers Secret is checked like the credentials, and its rotation rolls the pods.
#[tokio::test]
async fn telemetry_is_validated_and_its_headers_secret_rolls_the_pods() {
    let e = env();
    e.api.put(&acme_secret());
    let mut spec = minimal_spec();
    spec["telemetry"] = json!({"otlp": {"endpoint": "http://otel-collector.observability.svc"}});
    e.api.put(&connector(NS, "acme", spec.clone()));
    assert_eq!(e.reconcile("acme").await.unwrap(), Action::await_change());
    let c = e.condition("acme", "Accepted");
    assert_condition(&c, "False", "InvalidSpec");
    assert!(
        c.message.contains("spec.telemetry.otlp.endpoint") && c.message.contains("explicit port"),
        "{}",
        c.message
    );
    assert!(e.event_reasons().contains(&"InvalidSpec".to_string()));
    assert!(e.api.names::<Deployment>(NS).is_empty());
    for (field, value, rule) in [
        ("samplingRatio", json!(1.5), "between 0 and 1"),
        ("serviceName", json!("-svc"), "starting with a letter or digit"),
    ] {
        let mut bad = spec.clone();
        bad["telemetry"]["otlp"]["endpoint"] = json!("http://otel-collector.observability.svc:4318");
        bad["telemetry"]["otlp"][field] = value;
        e.api.put(&connector(NS, "acme", bad));
        e.reconcile("acme").await.unwrap();
        let c = e.condition("acme", "Accepted");
        assert!(
            c.message.contains(&format!("spec.telemetry.otlp.{field}")) && c.message.contains(rule),
            "{}",
            c.message
        );
    }

    spec["telemetry"]["otlp"] = json!({
        "endpoint": "http://otel-collector.observability.svc:4318",
        "headersSecretRef": {"name": "acme-otlp", "key": "headers"}
    });
    e.api.put(&connector(NS, "acme", spec));
    e.reconcile("acme").await.unwrap();
    assert_condition(&e.condition("acme", "Ready"), "False", "SecretNotFound");
    assert!(e.condition("acme", "Ready").message.contains("acme-otlp"));
    e.api
        .put(&secret("acme-otlp", &[("headers", "authorization=Bearer one")]));
    e.reconcile("acme").await.unwrap();
    assert_condition(&e.condition("acme", "Accepted"), "True", "Accepted");
    let before = e.hash("acme");
    e.api
        .put(&secret("acme-otlp", &[("headers", "authorization=Bearer two")]));
    e.reconcile("acme").await.unwrap();
    assert_ne!(
        e.hash("acme"),
        before,
        "the headers are read at start: a rotation rolls the pods"
    );
    let store_has =
        |lc: &LumenoreConnector| lumenore_operator::inputs::referenced_secrets(lc).any(|s| s == "acme-otlp");
    assert!(
        store_has(&e.cr("acme")),
        "the headers Secret's changes reach the connector"
    );
}

/// Issue 23: the rate-limit store's Secrets are checked like the credentials (a missing one is in the
/// status, not a pod stuck in CreateContainerConfigError), a URL the connector would refuse is refused in
/// the status, and a rotated password or CA rolls the pods (the connector reads both at start). The
/// shares ConfigMap follows the Deployment's ready replicas and goes with the rates.
#[tokio::test]
async fn the_rate_limit_stores_secrets_are_checked_and_roll_the_pods() {
    use k8s_openapi::api::core::v1::ConfigMap;
    let e = env();
    e.api.put(&acme_secret());
    let mut spec = minimal_spec();
    spec["rateLimits"] = json!({"tenantPerMinute": 600, "store": {"redis": {
        "url": "redis://redis.platform.svc:99999",
        "passwordSecretRef": {"name": "acme-redis", "key": "password"}}}});
    e.api.put(&connector(NS, "acme", spec.clone()));
    e.reconcile("acme").await.unwrap();
    let c = e.condition("acme", "Accepted");
    assert_condition(&c, "False", "InvalidSpec");
    assert!(
        c.message.contains("spec.rateLimits.store.redis.url"),
        "{}",
        c.message
    );
    assert!(e.api.names::<Deployment>(NS).is_empty());

    spec["rateLimits"]["store"]["redis"]["url"] = json!("rediss://redis.platform.svc:6380/0");
    spec["rateLimits"]["store"]["redis"]["caSecretRef"] = json!({"name": "acme-redis-ca", "key": "ca.pem"});
    e.api.put(&connector(NS, "acme", spec.clone()));
    e.reconcile("acme").await.unwrap();
    assert_condition(&e.condition("acme", "Ready"), "False", "SecretNotFound");
    assert!(e.condition("acme", "Ready").message.contains("acme-redis"));
    e.api.put(&secret("acme-redis", &[("password", "one")]));
    e.reconcile("acme").await.unwrap();
    assert!(e.condition("acme", "Ready").message.contains("acme-redis-ca"));
    e.api.put(&secret(
        "acme-redis-ca",
        &[("ca.pem", "-----BEGIN CERTIFICATE-----one")],
    ));
    e.reconcile("acme").await.unwrap();
    assert_condition(&e.condition("acme", "Accepted"), "True", "Accepted");
    let first = e.hash("acme");
    e.api.put(&secret("acme-redis", &[("password", "two")]));
    e.reconcile("acme").await.unwrap();
    let second = e.hash("acme");
    assert_ne!(second, first, "a rotated store password rolls the pods");
    e.api.put(&secret(
        "acme-redis-ca",
        &[("ca.pem", "-----BEGIN CERTIFICATE-----two")],
    ));
    e.reconcile("acme").await.unwrap();
    assert_ne!(e.hash("acme"), second, "a rotated CA bundle rolls the pods");
    let cr = e.cr("acme");
    let referenced: Vec<&str> = lumenore_operator::inputs::referenced_secrets(&cr).collect();
    assert!(
        referenced.contains(&"acme-redis") && referenced.contains(&"acme-redis-ca"),
        "{referenced:?}"
    );

    // The shares ConfigMap: made with the Deployment, removed with the rates.
    let shares = |e: &Env| {
        e.api
            .get_raw::<ConfigMap>(NS, "acme-rate-limits")
            .map(|cm| cm["data"]["shares"].clone())
    };
    assert_eq!(shares(&e), Some(json!("1")));
    spec.as_object_mut().unwrap().remove("rateLimits");
    e.api.put(&connector(NS, "acme", spec));
    e.reconcile("acme").await.unwrap();
    assert_eq!(shares(&e), None, "pruned when the rates go");
}

#[tokio::test]
async fn api_keys_secret_is_checked_but_does_not_roll_pods() {
    let e = env_with(ClusterIdentity::default());
    e.api.put(&secret("globex-creds", &[("token", "tok-1")]));
    e.api.put(&connector(NS, "globex", full_spec()));
    e.reconcile("globex").await.unwrap();
    assert_condition(&e.condition("globex", "Ready"), "False", "SecretNotFound");
    assert!(e.condition("globex", "Ready").message.contains("globex-api-keys"));

    e.api
        .put(&secret("globex-api-keys", &[("keys.json", "[{\"id\":\"k1\"}]")]));
    e.reconcile("globex").await.unwrap();
    let before = e.hash("globex");
    e.api
        .put(&secret("globex-api-keys", &[("keys.json", "[{\"id\":\"k2\"}]")]));
    e.reconcile("globex").await.unwrap();
    assert_eq!(
        e.hash("globex"),
        before,
        "keys are reloaded in place by the connector"
    );
}

#[tokio::test]
async fn a_stale_cached_object_does_not_repeat_events() {
    let e = env();
    e.api.put(&acme_secret());
    e.api.put(&connector(NS, "acme", minimal_spec()));
    let stale = e.cr("acme"); // no status yet
    e.reconcile("acme").await.unwrap();
    assert_eq!(e.api.events(NS).len(), 3);
    // The Deployment changed before the watch delivered our status write: the cached CR is stale.
    e.api.clear_log();
    reconcile(Arc::new(DeserializeGuard(Ok(stale))), e.ctx.clone())
        .await
        .unwrap();
    // (The event recorder would fold a repeat into a series with a PATCH: count any event write.)
    let event_writes: Vec<_> = e
        .api
        .log()
        .into_iter()
        .filter(|l| l.path.contains("/events"))
        .collect();
    assert!(event_writes.is_empty(), "{event_writes:?}");
}

/// Defect: suspend force-applied `replicas: 0`; on resume with no `spec.replicas` (an HPA owns the
/// count) the hand-over copied the live 0, and an HPA never scales a target at 0.
#[tokio::test]
async fn suspend_then_resume_with_an_hpa_scales_again() {
    let e = env();
    e.api.put(&acme_secret());
    e.api.put(&connector(NS, "acme", minimal_spec()));
    e.reconcile("acme").await.unwrap();
    e.api
        .edit::<LumenoreConnector>(NS, "acme", |o| o["spec"]["suspend"] = json!(true));
    e.reconcile("acme").await.unwrap();
    assert_eq!(e.deployment("acme").spec.replicas, Some(0));
    e.api
        .edit::<LumenoreConnector>(NS, "acme", |o| o["spec"]["suspend"] = json!(false));
    e.reconcile("acme").await.unwrap();
    let replicas = e.deployment("acme").spec.replicas;
    assert!(
        replicas.is_some_and(|r| r >= 1),
        "resumed at {replicas:?}: an HPA cannot scale a target at 0"
    );
}

/// Defect: after a 410 the watcher re-lists and emits no Delete for a CR deleted meanwhile, so its
/// per-object state and condition gauges stayed until a restart.
#[tokio::test]
async fn tenants_deleted_during_a_relist_are_forgotten() {
    use lumenore_operator::controller::Relist;
    let e = env();
    e.api.put(&acme_secret());
    e.api.put(&connector(NS, "acme", minimal_spec()));
    let mut other = minimal_spec();
    other["tenant"] = json!("globex");
    e.api.put(&connector(NS, "globex", other));
    e.reconcile("acme").await.unwrap();
    e.reconcile("globex").await.unwrap();
    assert_eq!(e.ctx.tracked_objects(), 2);
    let not_ready = |e: &Env| e.ctx.metrics.connectors("Ready", "False");
    assert_eq!(not_ready(&e), 2);

    // globex is deleted while the watch is down; the re-list shows only acme.
    let mut relist = Relist::new(Some(NS.into()));
    let acme: Guarded = DeserializeGuard(Ok(e.cr("acme")));
    relist.observe(&e.ctx, &watcher::Event::Init);
    relist.observe(&e.ctx, &watcher::Event::InitApply(acme));
    assert_eq!(
        e.ctx.tracked_objects(),
        2,
        "nothing is forgotten before the list is complete"
    );
    relist.observe(&e.ctx, &watcher::Event::InitDone);
    assert_eq!(e.ctx.tracked_objects(), 1);
    assert_eq!(not_ready(&e), 1, "the deleted tenant no longer counts");

    // A re-list of another namespace's watch forgets nothing here.
    let mut elsewhere = Relist::new(Some("other".into()));
    elsewhere.observe(&e.ctx, &watcher::Event::Init);
    elsewhere.observe(&e.ctx, &watcher::Event::InitDone);
    assert_eq!(e.ctx.tracked_objects(), 1);
}

/// Defect: two installs with overlapping scopes shared the field manager `lumenore-operator` and
/// silently took each other's objects over in turn.
#[tokio::test]
async fn a_second_install_does_not_take_over_the_first_ones_objects() {
    let first = env();
    first.api.put(&acme_secret());
    let mut spec = minimal_spec();
    spec["replicas"] = json!(2);
    first.api.put(&connector(NS, "acme", spec));
    first.reconcile("acme").await.unwrap();
    assert_eq!(first.deployment("acme").spec.replicas, Some(2));

    // A second install, its own field manager, another default image: its apply conflicts.
    let mut config = OperatorConfig::new(
        ClusterIdentity {
            cloud: Some(Cloud::Aws),
            region: Some("eu-west-1".into()),
        },
        "ghcr.io/lumenore/lumenore-connector:0.9.0".into(),
    );
    config.field_manager = "lumenore-operator.second".into();
    let second = Env {
        api: first.api.clone(),
        ctx: Arc::new(Context::new(first.api.client(), config, Arc::new(Metrics::new()))),
    };
    let err = second.reconcile("acme").await.unwrap_err();
    assert!(
        err.to_string().contains("another lumenore-operator install"),
        "{err}"
    );
    let image = |e: &Env| {
        e.deployment("acme").spec.template.spec.unwrap().containers[0]
            .image
            .clone()
    };
    assert_eq!(
        image(&first).as_deref(),
        Some("ghcr.io/lumenore/lumenore-connector:0.1.0"),
        "the first install's Deployment is untouched"
    );
    // Writers that are not this operator are still overridden (kubectl edit of an owned field).
    first
        .api
        .edit_as::<Deployment>(NS, "acme", "kubectl-edit", |d| d["spec"]["replicas"] = json!(5));
    first.reconcile("acme").await.unwrap();
    assert_eq!(first.deployment("acme").spec.replicas, Some(2));
}

#[test]
fn conflicting_managers_are_read_from_the_api_servers_message() {
    use lumenore_operator::reconcile::conflicting_managers;
    // The wording of structured-merge-diff's Conflicts.Error as kube-apiserver returns it.
    let msg = "Apply failed with 2 conflicts: conflicts with \"kubectl-edit\" using apps/v1:\n- .spec.replicas\nconflict with \"lumenore-operator.b\" using apps/v1: .spec.template";
    assert_eq!(
        conflicting_managers(msg),
        vec!["kubectl-edit", "lumenore-operator.b"]
    );
    let msg = "Apply failed with 1 conflict: conflict with \"kubectl-client-side-apply\" using apps/v1: .spec.replicas";
    assert_eq!(conflicting_managers(msg), vec!["kubectl-client-side-apply"]);
}

/// Defect: the NetworkPolicy's egress ports were the ports of the URLs, i.e. Service ports, but CNIs
/// match egress after the Service's translation, on the pod's port: an in-cluster collector whose
/// `targetPort` differs was blocked. The operator reads the Service (and, for a named targetPort, its
/// EndpointSlices) and allows the pods' port; what it cannot resolve keeps the URL port and is listed
/// in the `lumenore.io/egress-unresolved` annotation.
#[tokio::test]
async fn networkpolicy_egress_uses_the_service_target_port() {
    use k8s_openapi::api::core::v1::{ServicePort, ServiceSpec};
    use k8s_openapi::api::discovery::v1::{EndpointPort, EndpointSlice};
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    const UNRESOLVED: &str = "lumenore.io/egress-unresolved";
    let e = env();
    e.api.put(&acme_secret());
    let collector = |target: IntOrString| Service {
        metadata: ObjectMeta {
            name: Some("otel-collector".into()),
            namespace: Some("observability".into()),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            selector: Some(BTreeMap::from([("app".to_string(), "collector".to_string())])),
            cluster_ip: Some("10.96.0.40".into()),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: 4318,
                protocol: Some("TCP".into()),
                target_port: Some(target),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    };
    let slice = |name: &str, service: &str, port: i32| EndpointSlice {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("observability".into()),
            labels: Some(BTreeMap::from([(
                "kubernetes.io/service-name".to_string(),
                service.to_string(),
            )])),
            ..Default::default()
        },
        address_type: "IPv4".into(),
        endpoints: Some(vec![]),
        ports: Some(vec![EndpointPort {
            name: Some("http".into()),
            port: Some(port),
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
    };
    let policy = |e: &Env| -> (Vec<i32>, BTreeMap<String, String>) {
        let np = e
            .api
            .get::<NetworkPolicy>(NS, "acme")
            .expect("NetworkPolicy applied");
        let ports = np.spec.unwrap().egress.unwrap()[1]
            .ports
            .clone()
            .unwrap()
            .into_iter()
            .map(|p| match p.port {
                Some(IntOrString::Int(n)) => n,
                other => panic!("{other:?}"),
            })
            .collect();
        (ports, np.metadata.annotations.unwrap_or_default())
    };

    // A numeric targetPort: the pods' port is allowed, not the Service's.
    e.api.put(&collector(IntOrString::Int(14318)));
    let mut spec = minimal_spec();
    spec["telemetry"] = json!({"otlp": {"endpoint": "http://otel-collector.observability.svc:4318"}});
    e.api.put(&connector(NS, "acme", spec.clone()));
    e.reconcile("acme").await.unwrap();
    let (ports, annotations) = policy(&e);
    assert_eq!(ports, [443, 14318], "{annotations:?}");
    assert!(
        annotations["lumenore.io/egress-hosts"].contains("otel-collector.observability.svc:4318"),
        "the hosts to cover keep the URL's port: {annotations:?}"
    );
    assert!(!annotations.contains_key(UNRESOLVED), "{annotations:?}");

    // A named targetPort and no EndpointSlice yet: the URL port is kept, and said so.
    e.api.put(&collector(IntOrString::String("otlp-http".into())));
    e.reconcile("acme").await.unwrap();
    let (ports, annotations) = policy(&e);
    assert_eq!(ports, [443, 4318]);
    assert!(
        annotations
            .get(UNRESOLVED)
            .is_some_and(|v| v.contains("otel-collector.observability.svc:4318")),
        "{annotations:?}"
    );

    // EndpointSlices name each port after the Service's port (`http`, not the targetPort's name) and
    // carry the pods' number; another Service's slice is not read.
    e.api.put(&slice("otel-collector-x7k2p", "otel-collector", 24318));
    e.api.put(&slice("jaeger-q9z4m", "jaeger", 9999));
    e.reconcile("acme").await.unwrap();
    let (ports, annotations) = policy(&e);
    assert_eq!(ports, [443, 24318]);
    assert!(!annotations.contains_key(UNRESOLVED), "{annotations:?}");

    // `<svc>.<ns>` is a Service when one answers the GET ...
    spec["telemetry"]["otlp"]["endpoint"] = json!("http://otel-collector.observability:4318");
    e.api.put(&connector(NS, "acme", spec.clone()));
    e.reconcile("acme").await.unwrap();
    assert_eq!(policy(&e).0, [443, 24318]);

    // ... and a public name of two labels is not: no such Service (404), or one the operator may not
    // read (403), keeps the URL's port without a word.
    spec["serverUrl"] = json!("https://lumenore.example:8443");
    e.api.put(&connector(NS, "acme", spec.clone()));
    e.reconcile("acme").await.unwrap();
    let (ports, annotations) = policy(&e);
    assert_eq!(ports, [8443, 24318]);
    assert!(!annotations.contains_key(UNRESOLVED), "{annotations:?}");
    e.api
        .fail_next(Method::GET, "/namespaces/example/services/lumenore", 403, 1);
    e.reconcile("acme").await.unwrap();
    assert_eq!(policy(&e).0, [8443, 24318]);

    // Any cluster domain after `.svc`; a Service the operator may not read keeps the URL port, said so.
    spec["telemetry"]["otlp"]["endpoint"] =
        json!("http://otel-collector.observability.svc.cluster.local:4318");
    e.api.put(&connector(NS, "acme", spec.clone()));
    e.api.fail_next(
        Method::GET,
        "/namespaces/observability/services/otel-collector",
        403,
        1,
    );
    e.reconcile("acme").await.unwrap();
    let (ports, annotations) = policy(&e);
    assert_eq!(ports, [4318, 8443]);
    assert!(
        annotations
            .get(UNRESOLVED)
            .is_some_and(|v| v.contains("otel-collector.observability.svc.cluster.local:4318")),
        "{annotations:?}"
    );
    e.reconcile("acme").await.unwrap();
    assert_eq!(policy(&e).0, [8443, 24318]);
}

/// Defect: `prune` deleted after a GET with no UID precondition, so an object re-created under the
/// same name between the two (by another controller, or a person) was deleted instead.
#[tokio::test]
async fn prune_never_deletes_an_object_re_created_meanwhile() {
    use tower::ServiceExt;
    let e = env();
    e.api.put(&acme_secret());
    e.api.put(&connector(NS, "acme", minimal_spec()));
    e.reconcile("acme").await.unwrap();
    let ours = e.api.get::<NetworkPolicy>(NS, "acme").unwrap();
    let uid = e.cr("acme").metadata.uid.unwrap();
    let mut replacement = ours.clone();
    replacement.metadata.uid = None;
    replacement.metadata.resource_version = None;
    replacement.metadata.owner_references = None;
    // The race, injected exactly: after prune's GET, before its DELETE arrives, the policy is
    // replaced by another object of the same name.
    let api = e.api.clone();
    let racing = tower::util::BoxCloneService::new(tower::service_fn(
        move |req: http::Request<kube::client::Body>| {
            let api = api.clone();
            let replacement = replacement.clone();
            async move {
                if req.method() == http::Method::DELETE && req.uri().path().ends_with("/networkpolicies/acme")
                {
                    api.remove::<NetworkPolicy>(NS, "acme");
                    api.put(&replacement);
                }
                api.service().oneshot(req).await
            }
        },
    ));
    let client = kube::Client::new(racing, NS);
    let deleted = lumenore_operator::reconcile::prune::<NetworkPolicy>(&client, NS, "acme", &uid)
        .await
        .unwrap();
    assert!(!deleted, "the replacement must not be deleted");
    let left = e
        .api
        .get::<NetworkPolicy>(NS, "acme")
        .expect("the replacement is still there");
    assert_ne!(left.metadata.uid, ours.metadata.uid, "a new object, not ours");
}
