//! Step 4 of the pipeline: write the children (server-side apply under the install's field manager),
//! hand `spec.replicas` over to an HPA, and prune what the spec no longer asks for.

use std::fmt::Debug;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Context, key_of, lock};
use crate::builders;
use crate::crd::{LumenoreConnector, MANAGER, REPLICAS_HANDOVER_MANAGER};
use crate::events::truncate;
use crate::status::ApplyFailure;

/// A child write that failed, with the child's kind.
pub(super) struct ChildError {
    pub(super) kind: &'static str,
    pub(super) source: kube::Error,
}

pub(super) trait ChildContext<T> {
    fn child(self, kind: &'static str) -> Result<T, ChildError>;
}

impl<T> ChildContext<T> for Result<T, kube::Error> {
    fn child(self, kind: &'static str) -> Result<T, ChildError> {
        self.map_err(|source| ChildError { kind, source })
    }
}

impl ChildError {
    /// The failure as the status reports it: the API's own message (names and rules, no user data).
    pub(super) fn failure(&self) -> ApplyFailure {
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

/// Apply every child, prune the ones no longer asked for, and return the applied Deployment.
pub(super) async fn apply_children(
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
    let owned = owns_replicas(&deployment, manager);
    ctx.while_cached(&key, lc.metadata.uid.as_deref(), || {
        lock(&ctx.replicas_owned).insert(key.clone(), owned);
    });
    apply_shares(ctx, lc, ns, &deployment).await.child("ConfigMap")?;
    Ok(deployment)
}

/// The rate-limit shares ConfigMap, after the Deployment: its ready replicas as the Deployment just
/// answered them (a change of them is a Deployment event, so it reconciles again). Applied every time it
/// is wanted (so a hand-deleted one comes back); pruned once when it is not.
async fn apply_shares(
    ctx: &Context,
    lc: &LumenoreConnector,
    ns: &str,
    deployment: &Deployment,
) -> Result<(), kube::Error> {
    let key = key_of(&lc.metadata);
    let uid = lc.metadata.uid.as_deref();
    match builders::shares_config_map(lc, builders::shares_of(deployment)) {
        Some(config_map) => {
            apply(&ctx.client, &ctx.config.field_manager, ns, &config_map).await?;
            lock(&ctx.shares_absent).remove(&key);
        }
        None => {
            if lock(&ctx.shares_absent).contains(&key) {
                return Ok(());
            }
            let name = builders::shares_config_map_name(lc);
            prune::<ConfigMap>(&ctx.client, ns, &name, uid.unwrap_or_default()).await?;
            ctx.while_cached(&key, uid, || {
                lock(&ctx.shares_absent).insert(key.clone());
            });
        }
    }
    Ok(())
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
