//! Connector benchmark (a bench binary, not a timed test). Run: `cargo bench -p lumenore-connector`.
//!
//! Starts a local stand-in for the Lumenore backend that answers at once, spawns the real release
//! `lumenore-connector` binary against it with a static token, and measures:
//! - time from process start to `/readyz` = 200;
//! - `tools/call` throughput and latency at 16 concurrent clients, and the latency the connector adds over
//!   calling the backend directly with the same client and concurrency;
//! - the connector process's CPU time per `tools/call` (user + system, from `/proc/<pid>/stat`);
//! - the connector process's resident memory after 100,000 calls.
//!
//! Options (environment): BENCH_CALLS (default 100000), BENCH_CONCURRENCY (default 16), BENCH_PRELOAD (a
//! shared library preloaded into the connector, e.g. `/usr/lib/x86_64-linux-gnu/libjemalloc.so.2`, to
//! compare allocators on the same binary), BENCH_RUST_LOG (default `warn`; `info` writes the audit line of
//! every call to standard error, here /dev/null).

use std::{
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{Json, Router, routing::post};
use serde_json::{Value, json};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn start_backend() -> String {
    let answer = json!({"rows": [["North", 1250.5], ["South", 980.25], ["East", 875.0]], "columns": ["region", "revenue"]});
    let app = Router::new()
        .route(
            "/api/ai-engine/mcp/get-trend-data",
            post(move || async move { Json(answer.clone()) }),
        )
        .route(
            "/api/askme-manager/get-domain",
            axum::routing::get(|| async { Json(json!({"domains": []})) }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{address}")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("VmRSS:"))
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|kib| kib.parse().ok())
        })
        .unwrap_or(0)
}

/// User + system CPU time of a process so far (`/proc/<pid>/stat` fields 14 and 15, in clock ticks).
fn cpu_time(pid: u32) -> Duration {
    let ticks: u64 = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            // Fields after the command name, which is in parentheses and may contain spaces.
            let rest = stat.rsplit_once(')')?.1.to_string();
            let fields: Vec<u64> = rest
                .split_whitespace()
                .skip(11)
                .take(2)
                .filter_map(|f| f.parse().ok())
                .collect();
            Some(fields.iter().sum())
        })
        .unwrap_or(0);
    let per_second: u64 = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(100);
    Duration::from_secs_f64(ticks as f64 / per_second as f64)
}

struct Percentiles {
    p50: Duration,
    p99: Duration,
}

fn percentiles(mut samples: Vec<Duration>) -> Percentiles {
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
    Percentiles {
        p50: at(0.50),
        p99: at(0.99),
    }
}

/// Runs `calls` requests from `concurrency` clients; returns latencies and wall time.
async fn load(
    client: &reqwest::Client,
    url: &str,
    body: Arc<Value>,
    headers: &[(&'static str, &'static str)],
    calls: usize,
    concurrency: usize,
) -> (Vec<Duration>, Duration) {
    let started = Instant::now();
    let per_client = calls / concurrency;
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let client = client.clone();
        let url = url.to_string();
        let body = body.clone();
        let headers = headers.to_vec();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(per_client);
            for _ in 0..per_client {
                let begin = Instant::now();
                let mut request = client.post(&url).json(&*body);
                for (name, value) in &headers {
                    request = request.header(*name, *value);
                }
                let response = request.send().await.expect("request");
                assert!(response.status().is_success(), "status {}", response.status());
                let bytes = response.bytes().await.expect("body");
                assert!(!bytes.is_empty());
                latencies.push(begin.elapsed());
            }
            latencies
        }));
    }
    let mut all = Vec::with_capacity(calls);
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    (all, started.elapsed())
}

struct Connector(Child);

impl Drop for Connector {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::main]
async fn main() {
    lumenore_connector::app::install_crypto_provider();
    let calls = env_usize("BENCH_CALLS", 100_000);
    let concurrency = env_usize("BENCH_CONCURRENCY", 16);
    let backend = start_backend().await;
    let port = free_port();
    let binary = env!("CARGO_BIN_EXE_lumenore-connector");

    let preload = std::env::var("BENCH_PRELOAD").unwrap_or_default();
    let spawned = Instant::now();
    let child = Command::new(binary)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("LD_PRELOAD", &preload)
        .env("SERVER_URL", &backend)
        .env("LUMENORE_API_KEY", "bench-token")
        // BENCH_RUST_LOG=info turns the audit lines on (one per call), as in production.
        .env(
            "RUST_LOG",
            std::env::var("BENCH_RUST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn connector");
    let connector = Connector(child);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency * 2)
        .build()
        .unwrap();
    let readyz = format!("http://127.0.0.1:{port}/readyz");
    let ready_after = loop {
        if let Ok(response) = client.get(&readyz).send().await
            && response.status() == 200
        {
            break spawned.elapsed();
        }
        assert!(
            spawned.elapsed() < Duration::from_secs(10),
            "connector never became ready"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    };

    let mcp_body = Arc::new(json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "get_trend_data", "arguments": {"userQuery": "monthly revenue trend", "schemaId": 35403}}}));
    let mcp_headers = [
        ("accept", "application/json, text/event-stream"),
        ("mcp-protocol-version", "2025-06-18"),
    ];
    let mcp_url = format!("http://127.0.0.1:{port}/mcp");
    let direct_body = Arc::new(json!({"userQuery": "monthly revenue trend", "schemaId": 35403}));
    let direct_url = format!("{backend}/api/ai-engine/mcp/get-trend-data");

    // Warm up both paths (connections, allocator).
    load(
        &client,
        &mcp_url,
        mcp_body.clone(),
        &mcp_headers,
        2_000,
        concurrency,
    )
    .await;
    load(&client, &direct_url, direct_body.clone(), &[], 2_000, concurrency).await;

    let (direct, _) = load(&client, &direct_url, direct_body, &[], calls / 5, concurrency).await;
    let direct = percentiles(direct);
    let cpu_before = cpu_time(connector.0.id());
    let (through, wall) = load(&client, &mcp_url, mcp_body, &mcp_headers, calls, concurrency).await;
    let cpu = cpu_time(connector.0.id()).saturating_sub(cpu_before);
    let done = through.len();
    let through = percentiles(through);
    let rss = rss_kib(connector.0.id());

    let throughput = done as f64 / wall.as_secs_f64();
    let added_p50 = through.p50.saturating_sub(direct.p50);
    let added_p99 = through.p99.saturating_sub(direct.p99);
    println!(
        "lumenore-connector benchmark (cargo bench -p lumenore-connector; BENCH_CALLS={calls} BENCH_CONCURRENCY={concurrency})"
    );
    println!(
        "  machine: {} cores",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
    );
    println!(
        "  ready after start (static token):   {:>8.1} ms   target < 100 ms",
        ready_after.as_secs_f64() * 1e3
    );
    println!(
        "  tools/call throughput:              {throughput:>8.0} calls/s   target >= 5000 ({done} calls in {:.2} s)",
        wall.as_secs_f64()
    );
    println!(
        "  latency through connector p50/p99:  {:>8.3} / {:.3} ms",
        ms(through.p50),
        ms(through.p99)
    );
    println!(
        "  latency backend direct   p50/p99:   {:>8.3} / {:.3} ms",
        ms(direct.p50),
        ms(direct.p99)
    );
    println!(
        "  added latency p50 / p99:            {:>8.3} / {:.3} ms   target p50 < 1 ms",
        ms(added_p50),
        ms(added_p99)
    );
    println!(
        "  connector CPU per tools/call:       {:>8.1} µs   target <= 100 µs ({:.2} s CPU for {done} calls)",
        cpu.as_secs_f64() * 1e6 / done as f64,
        cpu.as_secs_f64()
    );
    if !preload.is_empty() {
        println!("  connector started with LD_PRELOAD={preload}");
    }
    println!(
        "  connector RSS after {done} calls:   {:>8.1} MiB   target < 30 MiB",
        rss as f64 / 1024.0
    );
    drop(connector);
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}
