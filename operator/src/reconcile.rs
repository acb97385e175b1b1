//! The reconciler: read inputs → validate → build children → apply → status.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event as K8sEvent;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, MicroTime, Time};
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ObjectMeta, Patch, PatchParams, PostParams};
use kube::core::DeserializeGuard;
use kube::core::error_boundary::InvalidObject;
use kube::runtime::controller::Action;
use kube::runtime::events::Reporter;
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::builders::{self, BuildInputs};
use crate::crd::{LumenoreConnector, LumenoreConnectorStatus, MANAGER};
use crate::inputs;
use crate::metrics::Metrics;
use crate::status::{self, DeploymentObservation, Outcome};
use crate::validate::{self, ClusterIdentity, Rejection};

/// The object type the controller watches: a CR that may fail to deserialize.
pub type Guarded = DeserializeGuard<LumenoreConnector>;

/// Settings of the reconciler.
#[derive(Clone, Debug)]
pub struct OperatorConfig {
    pub cluster: ClusterIdentity,
    pub default_image: String,
    pub reporter: Reporter,
    /// Resync period of a healthy object.
    pub resync: Duration,
    /// First retry delay after a failure; doubles per consecutive failure.
    pub backoff_base: Duration,
    /// Longest retry delay.
    pub backoff_max: Duration,
}

impl OperatorConfig {
    pub fn new(cluster: ClusterIdentity, default_image: String) -> Self {
        OperatorConfig {
            cluster,
            default_image,
            reporter: Reporter {
                controller: MANAGER.into(),
                instance: std::env::var("POD_NAME").ok(),
            },
            resync: Duration::from_secs(300),
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
        }
    }
}

/// Shared state of the reconciles.
pub struct Context {
    pub client: Client,
    pub config: OperatorConfig,
    pub metrics: Arc<Metrics>,
    event_seq: AtomicU64,
    failures: Mutex<HashMap<String, u32>>,
    /// Conditions this operator last wrote, per object: the cached CR may not show our own last
    /// status write yet, and Events must not repeat because of that.
    written: Mutex<HashMap<String, Vec<Condition>>>,
    /// Fleet rollouts and tenant caches (the image each tenant should run).
    pub fleet: Arc<crate::rollout::FleetView>,
}

impl Context {
    pub fn new(client: Client, config: OperatorConfig, metrics: Arc<Metrics>) -> Self {
        Context {
            client,
            config,
            metrics,
            event_seq: AtomicU64::new(0),
            failures: Mutex::new(HashMap::new()),
            written: Mutex::new(HashMap::new()),
            fleet: Arc::new(crate::rollout::FleetView::new()),
        }
    }

    /// Consecutive failures recorded for `key`.
    pub fn failure_count(&self, key: &str) -> u32 {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .copied()
            .unwrap_or(0)
    }

    /// The conditions to compare against: what we last wrote, else what the object shows.
    fn previous_conditions(&self, key: &str, from_object: &[Condition]) -> Vec<Condition> {
        self.written
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned()
            .unwrap_or_else(|| from_object.to_vec())
    }

    fn remember_conditions(&self, key: &str, conditions: Option<Vec<Condition>>) {
        let mut w = self.written.lock().unwrap_or_else(|e| e.into_inner());
        match conditions {
            Some(c) => w.insert(key.to_string(), c),
            None => w.remove(key),
        };
    }
}

/// A reconcile failure; the object is retried with per-object exponential backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API call failed: {0}")]
    Kube(#[from] kube::Error),
}

impl Error {
    /// Low-cardinality reason, used as metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Kube(kube::Error::Api(s)) => match s.code {
                409 => "Conflict",
                404 => "NotFound",
                403 => "Forbidden",
                422 => "Invalid",
                429 => "TooManyRequests",
                500..=599 => "ServerError",
                _ => "ApiError",
            },
            Error::Kube(_) => "Transport",
        }
    }
}

fn key_of(meta: &kube::api::ObjectMeta) -> String {
    format!(
        "{}/{}",
        meta.namespace.as_deref().unwrap_or(""),
        meta.name.as_deref().unwrap_or("")
    )
}

/// Entry point for the controller: one reconcile of one object.
pub async fn reconcile(obj: Arc<Guarded>, ctx: Arc<Context>) -> Result<Action, Error> {
    let start = Instant::now();
    ctx.metrics.reconciles.inc();
    let result = match &obj.0 {
        Ok(lc) => reconcile_connector(lc, &ctx).await,
        Err(invalid) => report_invalid(invalid, &ctx).await,
    };
    ctx.metrics.duration.observe(start.elapsed().as_secs_f64());
    let key = match &obj.0 {
        Ok(lc) => key_of(&lc.metadata),
        Err(inv) => key_of(&inv.metadata),
    };
    if result.is_ok() {
        ctx.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key);
    }
    result
}

/// Error policy: count the failure and retry with exponential backoff per object.
pub fn error_policy(obj: Arc<Guarded>, err: &Error, ctx: Arc<Context>) -> Action {
    let key = match &obj.0 {
        Ok(lc) => key_of(&lc.metadata),
        Err(inv) => key_of(&inv.metadata),
    };
    ctx.metrics.failure(err.reason());
    let n = {
        let mut f = ctx.failures.lock().unwrap_or_else(|e| e.into_inner());
        let n = f.entry(key.clone()).or_insert(0);
        *n = n.saturating_add(1);
        *n
    };
    let delay = backoff_delay(&ctx.config, n);
    tracing::warn!(object = %key, reason = err.reason(), error = %err, attempt = n, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// Delay before retry number `attempt` (1-based): base·2^(attempt-1), capped.
pub fn backoff_delay(config: &OperatorConfig, attempt: u32) -> Duration {
    let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(20));
    config.backoff_base.saturating_mul(factor).min(config.backoff_max)
}

async fn reconcile_connector(lc: &LumenoreConnector, ctx: &Context) -> Result<Action, Error> {
    let key = key_of(&lc.metadata);
    if lc.metadata.deletion_timestamp.is_some() {
        // Children carry controller owner references: the garbage collector removes them.
        ctx.metrics.set_conditions(&key, None);
        ctx.remember_conditions(&key, None);
        return Ok(Action::await_change());
    }
    let ns = lc.namespace().unwrap_or_else(|| "default".into());
    let client = &ctx.client;

    // 1. validate (pure)
    let accepted = match validate::validate(lc, &ctx.config.cluster) {
        Ok(msg) => msg,
        Err(rejection) => {
            tracing::info!(object = %key, reason = rejection.reason(), "connector not deployed");
            write_status(lc, ctx, Outcome::Rejected(rejection), None).await?;
            return Ok(Action::await_change());
        }
    };

    // 2. read inputs (Secrets read directly)
    let inputs = inputs::read_inputs(client, lc).await?;
    if let Some(problem) = inputs.problem {
        let deployment = Api::<Deployment>::namespaced(client.clone(), &ns)
            .get_opt(&builders::child_name(lc))
            .await?
            .map(|d| DeploymentObservation::from_deployment(&d));
        write_status(
            lc,
            ctx,
            Outcome::SecretProblem {
                accepted,
                problem,
                deployment,
            },
            None,
        )
        .await?;
        // The Secret watch triggers a reconcile when it appears; the resync is a safety net.
        return Ok(Action::requeue(ctx.config.resync));
    }

    // 3. build children (pure)
    let children = builders::build_children(
        lc,
        &BuildInputs {
            // The fleet rollout decides the image of every tenant that does not pin its own.
            default_image: ctx.fleet.tenant_image(lc, &ctx.config.default_image).image,
            credentials_hash: inputs.credentials_hash,
        },
    );

    // 4. apply, and remove what the spec no longer asks for
    let uid = lc.metadata.uid.clone().unwrap_or_default();
    let name = builders::child_name(lc);
    apply(client, &ns, &children.service_account).await?;
    apply(client, &ns, &children.service).await?;
    match &children.network_policy {
        Some(np) => {
            apply(client, &ns, np).await?;
        }
        None => {
            prune::<NetworkPolicy>(client, &ns, &name, &uid).await?;
        }
    }
    match &children.pod_disruption_budget {
        Some(pdb) => {
            apply(client, &ns, pdb).await?;
        }
        None => {
            prune::<PodDisruptionBudget>(client, &ns, &name, &uid).await?;
        }
    }
    let deployment = apply(client, &ns, &children.deployment).await?;

    // 5. status
    let observation = DeploymentObservation::from_deployment(&deployment);
    let outcome = Outcome::Deployed {
        accepted,
        deployment: observation.clone(),
        suspended: lc.spec.suspend,
        endpoint: builders::endpoint(lc),
    };
    write_status(lc, ctx, outcome, Some(&observation)).await?;
    Ok(Action::requeue(ctx.config.resync))
}

/// Server-side apply `obj` with the operator's field manager, taking ownership of conflicting fields.
pub async fn apply<K>(client: &Client, ns: &str, obj: &K) -> Result<K, kube::Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Serialize
        + DeserializeOwned
        + Clone
        + Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let name = obj.meta().name.clone().unwrap_or_default();
    api.patch(&name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(obj))
        .await
}

/// Delete child `name` if it exists and is controlled by the CR with `owner_uid`. Returns whether it
/// was deleted. Objects controlled by someone else are never touched.
pub async fn prune<K>(client: &Client, ns: &str, name: &str, owner_uid: &str) -> Result<bool, kube::Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()> + DeserializeOwned + Clone + Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let Some(existing) = api.get_opt(name).await? else {
        return Ok(false);
    };
    let ours = existing
        .owner_references()
        .iter()
        .any(|r| r.uid == owner_uid && r.controller == Some(true));
    if !ours {
        return Ok(false);
    }
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(false),
        Err(e) => Err(e),
    }
}

/// Now, at the one-second precision a `Time` has on the wire (so what we remember equals what we read back).
fn now() -> Time {
    let now = k8s_openapi::jiff::Timestamp::now();
    Time(k8s_openapi::jiff::Timestamp::from_second(now.as_second()).unwrap_or(now))
}

fn outcome_status(
    old_conditions: &[Condition],
    outcome: &Outcome,
    generation: Option<i64>,
    endpoint: Option<String>,
    deployment: Option<&DeploymentObservation>,
    selector: String,
) -> LumenoreConnectorStatus {
    let conditions = status::stamp(
        old_conditions,
        status::conditions_for(outcome),
        generation,
        &now(),
    );
    LumenoreConnectorStatus {
        observed_generation: generation,
        conditions,
        replicas: deployment.map(|d| d.replicas),
        ready_replicas: deployment.map(|d| d.ready),
        selector: Some(selector),
        endpoint,
        connector: None,
    }
}

/// Write the status (server-side apply on the status subresource) when it changed, and publish one
/// Event per condition transition.
async fn write_status(
    lc: &LumenoreConnector,
    ctx: &Context,
    outcome: Outcome,
    deployment: Option<&DeploymentObservation>,
) -> Result<(), Error> {
    let endpoint = match &outcome {
        Outcome::Deployed { endpoint, .. } => Some(endpoint.clone()),
        _ => None,
    };
    let deployment = deployment.or(match &outcome {
        Outcome::SecretProblem { deployment, .. } => deployment.as_ref(),
        _ => None,
    });
    let key = key_of(&lc.metadata);
    let old_conditions = ctx.previous_conditions(
        &key,
        lc.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or(&[]),
    );
    let mut new = outcome_status(
        &old_conditions,
        &outcome,
        lc.metadata.generation,
        endpoint,
        deployment,
        builders::selector_string(lc),
    );
    new.connector = crate::rollout::fleet::connector_status(
        &ctx.fleet.tenant_image(lc, &ctx.config.default_image),
        deployment.and_then(|d| d.image.as_deref()),
    );
    let changed = lc.status.as_ref() != Some(&new);
    if changed {
        let api: Api<LumenoreConnector> = Api::namespaced(
            ctx.client.clone(),
            lc.metadata.namespace.as_deref().unwrap_or("default"),
        );
        let patch = serde_json::json!({
            "apiVersion": LumenoreConnector::api_version(&()),
            "kind": LumenoreConnector::kind(&()),
            "status": new,
        });
        api.patch_status(
            &lc.name_any(),
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
    }
    ctx.metrics.set_conditions(
        &key,
        Some(
            new.conditions
                .iter()
                .map(|c| (c.type_.clone(), c.status.clone()))
                .collect(),
        ),
    );
    ctx.remember_conditions(&key, Some(new.conditions.clone()));
    publish_transitions(ctx, &lc.object_ref(&()), &old_conditions, &new.conditions).await;
    Ok(())
}

async fn publish_transitions(
    ctx: &Context,
    reference: &ObjectReference,
    old: &[Condition],
    new: &[Condition],
) {
    for c in status::transitions(old, new) {
        let warning = c.status == "False"
            && !matches!(
                c.reason.as_str(),
                "Suspended" | "RolloutInProgress" | "NotDeployed"
            );
        let note = truncate(format!("{}={}: {}", c.type_, c.status, c.message), 1000);
        if let Err(e) = publish_event(ctx, reference, warning, &c.reason, note).await {
            // An Event is best effort; the status carries the same information.
            tracing::warn!(error = %e, "could not publish event");
        }
    }
}

/// Create one events.k8s.io/v1 Event. (kube's `Recorder` keeps every event it published in a cache
/// it scans on each publish; with Events on transitions only there is nothing to aggregate, and at
/// 10,000 connectors that cache dominated CPU and memory.)
async fn publish_event(
    ctx: &Context,
    reference: &ObjectReference,
    warning: bool,
    reason: &str,
    note: String,
) -> Result<(), kube::Error> {
    let now = k8s_openapi::jiff::Timestamp::now();
    let ns = reference.namespace.clone().unwrap_or_else(|| "default".into());
    let seq = ctx.event_seq.fetch_add(1, Ordering::Relaxed);
    let reporter = &ctx.config.reporter;
    let event = K8sEvent {
        metadata: ObjectMeta {
            name: Some(format!(
                "{}.{:x}{:x}",
                reference.name.as_deref().unwrap_or(MANAGER),
                now.as_nanosecond(),
                seq
            )),
            namespace: Some(ns.clone()),
            ..Default::default()
        },
        event_time: Some(MicroTime(now)),
        action: Some("Reconcile".into()),
        reason: Some(reason.to_string()),
        note: Some(note),
        type_: Some(if warning { "Warning" } else { "Normal" }.into()),
        regarding: Some(reference.clone()),
        reporting_controller: Some(reporter.controller.clone()),
        reporting_instance: Some(
            reporter
                .instance
                .clone()
                .unwrap_or_else(|| reporter.controller.clone()),
        ),
        ..Default::default()
    };
    Api::<K8sEvent>::namespaced(ctx.client.clone(), &ns)
        .create(&PostParams::default(), &event)
        .await
        .map(|_| ())
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

/// A CR that does not deserialize: report it in its status (Accepted=False, reason InvalidObject) and
/// an Event, then wait for it to change. Other objects are not affected.
async fn report_invalid(inv: &InvalidObject, ctx: &Context) -> Result<Action, Error> {
    let ns = inv.metadata.namespace.clone().unwrap_or_else(|| "default".into());
    let name = inv.metadata.name.clone().unwrap_or_default();
    let key = key_of(&inv.metadata);
    tracing::warn!(object = %key, error = %inv.error, "malformed LumenoreConnector skipped");
    let ar = ApiResource::erase::<LumenoreConnector>(&());
    let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), &ns, &ar);
    let Some(raw) = api.get_opt(&name).await? else {
        ctx.metrics.set_conditions(&key, None);
        ctx.remember_conditions(&key, None);
        return Ok(Action::await_change());
    };
    let old: LumenoreConnectorStatus = raw
        .data
        .get("status")
        .cloned()
        .and_then(|s| serde_json::from_value(s).ok())
        .unwrap_or_default();
    let outcome = Outcome::Rejected(Rejection::InvalidObject(truncate(
        format!(
            "the object does not match the LumenoreConnector schema: {}",
            inv.error
        ),
        900,
    )));
    let conditions = status::stamp(
        &old.conditions,
        status::conditions_for(&outcome),
        inv.metadata.generation,
        &now(),
    );
    let new = LumenoreConnectorStatus {
        observed_generation: inv.metadata.generation,
        conditions,
        ..Default::default()
    };
    if old != new {
        let patch = serde_json::json!({
            "apiVersion": ar.api_version,
            "kind": ar.kind,
            "status": new,
        });
        api.patch_status(&name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&patch))
            .await?;
    }
    ctx.metrics.set_conditions(
        &key,
        Some(
            new.conditions
                .iter()
                .map(|c| (c.type_.clone(), c.status.clone()))
                .collect(),
        ),
    );
    let reference = ObjectReference {
        api_version: Some(ar.api_version.clone()),
        kind: Some(ar.kind.clone()),
        name: Some(name),
        namespace: Some(ns),
        uid: inv.metadata.uid.clone(),
        resource_version: inv.metadata.resource_version.clone(),
        ..Default::default()
    };
    publish_transitions(ctx, &reference, &old.conditions, &new.conditions).await;
    Ok(Action::await_change())
}
