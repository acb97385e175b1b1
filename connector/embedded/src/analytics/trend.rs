//! Trend: least-squares slope of the (seasonally adjusted) series and its t-test.

use serde_json::{Value as Json, json};

use crate::AnalysisKind;
use crate::EngineError;
use crate::analytics::MAX_POINTS;
use crate::analytics::seasonal;
use crate::analytics::series::split_series;
use crate::analytics::{Ctx, Out};
use crate::analytics::{limit_series, time_series_plan};
use crate::plan::Plan;
use crate::stats;
use crate::table::round4;

pub(crate) fn trend(ctx: &Ctx, plan: &mut Plan) -> Result<Out, EngineError> {
    let g = time_series_plan(ctx, plan, AnalysisKind::Trend, false)?;
    let (sql, table) = ctx.run(plan)?;
    let mut results = Vec::new();
    for m in plan.measures.clone() {
        let series = limit_series(split_series(&table, g.as_str(), &plan.group_by, &m), plan);
        for s in series {
            let mut used = Vec::new();
            let mut skipped = Vec::new();
            for (p, v) in s.periods.iter().zip(&s.values) {
                if ctx.partial(plan, p, g) {
                    skipped.push(p.clone());
                } else {
                    used.push((p.clone(), *v));
                }
            }
            let values: Vec<f64> = used.iter().map(|(_, v)| *v).collect();
            let points: Vec<Json> = s
                .periods
                .iter()
                .zip(&s.values)
                .map(|(p, v)| json!({"period": p, "value": round4(*v), "partial": skipped.contains(p)}))
                .collect();
            // the listed points are bounded; the fit uses every complete period
            let listed = points.len();
            let points: Vec<Json> = points
                .into_iter()
                .skip(listed.saturating_sub(MAX_POINTS))
                .collect();
            let adjusted = seasonal::seasonal_adjust(&values, g.season());
            let fit = stats::linear_trend(adjusted.as_deref().unwrap_or(&values));
            let mut r = json!({
                "group": s.key_json(),
                "measure": m.label,
                "points": points,
                "points_total": listed,
                "partial_periods_excluded": skipped,
            });
            match fit {
                Some(f) => {
                    let first = values[0];
                    let last = *values.last().expect("n >= 3");
                    let pct = if first != 0.0 {
                        Some(round4(100.0 * (last - first) / first.abs()))
                    } else {
                        None
                    };
                    let mean = values.iter().sum::<f64>() / values.len() as f64;
                    let significant = f.p_value < 0.05;
                    let direction = if !significant {
                        "no significant trend"
                    } else if f.slope > 0.0 {
                        "increasing"
                    } else {
                        "decreasing"
                    };
                    let rel = if mean != 0.0 {
                        100.0 * f.slope / mean.abs()
                    } else {
                        0.0
                    };
                    r["slope_per_period"] = json!(round4(f.slope));
                    r["slope_percent_of_mean_per_period"] = json!(round4(rel));
                    r["period"] = json!(g.as_str());
                    r["first_value"] = json!(round4(first));
                    r["last_value"] = json!(round4(last));
                    r["percent_change"] = json!(pct);
                    r["r_squared"] = json!(round4(f.r_squared));
                    r["seasonally_adjusted"] = json!(adjusted.is_some());
                    r["significance_test"] = json!({
                        "test": if adjusted.is_some() {
                            "t-test of the least-squares slope of the seasonally adjusted series (seasonal means fitted with the trend, the model change detection uses) (H0: slope = 0)"
                        } else {
                            "t-test of the least-squares slope (H0: slope = 0)"
                        },
                        "t_statistic": round4(f.t_statistic),
                        "degrees_of_freedom": f.n - 2,
                        "p_value": f.p_value,
                        "significant_at_5pct": significant,
                    });
                    r["direction"] = json!(direction);
                    r["summary"] = json!(format!(
                        "{} for {}: {direction} ({:+.2} per {}, {:+.2}% of the mean per {}; p = {:.4}); {} → {} over {} {}s",
                        m.label,
                        s.key_text(),
                        f.slope,
                        g.as_str(),
                        rel,
                        g.as_str(),
                        f.p_value,
                        round4(first),
                        round4(last),
                        values.len(),
                        g.as_str()
                    ));
                }
                None => {
                    r["direction"] = json!("not enough data");
                    r["summary"] = json!(format!(
                        "{} for {}: {} complete {}s, a trend test needs at least 3",
                        m.label,
                        s.key_text(),
                        values.len(),
                        g.as_str()
                    ));
                }
            }
            results.push(r);
        }
    }
    Ok((
        sql,
        table,
        json!({"method": "ordinary least squares on the series at the time grain", "series": results}),
    ))
}
