//! The reconciler: read inputs → validate → build children → apply → status.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::core::error_boundary::InvalidObject;
use kube::runtime::controller::Action;
use kube::runtime::events::Reporter;
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::builders::{self, BuildInputs};
use crate::crd::{LumenoreConnector, LumenoreConnectorStatus, MANAGER, REPLICAS_HANDOVER_MANAGER};
use crate::events::{EventWriter, truncate};
use crate::inputs;
use crate::metrics::Metrics;
use crate::observe::{self, Stage};
use crate::status::{self, ApplyFailure, DeploymentObservation, Outcome};
use crate::validate::{self, ClusterIdentity, Rejection};

pub use crate::crd::Guarded;

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
    /// How long a missing Secret or key is waited for (`Reconciling`) before the connector is
    /// reported `Stalled` (a person must create it).
    pub secret_grace: Duration,
    /// Namespace allowed to scrape the connectors' `/metrics` through their NetworkPolicy.
    pub monitoring_namespace: Option<String>,
    /// Server-side timeout of every watch, in seconds (see [`crate::controller::with_watch_timeout`]).
    pub watch_timeout_seconds: u32,
    /// Field manager of every write: one per operator install, so two installs whose scopes overlap
    /// see each other's fields as conflicts instead of silently taking them over.
    pub field_manager: String,
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
            secret_grace: Duration::from_secs(300),
            monitoring_namespace: None,
            watch_timeout_seconds: 60,
            field_manager: MANAGER.into(),
        }
    }
}

/// Shared state of the reconciles.
pub struct Context {
    pub client: Client,
    pub config: OperatorConfig,
    pub metrics: Arc<Metrics>,
    /// The Events writer (shared with the rollout controller).
    pub events: Arc<EventWriter>,
    failures: Mutex<HashMap<String, u32>>,
    /// Conditions this operator last wrote, per object: the cached CR may not show our own last
    /// status write yet, and Events must not repeat because of that.
    written: Mutex<HashMap<String, Vec<Condition>>>,
    /// Whether the operator's field manager owned the Deployment's `spec.replicas` after its last
    /// apply (unknown after a restart: then the live Deployment is read once).
    replicas_owned: Mutex<HashMap<String, bool>>,
    /// Fleet rollouts and tenant caches (the image each tenant should run).
    pub fleet: Arc<crate::rollout::FleetView>,
}

impl Context {
    pub fn new(client: Client, config: OperatorConfig, metrics: Arc<Metrics>) -> Self {
        let events = Arc::new(EventWriter::new(client.clone(), config.reporter.clone()));
        Context {
            client,
            config,
            metrics,
            events,
            failures: Mutex::new(HashMap::new()),
            written: Mutex::new(HashMap::new()),
            replicas_owned: Mutex::new(HashMap::new()),
            fleet: Arc::new(crate::rollout::FleetView::new()),
        }
    }

    /// Forget everything kept for object `key` (it was deleted): its gauges, backoff count,
    /// remembered conditions and replicas ownership.
    pub fn forget(&self, key: &str) {
        self.metrics.set_conditions(key, None);
        self.metrics.stages.set_conditions(key, None);
        self.remember_conditions(key, None);
        lock(&self.failures).remove(key);
        lock(&self.replicas_owned).remove(key);
    }

    /// Forget every object of namespace `scope` (all namespaces when `None`) that is not in
    /// `present` (keys `namespace/name`): what a re-list no longer shows was deleted while the watch
    /// was down, and the watcher emits no Delete for it.
    pub fn forget_absent(&self, scope: Option<&str>, present: &std::collections::HashSet<String>) {
        let mut keys: std::collections::HashSet<String> = lock(&self.written).keys().cloned().collect();
        keys.extend(lock(&self.failures).keys().cloned());
        keys.extend(lock(&self.replicas_owned).keys().cloned());
        keys.extend(self.metrics.known_keys());
        keys.extend(self.metrics.stages.known_keys());
        let in_scope = |k: &str| scope.is_none_or(|ns| k.split_once('/').is_some_and(|(n, _)| n == ns));
        for key in keys.iter().filter(|k| in_scope(k) && !present.contains(*k)) {
            tracing::debug!(object = %key, "gone after a re-list: forgotten");
            self.forget(key);
        }
    }

    /// Number of objects with per-object state kept in memory (for leak checks).
    pub fn tracked_objects(&self) -> usize {
        let mut keys: std::collections::HashSet<String> = lock(&self.written).keys().cloned().collect();
        keys.extend(lock(&self.failures).keys().cloned());
        keys.extend(lock(&self.replicas_owned).keys().cloned());
        keys.len()
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

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A reconcile failure; the object is retried with per-object exponential backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API call failed: {0}")]
    Kube(#[from] kube::Error),
    /// Writing a child failed (reported in the status as `ApplyFailed` before retrying).
    #[error("applying the {kind} failed: {source}")]
    Apply {
        kind: &'static str,
        #[source]
        source: kube::Error,
    },
}

fn kube_reason(e: &kube::Error) -> &'static str {
    match e {
        kube::Error::Api(s) => match s.code {
            409 => "Conflict",
            404 => "NotFound",
            403 => "Forbidden",
            422 => "Invalid",
            429 => "TooManyRequests",
            500..=599 => "ServerError",
            _ => "ApiError",
        },
        _ => "Transport",
    }
}

impl Error {
    /// Low-cardinality reason, used as metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Kube(e) | Error::Apply { source: e, .. } => kube_reason(e),
        }
    }
}

/// A child write that failed, with the child's kind.
struct ChildError {
    kind: &'static str,
    source: kube::Error,
}

trait ChildContext<T> {
    fn child(self, kind: &'static str) -> Result<T, ChildError>;
}

impl<T> ChildContext<T> for Result<T, kube::Error> {
    fn child(self, kind: &'static str) -> Result<T, ChildError> {
        self.map_err(|source| ChildError { kind, source })
    }
}

impl ChildError {
    /// The failure as the status reports it: the API's own message (names and rules, no user data).
    fn failure(&self) -> ApplyFailure {
        let (code, message) = match &self.source {
            kube::Error::Api(s) => (Some(s.code), s.message.clone()),
            other => (None, other.to_string()),
        };
        ApplyFailure {
            kind: self.kind,
            code,
            message: truncate(message, 700),
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
    // observe: one trace span per reconcile (namespace/name only), stage spans, errors by stage.
    let meta = match &obj.0 {
        Ok(lc) => &lc.metadata,
        Err(inv) => &inv.metadata,
    };
    let (ns, name) = (
        meta.namespace.as_deref().unwrap_or(""),
        meta.name.as_deref().unwrap_or(""),
    );
    let result = observe::reconcile(&ctx.metrics.stages, ns, name, Error::reason, async {
        match &obj.0 {
            Ok(lc) => reconcile_connector(lc, &ctx).await,
            Err(invalid) => report_invalid(invalid, &ctx).await,
        }
    })
    .await;
    ctx.metrics.duration.observe(start.elapsed().as_secs_f64());
    let key = match &obj.0 {
        Ok(lc) => key_of(&lc.metadata),
        Err(inv) => key_of(&inv.metadata),
    };
    if result.is_ok() {
        lock(&ctx.failures).remove(&key);
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
        ctx.forget(&key);
        return Ok(Action::await_change());
    }
    let ns = lc.namespace().unwrap_or_else(|| "default".into());
    let client = &ctx.client;

    // 1. validate (pure)
    observe::stage(&ctx.metrics.stages, Stage::validate);
    let accepted = match validate::validate(lc, &ctx.config.cluster) {
        Ok(msg) => msg,
        Err(rejection) => {
            tracing::info!(object = %key, reason = rejection.reason(), "connector not deployed");
            observe::stage(&ctx.metrics.stages, Stage::status);
            write_status(lc, ctx, Outcome::Rejected(rejection), None).await?;
            return Ok(Action::await_change());
        }
    };

    // 2. read inputs (Secrets read directly)
    observe::stage(&ctx.metrics.stages, Stage::read_inputs);
    let inputs = inputs::read_inputs(client, lc).await?;
    if let Some(problem) = inputs.problem {
        let deployment = observe_deployment(client, &ns, &builders::child_name(lc)).await?;
        let (stalled, wait) = secret_wait(ctx, &key, lc, problem.reason());
        let outcome = Outcome::SecretProblem {
            accepted,
            problem,
            deployment,
            stalled,
        };
        observe::stage(&ctx.metrics.stages, Stage::status);
        write_status(lc, ctx, outcome, None).await?;
        // The Secret watch triggers a reconcile when it appears; the requeue marks the end of the grace.
        return Ok(Action::requeue(
            wait.unwrap_or(ctx.config.resync).min(ctx.config.resync),
        ));
    }

    // 3. build children (pure)
    observe::stage(&ctx.metrics.stages, Stage::build);
    let children = builders::build_children(
        lc,
        &BuildInputs {
            // The fleet rollout decides the image of every tenant that does not pin its own.
            default_image: ctx.fleet.tenant_image(lc, &ctx.config.default_image).image,
            credentials_hash: inputs.credentials_hash,
            monitoring_namespace: ctx.config.monitoring_namespace.clone(),
            egress_services: inputs.egress_services,
        },
    );

    // 4. apply, and remove what the spec no longer asks for
    observe::stage(&ctx.metrics.stages, Stage::apply);
    let deployment = match apply_children(ctx, lc, &ns, &children).await {
        Ok(d) => d,
        Err(failed) => return report_apply_failure(lc, ctx, &ns, accepted, failed).await,
    };

    // 5. status
    observe::stage(&ctx.metrics.stages, Stage::status);
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

async fn observe_deployment(
    client: &Client,
    ns: &str,
    name: &str,
) -> Result<Option<DeploymentObservation>, kube::Error> {
    Ok(Api::<Deployment>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await?
        .map(|d| DeploymentObservation::from_deployment(&d)))
}

/// Whether a missing Secret (reason `reason`) has outlasted the grace period, and how long is left
/// of it. The wait started when `Reconciling` last turned True for this reason.
fn secret_wait(ctx: &Context, key: &str, lc: &LumenoreConnector, reason: &str) -> (bool, Option<Duration>) {
    let previous = ctx.previous_conditions(
        key,
        lc.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or(&[]),
    );
    let same = |t: &str| {
        previous
            .iter()
            .find(|c| c.type_ == t && c.status == "True" && c.reason == reason)
    };
    if same(status::STALLED).is_some() {
        return (true, None);
    }
    let Some(waiting) = same(status::RECONCILING) else {
        return (false, Some(ctx.config.secret_grace));
    };
    let elapsed = now().0.as_second() - waiting.last_transition_time.0.as_second();
    let grace = ctx.config.secret_grace.as_secs() as i64;
    if elapsed >= grace {
        (true, None)
    } else {
        (false, Some(Duration::from_secs((grace - elapsed).max(1) as u64)))
    }
}

/// Apply every child, prune the ones no longer asked for, and return the applied Deployment.
async fn apply_children(
    ctx: &Context,
    lc: &LumenoreConnector,
    ns: &str,
    children: &builders::Children,
) -> Result<Deployment, ChildError> {
    let client = &ctx.client;
    let uid = lc.metadata.uid.clone().unwrap_or_default();
    let name = builders::child_name(lc);
    let manager = ctx.config.field_manager.as_str();
    apply(client, manager, ns, &children.service_account)
        .await
        .child("ServiceAccount")?;
    apply(client, manager, ns, &children.service)
        .await
        .child("Service")?;
    match &children.network_policy {
        Some(np) => apply(client, manager, ns, np).await.map(drop),
        None => prune::<NetworkPolicy>(client, ns, &name, &uid).await.map(drop),
    }
    .child("NetworkPolicy")?;
    match &children.pod_disruption_budget {
        Some(pdb) => apply(client, manager, ns, pdb).await.map(drop),
        None => prune::<PodDisruptionBudget>(client, ns, &name, &uid)
            .await
            .map(drop),
    }
    .child("PodDisruptionBudget")?;
    let key = key_of(&lc.metadata);
    if children.deployment.spec.replicas.is_none() {
        hand_over_replicas(ctx, &key, ns, &name)
            .await
            .child("Deployment")?;
    }
    let deployment = apply(client, manager, ns, &children.deployment)
        .await
        .child("Deployment")?;
    lock(&ctx.replicas_owned).insert(key, owns_replicas(&deployment, manager));
    Ok(deployment)
}

/// Does `manager`'s server-side apply own `spec.replicas` of `d`?
pub fn owns_replicas(d: &Deployment, manager: &str) -> bool {
    d.metadata.managed_fields.iter().flatten().any(|e| {
        e.manager.as_deref() == Some(manager)
            && e.operation.as_deref() == Some("Apply")
            && e.subresource.as_deref().unwrap_or("").is_empty()
            && e.fields_v1
                .as_ref()
                .is_some_and(|f| f.0.get("f:spec").and_then(|s| s.get("f:replicas")).is_some())
    })
}

/// `spec.replicas` is no longer applied (left to an HPA): before the operator's apply drops the
/// field, which would make the API server reset it to 1, a second field manager applies the live
/// count, so the field stays when the operator lets go of it (the hand-over the server-side apply
/// documentation describes). The HPA's next scale takes it over from there.
async fn hand_over_replicas(ctx: &Context, key: &str, ns: &str, name: &str) -> Result<(), kube::Error> {
    if lock(&ctx.replicas_owned).get(key) == Some(&false) {
        return Ok(());
    }
    let api: Api<Deployment> = Api::namespaced(ctx.client.clone(), ns);
    let Some(live) = api.get_opt(name).await? else {
        return Ok(());
    };
    if !owns_replicas(&live, &ctx.config.field_manager) {
        return Ok(());
    }
    let Some(replicas) = live.spec.replicas else {
        return Ok(());
    };
    // A suspended tenant was applied at 0. An HPA never scales a target at 0 replicas
    // (kubernetes/kubernetes pkg/controller/podautoscaler/horizontal.go: "scaling is disabled since
    // the replica count of the target is zero", condition ScalingActive=False, ScalingDisabled), so
    // handing over 0 on resume would leave it at 0 for ever: hand over 1, as the API server defaults
    // a Deployment without replicas, and the HPA takes it from there.
    let replicas = replicas.max(1);
    let patch = serde_json::json!({
        "apiVersion": <Deployment as k8s_openapi::Resource>::API_VERSION,
        "kind": <Deployment as k8s_openapi::Resource>::KIND,
        "metadata": {"name": name, "namespace": ns},
        "spec": {"replicas": replicas},
    });
    // Forced: after a suspend the operator owns the 0 this raises to 1; only `spec.replicas` moves.
    api.patch(
        name,
        &PatchParams::apply(REPLICAS_HANDOVER_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    tracing::info!(object = %key, replicas, "spec.replicas handed over: the operator no longer sets it");
    Ok(())
}

/// A child write failed: say so in the status (`Ready=False`, reason `ApplyFailed`, the API's
/// message) and an Event, then fail the reconcile so it is retried with backoff.
async fn report_apply_failure(
    lc: &LumenoreConnector,
    ctx: &Context,
    ns: &str,
    accepted: String,
    failed: ChildError,
) -> Result<Action, Error> {
    let key = key_of(&lc.metadata);
    let failure = failed.failure();
    tracing::warn!(object = %key, child = failure.kind, code = ?failure.code, "applying a child failed");
    // Best effort: the Deployment as it is, for the Available condition.
    let deployment = observe_deployment(&ctx.client, ns, &builders::child_name(lc))
        .await
        .ok()
        .flatten();
    write_status(
        lc,
        ctx,
        Outcome::ApplyFailed {
            accepted,
            failure,
            deployment,
        },
        None,
    )
    .await?;
    Err(Error::Apply {
        kind: failed.kind,
        source: failed.source,
    })
}

/// Server-side apply `obj` as `manager`. Fields another writer changed (`kubectl edit`, a
/// mutating webhook) are taken back; fields another install of this operator owns are not: its
/// conflict is returned (see [`apply_patch`]).
pub async fn apply<K>(client: &Client, manager: &str, ns: &str, obj: &K) -> Result<K, kube::Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Serialize
        + DeserializeOwned
        + Clone
        + Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let name = obj.meta().name.clone().unwrap_or_default();
    apply_patch(&api, manager, &name, obj, false).await
}

/// The field managers a server-side apply conflict names, read from the API server's message:
/// `conflict with "<manager>"` for one conflict, `conflicts with "<manager>":` per manager for
/// several (k8s.io/apiserver `pkg/endpoints/handlers/fieldmanager/internal/conflict.go`,
/// `getConflictMessage` and `printManager`).
pub fn conflicting_managers(message: &str) -> Vec<&str> {
    static CONFLICT: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r#"conflicts? with "([^"]+)""#).expect("valid pattern")
    });
    CONFLICT
        .captures_iter(message)
        .filter_map(|c| c.get(1).map(|m| m.as_str()))
        .collect()
}

/// Is `other` the field manager of another install of this operator? (The replicas hand-over
/// manager is every install's own helper, never a rival.)
fn other_install(other: &str, manager: &str) -> bool {
    other != manager && other != REPLICAS_HANDOVER_MANAGER && other.starts_with(MANAGER)
}

/// Apply `patch` (to the `status` subresource when `status`) as `manager`: first without force,
/// then, when the only conflicts are with writers other than this operator, forced. A conflict
/// with another install's field manager is returned as a 409 naming it: two installs whose
/// scopes overlap must not take each other's objects over in turn.
pub async fn apply_patch<K, P>(
    api: &Api<K>,
    manager: &str,
    name: &str,
    patch: &P,
    status: bool,
) -> Result<K, kube::Error>
where
    K: Resource + DeserializeOwned + Clone + Debug,
    P: Serialize + Debug,
{
    let send = |force: bool| {
        let mut params = PatchParams::apply(manager);
        if force {
            params = params.force();
        }
        async move {
            if status {
                api.patch_status(name, &params, &Patch::Apply(patch)).await
            } else {
                api.patch(name, &params, &Patch::Apply(patch)).await
            }
        }
    };
    match send(false).await {
        Err(kube::Error::Api(mut s)) if s.code == 409 => {
            let named = conflicting_managers(&s.message);
            if named.is_empty() {
                // Not a field ownership conflict: retried with backoff like any other.
                return Err(kube::Error::Api(s));
            }
            let others: Vec<String> = named
                .into_iter()
                .filter(|m| other_install(m, manager))
                .map(str::to_string)
                .collect();
            if others.is_empty() {
                return send(true).await;
            }
            s.message = format!(
                "another lumenore-operator install (field manager {:?}) manages this object; two installs must not watch the same namespace (give each its own --watch-namespaces): {}",
                others.join(", "),
                s.message
            );
            Err(kube::Error::Api(s))
        }
        other => other,
    }
}

/// Delete child `name` if it exists and is controlled by the CR with `owner_uid`. Returns whether it
/// was deleted. Objects controlled by someone else are never touched: the delete carries the UID
/// read as a precondition, so an object re-created under the same name meanwhile is not deleted.
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
    let params = DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            uid: existing.uid(),
            resource_version: None,
        }),
        ..DeleteParams::background()
    };
    match api.delete(name, &params).await {
        Ok(_) => Ok(true),
        // Gone, or replaced by another object (precondition failed): nothing of ours to delete.
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(false),
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
        Outcome::SecretProblem { deployment, .. } | Outcome::ApplyFailed { deployment, .. } => {
            deployment.as_ref()
        }
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
        match apply_patch(&api, &ctx.config.field_manager, &lc.name_any(), &patch, true).await {
            Ok(_) => {}
            // Deleted meanwhile: nothing to report on.
            Err(kube::Error::Api(s)) if s.code == 404 => {
                ctx.forget(&key);
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        }
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
    ctx.metrics
        .stages
        .set_conditions(&key, Some(observe::condition_reasons(&new.conditions)));
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
    // Reconciling and Stalled repeat what Ready says: one Event per change is enough.
    for c in status::transitions(old, new)
        .into_iter()
        .filter(|c| c.type_ != status::RECONCILING && c.type_ != status::STALLED)
    {
        let warning = c.status == "False"
            && !matches!(
                c.reason.as_str(),
                "Suspended" | "RolloutInProgress" | "NotDeployed" | "ScaledToZero"
            );
        let note = format!("{}={}: {}", c.type_, c.status, c.message);
        if let Err(e) = ctx
            .events
            .publish(reference, "Reconcile", warning, &c.reason, note)
            .await
        {
            // An Event is best effort; the status carries the same information.
            tracing::warn!(error = %e, "could not publish event");
        }
    }
}

/// A CR that does not deserialize: report it in its status (Accepted=False, reason InvalidObject) and
/// an Event, then wait for it to change. Other objects are not affected.
async fn report_invalid(inv: &InvalidObject, ctx: &Context) -> Result<Action, Error> {
    let ns = inv.metadata.namespace.clone().unwrap_or_else(|| "default".into());
    let name = inv.metadata.name.clone().unwrap_or_default();
    let key = key_of(&inv.metadata);
    tracing::warn!(object = %key, error = %inv.error, "malformed LumenoreConnector skipped");
    observe::stage(&ctx.metrics.stages, Stage::validate);
    let ar = ApiResource::erase::<LumenoreConnector>(&());
    let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), &ns, &ar);
    let Some(raw) = api.get_opt(&name).await? else {
        ctx.forget(&key);
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
        apply_patch(&api, &ctx.config.field_manager, &name, &patch, true).await?;
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
    ctx.metrics
        .stages
        .set_conditions(&key, Some(observe::condition_reasons(&new.conditions)));
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
