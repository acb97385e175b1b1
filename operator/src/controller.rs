//! The tenant controller of one watched namespace: the CR watch (malformed objects tolerated),
//! owned Deployments (metadata only) and Secrets (metadata only) mapped to the CRs that reference
//! them. [`crate::run`] wires it with the rollout controller.

use std::collections::HashSet;
use std::sync::Arc;

use futures::{Stream, StreamExt, TryStreamExt, future};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PartialObjectMeta};
use kube::runtime::controller::{self, Controller};
use kube::runtime::reflector::store::Writer;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
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
    config: watcher::Config,
) -> impl Stream<Item = Result<PartialObjectMeta<Secret>, watcher::Error>> + Send + 'static {
    watcher(api, config).default_backoff().try_filter_map(|ev| {
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
            ctx.forget(&key_of(&obj));
            None
        }
        watcher::Event::Init | watcher::Event::InitDone => None,
    }
}

fn key_of(obj: &Guarded) -> String {
    let meta = match &obj.0 {
        Ok(lc) => &lc.metadata,
        Err(inv) => &inv.metadata,
    };
    format!(
        "{}/{}",
        meta.namespace.as_deref().unwrap_or(""),
        meta.name.as_deref().unwrap_or("")
    )
}

/// What a re-list no longer shows is forgotten. After a `410 Gone` or a lost connection the
/// watcher lists again (`Init`, `InitApply`..., `InitDone`) and emits no `Delete` for an object
/// deleted meanwhile, so without this its gauges and remembered state would stay until a restart.
#[derive(Default)]
pub struct Relist {
    /// Namespace the watch covers (`None`: all).
    scope: Option<String>,
    /// Keys listed since the last `Init`.
    seen: Option<HashSet<String>>,
}

impl Relist {
    pub fn new(scope: Option<String>) -> Self {
        Relist { scope, seen: None }
    }

    /// Follow one watch event; at `InitDone`, forget what the list did not have.
    pub fn observe(&mut self, ctx: &Context, event: &watcher::Event<Guarded>) {
        match event {
            watcher::Event::Init => self.seen = Some(HashSet::new()),
            watcher::Event::InitApply(obj) => {
                if let Some(seen) = self.seen.as_mut() {
                    seen.insert(key_of(obj));
                }
            }
            watcher::Event::InitDone => {
                if let Some(seen) = self.seen.take() {
                    ctx.forget_absent(self.scope.as_deref(), &seen);
                }
            }
            watcher::Event::Apply(_) | watcher::Event::Delete(_) => {}
        }
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

/// The server-side timeout of every watch: kube-runtime's watcher treats a stream that sends
/// nothing for this long plus 5 s as dead and watches again, so it bounds how long a silently
/// dropped connection (no FIN, no RST) can freeze a cache.
pub fn with_watch_timeout(config: watcher::Config, ctx: &Context) -> watcher::Config {
    config.timeout(ctx.config.watch_timeout_seconds.max(1))
}

/// The cache of one watched namespace: the store the controllers read, and its writer.
pub type TenantCache = (Store<Guarded>, Writer<Guarded>);

/// Run one tenant controller over `ns` (`None` = all namespaces) until `shutdown` is cancelled,
/// filling `cache`. With `rollouts` (this controller's subscription to the rollout cache), tenants
/// whose image the fleet rollout changed are reconciled when it changes.
pub async fn run_one(
    ctx: Arc<Context>,
    ns: Option<String>,
    cache: TenantCache,
    rollouts: Option<crate::rollout::feed::RolloutUpdates>,
    concurrency: u16,
    shutdown: CancellationToken,
) {
    let client = ctx.client.clone();
    let (store, writer) = cache;
    let ns = ns.as_deref();
    let connectors: Api<Guarded> = api_for(&client, ns);
    // Metadata-only watches: the operator never holds Deployment specs or Secret data in memory.
    let deployments = watcher(
        api_for::<PartialObjectMeta<Deployment>>(&client, ns),
        with_watch_timeout(watcher::Config::default().labels(MANAGED_BY_SELECTOR), &ctx),
    )
    .default_backoff()
    .touched_objects();
    let secrets = secret_changes(
        api_for::<PartialObjectMeta<Secret>>(&client, ns),
        with_watch_timeout(watcher::Config::default(), &ctx),
    );

    // The CR cache drops managedFields and the last-applied annotation: they are large and unused.
    let on_event = ctx.clone();
    let mut relist = Relist::new(ns.map(str::to_string));
    let main = watcher(connectors, with_watch_timeout(connector_watch_config(), &ctx))
        .default_backoff()
        .modify(strip_unused_metadata)
        .reflect(writer)
        .try_filter_map(move |ev| {
            relist.observe(&on_event, &ev);
            future::ready(Ok(to_reconcile(&on_event, ev)))
        });
    let controller = Controller::for_stream(main, store.clone());
    let controller = match rollouts {
        Some(handle) => crate::rollout::controller::follow_rollouts(
            controller,
            ctx.fleet.clone(),
            ctx.config.default_image.clone(),
            store.clone(),
            handle,
        ),
        None => controller,
    };
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
