//! The `LumenoreFleetRollout` custom resource: one staged upgrade of the fleet's connector image.
//!
//! Namespaced, and read only in the operator's own namespace: a namespace-scoped install has no
//! cluster-wide permission to read a cluster-scoped object, two operator installs in one cluster each
//! govern their own fleet, and who may change the fleet's version is who may write in the operator's
//! namespace (the platform team), not a tenant namespace owner.
//!
//! The operator never writes `spec`. What tenants follow is `status` alone: the plan the operator
//! accepted (target image, previous image, waves, skipped tenants) and how far it got (current wave,
//! partition). An edit that breaks a rule is reported and changes nothing, because the tenants keep
//! following the last accepted status.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A staged upgrade of every LumenoreConnector that does not pin its own `spec.image`.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "lumenore.io",
    version = "v1alpha1",
    kind = "LumenoreFleetRollout",
    plural = "lumenorefleetrollouts",
    singular = "lumenorefleetrollout",
    shortname = "lfr",
    category = "lumenore",
    namespaced,
    status = "LumenoreFleetRolloutStatus",
    doc = "A LumenoreFleetRollout moves the connector image of every LumenoreConnector that does not pin spec.image to a new version, wave by wave: canary tenants first, a few tenants at a time, each wave baked before the next; a tenant not Ready within its deadline stops the rollout.",
    printcolumn(
        name = "Image",
        type_ = "string",
        json_path = ".status.image",
        description = "Target connector image the tenants are moving to"
    ),
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        description = "Progressing, Paused, Stalled, Completed, RolledBack or Invalid"
    ),
    printcolumn(
        name = "Wave",
        type_ = "string",
        json_path = ".status.currentWaveName",
        description = "Wave being rolled out"
    ),
    printcolumn(
        name = "Updated",
        type_ = "integer",
        json_path = ".status.fleet.updated",
        description = "Tenants running the target image and Ready"
    ),
    printcolumn(
        name = "Tenants",
        type_ = "integer",
        json_path = ".status.fleet.tenants",
        description = "Tenants this rollout moves (pinned and skipped ones not counted)"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "Ready condition: the rollout reached its goal"
    ),
    printcolumn(
        name = "Previous",
        type_ = "string",
        json_path = ".status.previousImage",
        description = "Image the fleet ran before; rollback returns to it",
        priority = 1
    ),
    printcolumn(
        name = "Message",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].message",
        description = "Why the rollout is where it is",
        priority = 1
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(validation = Rule::new("self.waves.all(w, self.waves.exists_one(x, x.name == w.name))").message("waves[].name must be unique").field_path(".waves"))]
#[x_kube(validation = Rule::new("!has(self.waves[size(self.waves) - 1].selector) && self.waves[size(self.waves) - 1].percent == 100").message("the last wave must take every remaining tenant: no selector and percent 100").field_path(".waves"))]
#[serde(rename_all = "camelCase")]
pub struct LumenoreFleetRolloutSpec {
    /// Target connector image, with a tag or a digest (e.g. `ghcr.io/lumenore/lumenore-connector:0.2.0`).
    #[schemars(length(min = 1, max = 512))]
    pub image: String,

    /// Waves, in order. Each takes, of the tenants no earlier wave took, those matching its selector
    /// (all when unset) and of those `percent` percent. The last wave must take every remaining tenant
    /// (no selector, percent 100).
    #[schemars(length(min = 1, max = 20))]
    pub waves: Vec<Wave>,

    /// Tenants of a wave updated at once: the next batch starts when this batch is Ready.
    #[serde(default = "default_max_unavailable")]
    #[schemars(range(min = 1, max = 10000))]
    pub max_unavailable: u32,

    /// Seconds every tenant of a wave must stay Ready before the next wave starts.
    #[serde(default = "default_bake_seconds")]
    #[schemars(range(min = 0, max = 604800))]
    pub bake_seconds: u32,

    /// Seconds an updated tenant has to become Ready; a tenant that does not stops the rollout (Stalled).
    #[serde(default = "default_ready_deadline_seconds")]
    #[schemars(range(min = 1, max = 86400))]
    pub ready_deadline_seconds: u32,

    /// Hold the rollout where it is: no further tenant is updated until this is false again.
    #[serde(default)]
    pub paused: bool,

    /// Tenants (`namespace/name`) this rollout leaves out: they keep, or go back to, the previous image.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    pub skip_tenants: Vec<String>,

    /// Send every tenant this rollout moved back to the previous image (all at once).
    #[serde(default)]
    pub rollback: bool,
}

fn default_max_unavailable() -> u32 {
    5
}
fn default_bake_seconds() -> u32 {
    300
}
fn default_ready_deadline_seconds() -> u32 {
    600
}
fn default_percent() -> u32 {
    100
}

/// One wave of tenants.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Wave {
    /// Name of the wave (a DNS label, unique in the rollout), e.g. `canary`.
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// Labels of the LumenoreConnectors this wave takes. Unset: every tenant no earlier wave took.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
    /// Percent of the matching tenants not taken by an earlier wave (chosen by a stable hash of
    /// `namespace/name`, so a tenant never changes wave as the fleet grows).
    #[serde(default = "default_percent")]
    #[schemars(range(min = 1, max = 100))]
    pub percent: u32,
}

/// Where a rollout is.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Tenants are being updated, wave by wave.
    Progressing,
    /// `spec.paused` is true: no further tenant is updated.
    Paused,
    /// A tenant did not become Ready in time; a person resumes, skips it or rolls back.
    Stalled,
    /// Every tenant runs the target image.
    Completed,
    /// `spec.rollback` is true: every tenant runs the previous image again.
    RolledBack,
    /// The spec breaks a rule (or another rollout governs the fleet); nothing of it was applied.
    Invalid,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Progressing => "Progressing",
            Phase::Paused => "Paused",
            Phase::Stalled => "Stalled",
            Phase::Completed => "Completed",
            Phase::RolledBack => "RolledBack",
            Phase::Invalid => "Invalid",
        }
    }
    pub const ALL: [Phase; 6] = [
        Phase::Progressing,
        Phase::Paused,
        Phase::Stalled,
        Phase::Completed,
        Phase::RolledBack,
        Phase::Invalid,
    ];
}

/// An accepted wave and its progress.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WaveStatus {
    /// Name of the wave.
    pub name: String,
    /// Selector of the wave, as accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
    /// Percent of the wave, as accepted.
    pub percent: u32,
    /// Tenants in the wave (pinned, skipped and not-deployed ones excluded).
    #[serde(default)]
    pub tenants: u32,
    /// Tenants of the wave whose connector runs the target image.
    #[serde(default)]
    pub updated: u32,
    /// Updated tenants of the wave that are Ready.
    #[serde(default)]
    pub ready: u32,
}

impl WaveStatus {
    /// The wave definition this status was accepted from.
    pub fn definition(&self) -> Wave {
        Wave {
            name: self.name.clone(),
            selector: self.selector.clone(),
            percent: self.percent,
        }
    }
}

/// A tenant that stopped the rollout.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FailedTenant {
    /// `namespace/name` of the LumenoreConnector.
    pub tenant: String,
    /// Wave of the tenant.
    pub wave: String,
    /// Reason of the failure (the tenant's Ready reason, or `NotUpdated`).
    pub reason: String,
    /// What the tenant reported.
    pub message: String,
}

/// Fleet-wide counts.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct FleetCounts {
    /// Tenants this rollout moves.
    pub tenants: u32,
    /// Of those, tenants running the goal image (target; previous when rolled back) and Ready.
    pub updated: u32,
    /// Tenants pinning their own `spec.image`: reported, never touched.
    pub pinned: u32,
    /// Tenants left out by `spec.skipTenants`.
    pub skipped: u32,
    /// Tenants this operator does not deploy (invalid spec, another region).
    pub not_deployed: u32,
}

/// Observed state of a LumenoreFleetRollout. Everything the operator needs to continue after a
/// restart or a leader change is here.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct LumenoreFleetRolloutStatus {
    /// Generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Progressing, Paused, Stalled, Completed, RolledBack or Invalid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// Target image of the accepted plan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Image the fleet ran when the accepted plan started; tenants not yet admitted run it, and a
    /// rollback returns to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_image: Option<String>,
    /// The accepted waves, with their counts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub waves: Vec<WaveStatus>,
    /// The accepted `spec.skipTenants`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skip_tenants: Vec<String>,
    /// Index (from 0) of the wave being rolled out; waves before it are done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_wave: Option<u32>,
    /// Name of the wave being rolled out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_wave_name: Option<String>,
    /// Tenants of the current wave whose order key (first 8 bytes of SHA-256 of `namespace/name`, as
    /// 16 hex digits) is below this value are admitted to the target image. `10000000000000000` admits all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<String>,
    /// When the current batch was admitted: its tenants must be Ready within `readyDeadlineSeconds`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_started_at: Option<Time>,
    /// When every tenant of the current wave was first seen Ready: the bake started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bake_started_at: Option<Time>,
    /// Generation at which the rollout stalled (a stall holds until a spec change or a resume request).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stalled_generation: Option<i64>,
    /// Value of the `lumenore.io/resume` annotation last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_resume: Option<String>,
    /// Fleet-wide counts.
    #[serde(default)]
    pub fleet: FleetCounts,
    /// Tenants that stopped the rollout (at most 20 listed; `failedCount` has them all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_tenants: Vec<FailedTenant>,
    /// Number of tenants that stopped the rollout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_count: Option<u32>,
    /// Conditions Ready, Progressing, Reconciling and Stalled (kstatus).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// What a LumenoreConnector reports about the connector image it runs (`status.connector`).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ConnectorImageStatus {
    /// Image of the connector Deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Tag (or digest) of that image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Wave of the fleet rollout this tenant belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wave: Option<String>,
    /// The tenant pins its own `spec.image`: fleet rollouts never touch it.
    #[serde(default)]
    pub pinned: bool,
}
