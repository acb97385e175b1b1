//! Wiring of the running operator: the tenant controllers (one per watched namespace) and the
//! rollout controller, each handed the caches it reads as arguments.
//!
//! Order matters, and is kept here in one place:
//! 1. Is the `LumenoreFleetRollout` CRD installed? Without it tenants follow `--connector-image`,
//!    and the question is asked again every `crd_probe_interval`: when the CRD appears, the tenant
//!    controllers stop and everything starts again with rollouts (no restart of the process).
//! 2. With it: the rollout cache is filled before any tenant is reconciled (a tenant reconciled
//!    before the rollouts are known could be moved off its rollout image), and the rollout
//!    controller decides nothing until every tenant cache has had its first LIST (a decision on a
//!    partial fleet finishes waves that have no members yet).

use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, future};
use kube::api::{Api, ListParams};
use kube::runtime::reflector;
use kube::runtime::{WatchStreamExt, watcher};
use tokio_util::sync::CancellationToken;

use crate::controller::{self, TenantCache};
use crate::reconcile::Context;
use crate::rollout::LumenoreFleetRollout;
use crate::rollout::controller::{self as rollout_controller, RolloutContext};
use crate::rollout::feed::{Feed, RolloutUpdates};

/// How the controllers run.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// Namespaces whose tenants are reconciled; empty: all namespaces.
    pub namespaces: Vec<String>,
    /// Reconciles at once, per tenant controller.
    pub concurrency: u16,
    /// Namespace whose `LumenoreFleetRollout` governs the fleet.
    pub rollout_namespace: String,
    /// How often an absent rollout CRD is looked for again.
    pub crd_probe_interval: Duration,
    /// How often an active rollout looks at the fleet again.
    pub rollout_poll: Duration,
}

/// Whether the rollout CRD is served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Crd {
    Installed,
    Missing,
}

/// Ask the API server whether rollouts can be listed; `None` when `shutdown` came first. An
/// unreachable API server says nothing about the CRD: ask again until it answers.
async fn probe(api: &Api<LumenoreFleetRollout>, shutdown: &CancellationToken) -> Option<Crd> {
    loop {
        match api.list(&ListParams::default().limit(1)).await {
            Err(kube::Error::Api(status)) if status.code == 404 => return Some(Crd::Missing),
            // Any other answer (403 too) is a server that knows the kind: the watch reports the rest.
            Err(kube::Error::Api(_)) | Ok(_) => return Some(Crd::Installed),
            Err(_) => {
                tracing::warn!("cannot reach the API server to read fleet rollouts; retrying");
                tokio::select! {
                    () = shutdown.cancelled() => return None,
                    () = tokio::time::sleep(Duration::from_secs(2)) => {}
                }
            }
        }
    }
}

/// One empty cache per tenant controller (one per namespace, or one for all), registered with the
/// fleet view before any controller starts, so the fleet knows how many to wait for, and with the
/// reconciler's context (state is kept only about objects these caches hold), replacing the caches
/// of controllers that stopped.
fn tenant_caches(ctx: &Context, namespaces: &[String]) -> Vec<(Option<String>, TenantCache)> {
    let scopes: Vec<Option<String>> = if namespaces.is_empty() {
        vec![None]
    } else {
        namespaces.iter().cloned().map(Some).collect()
    };
    let caches: Vec<(Option<String>, TenantCache)> = scopes
        .into_iter()
        .map(|ns| {
            let (store, writer) = reflector::store();
            (ns, (store, writer))
        })
        .collect();
    let stores: Vec<_> = caches.iter().map(|(_, (store, _))| store.clone()).collect();
    ctx.fleet.set_tenant_caches(stores.clone());
    ctx.set_tenant_caches(stores);
    caches
}

/// Run every tenant controller until `stop`; each gets its cache and, with rollouts, its own
/// subscription to the rollout cache.
async fn run_tenants(
    ctx: Arc<Context>,
    caches: Vec<(Option<String>, TenantCache)>,
    mut rollouts: Vec<RolloutUpdates>,
    concurrency: u16,
    stop: CancellationToken,
) {
    future::join_all(caches.into_iter().map(|(ns, cache)| {
        controller::run_one(ctx.clone(), ns, cache, rollouts.pop(), concurrency, stop.clone())
    }))
    .await;
}

/// Run the controllers until `shutdown` is cancelled.
pub async fn run_all(ctx: Arc<Context>, config: RunConfig, shutdown: CancellationToken) {
    let api: Api<LumenoreFleetRollout> = Api::namespaced(ctx.client.clone(), &config.rollout_namespace);
    loop {
        match probe(&api, &shutdown).await {
            None => return,
            Some(Crd::Installed) => return run_with_rollouts(ctx, &config, api, shutdown).await,
            Some(Crd::Missing) => {
                tracing::warn!(
                    namespace = %config.rollout_namespace,
                    "the LumenoreFleetRollout CRD is not installed: fleet rollouts are off, tenants use --connector-image; looking again every {:?}",
                    config.crd_probe_interval
                );
                ctx.fleet.clear_rollouts();
                let stop = shutdown.child_token();
                let caches = tenant_caches(&ctx, &config.namespaces);
                let tenants = run_tenants(ctx.clone(), caches, Vec::new(), config.concurrency, stop.clone());
                let watch_crd = async {
                    loop {
                        tokio::select! {
                            () = stop.cancelled() => return,
                            () = tokio::time::sleep(config.crd_probe_interval) => {}
                        }
                        if probe(&api, &stop).await == Some(Crd::Installed) {
                            tracing::info!(
                                "the LumenoreFleetRollout CRD is installed now: restarting the controllers with fleet rollouts"
                            );
                            stop.cancel();
                            return;
                        }
                    }
                };
                future::join(tenants, watch_crd).await;
                if shutdown.is_cancelled() {
                    return;
                }
            }
        }
    }
}

async fn run_with_rollouts(
    ctx: Arc<Context>,
    config: &RunConfig,
    api: Api<LumenoreFleetRollout>,
    shutdown: CancellationToken,
) {
    let (reader, writer) = reflector::store::<LumenoreFleetRollout>();
    let caches = tenant_caches(&ctx, &config.namespaces);
    // One subscriber per consumer (the rollout controller, each tenant controller); see rollout::feed for
    // why not kube-runtime's shared reflector.
    let feed = Feed::new(reader.clone(), 256);
    let mut subs: Vec<RolloutUpdates> = (0..=caches.len()).map(|_| feed.subscribe()).collect();
    let own = subs.pop();
    ctx.fleet.set_rollouts(reader.clone());
    let reflect = watcher(
        api,
        controller::with_watch_timeout(watcher::Config::default(), &ctx),
    )
    .default_backoff()
    .reflect(writer)
    .for_each(|event| {
        if let Ok(event) = &event {
            feed.observe(event);
        }
        future::ready(())
    });

    let mut rctx = RolloutContext::new(
        ctx.client.clone(),
        ctx.fleet.clone(),
        ctx.metrics.clone(),
        ctx.config.default_image.clone(),
    );
    rctx.poll = config.rollout_poll;
    rctx.field_manager = ctx.config.field_manager.clone();
    rctx.events = ctx.events.clone();
    let rollouts = {
        let reader = reader.clone();
        let stop = shutdown.clone();
        async move {
            if reader.wait_until_ready().await.is_err() {
                return;
            }
            if let Some(own) = own {
                rollout_controller::run(Arc::new(rctx), own, reader, stop).await;
            }
        }
    };
    let tenants = async {
        // Reconciling a tenant before the rollouts are known could move it off its rollout image.
        let wait = reader.wait_until_ready();
        tokio::pin!(wait);
        loop {
            tokio::select! {
                ok = &mut wait => {
                    if ok.is_ok() {
                        run_tenants(ctx.clone(), caches, subs, config.concurrency, shutdown.clone()).await;
                    }
                    return;
                }
                _ = tokio::time::sleep(Duration::from_secs(30)) => {
                    tracing::error!(
                        namespace = %config.rollout_namespace,
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
