//! Benchmark of the embedded engine on the demo sales dataset (35403). Not a test: it prints numbers.
//!
//! Reproduce: `CARGO_TARGET_DIR=/work/target-embedded cargo bench -p lumenore-embedded --bench engine`
//! Targets (issues 5 and 10): nlq_to_data p50 < 50 ms, each analysis p50 < 200 ms, RSS < 300 MB,
//! ready < 2 s.

use std::time::{Duration, Instant};

use lumenore_embedded::{AnalysisKind, Engine};

const SALES: i64 = 35403;

const QUESTIONS: &[&str] = &[
    "Top 5 sales regions last month",
    "Show me total sales by region for Q4 2024, sorted by highest sales",
    "monthly revenue by category in 2025",
    "average units by channel and region past 90 days",
    "how many transactions in the West region last quarter",
    "daily revenue for Laptop last month",
    "bottom 3 products by units sold this year",
    "total cost by product between 2024-03-01 and 2024-09-30",
    "online vs retail revenue in 2025",
    "revenue this year vs last year by region",
    "average daily revenue in March 2025",
    "which 3 products had the highest profit in H1 2025",
];

fn analysis_question(kind: AnalysisKind) -> &'static str {
    match kind {
        AnalysisKind::Trend => "What are the monthly sales trends by region?",
        AnalysisKind::Prediction => "Predict revenue for the next 3 months",
        AnalysisKind::Outlier => "Find unusual daily revenue",
        AnalysisKind::Correlation => "How do revenue, units and cost correlate by day?",
        AnalysisKind::Change => "Have there been any significant changes in sales recently?",
        AnalysisKind::Pareto => "Which products contribute to 80% of our sales?",
    }
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// CPU time this thread has run, from /proc/thread-self/schedstat (ns); the machine is shared, so
/// CPU time per call is reported next to wall time.
fn cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

/// Wall time and CPU time of one call.
fn timed<T>(f: impl FnOnce() -> T) -> (Duration, Duration, T) {
    let c = cpu_ns();
    let t = Instant::now();
    let out = f();
    let wall = t.elapsed();
    (wall, Duration::from_nanos(cpu_ns().saturating_sub(c)), out)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn rss_mb() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn main() {
    let load_before = load_average();
    let (load, load_cpu, engine) = timed(|| Engine::demo().expect("demo engine loads"));

    // nlq_to_data: 40 rounds over the question set
    let mut times = Vec::new();
    let mut cpu = Vec::new();
    for _ in 0..40 {
        for q in QUESTIONS {
            let (w, c, out) = timed(|| engine.nlq_to_data(q, SALES).expect("question answers"));
            times.push(w);
            cpu.push(c);
            std::hint::black_box(out);
        }
    }
    times.sort();
    cpu.sort();
    let nlq = (pct(&times, 0.5), pct(&times, 0.99), pct(&cpu, 0.5));

    let mut analysis = Vec::new();
    let mut asked: Vec<(AnalysisKind, &str)> = AnalysisKind::ALL
        .iter()
        .map(|k| (*k, analysis_question(*k)))
        .collect();
    // the slowest analysis, also on the planted monthly shift
    asked.push((AnalysisKind::Change, "detect changes in monthly revenue"));
    for (kind, q) in asked {
        let mut t = Vec::new();
        let mut c = Vec::new();
        for _ in 0..15 {
            let (w, cc, out) = timed(|| engine.analyze(kind, q, SALES).expect("analysis answers"));
            t.push(w);
            c.push(cc);
            std::hint::black_box(out);
        }
        t.sort();
        c.sort();
        analysis.push((kind, q, pct(&t, 0.5), pct(&t, 0.99), pct(&c, 0.5)));
    }
    let rss = rss_mb();

    println!("lumenore-embedded engine benchmark (demo sales dataset, schema {SALES})");
    println!(
        "reproduce: CARGO_TARGET_DIR=/work/target-embedded cargo bench -p lumenore-embedded --bench engine"
    );
    println!(
        "load average at start: {load_before}; at end: {} (2-core shared machine: wall times include waiting for the CPU; cpu = this thread's CPU time)",
        load_average()
    );
    println!(
        "load-to-ready (3 datasets, {} rows of sales): wall {}  cpu {}  [target < 2 s]",
        engine.dataset_metadata()["domains"][0]["datasets"][0]["rowCount"],
        ms(load),
        ms(load_cpu)
    );
    println!(
        "nlq_to_data over {} calls: p50 {}  p99 {}  cpu p50 {}  [target p50 < 50 ms]",
        times.len(),
        ms(nlq.0),
        ms(nlq.1),
        ms(nlq.2)
    );
    for (kind, q, p50, p99, cpu50) in analysis {
        println!(
            "{:<12} p50 {:>10}  p99 {:>10}  cpu p50 {:>10}  [target p50 < 200 ms]  {q:?}",
            kind.as_str(),
            ms(p50),
            ms(p99),
            ms(cpu50)
        );
    }
    match rss {
        Some(mb) => println!("resident memory (VmRSS): {mb:.1} MB  [target < 300 MB]"),
        None => println!("resident memory: /proc/self/status not readable"),
    }
}
