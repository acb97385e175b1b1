//! The rollout controller (I/O around [`super::decide`]): read the rollout and the fleet, decide,
//! write the status through the `/status` subresource (server-side apply, the operator's single field
//! manager), publish Events and metrics. Plus the wiring that makes tenant reconciles follow it.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{StreamExt, future};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::events::Reporter;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, Resource, ResourceExt};
use tokio_util::sync::CancellationToken;

use super::analysis;
use super::crd::{LumenoreFleetRollout, LumenoreFleetRolloutStatus, Phase};
use super::decide::{self, Input, TenantReport};
use super::feed::RolloutUpdates;
use super::fleet::{FleetView, active_of, reported_image};
use super::plan::TenantId;
use crate::crd::Guarded;
use crate::crd::{LumenoreConnector, MANAGER};
use crate::events::EventWriter;
use crate::metrics::Metrics;
use k8s_openapi::api::core::v1::Secret;

/// Annotation a person changes (any new value) to resume a stalled rollout.
pub const RESUME_ANNOTATION: &str = "lumenore.io/resume";

/// Clock of the rollout controller (tests drive their own).
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// Settings and shared state of the rollout controller.
pub struct RolloutContext {
    pub client: Client,
    pub fleet: Arc<FleetView>,
    pub metrics: Arc<Metrics>,
    /// The operator's `--connector-image`.
    pub default_image: String,
    /// The Events writer (the tenant controllers' one when wired by [`crate::run`]).
    pub events: Arc<EventWriter>,
    pub clock: Clock,
    /// How often an active rollout looks at the fleet again (tenant changes do not wake it).
    pub poll: Duration,
    /// How often an idle (completed, paused, stalled, invalid) rollout refreshes its counts.
    pub idle_poll: Duration,
    /// Field manager of the status writes (one per operator install).
    pub field_manager: String,
}

impl RolloutContext {
    pub fn new(client: Client, fleet: Arc<FleetView>, metrics: Arc<Metrics>, default_image: String) -> Self {
        RolloutContext {
            client: client.clone(),
            fleet,
            metrics,
            default_image,
            events: Arc::new(EventWriter::new(
                client.clone(),
                Reporter {
                    controller: MANAGER.into(),
                    instance: std::env::var("POD_NAME").ok(),
                },
            )),
            clock: Arc::new(Timestamp::now),
            poll: Duration::from_secs(10),
            idle_poll: Duration::from_secs(60),
            field_manager: MANAGER.into(),
        }
    }
}

/// A rollout reconcile failure (retried with backoff).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API call failed: {0}")]
    Kube(#[from] kube::Error),
}

/// What a LumenoreConnector reports, borrowed from the cached object.
pub fn report_of(lc: &LumenoreConnector) -> TenantReport<'_> {
    static EMPTY: std::collections::BTreeMap<String, String> = std::collections::BTreeMap::new();
    let status = lc.status.as_ref();
    let cond = |t: &str| status.and_then(|s| s.condition(t));
    let ready = cond("Ready");
    let current = status.and_then(|s| s.observed_generation) == lc.metadata.generation;
    // A suspended or scaled-to-zero tenant runs no pod that could become Ready: once its Deployment
    // template has the image, it is done (it starts on that image when resumed).
    let at_rest = lc.spec.suspend || lc.spec.replicas == Some(0);
    TenantReport {
        id: TenantId {
            namespace: lc.metadata.namespace.as_deref().unwrap_or(""),
            name: lc.metadata.name.as_deref().unwrap_or(""),
            labels: lc.metadata.labels.as_ref().unwrap_or(&EMPTY),
        },
        label: &lc.spec.tenant,
        pinned: lc.spec.image.is_some(),
        deployed: cond("Accepted").is_none_or(|c| c.status != "False"),
        image: reported_image(status),
        ready: current && (at_rest || ready.is_some_and(|c| c.status == "True")),
        reason: ready.map(|c| c.reason.as_str()).unwrap_or("NoStatus"),
        message: ready
            .map(|c| c.message.as_str())
            .unwrap_or("the operator has not reported on this tenant yet"),
    }
}

/// One reconcile of one rollout.
pub async fn reconcile(obj: Arc<LumenoreFleetRollout>, ctx: Arc<RolloutContext>) -> Result<Action, Error> {
    if !ctx.fleet.tenants_ready() {
        // A partial fleet would show waves without members: decide nothing, write nothing.
        tracing::debug!(rollout = %obj.name_any(), "tenant caches still filling; rollout decision deferred");
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    let ns = obj.namespace().unwrap_or_else(|| "default".into());
    let api: Api<LumenoreFleetRollout> = Api::namespaced(ctx.client.clone(), &ns);
    // Fresh from the API (the cache may not show our last status write yet), with its siblings.
    let all = api.list(&ListParams::default()).await?.items;
    let Some(rollout) = all.iter().find(|r| r.name_any() == obj.name_any()).cloned() else {
        return Ok(Action::await_change());
    };
    if rollout.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let active = active_of(all.into_iter().map(Arc::new).collect());
    let conflict = active
        .as_ref()
        .filter(|a| a.uid() != rollout.uid())
        .map(|a| format!("{}/{}", a.namespace().unwrap_or_default(), a.name_any()));

    let tenants = ctx.fleet.tenants();
    let mut reports: Vec<TenantReport<'_>> = tenants
        .iter()
        .filter_map(|g| g.0.as_ref().ok())
        .map(report_of)
        .collect();
    // Cache order is arbitrary; messages (e.g. which tenant overlaps) must not flap between reconciles.
    reports.sort_unstable_by(|a, b| (a.id.namespace, a.id.name).cmp(&(b.id.namespace, b.id.name)));
    let old = rollout.status.clone().unwrap_or_default();
    let resume = rollout.annotations().get(RESUME_ANNOTATION).map(String::as_str);
    let now = (ctx.clock)();
    let input = Input {
        generation: rollout.metadata.generation,
        spec: &rollout.spec,
        resume,
        old: &old,
        default_image: &ctx.default_image,
        fleet: &reports,
        now,
        conflict: conflict.as_deref(),
        analysis: None,
    };
    let mut decision = decide::decide(&input);
    // A bake that needs its analysis: measure, then decide again with the figures.
    if let (Some(request), Some(spec)) = (&decision.analysis_due, &rollout.spec.analysis) {
        let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
        let started = std::time::Instant::now();
        let run = analysis::run(spec, request, &secrets, now.as_second()).await;
        ctx.metrics.fleet.record_analysis(&run, started.elapsed());
        if let Err(e) = &run.outcome {
            tracing::warn!(rollout = %rollout.name_any(), wave = %run.wave, "fleet analysis failed: {e}");
        }
        decision = decide::decide(&Input {
            analysis: Some(&run),
            ..input
        });
    }

    if conflict.is_none() {
        ctx.metrics.fleet.set_versions(decide::versions(reports.iter()));
        ctx.metrics
            .fleet
            .set_phase(decision.status.phase, decision.status.fleet.updated);
        ctx.metrics.fleet.set_analysis(decision.status.analysis.as_ref());
    }
    if decision.status != old {
        let rv = rollout.resource_version().unwrap_or_default();
        write_status(
            &api,
            &ctx.field_manager,
            &rollout.name_any(),
            &rv,
            &decision.status,
        )
        .await?;
    }
    let reference = rollout.object_ref(&());
    for e in &decision.events {
        tracing::info!(rollout = %rollout.name_any(), reason = e.reason, "{}", e.note);
        if let Err(err) = ctx
            .events
            .publish(&reference, "Rollout", e.warning, e.reason, e.note.clone())
            .await
        {
            tracing::warn!(error = %err, "could not publish event");
        }
    }
    let active_phase = matches!(decision.status.phase, Some(Phase::Progressing))
        || decision
            .status
            .conditions
            .iter()
            .any(|c| c.type_ == decide::RECONCILING && c.status == "True");
    let poll = if active_phase { ctx.poll } else { ctx.idle_poll };
    let wait = decision
        .wake_in
        .map_or(poll, |w| w.min(poll))
        .max(Duration::from_secs(1));
    Ok(Action::requeue(wait))
}

/// Retry a failed rollout reconcile.
pub fn error_policy(_obj: Arc<LumenoreFleetRollout>, err: &Error, ctx: Arc<RolloutContext>) -> Action {
    tracing::warn!(error = %err, "rollout reconcile failed");
    ctx.metrics.failure("RolloutApiError");
    Action::requeue(Duration::from_secs(5))
}

/// Write the decision, on the condition that the rollout is still the version it was decided
/// from: `metadata.resourceVersion` in an apply patch is a precondition (409 Conflict otherwise), so
/// a deposed leader's late write cannot move `currentWave` or `partition` backwards.
async fn write_status(
    api: &Api<LumenoreFleetRollout>,
    field_manager: &str,
    name: &str,
    resource_version: &str,
    status: &LumenoreFleetRolloutStatus,
) -> Result<(), kube::Error> {
    let patch = serde_json::json!({
        "apiVersion": LumenoreFleetRollout::api_version(&()),
        "kind": LumenoreFleetRollout::kind(&()),
        "metadata": {"resourceVersion": resource_version},
        "status": status,
    });
    api.patch_status(
        name,
        &PatchParams::apply(field_manager).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map(|_| ())
}

/// The part of a rollout status tenants follow; a change of it is worth re-checking tenants.
fn plan_fingerprint(r: &LumenoreFleetRollout) -> u64 {
    let mut h = DefaultHasher::new();
    r.uid().hash(&mut h);
    if let Some(s) = &r.status {
        (
            &s.image,
            &s.previous_image,
            &s.skip_tenants,
            s.current_wave,
            &s.partition,
        )
            .hash(&mut h);
        for w in &s.waves {
            serde_json::to_string(&w.definition())
                .unwrap_or_default()
                .hash(&mut h);
        }
    }
    h.finish()
}

/// The tenants in `store` whose connector does not run what the fleet's rollout now says.
pub fn tenants_to_update(
    fleet: &FleetView,
    store: &Store<Guarded>,
    default_image: &str,
) -> Vec<ObjectRef<Guarded>> {
    store
        .state()
        .iter()
        .filter(|g| {
            g.0.as_ref().is_ok_and(|lc| {
                let want = fleet.tenant_image(lc, default_image);
                !want.pinned && reported_image(lc.status.as_ref()) != Some(want.image.as_str())
            })
        })
        .map(|g| ObjectRef::from_obj(g.as_ref()))
        .collect()
}

/// Make the tenant controller of one namespace reconcile its tenants whose image the rollout
/// changed (after the rollout cache has the change). `rollouts` is this controller's own
/// subscription to the rollout cache.
pub fn follow_rollouts(
    controller: Controller<Guarded>,
    fleet: Arc<FleetView>,
    default_image: String,
    store: Store<Guarded>,
    rollouts: RolloutUpdates,
) -> Controller<Guarded> {
    let last = Mutex::new(None::<u64>);
    controller.watches_shared_stream(rollouts, move |r: Arc<LumenoreFleetRollout>| {
        let is_active = fleet.active().is_some_and(|a| a.uid() == r.uid());
        let fp = plan_fingerprint(&r);
        let mut last = last.lock().unwrap_or_else(|e| e.into_inner());
        if !is_active || *last == Some(fp) {
            return Vec::new();
        }
        *last = Some(fp);
        tenants_to_update(&fleet, &store, &default_image)
    })
}

/// Run the rollout controller on its subscription `own` to the rollout cache `reader` until `stop`.
pub async fn run(
    ctx: Arc<RolloutContext>,
    own: RolloutUpdates,
    reader: Store<LumenoreFleetRollout>,
    stop: CancellationToken,
) {
    Controller::for_shared_stream(own, reader)
        .graceful_shutdown_on(stop.cancelled_owned())
        .run(reconcile, error_policy, ctx)
        .for_each(|res| {
            // A rollout deleted after a change was sent: nothing to do (kube's requeue of it too).
            if let Err(e) = res
                && !matches!(
                    e,
                    controller::Error::ReconcilerFailed(..) | controller::Error::ObjectNotFound(..)
                )
            {
                tracing::warn!(error = %e, "rollout controller error");
            }
            future::ready(())
        })
        .await;
}
