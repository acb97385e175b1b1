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
//! Options (environment): LUMENORE_CONNECTOR_BIN (the binary to measure; default the bench's own build),
//! BENCH_CALLS (default 100000), BENCH_CONCURRENCY (default 16), BENCH_PRELOAD (a
//! shared library preloaded into the connector, e.g. `/usr/lib/x86_64-linux-gnu/libjemalloc.so.2`, to
//! compare allocators on the same binary), BENCH_RUST_LOG (default `warn`; `info` writes the audit line of
//! every call to standard error, here /dev/null).
//!
//! `BENCH_MODE=burst`: instead, 1,000 clients (BENCH_CLIENTS), each on its own connection, make 3 calls
//! each at once against a backend stand-in that answers after 50 ms (BENCH_BACKEND_DELAY_MS), twice; the
//! connector's resident memory is printed before, at the peak, and every few seconds for 30 s after each
//! burst (target: back under 40 MiB within 30 s). The connector's cap on concurrent backend calls is
//! raised to the number of clients (BENCH_MAX_CONCURRENT_BACKEND_CALLS), so that every call is served.
//!
//! `BENCH_MODE=otel`: instead, the connector's CPU time per call (from /proc) with trace export off and on
//! (OTLP/HTTP to a local sink), with every call sampled and with 10% of traces sampled, interleaved runs of
//! BENCH_CALLS (default 20000) calls each, BENCH_ROUNDS runs in all (default 6, two of each); the median of each.
//! CPU time on a shared 2-core machine varies by ±15% between runs of the same binary (the load generator
//! shares the cores), so:
//!
//! `BENCH_MODE=otel-instructions`: the same configurations plus "on, none sampled", each with the connector
//! run under valgrind's callgrind, which counts the instructions the connector executes for BENCH_CALLS
//! (default 2000) calls after a warm-up, export included (repeatable to a fraction of a percent whatever else
//! runs; kernel time is not counted). Needs `valgrind` (Debian package); says so and stops without it.
//! `BENCH_CALLGRIND_DIR=dir` keeps the callgrind outputs there: with a binary built with
//! `CARGO_PROFILE_RELEASE_STRIP=false`, `callgrind_annotate --inclusive=yes` shows where a call's
//! instructions go.

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
    start_backend_with_delay(Duration::ZERO).await
}

/// The backend stand-in; every answer waits `delay` first (so that a burst's calls overlap).
async fn start_backend_with_delay(delay: Duration) -> String {
    let answer = json!({"rows": [["North", 1250.5], ["South", 980.25], ["East", 875.0]], "columns": ["region", "revenue"]});
    let app = Router::new()
        .route(
            "/api/ai-engine/mcp/get-trend-data",
            post(move || async move {
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                Json(answer.clone())
            }),
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

/// The connector binary to measure: `LUMENORE_CONNECTOR_BIN` when set (e.g. the `cargo build --release`
/// binary as shipped: cargo builds the bench's own copy with the dev-dependencies' features unified in; here
/// the two counted within 1% of each other), else the one cargo built for this bench.
fn connector_binary() -> String {
    std::env::var("LUMENORE_CONNECTOR_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_lumenore-connector").to_string())
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
    match std::env::var("BENCH_MODE").as_deref() {
        Ok("otel") => return otel_mode().await,
        Ok("otel-instructions") => return otel_instructions_mode().await,
        Ok("burst") => return burst_mode().await,
        _ => {}
    }
    let calls = env_usize("BENCH_CALLS", 100_000);
    let concurrency = env_usize("BENCH_CONCURRENCY", 16);
    let backend = start_backend().await;
    let port = free_port();
    let binary = &connector_binary();

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

/// CPU seconds (user + system) the process `pid` used so far.
/// User and system CPU seconds of a process so far (`/proc/<pid>/stat`).
fn user_system_seconds(pid: u32) -> (f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which is in parentheses): utime and stime are the 12th and 13th.
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) / 100.0, ticks(12) / 100.0)
}

/// Context switches of all of a process's threads so far (voluntary + involuntary, `/proc/<pid>/task/*/status`).
fn context_switches(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("status")).ok())
        .flat_map(|status| {
            status
                .lines()
                .filter(|line| line.contains("ctxt_switches:"))
                .filter_map(|line| line.split_whitespace().nth(1)?.parse::<u64>().ok())
                .collect::<Vec<_>>()
        })
        .sum()
}

/// An OTLP/HTTP sink: answers every export with 200 and counts requests and bytes.
async fn start_otlp_sink() -> (
    String,
    Arc<std::sync::atomic::AtomicU64>,
    Arc<std::sync::atomic::AtomicU64>,
) {
    use std::sync::atomic::{AtomicU64, Ordering};
    let requests = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let (r, b) = (requests.clone(), bytes.clone());
    let app = Router::new().route(
        "/v1/traces",
        post(move |body: axum::body::Bytes| {
            r.fetch_add(1, Ordering::Relaxed);
            b.fetch_add(body.len() as u64, Ordering::Relaxed);
            async { ([("content-type", "application/x-protobuf")], Vec::<u8>::new()) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{address}"), requests, bytes)
}

/// Trace export cost: CPU per call of the connector with export off and on, alternating runs.
async fn otel_mode() {
    use std::sync::atomic::Ordering;
    let calls = env_usize("BENCH_CALLS", 20_000);
    let concurrency = env_usize("BENCH_CONCURRENCY", 16);
    let TraceBench {
        backend,
        sink,
        exports,
        exported_bytes,
        binary,
        client,
        body,
        headers,
    } = TraceBench::start(concurrency).await;
    let binary = &binary;
    // Three configurations, interleaved: export off; on, every call sampled (the client's traceparent
    // says sampled); on, 10% of traces sampled by trace id (OTEL_TRACES_SAMPLER=traceidratio).
    let mut per_call = [Vec::new(), Vec::new(), Vec::new()];
    let rounds = env_usize("BENCH_ROUNDS", 6).max(3);
    for round in 0..rounds {
        let mode = round % 3;
        let on = mode > 0;
        let port = free_port();
        let mut command = Command::new(binary);
        otel_configure(&mut command, port, &backend, &sink, OtelMode::ALL[mode]);
        let connector = Connector(command.spawn().expect("spawn connector"));
        let url = format!("http://127.0.0.1:{port}");
        wait_ready(&client, &url).await;
        let mcp = format!("{url}/mcp");
        let headers = OtelMode::ALL[mode].headers(&headers);
        load(&client, &mcp, body.clone(), headers, 2_000, concurrency).await;
        let pid = connector.0.id();
        let (user_before, system_before) = user_system_seconds(pid);
        let switches_before = context_switches(pid);
        let (_, wall) = load(&client, &mcp, body.clone(), headers, calls, concurrency).await;
        // Let the last batch go out, so its export is counted.
        tokio::time::sleep(Duration::from_millis(if on { 6_000 } else { 100 })).await;
        let (user_after, system_after) = user_system_seconds(pid);
        let (user, system) = (user_after - user_before, system_after - system_before);
        let switches = context_switches(pid) - switches_before;
        let cpu = user + system;
        per_call[mode].push(cpu / calls as f64);
        let us = |seconds: f64| seconds / calls as f64 * 1e6;
        println!(
            "  run {}: export {:<16}  {calls} calls in {:.2} s, connector CPU {:.2} s = {:.1} us/call (user {:.1}, system {:.1}; {:.1} context switches/call)",
            round + 1,
            OtelMode::ALL[mode].label(),
            wall.as_secs_f64(),
            cpu,
            us(cpu),
            us(user),
            us(system),
            switches as f64 / calls as f64
        );
    }
    // The median of each configuration's runs: one run disturbed by the machine moves it least.
    let median = |runs: &Vec<f64>| {
        let mut runs = runs.clone();
        runs.sort_by(f64::total_cmp);
        let mid = runs.len() / 2;
        if runs.len().is_multiple_of(2) {
            (runs[mid - 1] + runs[mid]) / 2.0
        } else {
            runs[mid]
        }
    };
    let off = median(&per_call[0]);
    println!(
        "lumenore-connector trace export cost (BENCH_MODE=otel; BENCH_CALLS={calls} BENCH_CONCURRENCY={concurrency}; median of {} runs each)",
        rounds / 3
    );
    println!("  CPU per call, export off:             {:>8.1} us", off * 1e6);
    for (mode, runs) in OtelMode::ALL.iter().zip(&per_call).skip(1) {
        let on = median(runs);
        println!(
            "  CPU per call, export {:<16}: {:>8.1} us   (+{:.1}%, target < 5%)",
            mode.label(),
            on * 1e6,
            (on / off - 1.0) * 100.0
        );
    }
    println!(
        "  OTLP exports received: {} ({:.0} KiB)",
        exports.load(Ordering::Relaxed),
        exported_bytes.load(Ordering::Relaxed) as f64 / 1024.0
    );
}

/// What both trace benchmarks start with: the backend stand-in, the OTLP sink (and its counts of exports and
/// bytes), the binary to measure, a client for `concurrency` callers, and the call with its headers (the last
/// a client's sampled `traceparent`).
struct TraceBench {
    backend: String,
    sink: String,
    exports: Arc<std::sync::atomic::AtomicU64>,
    exported_bytes: Arc<std::sync::atomic::AtomicU64>,
    binary: String,
    client: reqwest::Client,
    body: Arc<Value>,
    headers: [(&'static str, &'static str); 3],
}

impl TraceBench {
    async fn start(concurrency: usize) -> TraceBench {
        let backend = start_backend().await;
        let (sink, exports, exported_bytes) = start_otlp_sink().await;
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(concurrency * 2)
            .build()
            .unwrap();
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "get_trend_data", "arguments": {"userQuery": "monthly revenue trend", "schemaId": 35403}}});
        let headers = [
            ("accept", "application/json, text/event-stream"),
            ("mcp-protocol-version", "2025-06-18"),
            (
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
        ];
        TraceBench {
            backend,
            sink,
            exports,
            exported_bytes,
            binary: connector_binary(),
            client,
            body: Arc::new(body),
            headers,
        }
    }
}

/// A configuration of trace export for the benchmark.
#[derive(Clone, Copy, PartialEq)]
enum OtelMode {
    Off,
    AllSampled,
    TenPercent,
    NoneSampled,
}

impl OtelMode {
    const ALL: [OtelMode; 4] = [
        OtelMode::Off,
        OtelMode::AllSampled,
        OtelMode::TenPercent,
        OtelMode::NoneSampled,
    ];

    fn label(self) -> &'static str {
        match self {
            OtelMode::Off => "off",
            OtelMode::AllSampled => "on, all sampled",
            OtelMode::TenPercent => "on, 10% sampled",
            OtelMode::NoneSampled => "on, none sampled",
        }
    }

    /// The request headers: with the client's sampled `traceparent` when every call is sampled by it. A
    /// trace-id ratio decides per trace id, so the 10% runs send none and each call starts a trace of its own
    /// (one fixed client trace id would be all in or all out).
    fn headers<'a>(self, all: &'a [(&'static str, &'static str)]) -> &'a [(&'static str, &'static str)] {
        match self {
            OtelMode::Off | OtelMode::AllSampled => all,
            OtelMode::TenPercent | OtelMode::NoneSampled => &all[..2],
        }
    }
}

/// The connector's arguments and environment for one export configuration.
fn otel_configure(command: &mut Command, port: u16, backend: &str, sink: &str, mode: OtelMode) {
    command
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("SERVER_URL", backend)
        .env("LUMENORE_API_KEY", "bench-token")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if mode != OtelMode::Off {
        command
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", sink)
            .env("OTEL_BSP_MAX_QUEUE_SIZE", "65536");
    }
    match mode {
        OtelMode::TenPercent => {
            command
                .env("OTEL_TRACES_SAMPLER", "traceidratio")
                .env("OTEL_TRACES_SAMPLER_ARG", "0.1");
        }
        OtelMode::NoneSampled => {
            command.env("OTEL_TRACES_SAMPLER", "always_off");
        }
        _ => {}
    }
}

/// Trace export cost in instructions: each configuration with the connector under callgrind.
async fn otel_instructions_mode() {
    let calls = env_usize("BENCH_CALLS", 2_000);
    let concurrency = env_usize("BENCH_CONCURRENCY", 4);
    if !Command::new("valgrind")
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success())
    {
        println!("BENCH_MODE=otel-instructions skipped: valgrind is not installed (Debian package valgrind)");
        return;
    }
    let TraceBench {
        backend,
        sink,
        binary,
        client,
        body,
        headers,
        ..
    } = TraceBench::start(concurrency).await;
    let binary = &binary;
    // BENCH_CALLGRIND_DIR keeps the callgrind outputs (for callgrind_annotate on an unstripped binary).
    let keep = std::env::var_os("BENCH_CALLGRIND_DIR").map(std::path::PathBuf::from);
    let out_dir = keep.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("lumenore-bench-callgrind-{}", std::process::id()))
    });
    std::fs::create_dir_all(&out_dir).unwrap();
    let mut per_call = Vec::new();
    for mode in OtelMode::ALL {
        let port = free_port();
        let out = out_dir.join(format!("callgrind.out.{port}"));
        let mut command = Command::new("valgrind");
        command.args([
            "--tool=callgrind",
            "--instr-atstart=no",
            &format!("--callgrind-out-file={}", out.display()),
            binary,
        ]);
        otel_configure(&mut command, port, &backend, &sink, mode);
        let mut connector = Connector(command.spawn().expect("spawn valgrind"));
        let url = format!("http://127.0.0.1:{port}");
        wait_ready_within(&client, &url, Duration::from_secs(300)).await;
        let mcp = format!("{url}/mcp");
        let headers = mode.headers(&headers);
        load(&client, &mcp, body.clone(), headers, 200, concurrency).await;
        let pid = connector.0.id().to_string();
        let on = Command::new("callgrind_control")
            .args(["-i", "on", &pid])
            .output()
            .expect("callgrind_control");
        assert!(on.status.success(), "callgrind_control -i on failed");
        load(&client, &mcp, body.clone(), headers, calls, concurrency).await;
        // The batch processor exports every 5 s: wait for the last batch, then stop (SIGTERM flushes the rest).
        tokio::time::sleep(Duration::from_secs(6)).await;
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let _ = connector.0.wait();
        let text = std::fs::read_to_string(&out).expect("callgrind output");
        let total: u64 = text
            .lines()
            .filter_map(|line| line.strip_prefix("totals:"))
            .filter_map(|n| n.trim().parse::<u64>().ok())
            .sum();
        let each = total as f64 / calls as f64;
        println!(
            "  export {:<16}  {calls} calls, {total} instructions = {each:.0} per call",
            mode.label()
        );
        per_call.push(each);
    }
    if keep.is_none() {
        let _ = std::fs::remove_dir_all(&out_dir);
    }
    println!(
        "lumenore-connector trace export cost in instructions (BENCH_MODE=otel-instructions; BENCH_CALLS={calls} BENCH_CONCURRENCY={concurrency}; callgrind)"
    );
    println!(
        "  instructions per call, export off:             {:>9.0}",
        per_call[0]
    );
    for (mode, each) in OtelMode::ALL.iter().zip(&per_call).skip(1) {
        println!(
            "  instructions per call, export {:<16}: {:>9.0}   (+{:.1}%, target < 5%)",
            mode.label(),
            each,
            (each / per_call[0] - 1.0) * 100.0
        );
    }
}

/// Memory after bursts of clients: RSS before, sampled peak, and over the 30 s after each burst.
async fn burst_mode() {
    use std::sync::atomic::{AtomicU64, Ordering};
    let clients = env_usize("BENCH_CLIENTS", 1000);
    let backend_calls = env_usize("BENCH_MAX_CONCURRENT_BACKEND_CALLS", clients).to_string();
    let delay = Duration::from_millis(env_usize("BENCH_BACKEND_DELAY_MS", 50) as u64);
    let backend = start_backend_with_delay(delay).await;
    let port = free_port();
    let binary = &connector_binary();
    let preload = std::env::var("BENCH_PRELOAD").unwrap_or_default();
    let child = Command::new(binary)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("LD_PRELOAD", &preload)
        .env("SERVER_URL", &backend)
        .env("LUMENORE_API_KEY", "bench-token")
        .env("RUST_LOG", "warn")
        // The burst is the point: no per-caller or tenant rate limit refuses part of it.
        .env("LUMENORE_AUTH_MODE", "none")
        .env("LUMENORE_ALLOW_UNAUTHENTICATED", "true")
        // Every call of the burst served at once (the default cap, 64, answers the rest 429 at once).
        .env("LUMENORE_MAX_CONCURRENT_BACKEND_CALLS", &backend_calls)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn connector");
    let connector = Connector(child);
    let pid = connector.0.id();
    let base = format!("http://127.0.0.1:{port}");
    let probe = reqwest::Client::new();
    wait_ready(&probe, &base).await;
    let mcp = format!("{base}/mcp");
    let body = Arc::new(json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "get_trend_data", "arguments": {"userQuery": "monthly revenue trend", "schemaId": 35403}}}));
    // A few calls first, so the idle figure includes what any first call sets up.
    load(&probe, &mcp, body.clone(), &MCP_HEADERS, 64, 4).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = rss_kib(pid);
    println!(
        "lumenore-connector memory after bursts (BENCH_MODE=burst; {clients} clients x 3 calls, each client on its own connection, backend answers after {} ms, LUMENORE_MAX_CONCURRENT_BACKEND_CALLS={backend_calls})",
        delay.as_millis()
    );
    println!("  idle before:           {:>7.1} MiB", mib(idle));
    for round in 1..=2 {
        let peak = Arc::new(AtomicU64::new(0));
        let sampling = {
            let peak = peak.clone();
            tokio::spawn(async move {
                loop {
                    peak.fetch_max(rss_kib(pid), Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        };
        let barrier = Arc::new(tokio::sync::Barrier::new(clients));
        let started = Instant::now();
        let tasks: Vec<_> = (0..clients)
            .map(|_| {
                let (mcp, body, barrier) = (mcp.clone(), body.clone(), barrier.clone());
                tokio::spawn(async move {
                    // Its own client: its own connection.
                    let client = reqwest::Client::builder()
                        .pool_max_idle_per_host(1)
                        .build()
                        .unwrap();
                    barrier.wait().await;
                    let mut statuses = Vec::with_capacity(3);
                    for _ in 0..3 {
                        let mut request = client.post(&mcp).json(&*body);
                        for (name, value) in MCP_HEADERS {
                            request = request.header(name, value);
                        }
                        statuses.push(match request.send().await {
                            Ok(response) => {
                                let status = response.status().as_u16();
                                match response.bytes().await {
                                    Ok(_) => status,
                                    Err(_) => 0,
                                }
                            }
                            Err(_) => 0,
                        });
                    }
                    statuses
                })
            })
            .collect();
        let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
        for task in tasks {
            for status in task.await.unwrap_or_default() {
                *statuses.entry(status).or_default() += 1;
            }
        }
        let ok = statuses.get(&200).copied().unwrap_or(0);
        let elapsed = started.elapsed();
        sampling.abort();
        println!(
            "  burst {round}: {ok}/{} calls answered 200 in {:.2} s (HTTP status: count {statuses:?}, 0 = no answer); peak {:>7.1} MiB",
            clients * 3,
            elapsed.as_secs_f64(),
            mib(peak.load(Ordering::Relaxed))
        );
        let after = Instant::now();
        let mut line = String::from("    after the burst:");
        for second in [1u64, 2, 5, 10, 20, 30] {
            tokio::time::sleep_until((after + Duration::from_secs(second)).into()).await;
            line.push_str(&format!(" {second}s {:.1}", mib(rss_kib(pid))));
        }
        let at_30 = rss_kib(pid);
        println!("{line} MiB");
        println!(
            "    RSS 30 s after burst {round}: {:>7.1} MiB   target < 40 MiB ({})",
            mib(at_30),
            if mib(at_30) < 40.0 { "met" } else { "NOT met" }
        );
    }
    if !preload.is_empty() {
        println!("  connector started with LD_PRELOAD={preload}");
    }
}

const MCP_HEADERS: [(&str, &str); 2] = [
    ("accept", "application/json, text/event-stream"),
    ("mcp-protocol-version", "2025-06-18"),
];

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Polls `{base}/readyz` until it answers 200; panics after 60 s (a connector that never starts).
async fn wait_ready(client: &reqwest::Client, base: &str) {
    wait_ready_within(client, base, Duration::from_secs(60)).await
}

async fn wait_ready_within(client: &reqwest::Client, base: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    while !matches!(client.get(format!("{base}/readyz")).send().await, Ok(r) if r.status() == 200) {
        assert!(
            Instant::now() < deadline,
            "the connector at {base} was not ready within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
