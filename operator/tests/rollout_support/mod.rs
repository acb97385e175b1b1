//! Fleet-rollout scenario harness: one "operator process" (tenant reconciler + rollout controller,
//! their caches, a clock) against the in-memory API server, plus a simulated Deployment controller.
//! Dropping a `Fleet` and building a new one on the same `FakeApi` is an operator restart: nothing
//! but the API carries over.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::jiff::Timestamp;
use kube::core::DeserializeGuard;
use kube::runtime::reflector::{self, store::Writer};
use lumenore_operator::crd::LumenoreConnector;
use lumenore_operator::metrics::Metrics;
use lumenore_operator::reconcile::{Context, Guarded, OperatorConfig, reconcile};
use lumenore_operator::rollout::LumenoreFleetRollout;
use lumenore_operator::rollout::controller::{self as rollout_controller, RolloutContext};
use lumenore_operator::rollout::fleet::fill_store;
use lumenore_operator::validate::ClusterIdentity;
use serde_json::{Value, json};

use crate::common::fake_api::FakeApi;

pub const TENANTS: &str = "tenants";
pub const OPS: &str = "lumenore-system";
pub const OLD: &str = "ghcr.io/lumenore/lumenore-connector:0.1.0";
pub const NEW: &str = "ghcr.io/lumenore/lumenore-connector:0.2.0";
pub const PINNED: &str = "registry.example.com/lumenore-connector:0.0.9";

/// A LumenoreConnector with the embedded backend (no Secret needed), `labels`, and optionally its own image.
pub fn tenant(name: &str, labels: &[(&str, &str)], image: Option<&str>) -> LumenoreConnector {
    let mut spec = json!({
        "tenant": name,
        "region": {"cloud": "aws", "name": "eu-west-1"},
        "backend": "embedded",
        "replicas": 1,
    });
    if let Some(i) = image {
        spec["image"] = json!(i);
    }
    let labels: BTreeMap<&str, &str> = labels.iter().copied().collect();
    serde_json::from_value(json!({
        "apiVersion": "lumenore.io/v1alpha1",
        "kind": "LumenoreConnector",
        "metadata": {"name": name, "namespace": TENANTS, "labels": labels},
        "spec": spec,
    }))
    .expect("valid LumenoreConnector")
}

/// A rollout in the operator's namespace.
pub fn rollout(name: &str, spec: Value) -> LumenoreFleetRollout {
    serde_json::from_value(json!({
        "apiVersion": "lumenore.io/v1alpha1",
        "kind": "LumenoreFleetRollout",
        "metadata": {"name": name, "namespace": OPS},
        "spec": spec,
    }))
    .expect("valid LumenoreFleetRollout")
}

/// A manually advanced clock shared by the API-side simulation and the operator.
#[derive(Clone)]
pub struct Clock(Arc<Mutex<Timestamp>>);

impl Clock {
    pub fn new() -> Self {
        Clock(Arc::new(Mutex::new(
            Timestamp::from_second(1_800_000_000).unwrap(),
        )))
    }
    pub fn advance(&self, secs: i64) {
        let mut t = self.0.lock().unwrap();
        *t = Timestamp::from_second(t.as_second() + secs).unwrap();
    }
    pub fn now(&self) -> Timestamp {
        *self.0.lock().unwrap()
    }
}

/// One operator process.
pub struct Fleet {
    pub api: FakeApi,
    pub ctx: Arc<Context>,
    pub rctx: Arc<RolloutContext>,
    tenant_writer: Writer<Guarded>,
    rollout_writer: Writer<LumenoreFleetRollout>,
}

impl Fleet {
    /// Start an operator process (default image `OLD`) against `api`.
    pub fn start(api: &FakeApi, clock: &Clock) -> Fleet {
        let metrics = Arc::new(Metrics::new());
        let ctx = Arc::new(Context::new(
            api.client(),
            OperatorConfig::new(ClusterIdentity::default(), OLD.into()),
            metrics.clone(),
        ));
        let (tenants, tenant_writer) = reflector::store::<Guarded>();
        let (rollouts, rollout_writer) = reflector::store::<LumenoreFleetRollout>();
        ctx.fleet.register_tenants(tenants);
        ctx.fleet.set_rollouts(rollouts);
        let mut rctx = RolloutContext::new(api.client(), ctx.fleet.clone(), metrics, OLD.into());
        let c = clock.clone();
        rctx.clock = Arc::new(move || c.now());
        let mut fleet = Fleet {
            api: api.clone(),
            ctx,
            rctx: Arc::new(rctx),
            tenant_writer,
            rollout_writer,
        };
        fleet.sync();
        fleet
    }

    /// Refresh both caches from the API, as the watches would.
    pub fn sync(&mut self) {
        let client = self.api.clone();
        let tenants: Vec<Guarded> = client
            .names::<LumenoreConnector>(TENANTS)
            .iter()
            .map(|n| DeserializeGuard(Ok(client.get::<LumenoreConnector>(TENANTS, n).unwrap())))
            .collect();
        fill_store(&mut self.tenant_writer, tenants);
        let rollouts: Vec<LumenoreFleetRollout> = client
            .names::<LumenoreFleetRollout>(OPS)
            .iter()
            .map(|n| client.get::<LumenoreFleetRollout>(OPS, n).unwrap())
            .collect();
        fill_store(&mut self.rollout_writer, rollouts);
    }

    /// Reconcile every tenant once (fresh from the API).
    pub async fn reconcile_tenants(&mut self) {
        self.sync();
        for name in self.api.names::<LumenoreConnector>(TENANTS) {
            let lc = self.api.get::<LumenoreConnector>(TENANTS, &name).unwrap();
            reconcile(Arc::new(DeserializeGuard(Ok(lc))), self.ctx.clone())
                .await
                .unwrap_or_else(|e| panic!("tenant {name}: {e}"));
        }
        self.sync();
    }

    /// Reconcile every rollout once.
    pub async fn reconcile_rollouts(&mut self) {
        self.sync();
        for name in self.api.names::<LumenoreFleetRollout>(OPS) {
            let r = self.api.get::<LumenoreFleetRollout>(OPS, &name).unwrap();
            rollout_controller::reconcile(Arc::new(r), self.rctx.clone())
                .await
                .unwrap_or_else(|e| panic!("rollout {name}: {e}"));
        }
        self.sync();
    }

    /// One round: the rollout decides, tenants apply, Deployments roll (`broken` never get Ready on
    /// `NEW`), tenants report; then `secs` pass.
    pub async fn tick(&mut self, clock: &Clock, broken: &[String], secs: i64) {
        self.reconcile_rollouts().await;
        self.reconcile_tenants().await;
        deployment_controller(&self.api, broken);
        self.reconcile_tenants().await;
        clock.advance(secs);
    }

    pub fn rollout(&self, name: &str) -> LumenoreFleetRollout {
        self.api
            .get::<LumenoreFleetRollout>(OPS, name)
            .expect("rollout exists")
    }
}

/// Image of a tenant's connector Deployment.
pub fn deployment_image(api: &FakeApi, name: &str) -> Option<String> {
    api.get::<Deployment>(TENANTS, name)
        .and_then(|d| d.spec.template.spec?.containers.into_iter().next()?.image)
}

/// The Deployment controller: every Deployment whose spec changed rolls out; tenants in `broken`
/// running `NEW` never get a Ready pod and end with ProgressDeadlineExceeded.
pub fn deployment_controller(api: &FakeApi, broken: &[String]) {
    for name in api.names::<Deployment>(TENANTS) {
        let raw = api.get_raw::<Deployment>(TENANTS, &name).unwrap();
        let generation = raw["metadata"]["generation"].clone();
        let image = raw["spec"]["template"]["spec"]["containers"][0]["image"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let fails = broken.contains(&name) && image == NEW;
        let was_failing = raw["status"]["readyReplicas"] == json!(0);
        if raw["status"]["observedGeneration"] == generation && fails == was_failing {
            continue;
        }
        if fails {
            api.edit::<Deployment>(TENANTS, &name, |d| {
                d["status"] = json!({
                    "observedGeneration": generation,
                    "replicas": 1, "updatedReplicas": 1, "readyReplicas": 0, "availableReplicas": 0,
                    "conditions": [
                        {"type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable"},
                        {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}
                    ]
                });
            });
        } else {
            api.set_deployment_ready(TENANTS, &name, 1);
        }
    }
}

/// (reason, type, note) of the Events in `ns`, oldest first.
pub fn events(api: &FakeApi, ns: &str) -> Vec<(String, String, String)> {
    api.events(ns)
        .iter()
        .map(|e| {
            (
                e["reason"].as_str().unwrap_or("").to_string(),
                e["type"].as_str().unwrap_or("").to_string(),
                e["note"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}
