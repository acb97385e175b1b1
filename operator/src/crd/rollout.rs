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
use std::collections::BTreeMap;

pub use super::secret_ref::SecretKeyRef;

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
#[x_kube(validation = Rule::new("!has(self.analysis) || self.bakeSeconds > 0").message("analysis judges the bake: bakeSeconds must be above 0").field_path(".bakeSeconds"))]
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

    /// Judge each wave's bake by what the tenants' users feel, from Prometheus: the wave's tenants
    /// against the tenants still on the previous image. Unset: a wave advances when its tenants are
    /// Ready for `bakeSeconds`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<Analysis>,
}

/// Metric analysis of each wave's bake (every wave but the last, which has no baseline left).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("!has(self.errorRatio) || !has(self.errorRatio.enabled) || self.errorRatio.enabled || !has(self.latency) || !has(self.latency.enabled) || self.latency.enabled || (has(self.custom) && size(self.custom) > 0)").message("analysis needs a check: errorRatio, latency or custom"))]
#[serde(rename_all = "camelCase")]
pub struct Analysis {
    /// The Prometheus-compatible query API the checks ask.
    pub prometheus: PrometheusSource,
    /// Seconds between two analyses of a bake.
    #[serde(default = "default_interval_seconds")]
    #[schemars(range(min = 1, max = 3600))]
    pub interval_seconds: u32,
    /// Least tool calls of the wave's tenants (and of the baseline's, to compare with it) over the
    /// bake for a verdict; fewer make a check inconclusive.
    #[serde(default = "default_min_calls")]
    #[schemars(range(min = 1, max = 1000000000))]
    pub min_calls: u32,
    /// Seconds an inconclusive bake is extended past `bakeSeconds` before `onInconclusive` decides.
    #[serde(default = "default_max_extension_seconds")]
    #[schemars(range(min = 0, max = 86400))]
    pub max_extension_seconds: u32,
    /// What an analysis still inconclusive after the extension does: `Halt` (Stalled) or `Proceed`.
    #[serde(default)]
    pub on_inconclusive: InconclusivePolicy,
    /// Seconds the query API may be unreachable or answer errors before the rollout halts
    /// (`AnalysisUnavailable`); until then the bake waits. Never a pass.
    #[serde(default = "default_unavailable_grace_seconds")]
    #[schemars(range(min = 0, max = 86400))]
    pub unavailable_grace_seconds: u32,
    /// A failed check rolls the rollout back at once (every tenant to the previous image), instead of
    /// stalling where it is.
    #[serde(default)]
    pub auto_rollback: bool,
    /// Tool-call error ratio (`outcome="error"`) of the wave against the baseline.
    #[serde(default)]
    pub error_ratio: ErrorRatioCheck,
    /// Tool-call latency quantiles of the wave against the baseline.
    #[serde(default)]
    pub latency: LatencyCheck,
    /// PromQL templates, each giving one number compared with `max` and/or `min`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10))]
    #[x_kube(validation = Rule::new("self.all(c, self.exists_one(x, x.name == c.name))").message("custom[].name must be unique"))]
    #[x_kube(validation = Rule::new("self.all(c, c.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$'))").message("custom[].name must be a DNS label"))]
    #[x_kube(validation = Rule::new("self.all(c, has(c.max) || has(c.min))").message("a custom check needs max, min or both"))]
    pub custom: Vec<CustomCheck>,
}

fn default_interval_seconds() -> u32 {
    60
}
fn default_min_calls() -> u32 {
    100
}
fn default_max_extension_seconds() -> u32 {
    600
}
fn default_unavailable_grace_seconds() -> u32 {
    120
}
fn yes() -> bool {
    true
}

/// What an inconclusive analysis does once its extension is over.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum InconclusivePolicy {
    /// Stall the rollout (`AnalysisInconclusive`): a person decides.
    #[default]
    Halt,
    /// Advance to the next wave, with a warning Event.
    Proceed,
}

/// Where the analysis reads its figures.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("!(has(self.bearerTokenSecretRef) && has(self.basicAuthSecretRef))").message("set bearerTokenSecretRef or basicAuthSecretRef, not both"))]
#[x_kube(validation = Rule::new("!has(self.caSecretRef) || self.url.startsWith('https://')").message("caSecretRef needs an https url"))]
#[x_kube(validation = Rule::new("!(has(self.bearerTokenSecretRef) || has(self.basicAuthSecretRef)) || self.url.startsWith('https://') || self.url.matches('^http://(127\\\\.0\\\\.0\\\\.1|localhost|\\\\[::1\\\\])([:/]|$)')").message("credentials are sent over https only (http is allowed to a loopback address): use an https url"))]
#[serde(rename_all = "camelCase")]
pub struct PrometheusSource {
    /// Base URL of a Prometheus-compatible query API (Prometheus, Thanos Query, Mimir's Prometheus
    /// prefix): the operator POSTs to `<url>/api/v1/query`. No user part, query or fragment.
    #[schemars(length(min = 8, max = 2048))]
    #[x_kube(validation = Rule::new("self.matches('^https?://[^/?#@\\\\s]+(/[^?#@\\\\s]*)?$')").message("prometheus.url must be an http(s) URL with a host and no user part, query or fragment"))]
    pub url: String,
    /// A Secret of the operator's namespace, labelled `lumenore.io/fleet-analysis: "true"`, holding a
    /// bearer token under `key` (https only, or http to a loopback address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_token_secret_ref: Option<SecretKeyRef>,
    /// A Secret of the operator's namespace, labelled `lumenore.io/fleet-analysis: "true"`, with the keys
    /// `username` and `password` (HTTP basic auth; https only, or http to a loopback address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basic_auth_secret_ref: Option<SecretName>,
    /// A Secret of the operator's namespace, labelled `lumenore.io/fleet-analysis: "true"`, holding the
    /// PEM CA bundle under `key` (https only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<SecretKeyRef>,
    /// Seconds one query may take.
    #[serde(default = "default_query_timeout_seconds")]
    #[schemars(range(min = 1, max = 60))]
    pub timeout_seconds: u32,
    /// Label matchers (exact values) every built-in query adds, e.g. `cluster: eu-1` on a Prometheus
    /// that sees several clusters.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(length(max = 10))]
    pub labels: BTreeMap<String, String>,
}

fn default_query_timeout_seconds() -> u32 {
    10
}

/// A Secret, by name.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct SecretName {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// The wave fails when its error ratio is both above `maxFactor` times the baseline's and more than
/// `maxIncrease` above it (a baseline with too few calls counts as error-free).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ErrorRatioCheck {
    /// Run this check.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Largest allowed excess over the baseline's ratio, as a fraction (0.01: one percentage point).
    #[serde(default = "default_max_error_increase")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub max_increase: f64,
    /// Largest allowed multiple of the baseline's ratio.
    #[serde(default = "default_max_error_factor")]
    #[schemars(range(min = 1.0, max = 1000.0))]
    pub max_factor: f64,
}

impl Default for ErrorRatioCheck {
    fn default() -> Self {
        ErrorRatioCheck {
            enabled: true,
            max_increase: default_max_error_increase(),
            max_factor: default_max_error_factor(),
        }
    }
}

fn default_max_error_increase() -> f64 {
    0.01
}
fn default_max_error_factor() -> f64 {
    2.0
}

/// The wave fails when a latency quantile is both above `maxFactor` times the baseline's and more than
/// `minIncreaseSeconds` above it, or above `maxSeconds`.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LatencyCheck {
    /// Run this check.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Quantiles compared (from `lumenore_connector_tool_call_duration_seconds`).
    #[serde(default = "default_quantiles")]
    #[schemars(length(min = 1, max = 4))]
    pub quantiles: Vec<Quantile>,
    /// Largest allowed multiple of the baseline's quantile.
    #[serde(default = "default_max_latency_factor")]
    #[schemars(range(min = 1.0, max = 1000.0))]
    pub max_factor: f64,
    /// An increase below this many seconds never fails (noise on fast calls).
    #[serde(default = "default_min_latency_increase")]
    #[schemars(range(min = 0.0, max = 3600.0))]
    pub min_increase_seconds: f64,
    /// An absolute ceiling in seconds, whatever the baseline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 3600.0))]
    pub max_seconds: Option<f64>,
}

impl Default for LatencyCheck {
    fn default() -> Self {
        LatencyCheck {
            enabled: true,
            quantiles: default_quantiles(),
            max_factor: default_max_latency_factor(),
            min_increase_seconds: default_min_latency_increase(),
            max_seconds: None,
        }
    }
}

/// A latency quantile.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Quantile {
    /// The median.
    #[serde(rename = "p50")]
    P50,
    /// The 90th percentile.
    #[serde(rename = "p90")]
    P90,
    /// The 95th percentile.
    #[serde(rename = "p95")]
    P95,
    /// The 99th percentile.
    #[serde(rename = "p99")]
    P99,
}

impl Quantile {
    pub fn value(self) -> f64 {
        match self {
            Quantile::P50 => 0.5,
            Quantile::P90 => 0.9,
            Quantile::P95 => 0.95,
            Quantile::P99 => 0.99,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Quantile::P50 => "p50",
            Quantile::P90 => "p90",
            Quantile::P95 => "p95",
            Quantile::P99 => "p99",
        }
    }
}

fn default_quantiles() -> Vec<Quantile> {
    vec![Quantile::P95, Quantile::P99]
}
fn default_max_latency_factor() -> f64 {
    1.5
}
fn default_min_latency_increase() -> f64 {
    0.05
}

/// A PromQL template (minijinja) giving one number. Variables, escaped for use inside a double-quoted
/// regex matcher: `wave` and `baseline` (the `tenant` label values, as an alternation),
/// `wave_namespaces` and `baseline_namespaces`; and `window` (the bake so far, e.g. `300s`). Example:
/// `sum(increase(lumenore_connector_backend_errors_total{tenant=~"{{ wave }}"}[{{ window }}]))`.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CustomCheck {
    /// Name of the check (a DNS label, unique among the custom checks).
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// The PromQL template; rendered, it must parse as PromQL and give a scalar or one series.
    #[schemars(length(min = 1, max = 4096))]
    pub query: String,
    /// The check fails above this value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// The check fails below this value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
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

/// A check's verdict.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Within its limits, with enough calls.
    Pass,
    /// A limit crossed, with enough calls.
    Fail,
    /// Too few calls, or no number (no data, NaN).
    Inconclusive,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "Pass",
            Verdict::Fail => "Fail",
            Verdict::Inconclusive => "Inconclusive",
        }
    }
}

/// One check's last figures.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CheckStatus {
    /// `error-ratio`, `latency-p95`, ..., or a custom check's name.
    pub name: String,
    /// Pass, Fail or Inconclusive.
    pub verdict: Verdict,
    /// The wave's figure (a ratio, seconds, or the custom query's value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wave: Option<f64>,
    /// The baseline's figure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<f64>,
    /// The limit the wave's figure was held to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<f64>,
    /// Tool calls of the wave's tenants over the window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wave_calls: Option<f64>,
    /// Tool calls of the baseline's tenants over the window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_calls: Option<f64>,
    /// The verdict in words.
    pub message: String,
}

/// The analysis of the current wave's bake.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisStatus {
    /// Wave analysed.
    pub wave: String,
    /// When the query API was last asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run_at: Option<Time>,
    /// Seconds of bake the last analysis covered.
    #[serde(default)]
    pub window_seconds: u32,
    /// Worst verdict of the checks in the last analysis (absent while none answered).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<Verdict>,
    /// Tenants of the wave.
    #[serde(default)]
    pub wave_tenants: u32,
    /// Tenants of the baseline: those of later waves still on the previous image.
    #[serde(default)]
    pub baseline_tenants: u32,
    /// Each check's figures.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<CheckStatus>,
    /// Since when the query API has been unreachable or answering errors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unavailable_since: Option<Time>,
    /// The last query failure, when the query API failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
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
    /// The analysis of the current wave's bake (`spec.analysis`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<AnalysisStatus>,
    /// Generation at which a failed analysis rolled the rollout back (`autoRollback`): the rollback
    /// holds until a spec change or a resume request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_rollback_generation: Option<i64>,
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
