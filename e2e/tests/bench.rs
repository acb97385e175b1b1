//! A measurement, printed and not asserted: start-up time to ready, and tools/call throughput and latency
//! of the real connector process against the fake backend answering at once.
//!
//! Reproduce (figures for the README come from a release binary):
//!   cargo build --release -p lumenore-connector
//!   LUMENORE_CONNECTOR_BIN=$CARGO_TARGET_DIR/release/lumenore-connector LUMENORE_E2E_BENCH_SECS=10 \
//!     cargo test -p lumenore-e2e --test bench -- --nocapture
//! Client, fake backend and connector share the machine's cores: the figures are a lower bound.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use lumenore_e2e::{
    connector::{Connector, ConnectorSpec, connector_binary},
    fake_backend::{FakeConfig, FakeLumenore},
    http_client,
    mcp::{Outcome, PROTOCOL_VERSION, call_tool, tool_call},
    percentile,
    tools::find,
};
use serde_json::json;

const CONCURRENCY: usize = 16;
const TOKEN: &str = "bench-static-token";

fn bench_secs() -> u64 {
    std::env::var("LUMENORE_E2E_BENCH_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
}

fn args() -> serde_json::Value {
    json!({"userQuery": "Top 5 sales regions last month", "schemaId": 35403})
}

struct Run {
    calls: usize,
    errors: usize,
    elapsed: Duration,
    p50: Duration,
    p99: Duration,
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} calls in {:.1}s = {:.0} calls/s, p50 {:.3} ms, p99 {:.3} ms, {} errors",
            self.calls,
            self.elapsed.as_secs_f64(),
            self.calls as f64 / self.elapsed.as_secs_f64(),
            self.p50.as_secs_f64() * 1000.0,
            self.p99.as_secs_f64() * 1000.0,
            self.errors
        )
    }
}

/// `CONCURRENCY` workers calling `one` in a loop for `duration`.
async fn load<F, Fut>(duration: Duration, one: F) -> Run
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let one = Arc::new(one);
    let started = Instant::now();
    let deadline = started + duration;
    let workers: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let one = one.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut errors = 0;
                while Instant::now() < deadline && latencies.len() < 2_000_000 {
                    let t = Instant::now();
                    if !one().await {
                        errors += 1;
                    }
                    latencies.push(t.elapsed());
                }
                (latencies, errors)
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut errors = 0;
    for worker in workers {
        let (latencies, e) = worker.await.expect("worker");
        all.extend(latencies);
        errors += e;
    }
    let elapsed = started.elapsed();
    all.sort();
    Run {
        calls: all.len(),
        errors,
        elapsed,
        p50: percentile(&all, 50.0),
        p99: percentile(&all, 99.0),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn measure_startup_throughput_and_latency() {
    let secs = bench_secs();
    let binary = connector_binary();
    let fake = FakeLumenore::start(FakeConfig {
        static_token: Some(TOKEN.into()),
        ..FakeConfig::default()
    })
    .await;
    let spec = ConnectorSpec {
        env: vec![
            ("LUMENORE_BACKEND".into(), "lumenore".into()),
            ("SERVER_URL".into(), fake.url()),
            ("LUMENORE_API_KEY".into(), TOKEN.into()),
            ("RUST_LOG".into(), "warn".into()),
        ],
        args: Vec::new(),
    };

    // Start-up: spawn to /readyz 200 (static token: one metadata call), and the embedded backend's.
    let mut ready_ms = Vec::new();
    for _ in 0..5 {
        let mut connector = Connector::start(spec.clone()).await;
        let ready = connector
            .wait_ready(Duration::from_secs(10))
            .await
            .expect("ready");
        ready_ms.push(ready.as_secs_f64() * 1000.0);
    }
    ready_ms.sort_by(f64::total_cmp);
    let mut embedded_ms = Vec::new();
    for _ in 0..3 {
        let mut connector = Connector::start(ConnectorSpec::embedded()).await;
        let ready = connector
            .wait_ready(Duration::from_secs(30))
            .await
            .expect("ready");
        embedded_ms.push(ready.as_secs_f64() * 1000.0);
    }
    embedded_ms.sort_by(f64::total_cmp);

    let connector = Connector::start(spec).await;
    let duration = Duration::from_secs(secs);

    // Baseline: the fake backend called directly (what the connector itself adds is the difference).
    let http = http_client(Duration::from_secs(10));
    let backend_url = format!("{}/api/ai-engine/mcp/get-trend-data", fake.url());
    let direct = {
        let http = http.clone();
        load(duration, move || {
            let request = http
                .post(&backend_url)
                .bearer_auth(TOKEN)
                .json(&json!({"userQuery": "Top 5 sales regions last month", "schemaId": 35403}))
                .send();
            async move {
                match request.await {
                    Ok(response) => response.status().is_success() && response.bytes().await.is_ok(),
                    Err(_) => false,
                }
            }
        })
        .await
    };
    let rss_before = connector.rss_kib().unwrap_or(0);
    let through = {
        let http = http.clone();
        let url = connector.mcp.clone();
        load(duration, move || {
            let http = http.clone();
            let url = url.clone();
            async move {
                matches!(
                    call_tool(&http, &url, "get_trend_data", args()).await,
                    Outcome::Success(_)
                )
            }
        })
        .await
    };
    let rss_after = connector.rss_kib().unwrap_or(0);
    let added_p50 = through.p50.saturating_sub(direct.p50);
    let added_p99 = through.p99.saturating_sub(direct.p99);

    println!(
        "=== lumenore-connector e2e measurement ({}), {CONCURRENCY} concurrent clients, {secs}s each ===",
        binary.display()
    );
    println!(
        "start-up to ready, static token, fake backend: min {:.0} ms, median {:.0} ms (5 runs)",
        ready_ms[0], ready_ms[2]
    );
    println!(
        "start-up to ready, embedded demo catalog: min {:.0} ms, median {:.0} ms (3 runs)",
        embedded_ms[0], embedded_ms[1]
    );
    println!("backend alone (get-trend-data):     {direct}");
    println!("tools/call get_trend_data via connector: {through}");
    println!(
        "added latency: p50 {:.3} ms, p99 {:.3} ms; connector VmRSS {rss_before} KiB before, {rss_after} KiB after {} calls",
        added_p50.as_secs_f64() * 1000.0,
        added_p99.as_secs_f64() * 1000.0,
        through.calls
    );

    // The same with hey (Debian), when installed: an independent load generator.
    if let Some(hey) = find("hey") {
        let body = tool_call(1, "get_trend_data", args()).to_string();
        let accept = "Accept: application/json, text/event-stream".to_string();
        let version = format!("MCP-Protocol-Version: {PROTOCOL_VERSION}");
        let duration_arg = format!("{secs}s");
        let concurrency = CONCURRENCY.to_string();
        let hey_args = [
            "-z",
            &duration_arg,
            "-c",
            &concurrency,
            "-m",
            "POST",
            "-T",
            "application/json",
            "-H",
            &accept,
            "-H",
            &version,
            "-d",
            &body,
            &connector.mcp,
        ];
        let output = tokio::process::Command::new(&hey)
            .args(hey_args)
            .output()
            .await
            .expect("hey");
        let text = String::from_utf8_lossy(&output.stdout);
        println!(
            "hey {}:",
            hey_args
                .map(|a| if a.contains(' ') {
                    format!("'{a}'")
                } else {
                    a.to_string()
                })
                .join(" ")
        );
        for line in text.lines().filter(|l| {
            let l = l.trim();
            l.starts_with("Requests/sec")
                || l.starts_with("Average")
                || l.starts_with("50%")
                || l.starts_with("99%")
                || l.starts_with('[')
        }) {
            println!("  {}", line.trim());
        }
    } else {
        println!("hey not installed (bash .ci/install-tools.sh): Rust load loop only");
    }
    println!(
        "reproduce: cargo build --release -p lumenore-connector && LUMENORE_CONNECTOR_BIN=<target>/release/lumenore-connector \
         LUMENORE_E2E_BENCH_SECS=10 cargo test -p lumenore-e2e --test bench -- --nocapture"
    );
    assert!(through.calls > 0 && direct.calls > 0);
    let report = connector.stop(Duration::from_secs(10)).await;
    assert_eq!(report.status.code(), Some(0), "{}", report.logs);
}
