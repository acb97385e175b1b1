//! Wiring of the kube-runtime controller: the CR watch (malformed objects tolerated), owned
//! Deployments (metadata only) and Secrets (metadata only) mapped to the CRs that reference them.

use std::sync::Arc;

use futures::{Stream, StreamExt, TryStreamExt, future};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PartialObjectMeta};
use kube::runtime::controller::{self, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Client, ResourceExt};
use tokio_util::sync::CancellationToken;

use crate::inputs::referenced_secrets;
use crate::reconcile::{Context, Guarded, error_policy, reconcile};

/// Label selecting the Deployments this operator manages.
pub const MANAGED_BY_SELECTOR: &str = "app.kubernetes.io/managed-by=lumenore-operator";

/// The CRs in `store` that reference Secret `name` in namespace `ns`.
pub fn connectors_for_secret(store: &Store<Guarded>, ns: &str, name: &str) -> Vec<ObjectRef<Guarded>> {
    store
        .state()
        .iter()
        .filter(|o| {
            o.0.as_ref().is_ok_and(|lc| {
                lc.metadata.namespace.as_deref() == Some(ns) && referenced_secrets(lc).any(|s| s == name)
            })
        })
        .map(|o| ObjectRef::from_obj(o.as_ref()))
        .collect()
}

fn api_for<K>(client: &Client, ns: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Changed (not initially listed) Secrets: at start every CR is reconciled anyway.
fn secret_changes(
    api: Api<PartialObjectMeta<Secret>>,
) -> impl Stream<Item = Result<PartialObjectMeta<Secret>, watcher::Error>> + Send + 'static {
    watcher(api, watcher::Config::default())
        .default_backoff()
        .try_filter_map(|ev| {
            future::ready(Ok(match ev {
                watcher::Event::Apply(s) | watcher::Event::Delete(s) => Some(s),
                _ => None,
            }))
        })
}

/// The object a watch event asks to reconcile. A deleted CR is not reconciled (its children go with
/// it through their owner references); what the operator kept for it is forgotten instead.
pub fn to_reconcile(ctx: &Context, event: watcher::Event<Guarded>) -> Option<Guarded> {
    match event {
        watcher::Event::Apply(obj) | watcher::Event::InitApply(obj) => Some(obj),
        watcher::Event::Delete(obj) => {
            let meta = match &obj.0 {
                Ok(lc) => &lc.metadata,
                Err(inv) => &inv.metadata,
            };
            ctx.forget(&format!(
                "{}/{}",
                meta.namespace.as_deref().unwrap_or(""),
                meta.name.as_deref().unwrap_or("")
            ));
            None
        }
        watcher::Event::Init | watcher::Event::InitDone => None,
    }
}

/// Drop metadata the operator never reads from cached CRs.
pub fn strip_unused_metadata(obj: &mut Guarded) {
    let meta = match &mut obj.0 {
        Ok(lc) => &mut lc.metadata,
        Err(inv) => &mut inv.metadata,
    };
    meta.managed_fields = None;
    if let Some(a) = meta.annotations.as_mut() {
        a.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
}

/// How the LumenoreConnector watch lists and watches (the benchmark fills its cache with the same).
pub fn connector_watch_config() -> watcher::Config {
    watcher::Config::default().any_semantic()
}

/// Run one controller over `ns` (`None` = all namespaces) until `shutdown` is cancelled.
pub async fn run_one(ctx: Arc<Context>, ns: Option<String>, concurrency: u16, shutdown: CancellationToken) {
    let client = ctx.client.clone();
    let ns = ns.as_deref();
    let connectors: Api<Guarded> = api_for(&client, ns);
    // Metadata-only watches: the operator never holds Deployment specs or Secret data in memory.
    let deployments = watcher(
        api_for::<PartialObjectMeta<Deployment>>(&client, ns),
        watcher::Config::default().labels(MANAGED_BY_SELECTOR),
    )
    .default_backoff()
    .touched_objects();
    let secrets = secret_changes(api_for::<PartialObjectMeta<Secret>>(&client, ns));

    // The CR cache drops managedFields and the last-applied annotation: they are large and unused.
    let (store, writer) = reflector::store();
    let on_event = ctx.clone();
    let main = watcher(connectors, connector_watch_config())
        .default_backoff()
        .modify(strip_unused_metadata)
        .reflect(writer)
        .try_filter_map(move |ev| future::ready(Ok(to_reconcile(&on_event, ev))));
    let controller = Controller::for_stream(main, store.clone());
    let controller = crate::rollout::controller::wire_tenant_controller(controller, &ctx, store.clone());
    let scope = ns.unwrap_or("<all>").to_string();
    controller
        .owns_stream(deployments)
        .watches_stream(secrets, move |secret: PartialObjectMeta<Secret>| {
            let sns = secret.namespace().unwrap_or_default();
            connectors_for_secret(&store, &sns, &secret.name_any())
        })
        .with_config(controller::Config::default().concurrency(concurrency))
        .graceful_shutdown_on(shutdown.cancelled_owned())
        .run(reconcile, error_policy, ctx)
        .for_each(|res| {
            match res {
                Ok((obj, _)) => tracing::debug!(object = %obj, "reconciled"),
                Err(controller::Error::ReconcilerFailed(e, obj)) => {
                    tracing::debug!(object = %obj, reason = e.reason(), "reconcile failed")
                }
                Err(e) => tracing::warn!(namespace = %scope, error = %e, "controller error"),
            }
            future::ready(())
        })
        .await;
}

/// Run one controller per watched namespace (all namespaces when `namespaces` is empty).
pub async fn run(ctx: Arc<Context>, namespaces: Vec<String>, concurrency: u16, shutdown: CancellationToken) {
    if namespaces.is_empty() {
        run_one(ctx, None, concurrency, shutdown).await;
    } else {
        future::join_all(
            namespaces
                .into_iter()
                .map(|ns| run_one(ctx.clone(), Some(ns), concurrency, shutdown.clone())),
        )
        .await;
    }
}
