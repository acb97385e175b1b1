//! Engine-level behaviour: bundled data is reproducible, catalogs load from disk with precise errors,
//! metadata shapes, and concurrent use from many threads.

use std::sync::Arc;

use lumenore_embedded::{AnalysisKind, Engine, EngineError, demo};

#[test]
fn regenerating_the_demo_data_reproduces_the_committed_files_byte_for_byte() {
    let generated = demo::generate();
    assert_eq!(generated.len(), demo::FILES.len());
    for ((name, bytes), (fname, committed)) in generated.iter().zip(demo::FILES) {
        assert_eq!(name, fname);
        assert!(
            bytes.as_slice() == *committed,
            "{name} differs from the committed file: run gen-demo-data"
        );
        let on_disk = std::fs::read(format!("{}/demo/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap();
        assert!(on_disk == *bytes, "{name} on disk differs");
    }
}

#[test]
fn demo_datasets_meet_the_issue_sizes() {
    let e = Engine::demo().unwrap();
    let md = e.dataset_metadata();
    let ds = md["domains"][0]["datasets"].as_array().unwrap();
    let ids: Vec<i64> = ds.iter().map(|d| d["schemaId"].as_i64().unwrap()).collect();
    assert_eq!(ids, [35403, 35404, 35405]);
    assert!(ds[0]["rowCount"].as_u64().unwrap() >= 100_000);
    assert_eq!(ds[0]["dataFrom"], "2024-01-01");
    assert_eq!(ds[0]["dataTo"], "2025-12-31");
    for d in ds {
        assert!(!d["schemaName"].as_str().unwrap().is_empty());
        assert!(!d["description"].as_str().unwrap().is_empty());
    }
}

#[test]
fn metadata_info_lists_columns_with_roles_units_and_values() {
    let e = Engine::demo().unwrap();
    let m = e.metadata_info(35403).unwrap();
    assert_eq!(m["schemaId"], 35403);
    let cols = m["columns"].as_array().unwrap();
    let col = |n: &str| cols.iter().find(|c| c["columnName"] == n).unwrap();
    assert_eq!(col("revenue")["role"], "measure");
    assert_eq!(col("revenue")["unit"], "USD");
    assert_eq!(col("revenue")["defaultAggregation"], "sum");
    assert!(
        col("revenue")["aliases"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a == "sales")
    );
    assert_eq!(col("region")["role"], "dimension");
    assert_eq!(col("region")["distinctValues"], 5);
    assert_eq!(col("date")["role"], "time");
    assert_eq!(col("date")["maxDate"], "2025-12-31");
    let c = e.metadata_info(35404).unwrap();
    let id = c["columns"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["columnName"] == "customer_id")
        .unwrap()
        .clone();
    assert_eq!(id["valuesTruncated"], true);
    assert!(matches!(
        e.metadata_info(7),
        Err(EngineError::UnknownSchema { .. })
    ));
}

#[test]
fn engine_is_send_sync_and_answers_from_many_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Engine>();
    let e = Arc::new(Engine::demo().unwrap());
    let q = "total revenue by region in 2025";
    let single = e.nlq_to_data(q, 35403).unwrap()["rows"].clone();
    let pareto = e
        .analyze(AnalysisKind::Pareto, "which products make 80% of revenue", 35403)
        .unwrap()["rows"]
        .clone();
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let e = Arc::clone(&e);
            std::thread::spawn(move || {
                let mut out = Vec::new();
                for _ in 0..5 {
                    if i % 2 == 0 {
                        out.push(e.nlq_to_data(q, 35403).unwrap()["rows"].clone());
                    } else {
                        out.push(
                            e.analyze(AnalysisKind::Pareto, "which products make 80% of revenue", 35403)
                                .unwrap()["rows"]
                                .clone(),
                        );
                    }
                }
                (i, out)
            })
        })
        .collect();
    for h in handles {
        let (i, out) = h.join().unwrap();
        for rows in out {
            assert_eq!(
                rows,
                if i % 2 == 0 {
                    single.clone()
                } else {
                    pareto.clone()
                }
            );
        }
    }
}

const MINI_CATALOG: &str = r#"
datasets:
  - id: 7
    name: Shop
    description: A tiny shop.
    file: shop.csv
    columns:
      - {name: day, role: time, date_format: "%d/%m/%Y"}
      - {name: store, role: dimension, aliases: [shop], synonyms: {Main Street: [main]}}
      - {name: amount, role: measure, unit: EUR, aliases: [takings]}
"#;

const MINI_CSV: &str =
    "day,store,amount\n01/02/2025,Main Street,10.5\n02/02/2025,Harbour,4\n03/03/2025,Main Street,1.5\n";

fn write_catalog(dir: &std::path::Path, catalog: &str, csv: &str) {
    std::fs::write(dir.join("catalog.yaml"), catalog).unwrap();
    std::fs::write(dir.join("shop.csv"), csv).unwrap();
}

#[test]
fn from_path_loads_a_directory_or_a_file_with_date_formats_and_synonyms() {
    let dir = tempfile::tempdir().unwrap();
    write_catalog(dir.path(), MINI_CATALOG, MINI_CSV);
    for path in [dir.path().to_path_buf(), dir.path().join("catalog.yaml")] {
        let e = Engine::from_path(&path).unwrap();
        let a = e
            .nlq_to_data("total takings for main in february 2025", 7)
            .unwrap();
        assert_eq!(a["rows"][0]["total_amount"], 10.5);
        let b = e.nlq_to_data("takings by shop last month", 7).unwrap();
        // latest date 2025-03-03: last month is February
        assert_eq!(b["rows"].as_array().unwrap().len(), 2);
        assert!(b["notes"].to_string().contains("2025-03-03"));
    }
}

fn load_err(catalog: &str, csv: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    write_catalog(dir.path(), catalog, csv);
    match Engine::from_path(dir.path()) {
        Err(e @ EngineError::Catalog(_)) => {
            assert!(!e.is_caller_error());
            e.to_string()
        }
        Err(e) => panic!("expected a catalog error, got {e}"),
        Ok(_) => panic!("expected a catalog error"),
    }
}

#[test]
fn catalog_errors_name_the_file_and_field() {
    let e = load_err(
        &MINI_CATALOG.replace("unit: EUR", "unit: EUR, colour: red"),
        MINI_CSV,
    );
    assert!(e.contains("catalog.yaml") && e.contains("colour"), "{e}");
    let e = load_err(MINI_CATALOG, "day,store,amount\n01/02/2025,Main Street,ten\n");
    assert!(
        e.contains("shop.csv") && e.contains("row 2") && e.contains("amount"),
        "{e}"
    );
    let e = load_err(MINI_CATALOG, "day,shop,amount\n01/02/2025,Main Street,1\n");
    assert!(e.contains("`store`") && e.contains("header"), "{e}");
    let e = load_err(MINI_CATALOG, "day,store,amount\n2025-02-01,Main Street,1\n");
    assert!(e.contains("date") && e.contains("%d/%m/%Y"), "{e}");
    let e = load_err(
        &MINI_CATALOG.replace("aliases: [takings]", "aliases: [shop]"),
        MINI_CSV,
    );
    assert!(e.contains("alias") && e.contains("shop"), "{e}");
    let e = load_err(
        &MINI_CATALOG.replace("file: shop.csv", "file: missing.csv"),
        MINI_CSV,
    );
    assert!(e.contains("missing.csv"), "{e}");
    let e = load_err(
        &MINI_CATALOG.replace("Main Street: [main]", "Nowhere: [main]"),
        MINI_CSV,
    );
    assert!(e.contains("synonyms") && e.contains("Nowhere"), "{e}");
    // issue 10's catalog semantics are validated too
    let with =
        |extra: &str| MINI_CATALOG.replace("    file: shop.csv\n", &format!("    file: shop.csv\n{extra}"));
    let e = load_err(
        &with("    derived_measures: [{name: double, formula: amount * twice}]\n"),
        MINI_CSV,
    );
    assert!(
        e.contains("derived measure `double`") && e.contains("`twice`"),
        "{e}"
    );
    let e = load_err(
        &with("    derived_measures: [{name: per, formula: amount % amount}]\n"),
        MINI_CSV,
    );
    assert!(e.contains("formula") && e.contains("operator"), "{e}");
    let e = load_err(
        &with("    events: [{name: visits, time_column: store}]\n"),
        MINI_CSV,
    );
    assert!(e.contains("event `visits`") && e.contains("time_column"), "{e}");
    let e = load_err(&with("    sales_measure: store\n"), MINI_CSV);
    assert!(e.contains("sales_measure") && e.contains("`store`"), "{e}");
    let e = load_err(
        &MINI_CATALOG.replace("aliases: [shop],", "aliases: [shop], time_aggregation: last,"),
        MINI_CSV,
    );
    assert!(
        e.contains("time_aggregation") && e.contains("only for measures"),
        "{e}"
    );
    // and a valid one works: a level is not summed over time, an event counts rows, a derived
    // measure is computed from the totals
    let dir = tempfile::tempdir().unwrap();
    write_catalog(
        dir.path(),
        &with("    sales_measure: amount\n    events: [{name: visits, time_column: day}]\n    derived_measures: [{name: half, formula: amount / amount}]\n")
            .replace("aliases: [takings]}", "aliases: [takings], time_aggregation: last}"),
        MINI_CSV,
    );
    let e = Engine::from_path(dir.path()).unwrap();
    let a = e.nlq_to_data("takings", 7).unwrap();
    assert_eq!(
        a["rows"][0]["total_amount"], 1.5,
        "the latest day's level, not 16"
    );
    let a = e.nlq_to_data("visits by month", 7).unwrap();
    assert_eq!(a["rows"][0]["visits"], 2);
    let a = e.nlq_to_data("how much did we make in february 2025", 7).unwrap();
    assert_eq!(a["rows"][0]["total_amount"], 4.0, "the level on 2025-02-02");
    let missing = Engine::from_path(std::path::Path::new("/nonexistent/catalog.yaml"));
    assert!(matches!(missing, Err(EngineError::Catalog(m)) if m.contains("/nonexistent/catalog.yaml")));
}

#[test]
fn filter_values_are_bound_parameters_not_sql_text() {
    let dir = tempfile::tempdir().unwrap();
    let csv = "day,store,amount\n01/02/2025,O'Brien; DROP TABLE x,3\n02/02/2025,Harbour,4\n";
    write_catalog(
        dir.path(),
        &MINI_CATALOG.replace(", synonyms: {Main Street: [main]}", ""),
        csv,
    );
    let e = Engine::from_path(dir.path()).unwrap();
    let a = e.nlq_to_data("takings for obrien drop table x", 7).unwrap();
    assert_eq!(a["rows"][0]["total_amount"], 3.0);
    assert!(!a["sql"].as_str().unwrap().contains("DROP"), "{}", a["sql"]);
    assert_eq!(a["parameters"][0], "O'Brien; DROP TABLE x");
}

#[test]
fn a_dataset_without_time_column_refuses_time_words() {
    let dir = tempfile::tempdir().unwrap();
    let cat = "datasets:\n  - id: 9\n    name: Pets\n    file: shop.csv\n    columns:\n      - {name: kind, role: dimension}\n      - {name: weight, role: measure}\n";
    write_catalog(dir.path(), cat, "kind,weight\ncat,4\ndog,20\ncat,5\n");
    let e = Engine::from_path(dir.path()).unwrap();
    let a = e.nlq_to_data("average weight by kind", 9).unwrap();
    assert_eq!(a["rows"][0]["kind"], "dog");
    assert_eq!(a["rows"][1]["average_weight"], 4.5);
    let err = e.nlq_to_data("monthly weight", 9).unwrap_err();
    assert!(
        matches!(&err, EngineError::NotUnderstood { part, .. } if part == "month"),
        "{err}"
    );
    let err = e.nlq_to_data("weight last month", 9).unwrap_err();
    assert!(
        matches!(&err, EngineError::NotUnderstood { part, .. } if part == "'last month'"),
        "{err}"
    );
    let err = e.analyze(AnalysisKind::Trend, "weight trend", 9).unwrap_err();
    assert!(err.to_string().contains("time column"), "{err}");
}

#[test]
fn queries_never_spill_to_temp_files() {
    // PRAGMA temp_store: 2 = MEMORY. Checked through the engine's own connections by a query whose sort
    // would otherwise be allowed to use a temp file.
    let engine = lumenore_embedded::Engine::demo().unwrap();
    assert_eq!(engine.temp_store_mode().unwrap(), 2);
}
