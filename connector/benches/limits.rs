//! What a tool call pays for its rate-limit check: the pod's own buckets against the Redis store (one
//! script round trip to a local `redis-server`, started here), in-process through `Limits::admit`, the
//! function the HTTP gate calls. Prints the latency percentiles of one check, this process's CPU time
//! per check and the Redis server's (both from /proc), sequential and with 16 checks at once.
//!
//! `cargo bench -p lumenore-connector --bench limits` (BENCH_CALLS, default 20,000 store checks; 50
//! times as many of the pod's own buckets). Without
//! `redis-server` on PATH the store rows are skipped, with a message.

use std::{
    num::NonZeroU32,
    process::{Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use lumenore_connector::{
    auth::limits::{LimitSettings, Limits, StoreFailure, StoreSettings},
    metrics::Metrics,
};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// utime + stime of `pid` (`self` for this process), from /proc.
fn cpu_time(pid: &str) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // After the name: state is field 3, utime 14 and stime 15 of the whole line.
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|i| fields.get(*i).and_then(|v| v.parse::<u64>().ok()))
        .sum();
    // USER_HZ is 100 on Linux.
    Duration::from_millis(ticks * 10)
}

fn settings() -> LimitSettings {
    // Large enough never to refuse: what is measured is the check, not a refusal.
    let big = NonZeroU32::new(1_000_000_000);
    LimitSettings {
        caller_per_minute: big,
        tenant_per_minute: big,
        max_concurrent_backend_calls: NonZeroU32::new(1024),
        ..Default::default()
    }
}

struct Row {
    p50: Duration,
    p99: Duration,
    own_cpu_per_call: Duration,
    redis_cpu_per_call: Option<Duration>,
}

async fn measure(limits: Arc<Limits>, calls: usize, concurrency: usize, redis_pid: Option<&str>) -> Row {
    let callers: Vec<Arc<str>> = (0..100).map(|i| Arc::from(format!("caller-{i}"))).collect();
    for caller in callers.iter().cycle().take(1_000) {
        let _ = limits.admit(caller).await;
    }
    let own_before = cpu_time("self");
    let redis_before = redis_pid.map(cpu_time);
    let mut tasks = Vec::new();
    for worker in 0..concurrency {
        let (limits, callers) = (limits.clone(), callers.clone());
        tasks.push(tokio::spawn(async move {
            let mut samples = Vec::with_capacity(calls / concurrency);
            for i in 0..calls / concurrency {
                let caller = &callers[(worker + i) % callers.len()];
                let started = Instant::now();
                let admitted = limits.admit(caller).await;
                samples.push(started.elapsed());
                assert!(admitted.is_ok(), "refused: {admitted:?}");
            }
            samples
        }));
    }
    let mut samples = Vec::new();
    for task in tasks {
        samples.extend(task.await.expect("worker"));
    }
    let own = cpu_time("self") - own_before;
    let redis = redis_pid.map(|pid| cpu_time(pid) - redis_before.unwrap_or_default());
    samples.sort_unstable();
    let n = samples.len() as u32;
    Row {
        p50: samples[samples.len() / 2],
        p99: samples[samples.len() * 99 / 100],
        own_cpu_per_call: own / n,
        redis_cpu_per_call: redis.map(|r| r / n),
    }
}

fn print(label: &str, row: &Row) {
    println!(
        "BENCH limits {label}: p50 {:.1} µs, p99 {:.1} µs, this process's CPU {:.2} µs per call{}",
        row.p50.as_secs_f64() * 1e6,
        row.p99.as_secs_f64() * 1e6,
        row.own_cpu_per_call.as_secs_f64() * 1e6,
        row.redis_cpu_per_call.map_or(String::new(), |r| format!(
            ", redis-server's CPU {:.2} µs per call",
            r.as_secs_f64() * 1e6
        )),
    );
}

fn main() {
    let calls = env_usize("BENCH_CALLS", 20_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    println!("rate-limit check per tool call (BENCH_CALLS={calls}; 100 callers; limits never reached)");
    runtime.block_on(async {
        let local = Arc::new(Limits::new(settings(), None, Metrics::new()).expect("limits"));
        // 50 times the calls: a check of the pod's own buckets takes less than /proc's 10 ms tick in all.
        print(
            "pod's own buckets, 1 at once",
            &measure(local.clone(), calls * 50, 1, None).await,
        );
        print(
            "pod's own buckets, 16 at once",
            &measure(local, calls * 50, 16, None).await,
        );

        let Some(server) = std::env::var_os("PATH").and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join("redis-server"))
                .find(|p| p.is_file())
        }) else {
            println!(
                "BENCH limits store: skipped, redis-server is not installed (Debian package redis-server)"
            );
            return;
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let mut redis = Command::new(server)
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server");
        tokio::time::sleep(Duration::from_millis(300)).await;
        let redis_pid = redis.id().to_string();
        let store = StoreSettings {
            url: format!("redis://127.0.0.1:{port}").parse().expect("url"),
            username: None,
            password: None,
            ca_file: None,
            // Generous: a loaded bench machine must not turn a slow answer into a fallback.
            timeout: Duration::from_secs(1),
            failure: StoreFailure::Closed,
            scope: "bench/tenant".into(),
        };
        let stored = Arc::new(Limits::new(settings(), Some(&store), Metrics::new()).expect("limits"));
        print(
            "Redis store (local, loopback), 1 at once",
            &measure(stored.clone(), calls, 1, Some(&redis_pid)).await,
        );
        print(
            "Redis store (local, loopback), 16 at once",
            &measure(stored, calls, 16, Some(&redis_pid)).await,
        );
        let _ = redis.kill();
        let _ = redis.wait();
    });
}
