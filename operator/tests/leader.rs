//! Lease-based leader election against the in-memory API server.

mod common;

use std::time::Duration;

use common::fake_api::FakeApi;
use http::Method;
use k8s_openapi::api::coordination::v1::Lease;
use lumenore_operator::leader::{LeaseConfig, LeaseLock};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

fn config(identity: &str, lease_ms: u64) -> LeaseConfig {
    LeaseConfig {
        namespace: "operators".into(),
        name: "lumenore-operator-leader".into(),
        identity: identity.into(),
        lease_duration: Duration::from_millis(lease_ms),
        renew_deadline: Duration::from_millis(lease_ms * 2 / 3),
        retry_period: Duration::from_millis(lease_ms / 5),
    }
}

fn holder(api: &FakeApi) -> Option<String> {
    api.get::<Lease>("operators", "lumenore-operator-leader")
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
}

#[tokio::test]
async fn one_candidate_wins_and_the_other_waits() {
    let api = FakeApi::new();
    let mut a = LeaseLock::new(api.client(), config("a", 300));
    let mut b = LeaseLock::new(api.client(), config("b", 300));
    assert!(a.try_acquire_or_renew().await.unwrap());
    assert!(!b.try_acquire_or_renew().await.unwrap());
    assert_eq!(holder(&api).as_deref(), Some("a"));
    // The holder renews; b still may not take over while renewals keep coming.
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(a.try_acquire_or_renew().await.unwrap());
        assert!(!b.try_acquire_or_renew().await.unwrap());
    }
    assert_eq!(holder(&api).as_deref(), Some("a"));
}

// Virtual time: the Lease carries whole seconds (the one-second lease a 1000 ms config writes).
#[tokio::test(start_paused = true)]
async fn a_stale_lease_is_taken_over_after_the_lease_duration() {
    let api = FakeApi::new();
    let mut a = LeaseLock::new(api.client(), config("a", 1000));
    let mut b = LeaseLock::new(api.client(), config("b", 1000));
    assert!(a.try_acquire_or_renew().await.unwrap());
    assert!(!b.try_acquire_or_renew().await.unwrap());
    // a stops renewing (crashed / partitioned).
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!b.try_acquire_or_renew().await.unwrap(), "not yet expired");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(b.try_acquire_or_renew().await.unwrap(), "expired: b takes over");
    let lease = api
        .get::<Lease>("operators", "lumenore-operator-leader")
        .unwrap()
        .spec
        .unwrap();
    assert_eq!(lease.holder_identity.as_deref(), Some("b"));
    assert_eq!(lease.lease_transitions, Some(1));
    // a comes back: it sees b's renewals and does not win.
    assert!(!a.try_acquire_or_renew().await.unwrap());
}

#[tokio::test]
async fn a_write_conflict_means_not_leader() {
    let api = FakeApi::new();
    let mut a = LeaseLock::new(api.client(), config("a", 300));
    assert!(a.try_acquire_or_renew().await.unwrap());
    // Someone else updated the Lease between our GET and PUT.
    api.fail_next(Method::PUT, "/leases/lumenore-operator-leader", 409, 1);
    assert!(!a.try_acquire_or_renew().await.unwrap());
    assert!(a.try_acquire_or_renew().await.unwrap());
    // Two candidates creating it at once: the second create conflicts.
    let api = FakeApi::new();
    let mut c = LeaseLock::new(api.client(), config("c", 300));
    api.fail_next(Method::POST, "/leases", 409, 1);
    assert!(!c.try_acquire_or_renew().await.unwrap());
}

#[tokio::test]
async fn the_loop_reports_leadership_releases_on_stop_and_a_standby_takes_over_at_once() {
    let api = FakeApi::new();
    let (a_tx, mut a_rx) = watch::channel(false);
    let (a_ok, _) = watch::channel(false);
    let stop_a = CancellationToken::new();
    let a = tokio::spawn(lumenore_operator::leader::run(
        LeaseLock::new(api.client(), config("a", 10_000)),
        a_tx,
        a_ok,
        stop_a.clone(),
    ));
    tokio::time::timeout(Duration::from_secs(2), a_rx.wait_for(|l| *l))
        .await
        .unwrap()
        .unwrap();

    let (b_tx, mut b_rx) = watch::channel(false);
    let (b_ok, b_ok_rx) = watch::channel(false);
    let stop_b = CancellationToken::new();
    let b = tokio::spawn(lumenore_operator::leader::run(
        LeaseLock::new(api.client(), config("b", 10_000)),
        b_tx,
        b_ok,
        stop_b.clone(),
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!*b_rx.borrow(), "standby while a holds a 10 s lease");
    assert!(*b_ok_rx.borrow(), "the standby reached the API (ready)");

    // a shuts down: it releases the Lease, b takes over well before the 10 s lease would expire.
    stop_a.cancel();
    a.await.unwrap();
    assert!(!*a_rx.borrow());
    tokio::time::timeout(Duration::from_secs(3), b_rx.wait_for(|l| *l))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(holder(&api).as_deref(), Some("b"));
    stop_b.cancel();
    b.await.unwrap();
}

#[tokio::test]
async fn the_leader_steps_down_when_renewals_fail_past_the_deadline() {
    let api = FakeApi::new();
    let (tx, mut rx) = watch::channel(false);
    let (ok, _) = watch::channel(false);
    let stop = CancellationToken::new();
    let h = tokio::spawn(lumenore_operator::leader::run(
        LeaseLock::new(api.client(), config("a", 500)),
        tx,
        ok,
        stop.clone(),
    ));
    tokio::time::timeout(Duration::from_secs(2), rx.wait_for(|l| *l))
        .await
        .unwrap()
        .unwrap();
    // The API server becomes unreachable for reads of the lease.
    api.fail_next(Method::GET, "/leases/lumenore-operator-leader", 503, 1000);
    tokio::time::timeout(Duration::from_secs(3), rx.wait_for(|l| !*l))
        .await
        .unwrap()
        .unwrap();
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), h)
        .await
        .unwrap()
        .unwrap();
}

/// Run one candidate; returns its leadership channel and its stop token.
fn candidate(
    api: &FakeApi,
    cfg: LeaseConfig,
) -> (
    watch::Receiver<bool>,
    CancellationToken,
    tokio::task::JoinHandle<()>,
) {
    let (tx, rx) = watch::channel(false);
    let (ok, _) = watch::channel(false);
    let stop = CancellationToken::new();
    let client = api.client_named(&cfg.identity);
    let h = tokio::spawn(lumenore_operator::leader::run(
        LeaseLock::new(client, cfg),
        tx,
        ok,
        stop.clone(),
    ));
    (rx, stop, h)
}

fn seconds(identity: &str, lease: u64, renew: u64, retry: u64) -> LeaseConfig {
    LeaseConfig {
        namespace: "operators".into(),
        name: "lumenore-operator-leader".into(),
        identity: identity.into(),
        lease_duration: Duration::from_secs(lease),
        renew_deadline: Duration::from_secs(renew),
        retry_period: Duration::from_secs(retry),
    }
}

/// A half-open connection: the leader's renewals hang (no error, no answer). It must stop leading
/// at its renew deadline, before the standby may take the Lease over. Virtual time: the order of
/// events is exact, not subject to the machine's load.
#[tokio::test(start_paused = true)]
async fn a_hanging_renewal_ends_leadership_before_a_standby_can_take_over() {
    let api = FakeApi::new();
    let (mut a, _stop_a, _ha) = candidate(&api, seconds("a", 15, 10, 2));
    a.wait_for(|l| *l).await.unwrap();
    let (mut b, stop_b, _hb) = candidate(&api, seconds("b", 15, 10, 2));
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(!*b.borrow());

    let cut = tokio::time::Instant::now();
    api.partition("a");
    let a_lost = tokio::spawn(async move {
        a.wait_for(|l| !*l).await.unwrap();
        tokio::time::Instant::now()
    });
    let b_won = tokio::spawn(async move {
        b.wait_for(|l| *l).await.unwrap();
        tokio::time::Instant::now()
    });
    let a_lost = tokio::time::timeout(Duration::from_secs(120), a_lost)
        .await
        .expect("the partitioned leader never stepped down")
        .unwrap();
    let b_won = tokio::time::timeout(Duration::from_secs(120), b_won)
        .await
        .expect("the standby never took over")
        .unwrap();
    assert!(
        a_lost <= cut + Duration::from_secs(10),
        "stepped down within the renew deadline"
    );
    assert!(
        a_lost < b_won,
        "never two leaders: a lost at {:?}, b won at {:?}",
        a_lost - cut,
        b_won - cut
    );
    assert_eq!(holder(&api).as_deref(), Some("b"));
    stop_b.cancel();
}

/// A candidate configured with a shorter lease duration must still honour the duration the holder
/// wrote into the Lease.
#[tokio::test(start_paused = true)]
async fn a_candidate_honours_the_lease_duration_the_holder_wrote() {
    let api = FakeApi::new();
    let (mut a, _stop_a, ha) = candidate(&api, seconds("a", 30, 20, 2));
    a.wait_for(|l| *l).await.unwrap();
    assert_eq!(
        api.get::<Lease>("operators", "lumenore-operator-leader")
            .unwrap()
            .spec
            .unwrap()
            .lease_duration_seconds,
        Some(30)
    );
    // a dies without releasing.
    ha.abort();
    let died = tokio::time::Instant::now();
    let (mut b, stop_b, _hb) = candidate(&api, seconds("b", 3, 2, 1));
    let b_won = tokio::time::timeout(Duration::from_secs(120), b.wait_for(|l| *l))
        .await
        .expect("b never took over");
    b_won.unwrap();
    assert!(
        tokio::time::Instant::now() >= died + Duration::from_secs(30),
        "b took over after {:?}, before the 30 s the holder promised",
        tokio::time::Instant::now() - died
    );
    stop_b.cancel();
}

#[test]
fn the_election_timing_rules_are_checked() {
    assert!(seconds("a", 15, 10, 2).check().is_ok());
    let e = seconds("a", 10, 10, 2).check().unwrap_err();
    assert!(e.contains("--renew-deadline-seconds"), "{e}");
    let e = seconds("a", 15, 10, 10).check().unwrap_err();
    assert!(e.contains("--retry-period-seconds"), "{e}");
}

/// Every request of the operator's client is bounded: a hanging API server yields an error.
#[tokio::test(start_paused = true)]
async fn every_api_call_has_a_time_limit() {
    let api = FakeApi::new();
    let svc = tower::ServiceBuilder::new()
        .layer(lumenore_operator::client::api_timeout_layer(Duration::from_secs(
            30,
        )))
        .service(api.service());
    let client = kube::Client::new(svc, "default");
    api.hang_next(Method::GET, "/leases/x", 1);
    let leases: kube::Api<Lease> = kube::Api::namespaced(client, "operators");
    let started = tokio::time::Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(300), leases.get_opt("x"))
        .await
        .expect("the client gave up by itself");
    assert!(r.is_err(), "{r:?}");
    assert_eq!(tokio::time::Instant::now() - started, Duration::from_secs(30));
}
