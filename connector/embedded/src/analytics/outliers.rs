//! Outliers: MAD robust z-scores, against a rolling median for time series.

use serde_json::json;

use crate::AnalysisKind;
use crate::EngineError;
use crate::analytics::series::{Series, split_series};
use crate::analytics::{Ctx, Out};
use crate::analytics::{apply_default_grain, limit_series};
use crate::plan::{Grain, Plan};
use crate::stats;
use crate::table::{Table, round4, value_f64, value_str};

/// Centered rolling median (window `w`, odd), for a robust local level.
pub(crate) fn rolling_median(x: &[f64], w: usize) -> Vec<f64> {
    let half = w / 2;
    (0..x.len())
        .map(|i| {
            let lo = i.saturating_sub(half);
            let hi = (i + half + 1).min(x.len());
            let mut win: Vec<f64> = x[lo..hi].to_vec();
            win.sort_by(|a, b| a.total_cmp(b));
            let n = win.len();
            if n % 2 == 1 {
                win[n / 2]
            } else {
                (win[n / 2 - 1] + win[n / 2]) / 2.0
            }
        })
        .collect()
}

pub(crate) const OUTLIER_THRESHOLD: f64 = 3.5;

pub(crate) fn outliers(ctx: &Ctx, plan: &mut Plan) -> Result<Out, EngineError> {
    ctx.require_measure(plan)?;
    if plan.group_by.is_empty()
        && plan.grain.is_none()
        && let Some(k) = &ctx.ds.key
    {
        plan.group_by.push(k.clone());
        plan.notes
            .push(format!("no grouping in the question: scored each {k}"));
    }

    let time_mode = plan.grain.is_some() || plan.group_by.is_empty();
    let g = if time_mode {
        ctx.require_time(AnalysisKind::Outlier)?;
        let g = if ctx.info.monthly {
            Grain::Month
        } else {
            Grain::Day
        };
        apply_default_grain(plan, g);
        plan.grain
    } else {
        None
    };
    plan.order = None;
    plan.limit = None;
    let (sql, table) = ctx.run(plan)?;
    let mut flagged = Vec::new();
    let mut scored = 0usize;
    let mut methods = Vec::new();
    for m in plan.measures.clone() {
        let series: Vec<Series> = match g {
            Some(g) => split_series(&table, g.as_str(), &plan.group_by, &m),
            None => {
                // one "series" whose points are the groups
                let Some(mi) = table.col(&m.label) else {
                    continue;
                };
                let gi: Vec<usize> = plan.group_by.iter().filter_map(|c| table.col(c)).collect();
                let mut s = Series {
                    key: Vec::new(),
                    periods: Vec::new(),
                    values: Vec::new(),
                };
                for r in &table.rows {
                    if let Some(v) = value_f64(&r[mi]) {
                        s.periods.push(
                            gi.iter()
                                .map(|&i| value_str(&r[i]))
                                .collect::<Vec<_>>()
                                .join(" | "),
                        );
                        s.values.push(v);
                    }
                }
                vec![s]
            }
        };
        for s in limit_series(series, plan) {
            scored += s.values.len();
            // positive, right-skewed values (money, counts) are scored on the log scale
            let log_scale = s.values.len() >= 3 && s.values.iter().all(|v| *v > 0.0) && {
                let mean = s.values.iter().sum::<f64>() / s.values.len() as f64;
                let (median, _, _) = stats::mad_scores(&s.values);
                mean > 1.1 * median
            };
            if log_scale && !methods.iter().any(|m: &String| m.contains("log")) {
                methods.push(format!(
                    "{} is positive and right-skewed (mean > 1.1 × median): scored on the log scale",
                    m.label
                ));
            }
            let (expected, method) = match g {
                Some(g) if s.values.len() >= 15 => {
                    let w = match g {
                        Grain::Day => 15,
                        Grain::Week => 9,
                        _ => 5,
                    };
                    (
                        rolling_median(&s.values, w),
                        format!(
                            "MAD z-score of the deviation from a centered {w}-{} rolling median",
                            g.as_str()
                        ),
                    )
                }
                _ => {
                    let (med, _, _) = stats::mad_scores(&s.values);
                    (
                        vec![med; s.values.len()],
                        "MAD z-score against the median (0.6745·(x − median)/MAD)".to_string(),
                    )
                }
            };
            if !methods.contains(&method) {
                methods.push(method);
            }
            let resid: Vec<f64> = if log_scale {
                s.values
                    .iter()
                    .zip(&expected)
                    .map(|(v, e)| v.ln() - e.ln())
                    .collect()
            } else {
                s.values.iter().zip(&expected).map(|(v, e)| v - e).collect()
            };
            let (_, mad, scores) = stats::mad_scores(&resid);
            for (i, z) in scores.iter().enumerate() {
                let high = *z > 0.0;
                if z.abs() <= OUTLIER_THRESHOLD || plan.high.is_some_and(|h| h != high) {
                    continue;
                }
                let label = match g {
                    Some(_) => "period",
                    None => "member",
                };
                flagged.push(json!({
                    "group": s.key_json(),
                    label: s.periods[i],
                    "measure": m.label,
                    "value": round4(s.values[i]),
                    "expected": round4(expected[i]),
                    "robust_z": round4(*z),
                    "why": format!(
                        "{} = {} is {:.1} robust standard deviations {} the typical {}{} (MAD of deviations {})",
                        m.label, round4(s.values[i]), z.abs(), if high { "above" } else { "below" },
                        round4(expected[i]), if log_scale { " on the log scale" } else { "" }, round4(mad)
                    ),
                }));
            }
        }
    }
    flagged.sort_by(|a, b| {
        let za = a["robust_z"].as_f64().unwrap_or(0.0).abs();
        let zb = b["robust_z"].as_f64().unwrap_or(0.0).abs();
        zb.total_cmp(&za)
    });
    let total_flagged = flagged.len();
    flagged.truncate(100);
    let dir = match plan.high {
        Some(true) => "high",
        Some(false) => "low",
        None => "high or low",
    };
    let summary = format!(
        "{total_flagged} of {scored} points flagged as unusually {dir} (|robust z| > {OUTLIER_THRESHOLD})"
    );
    // The answer's rows are the flagged points (all points are scored).
    use rusqlite::types::Value as V;
    let key_col = if g.is_some() { "period" } else { "member" };
    let rows = flagged
        .iter()
        .map(|f| {
            let grp = f["group"].as_object().map(|o| {
                o.iter()
                    .map(|(k, v)| format!("{k} {}", v.as_str().unwrap_or("")))
                    .collect::<Vec<_>>()
                    .join(", ")
            });
            vec![
                V::Text(grp.filter(|s| !s.is_empty()).unwrap_or_else(|| "all".into())),
                V::Text(f[key_col].as_str().unwrap_or("").to_string()),
                V::Text(f["measure"].as_str().unwrap_or("").to_string()),
                V::Real(f["value"].as_f64().unwrap_or(f64::NAN)),
                V::Real(f["expected"].as_f64().unwrap_or(f64::NAN)),
                V::Real(f["robust_z"].as_f64().unwrap_or(f64::NAN)),
            ]
        })
        .collect();
    let table = Table {
        columns: ["series", key_col, "measure", "value", "expected", "robust_z"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        rows,
    };
    plan.notes.push(format!(
        "rows are the flagged points; {scored} points were scored"
    ));
    Ok((
        sql,
        table,
        json!({
            "method": methods,
            "threshold": OUTLIER_THRESHOLD,
            "direction": dir,
            "points_scored": scored,
            "flagged_count": total_flagged,
            "flagged": flagged,
            "summary": summary,
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rolling_median_ignores_a_spike() {
        let mut x = vec![5.0; 21];
        x[10] = 100.0;
        let m = rolling_median(&x, 5);
        assert!(m.iter().all(|v| *v == 5.0));
    }
}
