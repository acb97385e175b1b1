//! The reconciler, one pipeline: validate (pure) → read inputs → build children (pure) → apply
//! ([`apply`]) → status ([`update_status`], the one status writer).

mod apply;
mod update_status;

use apply::{ChildError, apply_children};
pub use apply::{apply, apply_patch, conflicting_managers, owns_replicas, prune};
use update_status::{now, put_status, write_status};

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::core::error_boundary::InvalidObject;
use kube::runtime::controller::Action;
use kube::runtime::events::Reporter;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, ResourceExt};

use crate::builders::{self, BuildInputs};
use crate::crd::{LumenoreConnector, LumenoreConnectorStatus, MANAGER};
use crate::events::{EventWriter, truncate};
use crate::inputs;
use crate::metrics::Metrics;
use crate::observe::{self, Stage};
use crate::status::{self, DeploymentObservation, Outcome};
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
    /// Objects whose rate-limit shares ConfigMap is known to be absent (pruned, or never made): their
    /// reconciles skip the read a prune needs.
    shares_absent: Mutex<std::collections::HashSet<String>>,
    /// Fleet rollouts and tenant caches (the image each tenant should run).
    pub fleet: Arc<crate::rollout::FleetView>,
    /// The tenant caches the controllers read (set by `run::tenant_caches`). State about an
    /// object is kept only while a cache holds it: a reconcile still running when its object was
    /// deleted, or re-listed away, must not bring back what [`Context::forget`] dropped.
    caches: Mutex<Vec<Store<Guarded>>>,
    /// Makes [`Context::forget`] and the check-then-keep of [`Context::while_cached`] one step each.
    liveness: Mutex<()>,
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
            shares_absent: Mutex::new(Default::default()),
            fleet: Arc::new(crate::rollout::FleetView::new()),
            caches: Mutex::new(Vec::new()),
            liveness: Mutex::new(()),
        }
    }

    /// The tenant caches the running controllers read, replacing those of controllers that stopped
    /// (the controllers restart with new caches when the rollout CRD appears).
    pub fn set_tenant_caches(&self, caches: Vec<Store<Guarded>>) {
        *lock(&self.caches) = caches;
    }

    /// Whether a tenant cache holds object `key` (`namespace/name`) as the object with `uid`: one
    /// deleted and made again under the same name is another object. With no cache set (no controller
    /// runs: unit tests, benchmarks) every object counts as held.
    fn cached(&self, key: &str, uid: Option<&str>) -> bool {
        let caches = lock(&self.caches);
        if caches.is_empty() {
            return true;
        }
        let Some((ns, name)) = key.split_once('/') else {
            return true;
        };
        let reference = ObjectRef::<Guarded>::new(name).within(ns);
        caches.iter().any(|cache| {
            cache.get(&reference).is_some_and(|obj| {
                let meta = match &obj.0 {
                    Ok(lc) => &lc.metadata,
                    Err(inv) => &inv.metadata,
                };
                uid.is_none() || meta.uid.as_deref() == uid
            })
        })
    }

    /// Run `keep`, which records state about object `key` (the object with `uid`), only while a
    /// cache holds that object. The cache drops an object before its Delete or re-list reaches
    /// [`Context::forget`], and both take the same lock: so a reconcile that ends after its object
    /// was forgotten keeps nothing.
    fn while_cached(&self, key: &str, uid: Option<&str>, keep: impl FnOnce()) {
        let _one_step = lock(&self.liveness);
        if self.cached(key, uid) {
            keep();
        }
    }

    /// Forget everything kept for object `key` (it was deleted): its gauges, backoff count,
    /// remembered conditions and replicas ownership.
    pub fn forget(&self, key: &str) {
        let _one_step = lock(&self.liveness);
        self.metrics.set_conditions(key, None);
        self.metrics.stages.set_conditions(key, None);
        self.remember_conditions(key, None);
        lock(&self.failures).remove(key);
        lock(&self.replicas_owned).remove(key);
        lock(&self.shares_absent).remove(key);
    }

    /// Forget every object of namespace `scope` (all namespaces when `None`) that is not in
    /// `present` (keys `namespace/name`): what a re-list no longer shows was deleted while the watch
    /// was down, and the watcher emits no Delete for it.
    pub fn forget_absent(&self, scope: Option<&str>, present: &std::collections::HashSet<String>) {
        let mut keys: std::collections::HashSet<String> = lock(&self.written).keys().cloned().collect();
        keys.extend(lock(&self.failures).keys().cloned());
        keys.extend(lock(&self.replicas_owned).keys().cloned());
        keys.extend(lock(&self.shares_absent).iter().cloned());
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
        keys.extend(lock(&self.shares_absent).iter().cloned());
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
    let meta = match &obj.0 {
        Ok(lc) => &lc.metadata,
        Err(inv) => &inv.metadata,
    };
    let key = key_of(meta);
    ctx.metrics.failure(err.reason());
    let mut n = 1;
    ctx.while_cached(&key, meta.uid.as_deref(), || {
        let mut f = lock(&ctx.failures);
        let count = f.entry(key.clone()).or_insert(0);
        *count = count.saturating_add(1);
        n = *count;
    });
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
    let reference = ObjectReference {
        api_version: Some(ar.api_version.clone()),
        kind: Some(ar.kind.clone()),
        name: Some(name),
        namespace: Some(ns),
        uid: inv.metadata.uid.clone(),
        resource_version: inv.metadata.resource_version.clone(),
        ..Default::default()
    };
    put_status(ctx, &reference, Some(&old), &old.conditions, &new).await?;
    Ok(Action::await_change())
}
