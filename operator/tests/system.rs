//! System tests: the real `lumenore-operator` binary, as processes (two replicas with leader
//! election), against the in-memory API server over loopback HTTP, with a simulated Deployment
//! controller. Every write the API server accepts is judged by the invariants of
//! `system_support::checker` as it lands ((a) no new image before the wave is admitted, (b) at most
//! maxUnavailable unready on the new image, (c) rollout progress never backwards, (d) no downgrade
//! outside a rollback, (e) only the unexpired Lease holder writes); (f) no deleted tenant counted
//! at the end; (g) no rollout decision on a partial fleet, where the fleet does not change. Each
//! scenario is named after the defect it covers and bounded in wall time. `LUMENORE_OPERATOR_BIN`
//! runs them against another build of the binary.
//!
//! Run one at a time (they start processes):
//! `cargo test -p lumenore-operator --test system -- --test-threads=1`.

/// Of the shared fixtures, the fake API server (it evaluates the CRDs' CEL rules on writes).
mod common {
    #[path = "fake_api.rs"]
    pub mod fake_api;
}
mod system_support;

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use lumenore_operator::crd::LumenoreConnector;
use lumenore_operator::rollout::LumenoreFleetRollout;
use lumenore_operator::rollout::crd::Verdict;
use lumenore_operator::rollout::plan;
use serde_json::json;
use system_support::chaos::{self, ChaosPlan};
use system_support::cluster::*;
use system_support::rng::seed_from_env;

const NS3: [&str; 3] = ["ns-a", "ns-b", "ns-c"];

/// A cluster with `per_ns` tenants in each of `namespaces`, `replicas` operators started, a leader
/// elected and every tenant Ready on the old image.
fn fleet(namespaces: &[&str], per_ns: usize, replicas: usize) -> Cluster {
    let mut c = Cluster::new(namespaces);
    c.add_tenants(per_ns);
    for _ in 0..replicas {
        c.start();
    }
    let leader = c.wait_leader(None, Duration::from_secs(20));
    c.note(format!("leader {leader}"));
    let d = c.wait_tenants_ready(OLD, Duration::from_secs(40));
    c.note(format!("every tenant Ready on {OLD} after {d:?}"));
    c
}

/// Wait until rollout `name` is in the middle of wave `wave` (some of its tenants admitted, not
/// all), Progressing.
fn wait_mid_wave(c: &Cluster, name: &str, wave: u32, timeout: Duration) {
    let admit_all = plan::format_partition(plan::ADMIT_ALL);
    if wait_for(timeout, || {
        c.progress(name).is_some_and(|(phase, w, p)| {
            phase == "Progressing" && w == wave && p != plan::format_partition(0) && p != admit_all
        })
    })
    .is_err()
    {
        panic!(
            "rollout never reached the middle of wave {wave}: {}",
            c.describe(name)
        );
    }
}

/// Defect: a restarted operator (or a new leader) decided on a fleet its caches had only partly
/// listed (namespaces filling one at a time): waves looked empty or done and were finished early.
/// The leader is SIGKILLed at every step of a 3-wave rollout of 60 tenants in 3 namespaces, the
/// LumenoreConnector LIST of one namespace slowed down for each new process.
#[test]
fn rollout_survives_a_kill_at_every_step() {
    let t0 = Instant::now();
    let mut c = fleet(&NS3, 20, 2);
    let spec = three_waves(5, 1, 120);
    c.create_rollout("fleet", spec);
    c.note("rollout created");
    let mut last: Option<(u32, String)> = None;
    let mut kills = 0;
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        assert!(
            Instant::now() < deadline,
            "rollout did not complete within 240 s of kills: {}",
            c.describe("fleet")
        );
        let Some((phase, wave, partition)) = c.progress("fleet") else {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        };
        if phase == "Completed" {
            break;
        }
        assert!(
            phase == "Progressing",
            "rollout left Progressing: {}",
            c.describe("fleet")
        );
        let step = (wave, partition);
        if last.as_ref() != Some(&step) {
            last = Some(step.clone());
            // The slow namespace for the next process's caches.
            let slow = NS3[kills % NS3.len()];
            c.api.delay_requests(
                &format!("/namespaces/{slow}/lumenoreconnectors"),
                Duration::from_millis(2500),
                1,
            );
            let killed = c.kill_leader();
            kills += 1;
            c.note(format!(
                "step wave {} partition {}: killed leader {killed} (kill {kills}); {slow} lists slowly",
                step.0, step.1
            ));
            c.start();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    c.wait_completed("fleet", Duration::from_secs(60));
    c.note(format!("completed after {kills} kills in {:?}", t0.elapsed()));
    assert!(kills >= 3, "expected a kill at every step, got {kills}");
    c.check_whole_fleet_decisions(60);
    c.check_no_ghosts(Some("fleet"));
    c.assert_invariants();
}

/// Defect: a standby did not take over from a leader that vanished without releasing the Lease, or
/// took longer than lease duration + renew deadline + a retry period.
#[test]
fn leader_killed_mid_wave_fails_over() {
    let mut c = fleet(&["ns-a", "ns-b"], 10, 2);
    c.create_rollout("fleet", three_waves(2, 1, 120));
    wait_mid_wave(&c, "fleet", 1, Duration::from_secs(60));
    let killed_at = Instant::now();
    let old = c.kill_leader();
    let new = c.wait_leader(Some(&old), Duration::from_secs(30));
    let took = c
        .checker
        .takeovers()
        .iter()
        .find(|t| t.at >= killed_at && t.to.as_deref() == Some(new.as_str()))
        .map(|t| t.at - killed_at)
        .expect("the takeover was written");
    let bound = c.timing.failover_bound();
    c.note(format!("failover {old} -> {new} in {took:?} (bound {bound:?})"));
    eprintln!("measured failover: {took:?} (bound {bound:?})");
    assert!(
        took <= bound,
        "failover took {took:?}, more than lease duration + renew deadline + retry period = {bound:?}"
    );
    c.wait_completed("fleet", Duration::from_secs(90));
    c.check_no_ghosts(Some("fleet"));
    c.assert_invariants();
}

/// Defect: a leader cut off from the API server (its requests hang) kept writing after another
/// replica took over, or wrote again once the partition healed (a zombie leader): invariant (e).
#[test]
fn leader_partitioned_mid_wave_writes_nothing_after_losing() {
    let mut c = fleet(&["ns-a", "ns-b"], 10, 2);
    c.create_rollout("fleet", three_waves(2, 1, 120));
    wait_mid_wave(&c, "fleet", 1, Duration::from_secs(60));
    let old = c.wait_leader(None, Duration::from_secs(5));
    let cut_at = Instant::now();
    c.api.partition(&old);
    c.note(format!("partitioned leader {old}"));
    let new = c.wait_leader(Some(&old), Duration::from_secs(30));
    let takeover = c
        .checker
        .takeovers()
        .iter()
        .find(|t| t.at >= cut_at && t.to.as_deref() == Some(new.as_str()))
        .map(|t| t.at)
        .expect("the takeover was written");
    c.note(format!(
        "{new} took over {:?} after the partition",
        takeover - cut_at
    ));
    // Past the takeover for a while, then heal: the old leader must have stepped down (exited).
    std::thread::sleep(Duration::from_secs(2));
    let healed_at = Instant::now();
    c.api.heal(&old);
    c.note(format!("healed {old}"));
    std::thread::sleep(Duration::from_secs(4));
    let late: Vec<String> = c
        .checker
        .writes_by(&old)
        .into_iter()
        .filter(|(at, _)| *at >= takeover)
        .map(|(at, w)| {
            let when = if at >= healed_at {
                "after the heal"
            } else {
                "before the heal"
            };
            format!("{w} ({when})")
        })
        .collect();
    assert!(
        late.is_empty(),
        "(e) the partitioned leader {old} wrote after {new} took over: {late:?}"
    );
    let exited = wait_for(Duration::from_secs(6), || {
        c.proc(&old).is_some_and(|p| !p.alive())
    });
    assert!(
        exited.is_ok(),
        "the partitioned leader {old} is still running 10 s after the heal: it did not step down"
    );
    c.wait_completed("fleet", Duration::from_secs(90));
    c.check_no_ghosts(Some("fleet"));
    c.assert_invariants();
}

/// Defect: a watch stream that goes silent without closing (a stuck proxy, a half-open connection)
/// froze the operator's caches forever: the rollout waited on tenant statuses it never saw. With
/// `--watch-timeout-seconds 3` a silent watch is given up after 3 + 5 s, then re-listed.
#[test]
fn stalled_watch_recovers() {
    let mut c = fleet(&["ns-a", "ns-b"], 10, 2);
    assert!(
        binary_has_flag("--watch-timeout-seconds"),
        "the binary has no --watch-timeout-seconds flag"
    );
    c.create_rollout("fleet", three_waves(2, 1, 120));
    wait_mid_wave(&c, "fleet", 1, Duration::from_secs(60));
    let leader = c.wait_leader(None, Duration::from_secs(5));
    let stalled_at = Instant::now();
    c.api.stall_watches(Some(&leader));
    c.note(format!("stalled the watches of {leader}"));
    // A tenant created now reaches the operator only through a recovered watch.
    c.create_tenant(&tenant("ns-a", "probe", &[], |_| {}));
    let bound = Duration::from_secs(c.timing.watch_timeout + 5 + 4);
    let recovered = wait_for(Duration::from_secs(40), || {
        c.api.get_raw::<Deployment>("ns-a", "probe").is_some()
    });
    let took = match recovered {
        Ok(_) => stalled_at.elapsed(),
        Err(d) => panic!(
            "the stalled watch never recovered: no Deployment for ns-a/probe {d:?} after the stall (leader {:?})",
            c.holder()
        ),
    };
    c.note(format!(
        "cache recovered {took:?} after the stall (bound {bound:?})"
    ));
    eprintln!("measured stall recovery: {took:?} (bound {bound:?})");
    assert!(
        took <= bound,
        "the stalled watch took {took:?} to recover, more than watch timeout + 5 s + 4 s backoff = {bound:?}"
    );
    c.wait_completed("fleet", Duration::from_secs(90));
    c.check_no_ghosts(Some("fleet"));
    c.assert_invariants();
}

/// Defect: a rollout deleted and created again with the same spec (Argo CD `Replace=true`,
/// `kubectl replace --force`) starts with an empty status: every tenant already on the new image
/// was sent back to the old one, then upgraded again wave by wave. Invariant (d).
#[test]
fn rollout_recreated_does_not_downgrade() {
    let mut c = fleet(&["ns-a", "ns-b"], 10, 2);
    let spec = three_waves(2, 1, 120);
    c.create_rollout("fleet", spec.clone());
    wait_mid_wave(&c, "fleet", 1, Duration::from_secs(60));
    let on_new = 20 - c.not_on(NEW).len();
    c.delete_rollout("fleet");
    c.create_rollout("fleet", spec);
    c.note(format!(
        "rollout deleted and re-created mid-wave ({on_new} tenants on {NEW})"
    ));
    c.wait_completed("fleet", Duration::from_secs(90));
    c.check_no_ghosts(Some("fleet"));
    c.assert_invariants();
}

/// Defect: the same rollout applied under a new name after the old one was deleted (a GitOps
/// rename) started from an empty status: the completed fleet went back to `--connector-image`.
/// Invariant (d). Second defect, seen in 1 of 5 runs of the whole suite here: the new rollout got
/// no status for a minute, because kube-runtime's shared reflector loses the wake-up of a subscriber
/// whose object was deleted before it read it (`rollout::feed`, which replaced it).
#[test]
fn rollout_renamed_does_not_downgrade() {
    let mut c = fleet(&["ns-a", "ns-b"], 10, 2);
    let spec = three_waves(4, 1, 120);
    c.create_rollout("fleet-v1", spec.clone());
    c.wait_completed("fleet-v1", Duration::from_secs(60));
    c.delete_rollout("fleet-v1");
    c.create_rollout("fleet-v2", spec);
    c.note("completed rollout deleted and applied again as fleet-v2");
    c.wait_completed("fleet-v2", Duration::from_secs(60));
    // Some resyncs later, still nobody went back.
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        c.not_on(NEW).is_empty(),
        "tenants left {NEW}: {:?}",
        c.not_on(NEW)
    );
    c.check_no_ghosts(Some("fleet-v2"));
    c.assert_invariants();
}

/// Defect: the operator checked once, at start, whether the LumenoreFleetRollout CRD was
/// installed; installed later (the chart's CRD applied after the operator started), rollouts were
/// ignored until a restart.
#[test]
fn rollout_crd_installed_after_start() {
    let mut c = Cluster::new(&["ns-a"]);
    c.api.uninstall::<LumenoreFleetRollout>();
    c.add_tenants(8);
    let op = c.start();
    c.wait_leader(None, Duration::from_secs(20));
    c.wait_tenants_ready(OLD, Duration::from_secs(40));
    c.api.install::<LumenoreFleetRollout>();
    let installed_at = Instant::now();
    c.create_rollout("fleet", three_waves(4, 1, 120));
    c.note("CRD installed, rollout created");
    // The operator looks for the CRD again every 30 s; 10 s more for the first decision.
    let bound = Duration::from_secs(40);
    let acted = wait_for(bound, || c.phase("fleet").is_some());
    match acted {
        Ok(_) => c.note(format!(
            "rollout acted on {:?} after the CRD was installed",
            installed_at.elapsed()
        )),
        Err(_) => panic!(
            "a LumenoreFleetRollout created after its CRD was installed got no status within {bound:?}: the operator only looks for the CRD at start"
        ),
    }
    assert!(
        c.proc(&op).is_some_and(|p| p.alive()) && c.holder().as_deref() == Some(op.as_str()),
        "the operator restarted (or lost the lease) to pick up the CRD"
    );
    c.wait_completed("fleet", Duration::from_secs(60));
    c.check_no_ghosts(Some("fleet"));
    c.assert_invariants();
}

/// Defect: tenants deleted while the watch was down are not in the re-list that follows, and no
/// Delete event is ever delivered for them: the operator kept counting them in its metrics
/// (`lumenore_operator_connector_conditions`, `lumenore_operator_connectors`) forever.
/// Second defect, seen in 2 of 5 runs of the whole suite here: a reconcile still running when the
/// re-list forgot its tenant, whose status needed no write (so no 404 told of the deletion), counted it
/// again afterwards. State about a tenant is now kept only while its cache holds it, atomically with
/// the forgetting (`Context::while_cached`).
#[test]
fn tenants_deleted_during_a_relist_are_forgotten() {
    let mut c = fleet(&["ns-a", "ns-b"], 8, 1);
    let leader = c.wait_leader(None, Duration::from_secs(5));
    let live = c.tenant_keys().len() as i64;
    let counted = |c: &Cluster| {
        c.procs
            .iter()
            .find(|p| p.id == leader)
            .and_then(|p| p.metrics())
            .map(|m| {
                sum_series(
                    &m,
                    "lumenore_operator_connector_conditions",
                    "condition=\"Ready\"",
                )
            })
    };
    let settled = wait_for(Duration::from_secs(10), || counted(&c) == Some(live));
    assert!(
        settled.is_ok(),
        "before any fault, /metrics counts {:?} tenants, {live} exist",
        counted(&c)
    );
    c.api.stall_watches(Some(&leader));
    let gone = [("ns-a", "t-01"), ("ns-b", "t-02"), ("ns-b", "t-05")];
    for (ns, n) in gone {
        c.delete_tenant(ns, n);
    }
    c.api.collect_garbage();
    c.api.compact();
    c.api.cut_watches();
    c.note("watches stalled, 3 tenants deleted, compacted, watches cut");
    // Proof that the watch is back: a tenant created now is deployed.
    c.create_tenant(&tenant("ns-a", "probe", &[], |_| {}));
    must(
        "the re-listed watch to deliver ns-a/probe",
        Duration::from_secs(30),
        || c.api.get_raw::<Deployment>("ns-a", "probe").is_some(),
    );
    c.wait_tenants_ready(OLD, Duration::from_secs(20));
    let live = c.tenant_keys().len() as i64;
    let ok = wait_for(Duration::from_secs(5), || counted(&c) == Some(live));
    if ok.is_err() {
        c.checker.violation(format!(
            "(f) after the re-list /metrics lumenore_operator_connector_conditions{{condition=\"Ready\"}} counts {:?} tenants, {live} exist: the tenants deleted while the watch was down ({gone:?}) are still counted",
            counted(&c)
        ));
    }
    c.check_no_ghosts(None);
    c.assert_invariants();
}

/// Defect: a suspended tenant (0 replicas, Ready=False Suspended) or an HPA-managed one (no
/// spec.replicas) never counted as done, so the wave holding it stalled at its deadline.
#[test]
fn suspended_and_hpa_tenants_do_not_stall_a_wave() {
    let spec = json!({
        "image": NEW, "maxUnavailable": 3, "bakeSeconds": 1, "readyDeadlineSeconds": 15,
        "waves": [{"name": "first", "percent": 50}, {"name": "rest"}]
    });
    let names: Vec<(String, String)> = (0..12)
        .map(|i| ("ns-a".to_string(), format!("t-{i:02}")))
        .collect();
    let waves = waves_of(&spec, &names);
    let first: Vec<&String> = names
        .iter()
        .zip(&waves)
        .filter(|(_, w)| **w == 0)
        .map(|((_, n), _)| n)
        .collect();
    assert!(first.len() >= 2, "wave 0 has {} tenants", first.len());
    let (suspended, hpa) = (first[0].clone(), first[1].clone());
    let mut c = Cluster::new(&["ns-a"]);
    for (ns, n) in &names {
        c.create_tenant(&tenant(ns, n, &[], |s| {
            if *n == suspended {
                s["suspend"] = json!(true);
            }
            if *n == hpa {
                s.as_object_mut().unwrap().remove("replicas");
            }
        }));
    }
    c.start();
    c.wait_leader(None, Duration::from_secs(20));
    must("the HPA tenant's Deployment", Duration::from_secs(30), || {
        c.api.get_raw::<Deployment>("ns-a", &hpa).is_some()
    });
    // The HPA scales it to 2.
    c.scale("ns-a", &hpa, 2);
    c.note(format!(
        "suspended {suspended}, HPA-managed {hpa} (scaled to 2), both in wave 0"
    ));
    c.create_rollout("fleet", spec);
    let done = wait_for(Duration::from_secs(45), || {
        c.phase("fleet").as_deref() == Some("Completed") || c.phase("fleet").as_deref() == Some("Stalled")
    });
    assert!(
        done.is_ok() && c.phase("fleet").as_deref() == Some("Completed"),
        "the wave holding suspended {suspended} and HPA-managed {hpa} did not complete: {}",
        c.describe("fleet")
    );
    c.wait_completed("fleet", Duration::from_secs(10));
    c.assert_invariants();
}

/// Defect: suspending scaled the Deployment to 0 with the operator's field manager; on resume, with
/// spec.replicas unset (an HPA's), the hand-over kept the live count, 0, and an HPA never scales a
/// Deployment up from 0: the tenant stayed down.
#[test]
fn suspend_then_resume_with_an_hpa_scales_again() {
    let mut c = Cluster::new(&["ns-a"]);
    c.create_tenant(&tenant("ns-a", "auto", &[], |s| {
        s.as_object_mut().unwrap().remove("replicas");
    }));
    c.start();
    c.wait_leader(None, Duration::from_secs(20));
    c.wait_tenants_ready(OLD, Duration::from_secs(30));
    c.scale("ns-a", "auto", 3);
    let replicas = |c: &Cluster| {
        c.api
            .get_raw::<Deployment>("ns-a", "auto")
            .and_then(|d| d["spec"]["replicas"].as_i64())
    };
    c.patch_tenant("ns-a", "auto", json!({"spec": {"suspend": true}}));
    must(
        "the suspended Deployment at 0 replicas",
        Duration::from_secs(20),
        || replicas(&c) == Some(0),
    );
    c.note("suspended: 0 replicas");
    c.patch_tenant("ns-a", "auto", json!({"spec": {"suspend": false}}));
    let back = wait_for(Duration::from_secs(20), || replicas(&c).is_some_and(|r| r >= 1));
    assert!(
        back.is_ok(),
        "after resume the Deployment has spec.replicas {:?}: left at 0, where an HPA never scales it up",
        replicas(&c)
    );
    c.assert_invariants();
}

/// Issue 23, share mode: a tenant's rate limit divided among its ready pods. The real operator keeps the
/// ConfigMap `<name>-rate-limits` at the Deployment's ready replicas as an HPA scales it; a simulated
/// kubelet projects it into each real connector's mounted file (every 200 ms; a real kubelet takes up to
/// its sync period plus its ConfigMap cache TTL); each connector re-reads it (every 2 s) and admits its
/// share, ceil(60 / pods), its bucket as full as before the change, so the pods together admit the
/// tenant's 60 a minute, plus at most one share while a pod added lags.
#[test]
fn rate_limit_shares_follow_the_ready_replicas_into_each_connector() {
    use k8s_openapi::api::core::v1::ConfigMap;
    use lumenore_e2e::connector::connector_binary;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use system_support::connectors::{ConnectorProc, project};

    let binary = connector_binary();
    let mut c = Cluster::new(&["ns-a"]);
    c.create_tenant(&tenant("ns-a", "shared", &[], |s| {
        s.as_object_mut().unwrap().remove("replicas");
        s["rateLimits"] = json!({"tenantPerMinute": 60});
    }));
    c.start();
    c.wait_leader(None, Duration::from_secs(20));
    let api = c.api.clone();
    let shares = move || {
        api.get_raw::<ConfigMap>("ns-a", "shared-rate-limits")
            .and_then(|cm| cm["data"]["shares"].as_str().map(str::to_string))
    };
    must("the shares ConfigMap at 1", Duration::from_secs(30), || {
        shares().as_deref() == Some("1")
    });

    // The pods' mounted files, kept by the kubelet.
    let dir = std::env::temp_dir().join(format!("lumenore-shares-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let files: Vec<std::path::PathBuf> = (0..4).map(|i| dir.join(format!("pod-{i}"))).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let kubelet = {
        let (stop, files, shares) = (stop.clone(), files.clone(), shares.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if let Some(value) = shares() {
                    for file in &files {
                        if std::fs::read_to_string(file).ok().as_deref() != Some(value.as_str()) {
                            project(&value, file);
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };
    let limits = [("LUMENORE_RATE_LIMIT_TENANT_PER_MINUTE", "60")];
    // Each step: scale as an HPA does, then time the ConfigMap and every running connector to follow.
    let follow = |pods: &[ConnectorProc], to: i64, started: std::time::Instant| {
        must(
            &format!("the shares ConfigMap at {to}"),
            Duration::from_secs(30),
            || shares().as_deref() == Some(to.to_string().as_str()),
        );
        let operator = started.elapsed();
        must(
            &format!("every connector at {to} shares"),
            Duration::from_secs(30),
            || pods.iter().all(|p| p.shares() == Some(to)),
        );
        let admitted: Vec<usize> = pods.iter().map(|p| p.admitted_of(40)).collect();
        println!(
            "BENCH shares {to}: from the scale, the ConfigMap after {operator:?} and every connector after {:?} \
             (a started pod's start included); admitted of a quick 40 each: {admitted:?} (share {})",
            started.elapsed(),
            60u32.div_ceil(to as u32)
        );
        admitted
    };

    let scaled = std::time::Instant::now();
    c.scale("ns-a", "shared", 3);
    let mut pods: Vec<ConnectorProc> = Vec::new();
    must("the shares ConfigMap at 3", Duration::from_secs(30), || {
        shares().as_deref() == Some("3")
    });
    for file in files.iter().take(3) {
        pods.push(ConnectorProc::start(&binary, file.clone(), &limits));
    }
    let first_calls = std::time::Instant::now();
    let admitted = follow(&pods, 3, scaled);
    assert_eq!(admitted, vec![20, 20, 20], "three new pods, each ceil(60 / 3)");
    let mut total: usize = admitted.iter().sum();

    // Scaled in: a pod goes. The two left hold 30 each now, as full as their buckets of 20 were (empty):
    // a change adds no burst, so until they refill (60 a minute together) they admit almost nothing.
    let scaled = std::time::Instant::now();
    c.scale("ns-a", "shared", 2);
    pods.pop();
    let admitted = follow(&pods, 2, scaled);
    let refilled = 60.0 * first_calls.elapsed().as_secs_f64() / 60.0;
    assert!(
        admitted.iter().sum::<usize>() as f64 <= refilled + 2.0,
        "a change of the shares added a burst: {admitted:?} after {:?}",
        first_calls.elapsed()
    );
    total += admitted.iter().sum::<usize>();

    // Scaled out by one: the new pod may start on the old number (one share over until it follows).
    let scaled = std::time::Instant::now();
    c.scale("ns-a", "shared", 3);
    pods.push(ConnectorProc::start(&binary, files[3].clone(), &limits));
    let admitted = follow(&pods, 3, scaled);
    total += admitted.iter().sum::<usize>();

    // The bound of docs/auth.md over the whole run: the limit's burst and refill, one share of the old
    // number for the pod added, and rounding.
    let window = first_calls.elapsed().as_secs_f64();
    let bound = 60.0 * (1.0 + window / 60.0) + 30.0 + 3.0;
    println!(
        "BENCH shares over {window:.1} s: {total} admitted by every pod together (bound {bound:.1}; per pod without \
         shares it would have been up to {})",
        3 * 60 + 2 * 60 + 60
    );
    assert!(
        total as f64 <= bound,
        "{total} admitted in {window:.1} s, bound {bound:.1}"
    );

    // No rate left: the ConfigMap goes (pruned by its owner, the operator).
    c.patch_tenant("ns-a", "shared", json!({"spec": {"rateLimits": null}}));
    must("the shares ConfigMap pruned", Duration::from_secs(30), || {
        shares().is_none()
    });
    stop.store(true, Ordering::Relaxed);
    kubelet.join().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    c.assert_invariants();
}

/// Defect: a tenant stored before the CRD's name rule existed (`acme.eu`: a DNS subdomain, not a
/// DNS-1035 label) never got a status: every `/status` write is validated against the whole object
/// and the root name rule is never ratcheted, so the operator's status apply was refused (422).
/// The fake evaluates the CRDs' CEL rules on writes; its test helpers bypass them (an object stored
/// before the rule existed).
#[test]
fn status_write_on_object_stored_before_the_name_rule() {
    let mut c = Cluster::new(&["ns-a"]);
    // The admission is live: creating such a tenant now is refused.
    let (code, body) = c.http(
        "POST",
        "/apis/lumenore.io/v1alpha1/namespaces/ns-a/lumenoreconnectors",
        &serde_json::to_value(tenant("ns-a", "other.eu", &[], |_| {})).unwrap(),
    );
    assert_eq!(
        code, 422,
        "creating ns-a/other.eu must be refused by the name rule: {body}"
    );
    // Stored directly, bypassing admission (created before the rule).
    c.store_tenant(&tenant("ns-a", "acme.eu", &[], |_| {}));
    c.create_tenant(&tenant("ns-a", "plain", &[], |_| {}));
    c.start();
    c.wait_leader(None, Duration::from_secs(20));
    let status = |c: &Cluster, n: &str| {
        c.api
            .get::<LumenoreConnector>("ns-a", n)
            .and_then(|lc| lc.status)
            .filter(|s| !s.conditions.is_empty())
    };
    must("a status on ns-a/plain", Duration::from_secs(30), || {
        status(&c, "plain").is_some()
    });
    let got = wait_for(Duration::from_secs(15), || status(&c, "acme.eu").is_some());
    assert!(
        got.is_ok(),
        "ns-a/acme.eu (stored before the name rule) got no status: its /status writes are refused"
    );
    c.assert_invariants();
}

/// Defects of any of the above, combined: a seeded random schedule of leader kills, partitions,
/// watch stalls, watch cuts with compactions and slow LISTs over a rollout of 60 tenants.
/// `CHAOS_SEED` replays a schedule.
#[test]
fn chaos_schedule_seeded() {
    chaos::run(&ChaosPlan {
        seed: seed_from_env("CHAOS_SEED", 0x5EED_2026),
        faults: 12,
        budget: Duration::from_secs(120),
        namespaces: NS3.to_vec(),
        per_namespace: 20,
        gap_ms: (1000, 3500),
        max_unavailable: 5,
    });
}

/// The checker itself: each invariant is flagged on a synthetic write sequence (no processes).
#[test]
fn checker_flags_each_invariant() {
    use system_support::checker::{CheckConfig, Checker, Rec};
    let checker = Checker::new(CheckConfig {
        new_image: NEW.into(),
        lease_namespace: OPS.into(),
        lease_name: LEASE.into(),
        operator_prefix: OP_PREFIX.into(),
    });
    let mut seq = 0;
    let mut write = |identity: &str, plural: &str, ns: &str, name: &str, object: serde_json::Value| {
        seq += 1;
        checker.on_write(Rec {
            seq,
            identity: identity.into(),
            field_manager: "m".into(),
            method: "PATCH".into(),
            plural: plural.into(),
            namespace: ns.into(),
            name: name.into(),
            subresource: String::new(),
            code: 200,
            object: Some(object),
        });
    };
    let now = k8s_openapi::jiff::Timestamp::now();
    let lease = |holder: &str| {
        json!({"metadata": {"name": LEASE, "namespace": OPS, "resourceVersion": "1"},
               "spec": {"holderIdentity": holder, "renewTime": now.to_string(), "leaseDurationSeconds": 3}})
    };
    let deployment = |name: &str, image: &str, ready: bool| {
        json!({"metadata": {"name": name, "namespace": "ns-a", "generation": 2},
               "spec": {"replicas": 1, "template": {"spec": {"containers": [{"name": "connector", "image": image}]}}},
               "status": {"observedGeneration": if ready { 2 } else { 1 }, "readyReplicas": 1, "updatedReplicas": 1}})
    };
    let status = |wave: u32, partition: u128, max: u32| {
        json!({"metadata": {"name": "r", "namespace": OPS, "uid": "u1"},
               "spec": {"image": NEW, "maxUnavailable": max, "waves": [{"name": "w0", "percent": 100}, {"name": "w1"}]},
               "status": {"image": NEW, "previousImage": OLD, "currentWave": wave,
                          "partition": plan::format_partition(partition),
                          "waves": [{"name": "w0", "percent": 100}, {"name": "w1", "percent": 100}]}})
    };
    for n in ["a", "b"] {
        write(
            "",
            "lumenoreconnectors",
            "ns-a",
            n,
            json!({"metadata": {"name": n, "namespace": "ns-a"}}),
        );
    }
    write("op-1", "leases", OPS, LEASE, lease("op-1"));
    write("op-1", "deployments", "ns-a", "a", deployment("a", OLD, true));
    write("op-1", "deployments", "ns-a", "b", deployment("b", OLD, true));
    assert_eq!(checker.violations(), Vec::<String>::new(), "a clean start");
    // (e) a write by a replica the Lease does not name.
    write("op-2", "deployments", "ns-a", "b", deployment("b", OLD, true));
    // (a) the new image while the status admits nobody.
    write("op-1", "lumenorefleetrollouts", OPS, "r", status(0, 0, 1));
    write("op-1", "deployments", "ns-a", "a", deployment("a", NEW, true));
    // (b) two unready on the new image with maxUnavailable 1 (admitted: no (a)).
    write("op-1", "lumenorefleetrollouts", OPS, "r", status(1, 0, 1));
    write("op-1", "deployments", "ns-a", "a", deployment("a", NEW, false));
    write("op-1", "deployments", "ns-a", "b", deployment("b", NEW, false));
    // (c) back to wave 0; (d) back to the old image.
    write(
        "op-1",
        "lumenorefleetrollouts",
        OPS,
        "r",
        status(0, plan::ADMIT_ALL, 1),
    );
    write("op-1", "deployments", "ns-a", "b", deployment("b", OLD, true));
    let v = checker.violations();
    for tag in ["(e)", "(a)", "(b)", "(c)", "(d)"] {
        assert!(v.iter().any(|m| m.starts_with(tag)), "{tag} not flagged: {v:#?}");
    }
    assert_eq!(v.iter().filter(|m| m.starts_with("(e)")).count(), 1, "{v:#?}");
    assert_eq!(v.iter().filter(|m| m.starts_with("(a)")).count(), 1, "{v:#?}");
}

// ---- Fleet-rollout analysis (issue 22): a real Prometheus, real connectors, the real operator ----

mod analysed {
    use super::*;
    use k8s_openapi::ByteString;
    use k8s_openapi::api::core::v1::Secret;
    use lumenore_e2e::connector::connector_binary;
    use lumenore_e2e::fake_backend::{FakeConfig, Fault};
    use lumenore_operator::rollout::crd::{CheckStatus, LumenoreFleetRolloutStatus};
    use serde_json::Value;
    use system_support::fleet_analysis::*;

    pub const CANARIES: [&str; 2] = ["c-1", "c-2"];
    pub const REST: [&str; 3] = ["r-1", "r-2", "r-3"];

    /// Five tenants (two canaries), their connectors on the old backend with traffic, Prometheus
    /// scraping them, the operator leading.
    pub struct World {
        pub c: Cluster,
        pub prom: Prometheus,
        pub tenants: Tenants,
        pub backends: Backends,
    }

    pub fn world(new_version: impl FnOnce(&mut FakeConfig), canary_traffic: bool) -> World {
        let binary = connector_binary();
        let mut c = Cluster::new(&["ns-a"]);
        let mut targets = Vec::new();
        for name in CANARIES.iter().chain(&REST) {
            let canary = CANARIES.contains(name);
            let labels: &[(&str, &str)] = if canary { &[("ring", "canary")] } else { &[] };
            c.create_tenant(&tenant("ns-a", name, labels, |_| {}));
            targets.push(Target {
                namespace: "ns-a".into(),
                name: name.to_string(),
                tenant: name.to_string(),
                port: free_port(),
                traffic: !canary || canary_traffic,
            });
        }
        let mut secret = Secret::default();
        secret.metadata.name = Some("prom-auth".into());
        secret.metadata.namespace = Some(OPS.into());
        secret.metadata.labels =
            Some([("lumenore.io/fleet-analysis".to_string(), "true".to_string())].into());
        secret.data = Some(
            [
                ("username".to_string(), ByteString(PROM_USER.as_bytes().to_vec())),
                (
                    "password".to_string(),
                    ByteString(PROM_PASSWORD.as_bytes().to_vec()),
                ),
            ]
            .into(),
        );
        c.api.put(&secret);
        // Every log level: the privacy check in `finish` reads it all.
        c.rust_log = Some("trace,kube=debug,tower=info,h2=info".into());
        c.start();
        c.wait_leader(None, Duration::from_secs(20));
        c.wait_tenants_ready(OLD, Duration::from_secs(40));
        let backends = Backends::start(new_version);
        let tenants = Tenants::start(c.api.clone(), binary, &targets, &backends);
        let prom = Prometheus::start(&c.dir.join("prometheus"), &targets);
        must(
            "Prometheus scraping every connector",
            Duration::from_secs(30),
            || {
                prom.query("count(up{job=\"connectors\"} == 1)")
                    .and_then(|r| r.first().map(|s| s["value"][1] == "5"))
                    .unwrap_or(false)
            },
        );
        c.note(format!("Prometheus on {}, 5 connectors scraped", prom.url()));
        World {
            c,
            prom,
            tenants,
            backends,
        }
    }

    /// Two waves (the canaries, then the rest), analysed every 2 s over an 8 s bake.
    pub fn spec(prom: &Prometheus, analysis: Value) -> Value {
        let mut a = json!({
            "prometheus": {"url": prom.url(), "basicAuthSecretRef": {"name": "prom-auth"}, "timeoutSeconds": 3},
            "intervalSeconds": 2,
            "minCalls": 20,
            "maxExtensionSeconds": 6,
            "unavailableGraceSeconds": 4,
        });
        for (k, v) in analysis.as_object().unwrap() {
            a[k] = v.clone();
        }
        json!({
            "image": NEW,
            "maxUnavailable": 5,
            "bakeSeconds": 8,
            "readyDeadlineSeconds": 60,
            "waves": [{"name": "canary", "selector": {"matchLabels": {"ring": "canary"}}}, {"name": "rest"}],
            "analysis": a,
        })
    }

    pub fn status(c: &Cluster) -> LumenoreFleetRolloutStatus {
        c.rollout("r").and_then(|r| r.status).unwrap_or_default()
    }

    pub fn check(st: &LumenoreFleetRolloutStatus, name: &str) -> CheckStatus {
        st.analysis
            .as_ref()
            .and_then(|a| a.checks.iter().find(|c| c.name == name).cloned())
            .unwrap_or_else(|| panic!("no check {name} in {:?}", st.analysis))
    }

    pub fn condition(st: &LumenoreFleetRolloutStatus, t: &str) -> (String, String, String) {
        st.conditions
            .iter()
            .find(|c| c.type_ == t)
            .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
            .unwrap_or_default()
    }

    /// Event reasons published on the rollout.
    pub fn events(c: &Cluster) -> Vec<String> {
        c.api
            .events(OPS)
            .iter()
            .filter(|e| e["regarding"]["kind"] == "LumenoreFleetRollout")
            .filter_map(|e| e["reason"].as_str().map(str::to_string))
            .collect()
    }

    /// The later wave never left the old image.
    pub fn rest_untouched(c: &Cluster) {
        for name in REST {
            assert_eq!(c.image_of("ns-a", name).as_deref(), Some(OLD), "{name}");
        }
    }

    /// Wait for `phase`; the time it took.
    pub fn wait_phase(w: &World, phase: &str, timeout: Duration) -> Duration {
        match wait_for(timeout, || w.c.phase("r").as_deref() == Some(phase)) {
            Ok(d) => d,
            Err(d) => panic!(
                "rollout not {phase} after {d:?}: {}\nstatus: {:?}\nprometheus log tail: {}",
                w.c.describe("r"),
                status(&w.c),
                w.prom.log().lines().rev().take(5).collect::<Vec<_>>().join("\n")
            ),
        }
    }

    pub fn failing(cfg: &mut FakeConfig) {
        cfg.fail_every = Some((4, Fault::Status(422)));
    }

    pub fn finish(mut w: World) {
        let sent = w.tenants.calls.load(std::sync::atomic::Ordering::Relaxed);
        let ok = w.tenants.answered.load(std::sync::atomic::Ordering::Relaxed);
        w.c.note(format!("traffic: {sent} tool calls sent, {ok} answered 200"));
        // The query API's password (as is, and as the basic-auth header carries it) in no log line of
        // the operator, at the trace level the scenarios run it with.
        use base64::Engine as _;
        let header = base64::engine::general_purpose::STANDARD.encode(format!("{PROM_USER}:{PROM_PASSWORD}"));
        for p in &w.c.procs {
            let log = std::fs::read_to_string(&p.log).unwrap_or_default();
            assert!(log.contains("lumenore_operator"), "the operator's log was read");
            assert!(
                !log.contains(PROM_PASSWORD) && !log.contains(&header),
                "the password in the operator's log"
            );
        }
        w.c.assert_invariants();
        drop(w.tenants);
        drop(w.backends);
    }

    pub fn is_pass(c: &CheckStatus) -> bool {
        c.verdict == Verdict::Pass
    }
}

/// A healthy version: the canary wave's analysis passes over its bake (enough calls, the wave's
/// error ratio and p95/p99 latency within the baseline's limits) and the rollout completes.
#[test]
fn analysis_a_healthy_wave_advances_after_its_bake() {
    let w = analysed::world(|_| {}, true);
    w.c.create_rollout("r", analysed::spec(&w.prom, json!({})));
    let took = analysed::wait_phase(&w, "Completed", Duration::from_secs(120));
    let st = analysed::status(&w.c);
    let a = st.analysis.clone().unwrap();
    assert_eq!(
        (a.wave.as_str(), a.wave_tenants, a.baseline_tenants),
        ("canary", 2, 3)
    );
    for name in ["error-ratio", "latency-p95", "latency-p99"] {
        let c = analysed::check(&st, name);
        assert!(analysed::is_pass(&c), "{c:?}");
        assert!(
            c.wave_calls.unwrap() >= 20.0 && c.baseline_calls.unwrap() >= 20.0,
            "{c:?}"
        );
    }
    assert_eq!(analysed::check(&st, "error-ratio").wave, Some(0.0));
    must("the WaveCompleted Event", Duration::from_secs(10), || {
        analysed::events(&w.c).iter().any(|e| e == "WaveCompleted")
    });
    let ev = analysed::events(&w.c);
    assert!(!ev.iter().any(|e| e.starts_with("Analysis")), "{ev:?}");
    println!(
        "BENCH analysis healthy: completed {took:?} after the rollout was created (bake 8 s); the canary wave's last analysis over {} s",
        a.window_seconds
    );
    analysed::finish(w);
}

/// A version that fails one call in four: the canary wave halts (Stalled, AnalysisFailed) with the
/// wave's and the baseline's figures, an Event, and the rest of the fleet never leaves the old image.
#[test]
fn analysis_a_wave_with_raised_errors_halts_with_the_figures() {
    let w = analysed::world(analysed::failing, true);
    // 80 calls at least: a ratio over a few seconds of 1 s scrapes is noisy (each series is
    // extrapolated on its own).
    w.c.create_rollout("r", analysed::spec(&w.prom, json!({"minCalls": 80})));
    let took = analysed::wait_phase(&w, "Stalled", Duration::from_secs(90));
    let st = analysed::status(&w.c);
    let (stalled, reason, message) = analysed::condition(&st, "Stalled");
    assert_eq!(
        (stalled.as_str(), reason.as_str()),
        ("True", "AnalysisFailed"),
        "{message}"
    );
    let e = analysed::check(&st, "error-ratio");
    assert_eq!(e.verdict, Verdict::Fail, "{e:?}");
    // The stand-in fails one call in four: Prometheus' figure, through the operator, says so.
    let ratio = e.wave.unwrap();
    assert!((0.15..=0.35).contains(&ratio), "{e:?}");
    assert_eq!(e.baseline, Some(0.0), "{e:?}");
    assert!(message.contains("error-ratio Fail"), "{message}");
    // The Event follows the status write.
    must("the AnalysisFailed Event", Duration::from_secs(10), || {
        analysed::events(&w.c).iter().any(|r| r == "AnalysisFailed")
    });
    // Held: the rest stays on the old image.
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(w.c.phase("r").as_deref(), Some("Stalled"));
    analysed::rest_untouched(&w.c);
    println!(
        "BENCH analysis errors: halted {took:?} after the rollout was created; wave error ratio {ratio:.3} against 0"
    );
    analysed::finish(w);
}

/// A version 300 ms slower: the canary wave halts on latency while its error ratio passes.
#[test]
fn analysis_a_slower_wave_halts_on_latency() {
    let w = analysed::world(|cfg| cfg.delay = Duration::from_millis(300), true);
    w.c.create_rollout("r", analysed::spec(&w.prom, json!({})));
    analysed::wait_phase(&w, "Stalled", Duration::from_secs(90));
    let st = analysed::status(&w.c);
    assert_eq!(analysed::condition(&st, "Stalled").1, "AnalysisFailed");
    let p95 = analysed::check(&st, "latency-p95");
    assert_eq!(p95.verdict, Verdict::Fail, "{p95:?}");
    assert!(
        p95.wave.unwrap() >= 0.25 && p95.baseline.unwrap() < 0.1,
        "{p95:?}"
    );
    assert!(analysed::is_pass(&analysed::check(&st, "error-ratio")));
    analysed::rest_untouched(&w.c);
    println!(
        "BENCH analysis latency: p95 {:.3} s of the wave against {:.3} s of the baseline",
        p95.wave.unwrap(),
        p95.baseline.unwrap()
    );
    analysed::finish(w);
}

/// No traffic to the canaries: every check is inconclusive; the bake is extended by
/// maxExtensionSeconds, then `Halt` stalls (AnalysisInconclusive); switched to `Proceed`, the rollout
/// advances with a warning Event and completes.
#[test]
fn analysis_too_few_calls_extends_the_bake_then_follows_the_policy() {
    let w = analysed::world(|_| {}, false);
    let started = Instant::now();
    w.c.create_rollout("r", analysed::spec(&w.prom, json!({"onInconclusive": "Halt"})));
    let halted = analysed::wait_phase(&w, "Stalled", Duration::from_secs(90));
    let st = analysed::status(&w.c);
    assert_eq!(analysed::condition(&st, "Stalled").1, "AnalysisInconclusive");
    let e = analysed::check(&st, "error-ratio");
    assert!(
        e.verdict == Verdict::Inconclusive && e.wave_calls.unwrap_or(0.0) < 20.0,
        "{e:?}"
    );
    // Bake (8 s) and extension (6 s) both ran out before the halt.
    assert!(
        started.elapsed() >= Duration::from_secs(14),
        "{:?}",
        started.elapsed()
    );
    analysed::rest_untouched(&w.c);
    let (code, body) = request(
        &w.c.api,
        http::Method::PATCH,
        &format!("/apis/lumenore.io/v1alpha1/namespaces/{OPS}/lumenorefleetrollouts/r"),
        "kubectl-edit",
        &json!({"spec": {"analysis": {"onInconclusive": "Proceed"}}}),
    );
    assert_eq!(code, 200, "{body}");
    analysed::wait_phase(&w, "Completed", Duration::from_secs(90));
    must("the AnalysisInconclusive Event", Duration::from_secs(10), || {
        analysed::events(&w.c).iter().any(|r| r == "AnalysisInconclusive")
    });
    println!(
        "BENCH analysis inconclusive: halted {halted:?} after the rollout was created (bake 8 s + extension 6 s)"
    );
    analysed::finish(w);
}

/// autoRollback: the failing canary wave is rolled back at once: the canaries' Deployments return to
/// the old image, Ready stays False and Stalled True (AnalysisFailed), and nothing moves after.
#[test]
fn analysis_auto_rollback_restores_the_previous_image() {
    let w = analysed::world(analysed::failing, true);
    w.c.create_rollout("r", analysed::spec(&w.prom, json!({"autoRollback": true})));
    analysed::wait_phase(&w, "RolledBack", Duration::from_secs(90));
    let back = must(
        "the canaries back on the old image",
        Duration::from_secs(30),
        || {
            analysed::CANARIES
                .iter()
                .all(|n| w.c.image_of("ns-a", n).as_deref() == Some(OLD))
        },
    );
    let st = analysed::status(&w.c);
    assert_eq!(analysed::condition(&st, "Ready").0, "False");
    let (stalled, reason, _) = analysed::condition(&st, "Stalled");
    assert_eq!((stalled.as_str(), reason.as_str()), ("True", "AnalysisFailed"));
    assert_eq!(analysed::check(&st, "error-ratio").verdict, Verdict::Fail);
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(w.c.phase("r").as_deref(), Some("RolledBack"));
    analysed::rest_untouched(&w.c);
    for n in analysed::CANARIES {
        assert_eq!(w.c.image_of("ns-a", n).as_deref(), Some(OLD));
    }
    println!(
        "BENCH analysis auto rollback: canaries back on the old image {back:?} after the RolledBack phase"
    );
    analysed::finish(w);
}

/// Prometheus killed mid-bake: never a pass. The bake waits, then the rollout halts
/// (AnalysisUnavailable) after unavailableGraceSeconds, and no tenant of the next wave moves.
#[test]
fn analysis_prometheus_stopped_mid_bake_halts_never_advances() {
    let mut w = analysed::world(|_| {}, true);
    let mut spec = analysed::spec(&w.prom, json!({}));
    spec["bakeSeconds"] = json!(30);
    w.c.create_rollout("r", spec);
    must(
        "a first measured analysis of the canary wave",
        Duration::from_secs(60),
        || {
            analysed::status(&w.c)
                .analysis
                .is_some_and(|a| a.verdict.is_some())
        },
    );
    w.prom.stop();
    let stopped = Instant::now();
    analysed::wait_phase(&w, "Stalled", Duration::from_secs(60));
    let halted = stopped.elapsed();
    let st = analysed::status(&w.c);
    let (_, reason, message) = analysed::condition(&st, "Stalled");
    assert_eq!(reason, "AnalysisUnavailable", "{message}");
    assert!(message.contains("cannot connect to the query API"), "{message}");
    // Grace 4 s, one interval 2 s, query timeout 3 s: well before the 30 s bake could end.
    assert!(halted < Duration::from_secs(20), "{halted:?}");
    analysed::rest_untouched(&w.c);
    println!("BENCH analysis unavailable: halted {halted:?} after Prometheus was killed (grace 4 s)");
    analysed::finish(w);
}
