//! The evaluation command: asks the demo engine every question of `eval/expected.json` (truths computed
//! independently by DuckDB, see eval/README.md) and prints `N/M correct, R refused, W wrong`, the wrong
//! answers first, then the refusals.
//!
//! `cargo run -p lumenore-embedded --release --example eval [-- [--show] ID ...]`: IDs or id prefixes
//! (e.g. `S0 A04`) select questions; `--show` also prints each selected question's truth and the engine's
//! full answer (for reviewing answers judged correct as well).

#[path = "../eval/evaluate.rs"]
mod evaluate;

use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let show = args.iter().any(|a| a == "--show");
    let only: Vec<&String> = args.iter().filter(|a| *a != "--show").collect();
    let expected = evaluate::load_expected().unwrap_or_else(|e| {
        eprintln!("cannot read the truths: {e}");
        std::process::exit(2)
    });
    let started = Instant::now();
    let engine = lumenore_embedded::Engine::demo().unwrap_or_else(|e| {
        eprintln!("demo engine: {e}");
        std::process::exit(2)
    });
    let loaded = started.elapsed();
    let keep = |id: &str| only.is_empty() || only.iter().any(|p| id.starts_with(p.as_str()));
    let report = evaluate::evaluate(&engine, &expected, &keep);
    if show {
        for q in expected.questions.iter().filter(|q| keep(&q.id)) {
            println!("== {} [{}] {:?}", q.id, q.tool, q.question);
            println!(
                "truth: columns {:?} rows {}",
                q.columns,
                serde_json::json!(q.rows)
            );
            if !q.derived.is_empty() {
                println!("derived: {}", serde_json::Value::Object(q.derived.clone()));
            }
            println!("{}\n", evaluate::show_answer(&engine, q));
        }
    }
    print!("{}", report.render());
    eprintln!(
        "(engine loaded in {:.2} s, questions answered in {:.2} s)",
        loaded.as_secs_f64(),
        (started.elapsed() - loaded).as_secs_f64()
    );
    if !report.wrong_ids().is_empty() {
        std::process::exit(1);
    }
}
