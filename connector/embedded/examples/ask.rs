//! Ask the demo engine a question from the command line:
//! `cargo run -p lumenore-embedded --example ask -- 35403 nlq "Top 5 sales regions last month"`
//! (tool: nlq | trend | prediction | outlier | correlation | change | pareto | metadata | info).

use lumenore_embedded::{AnalysisKind, Engine};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 2 {
        eprintln!("usage: ask SCHEMA_ID TOOL [QUESTION]");
        std::process::exit(2);
    }
    let engine = Engine::demo().unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(1)
    });
    let id: i64 = args[0].parse().unwrap_or(0);
    let q = args.get(2).map(String::as_str).unwrap_or("");
    let kind = match args[1].as_str() {
        "trend" => Some(AnalysisKind::Trend),
        "prediction" => Some(AnalysisKind::Prediction),
        "outlier" => Some(AnalysisKind::Outlier),
        "correlation" => Some(AnalysisKind::Correlation),
        "change" => Some(AnalysisKind::Change),
        "pareto" => Some(AnalysisKind::Pareto),
        _ => None,
    };
    let out = match (args[1].as_str(), kind) {
        ("metadata", _) => Ok(engine.dataset_metadata()),
        ("info", _) => engine.metadata_info(id),
        (_, Some(k)) => engine.analyze(k, q, id),
        _ => engine.nlq_to_data(q, id),
    };
    match out {
        Ok(v) => println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default()),
        Err(e) => {
            eprintln!("error (caller error: {}): {e}", e.is_caller_error());
            std::process::exit(1);
        }
    }
}
