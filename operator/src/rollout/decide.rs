//! The rollout's decision logic, a pure function: from the rollout (spec, last status), what the
//! fleet reports and the time, to the next status, the Events to publish and when to look again.
//!
//! One reconcile moves at most one step per wave (admit a batch, start a bake, finish a wave) and
//! every step is recorded in the status, so a restarted operator continues from where the API says.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use super::analysis::query::TenantSeries;
use super::analysis::{AnalysisRequest, AnalysisRun, verdict};
use super::crd::{
    AnalysisStatus, FailedTenant, FleetCounts, InconclusivePolicy, LumenoreFleetRolloutSpec,
    LumenoreFleetRolloutStatus, Phase, Verdict, WaveStatus,
};
use super::plan::{self, ADMIT_ALL, Plan, TenantId};
use crate::status::{self, CondSpec};

/// Failed tenants listed in the status (all are counted in `failedCount`).
pub const MAX_LISTED_FAILURES: usize = 20;

pub const READY: &str = "Ready";
pub const PROGRESSING: &str = "Progressing";
pub const RECONCILING: &str = "Reconciling";
pub const STALLED: &str = "Stalled";

/// Reasons of an analysis halt (the Stalled condition's reason).
pub const ANALYSIS_FAILED: &str = "AnalysisFailed";
pub const ANALYSIS_UNAVAILABLE: &str = "AnalysisUnavailable";
pub const ANALYSIS_INCONCLUSIVE: &str = "AnalysisInconclusive";

/// What one LumenoreConnector reports, as far as the rollout is concerned.
#[derive(Clone, Debug)]
pub struct TenantReport<'a> {
    pub id: TenantId<'a>,
    /// `spec.tenant`: the `tenant` label of its connector's series.
    pub label: &'a str,
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
    /// The analysis the controller ran for the request of a first decision (`analysis_due`).
    pub analysis: Option<&'a AnalysisRun>,
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
    /// The bake needs an analysis before it can be decided: run it, then decide again with it.
    pub analysis_due: Option<AnalysisRequest>,
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
/// A rollback a failed analysis made is not the goal reached: Ready stays False, Stalled True.
fn conditions(phase: Phase, moving: bool, reason: &str, message: &str) -> Vec<CondSpec> {
    let analysis_failed = reason == ANALYSIS_FAILED;
    let done = matches!(phase, Phase::Completed | Phase::RolledBack) && !moving && !analysis_failed;
    let stalled = matches!(phase, Phase::Stalled | Phase::Invalid) || analysis_failed;
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
    let mut analysis_due = None;

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
            analysis_due: None,
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
    let planned = plan::check_spec(inp.spec)
        .and_then(|p| p.check_against(candidates()).map(|_| p))
        .and_then(|p| match &inp.spec.analysis {
            Some(a) => super::analysis::query::check_spec(a).map(|_| p),
            None => Ok(p),
        });
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
        st.analysis = None;
        st.auto_rollback_generation = None;
    }
    let mut skip = inp.spec.skip_tenants.clone();
    skip.sort();
    skip.dedup();
    st.skip_tenants = skip;
    let target = st.image.clone().unwrap_or_default();
    let previous = st.previous_image.clone().unwrap_or_default();
    let (members, counts) = place(&plan, &st.skip_tenants, inp.fleet);
    st.fleet = counts;

    // A person asked to resume (annotation changed) or changed the spec: a stall or a rollback made
    // by the analysis is lifted and the current batch gets a fresh deadline.
    let resumed = inp.resume.is_some() && inp.resume != old.last_handled_resume.as_deref();
    if resumed {
        st.last_handled_resume = inp.resume.map(str::to_string);
    }
    let auto_back = st
        .auto_rollback_generation
        .is_some_and(|g| Some(g) == inp.generation)
        && !resumed;
    if st.auto_rollback_generation.is_some() && !auto_back && !inp.spec.rollback {
        st.auto_rollback_generation = None;
        st.analysis = None;
        events.push(event(
            false,
            "RolloutResumed",
            "the rollback made by the analysis is lifted: the rollout starts again from its first wave"
                .to_string(),
        ));
    }

    // Rollback: every tenant back to the previous image at once (nothing is admitted any more).
    if inp.spec.rollback || auto_back {
        let back = send_back(&mut st, &members, &previous);
        let moving = back < st.fleet.tenants;
        if auto_back {
            let msg = auto_rollback_message(&st, &previous, back);
            return finish(st, events, Phase::RolledBack, moving, ANALYSIS_FAILED, msg, None);
        }
        // A rollback by hand ends the analysis: its last verdict (and a Fail alert) no longer holds.
        st.analysis = None;
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
    let was_stalled = old.phase == Some(Phase::Stalled);
    if was_stalled && st.stalled_generation == inp.generation && !resumed {
        let updated = wave_counts(&mut st, &members, &target);
        st.fleet.updated = updated;
        // An analysis halt keeps its own reason and figures.
        let (reason, msg) = match old
            .conditions
            .iter()
            .find(|c| c.type_ == STALLED && c.reason.starts_with("Analysis"))
        {
            Some(c) => (c.reason.clone(), c.message.clone()),
            None => (
                "TenantNotReady".to_string(),
                stalled_message(&st, inp.spec.ready_deadline_seconds),
            ),
        };
        return finish(st, events, Phase::Stalled, false, &reason, msg, None);
    }
    if was_stalled {
        st.stalled_generation = None;
        st.failed_tenants.clear();
        st.failed_count = None;
        st.analysis = None;
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
            if let Some(spec) = &inp.spec.analysis {
                let wave_name = st.waves[w].name.clone();
                let request = analysis_request(
                    &wave_name,
                    &members,
                    w,
                    &previous,
                    now.as_second() - started,
                    inp.fleet,
                );
                let x = match &mut st.analysis {
                    Some(x) if x.wave == wave_name => x,
                    other => other.insert(AnalysisStatus {
                        wave: wave_name.clone(),
                        ..Default::default()
                    }),
                };
                x.wave_tenants = request.wave_tenants.len() as u32;
                x.baseline_tenants = request.baseline_tenants.len() as u32;
                match judge_bake(
                    spec,
                    x,
                    inp.analysis.filter(|r| r.wave == wave_name),
                    now.as_second(),
                    started + bake,
                ) {
                    Bake::Due => {
                        analysis_due = Some(request);
                        break Step::Baking(started + bake);
                    }
                    Bake::Wait(secs) => {
                        wake_in = Some(Duration::from_secs(secs.max(1) as u64));
                        break Step::Baking(started + bake);
                    }
                    Bake::Halt(reason) => {
                        st.stalled_generation = inp.generation;
                        let msg = analysis_halt_message(reason, &st, spec);
                        events.push(event(true, reason, msg.clone()));
                        break Step::Halted(reason, msg);
                    }
                    Bake::RollBack => {
                        st.auto_rollback_generation = inp.generation;
                        let msg = analysis_halt_message(ANALYSIS_FAILED, &st, spec);
                        events.push(event(true, ANALYSIS_FAILED, msg));
                        break Step::RolledBack;
                    }
                    Bake::Proceed(warning) => {
                        if let Some(note) = warning {
                            events.push(event(true, ANALYSIS_INCONCLUSIVE, note));
                        }
                    }
                }
            } else if left > 0 {
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
        Step::Halted(reason, msg) => finish(st, events, Phase::Stalled, false, reason, msg, None),
        Step::RolledBack => {
            let back = send_back(&mut st, &members, &previous);
            let moving = back < st.fleet.tenants;
            let msg = auto_rollback_message(&st, &previous, back);
            finish(st, events, Phase::RolledBack, moving, ANALYSIS_FAILED, msg, None)
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
                "wave {}: every tenant Ready on {target}, baking until {until} before the next wave{}; {updated} of {total} tenants done",
                wave_label(&st),
                st.analysis.as_ref().map(analysis_summary).unwrap_or_default()
            );
            let mut d = finish(st, events, Phase::Progressing, true, "Baking", msg, wake_in);
            d.analysis_due = analysis_due;
            d
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

#[derive(Clone, Debug, PartialEq, Eq)]
enum Step {
    Completed,
    Stalled,
    Waiting(usize),
    Baking(i64),
    /// The analysis halted the rollout (reason, message).
    Halted(&'static str, String),
    /// The analysis failed with `autoRollback`.
    RolledBack,
}

/// Every tenant back to the previous image at once (nothing admitted any more); how many run it and
/// are Ready.
fn send_back(st: &mut LumenoreFleetRolloutStatus, members: &[Vec<Member<'_>>], previous: &str) -> u32 {
    st.current_wave = Some(0);
    st.current_wave_name = st.waves.first().map(|w| w.name.clone());
    st.partition = Some(plan::format_partition(0));
    st.batch_started_at = None;
    st.bake_started_at = None;
    st.stalled_generation = None;
    st.failed_tenants.clear();
    st.failed_count = None;
    let back = wave_counts(st, members, previous);
    st.fleet.updated = back;
    back
}

/// The wave (its members) and the baseline (tenants of later waves still on the previous image).
fn analysis_request(
    wave: &str,
    members: &[Vec<Member<'_>>],
    w: usize,
    previous: &str,
    bake_so_far: i64,
    fleet: &[TenantReport<'_>],
) -> AnalysisRequest {
    let series = |m: &Member<'_>| TenantSeries {
        namespace: m.report.id.namespace.to_string(),
        tenant: m.report.label.to_string(),
    };
    let wave_tenants: Vec<TenantSeries> = members[w].iter().map(series).collect();
    let baseline_tenants: Vec<TenantSeries> = members[w + 1..]
        .iter()
        .flatten()
        .filter(|m| m.report.image == Some(previous))
        .map(series)
        .collect();
    let everyone = || fleet.iter().map(|r| (r.id.namespace, r.label));
    AnalysisRequest {
        wave: wave.to_string(),
        wave_by_sets: super::analysis::query::exact_by_sets(&wave_tenants, everyone()),
        baseline_by_sets: super::analysis::query::exact_by_sets(&baseline_tenants, everyone()),
        wave_tenants,
        baseline_tenants,
        window_seconds: bake_so_far.clamp(1, i64::from(u32::MAX)) as u32,
    }
}

/// What the analysis makes of a bake.
#[derive(Debug, PartialEq)]
enum Bake {
    /// Run an analysis now, then decide again with it.
    Due,
    /// Nothing to decide before this many seconds.
    Wait(i64),
    Halt(&'static str),
    RollBack,
    /// The bake is over: advance (with a warning when the analysis stayed inconclusive).
    Proceed(Option<String>),
}

/// Record `run` (when given) in `x` and judge the bake ending at `bake_end`. Due: no analysis yet,
/// `intervalSeconds` since the last, or the bake ended after the last. Only a run that passes at the
/// end of the bake advances; a failure halts at once; the query API failing halts after the grace;
/// inconclusive extends the bake up to `maxExtensionSeconds`, then `onInconclusive` decides.
fn judge_bake(
    spec: &super::crd::Analysis,
    x: &mut AnalysisStatus,
    run: Option<&AnalysisRun>,
    now: i64,
    bake_end: i64,
) -> Bake {
    let interval = i64::from(spec.interval_seconds.max(1));
    let last = secs(&x.last_run_at);
    let Some(run) = run else {
        let due = last.is_none_or(|l| now - l >= interval || (now >= bake_end && l < bake_end));
        if due {
            return Bake::Due;
        }
        let next = last.unwrap_or(now) + interval;
        let until = if now < bake_end { next.min(bake_end) } else { next };
        return Bake::Wait(until - now);
    };
    x.last_run_at = Some(time(Timestamp::from_second(run.at).unwrap_or_default()));
    x.window_seconds = run.window_seconds;
    let checks = match &run.outcome {
        Err(e) => {
            x.error = Some(crate::rollout::truncate(e.clone(), 300));
            x.verdict = None;
            let since = secs(&x.unavailable_since).unwrap_or(now);
            x.unavailable_since = Some(time(Timestamp::from_second(since).unwrap_or_default()));
            if now - since >= i64::from(spec.unavailable_grace_seconds) {
                return Bake::Halt(ANALYSIS_UNAVAILABLE);
            }
            return Bake::Wait(interval);
        }
        Ok(checks) => checks,
    };
    x.error = None;
    x.unavailable_since = None;
    x.checks = checks.clone();
    let v = verdict::overall(checks);
    x.verdict = Some(v);
    let extension_end = bake_end + i64::from(spec.max_extension_seconds);
    match v {
        Verdict::Fail if spec.auto_rollback => Bake::RollBack,
        Verdict::Fail => Bake::Halt(ANALYSIS_FAILED),
        Verdict::Pass if now >= bake_end => Bake::Proceed(None),
        Verdict::Inconclusive if now >= extension_end => match spec.on_inconclusive {
            InconclusivePolicy::Halt => Bake::Halt(ANALYSIS_INCONCLUSIVE),
            InconclusivePolicy::Proceed => Bake::Proceed(Some(format!(
                "wave {}: the analysis stayed inconclusive {}s past the bake; onInconclusive is Proceed, so the rollout advances: {}",
                x.wave,
                spec.max_extension_seconds,
                figures(x, |_| true)
            ))),
        },
        _ if now < bake_end => Bake::Wait(interval.min(bake_end - now)),
        _ => Bake::Wait(interval.min(extension_end - now).max(1)),
    }
}

/// The checks' figures, those `keep` selects, in a line.
fn figures(x: &AnalysisStatus, keep: impl Fn(&super::crd::CheckStatus) -> bool) -> String {
    x.checks
        .iter()
        .filter(|c| keep(c))
        .map(|c| format!("{} {}: {}", c.name, c.verdict.as_str(), c.message))
        .collect::<Vec<_>>()
        .join("; ")
}

/// The analysis in a clause of the Baking message.
fn analysis_summary(x: &AnalysisStatus) -> String {
    match (&x.verdict, &x.error) {
        (_, Some(e)) => format!(" (analysis: the query API failed: {e})"),
        (Some(v), None) => format!(
            " (analysis over {}s: {}; {} wave vs {} baseline tenants)",
            x.window_seconds,
            v.as_str(),
            x.wave_tenants,
            x.baseline_tenants
        ),
        (None, None) => " (analysis pending)".to_string(),
    }
}

fn analysis_halt_message(
    reason: &str,
    st: &LumenoreFleetRolloutStatus,
    spec: &super::crd::Analysis,
) -> String {
    let x = st.analysis.clone().unwrap_or_default();
    let wave = wave_label(st);
    let what = match reason {
        ANALYSIS_FAILED => format!(
            "analysis failed in wave {wave}: {}",
            figures(&x, |c| c.verdict == Verdict::Fail)
        ),
        ANALYSIS_UNAVAILABLE => format!(
            "analysis unavailable in wave {wave} for {}s or more: {}",
            spec.unavailable_grace_seconds,
            x.error.as_deref().unwrap_or("the query API failed")
        ),
        _ => format!(
            "analysis inconclusive in wave {wave} {}s past the bake: {}",
            spec.max_extension_seconds,
            figures(&x, |c| c.verdict != Verdict::Pass)
        ),
    };
    format!(
        "{what}; later waves untouched. Fix and resume (annotate lumenore.io/resume), or roll back (spec.rollback)"
    )
}

fn auto_rollback_message(st: &LumenoreFleetRolloutStatus, previous: &str, back: u32) -> String {
    let x = st.analysis.clone().unwrap_or_default();
    format!(
        "analysis failed in wave {}: {}; rolled back (autoRollback) to {previous}: {back} of {} tenants run it and are Ready. Change spec.image, or resume (annotate lumenore.io/resume) to start again",
        x.wave,
        figures(&x, |c| c.verdict == Verdict::Fail),
        st.fleet.tenants
    )
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
                    label: &self.names[i],
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
            analysis: None,
        })
    }

    fn condition<'a>(
        st: &'a LumenoreFleetRolloutStatus,
        t: &str,
    ) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
        st.conditions.iter().find(|c| c.type_ == t)
    }

    fn cond<'a>(st: &'a LumenoreFleetRolloutStatus, t: &str) -> &'a str {
        condition(st, t).map(|c| c.status.as_str()).unwrap_or("")
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
            analysis: None,
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
            analysis: None,
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
            analysis: None,
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
            analysis: None,
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
            analysis: None,
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
            analysis: None,
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

    type Measured = Result<Vec<super::super::crd::CheckStatus>, String>;

    fn analysed(extra: serde_json::Value) -> LumenoreFleetRolloutSpec {
        let mut v = serde_json::to_value(spec()).unwrap();
        let mut a = serde_json::json!({
            "prometheus": {"url": "http://prometheus:9090"},
            "intervalSeconds": 10,
            "minCalls": 10,
            "maxExtensionSeconds": 30,
            "unavailableGraceSeconds": 20,
        });
        for (k, x) in extra.as_object().unwrap() {
            a[k] = x.clone();
        }
        v["analysis"] = a;
        serde_json::from_value(v).unwrap()
    }

    /// Run the operator's loop (decide; on a due analysis, measure with `measure` and decide again)
    /// every 5 s from `from` to `to`; the requests seen, and the events.
    fn drive(
        spec: &LumenoreFleetRolloutSpec,
        st: &mut LumenoreFleetRolloutStatus,
        w: &mut World,
        (from, to): (i64, i64),
        measure: &dyn Fn(&AnalysisRequest, i64) -> Measured,
    ) -> (Vec<AnalysisRequest>, Vec<RolloutEvent>) {
        let (mut requests, mut events) = (Vec::new(), Vec::new());
        let mut t = from;
        while t <= to {
            let reports = w.reports();
            let input = Input {
                generation: Some(1),
                spec,
                resume: None,
                old: st,
                default_image: OLD,
                fleet: &reports,
                now: at(t),
                conflict: None,
                analysis: None,
            };
            let mut d = decide(&input);
            if let Some(req) = d.analysis_due.clone() {
                let run = AnalysisRun {
                    wave: req.wave.clone(),
                    at: at(t).as_second(),
                    window_seconds: req.window_seconds,
                    outcome: measure(&req, t),
                };
                requests.push(req);
                d = decide(&Input {
                    analysis: Some(&run),
                    ..input
                });
                assert!(
                    d.analysis_due.is_none(),
                    "a decision with its analysis asks for none"
                );
            }
            events.extend(d.events);
            *st = d.status;
            w.converge(st, &[]);
            t += 5;
        }
        (requests, events)
    }

    fn error_check(wave_errors: f64) -> Measured {
        let calls = |t, e| verdict::Calls {
            total: Some(t),
            errors: Some(e),
        };
        Ok(vec![verdict::error_ratio(
            &Default::default(),
            10,
            &calls(100.0, wave_errors),
            &calls(1000.0, 1.0),
        )])
    }

    fn reason<'a>(st: &'a LumenoreFleetRolloutStatus, t: &str) -> &'a str {
        condition(st, t).map(|c| c.reason.as_str()).unwrap_or("")
    }

    #[test]
    fn a_passing_analysis_advances_only_at_the_end_of_the_bake() {
        let spec = analysed(serde_json::json!({}));
        let mut w = World::new(10, 2);
        let mut st = LumenoreFleetRolloutStatus::default();
        let (requests, _) = drive(&spec, &mut st, &mut w, (0, 40), &|_, _| error_check(0.0));
        // The canaries were updated at once and Ready at 5 s; analyses every 10 s since.
        assert_eq!(st.current_wave_name.as_deref(), Some("canary"));
        assert_eq!(reason(&st, PROGRESSING), "Baking");
        let first = &requests[0];
        let names = |v: &[TenantSeries]| v.iter().map(|t| t.tenant.clone()).collect::<Vec<_>>();
        assert_eq!(names(&first.wave_tenants), ["t-00", "t-01"]);
        assert_eq!(
            first.baseline_tenants.len(),
            8,
            "every tenant still on the previous image"
        );
        assert!(
            first.wave_by_sets && first.baseline_by_sets,
            "unique names: one selector a side"
        );
        let times: Vec<u32> = requests.iter().map(|r| r.window_seconds).collect();
        assert_eq!(
            times,
            [1, 10, 20, 30],
            "one analysis per interval, over the bake so far"
        );
        let x = st.analysis.as_ref().unwrap();
        assert_eq!(
            (x.verdict, x.wave_tenants, x.baseline_tenants),
            (Some(Verdict::Pass), 2, 8)
        );
        drive(&spec, &mut st, &mut w, (45, 70), &|_, _| error_check(0.0));
        assert_eq!(
            st.current_wave_name.as_deref(),
            Some("half"),
            "{:?}",
            st.conditions
        );
    }

    #[test]
    fn a_failed_check_stalls_with_the_figures_and_moves_no_one_further() {
        let spec = analysed(serde_json::json!({}));
        let mut w = World::new(10, 2);
        let mut st = LumenoreFleetRolloutStatus::default();
        let (_, events) = drive(&spec, &mut st, &mut w, (0, 25), &|_, t| {
            error_check(if t >= 20 { 9.0 } else { 0.0 })
        });
        assert_eq!(st.phase, Some(Phase::Stalled));
        assert_eq!(
            (cond(&st, STALLED), reason(&st, STALLED)),
            ("True", ANALYSIS_FAILED)
        );
        let msg = &st.conditions.iter().find(|c| c.type_ == STALLED).unwrap().message;
        assert!(
            msg.contains("error ratio 9.00% of the wave against 0.10% of the baseline (limit 1.10%)"),
            "{msg}"
        );
        assert_eq!(events.iter().filter(|e| e.reason == ANALYSIS_FAILED).count(), 1);
        // Held: no further analysis, no further tenant, the same reason.
        let (requests, events) = drive(&spec, &mut st, &mut w, (30, 200), &|_, _| error_check(0.0));
        assert!(requests.is_empty() && events.is_empty());
        assert_eq!(reason(&st, STALLED), ANALYSIS_FAILED);
        assert_eq!(w.images.iter().filter(|i| i.as_deref() == Some(NEW)).count(), 2);
    }

    #[test]
    fn auto_rollback_sends_everyone_back_and_holds() {
        let spec = analysed(serde_json::json!({"autoRollback": true}));
        let mut w = World::new(10, 2);
        let mut st = LumenoreFleetRolloutStatus::default();
        drive(&spec, &mut st, &mut w, (0, 15), &|_, _| error_check(9.0));
        assert_eq!(st.phase, Some(Phase::RolledBack));
        assert_eq!(st.auto_rollback_generation, Some(1));
        let (requests, _) = drive(&spec, &mut st, &mut w, (20, 120), &|_, _| error_check(0.0));
        assert!(requests.is_empty());
        assert!(
            w.images.iter().all(|i| i.as_deref() == Some(OLD)),
            "{:?}",
            w.images
        );
        // Not the goal: Ready stays False, Stalled True, with the figures.
        assert_eq!((cond(&st, READY), cond(&st, STALLED)), ("False", "True"));
        assert_eq!(reason(&st, READY), ANALYSIS_FAILED);
        // A new generation (the spec changed) starts again from the first wave.
        let reports = w.reports();
        let d = decide(&Input {
            generation: Some(2),
            spec: &spec,
            resume: None,
            old: &st,
            default_image: OLD,
            fleet: &reports,
            now: at(125),
            conflict: None,
            analysis: None,
        });
        assert_eq!(d.status.phase, Some(Phase::Progressing));
        assert!(d.events.iter().any(|e| e.reason == "RolloutResumed"));
    }

    #[test]
    fn inconclusive_extends_the_bake_then_follows_the_policy() {
        let few = |_: &AnalysisRequest, _| {
            Ok(vec![verdict::error_ratio(
                &Default::default(),
                10,
                &verdict::Calls::default(),
                &verdict::Calls::default(),
            )])
        };
        let spec = analysed(serde_json::json!({}));
        let mut w = World::new(10, 2);
        let mut st = LumenoreFleetRolloutStatus::default();
        // Bake 5..65 s, extension to 95 s.
        drive(&spec, &mut st, &mut w, (0, 90), &few);
        assert_eq!(
            (st.phase, st.current_wave_name.as_deref()),
            (Some(Phase::Progressing), Some("canary"))
        );
        drive(&spec, &mut st, &mut w, (95, 100), &few);
        assert_eq!(
            (st.phase, reason(&st, STALLED)),
            (Some(Phase::Stalled), ANALYSIS_INCONCLUSIVE)
        );

        let spec = analysed(serde_json::json!({"onInconclusive": "Proceed"}));
        let mut w = World::new(10, 2);
        let mut st = LumenoreFleetRolloutStatus::default();
        let (_, events) = drive(&spec, &mut st, &mut w, (0, 100), &few);
        assert_eq!(st.current_wave_name.as_deref(), Some("half"));
        assert_eq!(
            events
                .iter()
                .filter(|e| e.reason == ANALYSIS_INCONCLUSIVE && e.warning)
                .count(),
            1
        );
    }

    #[test]
    fn an_unavailable_query_api_is_never_a_pass() {
        let spec = analysed(serde_json::json!({"unavailableGraceSeconds": 100}));
        let mut w = World::new(10, 2);
        let mut st = LumenoreFleetRolloutStatus::default();
        // Down past the end of the bake (65 s), within the grace: the wave waits.
        drive(&spec, &mut st, &mut w, (0, 80), &|_, t| {
            if t < 20 {
                error_check(0.0)
            } else {
                Err("cannot connect to the query API".into())
            }
        });
        assert_eq!(
            (st.phase, st.current_wave_name.as_deref()),
            (Some(Phase::Progressing), Some("canary"))
        );
        assert!(
            st.conditions[0].message.contains("the query API failed"),
            "{}",
            st.conditions[0].message
        );
        // Back before the grace: the bake passes and the wave advances.
        let mut st2 = st.clone();
        let mut w2 = World::new(10, 2);
        w2.converge(&st2, &[]);
        drive(&spec, &mut st2, &mut w2, (85, 90), &|_, _| error_check(0.0));
        assert_eq!(st2.current_wave_name.as_deref(), Some("half"));
        // Still down at the grace: halted, with the reason.
        drive(&spec, &mut st, &mut w, (85, 130), &|_, _| {
            Err("cannot connect to the query API".into())
        });
        assert_eq!(
            (st.phase, reason(&st, STALLED)),
            (Some(Phase::Stalled), ANALYSIS_UNAVAILABLE)
        );
        assert_eq!(w.images.iter().filter(|i| i.as_deref() == Some(NEW)).count(), 2);
    }
}
