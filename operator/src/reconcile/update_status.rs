//! Step 5 of the pipeline: the one writer of a LumenoreConnector's status, for well-formed and
//! malformed objects alike, with the condition gauges and one Event per transition.

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::Resource;
use kube::api::{Api, ApiResource, DynamicObject};

use super::apply::apply_patch;
use super::{Context, Error, key_of};
use crate::builders;
use crate::crd::{LumenoreConnector, LumenoreConnectorStatus};
use crate::observe;
use crate::status::{self, DeploymentObservation, Outcome};

/// Now, at the one-second precision a `Time` has on the wire (so what we remember equals what we read back).
pub(super) fn now() -> Time {
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
pub(super) async fn write_status(
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
    put_status(
        ctx,
        &lc.object_ref(&()),
        lc.status.as_ref(),
        &old_conditions,
        &new,
    )
    .await
}

/// Apply `new` to the status subresource of the object `reference` names when it differs from
/// what is `stored`, then count its conditions and publish an Event per transition from
/// `old_conditions`. An object deleted meanwhile is forgotten, not reported on.
pub(super) async fn put_status(
    ctx: &Context,
    reference: &ObjectReference,
    stored: Option<&LumenoreConnectorStatus>,
    old_conditions: &[Condition],
    new: &LumenoreConnectorStatus,
) -> Result<(), Error> {
    let ns = reference.namespace.as_deref().unwrap_or("default");
    let name = reference.name.as_deref().unwrap_or_default();
    let key = format!("{ns}/{name}");
    if stored != Some(new) {
        // Untyped, so a malformed object (which does not deserialize) is written the same way.
        let ar = ApiResource::erase::<LumenoreConnector>(&());
        let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), ns, &ar);
        let patch = serde_json::json!({
            "apiVersion": ar.api_version,
            "kind": ar.kind,
            "status": new,
        });
        match apply_patch(&api, &ctx.config.field_manager, name, &patch, true).await {
            Ok(_) => {}
            // Deleted meanwhile: nothing to report on.
            Err(kube::Error::Api(s)) if s.code == 404 => {
                ctx.forget(&key);
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        }
    }
    // An unchanged status is not written, so no 404 tells of a deletion: the cache does.
    ctx.while_cached(&key, reference.uid.as_deref(), || {
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
    });
    publish_transitions(ctx, reference, old_conditions, &new.conditions).await;
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
