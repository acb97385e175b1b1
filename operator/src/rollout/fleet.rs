//! What the tenant reconciler and the rollout controller share: caches of the API (the rollouts in
//! the operator's namespace, the LumenoreConnectors of each watched namespace), never state of
//! their own. Both are filled by watches; tests fill them from LISTs.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use futures::FutureExt;
use kube::ResourceExt;
use kube::runtime::reflector::Store;
use kube::runtime::reflector::store::Writer;
use kube::runtime::watcher;

use super::crd::LumenoreFleetRollout;
use super::plan::{self, Plan, TenantId, TenantImage};
use crate::crd::Guarded;
use crate::crd::{LumenoreConnector, LumenoreConnectorStatus};

/// The compiled plan of one rollout status, kept while the status is unchanged.
struct CachedPlan {
    uid: String,
    resource_version: String,
    plan: Arc<Plan>,
}

/// Shared view of the fleet's rollouts and tenants.
#[derive(Default)]
pub struct FleetView {
    rollouts: RwLock<Option<Store<LumenoreFleetRollout>>>,
    tenants: Mutex<Vec<Store<Guarded>>>,
    /// How many tenant caches the running controllers fill (one per watched namespace, or one for
    /// all). Until each is registered and has had its first LIST, the fleet seen is partial.
    expected_tenant_caches: AtomicUsize,
    plan: Mutex<Option<CachedPlan>>,
}

impl FleetView {
    pub fn new() -> Self {
        Self::default()
    }

    /// Use `store` (the rollouts of the operator's namespace) from now on.
    pub fn set_rollouts(&self, store: Store<LumenoreFleetRollout>) {
        *self.rollouts.write().unwrap_or_else(|e| e.into_inner()) = Some(store);
    }

    /// Rollouts are not watched (their CRD is not installed).
    pub fn clear_rollouts(&self) {
        *self.rollouts.write().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// The tenant caches of the controllers starting now (replacing those of controllers that
    /// stopped); the fleet is complete once each has had its first LIST.
    pub fn set_tenant_caches(&self, stores: Vec<Store<Guarded>>) {
        self.expected_tenant_caches.store(stores.len(), Ordering::Relaxed);
        *self.tenants.lock().unwrap_or_else(|e| e.into_inner()) = stores;
    }

    /// Add the LumenoreConnector cache of one watched namespace (or of all).
    pub fn register_tenants(&self, store: Store<Guarded>) {
        self.tenants.lock().unwrap_or_else(|e| e.into_inner()).push(store);
    }

    /// The number of tenant caches [`tenants_ready`](Self::tenants_ready) waits for.
    pub fn expect_tenant_caches(&self, n: usize) {
        self.expected_tenant_caches.store(n, Ordering::Relaxed);
    }

    /// Whether every tenant cache is registered and filled by its first LIST. A decision made on a
    /// partial fleet (an operator restarting, or a new leader, while its caches fill one namespace
    /// at a time) would see waves without members and finish them.
    pub fn tenants_ready(&self) -> bool {
        let stores = self.tenants.lock().unwrap_or_else(|e| e.into_inner()).clone();
        stores.len() >= self.expected_tenant_caches.load(Ordering::Relaxed)
            && stores
                .iter()
                .all(|s| s.wait_until_ready().now_or_never().is_some_and(|r| r.is_ok()))
    }

    /// Every cached LumenoreConnector.
    pub fn tenants(&self) -> Vec<Arc<Guarded>> {
        let stores = self.tenants.lock().unwrap_or_else(|e| e.into_inner()).clone();
        stores.iter().flat_map(|s| s.state()).collect()
    }

    /// Every cached rollout.
    pub fn rollouts(&self) -> Vec<Arc<LumenoreFleetRollout>> {
        self.rollouts
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|s| s.state())
            .unwrap_or_default()
    }

    /// The rollout that governs the fleet: the oldest (creation time, then name). Others are refused.
    pub fn active(&self) -> Option<Arc<LumenoreFleetRollout>> {
        active_of(self.rollouts())
    }

    fn plan_of(&self, r: &LumenoreFleetRollout) -> Arc<Plan> {
        let uid = r.uid().unwrap_or_default();
        let rv = r.resource_version().unwrap_or_default();
        let mut cache = self.plan.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = cache.as_ref()
            && c.uid == uid
            && c.resource_version == rv
            && !rv.is_empty()
        {
            return c.plan.clone();
        }
        let plan = Arc::new(Plan::from_status(
            r.status.as_ref().map(|s| s.waves.as_slice()).unwrap_or(&[]),
        ));
        *cache = Some(CachedPlan {
            uid,
            resource_version: rv,
            plan: plan.clone(),
        });
        plan
    }

    /// The image tenant `lc` should run now.
    pub fn tenant_image(&self, lc: &LumenoreConnector, default_image: &str) -> TenantImage {
        let active = self.active();
        let plan = active.as_ref().map(|r| self.plan_of(r));
        let status = active.as_ref().and_then(|r| r.status.as_ref());
        let id = TenantId {
            namespace: lc.metadata.namespace.as_deref().unwrap_or(""),
            name: lc.metadata.name.as_deref().unwrap_or(""),
            labels: lc.metadata.labels.as_ref().unwrap_or(&EMPTY),
        };
        plan::tenant_image(
            lc.spec.image.as_deref(),
            &id,
            reported_image(lc.status.as_ref()),
            status.zip(plan.as_deref()),
            default_image,
        )
    }
}

static EMPTY: std::collections::BTreeMap<String, String> = std::collections::BTreeMap::new();

/// The oldest rollout (creation time, then name): the one that governs the fleet.
pub fn active_of(mut rollouts: Vec<Arc<LumenoreFleetRollout>>) -> Option<Arc<LumenoreFleetRollout>> {
    rollouts.retain(|r| r.metadata.deletion_timestamp.is_none());
    rollouts.into_iter().min_by(|a, b| {
        let ka = (a.metadata.creation_timestamp.as_ref().map(|t| t.0), a.name_any());
        let kb = (b.metadata.creation_timestamp.as_ref().map(|t| t.0), b.name_any());
        ka.cmp(&kb)
    })
}

/// What a tenant reports in `status.connector`: the image its Deployment runs (`deployment_image`),
/// its version, its wave and whether it pins its own image.
pub fn connector_status(
    decision: &TenantImage,
    deployment_image: Option<&str>,
) -> Option<super::crd::ConnectorImageStatus> {
    let image = deployment_image?;
    Some(super::crd::ConnectorImageStatus {
        image: Some(image.to_string()),
        version: Some(super::image::version_of(image)),
        wave: decision.wave.clone(),
        pinned: decision.pinned,
    })
}

/// The image a tenant's status reports.
pub fn reported_image(status: Option<&LumenoreConnectorStatus>) -> Option<&str> {
    status
        .and_then(|s| s.connector.as_ref())
        .and_then(|c| c.image.as_deref())
}

/// Replace the content of a store with `objects`, as a watch's initial LIST does (tests, benchmark).
pub fn fill_store<K>(writer: &mut Writer<K>, objects: impl IntoIterator<Item = K>)
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Clone + Eq + std::hash::Hash + Default,
{
    writer.apply_watcher_event(&watcher::Event::Init);
    for o in objects {
        writer.apply_watcher_event(&watcher::Event::InitApply(o));
    }
    writer.apply_watcher_event(&watcher::Event::InitDone);
}
