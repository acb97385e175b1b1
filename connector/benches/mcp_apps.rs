//! What MCP Apps costs (a bench binary, not a timed test). Run: `cargo bench -p lumenore-connector --bench mcp_apps`.
//!
//! Prints the chart view's size (source, as served, and the JSON of a `resources/read` answer) and what the
//! `_meta.ui` entries add to every `tools/list`: bytes, and serialization time of the whole listing with and
//! without them (median of BENCH_ROUNDS rounds of BENCH_LISTS listings each).

use std::time::{Duration, Instant};

use lumenore_connector::{tools, ui};
use rmcp::model::{ListToolsResult, Tool};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn listing(tools: &[Tool]) -> Vec<u8> {
    serde_json::to_vec(&ListToolsResult::with_all_items(tools.to_vec())).expect("serializes")
}

/// Median time of one `tools/list` serialization.
fn per_listing(tools: &[Tool], lists: usize, rounds: usize) -> Duration {
    let mut samples: Vec<Duration> = (0..rounds)
        .map(|_| {
            let started = Instant::now();
            for _ in 0..lists {
                std::hint::black_box(listing(std::hint::black_box(tools)));
            }
            started.elapsed() / lists as u32
        })
        .collect();
    samples.sort();
    samples[rounds / 2]
}

fn main() {
    let lists = env_usize("BENCH_LISTS", 2000);
    let rounds = env_usize("BENCH_ROUNDS", 9).max(1);

    let source = include_str!("../src/ui/chart.html").len();
    let served = ui::chart_html().len();
    let read = serde_json::to_vec(&ui::read(ui::CHART_URI).expect("the view"))
        .expect("serializes")
        .len();
    println!("view source:                  {source} bytes");
    println!("view as served:               {served} bytes (limit 60000)");
    println!("resources/read result JSON:   {read} bytes");

    let with_meta = tools::definitions();
    let without_meta: Vec<Tool> = with_meta
        .iter()
        .cloned()
        .map(|mut tool| {
            tool.meta = None;
            tool
        })
        .collect();
    let charted = with_meta.iter().filter(|tool| tool.meta.is_some()).count();
    let (bytes_with, bytes_without) = (listing(&with_meta).len(), listing(&without_meta).len());
    println!(
        "tools/list result JSON:       {bytes_with} bytes with _meta.ui on {charted} tools, {bytes_without} without: +{} bytes (+{:.1}%)",
        bytes_with - bytes_without,
        100.0 * (bytes_with - bytes_without) as f64 / bytes_without as f64
    );
    let (time_with, time_without) = (
        per_listing(&with_meta, lists, rounds),
        per_listing(&without_meta, lists, rounds),
    );
    println!(
        "tools/list serialization:     {:.1} µs with _meta.ui, {:.1} µs without: {:+.1} µs per listing (median of {rounds} x {lists})",
        time_with.as_secs_f64() * 1e6,
        time_without.as_secs_f64() * 1e6,
        (time_with.as_secs_f64() - time_without.as_secs_f64()) * 1e6
    );
}
