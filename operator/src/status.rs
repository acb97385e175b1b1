//! Pure computation of the status conditions and of the transitions that deserve an Event.
//!
//! `Accepted`, `Available` and `Ready` are always written. For kstatus readers (Helm `--wait`, Flux
//! without health expressions, kpt, Config Sync) `Reconciling` is present and True while a rollout or
//! a retry is under way, and `Stalled` is present and True when a person must act (invalid spec,
//! another region, a Secret still missing after the grace period, a write the API refuses); both are
//! absent otherwise, as kstatus' convention for these "abnormal-true" conditions asks.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::inputs::SecretProblem;
use crate::validate::Rejection;

pub const ACCEPTED: &str = "Accepted";
pub const AVAILABLE: &str = "Available";
pub const READY: &str = "Ready";
/// kstatus: the operator is still working towards the desired state.
pub const RECONCILING: &str = "Reconciling";
/// kstatus: the operator cannot reach the desired state without a person.
pub const STALLED: &str = "Stalled";

/// What the connector Deployment looks like in the cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeploymentObservation {
    /// Replicas the Deployment wants (its live `spec.replicas`, HPA-owned or ours).
    pub desired: i32,
    pub replicas: i32,
    pub ready: i32,
    pub updated: i32,
    pub available: i32,
    /// The Deployment controller has seen the current Deployment spec.
    pub observed_current: bool,
    /// Deployment condition `Available` is True.
    pub available_condition: bool,
    /// Deployment condition `Progressing` is False with ProgressDeadlineExceeded.
    pub deadline_exceeded: bool,
    /// Image of the connector container.
    pub image: Option<String>,
}

impl DeploymentObservation {
    /// Observe a Deployment returned by the API server.
    pub fn from_deployment(d: &Deployment) -> Self {
        let desired = d.spec.replicas.unwrap_or(1);
        let st = d.status.clone().unwrap_or_default();
        let conds = st.conditions.unwrap_or_default();
        let is = |t: &str, s: &str| {
            conds
                .iter()
                .any(|c| c.type_.as_deref() == Some(t) && c.status.as_deref() == Some(s))
        };
        DeploymentObservation {
            desired,
            replicas: st.replicas.unwrap_or(0),
            ready: st.ready_replicas.unwrap_or(0),
            updated: st.updated_replicas.unwrap_or(0),
            available: st.available_replicas.unwrap_or(0),
            observed_current: match (st.observed_generation, d.metadata.generation) {
                (Some(o), Some(g)) => o >= g,
                _ => false,
            },
            available_condition: is("Available", "True"),
            deadline_exceeded: conds.iter().any(|c| {
                c.type_.as_deref() == Some("Progressing")
                    && c.status.as_deref() == Some("False")
                    && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
            }),
            image: d
                .spec
                .template
                .spec
                .as_ref()
                .and_then(|p| p.containers.iter().find(|c| c.name == "connector"))
                .and_then(|c| c.image.clone()),
        }
    }

    /// Every desired replica is updated, ready, and no old pod remains.
    pub fn rolled_out(&self) -> bool {
        self.observed_current
            && self.updated >= self.desired
            && self.ready >= self.desired
            && self.available >= self.desired
            && self.replicas == self.desired
    }
}

/// A child write the API server (or an admission webhook, a policy engine, a quota) refused, or that
/// did not get an answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApplyFailure {
    /// Kind of the child, e.g. `Service`.
    pub kind: &'static str,
    /// HTTP status of the refusal; `None` when no answer came (timeout, connection error).
    pub code: Option<u16>,
    /// The API's message (object names and rules, no user data).
    pub message: String,
}

impl ApplyFailure {
    /// A refusal that repeats until someone changes the spec or the policy (400, 403, 422 ...);
    /// conflicts, throttling, server errors and timeouts are transient.
    pub fn needs_a_person(&self) -> bool {
        matches!(self.code, Some(c) if (400..500).contains(&c) && c != 409 && c != 429)
    }
}

/// The outcome of a reconcile, as far as status is concerned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Not deployed: invalid spec or another region.
    Rejected(Rejection),
    /// Accepted, but a referenced Secret or key is missing; the Deployment (if any) is left as it was.
    /// `stalled` once the problem outlasted the grace period.
    SecretProblem {
        accepted: String,
        problem: SecretProblem,
        deployment: Option<DeploymentObservation>,
        stalled: bool,
    },
    /// Accepted, but writing a child failed; retried with backoff.
    ApplyFailed {
        accepted: String,
        failure: ApplyFailure,
        deployment: Option<DeploymentObservation>,
    },
    /// Children applied.
    Deployed {
        accepted: String,
        deployment: DeploymentObservation,
        suspended: bool,
        endpoint: String,
    },
}

/// A condition before its transition time is stamped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CondSpec {
    pub type_: &'static str,
    pub status: bool,
    pub reason: String,
    pub message: String,
}

fn c(type_: &'static str, status: bool, reason: &str, message: impl Into<String>) -> CondSpec {
    CondSpec {
        type_,
        status,
        reason: reason.to_string(),
        message: message.into(),
    }
}

fn available_cond(d: Option<&DeploymentObservation>, suspended: bool) -> CondSpec {
    if suspended {
        return c(
            AVAILABLE,
            false,
            "Suspended",
            "spec.suspend is true: scaled to 0 replicas, objects kept",
        );
    }
    match d {
        None => c(
            AVAILABLE,
            false,
            "NotDeployed",
            "the connector Deployment does not exist",
        ),
        Some(d) if d.available_condition && d.available > 0 => c(
            AVAILABLE,
            true,
            "MinimumReplicasAvailable",
            format!("{} of {} replicas available", d.available, d.desired),
        ),
        Some(d) => c(
            AVAILABLE,
            false,
            "NoReplicasAvailable",
            format!("{} of {} replicas available", d.available, d.desired),
        ),
    }
}

/// The conditions for `outcome`: Accepted, Available, Ready, then Reconciling and Stalled when True.
pub fn conditions_for(outcome: &Outcome) -> Vec<CondSpec> {
    match outcome {
        Outcome::Rejected(r) => vec![
            c(ACCEPTED, false, r.reason(), r.message()),
            c(
                AVAILABLE,
                false,
                "NotDeployed",
                "the connector is not deployed by this operator",
            ),
            c(READY, false, r.reason(), r.message()),
            c(STALLED, true, r.reason(), r.message()),
        ],
        Outcome::SecretProblem {
            accepted,
            problem,
            deployment,
            stalled,
        } => vec![
            c(ACCEPTED, true, "Accepted", accepted.clone()),
            available_cond(deployment.as_ref(), false),
            c(READY, false, problem.reason(), problem.message()),
            if *stalled {
                c(STALLED, true, problem.reason(), problem.message())
            } else {
                c(
                    RECONCILING,
                    true,
                    problem.reason(),
                    format!("{}; waiting for it", problem.message()),
                )
            },
        ],
        Outcome::ApplyFailed {
            accepted,
            failure,
            deployment,
        } => {
            let message = format!("applying the {} failed: {}", failure.kind, failure.message);
            vec![
                c(ACCEPTED, true, "Accepted", accepted.clone()),
                available_cond(deployment.as_ref(), false),
                c(READY, false, "ApplyFailed", message.clone()),
                if failure.needs_a_person() {
                    c(STALLED, true, "ApplyFailed", message)
                } else {
                    c(
                        RECONCILING,
                        true,
                        "ApplyFailed",
                        format!("{message}; retrying with backoff"),
                    )
                },
            ]
        }
        Outcome::Deployed {
            accepted,
            deployment: d,
            suspended,
            endpoint,
        } => {
            let ready = if *suspended {
                c(
                    READY,
                    false,
                    "Suspended",
                    "spec.suspend is true: scaled to 0 replicas, objects kept",
                )
            } else if d.deadline_exceeded {
                c(
                    READY,
                    false,
                    "ProgressDeadlineExceeded",
                    format!(
                        "rollout stuck: {} of {} replicas updated and ready",
                        d.ready.min(d.updated),
                        d.desired
                    ),
                )
            } else if d.desired == 0 {
                c(READY, false, "ScaledToZero", "the Deployment has 0 replicas")
            } else if d.rolled_out() && d.available_condition {
                c(
                    READY,
                    true,
                    "Ready",
                    format!(
                        "{} of {} replicas ready, serving at {endpoint}",
                        d.ready, d.desired
                    ),
                )
            } else {
                c(
                    READY,
                    false,
                    "RolloutInProgress",
                    format!(
                        "{} of {} replicas updated, {} ready, {} total",
                        d.updated, d.desired, d.ready, d.replicas
                    ),
                )
            };
            let progress = match ready.reason.as_str() {
                "RolloutInProgress" => Some(c(RECONCILING, true, "RolloutInProgress", ready.message.clone())),
                "ProgressDeadlineExceeded" => Some(c(
                    STALLED,
                    true,
                    "ProgressDeadlineExceeded",
                    ready.message.clone(),
                )),
                _ => None,
            };
            let mut out = vec![
                c(ACCEPTED, true, "Accepted", accepted.clone()),
                available_cond(Some(d), *suspended),
                ready,
            ];
            out.extend(progress);
            out
        }
    }
}

/// Stamp conditions: the transition time is kept from `old` when the status did not change.
pub fn stamp(old: &[Condition], new: Vec<CondSpec>, generation: Option<i64>, now: &Time) -> Vec<Condition> {
    new.into_iter()
        .map(|n| {
            let status = if n.status { "True" } else { "False" };
            let last_transition_time = old
                .iter()
                .find(|o| o.type_ == n.type_ && o.status == status)
                .map(|o| o.last_transition_time.clone())
                .unwrap_or_else(|| now.clone());
            Condition {
                type_: n.type_.to_string(),
                status: status.to_string(),
                reason: n.reason,
                message: n.message,
                observed_generation: generation,
                last_transition_time,
            }
        })
        .collect()
}

/// Conditions whose status or reason changed from `old` to `new` (each deserves one Event).
pub fn transitions<'a>(old: &[Condition], new: &'a [Condition]) -> Vec<&'a Condition> {
    new.iter()
        .filter(|n| {
            !old.iter()
                .any(|o| o.type_ == n.type_ && o.status == n.status && o.reason == n.reason)
        })
        .collect()
}
