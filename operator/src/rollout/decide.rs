//! The rollout's decision logic, a pure function: from the rollout (spec, last status), what the
//! fleet reports and the time, to the next status, the Events to publish and when to look again.
//!
//! One reconcile moves at most one step per wave (admit a batch, start a bake, finish a wave) and
//! every step is recorded in the status, so a restarted operator continues from where the API says.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use super::crd::{
    FailedTenant, FleetCounts, LumenoreFleetRolloutSpec, LumenoreFleetRolloutStatus, Phase, WaveStatus,
};
use super::plan::{self, ADMIT_ALL, Plan, TenantId};
use crate::status::{self, CondSpec};

/// Failed tenants listed in the status (all are counted in `failedCount`).
pub const MAX_LISTED_FAILURES: usize = 20;

pub const READY: &str = "Ready";
pub const PROGRESSING: &str = "Progressing";
pub const RECONCILING: &str = "Reconciling";
pub const STALLED: &str = "Stalled";

/// What one LumenoreConnector reports, as far as the rollout is concerned.
#[derive(Clone, Debug)]
pub struct TenantReport<'a> {
    pub id: TenantId<'a>,
    /// Sets its own `spec.image`.
    pub pinned: bool,
    /// Deployed by this operator (its `Accepted` condition is not False).
    pub deployed: bool,
    /// `status.connector.image`: the image of its connector Deployment.
    pub image: Option<&'a str>,
    /// `Ready` is True for the current generation.
    pub ready: bool,
    /// Reason and message of its `Ready` condition.
    pub reason: &'a str,
    pub message: &'a str,
}

/// Everything a decision depends on.
pub struct Input<'a> {
    pub generation: Option<i64>,
    pub spec: &'a LumenoreFleetRolloutSpec,
    /// Value of the `lumenore.io/resume` annotation.
    pub resume: Option<&'a str>,
    pub old: &'a LumenoreFleetRolloutStatus,
    /// The operator's `--connector-image`: what the fleet runs before the first rollout.
    pub default_image: &'a str,
    pub fleet: &'a [TenantReport<'a>],
    pub now: Timestamp,
    /// Another rollout governs the fleet (its name): this one is refused.
    pub conflict: Option<&'a str>,
}

/// An Event to publish on the rollout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RolloutEvent {
    pub warning: bool,
    pub reason: &'static str,
    pub note: String,
}

/// The outcome of one decision.
#[derive(Clone, Debug)]
pub struct Decision {
    pub status: LumenoreFleetRolloutStatus,
    pub events: Vec<RolloutEvent>,
    /// When the passing of time alone changes the decision (a deadline, the end of a bake).
    pub wake_in: Option<Duration>,
}

fn secs(t: &Option<Time>) -> Option<i64> {
    t.as_ref().map(|t| t.0.as_second())
}

fn time(now: Timestamp) -> Time {
    Time(Timestamp::from_second(now.as_second()).unwrap_or(now))
}

fn event(warning: bool, reason: &'static str, note: String) -> RolloutEvent {
    RolloutEvent {
        warning,
        reason,
        note,
    }
}

fn cond(type_: &'static str, status: bool, reason: &str, message: &str) -> CondSpec {
    CondSpec {
        type_,
        status,
        reason: reason.to_string(),
        message: message.to_string(),
    }
}

/// The four conditions for a phase: Ready (goal reached), Progressing, and kstatus' Reconciling and
/// Stalled.
fn conditions(phase: Phase, moving: bool, reason: &str, message: &str) -> Vec<CondSpec> {
    let done = matches!(phase, Phase::Completed | Phase::RolledBack) && !moving;
    let stalled = matches!(phase, Phase::Stalled | Phase::Invalid);
    vec![
        cond(READY, done, reason, message),
        cond(PROGRESSING, moving, reason, message),
        cond(RECONCILING, moving, reason, message),
        cond(STALLED, stalled, reason, message),
    ]
}

struct Member<'a> {
    key: u64,
    report: &'a TenantReport<'a>,
}

/// Tenants of each wave (sorted by order key) and fleet counts, for a goal image per wave.
fn place<'a>(
    plan: &Plan,
    skip: &[String],
    fleet: &'a [TenantReport<'a>],
) -> (Vec<Vec<Member<'a>>>, FleetCounts) {
    let mut waves: Vec<Vec<Member<'a>>> = (0..plan.waves.len()).map(|_| Vec::new()).collect();
    let mut counts = FleetCounts::default();
    for r in fleet {
        if r.pinned {
            counts.pinned += 1;
            continue;
        }
        if !r.deployed {
            counts.not_deployed += 1;
            continue;
        }
        if skip.iter().any(|s| *s == r.id.key()) {
            counts.skipped += 1;
            continue;
        }
        if let Some(w) = plan.wave_of(&r.id) {
            waves[w].push(Member {
                key: plan::order_key(r.id.namespace, r.id.name),
                report: r,
            });
            counts.tenants += 1;
        }
    }
    for w in &mut waves {
        w.sort_by(|a, b| {
            (a.key, a.report.id.namespace, a.report.id.name).cmp(&(
                b.key,
                b.report.id.namespace,
                b.report.id.name,
            ))
        });
    }
    (waves, counts)
}

fn on(m: &Member<'_>, image: &str) -> bool {
    m.report.image == Some(image)
}
fn done(m: &Member<'_>, image: &str) -> bool {
    on(m, image) && m.report.ready
}

fn wave_counts(status: &mut LumenoreFleetRolloutStatus, members: &[Vec<Member<'_>>], goal: &str) -> u32 {
    let mut total_done = 0;
    for (ws, ms) in status.waves.iter_mut().zip(members) {
        ws.tenants = ms.len() as u32;
        ws.updated = ms.iter().filter(|m| on(m, goal)).count() as u32;
        ws.ready = ms.iter().filter(|m| done(m, goal)).count() as u32;
        total_done += ws.ready;
    }
    total_done
}

/// Decide the next status of a rollout.
pub fn decide(inp: &Input<'_>) -> Decision {
    let now = inp.now;
    let old = inp.old;
    let mut st = old.clone();
    st.observed_generation = inp.generation;
    let mut events = Vec::new();
    let mut wake_in = None;

    let finish = |mut st: LumenoreFleetRolloutStatus,
                  mut events: Vec<RolloutEvent>,
                  phase: Phase,
                  moving: bool,
                  reason: &str,
                  message: String,
                  wake_in: Option<Duration>| {
        st.phase = Some(phase);
        st.conditions = status::stamp(
            &old.conditions,
            conditions(phase, moving, reason, &message),
            inp.generation,
            &time(now),
        );
        if old.phase != Some(phase) {
            let (warning, why) = match phase {
                Phase::Progressing => (false, "RolloutProgressing"),
                Phase::Paused => (false, "RolloutPaused"),
                Phase::Stalled => (true, "RolloutStalled"),
                Phase::Completed => (false, "RolloutCompleted"),
                Phase::RolledBack => (true, "RolledBack"),
                Phase::Invalid => (true, "InvalidRollout"),
            };
            events.push(event(warning, why, message.clone()));
        } else if phase == Phase::Invalid
            && old
                .conditions
                .iter()
                .any(|c| c.type_ == STALLED && c.message != message)
        {
            events.push(event(true, "InvalidRollout", message.clone()));
        }
        Decision {
            status: st,
            events,
            wake_in,
        }
    };

    // Refused: another rollout governs the fleet. What this one accepted before stays as it was.
    if let Some(other) = inp.conflict {
        let msg = format!(
            "another LumenoreFleetRollout ({other}) governs the fleet (rule: one rollout at a time; the oldest wins): delete this one or fold it into {other}"
        );
        return finish(st, events, Phase::Invalid, false, "ConflictingRollout", msg, None);
    }

    // Rules: the spec alone, then against the fleet. A broken rule changes nothing for the tenants.
    let candidates = || inp.fleet.iter().filter(|r| !r.pinned && r.deployed).map(|r| r.id);
    let planned = plan::check_spec(inp.spec).and_then(|p| p.check_against(candidates()).map(|_| p));
    let plan = match planned {
        Ok(p) => p,
        Err(msg) => {
            let msg = if st.image.is_some() {
                format!("{msg}; the tenants keep following the last accepted plan")
            } else {
                format!("{msg}; nothing was applied")
            };
            return finish(st, events, Phase::Invalid, false, "InvalidSpec", msg, None);
        }
    };

    // A new target or new waves start a new run from the first wave.
    let same_waves = st.waves.len() == inp.spec.waves.len()
        && st
            .waves
            .iter()
            .zip(&inp.spec.waves)
            .all(|(a, b)| a.definition() == *b);
    if st.image.as_deref() != Some(inp.spec.image.as_str()) || !same_waves {
        let completed = st
            .current_wave
            .is_some_and(|c| c as usize >= st.waves.len() && !st.waves.is_empty());
        let previous = match (&st.image, completed) {
            (Some(img), true) => img.clone(),
            _ => st.previous_image.clone().unwrap_or_else(|| {
                fleet_image(inp.fleet, &inp.spec.image)
                    .unwrap_or(inp.default_image)
                    .to_string()
            }),
        };
        events.push(event(
            false,
            "RolloutStarted",
            format!(
                "rolling out {} (from {previous}) in {} waves: {}",
                inp.spec.image,
                inp.spec.waves.len(),
                inp.spec
                    .waves
                    .iter()
                    .map(|w| w.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
        st.image = Some(inp.spec.image.clone());
        st.previous_image = Some(previous);
        st.waves = inp
            .spec
            .waves
            .iter()
            .map(|w| WaveStatus {
                name: w.name.clone(),
                selector: w.selector.clone(),
                percent: w.percent,
                tenants: 0,
                updated: 0,
                ready: 0,
            })
            .collect();
        st.current_wave = Some(0);
        st.partition = Some(plan::format_partition(0));
        st.batch_started_at = None;
        st.bake_started_at = None;
        st.stalled_generation = None;
        st.failed_tenants.clear();
        st.failed_count = None;
    }
    let mut skip = inp.spec.skip_tenants.clone();
    skip.sort();
    skip.dedup();
    st.skip_tenants = skip;
    let target = st.image.clone().unwrap_or_default();
    let previous = st.previous_image.clone().unwrap_or_default();
    let (members, counts) = place(&plan, &st.skip_tenants, inp.fleet);
    st.fleet = counts;

    // Rollback: every tenant back to the previous image at once (nothing is admitted any more).
    if inp.spec.rollback {
        st.current_wave = Some(0);
        st.current_wave_name = st.waves.first().map(|w| w.name.clone());
        st.partition = Some(plan::format_partition(0));
        st.batch_started_at = None;
        st.bake_started_at = None;
        st.stalled_generation = None;
        st.failed_tenants.clear();
        st.failed_count = None;
        let back = wave_counts(&mut st, &members, &previous);
        st.fleet.updated = back;
        let moving = back < st.fleet.tenants;
        let msg = format!(
            "rolled back to {previous}: {back} of {} tenants run it and are Ready",
            st.fleet.tenants
        );
        return finish(
            st,
            events,
            Phase::RolledBack,
            moving,
            if moving { "RollingBack" } else { "RolledBack" },
            msg,
            None,
        );
    }

    // A person asked to resume (annotation changed) or changed the spec: a stall is lifted and the
    // current batch gets a fresh deadline.
    let resumed = inp.resume.is_some() && inp.resume != old.last_handled_resume.as_deref();
    if resumed {
        st.last_handled_resume = inp.resume.map(str::to_string);
    }
    let was_stalled = old.phase == Some(Phase::Stalled);
    if was_stalled && st.stalled_generation == inp.generation && !resumed {
        let updated = wave_counts(&mut st, &members, &target);
        st.fleet.updated = updated;
        let msg = stalled_message(&st, inp.spec.ready_deadline_seconds);
        return finish(st, events, Phase::Stalled, false, "TenantNotReady", msg, None);
    }
    if was_stalled {
        st.stalled_generation = None;
        st.failed_tenants.clear();
        st.failed_count = None;
        st.batch_started_at = Some(time(now));
        st.bake_started_at = None;
        events.push(event(
            false,
            "RolloutResumed",
            if resumed {
                "resumed by the lumenore.io/resume annotation".to_string()
            } else {
                "resumed by a spec change".to_string()
            },
        ));
    }

    if inp.spec.paused {
        let updated = wave_counts(&mut st, &members, &target);
        st.fleet.updated = updated;
        st.current_wave_name = current_name(&st);
        let msg = format!(
            "paused at wave {}: {updated} of {} tenants on {target}; set spec.paused=false to continue",
            wave_label(&st),
            st.fleet.tenants
        );
        return finish(st, events, Phase::Paused, false, "Paused", msg, None);
    }

    // Advance as far as the reports allow.
    let deadline = i64::from(inp.spec.ready_deadline_seconds);
    let bake = i64::from(inp.spec.bake_seconds);
    let n = st.waves.len();
    let outcome = loop {
        let w = st.current_wave.unwrap_or(0) as usize;
        if w >= n {
            break Step::Completed;
        }
        let ms = &members[w];
        let partition = plan::parse_partition(st.partition.as_deref());
        let admitted: Vec<&Member<'_>> = ms.iter().filter(|m| u128::from(m.key) < partition).collect();
        let pending: Vec<&&Member<'_>> = admitted.iter().filter(|m| !done(m, &target)).collect();
        if !pending.is_empty() {
            st.bake_started_at = None;
            let started = secs(&st.batch_started_at).unwrap_or(now.as_second());
            let left = started + deadline - now.as_second();
            if left > 0 {
                wake_in = Some(Duration::from_secs(left as u64));
                break Step::Waiting(pending.len());
            }
            let mut failed: Vec<FailedTenant> = pending
                .iter()
                .map(|m| {
                    let r = m.report;
                    let (reason, message) = if on(m, &target) {
                        (r.reason.to_string(), r.message.to_string())
                    } else {
                        (
                            "NotUpdated".to_string(),
                            format!(
                                "still runs {} ({}: {})",
                                r.image.unwrap_or("no connector Deployment"),
                                r.reason,
                                r.message
                            ),
                        )
                    };
                    FailedTenant {
                        tenant: r.id.key(),
                        wave: st.waves[w].name.clone(),
                        reason,
                        message: crate::rollout::truncate(message, 300),
                    }
                })
                .collect();
            failed.sort_by(|a, b| a.tenant.cmp(&b.tenant));
            st.failed_count = Some(failed.len() as u32);
            failed.truncate(MAX_LISTED_FAILURES);
            st.failed_tenants = failed;
            st.stalled_generation = inp.generation;
            break Step::Stalled;
        }
        let waiting: Vec<&Member<'_>> = ms.iter().filter(|m| u128::from(m.key) >= partition).collect();
        if !waiting.is_empty() {
            // Admit the next batch: the next maxUnavailable tenants in order-key order.
            let k = (inp.spec.max_unavailable as usize).max(1);
            let next = match waiting.get(k) {
                Some(m) => u128::from(m.key),
                None => ADMIT_ALL,
            };
            if partition == 0 {
                events.push(event(
                    false,
                    "WaveStarted",
                    format!(
                        "wave {} ({}/{n}) started: {} tenants, {} at a time, to {target}",
                        st.waves[w].name,
                        w + 1,
                        ms.len(),
                        k
                    ),
                ));
            }
            st.partition = Some(plan::format_partition(next));
            st.batch_started_at = Some(time(now));
            st.bake_started_at = None;
            wake_in = Some(Duration::from_secs(deadline as u64));
            break Step::Waiting(waiting.len().min(k));
        }
        // Every tenant of the wave runs the target and is Ready. Bake before the next wave.
        if w + 1 < n && bake > 0 && !ms.is_empty() {
            let started = match secs(&st.bake_started_at) {
                Some(s) => s,
                None => {
                    st.bake_started_at = Some(time(now));
                    now.as_second()
                }
            };
            let left = started + bake - now.as_second();
            if left > 0 {
                wake_in = Some(Duration::from_secs(left as u64));
                break Step::Baking(started + bake);
            }
        }
        events.push(event(
            false,
            "WaveCompleted",
            format!(
                "wave {} ({}/{n}) completed: {} tenants on {target}",
                st.waves[w].name,
                w + 1,
                ms.len()
            ),
        ));
        st.current_wave = Some((w + 1) as u32);
        st.partition = Some(plan::format_partition(0));
        st.batch_started_at = None;
        st.bake_started_at = None;
    };

    let updated = wave_counts(&mut st, &members, &target);
    st.fleet.updated = updated;
    st.current_wave_name = current_name(&st);
    if outcome != Step::Stalled {
        st.failed_tenants.clear();
        st.failed_count = None;
    }
    let total = st.fleet.tenants;
    match outcome {
        Step::Completed => {
            let msg = format!("every tenant runs {target}: {updated} of {total} Ready");
            // Tenants created later join at once; a tenant still converging keeps it Reconciling.
            let moving = updated < total;
            finish(st, events, Phase::Completed, moving, "Completed", msg, wake_in)
        }
        Step::Stalled => {
            let msg = stalled_message(&st, inp.spec.ready_deadline_seconds);
            finish(st, events, Phase::Stalled, false, "TenantNotReady", msg, None)
        }
        Step::Waiting(k) => {
            let msg = format!(
                "wave {}: waiting for {k} tenant(s) to run {target} and be Ready (deadline {deadline}s); {updated} of {total} tenants done",
                wave_label(&st)
            );
            finish(st, events, Phase::Progressing, true, "Progressing", msg, wake_in)
        }
        Step::Baking(until) => {
            let until = Timestamp::from_second(until)
                .map(|t| t.to_string())
                .unwrap_or_default();
            let msg = format!(
                "wave {}: every tenant Ready on {target}, baking until {until} before the next wave; {updated} of {total} tenants done",
                wave_label(&st)
            );
            finish(st, events, Phase::Progressing, true, "Baking", msg, wake_in)
        }
    }
}

/// What the fleet runs apart from `target`: the image most unpinned, deployed tenants report (ties:
/// the greater name, so the choice is stable). A rollout with no status of its own (new, or
/// re-created by GitOps) starts from it rather than from the operator's `--connector-image`, which
/// may be older than what the tenants run.
fn fleet_image<'a>(fleet: &[TenantReport<'a>], target: &str) -> Option<&'a str> {
    let mut counts: BTreeMap<&'a str, usize> = BTreeMap::new();
    for r in fleet.iter().filter(|r| !r.pinned && r.deployed) {
        if let Some(img) = r.image.filter(|i| *i != target) {
            *counts.entry(img).or_default() += 1;
        }
    }
    counts
        .into_iter()
        .max_by_key(|(img, n)| (*n, *img))
        .map(|(img, _)| img)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    Completed,
    Stalled,
    Waiting(usize),
    Baking(i64),
}

fn current_name(st: &LumenoreFleetRolloutStatus) -> Option<String> {
    st.current_wave
        .and_then(|c| st.waves.get(c as usize))
        .map(|w| w.name.clone())
}

fn wave_label(st: &LumenoreFleetRolloutStatus) -> String {
    let c = st.current_wave.unwrap_or(0) as usize;
    format!(
        "{} ({}/{})",
        st.waves.get(c).map(|w| w.name.as_str()).unwrap_or("-"),
        (c + 1).min(st.waves.len()),
        st.waves.len()
    )
}

fn stalled_message(st: &LumenoreFleetRolloutStatus, deadline: u32) -> String {
    let listed: Vec<String> = st
        .failed_tenants
        .iter()
        .take(3)
        .map(|f| format!("{} ({}: {})", f.tenant, f.reason, f.message))
        .collect();
    let count = st.failed_count.unwrap_or(st.failed_tenants.len() as u32);
    format!(
        "stalled in wave {}: {count} tenant(s) not Ready within {deadline}s: {}{}; later waves untouched. Fix and resume (annotate lumenore.io/resume), skip the tenant (spec.skipTenants) or roll back (spec.rollback)",
        wave_label(st),
        listed.join("; "),
        if count as usize > listed.len() {
            "; ..."
        } else {
            ""
        }
    )
}

/// Group a fleet by the version its connector runs (for metrics).
pub fn versions<'a>(fleet: impl Iterator<Item = &'a TenantReport<'a>>) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    for r in fleet {
        if let Some(img) = r.image {
            *out.entry(super::image::version_of(img)).or_insert(0) += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

    const OLD: &str = "r:1.0";
    const NEW: &str = "r:2.0";

    struct World {
        names: Vec<String>,
        labels: Vec<BTreeMap<String, String>>,
        images: Vec<Option<String>>,
        ready: Vec<bool>,
    }

    impl World {
        /// `n` tenants; the first `canaries` carry tier=canary.
        fn new(n: usize, canaries: usize) -> Self {
            World {
                names: (0..n).map(|i| format!("t-{i:02}")).collect(),
                labels: (0..n)
                    .map(|i| {
                        if i < canaries {
                            BTreeMap::from([("tier".to_string(), "canary".to_string())])
                        } else {
                            BTreeMap::new()
                        }
                    })
                    .collect(),
                images: vec![Some(OLD.to_string()); n],
                ready: vec![true; n],
            }
        }
        fn reports(&self) -> Vec<TenantReport<'_>> {
            (0..self.names.len())
                .map(|i| TenantReport {
                    id: TenantId {
                        namespace: "ns",
                        name: &self.names[i],
                        labels: &self.labels[i],
                    },
                    pinned: false,
                    deployed: true,
                    image: self.images[i].as_deref(),
                    ready: self.ready[i],
                    reason: if self.ready[i] {
                        "Ready"
                    } else {
                        "ProgressDeadlineExceeded"
                    },
                    message: "m",
                })
                .collect()
        }
        /// The operator's tenant side plus a healthy Deployment controller: every tenant runs what
        /// the status says, and is Ready unless listed in `broken`.
        fn converge(&mut self, st: &LumenoreFleetRolloutStatus, broken: &[usize]) {
            let plan = Plan::from_status(&st.waves);
            for i in 0..self.names.len() {
                let id = TenantId {
                    namespace: "ns",
                    name: &self.names[i],
                    labels: &self.labels[i],
                };
                let img =
                    plan::tenant_image(None, &id, self.images[i].as_deref(), Some((st, &plan)), OLD).image;
                self.ready[i] = !(broken.contains(&i) && img == NEW);
                self.images[i] = Some(img);
            }
        }
    }

    fn spec() -> LumenoreFleetRolloutSpec {
        serde_json::from_value(serde_json::json!({
            "image": NEW,
            "maxUnavailable": 2,
            "bakeSeconds": 60,
            "readyDeadlineSeconds": 120,
            "waves": [
                {"name": "canary", "selector": {"matchLabels": {"tier": "canary"}}},
                {"name": "half", "percent": 50},
                {"name": "rest"}
            ]
        }))
        .unwrap()
    }

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    fn step(
        spec: &LumenoreFleetRolloutSpec,
        old: &LumenoreFleetRolloutStatus,
        w: &World,
        now: i64,
    ) -> Decision {
        let reports = w.reports();
        decide(&Input {
            generation: Some(1),
            spec,
            resume: None,
            old,
            default_image: OLD,
            fleet: &reports,
            now: at(now),
            conflict: None,
        })
    }

    fn cond<'a>(st: &'a LumenoreFleetRolloutStatus, t: &str) -> &'a str {
        st.conditions
            .iter()
            .find(|c| c.type_ == t)
            .map(|c| c.status.as_str())
            .unwrap_or("")
    }

    /// Defect: a rollout re-created mid-wave (GitOps replace, `kubectl replace --force`, a rename)
    /// has an empty status; it took `--connector-image` as the previous image and moved every tenant
    /// already on the target back.
    #[test]
    fn a_re_created_rollout_starts_from_the_fleet_and_moves_nobody_back() {
        let spec = spec();
        let mut w = World::new(20, 3);
        let mut st = LumenoreFleetRolloutStatus::default();
        let mut t = 0;
        // Run until some tenants are on the target, mid-rollout.
        while w.images.iter().filter(|i| i.as_deref() == Some(NEW)).count() < 5 {
            st = step(&spec, &st, &w, t).status;
            w.converge(&st, &[]);
            t += 30;
        }
        let on_new: Vec<usize> = (0..20).filter(|i| w.images[*i].as_deref() == Some(NEW)).collect();
        // The object is deleted and applied again: same spec, empty status; the operator's default
        // image is older than anything the fleet runs.
        let mut w2 = World {
            images: w.images.clone(),
            ..World::new(20, 3)
        };
        let fresh = LumenoreFleetRolloutStatus::default();
        let reports = w2.reports();
        let d = decide(&Input {
            generation: Some(1),
            spec: &spec,
            resume: None,
            old: &fresh,
            default_image: "r:0.1",
            fleet: &reports,
            now: at(t),
            conflict: None,
        });
        assert_eq!(
            d.status.previous_image.as_deref(),
            Some(OLD),
            "previous is what the fleet runs"
        );
        w2.converge(&d.status, &[]);
        for i in &on_new {
            assert_eq!(w2.images[*i].as_deref(), Some(NEW), "tenant {i} moved back");
        }
        assert!(w2.images.iter().all(|i| i.as_deref() != Some("r:0.1")));
    }

    #[test]
    fn a_healthy_rollout_goes_wave_by_wave_batch_by_batch_and_bakes() {
        let spec = spec();
        let mut w = World::new(20, 3);
        let mut st = LumenoreFleetRolloutStatus::default();
        let mut t = 0;
        let mut batches = 0;
        let mut seen_waves = Vec::new();
        let mut reasons = Vec::new();
        for _ in 0..200 {
            let d = step(&spec, &st, &w, t);
            reasons.extend(d.events.iter().map(|e| e.reason));
            let admitted = (d.status.current_wave, &d.status.partition) != (st.current_wave, &st.partition)
                && d.status.partition.as_deref() != Some("0000000000000000");
            if admitted {
                batches += 1;
            }
            st = d.status;
            if !seen_waves.contains(&st.current_wave) {
                seen_waves.push(st.current_wave);
            }
            if st.phase == Some(Phase::Completed) {
                break;
            }
            // At most maxUnavailable tenants of the fleet are moving at once.
            let moving_before = w.images.iter().filter(|i| i.as_deref() == Some(NEW)).count();
            w.converge(&st, &[]);
            let moving_after = w.images.iter().filter(|i| i.as_deref() == Some(NEW)).count();
            assert!(
                moving_after - moving_before <= 2,
                "{moving_before} -> {moving_after}"
            );
            t += 10;
        }
        assert_eq!(st.phase, Some(Phase::Completed), "{st:#?}");
        assert!(w.images.iter().all(|i| i.as_deref() == Some(NEW)));
        assert_eq!(st.previous_image.as_deref(), Some(OLD));
        assert_eq!(st.fleet.tenants, 20);
        assert_eq!(st.fleet.updated, 20);
        assert_eq!(st.waves[0].tenants, 3);
        assert_eq!(st.waves.iter().map(|w| w.tenants).sum::<u32>(), 20);
        assert_eq!(seen_waves, vec![Some(0), Some(1), Some(2), Some(3)]);
        // ceil(3/2) + ceil(half/2) + ceil(rest/2) batches.
        let expect = st.waves.iter().map(|w| w.tenants.div_ceil(2)).sum::<u32>();
        assert_eq!(batches, expect as usize);
        assert_eq!(cond(&st, READY), "True");
        assert_eq!(cond(&st, RECONCILING), "False");
        assert_eq!(cond(&st, STALLED), "False");
        assert_eq!(reasons.first(), Some(&"RolloutStarted"));
        assert_eq!(reasons.iter().filter(|r| **r == "WaveCompleted").count(), 3);
        assert_eq!(reasons.last(), Some(&"RolloutCompleted"));
        // Baking: the earliest wave change after the canary is Ready is bakeSeconds later.
    }

    #[test]
    fn bake_holds_the_next_wave_for_bake_seconds() {
        let spec = spec();
        let mut w = World::new(6, 2);
        let d = step(&spec, &LumenoreFleetRolloutStatus::default(), &w, 0);
        assert_eq!(d.status.current_wave, Some(0));
        w.converge(&d.status, &[]);
        let d = step(&spec, &d.status, &w, 5);
        assert_eq!(d.status.bake_started_at.as_ref().map(|t| t.0), Some(at(5)));
        assert_eq!(d.wake_in, Some(Duration::from_secs(60)));
        assert_eq!(
            d.status
                .conditions
                .iter()
                .find(|c| c.type_ == READY)
                .unwrap()
                .reason,
            "Baking"
        );
        let d2 = step(&spec, &d.status, &w, 64);
        assert_eq!(d2.status.current_wave, Some(0), "still baking at 59s");
        let d3 = step(&spec, &d2.status, &w, 65);
        assert_eq!(d3.status.current_wave, Some(1), "next wave after 60s");
    }

    #[test]
    fn a_tenant_not_ready_by_its_deadline_stalls_and_later_waves_stay_untouched() {
        let spec = spec();
        let mut w = World::new(6, 2);
        let mut st = step(&spec, &LumenoreFleetRolloutStatus::default(), &w, 0).status;
        // Tenant 0 (a canary) never becomes Ready on the new image.
        w.converge(&st, &[0]);
        st = step(&spec, &st, &w, 119).status;
        assert_eq!(st.phase, Some(Phase::Progressing));
        let d = step(&spec, &st, &w, 120);
        st = d.status;
        assert_eq!(st.phase, Some(Phase::Stalled));
        assert_eq!(st.failed_count, Some(1));
        assert_eq!(st.failed_tenants[0].tenant, "ns/t-00");
        assert_eq!(st.failed_tenants[0].wave, "canary");
        assert_eq!(st.failed_tenants[0].reason, "ProgressDeadlineExceeded");
        assert_eq!(cond(&st, STALLED), "True");
        assert_eq!(cond(&st, READY), "False");
        assert!(
            d.events
                .iter()
                .any(|e| e.warning && e.reason == "RolloutStalled" && e.note.contains("ns/t-00"))
        );
        // Time passes, the tenant gets fixed: the stall holds until a person resumes.
        w.converge(&st, &[]);
        let held = step(&spec, &st, &w, 500).status;
        assert_eq!(held.phase, Some(Phase::Stalled));
        for i in 2..6 {
            assert_eq!(w.images[i].as_deref(), Some(OLD), "later waves untouched");
        }
        // Resume with the annotation.
        let reports = w.reports();
        let d = decide(&Input {
            generation: Some(1),
            spec: &spec,
            resume: Some("2026-12-02T07:00:00Z"),
            old: &held,
            default_image: OLD,
            fleet: &reports,
            now: at(510),
            conflict: None,
        });
        assert_eq!(d.status.phase, Some(Phase::Progressing));
        assert!(d.events.iter().any(|e| e.reason == "RolloutResumed"));
        assert_eq!(
            d.status.last_handled_resume.as_deref(),
            Some("2026-12-02T07:00:00Z")
        );
    }

    #[test]
    fn skip_and_rollback() {
        let mut spec = spec();
        let mut w = World::new(6, 2);
        let mut st = step(&spec, &LumenoreFleetRolloutStatus::default(), &w, 0).status;
        w.converge(&st, &[0]);
        st = step(&spec, &st, &w, 200).status;
        assert_eq!(st.phase, Some(Phase::Stalled));
        // Skip the failing tenant (a spec change lifts the stall); it goes back to the old image.
        spec.skip_tenants = vec!["ns/t-00".into()];
        let reports = w.reports();
        let d = decide(&Input {
            generation: Some(2),
            spec: &spec,
            resume: None,
            old: &st,
            default_image: OLD,
            fleet: &reports,
            now: at(210),
            conflict: None,
        });
        assert_ne!(d.status.phase, Some(Phase::Stalled));
        assert_eq!(d.status.fleet.skipped, 1);
        w.converge(&d.status, &[0]);
        assert_eq!(w.images[0].as_deref(), Some(OLD));
        // Roll back: every tenant to the previous image.
        spec.rollback = true;
        let reports = w.reports();
        let d = decide(&Input {
            generation: Some(3),
            spec: &spec,
            resume: None,
            old: &d.status,
            default_image: OLD,
            fleet: &reports,
            now: at(220),
            conflict: None,
        });
        assert_eq!(d.status.phase, Some(Phase::RolledBack));
        assert_eq!(
            cond(&d.status, RECONCILING),
            "True",
            "tenants still on the new image"
        );
        w.converge(&d.status, &[]);
        assert!(w.images.iter().all(|i| i.as_deref() == Some(OLD)));
        let reports = w.reports();
        let d = decide(&Input {
            generation: Some(3),
            spec: &spec,
            resume: None,
            old: &d.status,
            default_image: OLD,
            fleet: &reports,
            now: at(230),
            conflict: None,
        });
        assert_eq!(cond(&d.status, READY), "True");
        assert_eq!((d.status.fleet.updated, d.status.fleet.skipped), (5, 1));
    }

    #[test]
    fn invalid_specs_and_conflicts_apply_nothing() {
        let w = World::new(4, 1);
        let mut bad = spec();
        bad.image = "not a reference".into();
        let d = step(&bad, &LumenoreFleetRolloutStatus::default(), &w, 0);
        assert_eq!(d.status.phase, Some(Phase::Invalid));
        assert!(d.status.image.is_none(), "no plan accepted");
        let msg = &d
            .status
            .conditions
            .iter()
            .find(|c| c.type_ == STALLED)
            .unwrap()
            .message;
        assert!(
            msg.starts_with("spec.image \"not a reference\" does not match"),
            "{msg}"
        );
        assert!(msg.ends_with("nothing was applied"), "{msg}");

        // An accepted plan survives a broken edit.
        let good = step(&spec(), &LumenoreFleetRolloutStatus::default(), &w, 0).status;
        let mut no_match = spec();
        no_match.waves[0].selector = Some(LabelSelector {
            match_labels: Some(BTreeMap::from([("tier".into(), "nobody".into())])),
            ..Default::default()
        });
        let d = step(&no_match, &good, &w, 1);
        assert_eq!(d.status.phase, Some(Phase::Invalid));
        assert_eq!(d.status.waves[0].selector, good.waves[0].selector);
        assert_eq!(d.status.partition, good.partition);
        let msg = &d
            .status
            .conditions
            .iter()
            .find(|c| c.type_ == STALLED)
            .unwrap()
            .message;
        assert!(
            msg.starts_with("spec.waves[0].selector matches no LumenoreConnector"),
            "{msg}"
        );

        let reports = w.reports();
        let d = decide(&Input {
            generation: Some(1),
            spec: &spec(),
            resume: None,
            old: &LumenoreFleetRolloutStatus::default(),
            default_image: OLD,
            fleet: &reports,
            now: at(0),
            conflict: Some("ops/first"),
        });
        assert_eq!(d.status.phase, Some(Phase::Invalid));
        assert!(d.status.image.is_none());
        assert_eq!(
            d.status
                .conditions
                .iter()
                .find(|c| c.type_ == STALLED)
                .unwrap()
                .reason,
            "ConflictingRollout"
        );
    }

    #[test]
    fn a_new_target_after_completion_starts_from_the_completed_image() {
        let mut w = World::new(4, 1);
        let mut spec = spec();
        spec.bake_seconds = 0;
        let mut st = LumenoreFleetRolloutStatus::default();
        for t in 0..50 {
            st = step(&spec, &st, &w, t).status;
            w.converge(&st, &[]);
        }
        assert_eq!(st.phase, Some(Phase::Completed));
        spec.image = "r:3.0".into();
        let d = step(&spec, &st, &w, 100);
        assert_eq!(d.status.previous_image.as_deref(), Some(NEW));
        assert_eq!(d.status.image.as_deref(), Some("r:3.0"));
        assert_eq!(d.status.current_wave, Some(0));
        // Nobody outside the first batch moves back: the non-admitted run the previous (= 2.0) image.
        let mut w2 = World::new(4, 1);
        w2.converge(&d.status, &[]);
        assert!(
            w2.images
                .iter()
                .all(|i| matches!(i.as_deref(), Some(NEW) | Some("r:3.0")))
        );
    }

    #[test]
    fn paused_holds_the_partition() {
        let mut spec = spec();
        let w = World::new(6, 2);
        let st = step(&spec, &LumenoreFleetRolloutStatus::default(), &w, 0).status;
        spec.paused = true;
        let d = step(&spec, &st, &w, 500);
        assert_eq!(d.status.phase, Some(Phase::Paused));
        assert_eq!(d.status.partition, st.partition);
        assert_eq!(cond(&d.status, RECONCILING), "False");
        assert_eq!(cond(&d.status, STALLED), "False");
    }
}
