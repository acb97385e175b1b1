//! Pareto: cumulative shares and the vital few.

use serde_json::json;

use crate::EngineError;
use crate::analytics::{Ctx, Out};
use crate::catalog::Aggregation;
use crate::plan::{Order, Plan};
use crate::stats;
use crate::table::{round4, value_f64, value_str};

/// Vital few members named in the answer; the others are counted ("and N more").
const MAX_NAMED: usize = 25;

/// Rows listed in the answer.
const MAX_ROWS: usize = 50;

pub(crate) fn pareto(ctx: &Ctx, plan: &mut Plan) -> Result<Out, EngineError> {
    ctx.require_measure(plan)?;
    let ds = ctx.ds;
    if plan.group_by.is_empty() {
        let dims: Vec<String> = ds.dimensions().map(|c| c.name.clone()).collect();
        return Err(ctx.refuse(
            "",
            format!(
                "Pareto analysis needs a dimension to rank (e.g. 'which products'); dimensions: {}",
                dims.join(", ")
            ),
        ));
    }
    let m = plan.measures[0].clone();
    if plan.measures.len() > 1 {
        plan.notes
            .push(format!("Pareto uses the first measure, {}", m.label));
        plan.measures.truncate(1);
    }
    if !matches!(
        m.agg,
        Aggregation::Sum | Aggregation::Count | Aggregation::CountDistinct
    ) {
        plan.notes.push(format!(
            "{} is an {}; shares of a non-additive measure are indicative only",
            m.label,
            m.agg.as_str()
        ));
    }
    if plan.grain.take().is_some() {
        plan.notes
            .push("time grain ignored: Pareto ranks members over the whole range".into());
    }
    let threshold = plan.share.unwrap_or(80.0);
    if plan.share.is_none() {
        plan.share = Some(80.0);
        plan.notes.push("no share in the question: used 80%".into());
    }
    let limit = plan.limit.take();
    plan.order = Some(Order {
        by: m.label.clone(),
        desc: true,
        source: "default",
    });
    let (sql, mut table) = ctx.run(plan)?;
    let mi = table.col(&m.label).expect("measure column");
    let values: Vec<f64> = table
        .rows
        .iter()
        .map(|r| value_f64(&r[mi]).unwrap_or(0.0))
        .collect();
    let (cum, vital) = stats::pareto(&values, threshold);
    let total: f64 = values.iter().sum();
    table.columns.extend([
        "share_pct".to_string(),
        "cumulative_share_pct".to_string(),
        "vital_few".to_string(),
    ]);
    for (i, r) in table.rows.iter_mut().enumerate() {
        let share = if total != 0.0 {
            100.0 * values[i] / total
        } else {
            0.0
        };
        r.push(rusqlite::types::Value::Real(share));
        r.push(rusqlite::types::Value::Real(cum[i]));
        r.push(rusqlite::types::Value::Integer(i64::from(i < vital)));
    }
    let gi: Vec<usize> = plan.group_by.iter().filter_map(|c| table.col(c)).collect();
    let name = |r: &Vec<rusqlite::types::Value>| {
        gi.iter()
            .map(|&i| value_str(&r[i]))
            .collect::<Vec<_>>()
            .join(" | ")
    };
    // bounded for a language model: the first vital few by name, the rest counted; shares stay exact
    let few: Vec<String> = table.rows.iter().take(vital.min(MAX_NAMED)).map(name).collect();
    let more = vital.saturating_sub(MAX_NAMED);
    let named = if more > 0 {
        format!("{}, and {more} more", few.join(", "))
    } else {
        few.join(", ")
    };
    let n = values.len();
    let shown = limit.unwrap_or(MAX_ROWS).min(MAX_ROWS);
    if let Some(l) = limit {
        plan.limit = Some(l);
    }
    if table.rows.len() > shown {
        plan.notes.push(format!(
            "rows: the first {shown} of {n} members by {}; shares and counts are computed over all {n}",
            m.label
        ));
        table.rows.truncate(shown);
    }
    let reached = cum.get(vital.saturating_sub(1)).copied().unwrap_or(0.0);
    let dim = plan.group_by.join(" × ");
    Ok((
        sql,
        table,
        json!({
            "dimension": dim,
            "measure": m.label,
            "threshold_pct": threshold,
            "total": round4(total),
            "members": n,
            "vital_few": few,
            "vital_few_more": more,
            "vital_few_count": vital,
            "vital_few_share_of_members_pct": if n > 0 { round4(100.0 * vital as f64 / n as f64) } else { 0.0 },
            "vital_few_share_of_total_pct": round4(reached),
            "summary": format!(
                "{vital} of {n} {dim} values ({:.0}%) make {:.1}% of {}: {}",
                if n > 0 { 100.0 * vital as f64 / n as f64 } else { 0.0 }, reached, m.label, named
            ),
        }),
    ))
}
