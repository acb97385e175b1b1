//! A fleet-rollout analysis at scale, against a real Prometheus: a 1,000-tenant wave against a
//! 9,000-tenant baseline. Printed: the size of each query the operator sends, the time the real
//! Prometheus takes to answer them, the operator's CPU per analysis (query building, parsing every
//! query with `promql-parser`, HTTP, decoding, verdicts) and Prometheus' CPU per analysis.
//!
//! Run: `cargo bench -p lumenore-operator --bench analysis` (needs `prometheus` on the PATH;
//! `BENCH_TENANTS=10000` and `BENCH_ROUNDS=5` by default).
//!
//! The series: an exporter in this process serves, for every tenant, what a connector exports
//! (`lumenore_connector_tool_calls_total` by outcome and the `tool_call_duration_seconds` histogram,
//! 15 buckets and +Inf) with the `namespace` and `tenant` labels the chart's PodMonitor adds
//! (`honor_labels`), counters growing with time: about 20 series per tenant. Two layouts of the same
//! tenants: 100 namespaces of 100 tenants, and one tenant per namespace. In both, a side's namespace
//! and tenant sets select no other tenant, so each side is one selector (`exact_by_sets`); before
//! that, one selector per namespace joined by `or` took 71 s and 124 s of Prometheus CPU per analysis
//! for the second layout.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lumenore_operator::rollout::analysis::query::TenantSeries;
use lumenore_operator::rollout::analysis::{self, AnalysisRequest};
use lumenore_operator::rollout::crd::Analysis;
use support::process_cpu_seconds;

const BUCKETS: [f64; 15] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Tenant `i` of the layout: (namespace, tenant).
fn tenant(layout: usize, i: usize) -> (String, String) {
    match layout {
        0 => (format!("team-{:03}", i / 100), format!("t-{i:05}")),
        _ => (format!("ns-{i:05}"), format!("t-{i:05}")),
    }
}

/// The exposition of every tenant of both layouts at `t` seconds: 10 calls a second, 3% errors for
/// tenants below `wave` (the wave: the error-ratio check fails), none for the others; latency around
/// 20 ms.
fn exposition(tenants: usize, wave: usize, t: f64) -> String {
    let mut out = String::with_capacity(tenants * 2 * 20 * 140);
    for layout in 0..2 {
        for i in 0..tenants {
            let (ns, tn) = tenant(layout, i);
            let calls = (t * 10.0).floor();
            let errors = if i < wave {
                (calls * 3.0 / 100.0).floor()
            } else {
                0.0
            };
            let l = format!("namespace=\"{ns}\",tenant=\"{tn}\",tool=\"nlq_to_data\"");
            out.push_str(&format!(
                "lumenore_connector_tool_calls_total{{{l},outcome=\"success\"}} {}\n",
                calls - errors
            ));
            out.push_str(&format!(
                "lumenore_connector_tool_calls_total{{{l},outcome=\"error\"}} {errors}\n"
            ));
            for b in BUCKETS {
                let share = if b >= 0.025 {
                    1.0
                } else if b >= 0.01 {
                    0.5
                } else {
                    0.0
                };
                out.push_str(&format!(
                    "lumenore_connector_tool_call_duration_seconds_bucket{{{l},le=\"{b}\"}} {}\n",
                    (calls * share).floor()
                ));
            }
            out.push_str(&format!(
                "lumenore_connector_tool_call_duration_seconds_bucket{{{l},le=\"+Inf\"}} {calls}\n"
            ));
        }
    }
    out
}

fn serve_exporter(tenants: usize, wave: usize) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let start = Instant::now();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let body = exposition(tenants, wave, start.elapsed().as_secs_f64());
            let mut s = stream;
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(body.as_bytes());
        }
    });
    port
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn pid_cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let env = |k: &str, d: usize| std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d);
    let tenants = env("BENCH_TENANTS", 10_000);
    let rounds = env("BENCH_ROUNDS", 5);
    let wave = tenants / 10;
    let exporter = serve_exporter(tenants, wave);
    let dir = std::env::temp_dir().join(format!("lumenore-bench-analysis-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 20s\n  scrape_timeout: 18s\nscrape_configs:\n- job_name: fleet\n  honor_labels: true\n  static_configs:\n  - targets: ['127.0.0.1:{exporter}']\n"
        ),
    )
    .unwrap();
    let port = free_port();
    let prom = Command::new("prometheus")
        .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
        .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus on the PATH (Debian package `prometheus`)");
    // Killed however main ends: an orphan would hold the build lock this bench ran under.
    let prom = KillOnDrop(prom);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let spec: Analysis = serde_json::from_value(serde_json::json!({
        "prometheus": {"url": format!("http://127.0.0.1:{port}"), "timeoutSeconds": 60},
        "minCalls": 100,
    }))
    .unwrap();
    // The Secrets API is never called: no credential is configured.
    let _in_runtime = rt.enter();
    let client = kube::Client::try_from(kube::Config::new("http://127.0.0.1:9".parse().unwrap())).unwrap();
    let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> = kube::Api::namespaced(client, "ops");

    // Three scrapes in, so every increase() over the window has two samples or more.
    let series = tenants * 2 * 18;
    println!(
        "BENCH analysis: waiting for Prometheus to ingest {series} series three times (scrape every 20 s)"
    );
    let ready = Instant::now();
    let api = rt
        .block_on(analysis::prometheus::QueryApi::connect(
            &spec.prometheus,
            &secrets,
        ))
        .unwrap();
    // Every calls series with an increase over the window: two scrapes of it at least (a scrape of
    // 10,000 tenants takes seconds: the window holds several).
    let want = (tenants * 2 * 2) as f64;
    loop {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let got = rt
            .block_on(api.query("count(increase(lumenore_connector_tool_calls_total[120s]))", now))
            .ok()
            .and_then(|s| s.first().map(|s| s.value));
        if got == Some(want) {
            break;
        }
        assert!(
            ready.elapsed() < Duration::from_secs(300),
            "Prometheus never had the series: {got:?}"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    let waited = ready.elapsed();
    println!("BENCH analysis: Prometheus ready with the series after {waited:.1?}");
    let prom_pid = prom.0.id();

    for layout in 0..2 {
        let side = |range: std::ops::Range<usize>| -> Vec<TenantSeries> {
            range
                .map(|i| {
                    let (namespace, tenant) = tenant(layout, i);
                    TenantSeries { namespace, tenant }
                })
                .collect()
        };
        let fleet: Vec<(String, String)> = (0..tenants).map(|i| tenant(layout, i)).collect();
        let pairs = || fleet.iter().map(|(n, t)| (n.as_str(), t.as_str()));
        let (wave_tenants, baseline_tenants) = (side(0..wave), side(wave..tenants));
        let req = AnalysisRequest {
            wave: "canary".into(),
            wave_by_sets: analysis::query::exact_by_sets(&wave_tenants, pairs()),
            baseline_by_sets: analysis::query::exact_by_sets(&baseline_tenants, pairs()),
            wave_tenants,
            baseline_tenants,
            window_seconds: 120,
        };
        assert!(
            req.wave_by_sets && req.baseline_by_sets,
            "both layouts select each side by its sets"
        );
        let queries = analysis::queries(&spec, &req).unwrap();
        let sizes: Vec<usize> = queries.iter().map(String::len).collect();
        let mut cpu = Vec::new();
        let mut wall = Vec::new();
        let mut prom_cpu = Vec::new();
        let mut last = None;
        for _ in 0..rounds {
            let (c0, p0, t0) = (process_cpu_seconds(), pid_cpu_seconds(prom_pid), Instant::now());
            let at = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs() as i64;
            let run = rt.block_on(analysis::run(&spec, &req, &secrets, at));
            wall.push(t0.elapsed().as_secs_f64());
            cpu.push(process_cpu_seconds() - c0);
            prom_cpu.push(pid_cpu_seconds(prom_pid) - p0);
            last = Some(run);
        }
        let med = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let run = last.unwrap();
        let checks = match &run.outcome {
            Ok(c) => c
                .iter()
                .map(|c| {
                    format!(
                        "{} {} (wave {:?}, baseline {:?})",
                        c.name,
                        c.verdict.as_str(),
                        c.wave,
                        c.baseline
                    )
                })
                .collect::<Vec<_>>()
                .join("; "),
            Err(e) => panic!("the analysis failed: {e}"),
        };
        println!(
            "BENCH analysis {} vs {} tenants, {}: {} queries, {} bytes of PromQL in all (largest {} bytes); per analysis (median of {rounds}): {:.0} ms wall, operator CPU {:.1} ms, Prometheus CPU {:.0} ms; {checks}",
            wave,
            tenants - wave,
            if layout == 0 {
                format!("{} namespaces of 100 tenants", tenants.div_ceil(100))
            } else {
                "one tenant per namespace".to_string()
            },
            queries.len(),
            sizes.iter().sum::<usize>(),
            sizes.iter().max().unwrap(),
            med(&mut wall) * 1000.0,
            med(&mut cpu) * 1000.0,
            med(&mut prom_cpu) * 1000.0,
        );
    }
    drop(prom);
    let _ = std::fs::remove_dir_all(&dir);
}
