//! Issue 23: tenant-wide and per-caller call limits that hold across replicas, through a real Redis server
//! (Debian `redis-server`) and real connector processes, judged by what callers were answered.
//!
//! The bound: a bucket of `n` per minute admits at most `n + n * W / 60 s` calls in any `W` seconds (a
//! burst of `n`, then one every 60/`n` s). With the store that holds for the tenant as a whole and for each
//! caller, whatever replica a call reaches; per pod it holds per pod, so three replicas admit three times
//! as much (measured here too, so the check has teeth).
//!
//! `cargo test -p lumenore-e2e --test shared_limits -- --nocapture --test-threads 1` prints the figures
//! quoted in docs/auth.md. Loopback only; every loop is bounded in time.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use lumenore_e2e::{
    connector::{Connector, ConnectorSpec},
    http_client,
    mcp::{PROTOCOL_VERSION, tool_call},
    raw::keys_file,
    redis::RedisServer,
};

const PASSWORD: &str = "redis-password-never-logged-5f1c";
const SCOPE: &str = "acme/analytics";
const TENANT_PER_MINUTE: u32 = 60;
const CALLER_PER_MINUTE: u32 = 20;
/// Alice sends four calls for each one of the others: her own bucket must hold her back.
const CALLERS: [(&str, usize); 4] = [("alice", 4), ("bob", 1), ("carol", 1), ("dave", 1)];

/// The most a bucket of `per_minute` may admit in `window` (plus one for the call in flight at the edge).
fn bound(per_minute: u32, window: Duration) -> f64 {
    f64::from(per_minute) * (1.0 + window.as_secs_f64() / 60.0) + 1.0
}

/// One tools/call as `key`; the HTTP status and the limit named by a 429's message.
async fn call(http: &reqwest::Client, url: &str, key: &str) -> (u16, Option<u64>) {
    let answer = http
        .post(url)
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", PROTOCOL_VERSION)
        .json(&tool_call(1, "get_dataset_metadata", serde_json::json!({})))
        .send()
        .await;
    match answer {
        Ok(response) => {
            let retry_after = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok());
            (response.status().as_u16(), retry_after)
        }
        Err(_) => (0, None),
    }
}

#[derive(Default, Debug)]
struct Tally {
    admitted: BTreeMap<&'static str, u32>,
    refused: BTreeMap<&'static str, u32>,
    other: Vec<u16>,
    window: Duration,
}

impl Tally {
    fn admitted_total(&self) -> u32 {
        self.admitted.values().sum()
    }
}

/// Calls round-robin over `replicas` for `window`, callers weighted as in [`CALLERS`], `workers` at once.
async fn drive(replicas: &[&Connector], keys: &[String], window: Duration, workers: usize) -> Tally {
    let mut schedule: Vec<(&'static str, String)> = Vec::new();
    for ((name, weight), key) in CALLERS.iter().zip(keys) {
        for _ in 0..*weight {
            schedule.push((name, key.clone()));
        }
    }
    let urls: Vec<String> = replicas.iter().map(|c| c.mcp.clone()).collect();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..workers {
        let (schedule, urls) = (schedule.clone(), urls.clone());
        tasks.push(tokio::spawn(async move {
            let http = http_client(Duration::from_secs(5));
            let mut seen = Vec::new();
            let mut turn = worker;
            while started.elapsed() < window {
                let (name, key) = &schedule[turn % schedule.len()];
                let url = &urls[turn % urls.len()];
                let (status, _) = call(&http, url, key).await;
                seen.push((*name, status));
                turn += workers;
            }
            seen
        }));
    }
    let mut tally = Tally::default();
    for task in tasks {
        for (name, status) in task.await.expect("worker") {
            match status {
                200 => *tally.admitted.entry(name).or_default() += 1,
                429 => *tally.refused.entry(name).or_default() += 1,
                other => tally.other.push(other),
            }
        }
    }
    tally.window = started.elapsed();
    tally
}

fn replica(keys_file: &str, store: Option<&RedisServer>, failure: &str) -> ConnectorSpec {
    let mut spec = ConnectorSpec::embedded()
        .env("LUMENORE_AUTH_MODE", "api-keys")
        .env("LUMENORE_API_KEYS_FILE", keys_file)
        .env(
            "LUMENORE_RATE_LIMIT_TENANT_PER_MINUTE",
            &TENANT_PER_MINUTE.to_string(),
        )
        .env(
            "LUMENORE_RATE_LIMIT_CALLER_PER_MINUTE",
            &CALLER_PER_MINUTE.to_string(),
        )
        .env("LUMENORE_RATE_LIMIT_SHARES", "3");
    if let Some(redis) = store {
        spec = spec
            .env("LUMENORE_RATE_LIMIT_STORE", &redis.url())
            .env("LUMENORE_RATE_LIMIT_STORE_PASSWORD", PASSWORD)
            .env("LUMENORE_RATE_LIMIT_STORE_SCOPE", SCOPE)
            .env("LUMENORE_RATE_LIMIT_STORE_FAILURE", failure);
    }
    spec
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0.0)
}

fn assert_nothing_secret_logged(connectors: &[&Connector], keys: &[String]) {
    for connector in connectors {
        let logs = connector.logs();
        assert!(
            !logs.contains(PASSWORD),
            "the store's password in a log line:\n{logs}"
        );
        for key in keys {
            assert!(!logs.contains(key.as_str()), "an API key in a log line");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_hold_one_tenant_limit_and_each_callers_limit_through_redis() {
    let Some(binaries) = RedisServer::find() else {
        return;
    };
    let redis = RedisServer::start(&binaries, PASSWORD);
    let names: Vec<&str> = CALLERS.iter().map(|(name, _)| *name).collect();
    let (_dir, keys_file, keys) = keys_file("shared-limits-keys", &names);
    let window = Duration::from_secs(12);

    // Per pod, the teeth of the check: the same traffic over three replicas without a store (and with one
    // share each, as before this issue) admits about three times the limit.
    let mut per_pod = Vec::new();
    for _ in 0..3 {
        per_pod.push(
            Connector::start(replica(&keys_file, None, "open").env("LUMENORE_RATE_LIMIT_SHARES", "1")).await,
        );
    }
    let refs: Vec<&Connector> = per_pod.iter().collect();
    let alone = drive(&refs, &keys, window, 6).await;
    drop(refs);
    drop(per_pod);

    let mut replicas = Vec::new();
    for _ in 0..3 {
        replicas.push(Connector::start(replica(&keys_file, Some(&redis), "open")).await);
    }
    let refs: Vec<&Connector> = replicas.iter().collect();
    let shared = drive(&refs, &keys, window, 6).await;

    let tenant_bound = bound(TENANT_PER_MINUTE, shared.window);
    let caller_bound = bound(CALLER_PER_MINUTE, shared.window);
    println!(
        "BENCH three replicas, tenant {TENANT_PER_MINUTE}/min, caller {CALLER_PER_MINUTE}/min, {:.1} s: per pod \
         admitted {} {:?}; with Redis admitted {} {:?} (bound tenant {tenant_bound:.1}, caller \
         {caller_bound:.1}), refused {:?}",
        shared.window.as_secs_f64(),
        alone.admitted_total(),
        alone.admitted,
        shared.admitted_total(),
        shared.admitted,
        shared.refused,
    );
    assert!(
        shared.other.is_empty(),
        "answers other than 200 and 429: {:?}",
        shared.other
    );
    // The store decided every call: the pods' own buckets (a third of each limit, the fallback) never did.
    for replica in &replicas {
        let metrics = replica.metrics().await;
        assert!(
            !metrics.contains("lumenore_connector_rate_limit_store_failures_total{"),
            "a store call failed: {metrics}"
        );
    }
    assert!(
        f64::from(alone.admitted_total()) > bound(TENANT_PER_MINUTE, alone.window),
        "per pod, three replicas should admit more than one tenant limit: {alone:?}"
    );
    let total = f64::from(shared.admitted_total());
    assert!(total <= tenant_bound, "tenant-wide: {total} > {tenant_bound:.1}");
    // The limit is reachable: the whole burst is admitted.
    assert!(
        total >= f64::from(TENANT_PER_MINUTE),
        "tenant-wide: only {total} admitted"
    );
    for (name, admitted) in &shared.admitted {
        assert!(
            f64::from(*admitted) <= caller_bound,
            "{name}: {admitted} > {caller_bound:.1}"
        );
    }
    // Alice sent most: her own bucket refused her, and the tenant's refused the others.
    assert!(shared.refused.get("alice").copied().unwrap_or(0) > 0);
    let limited = metric(
        &replicas[0].metrics().await,
        "lumenore_connector_rate_limited_total{limit=\"tenant\"}",
    ) + metric(
        &replicas[1].metrics().await,
        "lumenore_connector_rate_limited_total{limit=\"tenant\"}",
    ) + metric(
        &replicas[2].metrics().await,
        "lumenore_connector_rate_limited_total{limit=\"tenant\"}",
    );
    assert!(limited > 0.0, "no call was refused by the tenant's bucket");

    // The store's keys: scoped by the tenant in one hash slot, the callers hashed, every key expiring.
    let stored = redis.keys("lumenore:rl:*");
    assert_eq!(stored.len(), 1 + CALLERS.len(), "{stored:?}");
    for key in &stored {
        assert!(key.starts_with("lumenore:rl:{acme/analytics}:"), "{key}");
        for name in &names {
            assert!(!key.contains(name), "a caller's id in clear: {key}");
        }
        let ttl: i64 = redis.cli(&["PTTL", key]).trim().parse().expect("PTTL");
        assert!(ttl > 0 && ttl <= 120_000, "{key} expires in {ttl} ms");
    }
    assert_nothing_secret_logged(&refs, &keys);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_store_follows_each_policy_and_limits_resume_without_a_restart() {
    let Some(binaries) = RedisServer::find() else {
        return;
    };
    let mut redis = RedisServer::start(&binaries, PASSWORD);
    let (_dir, keys_file, keys) = keys_file("shared-limits-fail-keys", &["alice"]);
    // At trace level: the store's password and the API keys must still reach no log line.
    let open = Connector::start(replica(&keys_file, Some(&redis), "open").env("RUST_LOG", "trace")).await;
    let closed = Connector::start(replica(&keys_file, Some(&redis), "closed").env("RUST_LOG", "trace")).await;
    let http = http_client(Duration::from_secs(5));
    let readyz = |connector: &Connector| {
        let (http, url) = (http.clone(), format!("{}/readyz", connector.base));
        async move {
            let response = http.get(url).send().await.expect("readyz");
            let status = response.status().as_u16();
            (
                status,
                response.json::<serde_json::Value>().await.expect("readyz json"),
            )
        }
    };
    assert_eq!(call(&http, &open.mcp, &keys[0]).await.0, 200);
    assert_eq!(call(&http, &closed.mcp, &keys[0]).await.0, 200);
    assert_eq!(readyz(&open).await.1["rateLimitStore"]["state"], "ok");

    // Killed: `closed` answers 503 with Retry-After; `open` admits by the pod's own buckets, a third of
    // each limit rounded up: the caller's is ceil(20 / 3) = 7 (the tenant's, 20, does not bind), so 7 of a
    // quick 30 (8 if a token comes back meanwhile, one every 8.6 s).
    redis.kill();
    let (status, retry_after) = call(&http, &closed.mcp, &keys[0]).await;
    assert_eq!((status, retry_after), (503, Some(1)));
    let mut admitted = 0;
    let started = Instant::now();
    for _ in 0..30 {
        if call(&http, &open.mcp, &keys[0]).await.0 == 200 {
            admitted += 1;
        }
    }
    let quick = started.elapsed();
    let local_caller_share = CALLER_PER_MINUTE.div_ceil(3);
    println!(
        "BENCH store killed: policy open admitted {admitted} of 30 in {quick:?} (the caller's share is \
         {local_caller_share}); policy closed answered 503"
    );
    // While the store answered, the pod's own buckets were not touched: the whole share is there.
    assert!(
        (local_caller_share..=local_caller_share + 1).contains(&admitted),
        "admitted {admitted}"
    );
    let (status, note) = readyz(&open).await;
    assert_eq!(status, 200, "a failed store does not make the pod unready");
    assert_eq!(
        note["rateLimitStore"],
        serde_json::json!({"state": "failing", "failurePolicy": "open"})
    );
    let metrics = open.metrics().await;
    assert!(
        metrics.contains("lumenore_connector_rate_limit_store_up{store=\"redis\"} 0"),
        "{metrics}"
    );
    assert!(
        metric(
            &metrics,
            "lumenore_connector_rate_limit_store_failures_total{reason=\"error\"}"
        ) > 0.0
    );

    // Stalled (the process stopped, its socket open): no call waits past the store timeout (50 ms) by much.
    redis.start_again();
    let deadline = Instant::now() + Duration::from_secs(15);
    while call(&http, &closed.mcp, &keys[0]).await.0 != 200 {
        assert!(
            Instant::now() < deadline,
            "limits did not resume after the store came back"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    redis.signal("STOP");
    let mut slowest = Duration::ZERO;
    for _ in 0..5 {
        let started = Instant::now();
        let (status, _) = call(&http, &closed.mcp, &keys[0]).await;
        slowest = slowest.max(started.elapsed());
        assert_eq!(status, 503);
    }
    println!("BENCH store stalled: the slowest of 5 calls (policy closed) answered 503 in {slowest:?}");
    // The 50 ms timeout plus the HTTP round trip of a debug build.
    assert!(
        slowest < Duration::from_millis(300),
        "a stalled store held a call for {slowest:?}"
    );
    redis.signal("CONT");

    // Back: both connectors (the same processes) use the store again.
    let deadline = Instant::now() + Duration::from_secs(15);
    // The store's state changes only with calls: call first, then read it.
    while call(&http, &closed.mcp, &keys[0]).await.0 != 200
        || readyz(&closed).await.1["rateLimitStore"]["state"] != "ok"
    {
        assert!(Instant::now() < deadline, "limits did not resume after the stall");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(!redis.keys("lumenore:rl:{acme/analytics}:tenant").is_empty());
    assert_eq!(
        metric(
            &closed.metrics().await,
            "lumenore_connector_rate_limit_store_up{store=\"redis\"}"
        ),
        1.0
    );
    let logs = closed.logs();
    assert!(logs.contains("the rate-limit store failed"), "{logs}");
    assert!(logs.contains("the rate-limit store answers again"), "{logs}");
    assert_nothing_secret_logged(&[&open, &closed], &keys);
}

/// A store that refuses the connector's password fails at connection set-up, not with an I/O error: the
/// Redis client keeps such a failure for every later call. The connector makes its connection again
/// after three failures in a row, so once the store takes the password limits resume, without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_refused_the_password_is_used_once_it_takes_it() {
    let Some(binaries) = RedisServer::find() else {
        return;
    };
    let mut redis = RedisServer::start(&binaries, "another-password-entirely");
    let (_dir, keys_file, keys) = keys_file("shared-limits-auth-keys", &["alice"]);
    let closed = Connector::start(replica(&keys_file, Some(&redis), "closed")).await;
    let http = http_client(Duration::from_secs(5));
    for _ in 0..5 {
        assert_eq!(
            call(&http, &closed.mcp, &keys[0]).await.0,
            503,
            "a refused password is a failed store"
        );
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
    // The same server, not restarted: no connection breaks, only the password changes.
    redis.set_password(PASSWORD);
    let started = Instant::now();
    while call(&http, &closed.mcp, &keys[0]).await.0 != 200 {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the store took the password but the connector kept failing"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "BENCH store password fixed: limits resumed after {:?}",
        started.elapsed()
    );
    assert!(!redis.keys("lumenore:rl:*").is_empty());
    assert_nothing_secret_logged(&[&closed], &keys);
}

/// The store over TLS (`rediss://`): a real `redis-server` speaking TLS only, with a certificate of a
/// test authority that the connector is given (`--rate-limit-store-ca-file`). Verified: the same store
/// without that authority (the system roots) is a failed store, never an unverified connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_over_tls_is_verified_against_the_given_authority() {
    let Some(binaries) = RedisServer::find() else {
        return;
    };
    let Some(_) = lumenore_e2e::tools::require("openssl", lumenore_e2e::tools::find("openssl")) else {
        return;
    };
    let certificates = lumenore_e2e::raw::tempdir::Dir::new("shared-limits-tls");
    lumenore_e2e::redis::make_certificates(&certificates.path);
    let redis = RedisServer::start_tls(&binaries, PASSWORD, &certificates.path);
    let (_dir, keys_file, keys) = keys_file("shared-limits-tls-keys", &["alice"]);
    let tls_url = format!("rediss://127.0.0.1:{}", redis.port);
    let ca = certificates.path.join("ca.pem").display().to_string();
    let verified = Connector::start(
        replica(&keys_file, Some(&redis), "closed")
            .env("LUMENORE_RATE_LIMIT_STORE", &tls_url)
            .env("LUMENORE_RATE_LIMIT_STORE_CA_FILE", &ca),
    )
    .await;
    let http = http_client(Duration::from_secs(5));
    // Alice's share of the store: 20 a minute, so 20 of 25 quick calls, then 429 from the store.
    let mut statuses = Vec::new();
    for _ in 0..25 {
        statuses.push(call(&http, &verified.mcp, &keys[0]).await.0);
    }
    let admitted = statuses.iter().filter(|s| **s == 200).count();
    println!(
        "BENCH store over TLS: {admitted} of 25 admitted, the rest {:?}",
        &statuses[admitted..]
    );
    assert_eq!(admitted, CALLER_PER_MINUTE as usize, "{statuses:?}");
    assert!(statuses[admitted..].iter().all(|s| *s == 429), "{statuses:?}");
    assert!(!redis.keys("lumenore:rl:*").is_empty());

    let unverified = Connector::start(
        replica(&keys_file, Some(&redis), "closed").env("LUMENORE_RATE_LIMIT_STORE", &tls_url),
    )
    .await;
    assert_eq!(
        call(&http, &unverified.mcp, &keys[0]).await.0,
        503,
        "a certificate the connector cannot verify is a failed store"
    );
    assert_nothing_secret_logged(&[&verified, &unverified], &keys);
}
