//! Fleet rollouts in waves, end to end against the in-memory API server: the tenant reconciler, the
//! rollout controller and a simulated Deployment controller, with operator restarts in between.

mod common;
mod rollout_support;

use common::fake_api::FakeApi;
use lumenore_operator::crd::LumenoreConnector;
use lumenore_operator::rollout::crd::Phase;
use lumenore_operator::rollout::plan::{Plan, TenantId};
use lumenore_operator::rollout::{LumenoreFleetRollout, LumenoreFleetRolloutSpec};
use rollout_support::*;
use serde_json::{Value, json};

const CANARIES: usize = 5;
const TOTAL: usize = 50;

fn waves_spec() -> Value {
    json!({
        "image": NEW,
        "maxUnavailable": 4,
        "bakeSeconds": 60,
        "readyDeadlineSeconds": 120,
        "waves": [
            {"name": "canary", "selector": {"matchLabels": {"lumenore.io/ring": "canary"}}},
            {"name": "early", "percent": 40},
            {"name": "rest"}
        ]
    })
}

fn name(i: usize) -> String {
    format!("t-{i:02}")
}

/// 50 tenants (5 canaries) plus 2 that pin their own image.
fn fleet_api() -> FakeApi {
    let api = FakeApi::quiet();
    for i in 0..TOTAL {
        let labels: &[(&str, &str)] = if i < CANARIES {
            &[("lumenore.io/ring", "canary")]
        } else {
            &[]
        };
        api.put(&tenant(&name(i), labels, None));
    }
    api.put(&tenant("pinned-a", &[], Some(PINNED)));
    api.put(&tenant(
        "pinned-b",
        &[("lumenore.io/ring", "canary")],
        Some(PINNED),
    ));
    api
}

/// Wave index of each of the 50 tenants, computed by the pure planner.
fn waves_of_tenants() -> Vec<usize> {
    let spec: LumenoreFleetRolloutSpec = serde_json::from_value(waves_spec()).unwrap();
    let plan = Plan::compile(&spec.waves).unwrap();
    (0..TOTAL)
        .map(|i| {
            let labels = if i < CANARIES {
                [("lumenore.io/ring".to_string(), "canary".to_string())].into()
            } else {
                Default::default()
            };
            plan.wave_of(&TenantId {
                namespace: TENANTS,
                name: &name(i),
                labels: &labels,
            })
            .expect("every tenant has a wave")
        })
        .collect()
}

fn images(api: &FakeApi) -> Vec<Option<String>> {
    (0..TOTAL).map(|i| deployment_image(api, &name(i))).collect()
}

fn cond(r: &LumenoreFleetRollout, t: &str) -> (String, String, String) {
    let c = r
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == t))
        .unwrap_or_else(|| panic!("condition {t} missing"));
    (c.status.clone(), c.reason.clone(), c.message.clone())
}

fn assert_pinned_untouched(api: &FakeApi) {
    for p in ["pinned-a", "pinned-b"] {
        assert_eq!(deployment_image(api, p).as_deref(), Some(PINNED), "{p}");
        let c = api
            .get::<LumenoreConnector>(TENANTS, p)
            .unwrap()
            .status
            .unwrap()
            .connector
            .unwrap();
        assert!(c.pinned && c.wave.is_none(), "{p}: {c:?}");
        assert_eq!(c.version.as_deref(), Some("0.0.9"));
    }
}

#[tokio::test]
async fn three_waves_stall_on_a_broken_tenant_resume_after_the_fix_and_survive_a_restart() {
    let api = fleet_api();
    let clock = Clock::new();
    let waves = waves_of_tenants();
    let in_wave = |w: usize| -> Vec<usize> { (0..TOTAL).filter(|i| waves[*i] == w).collect() };
    assert_eq!(in_wave(0).len(), CANARIES);
    assert!(in_wave(1).len() >= 8 && in_wave(2).len() >= 8, "{waves:?}");
    // The broken tenant: the last of wave 2 in rollout order (so wave 2 has Ready tenants before it).
    let broken_i = in_wave(1)
        .into_iter()
        .max_by_key(|i| lumenore_operator::rollout::plan::order_key(TENANTS, &name(*i)))
        .unwrap();
    let broken = vec![name(broken_i)];

    // Before any rollout: every tenant on the operator's default, reporting it.
    let mut op = Fleet::start(&api, &clock);
    op.reconcile_tenants().await;
    deployment_controller(&api, &broken);
    op.reconcile_tenants().await;
    assert!(images(&api).iter().all(|i| i.as_deref() == Some(OLD)));
    let st = api
        .get::<LumenoreConnector>(TENANTS, &name(7))
        .unwrap()
        .status
        .unwrap();
    assert_eq!(st.connector.as_ref().unwrap().version.as_deref(), Some("0.1.0"));

    api.put(&rollout("connector-0-2", waves_spec()));
    op.sync();

    // Run until wave 2 has admitted its first batch, then restart the operator.
    let mut ticks = 0;
    loop {
        op.tick(&clock, &broken, 10).await;
        ticks += 1;
        let st = op.rollout("connector-0-2").status.unwrap();
        if st.current_wave == Some(1)
            && images(&api)
                .iter()
                .enumerate()
                .any(|(i, img)| waves[i] == 1 && img.as_deref() == Some(NEW))
        {
            break;
        }
        assert!(ticks < 60, "wave 2 never started: {st:#?}");
    }
    let before = images(&api);
    let status_before = op.rollout("connector-0-2").status.unwrap();
    // Canary wave done, baked; wave 3 untouched.
    for i in in_wave(0) {
        assert_eq!(before[i].as_deref(), Some(NEW), "{}", name(i));
    }
    for i in in_wave(2) {
        assert_eq!(before[i].as_deref(), Some(OLD), "{}", name(i));
    }
    drop(op);

    // A new operator process: it knows only what the API says. Its first tenant pass changes nothing.
    let mut op = Fleet::start(&api, &clock);
    op.reconcile_tenants().await;
    assert_eq!(images(&api), before, "a restarted operator moved tenants");
    op.reconcile_rollouts().await;
    let status_after = op.rollout("connector-0-2").status.unwrap();
    assert_eq!(status_after.current_wave, status_before.current_wave);
    assert_eq!(status_after.previous_image.as_deref(), Some(OLD));

    // Continue: the broken tenant stops the rollout in wave 2.
    loop {
        op.tick(&clock, &broken, 10).await;
        ticks += 1;
        let st = op.rollout("connector-0-2").status.unwrap();
        if st.phase == Some(Phase::Stalled) {
            break;
        }
        assert!(ticks < 120, "never stalled: {st:#?}");
    }
    let r = op.rollout("connector-0-2");
    let st = r.status.clone().unwrap();
    assert_eq!(st.current_wave_name.as_deref(), Some("early"));
    assert_eq!(st.failed_count, Some(1));
    assert_eq!(st.failed_tenants[0].tenant, format!("{TENANTS}/{}", broken[0]));
    assert_eq!(st.failed_tenants[0].wave, "early");
    assert_eq!(st.failed_tenants[0].reason, "ProgressDeadlineExceeded");
    let (stalled, reason, msg) = cond(&r, "Stalled");
    assert_eq!((stalled.as_str(), reason.as_str()), ("True", "TenantNotReady"));
    assert!(
        msg.contains(&broken[0]) && msg.contains("later waves untouched"),
        "{msg}"
    );
    assert_eq!(cond(&r, "Ready").0, "False");
    assert_eq!(cond(&r, "Reconciling").0, "False");
    assert_eq!(st.observed_generation, r.metadata.generation);
    let imgs = images(&api);
    for i in in_wave(2) {
        assert_eq!(imgs[i].as_deref(), Some(OLD), "wave 3 tenant {} touched", name(i));
        let c = api
            .get::<LumenoreConnector>(TENANTS, &name(i))
            .unwrap()
            .status
            .unwrap()
            .connector
            .unwrap();
        assert_eq!(c.wave.as_deref(), Some("rest"));
    }
    let evs = events(&api, OPS);
    let reasons: Vec<&str> = evs.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(
        reasons,
        vec![
            "RolloutStarted",
            "WaveStarted",
            "RolloutProgressing",
            "WaveCompleted",
            "WaveStarted",
            "RolloutStalled"
        ],
        "{evs:#?}"
    );
    let stalled_event = evs.last().unwrap();
    assert_eq!(stalled_event.1, "Warning");
    assert!(stalled_event.2.contains(&broken[0]), "{stalled_event:?}");
    assert_pinned_untouched(&api);

    // The stall holds while time passes, even across another restart.
    drop(op);
    let mut op = Fleet::start(&api, &clock);
    for _ in 0..3 {
        op.tick(&clock, &broken, 60).await;
    }
    assert_eq!(
        op.rollout("connector-0-2").status.unwrap().phase,
        Some(Phase::Stalled)
    );
    assert_eq!(images(&api), imgs);

    // Fix the tenant (its pods become Ready), then a person resumes.
    let fixed: Vec<String> = Vec::new();
    deployment_controller(&api, &fixed);
    op.reconcile_tenants().await;
    api.edit::<LumenoreFleetRollout>(OPS, "connector-0-2", |r| {
        r["metadata"]["annotations"] = json!({"lumenore.io/resume": "fixed-db-migration"});
    });
    loop {
        op.tick(&clock, &fixed, 10).await;
        ticks += 1;
        let st = op.rollout("connector-0-2").status.unwrap();
        if st.phase == Some(Phase::Completed) && st.fleet.updated == TOTAL as u32 {
            break;
        }
        assert!(ticks < 250, "never completed: {st:#?}");
    }
    assert!(images(&api).iter().all(|i| i.as_deref() == Some(NEW)));
    let r = op.rollout("connector-0-2");
    assert_eq!(cond(&r, "Ready").0, "True");
    assert_eq!(cond(&r, "Stalled").0, "False");
    let st = r.status.unwrap();
    assert_eq!(st.fleet.pinned, 2);
    assert_eq!(st.last_handled_resume.as_deref(), Some("fixed-db-migration"));
    assert!(st.failed_tenants.is_empty());
    let reasons: Vec<String> = events(&api, OPS).into_iter().map(|e| e.0).collect();
    assert!(
        reasons.ends_with(&[
            "RolloutResumed".into(),
            "RolloutProgressing".into(),
            "WaveCompleted".into(),
            "WaveStarted".into(),
            "WaveCompleted".into(),
            "RolloutCompleted".into()
        ]),
        "{reasons:?}"
    );
    assert_pinned_untouched(&api);

    // Metrics: tenants per version, and the phase.
    op.reconcile_rollouts().await;
    let m = &op.ctx.metrics;
    assert_eq!(m.fleet.tenants_on("0.2.0"), TOTAL as i64);
    assert_eq!(m.fleet.tenants_on("0.0.9"), 2);
    assert_eq!(m.fleet.phase_value(Phase::Completed), 1);
    assert_eq!(m.fleet.phase_value(Phase::Stalled), 0);
    let text = m.encode();
    assert!(
        text.contains("lumenore_operator_fleet_tenants{version=\"0.2.0\"} 50"),
        "{text}"
    );
    assert!(
        text.contains("lumenore_operator_fleet_rollout_phase{phase=\"Completed\"} 1"),
        "{text}"
    );
}

#[tokio::test]
async fn rollback_restores_the_previous_image_everywhere_it_was_changed() {
    let api = fleet_api();
    let clock = Clock::new();
    let waves = waves_of_tenants();
    let mut op = Fleet::start(&api, &clock);
    op.reconcile_tenants().await;
    deployment_controller(&api, &[]);
    op.reconcile_tenants().await;
    api.put(&rollout("connector-0-2", waves_spec()));
    let mut ticks = 0;
    while !images(&api)
        .iter()
        .enumerate()
        .any(|(i, img)| waves[i] == 1 && img.as_deref() == Some(NEW))
    {
        op.tick(&clock, &[], 10).await;
        ticks += 1;
        assert!(ticks < 60);
    }
    let changed: Vec<usize> = images(&api)
        .iter()
        .enumerate()
        .filter(|(_, i)| i.as_deref() == Some(NEW))
        .map(|(i, _)| i)
        .collect();
    assert!(changed.len() > CANARIES && changed.len() < TOTAL, "{changed:?}");

    api.edit::<LumenoreFleetRollout>(OPS, "connector-0-2", |r| {
        r["spec"]["rollback"] = json!(true);
    });
    op.tick(&clock, &[], 10).await;
    let r = op.rollout("connector-0-2");
    assert_eq!(r.status.as_ref().unwrap().phase, Some(Phase::RolledBack));
    assert!(
        images(&api).iter().all(|i| i.as_deref() == Some(OLD)),
        "every changed tenant back on {OLD}"
    );
    op.tick(&clock, &[], 10).await;
    let r = op.rollout("connector-0-2");
    assert_eq!(
        cond(&r, "Ready"),
        (
            "True".into(),
            "RolledBack".into(),
            format!("rolled back to {OLD}: {TOTAL} of {TOTAL} tenants run it and are Ready")
        )
    );
    assert_eq!(cond(&r, "Reconciling").0, "False");
    for i in changed {
        let c = api
            .get::<LumenoreConnector>(TENANTS, &name(i))
            .unwrap()
            .status
            .unwrap()
            .connector
            .unwrap();
        assert_eq!(c.image.as_deref(), Some(OLD), "{}", name(i));
    }
    let evs = events(&api, OPS);
    let rb = evs
        .iter()
        .find(|e| e.0 == "RolledBack")
        .expect("RolledBack event");
    assert_eq!(rb.1, "Warning");
    assert_pinned_untouched(&api);

    // A restart does not undo the rollback.
    drop(op);
    let mut op = Fleet::start(&api, &clock);
    op.tick(&clock, &[], 10).await;
    assert!(images(&api).iter().all(|i| i.as_deref() == Some(OLD)));
}

#[tokio::test]
async fn skipping_a_failed_tenant_lets_the_rollout_continue_without_it() {
    let api = fleet_api();
    let clock = Clock::new();
    let waves = waves_of_tenants();
    let broken = vec![name((0..TOTAL).find(|i| waves[*i] == 0).unwrap())];
    let mut op = Fleet::start(&api, &clock);
    api.put(&rollout("connector-0-2", waves_spec()));
    let mut ticks = 0;
    while op.rollout_phase() != Some(Phase::Stalled) {
        op.tick(&clock, &broken, 30).await;
        ticks += 1;
        assert!(ticks < 40);
    }
    api.edit::<LumenoreFleetRollout>(OPS, "connector-0-2", |r| {
        r["spec"]["skipTenants"] = json!([format!("{TENANTS}/{}", broken[0])]);
    });
    while op.rollout_phase() != Some(Phase::Completed) {
        op.tick(&clock, &broken, 30).await;
        ticks += 1;
        assert!(ticks < 200);
    }
    let imgs = images(&api);
    for (i, img) in imgs.iter().enumerate() {
        let want = if name(i) == broken[0] { OLD } else { NEW };
        assert_eq!(img.as_deref(), Some(want), "{}", name(i));
    }
    assert_eq!(op.rollout("connector-0-2").status.unwrap().fleet.skipped, 1);
}

trait Phased {
    fn rollout_phase(&self) -> Option<Phase>;
}
impl Phased for Fleet {
    fn rollout_phase(&self) -> Option<Phase> {
        self.rollout("connector-0-2").status.and_then(|s| s.phase)
    }
}

/// Each bad rollout: phase Invalid, a Stalled condition naming the field and the rule, a Warning
/// Event, and no tenant touched.
#[tokio::test]
async fn bad_input_is_reported_and_nothing_is_applied() {
    let mut overlapping = waves_spec();
    overlapping["waves"] = json!([
        {"name": "canary", "selector": {"matchLabels": {"lumenore.io/ring": "canary"}}},
        {"name": "eu", "selector": {"matchExpressions": [{"key": "lumenore.io/ring", "operator": "Exists"}]}},
        {"name": "rest"}
    ]);
    let mut empty = waves_spec();
    empty["waves"][0]["selector"] = json!({"matchLabels": {"lumenore.io/ring": "nobody"}});
    let mut bad_image = waves_spec();
    bad_image["image"] = json!("ghcr.io/Lumenore/connector:0.2.0");
    let mut untagged = waves_spec();
    untagged["image"] = json!("ghcr.io/lumenore/lumenore-connector");
    let cases = [
        (
            overlapping,
            "spec.waves[1].selector overlaps spec.waves[0].selector: tenant tenants/",
            "rule: waves must not overlap",
        ),
        (
            empty,
            "spec.waves[0].selector matches no LumenoreConnector",
            "rule: every wave selector must match at least one tenant",
        ),
        (
            bad_image,
            "spec.image \"ghcr.io/Lumenore/connector:0.2.0\" does not match the image reference grammar",
            "path components are lowercase",
        ),
        (
            untagged,
            "spec.image \"ghcr.io/lumenore/lumenore-connector\" names no tag or digest",
            "rule: a rollout target must name a tag or a digest",
        ),
    ];
    for (spec, starts, rule) in cases {
        let api = fleet_api();
        let clock = Clock::new();
        let mut op = Fleet::start(&api, &clock);
        api.put(&rollout("bad", spec));
        op.tick(&clock, &[], 10).await;
        op.tick(&clock, &[], 10).await;
        let r = op.rollout("bad");
        let st = r.status.clone().unwrap();
        assert_eq!(st.phase, Some(Phase::Invalid));
        assert!(st.image.is_none(), "a plan was accepted: {st:#?}");
        let (s, reason, msg) = cond(&r, "Stalled");
        assert_eq!((s.as_str(), reason.as_str()), ("True", "InvalidSpec"));
        assert!(
            msg.starts_with(starts) && msg.contains(rule) && msg.ends_with("nothing was applied"),
            "{msg}"
        );
        assert!(images(&api).iter().all(|i| i.as_deref() == Some(OLD)));
        let evs = events(&api, OPS);
        assert_eq!(evs.len(), 1, "one Event, not one per reconcile: {evs:?}");
        assert_eq!(
            (evs[0].0.as_str(), evs[0].1.as_str()),
            ("InvalidRollout", "Warning")
        );
    }

    // Two rollouts at once: the oldest governs, the other is refused and applies nothing.
    let api = fleet_api();
    let clock = Clock::new();
    let mut op = Fleet::start(&api, &clock);
    api.put(&rollout("a-first", waves_spec()));
    let mut other = waves_spec();
    other["image"] = json!("ghcr.io/lumenore/lumenore-connector:9.9.9");
    api.put(&rollout("b-second", other));
    for _ in 0..3 {
        op.tick(&clock, &[], 10).await;
    }
    let second = op.rollout("b-second");
    let (s, reason, msg) = cond(&second, "Stalled");
    assert_eq!((s.as_str(), reason.as_str()), ("True", "ConflictingRollout"));
    assert!(
        msg.contains("lumenore-system/a-first") && msg.contains("rule: one rollout at a time"),
        "{msg}"
    );
    assert_eq!(
        op.rollout("a-first").status.unwrap().phase,
        Some(Phase::Progressing)
    );
    assert!(
        images(&api)
            .iter()
            .all(|i| i.as_deref() != Some("ghcr.io/lumenore/lumenore-connector:9.9.9"))
    );
}

/// A broken edit of an accepted rollout changes nothing: the tenants keep following the accepted plan.
#[tokio::test]
async fn a_broken_edit_mid_rollout_keeps_the_accepted_plan() {
    let api = fleet_api();
    let clock = Clock::new();
    let mut op = Fleet::start(&api, &clock);
    api.put(&rollout("connector-0-2", waves_spec()));
    for _ in 0..3 {
        op.tick(&clock, &[], 10).await;
    }
    let before = images(&api);
    let accepted = op.rollout("connector-0-2").status.unwrap();
    api.edit::<LumenoreFleetRollout>(OPS, "connector-0-2", |r| {
        r["spec"]["image"] = json!("not an image");
    });
    for _ in 0..3 {
        op.tick(&clock, &[], 100).await;
    }
    let r = op.rollout("connector-0-2");
    let st = r.status.clone().unwrap();
    assert_eq!(st.phase, Some(Phase::Invalid));
    assert_eq!(
        (st.image.clone(), st.partition.clone(), st.current_wave),
        (accepted.image, accepted.partition, accepted.current_wave)
    );
    assert!(
        cond(&r, "Stalled")
            .2
            .ends_with("the tenants keep following the last accepted plan")
    );
    assert_eq!(images(&api), before);
}

/// New output channels (rollout status, its Events, fleet metrics) carry names and reasons, never a
/// Secret value: a canary tenant whose Secret lacks a key stalls the rollout, and the canary value
/// stored in the same Secret appears nowhere.
#[tokio::test]
async fn a_stalled_rollout_reports_names_and_reasons_never_secret_values() {
    use k8s_openapi::ByteString;
    use k8s_openapi::api::core::v1::Secret;
    const CANARY: &str = "s3cr3t-canary-9f27c1";
    let api = fleet_api();
    let mut lc = tenant("t-secret", &[("lumenore.io/ring", "canary")], None);
    lc.spec.backend = lumenore_operator::crd::Backend::Lumenore;
    lc.spec.credentials = Some(
        serde_json::from_value(
            json!({"secretName": "t-secret-creds", "clientIdKey": "id", "clientSecretKey": "secret"}),
        )
        .unwrap(),
    );
    api.put(&lc);
    api.put(&Secret {
        metadata: kube::api::ObjectMeta {
            name: Some("t-secret-creds".into()),
            namespace: Some(TENANTS.into()),
            ..Default::default()
        },
        data: Some([("id".to_string(), ByteString(CANARY.as_bytes().to_vec()))].into()),
        ..Default::default()
    });
    let clock = Clock::new();
    let mut op = Fleet::start(&api, &clock);
    api.put(&rollout("connector-0-2", waves_spec()));
    let mut ticks = 0;
    while op.rollout_phase() != Some(Phase::Stalled) {
        op.tick(&clock, &[], 30).await;
        ticks += 1;
        assert!(ticks < 20, "{:#?}", op.rollout("connector-0-2").status);
    }
    let st = op.rollout("connector-0-2").status.unwrap();
    let failed = st
        .failed_tenants
        .iter()
        .find(|f| f.tenant == "tenants/t-secret")
        .expect("t-secret listed");
    assert_eq!(failed.reason, "NotUpdated");
    assert!(failed.message.contains("SecretKeyMissing"), "{failed:?}");
    let outputs = [
        serde_json::to_string(&st).unwrap(),
        serde_json::to_string(&api.events(OPS)).unwrap(),
        op.ctx.metrics.encode(),
    ];
    for out in &outputs {
        assert!(!out.contains(CANARY), "a Secret value leaked: {out}");
    }
    assert!(outputs[0].contains("t-secret") && outputs[1].contains("t-secret"));
    assert!(
        !outputs[2].contains("t-secret"),
        "tenant names are not metric labels"
    );
}

/// Defect: the rollout status was force-applied without a precondition, so a deposed leader's late
/// write (decided from an older status) could move `partition` backwards and tenants with it.
#[tokio::test]
async fn a_deposed_leaders_late_status_write_is_refused() {
    let api = fleet_api();
    let clock = Clock::new();
    let mut old_leader = Fleet::start(&api, &clock);
    old_leader.reconcile_tenants().await;
    deployment_controller(&api, &[]);
    old_leader.reconcile_tenants().await;
    api.put(&rollout("connector-0-2", waves_spec()));
    // The first decision: the rollout starts, wave 1 admits its first batch.
    old_leader.tick(&clock, &[], 10).await;
    let before = old_leader.rollout("connector-0-2").status.unwrap();

    // The old leader decides from this status, but its write is held up in the network ...
    api.delay_requests(
        "lumenorefleetrollouts/connector-0-2/status",
        std::time::Duration::from_secs(3),
        1,
    );
    old_leader.sync();
    let stale = old_leader.rollout("connector-0-2");
    clock.advance(60);
    let late = {
        let rctx = old_leader.rctx.clone();
        tokio::spawn(async move {
            lumenore_operator::rollout::controller::reconcile(std::sync::Arc::new(stale), rctx).await
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    // ... while the new leader moves on.
    let mut new_leader = Fleet::start(&api, &clock);
    for _ in 0..3 {
        new_leader.tick(&clock, &[], 60).await;
    }
    let moved = new_leader.rollout("connector-0-2").status.unwrap();
    assert_ne!(
        (moved.current_wave, moved.partition.clone()),
        (before.current_wave, before.partition.clone()),
        "the new leader advanced"
    );
    let result = late.await.unwrap();
    assert!(
        matches!(&result, Err(lumenore_operator::rollout::controller::Error::Kube(kube::Error::Api(s))) if s.code == 409),
        "the late write must be refused: {result:?}"
    );
    let after = api
        .get::<LumenoreFleetRollout>(OPS, "connector-0-2")
        .unwrap()
        .status
        .unwrap();
    assert_eq!(
        (after.current_wave, after.partition),
        (moved.current_wave, moved.partition),
        "nothing moved backwards"
    );
}

/// Defect: after a restart or a leader change the rollout controller started when the rollout
/// cache was ready and decided on whatever tenant caches had filled so far: waves without members
/// completed at once and every unpinned tenant got the target image.
#[tokio::test]
async fn a_rollout_decides_nothing_until_every_tenant_cache_is_filled() {
    let api = fleet_api();
    let clock = Clock::new();
    let mut op = Fleet::start(&api, &clock);
    op.reconcile_tenants().await;
    deployment_controller(&api, &[]);
    op.reconcile_tenants().await;
    api.put(&rollout("connector-0-2", waves_spec()));
    op.sync();
    // A second watched namespace whose cache has not had its first LIST yet.
    let (unfilled, mut writer) = kube::runtime::reflector::store::<lumenore_operator::crd::Guarded>();
    op.ctx.fleet.register_tenants(unfilled);
    op.ctx.fleet.expect_tenant_caches(2);
    let writes = |api: &FakeApi| {
        api.log()
            .iter()
            .filter(|l| l.method == http::Method::PATCH && l.path.contains("lumenorefleetrollouts"))
            .count()
    };
    let before = writes(&api);
    let r = api.get::<LumenoreFleetRollout>(OPS, "connector-0-2").unwrap();
    lumenore_operator::rollout::controller::reconcile(std::sync::Arc::new(r.clone()), op.rctx.clone())
        .await
        .unwrap();
    assert_eq!(writes(&api), before, "no decision on a partial fleet");
    assert!(r.status.is_none());
    // The cache fills: the rollout starts, at wave 1 with its first batch only.
    lumenore_operator::rollout::fleet::fill_store(&mut writer, Vec::new());
    lumenore_operator::rollout::controller::reconcile(std::sync::Arc::new(r), op.rctx.clone())
        .await
        .unwrap();
    let st = api
        .get::<LumenoreFleetRollout>(OPS, "connector-0-2")
        .unwrap()
        .status
        .unwrap();
    assert_eq!(st.current_wave, Some(0));
}

/// The analysis sends a Secret's values only when the Secret is labelled for it: whoever may edit a
/// rollout but not read Secrets cannot have another Secret sent to a URL of their choosing.
#[tokio::test]
async fn analysis_credentials_come_only_from_labelled_secrets() {
    use k8s_openapi::ByteString;
    use k8s_openapi::api::core::v1::Secret;
    use lumenore_operator::rollout::analysis::prometheus::QueryApi;
    use lumenore_operator::rollout::crd::Analysis;

    let _ = rustls::crypto::ring::default_provider().install_default();
    let api = FakeApi::new();
    let secret = |name: &str, labelled: bool| {
        let mut s = Secret::default();
        s.metadata.name = Some(name.into());
        s.metadata.namespace = Some("ops".into());
        if labelled {
            s.metadata.labels = Some([("lumenore.io/fleet-analysis".to_string(), "true".to_string())].into());
        }
        s.data = Some([("token".to_string(), ByteString(b"t0ken".to_vec()))].into());
        s
    };
    api.put(&secret("db-password", false));
    api.put(&secret("prom-reader", true));
    let secrets: kube::Api<Secret> = kube::Api::namespaced(api.client(), "ops");
    let spec = |name: &str| -> Analysis {
        serde_json::from_value(json!({"prometheus": {"url": "https://prometheus.example:9090",
            "bearerTokenSecretRef": {"name": name, "key": "token"}}}))
        .unwrap()
    };
    let refused = QueryApi::connect(&spec("db-password").prometheus, &secrets)
        .await
        .err()
        .expect("an unlabelled Secret is refused");
    assert!(
        refused.contains("not labelled lumenore.io/fleet-analysis=\"true\""),
        "{refused}"
    );
    assert!(!refused.contains("t0ken"));
    assert!(
        QueryApi::connect(&spec("prom-reader").prometheus, &secrets)
            .await
            .is_ok()
    );
    let missing = QueryApi::connect(&spec("nope").prometheus, &secrets)
        .await
        .err()
        .unwrap();
    assert_eq!(missing, "Secret nope not found");
}
