//! Correlation: Pearson and Spearman with p-values.

use serde_json::{Value as Json, json};

use crate::EngineError;
use crate::analytics::{Ctx, Out};
use crate::plan::{Grain, MeasureSel, Plan};
use crate::stats;
use crate::table::{Table, round4, value_f64};

pub(crate) fn correlation(ctx: &Ctx, plan: &mut Plan) -> Result<Out, EngineError> {
    let ds = ctx.ds;
    let target = plan.measures.first().cloned();
    let target_mode = target.is_some() && (plan.all_measures || plan.measures.len() == 1);
    if plan.all_measures || plan.measures.len() < 2 {
        for c in ds.measures() {
            let sel = MeasureSel::new(Some(&c.name), c.default_aggregation());
            if !plan.measures.iter().any(|m| m.column == sel.column) {
                plan.measures.push(sel);
            }
        }
        if plan.measures.len() < 2 {
            return Err(ctx.refuse(
                "",
                format!("dataset {} has only one measure; correlation needs two", ds.name),
            ));
        }
    }
    if plan.group_by.is_empty() && plan.grain.is_none() {
        if let Some(k) = &ds.key {
            plan.group_by.push(k.clone());
            plan.notes.push(format!("observations are each {k}"));
        } else if ds.time_column().is_some() {
            let g = if ctx.info.monthly {
                Grain::Month
            } else {
                Grain::Day
            };
            plan.grain = Some(g);
            plan.notes.push(format!(
                "no grouping in the question: observations are each {}",
                g.as_str()
            ));
        }
    }
    plan.order = None;
    plan.limit = None;
    let (sql, table) = ctx.run(plan)?;
    let cols: Vec<(String, Vec<Option<f64>>)> = plan
        .measures
        .iter()
        .filter_map(|m| {
            table.col(&m.label).map(|i| {
                (
                    m.label.clone(),
                    table.rows.iter().map(|r| value_f64(&r[i])).collect(),
                )
            })
        })
        .collect();
    let mut pairs = Vec::new();
    let pair_list: Vec<(usize, usize)> = if target_mode {
        (1..cols.len()).map(|j| (0, j)).collect()
    } else {
        (0..cols.len())
            .flat_map(|i| (i + 1..cols.len()).map(move |j| (i, j)))
            .collect()
    };
    for (i, j) in pair_list {
        let (x, y): (Vec<f64>, Vec<f64>) = cols[i]
            .1
            .iter()
            .zip(&cols[j].1)
            .filter_map(|(a, b)| Some(((*a)?, (*b)?)))
            .unzip();
        let n = x.len();
        let p = stats::pearson(&x, &y);
        let s = stats::spearman(&x, &y);
        let words = |r: Option<f64>| match r {
            Some(r) => format!(
                "{} {}",
                stats::strength_words(r),
                if r >= 0.0 { "positive" } else { "negative" }
            ),
            None => "undefined (a side is constant or too few points)".into(),
        };
        pairs.push(json!({
            "measure_a": cols[i].0,
            "measure_b": cols[j].0,
            "observations": n,
            "pearson": p.map(round4),
            "pearson_p_value": p.map(|r| stats::correlation_p_value(r, n)),
            "spearman": s.map(round4),
            "spearman_p_value": s.map(|r| stats::correlation_p_value(r, n)),
            "strength": words(p),
            "summary": format!(
                "{} vs {}: {} (Pearson {}, Spearman {}, n = {n})",
                cols[i].0, cols[j].0, words(p),
                p.map_or("n/a".into(), |v| format!("{v:.3}")), s.map_or("n/a".into(), |v| format!("{v:.3}"))
            ),
        }));
    }
    pairs.sort_by(|a, b| {
        let fa = a["pearson"].as_f64().unwrap_or(0.0).abs();
        let fb = b["pearson"].as_f64().unwrap_or(0.0).abs();
        fb.total_cmp(&fa)
    });
    let obs = if let Some(g) = plan.grain {
        g.as_str().to_string()
    } else {
        plan.group_by.join(" × ")
    };
    use rusqlite::types::Value as V;
    let opt = |v: &Json| v.as_f64().map_or(V::Null, V::Real);
    let out = Table {
        columns: [
            "measure_a",
            "measure_b",
            "observations",
            "pearson",
            "spearman",
            "strength",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
        rows: pairs
            .iter()
            .map(|p| {
                vec![
                    V::Text(p["measure_a"].as_str().unwrap_or("").into()),
                    V::Text(p["measure_b"].as_str().unwrap_or("").into()),
                    V::Integer(p["observations"].as_i64().unwrap_or(0)),
                    opt(&p["pearson"]),
                    opt(&p["spearman"]),
                    V::Text(p["strength"].as_str().unwrap_or("").into()),
                ]
            })
            .collect(),
    };
    plan.notes.push(format!(
        "rows are the measure pairs; each pair is computed over {} observations ({obs})",
        table.rows.len()
    ));
    let table = out;
    Ok((
        sql,
        table,
        json!({
            "observations": obs,
            "method": "Pearson (linear) and Spearman (rank) correlation; p-values from Student's t with n − 2 degrees of freedom",
            "strength_scale": "|r| < 0.1 negligible, < 0.3 weak, < 0.5 moderate, < 0.7 strong, otherwise very strong",
            "pairs": pairs,
        }),
    ))
}
