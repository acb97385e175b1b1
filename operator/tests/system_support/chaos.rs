//! A seeded random schedule of faults over a fleet rollout: leader kills, leader partitions, watch
//! stalls, watch cuts with compactions, slow LISTs. Two replicas run throughout (a replica that died
//! or stepped down is replaced by a fresh process). Reproducible from the printed seed (the timing of
//! the processes is not, so a replay is close, not identical).

use std::time::{Duration, Instant};

use super::cluster::*;
use super::rng::Rng;

/// The faults a schedule draws from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// SIGKILL the leader (a fresh process replaces it).
    KillLeader,
    /// The leader's requests hang; healed a few seconds later.
    PartitionLeader,
    /// The leader's open watch streams go silent.
    StallWatches,
    /// Every open watch stream ends, and old resourceVersions expire (410 on resume: re-list).
    CutAndCompact,
    /// The LIST of one namespace's tenants becomes slow, then the leader is killed (the new
    /// leader's caches fill one namespace at a time).
    SlowListThenKill,
}

const FAULTS: [Fault; 5] = [
    Fault::KillLeader,
    Fault::PartitionLeader,
    Fault::StallWatches,
    Fault::CutAndCompact,
    Fault::SlowListThenKill,
];

/// Settings of one chaos run.
pub struct ChaosPlan {
    pub seed: u64,
    pub faults: usize,
    /// Wall-time budget of the whole run, set-up included.
    pub budget: Duration,
    pub namespaces: Vec<&'static str>,
    pub per_namespace: usize,
    /// Gap between faults (ms).
    pub gap_ms: (u64, u64),
    /// The rollout's maxUnavailable (smaller: more steps, a longer rollout under faults).
    pub max_unavailable: u32,
}

/// Keep two replicas running: replace the ones that exited (lost leadership) or were killed.
fn top_up(c: &mut Cluster, partitioned: &[(String, Instant)]) {
    let running: Vec<String> = c
        .running()
        .into_iter()
        .filter(|id| !partitioned.iter().any(|(p, _)| p == id))
        .collect();
    for _ in running.len()..2 {
        c.start();
    }
}

/// Run the schedule; panics (after printing the seed) on a violated invariant or an unfinished
/// rollout.
pub fn run(plan: &ChaosPlan) {
    eprintln!(
        "chaos: seed {} ({} faults, budget {:?}); replay with CHAOS_SEED={}",
        plan.seed, plan.faults, plan.budget, plan.seed
    );
    let t0 = Instant::now();
    let mut rng = Rng::new(plan.seed);
    let mut c = Cluster::new(&plan.namespaces);
    c.note(format!("chaos seed {}", plan.seed));
    c.add_tenants(plan.per_namespace);
    c.start();
    c.start();
    c.wait_leader(None, Duration::from_secs(20));
    c.wait_tenants_ready(OLD, Duration::from_secs(40));
    let spec = three_waves(plan.max_unavailable, 1, 120);
    c.create_rollout("fleet", spec);
    c.note("rollout created");

    let mut partitioned: Vec<(String, Instant)> = Vec::new();
    let mut were_partitioned: Vec<String> = Vec::new();
    let mut injected = Vec::new();
    for k in 0..plan.faults {
        std::thread::sleep(rng.millis(plan.gap_ms.0, plan.gap_ms.1));
        // Heal partitions that are due; their processes must have stepped down by now.
        let now = Instant::now();
        for (id, _) in partitioned.iter().filter(|(_, at)| *at <= now) {
            c.api.heal(id);
        }
        let healed: Vec<String> = partitioned
            .iter()
            .filter(|(_, at)| *at <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &healed {
            c.note(format!("healed {id}"));
        }
        partitioned.retain(|(_, at)| *at > now);
        top_up(&mut c, &partitioned);
        if c.phase("fleet").as_deref() == Some("Completed") {
            c.note(format!("rollout completed after {k} faults; no more faults"));
            break;
        }
        let fault = *rng.pick(&FAULTS);
        // Mid-failover: give the standby its takeover time first.
        let _ = wait_for(c.timing.failover_bound(), || {
            c.holder().is_some_and(|h| c.running().contains(&h))
        });
        let leader = c.holder().filter(|h| c.running().contains(h));
        let Some(leader) = leader else {
            // Mid-failover: a cut is the one fault that needs no leader.
            c.note(format!("fault {k}: no live leader; cut watches + compact"));
            c.api.cut_watches();
            c.api.compact();
            injected.push(Fault::CutAndCompact);
            continue;
        };
        c.note(format!("fault {k}: {fault:?} (leader {leader})"));
        injected.push(fault);
        match fault {
            Fault::KillLeader => {
                c.kill(&leader);
                c.start();
            }
            Fault::PartitionLeader => {
                c.api.partition(&leader);
                let heal_in = rng.millis(
                    (c.timing.lease + c.timing.renew) * 1000,
                    (c.timing.lease + c.timing.renew + 3) * 1000,
                );
                were_partitioned.push(leader.clone());
                partitioned.push((leader, Instant::now() + heal_in));
            }
            Fault::StallWatches => c.api.stall_watches(Some(&leader)),
            Fault::CutAndCompact => {
                c.api.cut_watches();
                c.api.compact();
            }
            Fault::SlowListThenKill => {
                let ns = *rng.pick(&plan.namespaces);
                c.api.delay_requests(
                    &format!("/namespaces/{ns}/lumenoreconnectors"),
                    rng.millis(1500, 3000),
                    2,
                );
                c.kill(&leader);
                c.start();
            }
        }
    }
    for (id, _) in partitioned.drain(..) {
        c.api.heal(&id);
        c.note(format!("healed {id}"));
    }
    top_up(&mut c, &partitioned);
    let left = plan
        .budget
        .saturating_sub(t0.elapsed())
        .max(Duration::from_secs(20));
    c.note(format!(
        "faults done ({injected:?}); waiting up to {left:?} for completion"
    ));
    c.wait_completed("fleet", left);
    // A leader that lost the Lease in a partition steps down: its process exits.
    let stuck: Vec<String> = were_partitioned
        .iter()
        .filter(|id| c.proc(id).is_some_and(|p| p.alive()))
        .cloned()
        .collect();
    if !stuck.is_empty() {
        c.checker.violation(format!(
            "(e) leaders partitioned away are still running after the heal (did not step down): {stuck:?}"
        ));
    }
    c.check_whole_fleet_decisions(plan.namespaces.len() * plan.per_namespace);
    c.check_no_ghosts(Some("fleet"));
    c.note(format!(
        "completed in {:?}; {} writes judged; at most {} tenants unready at once",
        t0.elapsed(),
        c.checker.writes_seen(),
        c.checker.max_unready()
    ));
    c.assert_invariants();
    assert!(
        t0.elapsed() <= plan.budget + Duration::from_secs(30),
        "chaos seed {}: took {:?}, budget {:?}",
        plan.seed,
        t0.elapsed(),
        plan.budget
    );
}
