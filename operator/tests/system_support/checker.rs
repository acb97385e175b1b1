//! Invariants over every write the fake API server records, checked as each write lands (from the
//! fake's `on_write` hook). A violation is recorded, never panicked on (the hook runs inside the
//! fake), and every scenario asserts the list is empty at its end.
//!
//! The checker keeps its own shadow of the objects it needs (the Lease, rollouts, tenants, their
//! Deployments), built from the writes alone, so each write is judged against the state as the API
//! server held it at that moment:
//!
//! - (a) no tenant's Deployment gets the new image before its wave is admitted, by the latest
//!   rollout status written before that write (wave index < currentWave, or the current wave and
//!   order key < partition; skipped tenants never);
//! - (b) never more than maxUnavailable tenants moved onto the new image (from another one) and not
//!   Ready on it;
//! - (c) `status.currentWave`, and `status.partition` within a wave, never move backwards for one
//!   rollout object and one target, except by a rollback;
//! - (d) no Deployment goes from the new image back to another, except by a rollback (or
//!   `skipTenants`, which sends a tenant back by design);
//! - (e) only the current Lease holder writes: a write accepted from an operator identity X (other
//!   than to the Lease) lands while the Lease, as stored at that moment, names X and has not
//!   expired (renewTime + leaseDurationSeconds). Writes are judged in the order the fake handled
//!   them (`seq`), so the takeover moment is the new holder's Lease write itself: any write of the
//!   old holder handled after it is a violation;
//! - (f) is checked at the end of a scenario by [`super::cluster::Cluster::check_no_ghosts`], and
//!   (g) every rollout status counts the whole fleet, for scenarios whose fleet does not change, by
//!   [`super::cluster::Cluster::check_whole_fleet_decisions`].

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Instant;

use k8s_openapi::jiff::Timestamp;
use lumenore_operator::rollout::plan::{self, Plan, TenantId};
use lumenore_operator::rollout::{LumenoreFleetRolloutSpec, LumenoreFleetRolloutStatus};
use serde_json::Value;

/// One write as the checker sees it (built from the fake's record by [`super::cluster`]).
#[derive(Clone, Debug)]
pub struct Rec {
    pub seq: u64,
    pub identity: String,
    pub field_manager: String,
    pub method: String,
    pub plural: String,
    pub namespace: String,
    pub name: String,
    pub subresource: String,
    pub code: u16,
    /// The stored object after the write (for a DELETE: whatever the fake recorded, ignored).
    pub object: Option<Value>,
}

impl Rec {
    fn accepted(&self) -> bool {
        (200..300).contains(&self.code)
    }
    fn is_delete(&self) -> bool {
        self.method.eq_ignore_ascii_case("DELETE")
    }
    fn what(&self) -> String {
        let sub = if self.subresource.is_empty() {
            String::new()
        } else {
            format!("/{}", self.subresource)
        };
        format!(
            "write #{} {} {}{} {}/{} by {:?} (manager {:?}, code {})",
            self.seq,
            self.method,
            self.plural,
            sub,
            self.namespace,
            self.name,
            self.identity,
            self.field_manager,
            self.code
        )
    }
}

/// What the checker needs to know of the scenario.
#[derive(Clone, Debug)]
pub struct CheckConfig {
    /// The rollout's target image.
    pub new_image: String,
    pub lease_namespace: String,
    pub lease_name: String,
    /// Identities (bearer tokens) of operator processes start with this.
    pub operator_prefix: String,
}

/// A change of the Lease holder, as written.
#[derive(Clone, Debug)]
pub struct Takeover {
    pub at: Instant,
    pub from: Option<String>,
    pub to: Option<String>,
}

/// One rollout status step (a new currentWave/partition/phase), as written.
#[derive(Clone, Debug)]
pub struct Step {
    pub at: Instant,
    pub rollout: String,
    pub uid: String,
    pub wave: u32,
    pub partition: String,
    pub phase: String,
    pub by: String,
}

#[derive(Default)]
struct Shadow {
    /// Writes whose hook ran before an earlier write's (hooks run concurrently): judged in `seq`
    /// order, each with the time its hook ran.
    pending: BTreeMap<u64, (Rec, Instant, Timestamp)>,
    next_seq: u64,
    lease: Option<Value>,
    /// name → latest object (rollout namespace only).
    rollouts: BTreeMap<String, Value>,
    /// The latest rollout status written that carries an accepted plan (image set), with the object.
    admission: Option<Value>,
    tenants: BTreeMap<(String, String), Value>,
    deployments: BTreeMap<(String, String), Value>,
    /// Deployments the rollout moved onto the new image from another one (a Deployment created on
    /// it, for a tenant created during the rollout, was not made unready by the rollout).
    moved: std::collections::HashSet<(String, String)>,
    /// uid → (image, waves fingerprint, currentWave, partition) last written.
    progress: HashMap<String, (String, String, u32, u128)>,
    violations: Vec<String>,
    dropped: usize,
    writes: u64,
    takeovers: Vec<Takeover>,
    steps: Vec<Step>,
    /// identity → times of its accepted non-Lease writes.
    operator_writes: HashMap<String, Vec<(Instant, String)>>,
    max_unready: usize,
}

/// The invariant checker; shared with the fake's write hook.
pub struct Checker {
    cfg: CheckConfig,
    inner: Mutex<Shadow>,
}

const MAX_VIOLATIONS: usize = 200;

fn s<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, k| v.get(*k))?.as_str()
}

fn i(v: &Value, path: &[&str]) -> Option<i64> {
    path.iter().try_fold(v, |v, k| v.get(*k))?.as_i64()
}

/// Image of the connector container of a Deployment.
pub fn deployment_image(d: &Value) -> Option<String> {
    let cs = d["spec"]["template"]["spec"]["containers"].as_array()?;
    cs.iter()
        .find(|c| c["name"] == "connector")
        .or(cs.first())
        .and_then(|c| c["image"].as_str())
        .map(str::to_string)
}

/// The Deployment controller has seen its spec and every desired replica is updated and ready.
pub fn deployment_ready(d: &Value) -> bool {
    let generation = i(d, &["metadata", "generation"]).unwrap_or(1);
    let observed = i(d, &["status", "observedGeneration"]).unwrap_or(0);
    let want = i(d, &["spec", "replicas"]).unwrap_or(1);
    observed >= generation
        && i(d, &["status", "readyReplicas"]).unwrap_or(0) >= want
        && i(d, &["status", "updatedReplicas"]).unwrap_or(0) >= want
}

fn labels_of(obj: Option<&Value>) -> BTreeMap<String, String> {
    obj.and_then(|o| o["metadata"]["labels"].as_object())
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                .collect()
        })
        .unwrap_or_default()
}

fn status_of(r: &Value) -> Option<LumenoreFleetRolloutStatus> {
    r.get("status")
        .filter(|s| !s.is_null())
        .and_then(|s| serde_json::from_value(s.clone()).ok())
}

fn spec_of(r: &Value) -> Option<LumenoreFleetRolloutSpec> {
    serde_json::from_value(r.get("spec")?.clone()).ok()
}

fn rolling_back(r: &Value) -> bool {
    r["spec"]["rollback"] == Value::Bool(true) || s(r, &["status", "phase"]) == Some("RolledBack")
}

/// Is tenant `ns/name` (with `labels`) admitted to `st.image` by status `st`?
pub fn admitted(
    st: &LumenoreFleetRolloutStatus,
    ns: &str,
    name: &str,
    labels: &BTreeMap<String, String>,
) -> bool {
    if st.skip_tenants.iter().any(|t| *t == format!("{ns}/{name}")) {
        return false;
    }
    let plan = Plan::from_status(&st.waves);
    let Some(w) = plan.wave_of(&TenantId {
        namespace: ns,
        name,
        labels,
    }) else {
        return false;
    };
    let current = st.current_wave.unwrap_or(0) as usize;
    w < current
        || (w == current
            && u128::from(plan::order_key(ns, name)) < plan::parse_partition(st.partition.as_deref()))
}

/// Wave index of a tenant under the waves of `st`.
pub fn wave_index(
    st: &LumenoreFleetRolloutStatus,
    ns: &str,
    name: &str,
    labels: &BTreeMap<String, String>,
) -> Option<usize> {
    Plan::from_status(&st.waves).wave_of(&TenantId {
        namespace: ns,
        name,
        labels,
    })
}

fn parse_time(t: &str) -> Option<Timestamp> {
    t.parse::<Timestamp>().ok()
}

impl Checker {
    pub fn new(cfg: CheckConfig) -> Self {
        Checker {
            cfg,
            inner: Mutex::new(Shadow::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shadow> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Violations so far (writes still waiting for an earlier one are judged first).
    pub fn violations(&self) -> Vec<String> {
        let mut g = self.lock();
        self.drain(&mut g, true);
        let mut v = g.violations.clone();
        if g.dropped > 0 {
            v.push(format!("... and {} more violations", g.dropped));
        }
        v
    }

    /// Record a violation found outside the write hook (end-of-scenario checks).
    pub fn violation(&self, msg: String) {
        let mut g = self.lock();
        push(&mut g, msg);
    }

    pub fn writes_seen(&self) -> u64 {
        self.lock().writes
    }

    pub fn takeovers(&self) -> Vec<Takeover> {
        self.lock().takeovers.clone()
    }

    pub fn steps(&self) -> Vec<Step> {
        self.lock().steps.clone()
    }

    /// The largest number of tenants seen at once on the new image and not Ready ((b)).
    pub fn max_unready(&self) -> usize {
        self.lock().max_unready
    }

    /// Accepted non-Lease writes of `identity` (time, description).
    pub fn writes_by(&self, identity: &str) -> Vec<(Instant, String)> {
        self.lock()
            .operator_writes
            .get(identity)
            .cloned()
            .unwrap_or_default()
    }

    /// Take one write from the fake's hook; writes are judged in `seq` order.
    pub fn on_write(&self, w: Rec) {
        let now = Instant::now();
        let wall = Timestamp::now();
        let mut g = self.lock();
        if g.next_seq == 0 {
            g.next_seq = 1;
        }
        if w.seq < g.next_seq {
            // Its turn was given up (see `drain`): judged late rather than never.
            self.judge(&mut g, &w, now, wall);
            return;
        }
        g.pending.insert(w.seq, (w, now, wall));
        self.drain(&mut g, false);
    }

    /// Judge the pending writes that are next in `seq` order (all of them when `all`, or when a gap
    /// has lasted for many writes: a write whose hook never ran).
    fn drain(&self, g: &mut Shadow, all: bool) {
        loop {
            let next = g.next_seq;
            let entry = match g.pending.remove(&next) {
                Some(e) => e,
                None if (all || g.pending.len() > 5_000) && !g.pending.is_empty() => {
                    let first = *g.pending.keys().next().expect("not empty");
                    g.next_seq = first;
                    continue;
                }
                None => return,
            };
            g.next_seq = next + 1;
            let (w, now, wall) = entry;
            self.judge(g, &w, now, wall);
        }
    }

    /// Judge one write, then fold it into the shadow state.
    fn judge(&self, g: &mut Shadow, w: &Rec, now: Instant, wall: Timestamp) {
        g.writes += 1;
        if !w.accepted() {
            return;
        }
        let is_lease = w.plural == "leases";
        let from_operator = w.identity.starts_with(&self.cfg.operator_prefix);

        // (e) only the current, unexpired Lease holder writes.
        if from_operator && !is_lease {
            g.operator_writes
                .entry(w.identity.clone())
                .or_default()
                .push((now, format!("{} {}/{}", w.plural, w.namespace, w.name)));
            let verdict = match &g.lease {
                None => Some("no Lease exists".to_string()),
                Some(l) => {
                    let holder = s(l, &["spec", "holderIdentity"]).unwrap_or("");
                    let renew = s(l, &["spec", "renewTime"]).and_then(parse_time);
                    let dur = i(l, &["spec", "leaseDurationSeconds"]).unwrap_or(0);
                    if holder != w.identity {
                        Some(format!(
                            "the Lease names {:?} as holder (resourceVersion {})",
                            holder,
                            s(l, &["metadata", "resourceVersion"]).unwrap_or("?")
                        ))
                    } else {
                        match renew {
                            None => Some("the Lease has no renewTime".to_string()),
                            Some(r) => {
                                let expires = r.as_millisecond() + dur * 1000;
                                if wall.as_millisecond() >= expires {
                                    Some(format!(
                                        "the Lease held by it expired {} ms earlier (renewTime {r}, leaseDurationSeconds {dur})",
                                        wall.as_millisecond() - expires
                                    ))
                                } else {
                                    None
                                }
                            }
                        }
                    }
                }
            };
            if let Some(why) = verdict {
                let msg = format!(
                    "(e) only the Lease holder writes: {} accepted while {why}",
                    w.what()
                );
                push(g, msg);
            }
        }

        let key = (w.namespace.clone(), w.name.clone());
        match w.plural.as_str() {
            "leases" if w.namespace == self.cfg.lease_namespace && w.name == self.cfg.lease_name => {
                let before = g
                    .lease
                    .as_ref()
                    .and_then(|l| s(l, &["spec", "holderIdentity"]).map(str::to_string));
                let after = if w.is_delete() { None } else { w.object.clone() };
                let holder = after
                    .as_ref()
                    .and_then(|l| s(l, &["spec", "holderIdentity"]).map(str::to_string))
                    .filter(|h| !h.is_empty());
                if before != holder {
                    g.takeovers.push(Takeover {
                        at: now,
                        from: before,
                        to: holder,
                    });
                }
                g.lease = after;
            }
            "lumenorefleetrollouts" => self.rollout_write(g, w, now),
            "lumenoreconnectors" => {
                if w.is_delete() {
                    g.tenants.remove(&key);
                } else if let Some(o) = &w.object {
                    g.tenants.insert(key, o.clone());
                }
            }
            "deployments" => self.deployment_write(g, w),
            _ => {}
        }
    }

    fn rollout_write(&self, g: &mut Shadow, w: &Rec, now: Instant) {
        if w.is_delete() {
            g.rollouts.remove(&w.name);
            return;
        }
        let Some(obj) = w.object.clone() else { return };
        g.rollouts.insert(w.name.clone(), obj.clone());
        let Some(st) = status_of(&obj) else { return };
        let Some(image) = st.image.clone() else { return };
        g.admission = Some(obj.clone());

        // (c) currentWave / partition never move backwards for one object and one plan.
        let uid = s(&obj, &["metadata", "uid"]).unwrap_or("").to_string();
        let waves: String = st
            .waves
            .iter()
            .map(|w| format!("{}/{};", w.name, w.percent))
            .collect();
        let wave = st.current_wave.unwrap_or(0);
        let partition = plan::parse_partition(st.partition.as_deref());
        let phase = st.phase.map(|p| p.as_str().to_string()).unwrap_or_default();
        if let Some((pi, pw, pwave, ppart)) = g.progress.get(&uid).cloned()
            && pi == image
            && pw == waves
            && !rolling_back(&obj)
        {
            let backwards = wave < pwave || (wave == pwave && partition < ppart);
            if backwards {
                let msg = format!(
                    "(c) rollout progress moved backwards: {} wrote currentWave {wave} partition {:x} after currentWave {pwave} partition {ppart:x} (same uid {uid}, same target {image})",
                    w.what(),
                    partition
                );
                push(g, msg);
            }
        }
        let moved = g.steps.iter().rev().find(|s| s.uid == uid).is_none_or(|s| {
            s.wave != wave || plan::parse_partition(Some(&s.partition)) != partition || s.phase != phase
        });
        if moved {
            g.steps.push(Step {
                at: now,
                rollout: w.name.clone(),
                uid: uid.clone(),
                wave,
                partition: plan::format_partition(partition),
                phase,
                by: w.identity.clone(),
            });
        }
        g.progress.insert(uid, (image, waves, wave, partition));
        self.check_unready(g, w);
    }

    fn deployment_write(&self, g: &mut Shadow, w: &Rec) {
        let key = (w.namespace.clone(), w.name.clone());
        if w.is_delete() {
            g.deployments.remove(&key);
            g.moved.remove(&key);
            return;
        }
        let Some(obj) = w.object.clone() else { return };
        let before = g.deployments.get(&key).and_then(deployment_image);
        let after = deployment_image(&obj);
        g.deployments.insert(key.clone(), obj);
        let new = &self.cfg.new_image;
        if after.as_deref() != Some(new.as_str()) {
            g.moved.remove(&key);
        } else if before.as_deref().is_some_and(|b| b != new) {
            g.moved.insert(key.clone());
        }
        let admission = g.admission.clone();
        let admission_st = admission.as_ref().and_then(status_of);
        let labels = labels_of(g.tenants.get(&key));

        // (a) the new image only once the tenant's wave is admitted.
        if after.as_deref() == Some(new.as_str()) && before.as_deref() != Some(new.as_str()) {
            let ok = admission_st.as_ref().is_some_and(|st| {
                st.image.as_deref() == Some(new.as_str()) && admitted(st, &w.namespace, &w.name, &labels)
            });
            if !ok {
                let why = match &admission_st {
                    None => "no rollout status admits anything".to_string(),
                    Some(st) => format!(
                        "the latest rollout status ({}: image {:?}, currentWave {:?}, partition {:?}) places it in wave {:?} with order key {:016x}",
                        admission
                            .as_ref()
                            .and_then(|a| s(a, &["metadata", "name"]))
                            .unwrap_or("?"),
                        st.image,
                        st.current_wave,
                        st.partition,
                        wave_index(st, &w.namespace, &w.name, &labels),
                        plan::order_key(&w.namespace, &w.name)
                    ),
                };
                let msg = format!(
                    "(a) new image before the wave is admitted: {} set {new} (was {:?}) while {why}",
                    w.what(),
                    before
                );
                push(g, msg);
            }
        }

        // (d) never back from the new image, except by a rollback (or skipTenants).
        if before.as_deref() == Some(new.as_str()) && after.as_deref().is_some_and(|a| a != new) {
            let excused = admission.as_ref().is_some_and(rolling_back)
                || g.rollouts.values().any(rolling_back)
                || admission_st.as_ref().is_some_and(|st| {
                    st.skip_tenants
                        .iter()
                        .any(|t| *t == format!("{}/{}", w.namespace, w.name))
                });
            if !excused {
                let msg = format!(
                    "(d) downgrade: {} moved the Deployment from {new} back to {:?} without a rollback",
                    w.what(),
                    after
                );
                push(g, msg);
            }
        }
        self.check_unready(g, w);
    }

    /// (b) at most maxUnavailable tenants moved onto the new image and not Ready on it.
    fn check_unready(&self, g: &mut Shadow, w: &Rec) {
        let Some(active) = g.admission.clone() else { return };
        let Some(spec) = spec_of(&active) else { return };
        if rolling_back(&active) {
            return;
        }
        let new = &self.cfg.new_image;
        let unready: Vec<String> = g
            .deployments
            .iter()
            .filter(|(k, d)| {
                g.tenants.contains_key(*k)
                    && g.moved.contains(*k)
                    && deployment_image(d).as_deref() == Some(new.as_str())
                    && !deployment_ready(d)
            })
            .map(|((ns, n), _)| format!("{ns}/{n}"))
            .collect();
        g.max_unready = g.max_unready.max(unready.len());
        if unready.len() > spec.max_unavailable as usize {
            let msg = format!(
                "(b) more than maxUnavailable ({}) tenants moved onto {new} and not Ready after {}: {} ({})",
                spec.max_unavailable,
                w.what(),
                unready.len(),
                unready.join(", ")
            );
            push(g, msg);
        }
    }
}

fn push(g: &mut Shadow, msg: String) {
    if g.violations.len() < MAX_VIOLATIONS {
        g.violations.push(msg);
    } else {
        g.dropped += 1;
    }
}
