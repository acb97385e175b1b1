//! The rollout controller (I/O around [`super::decide`]): read the rollout and the fleet, decide,
//! write the status through the `/status` subresource (server-side apply, the operator's single field
//! manager), publish Events and metrics. Plus the wiring that makes tenant reconciles follow it.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{StreamExt, future};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event as K8sEvent;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::events::Reporter;
use kube::runtime::reflector::{self, ObjectRef, ReflectHandle, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use tokio_util::sync::CancellationToken;

use super::crd::{LumenoreFleetRollout, LumenoreFleetRolloutStatus, Phase};
use super::decide::{self, Input, RolloutEvent, TenantReport};
use super::fleet::{FleetView, active_of, reported_image};
use super::plan::TenantId;
use crate::crd::{LumenoreConnector, MANAGER};
use crate::metrics::Metrics;
use crate::reconcile::{Context, Guarded};

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
    pub reporter: Reporter,
    pub clock: Clock,
    /// How often an active rollout looks at the fleet again (tenant changes do not wake it).
    pub poll: Duration,
    /// How often an idle (completed, paused, stalled, invalid) rollout refreshes its counts.
    pub idle_poll: Duration,
    event_seq: AtomicU64,
}

impl RolloutContext {
    pub fn new(client: Client, fleet: Arc<FleetView>, metrics: Arc<Metrics>, default_image: String) -> Self {
        RolloutContext {
            client,
            fleet,
            metrics,
            default_image,
            reporter: Reporter {
                controller: MANAGER.into(),
                instance: std::env::var("POD_NAME").ok(),
            },
            clock: Arc::new(Timestamp::now),
            poll: Duration::from_secs(10),
            idle_poll: Duration::from_secs(60),
            event_seq: AtomicU64::new(0),
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
    TenantReport {
        id: TenantId {
            namespace: lc.metadata.namespace.as_deref().unwrap_or(""),
            name: lc.metadata.name.as_deref().unwrap_or(""),
            labels: lc.metadata.labels.as_ref().unwrap_or(&EMPTY),
        },
        pinned: lc.spec.image.is_some(),
        deployed: cond("Accepted").is_none_or(|c| c.status != "False"),
        image: reported_image(status),
        ready: current && ready.is_some_and(|c| c.status == "True"),
        reason: ready.map(|c| c.reason.as_str()).unwrap_or("NoStatus"),
        message: ready
            .map(|c| c.message.as_str())
            .unwrap_or("the operator has not reported on this tenant yet"),
    }
}

/// One reconcile of one rollout.
pub async fn reconcile(obj: Arc<LumenoreFleetRollout>, ctx: Arc<RolloutContext>) -> Result<Action, Error> {
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
    let decision = decide::decide(&Input {
        generation: rollout.metadata.generation,
        spec: &rollout.spec,
        resume,
        old: &old,
        default_image: &ctx.default_image,
        fleet: &reports,
        now: (ctx.clock)(),
        conflict: conflict.as_deref(),
    });

    if conflict.is_none() {
        ctx.metrics.fleet.set_versions(decide::versions(reports.iter()));
        ctx.metrics
            .fleet
            .set_phase(decision.status.phase, decision.status.fleet.updated);
    }
    if decision.status != old {
        write_status(&api, &rollout.name_any(), &decision.status).await?;
    }
    let reference = rollout.object_ref(&());
    for e in &decision.events {
        tracing::info!(rollout = %rollout.name_any(), reason = e.reason, "{}", e.note);
        if let Err(err) = publish_event(&ctx, &reference, e).await {
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

async fn write_status(
    api: &Api<LumenoreFleetRollout>,
    name: &str,
    status: &LumenoreFleetRolloutStatus,
) -> Result<(), kube::Error> {
    let patch = serde_json::json!({
        "apiVersion": LumenoreFleetRollout::api_version(&()),
        "kind": LumenoreFleetRollout::kind(&()),
        "status": status,
    });
    api.patch_status(name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&patch))
        .await
        .map(|_| ())
}

async fn publish_event(
    ctx: &RolloutContext,
    reference: &ObjectReference,
    e: &RolloutEvent,
) -> Result<(), kube::Error> {
    let now = Timestamp::now();
    let ns = reference.namespace.clone().unwrap_or_else(|| "default".into());
    let seq = ctx.event_seq.fetch_add(1, Ordering::Relaxed);
    let reporter = &ctx.reporter;
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
        action: Some("Rollout".into()),
        reason: Some(e.reason.to_string()),
        note: Some(super::truncate(e.note.clone(), 1000)),
        type_: Some(if e.warning { "Warning" } else { "Normal" }.into()),
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

/// Hook for the tenant controller of one namespace: register its cache with the fleet view, and
/// reconcile its tenants whose image the rollout changed (after the rollout cache has the change).
pub fn wire_tenant_controller(
    controller: Controller<Guarded>,
    ctx: &Context,
    store: Store<Guarded>,
) -> Controller<Guarded> {
    ctx.fleet.register_tenants(store.clone());
    let Some(rollouts) = ctx.fleet.take_subscriber() else {
        return controller;
    };
    let fleet = ctx.fleet.clone();
    let default_image = ctx.config.default_image.clone();
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

/// Run the tenant controllers ([`crate::controller::run`]) and, when the LumenoreFleetRollout CRD is
/// installed, the rollout controller for `rollout_namespace`. Tenants are reconciled only once the
/// rollouts are known, so a starting operator never moves a tenant off its rollout image.
pub async fn run_all(
    ctx: Arc<Context>,
    namespaces: Vec<String>,
    concurrency: u16,
    rollout_namespace: String,
    shutdown: CancellationToken,
) {
    let client = ctx.client.clone();
    let api: Api<LumenoreFleetRollout> = Api::namespaced(client.clone(), &rollout_namespace);
    // No CRD, no rollout can exist: tenants follow --connector-image. Any other failure holds the
    // tenants until the rollouts can be read.
    // An unreachable API server says nothing about the CRD: ask again until the server answers (or the
    // operator stops), so a start before the API server is reachable does not hold the tenants forever.
    let probe = loop {
        match api.list(&ListParams::default().limit(1)).await {
            Err(kube::Error::Api(status)) => break Some(status.code),
            Ok(_) => break None,
            Err(_) => {
                tracing::warn!(namespace = %rollout_namespace, "cannot reach the API server to read fleet rollouts; retrying");
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(std::time::Duration::from_secs(2)) => {}
                }
            }
        }
    };
    if probe == Some(404) {
        tracing::warn!(
            namespace = %rollout_namespace,
            "the LumenoreFleetRollout CRD is not installed: fleet rollouts are off, tenants use --connector-image"
        );
        crate::controller::run(ctx, namespaces, concurrency, shutdown).await;
        return;
    }
    let (reader, writer) = reflector::store_shared::<LumenoreFleetRollout>(256);
    // One subscriber per consumer: an unread subscriber would hold the shared stream back.
    let tenant_controllers = namespaces.len().max(1);
    let subs: Vec<ReflectHandle<LumenoreFleetRollout>> = (0..=tenant_controllers)
        .filter_map(|_| writer.subscribe())
        .collect();
    let mut subs = subs.into_iter();
    let own = subs.next();
    ctx.fleet.set_rollouts(reader.clone());
    ctx.fleet.set_subscribers(subs.collect());
    let reflect = watcher(api, watcher::Config::default())
        .default_backoff()
        .reflect_shared(writer)
        .for_each(|_| future::ready(()));

    let rctx = Arc::new(RolloutContext::new(
        client,
        ctx.fleet.clone(),
        ctx.metrics.clone(),
        ctx.config.default_image.clone(),
    ));
    let ready = reader.clone();
    let stop = shutdown.clone();
    let rollouts = async move {
        if ready.wait_until_ready().await.is_err() {
            return;
        }
        let Some(own) = own else { return };
        Controller::for_shared_stream(own, reader)
            .graceful_shutdown_on(stop.cancelled_owned())
            .run(reconcile, error_policy, rctx)
            .for_each(|res| {
                if let Err(e) = res
                    && !matches!(e, controller::Error::ReconcilerFailed(..))
                {
                    tracing::warn!(error = %e, "rollout controller error");
                }
                future::ready(())
            })
            .await;
    };
    let ready = ctx.fleet.clone();
    let tenants = async move {
        // Reconciling a tenant before the rollouts are known could move it off its rollout image.
        let wait = ready.wait_rollouts_ready();
        tokio::pin!(wait);
        loop {
            tokio::select! {
                ok = &mut wait => {
                    if ok {
                        crate::controller::run(ctx, namespaces, concurrency, shutdown).await;
                    }
                    return;
                }
                _ = tokio::time::sleep(Duration::from_secs(30)) => {
                    tracing::error!(
                        namespace = %rollout_namespace,
                        "LumenoreFleetRollouts cannot be listed yet (RBAC? API server?): tenants are not reconciled until they can"
                    );
                }
            }
        }
    };
    tokio::select! {
        _ = reflect => {}
        _ = future::join(rollouts, tenants) => {}
    }
}
