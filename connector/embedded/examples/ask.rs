//! Ask the demo engine a question from the command line:
//! `cargo run -p lumenore-embedded --example ask -- 35403 nlq "Top 5 sales regions last month"`
//! (tool: nlq | trend | prediction | outlier | correlation | change | pareto | metadata | info).
//! With the question `-`, questions are read from standard input, one per line (optionally
//! `tool: question`), and each answer is printed on a few compact lines.

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
    if q == "-" {
        for line in std::io::stdin().lines().map_while(Result::ok) {
            let (tool, question) = match line.split_once(": ") {
                Some((t, rest)) if !t.contains(' ') => (t.to_string(), rest.to_string()),
                _ => (args[1].clone(), line.clone()),
            };
            let k = match tool.as_str() {
                "trend" => Some(AnalysisKind::Trend),
                "prediction" => Some(AnalysisKind::Prediction),
                "outlier" => Some(AnalysisKind::Outlier),
                "correlation" => Some(AnalysisKind::Correlation),
                "change" => Some(AnalysisKind::Change),
                "pareto" => Some(AnalysisKind::Pareto),
                _ => None,
            };
            let out = match k {
                Some(k) => engine.analyze(k, &question, id),
                None => engine.nlq_to_data(&question, id),
            };
            println!("Q [{tool}] {question}");
            match out {
                Ok(v) => {
                    let p = &v["plan"];
                    println!(
                        "  plan: measures={} group_by={} filters={} time={} grain={} order={} limit={} compare={}",
                        p["measures"]
                            .as_array()
                            .map(|m| m
                                .iter()
                                .map(|x| x["output"].to_string())
                                .collect::<Vec<_>>()
                                .join(","))
                            .unwrap_or_default(),
                        p["group_by"],
                        p["filters"],
                        p["time_range"]
                            .get("start")
                            .map(|s| format!("{s}..{}", p["time_range"]["end"]))
                            .unwrap_or_default(),
                        p["time_grain"],
                        p["order"]
                            .get("by")
                            .map(|b| format!("{b} {}", p["order"]["direction"]))
                            .unwrap_or_default(),
                        p["limit"],
                        p["compare"]
                    );
                    let rows = v["rows"].as_array().cloned().unwrap_or_default();
                    for r in rows.iter().take(6) {
                        println!("  row: {r}");
                    }
                    if rows.len() > 6 {
                        println!("  ... {} rows", rows.len());
                    }
                    if let Some(s) = v["analysis"]["summary"].as_str() {
                        println!("  summary: {s}");
                    }
                    println!("  notes: {}", v["notes"]);
                }
                Err(e) => println!("  REFUSED: {e}"),
            }
        }
        return;
    }
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
