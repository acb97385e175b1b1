//! Metamorphic tests: relations between the engine's own answers that must hold whatever the data.
//! Paraphrases give the same answer; adding a filter never increases a sum; "A vs B" rows are the
//! separate answers for A and for B; every comparison, "all", "average daily", "per" and "each" word
//! changes the plan (none is silently dropped).

use std::sync::OnceLock;

use lumenore_embedded::{Engine, EngineError};
use serde_json::Value;

const SALES: i64 = 35403;
const CUSTOMERS: i64 = 35404;
const INVENTORY: i64 = 35405;

fn engine() -> &'static Engine {
    static E: OnceLock<Engine> = OnceLock::new();
    E.get_or_init(|| Engine::demo().expect("demo engine"))
}

fn ask(q: &str, id: i64) -> Value {
    engine().nlq_to_data(q, id).unwrap_or_else(|e| panic!("{q}: {e}"))
}

fn columns_with(ans: &Value, roles: &[&str]) -> Vec<String> {
    ans["columns"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| roles.contains(&c["role"].as_str().unwrap()))
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect()
}

/// The answer as (key, measure values) rows, sorted by key: keys are the dimension and time columns
/// (and the start of a compared period), measures the measure columns.
fn canon(ans: &Value) -> Vec<(String, Vec<f64>)> {
    let mut keys = columns_with(ans, &["dimension", "time"]);
    if ans["columns"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["name"] == "period_start")
    {
        keys.push("period_start".into());
    }
    let measures = columns_with(ans, &["measure"]);
    let mut rows: Vec<(String, Vec<f64>)> = ans["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                keys.iter()
                    .map(|k| r[k].to_string())
                    .collect::<Vec<_>>()
                    .join("|"),
                measures.iter().map(|m| r[m].as_f64().unwrap()).collect(),
            )
        })
        .collect();
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    rows
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-6 * a.abs().max(b.abs()).max(1.0)
}

fn assert_same(a: &[(String, Vec<f64>)], b: &[(String, Vec<f64>)], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: row counts differ: {a:?} vs {b:?}");
    for (x, y) in a.iter().zip(b) {
        assert_eq!(x.0, y.0, "{what}: keys differ");
        assert_eq!(x.1.len(), y.1.len(), "{what}: measure counts differ");
        for (u, v) in x.1.iter().zip(&y.1) {
            assert!(close(*u, *v), "{what}: {} has {u} vs {v}", x.0);
        }
    }
}

#[test]
fn paraphrases_give_the_same_answer() {
    let groups: &[(i64, &[&str])] = &[
        (
            SALES,
            &[
                "total revenue in 2025",
                "how much did we sell in 2025",
                "what did we earn in 2025",
                "sales in 2025",
                "how much money did we make in 2025",
            ],
        ),
        (
            SALES,
            &[
                "units sold by region in Q1 2025",
                "how many units did we sell by region between January and March 2025",
                "how many did we sell per region Jan-Mar 2025",
                "units by region from 2025-01-01 to 2025-03-31",
                "quantity for each region in the first quarter of 2025",
            ],
        ),
        (
            SALES,
            &[
                "average daily revenue in March 2025",
                "average revenue per day in March 2025",
                "daily average revenue in March 2025",
                "how much do we sell on an average day in March 2025",
            ],
        ),
        (
            SALES,
            &[
                "online vs retail revenue in 2025",
                "revenue for online versus retail in 2025",
                "compare online and retail revenue in 2025",
                "revenue of online compared to retail in 2025",
                "web against store sales in 2025",
            ],
        ),
        (
            SALES,
            &[
                "revenue in 2025 vs 2024",
                "revenue 2024 versus 2025",
                "revenue this year vs last year",
                "revenue in 2025 year over year",
                "compare revenue in 2024 and 2025",
            ],
        ),
        (
            SALES,
            &[
                "top 3 products by revenue in 2025",
                "which 3 products had the highest revenue in 2025",
                "the 3 best products by revenue in 2025",
                "3 best-selling products in 2025",
            ],
        ),
        (
            SALES,
            &[
                "revenue in H1 2025",
                "revenue in the first half of 2025",
                "revenue between January and June 2025",
                "revenue Jan-Jun 2025",
                "revenue between January 1 2025 and June 30 2025",
                "revenue 2025 h1",
            ],
        ),
        (
            SALES,
            &[
                "revenue in March 2025",
                "revenue in 03/2025",
                "revenue in 2025-03",
                "revenue between March 1 2025 and March 31 2025",
                "revenue for mar 2025",
            ],
        ),
        (
            SALES,
            &[
                "profit by category in 2024",
                "total profit per category in 2024",
                "profits for each category in 2024",
            ],
        ),
        (
            SALES,
            &[
                "total units across all regions in 2025",
                "total units in 2025",
                "units for all regions and channels in 2025",
            ],
        ),
        (
            SALES,
            &[
                "revenue per transaction by channel",
                "average revenue per transaction by channel",
                "average revenue per order by channel",
            ],
        ),
        (
            CUSTOMERS,
            &[
                "customer count by segment and gender",
                "number of customers by segment and gender",
                "how many customers by segment and gender",
                "count of customers per segment and gender",
                "customers by segment and gender",
            ],
        ),
        (
            CUSTOMERS,
            &[
                "signups by month in 2024",
                "new customers by month in 2024",
                "monthly signups in 2024",
                "how many customers signed up each month in 2024",
            ],
        ),
        (
            INVENTORY,
            &[
                "current stock level in Newark",
                "stock level in Newark right now",
                "latest stock level in Newark",
                "stock on hand in Newark",
                "stock level in Newark in December 2025",
            ],
        ),
        (
            INVENTORY,
            &[
                "demand in Dallas vs Newark",
                "demand for Dallas versus Newark",
                "compare demand in Dallas and Newark",
            ],
        ),
    ];
    for (id, qs) in groups {
        let first = canon(&ask(qs[0], *id));
        assert!(!first.is_empty(), "{}", qs[0]);
        for q in &qs[1..] {
            assert_same(&first, &canon(&ask(q, *id)), &format!("'{}' vs '{q}'", qs[0]));
        }
    }
}

#[test]
fn adding_a_filter_never_increases_a_sum() {
    let bases: &[(i64, &str, &[&str])] = &[
        (
            SALES,
            "total revenue in 2025",
            &[
                "for laptops",
                "in the West region",
                "online",
                "excluding North",
                "for electronics",
            ],
        ),
        (
            SALES,
            "units by region",
            &["for phones", "in Q1 2025", "in retail", "excluding furniture"],
        ),
        (
            SALES,
            "revenue by month in 2025",
            &["for the East region", "for office chairs", "wholesale"],
        ),
        (
            INVENTORY,
            "total demand by warehouse",
            &["for electronics", "in 2024", "for laptops"],
        ),
        (
            INVENTORY,
            "stock level by warehouse",
            &["for toys", "for laptops"],
        ),
        (
            CUSTOMERS,
            "signups by year",
            &["in the West", "for enterprise customers"],
        ),
        (
            CUSTOMERS,
            "total orders by segment",
            &["for female customers", "aged 18-24"],
        ),
    ];
    for (id, base, filters) in bases {
        let b = canon(&ask(base, *id));
        for f in *filters {
            let q = format!("{base} {f}");
            let got = canon(&ask(&q, *id));
            assert!(!got.is_empty(), "{q}");
            for (key, vals) in &got {
                let (_, bv) = b
                    .iter()
                    .find(|(k, _)| k == key)
                    .unwrap_or_else(|| panic!("{q}: key {key} not in the unfiltered answer"));
                for (v, w) in vals.iter().zip(bv) {
                    assert!(*v <= *w + 1e-6, "{q}: {key} {v} > unfiltered {w}");
                }
            }
        }
    }
}

#[test]
fn a_vs_b_rows_are_the_separate_answers() {
    let cases: &[(i64, &str, &str, &str, &str)] = &[
        (
            SALES,
            "revenue for {a} vs {b} in 2025",
            "revenue for {a} in 2025",
            "online",
            "retail",
        ),
        (
            INVENTORY,
            "demand in {a} vs {b}",
            "demand in {a}",
            "Dallas",
            "Newark",
        ),
        (
            SALES,
            "units sold in the {a} versus the {b} region",
            "units sold in the {a} region",
            "West",
            "East",
        ),
        (
            CUSTOMERS,
            "average lifetime value of {a} vs {b} customers",
            "average lifetime value of {a} customers",
            "enterprise",
            "consumer",
        ),
        (SALES, "revenue in {a} vs {b}", "revenue in {a}", "2024", "2025"),
        (
            SALES,
            "profit for {a} against {b}",
            "profit for {a}",
            "laptops",
            "phones",
        ),
        (
            INVENTORY,
            "stock level for {a} compared to {b}",
            "stock level for {a}",
            "toys",
            "furniture",
        ),
    ];
    for (id, both, one, a, b) in cases {
        let q = both.replace("{a}", a).replace("{b}", b);
        let rows = canon(&ask(&q, *id));
        assert_eq!(rows.len(), 2, "{q}: one row per member: {rows:?}");
        let mut got: Vec<f64> = rows.iter().map(|r| r.1[0]).collect();
        let mut want: Vec<f64> = [a, b]
            .iter()
            .map(|m| {
                let single = canon(&ask(&one.replace("{a}", m), *id));
                assert_eq!(single.len(), 1, "{one} {m}");
                single[0].1[0]
            })
            .collect();
        got.sort_by(f64::total_cmp);
        want.sort_by(f64::total_cmp);
        for (g, w) in got.iter().zip(&want) {
            assert!(close(*g, *w), "{q}: {got:?} vs separate {want:?}");
        }
    }
}

fn plan(q: &str, id: i64) -> Value {
    ask(q, id)["plan"].clone()
}

fn refusal(q: &str, id: i64) -> String {
    match engine().nlq_to_data(q, id) {
        Err(EngineError::NotUnderstood { part, .. }) => part,
        other => panic!("{q}: expected a refusal, got {other:?}"),
    }
}

#[test]
fn every_comparison_word_changes_the_plan() {
    let plain = plan("revenue for online and retail in 2025", SALES);
    assert_eq!(
        plain["group_by"],
        serde_json::json!([]),
        "without a comparison word: one total"
    );
    for q in [
        "revenue for online vs retail in 2025",
        "revenue for online versus retail in 2025",
        "revenue for online against retail in 2025",
        "compare revenue for online and retail in 2025",
        "revenue for online compared to retail in 2025",
        "revenue for online compared with retail in 2025",
    ] {
        let p = plan(q, SALES);
        assert_ne!(p, plain, "{q}");
        assert_eq!(p["group_by"], serde_json::json!(["channel"]), "{q}");
        assert_eq!(p["compare"]["members_of"], "channel", "{q}");
    }
    // two periods without a comparison word are refused; with one they are compared
    assert_eq!(refusal("revenue in 2025 and 2024", SALES), "2024");
    for q in [
        "revenue in 2025 vs 2024",
        "compare revenue in 2025 and 2024",
        "revenue in 2025 against 2024",
    ] {
        assert_eq!(
            plan(q, SALES)["compare"]["periods"].as_array().map(Vec::len),
            Some(2),
            "{q}"
        );
    }
    let q1 = plan("revenue in Q1 2025", SALES);
    let yoy = plan("revenue in Q1 2025 year over year", SALES);
    assert_ne!(q1, yoy);
    assert_eq!(yoy["compare"]["periods"][0]["start"], "2024-01-01");
    // a comparison word with nothing to compare is refused, naming it
    assert_eq!(refusal("revenue vs", SALES), "vs");
    assert_eq!(refusal("compare total revenue in 2025", SALES), "compare");
}

#[test]
fn all_average_per_and_each_change_the_plan() {
    let by = plan("total demand by product", INVENTORY);
    assert_eq!(by["group_by"], serde_json::json!(["product"]));
    for q in [
        "total demand across all products",
        "total demand for all products",
        "demand of all products",
    ] {
        let p = plan(q, INVENTORY);
        assert_ne!(p, by, "{q}");
        assert_eq!(p["group_by"], serde_json::json!([]), "{q}: 'all' is one total");
    }
    let avg = plan("average revenue in March 2025", SALES);
    assert_eq!(avg["measures"][0]["aggregation"], "avg");
    for (q, grain) in [
        ("average daily revenue in March 2025", "day"),
        ("average weekly revenue in March 2025", "week"),
        ("average monthly revenue in 2025", "month"),
        ("average revenue per day in March 2025", "day"),
    ] {
        let p = plan(q, SALES);
        assert_ne!(p, avg, "{q}");
        assert_eq!(p["measures"][0]["average_of_period_totals"], grain, "{q}");
    }
    let total = plan("revenue", SALES);
    for q in [
        "revenue per region",
        "revenue for each region",
        "revenue by region",
    ] {
        let p = plan(q, SALES);
        assert_ne!(p, total, "{q}");
        assert_eq!(p["group_by"], serde_json::json!(["region"]), "{q}");
    }
    let per_row = plan("revenue per transaction", SALES);
    assert_eq!(per_row["measures"][0]["aggregation"], "avg");
    let monthly = plan("revenue per month in 2025", SALES);
    assert_eq!(monthly["time_grain"], "month");
    let each_month = plan("revenue each month in 2025", SALES);
    assert_eq!(each_month["time_grain"], "month");
}

#[test]
fn word_order_does_not_change_the_meaning() {
    let a = plan("customer count by segment and gender", CUSTOMERS);
    let b = plan("number of customers by segment and gender", CUSTOMERS);
    assert_eq!(a, b);
    assert_eq!(a["group_by"], serde_json::json!(["segment", "gender"]));
    let a = plan("laptop revenue in 2024 by region", SALES);
    let b = plan("revenue by region for laptops in 2024", SALES);
    assert_eq!(a["measures"], b["measures"]);
    assert_eq!(a["group_by"], b["group_by"]);
    assert_eq!(a["filters"], b["filters"]);
    assert_eq!(a["time_range"]["start"], b["time_range"]["start"]);
}
