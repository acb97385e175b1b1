//! A hostile or broken Lumenore backend against the real connector binary (issue 12, backend items): huge
//! and endless answers must not take the connector's memory, a hanging login must not serialise its
//! callers, a backend refusing every token must not cause a login per call, and a connection broken in
//! the middle of an answer is retried as a broken connection.
//!
//! Memory figures are peak resident memory (`VmHWM`) of the connector process; each test prints its figure
//! (`cargo test -p lumenore-e2e --test backend_hostile -- --nocapture`) and asserts only a generous bound.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use lumenore_e2e::{
    connector::{Connector, ConnectorSpec},
    fake_backend::{FakeConfig, FakeLumenore},
    http_client,
    mcp::{Outcome, call_tool},
};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const KEY: &str = "hostile-key";
const MIB: u64 = 1024 * 1024;

fn args() -> Value {
    json!({"userQuery": "Top 5 sales regions last month", "schemaId": 35403})
}

/// The connector with a static key (no login) against the fake.
fn with_key(fake: &FakeLumenore) -> ConnectorSpec {
    ConnectorSpec {
        env: vec![
            ("LUMENORE_BACKEND".into(), "lumenore".into()),
            ("SERVER_URL".into(), fake.url()),
            ("LUMENORE_API_KEY".into(), KEY.into()),
        ],
        args: Vec::new(),
    }
}

/// Peak resident memory of a process so far, in KiB (`VmHWM`).
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

async fn concurrently(connector: &Connector, tool: &'static str, count: usize) -> Vec<Outcome> {
    let calls = (0..count).map(|_| {
        let url = connector.mcp.clone();
        tokio::spawn(async move {
            let http = http_client(Duration::from_secs(120));
            call_tool(&http, &url, tool, args()).await
        })
    });
    let mut outcomes = Vec::new();
    for call in calls.collect::<Vec<_>>() {
        outcomes.push(call.await.expect("call task"));
    }
    outcomes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_concurrent_31_mib_answers_keep_the_connector_small() {
    let config = FakeConfig {
        static_token: Some(KEY.into()),
        answer_bytes: Some(31 * MIB as usize),
        ..FakeConfig::default()
    };
    let fake = FakeLumenore::start(config).await;
    let mut connector = Connector::start(with_key(&fake)).await;
    connector
        .wait_ready(Duration::from_secs(10))
        .await
        .expect("ready");
    let before = peak_rss_kib(connector.pid);
    let started = Instant::now();
    let outcomes = concurrently(&connector, "get_trend_data", 4).await;
    let peak = peak_rss_kib(connector.pid);
    println!(
        "4 concurrent 31 MiB backend answers: connector peak RSS {:.1} MiB (before {:.1} MiB), {:.1}s \
         (target < 150 MB; the whole-body parser took about +1.1 GB)",
        peak as f64 / 1024.0,
        before as f64 / 1024.0,
        started.elapsed().as_secs_f64()
    );
    for outcome in &outcomes {
        let Outcome::Success(envelope) = outcome else {
            panic!("{outcome:?}");
        };
        assert_eq!(envelope["truncated"], true, "{}", envelope["status"]);
        assert_eq!(envelope["data"].as_array().map(Vec::len), Some(1000));
    }
    // Every answer was read to its end (the rows beyond the limit counted, not kept), none cut short.
    let counts = fake.counts();
    assert_eq!(counts.by_endpoint.get("get-trend-data"), Some(&4), "{counts:?}");
    assert_eq!(counts.cancelled, 0, "{counts:?}");
    assert!(peak < 400 * 1024, "peak RSS {peak} KiB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_streams_end_at_the_byte_cap_without_holding_what_they_sent() {
    let config = FakeConfig {
        static_token: Some(KEY.into()),
        endless_stream: true,
        ..FakeConfig::default()
    };
    let fake = FakeLumenore::start(config).await;
    let mut connector = Connector::start(with_key(&fake)).await;
    connector
        .wait_ready(Duration::from_secs(10))
        .await
        .expect("ready");
    let before = peak_rss_kib(connector.pid);
    let started = Instant::now();
    let outcomes = concurrently(&connector, "nlq_to_data", 4).await;
    let peak = peak_rss_kib(connector.pid);
    println!(
        "4 concurrent endless NLQ streams: connector peak RSS {:.1} MiB (before {:.1} MiB), ended after {:.1}s",
        peak as f64 / 1024.0,
        before as f64 / 1024.0,
        started.elapsed().as_secs_f64()
    );
    for outcome in &outcomes {
        let Outcome::ToolError(envelope) = outcome else {
            panic!("{outcome:?}");
        };
        assert_eq!(
            envelope["error"], "the backend response is larger than 33554432 bytes",
            "{envelope}"
        );
    }
    // Each stream sent 32 MiB; the connector kept only the first 1,000 lines of each. Buffering them
    // (the previous reader) costs 4 x 32 MiB and more.
    assert!(
        peak < before + 100 * 1024,
        "peak RSS {peak} KiB, before {before} KiB"
    );
    // The backend saw the connector go away.
    let counts = fake
        .wait_until(Duration::from_secs(5), |c| c.cancelled >= 4)
        .await;
    assert_eq!(counts.cancelled, 4, "{counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_callers_behind_a_hanging_login_share_one_login_and_one_timeout() {
    let config = FakeConfig {
        login_delay: Duration::from_secs(3600),
        ..FakeConfig::default()
    };
    let fake = FakeLumenore::start(config.clone()).await;
    let read_timeout = Duration::from_secs(4);
    let connector = Connector::start(
        ConnectorSpec::lumenore(&fake.url(), &config.client_id, &config.secret)
            .env("LUMENORE_REQUEST_TIMEOUT", "4s")
            .env("LUMENORE_READINESS_INTERVAL", "1h"),
    )
    .await;
    let started = Instant::now();
    let calls = (0..5).map(|_| {
        let url = connector.mcp.clone();
        tokio::spawn(async move {
            let http = http_client(Duration::from_secs(120));
            let outcome = call_tool(&http, &url, "get_trend_data", args()).await;
            (outcome, started.elapsed())
        })
    });
    let mut answered = Vec::new();
    for call in calls.collect::<Vec<_>>() {
        answered.push(call.await.expect("call task"));
    }
    let times: Vec<String> = answered
        .iter()
        .map(|(_, t)| format!("{:.1}s", t.as_secs_f64()))
        .collect();
    let logins = fake.counts().by_endpoint.get("user-login").copied().unwrap_or(0);
    println!(
        "5 callers behind a login that never answers (read timeout 4s): answered at {times:?}; {logins} login requests"
    );
    for (outcome, _) in &answered {
        let Outcome::ToolError(envelope) = outcome else {
            panic!("{outcome:?}");
        };
        assert_eq!(
            envelope["error"], "the Lumenore backend sent nothing for 4s",
            "{envelope}"
        );
    }
    // One login in flight, shared: the start-up readiness check's and at most one more for callers that
    // arrived after it failed. The old lock held across the login made five, one after the other
    // (answers at 4, 8, 12, 16 and 20 s).
    assert!(logins <= 2, "{logins} logins");
    let slowest = answered.iter().map(|(_, t)| *t).max().unwrap();
    assert!(slowest < read_timeout * 3, "the last caller waited {slowest:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_refusing_every_token_gets_a_bounded_number_of_logins() {
    let config = FakeConfig {
        refuse_all_tokens: true,
        ..FakeConfig::default()
    };
    let fake = FakeLumenore::start(config.clone()).await;
    let connector = Connector::start(
        ConnectorSpec::lumenore(&fake.url(), &config.client_id, &config.secret)
            .env("LUMENORE_LOGIN_BACKOFF", "60s"),
    )
    .await;
    let http = http_client(Duration::from_secs(30));
    let mut errors = Vec::new();
    for _ in 0..20 {
        match call_tool(&http, &connector.mcp, "get_dataset_metadata", json!({})).await {
            Outcome::ToolError(envelope) => {
                errors.push(envelope["error"].as_str().unwrap_or_default().to_string())
            }
            other => panic!("{other:?}"),
        }
    }
    let counts = fake.counts();
    println!(
        "20 calls against a backend answering 401 to every token: {} logins, last error: {}",
        counts.logins, errors[19]
    );
    // A login and one re-login (by the readiness check or the first call); then the backoff holds.
    assert!(counts.logins <= 3, "{counts:?}");
    assert!(counts.unauthorized >= 20, "{counts:?}");
    assert!(
        errors[19].starts_with("the Lumenore backend rejected a token it issued less than 1m ago"),
        "{}",
        errors[19]
    );
}

/// A raw backend that answers 200 and half a JSON document, then closes the connection; it counts the
/// connections it got.
async fn half_answer_backend() -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let attempts = Arc::new(AtomicUsize::new(0));
    let counter = attempts.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut request = vec![0u8; 8192];
                let _ = stream.read(&mut request).await;
                if String::from_utf8_lossy(&request).starts_with("GET /api/askme-manager/get-domain") {
                    counter.fetch_add(1, Ordering::SeqCst);
                }
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n{\"data\": {\"resultSet\": [{\"domain_id\": 1},")
                    .await;
                let _ = stream.flush().await;
                // Dropping the stream closes the connection in the middle of the document.
            });
        }
    });
    (url, attempts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_broken_in_the_middle_of_the_answer_is_retried_as_such() {
    let (url, attempts) = half_answer_backend().await;
    let connector = Connector::start(ConnectorSpec {
        env: vec![
            ("LUMENORE_BACKEND".into(), "lumenore".into()),
            ("SERVER_URL".into(), url),
            ("LUMENORE_API_KEY".into(), KEY.into()),
            ("LUMENORE_READINESS_INTERVAL".into(), "1h".into()),
            ("LUMENORE_MAX_RETRIES".into(), "2".into()),
        ],
        args: Vec::new(),
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = attempts.load(Ordering::SeqCst);
    let http = http_client(Duration::from_secs(30));
    let outcome = call_tool(&http, &connector.mcp, "get_dataset_metadata", json!({})).await;
    let Outcome::ToolError(envelope) = outcome else {
        panic!("{outcome:?}");
    };
    assert_eq!(
        envelope["error"], "the connection to the Lumenore backend broke before the answer was complete",
        "{envelope}"
    );
    // Retried, and boundedly: one try and two retries of the connector (the old reader called this "not
    // valid JSON" and tried once). Seen here: 4 or 5 connections, as the HTTP client may itself open a
    // new connection once when the server closed one; what matters is more than one and a bound.
    let tries = attempts.load(Ordering::SeqCst) - before;
    assert!((3..=6).contains(&tries), "{tries} tries");
}
