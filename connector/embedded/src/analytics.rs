//! The six analysis tools: trend, prediction, outliers, correlation, change, Pareto.

use std::collections::HashMap;

use augurs::changepoint::{DefaultArgpcpDetector, Detector, NormalGammaDetector};
use augurs::ets::AutoETS;
use augurs::mstl::MSTLModel;
use augurs::{Fit, Predict};
use chrono::{Duration, NaiveDate};
use serde_json::{Value as Json, json};

use crate::catalog::{Aggregation, Dataset};
use crate::plan::{Grain, MeasureSel, Order, Plan};
use crate::stats;
use crate::timeexpr::{add_periods, period_start};
use crate::{AnalysisKind, Engine, EngineError, RtInfo, Table, round4, value_f64, value_str};

/// Most series analysed per question (one per group member).
const MAX_SERIES: usize = 12;

/// One series: the group it belongs to, its periods and values.
#[derive(Clone, Debug)]
pub struct Series {
    pub key: Vec<(String, String)>,
    pub periods: Vec<String>,
    pub values: Vec<f64>,
}

impl Series {
    fn key_json(&self) -> Json {
        let mut o = serde_json::Map::new();
        for (k, v) in &self.key {
            o.insert(k.clone(), json!(v));
        }
        Json::Object(o)
    }
    fn key_text(&self) -> String {
        if self.key.is_empty() {
            "all".to_string()
        } else {
            self.key
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        }
    }
}

/// Split a (period, group..., measure...) table into one series per group for `measure`.
/// Periods missing in a group are 0 for sums and counts, and left out otherwise.
pub(crate) fn split_series(t: &Table, period_col: &str, group_by: &[String], m: &MeasureSel) -> Vec<Series> {
    let (Some(pi), Some(mi)) = (t.col(period_col), t.col(&m.label)) else {
        return Vec::new();
    };
    let gi: Vec<usize> = group_by.iter().filter_map(|g| t.col(g)).collect();
    let mut all_periods: Vec<String> = Vec::new();
    let mut seen = HashMap::new();
    let mut order: Vec<Vec<String>> = Vec::new();
    let mut data: HashMap<Vec<String>, HashMap<String, f64>> = HashMap::new();
    for r in &t.rows {
        let p = value_str(&r[pi]);
        if seen.insert(p.clone(), ()).is_none() {
            all_periods.push(p.clone());
        }
        let key: Vec<String> = gi.iter().map(|&i| value_str(&r[i])).collect();
        let e = data.entry(key.clone()).or_insert_with(|| {
            order.push(key.clone());
            HashMap::new()
        });
        if let Some(v) = value_f64(&r[mi]) {
            // several rows per (period, group) are summed (used for additive driver breakdowns)
            *e.entry(p).or_insert(0.0) += v;
        }
    }
    all_periods.sort();
    let fill = matches!(
        m.agg,
        Aggregation::Sum | Aggregation::Count | Aggregation::CountDistinct
    );
    order
        .into_iter()
        .map(|key| {
            let vals = &data[&key];
            let mut periods = Vec::new();
            let mut values = Vec::new();
            for p in &all_periods {
                match vals.get(p) {
                    Some(v) => {
                        periods.push(p.clone());
                        values.push(*v);
                    }
                    None if fill => {
                        periods.push(p.clone());
                        values.push(0.0);
                    }
                    None => {}
                }
            }
            Series {
                key: group_by.iter().cloned().zip(key).collect(),
                periods,
                values,
            }
        })
        .collect()
}

fn period_end(start: NaiveDate, g: Grain) -> NaiveDate {
    add_periods(start, g, 1)
        .map(|d| d - Duration::days(1))
        .unwrap_or(start)
}

fn parse_date(s: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()
}

struct Ctx<'a> {
    engine: &'a Engine,
    ds: &'a Dataset,
    info: RtInfo,
}

impl Ctx<'_> {
    fn refuse(&self, part: &str, reason: String) -> EngineError {
        self.engine.not_understood(self.ds, part, reason)
    }
    fn require_time(&self, kind: AnalysisKind) -> Result<String, EngineError> {
        self.ds.time_column().map(|c| c.name.clone()).ok_or_else(|| {
            self.refuse(
                "",
                format!(
                    "{} analysis needs a time column, and dataset {} has none",
                    kind.as_str(),
                    self.ds.name
                ),
            )
        })
    }
    fn require_measure(&self, plan: &Plan) -> Result<(), EngineError> {
        if plan.measures.is_empty() {
            Err(self.engine.no_measure(self.ds))
        } else {
            Ok(())
        }
    }
    /// Default grain for a time analysis over the plan's range.
    fn default_grain(&self, plan: &Plan, coarse: bool) -> Grain {
        if self.info.monthly {
            return Grain::Month;
        }
        let (start, end) = self.span(plan);
        let days = (end - start).num_days() + 1;
        if days <= 31 {
            Grain::Day
        } else if days <= 120 || coarse {
            Grain::Week
        } else {
            Grain::Month
        }
    }
    fn span(&self, plan: &Plan) -> (NaiveDate, NaiveDate) {
        let lo = self.info.earliest.unwrap_or_default();
        let hi = self.info.latest.unwrap_or_default();
        match &plan.time {
            Some(t) => (t.start.max(lo), t.end.min(hi)),
            None => (lo, hi),
        }
    }
    /// Periods at the edges that the data or the range covers only in part (not for monthly data at
    /// month grain or coarser).
    fn partial(&self, plan: &Plan, period: &str, g: Grain) -> bool {
        if self.info.monthly && g != Grain::Day && g != Grain::Week {
            return false;
        }
        let (lo, hi) = self.span(plan);
        match parse_date(period) {
            Some(p) => p < lo || period_end(p, g) > hi,
            None => false,
        }
    }
    fn run(&self, plan: &Plan) -> Result<(crate::plan::Sql, Table), EngineError> {
        let sql = plan.sql(self.ds);
        let t = self.engine.run(&sql)?;
        Ok((sql, t))
    }
}

fn apply_default_grain(plan: &mut Plan, g: Grain) {
    if plan.grain.is_none() {
        plan.grain = Some(g);
        plan.notes
            .push(format!("no time grain in the question: used {}", g.as_str()));
    }
}

fn limit_series(series: Vec<Series>, plan: &mut Plan) -> Vec<Series> {
    if series.len() > MAX_SERIES {
        plan.notes.push(format!(
            "{} groups found; analysed the first {MAX_SERIES} (filter or group more narrowly for others)",
            series.len()
        ));
        series.into_iter().take(MAX_SERIES).collect()
    } else {
        series
    }
}

/// Run one analysis.
pub(crate) fn run(
    engine: &Engine,
    kind: AnalysisKind,
    ds: &Dataset,
    info: RtInfo,
    mut plan: Plan,
) -> Result<Json, EngineError> {
    let ctx = Ctx { engine, ds, info };
    if plan.horizon.is_some() && kind != AnalysisKind::Prediction {
        return Err(ctx.refuse(
            "next",
            "a future period ('next ...') is answered by get_prediction_data".to_string(),
        ));
    }
    if plan.share.is_some() && kind != AnalysisKind::Pareto {
        return Err(ctx.refuse(
            "%",
            "a share of the total ('80%') is answered by get_pareto_data".to_string(),
        ));
    }
    if plan.intents.contains(&"recent") && kind != AnalysisKind::Change {
        return Err(ctx.refuse(
            "recently",
            "'recently' is vague: give a time range, e.g. 'past 3 months'".to_string(),
        ));
    }
    if plan.high.is_some() && kind != AnalysisKind::Outlier {
        return Err(ctx.refuse(
            "unusually",
            "'unusually high/low' is answered by get_outlier_data".to_string(),
        ));
    }
    let (sql, table, analysis) = match kind {
        AnalysisKind::Trend => trend(&ctx, &mut plan)?,
        AnalysisKind::Prediction => prediction(&ctx, &mut plan)?,
        AnalysisKind::Outlier => outliers(&ctx, &mut plan)?,
        AnalysisKind::Correlation => correlation(&ctx, &mut plan)?,
        AnalysisKind::Change => change(&ctx, &mut plan)?,
        AnalysisKind::Pareto => pareto(&ctx, &mut plan)?,
    };
    let rt = engine.rt(ds);
    Ok(engine.answer(ds, rt, &plan, &sql, &table, Some((kind, analysis))))
}

type Out = (crate::plan::Sql, Table, Json);

/// A dimension member and its mean level in each segment between change points.
type MemberSegments = (String, Vec<f64>);

fn time_series_plan(
    ctx: &Ctx,
    plan: &mut Plan,
    kind: AnalysisKind,
    coarse: bool,
) -> Result<Grain, EngineError> {
    ctx.require_time(kind)?;
    ctx.require_measure(plan)?;
    let g = ctx.default_grain(plan, coarse);
    apply_default_grain(plan, g);
    let g = plan.grain.expect("set");
    // series are ordered by period; ranking inside periods makes no sense here
    if plan.limit.is_some() {
        plan.notes
            .push("top/bottom N is ignored for time analyses: every period is used".into());
        plan.limit = None;
    }
    plan.order = None;
    Ok(g)
}

fn trend(ctx: &Ctx, plan: &mut Plan) -> Result<Out, EngineError> {
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
            let adjusted = deseasonalize(&values, g.season(), 2);
            let fit = stats::linear_trend(adjusted.as_deref().unwrap_or(&values));
            let mut r = json!({
                "group": s.key_json(),
                "measure": m.label,
                "points": points,
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
                            "t-test of the least-squares slope of the seasonally adjusted series (STL) (H0: slope = 0)"
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

/// Horizon in periods of `g`.
fn horizon_in(g: Grain, periods: usize, hg: Grain) -> Option<usize> {
    let months = |x: Grain| match x {
        Grain::Month => Some(1),
        Grain::Quarter => Some(3),
        Grain::Year => Some(12),
        _ => None,
    };
    let days = |x: Grain| match x {
        Grain::Day => Some(1),
        Grain::Week => Some(7),
        _ => None,
    };
    if g == hg {
        return Some(periods);
    }
    if let (Some(a), Some(b)) = (months(hg), months(g))
        && (periods * a).is_multiple_of(b)
    {
        return Some(periods * a / b);
    }
    if let (Some(a), Some(b)) = (days(hg), days(g))
        && (periods * a).is_multiple_of(b)
    {
        return Some(periods * a / b);
    }
    if let (Some(a), Grain::Day) = (months(hg), g) {
        return Some(periods * a * 30);
    }
    None
}

struct Fc {
    model: String,
    point: Vec<f64>,
    lo80: Vec<f64>,
    hi80: Vec<f64>,
    lo95: Vec<f64>,
    hi95: Vec<f64>,
}

fn forecast(y: &[f64], h: usize, season: Option<usize>) -> Result<Fc, String> {
    let split = |f80: augurs::Forecast, f95: augurs::Forecast, model: String| -> Result<Fc, String> {
        let i80 = f80.intervals.ok_or("the model gave no 80% interval")?;
        let i95 = f95.intervals.ok_or("the model gave no 95% interval")?;
        Ok(Fc {
            model,
            point: f95.point,
            lo80: i80.lower,
            hi80: i80.upper,
            lo95: i95.lower,
            hi95: i95.upper,
        })
    };
    if let Some(s) = season.filter(|s| y.len() >= 2 * s) {
        let trend = AutoETS::non_seasonal().into_trend_model();
        let fitted = MSTLModel::new(vec![s], trend).fit(y).map_err(|e| e.to_string())?;
        let f80 = fitted.predict(h, 0.8).map_err(|e| e.to_string())?;
        let f95 = fitted.predict(h, 0.95).map_err(|e| e.to_string())?;
        return split(
            f80,
            f95,
            format!("MSTL (season of {s} periods) with an AutoETS trend (augurs)"),
        );
    }
    let fitted = AutoETS::non_seasonal().fit(y).map_err(|e| e.to_string())?;
    let f80 = fitted.predict(h, 0.8).map_err(|e| e.to_string())?;
    let f95 = fitted.predict(h, 0.95).map_err(|e| e.to_string())?;
    let name = fitted.model().model_type().to_string();
    split(f80, f95, format!("AutoETS {name} without seasonality (augurs)"))
}

fn prediction(ctx: &Ctx, plan: &mut Plan) -> Result<Out, EngineError> {
    if plan.grain.is_none()
        && let Some((_, hg)) = plan.horizon
    {
        let g = if ctx.info.monthly && matches!(hg, Grain::Day | Grain::Week) {
            Grain::Month
        } else {
            hg
        };
        plan.grain = Some(g);
    }
    let g = time_series_plan(ctx, plan, AnalysisKind::Prediction, false)?;
    let h = match plan.horizon {
        Some((n, hg)) => horizon_in(g, n, hg).ok_or_else(|| {
            ctx.refuse(
                "next",
                format!(
                    "a horizon in {}s cannot be expressed in {}s; use the same unit",
                    hg.as_str(),
                    g.as_str()
                ),
            )
        })?,
        None => {
            plan.notes.push(format!(
                "no horizon in the question ('next 3 months'): forecast 3 {}s",
                g.as_str()
            ));
            3
        }
    };
    if h > 366 {
        return Err(ctx.refuse(
            "next",
            format!("a horizon of {h} {}s is too far; at most 366", g.as_str()),
        ));
    }
    let (sql, table) = ctx.run(plan)?;
    let mut results = Vec::new();
    for m in plan.measures.clone() {
        for s in limit_series(split_series(&table, g.as_str(), &plan.group_by, &m), plan) {
            let mut periods = s.periods.clone();
            let mut values = s.values.clone();
            let mut dropped = Vec::new();
            while let Some(p) = periods.last() {
                if ctx.partial(plan, p, g) {
                    dropped.push(p.clone());
                    periods.pop();
                    values.pop();
                } else {
                    break;
                }
            }
            if values.len() < 4 {
                results.push(json!({
                    "group": s.key_json(), "measure": m.label,
                    "summary": format!("{} complete {}s of history; a forecast needs at least 4", values.len(), g.as_str()),
                }));
                continue;
            }
            let fc = forecast(&values, h, g.season())
                .map_err(|e| EngineError::Query(format!("forecast failed: {e}")))?;
            let last = periods.last().and_then(|p| parse_date(p)).unwrap_or_default();
            let rows: Vec<Json> = (0..h)
                .map(|i| {
                    let p = add_periods(period_start(last, g), g, i as i64 + 1).unwrap_or(last);
                    json!({
                        "period": p.to_string(),
                        "forecast": round4(fc.point[i]),
                        "lower_80": round4(fc.lo80[i]), "upper_80": round4(fc.hi80[i]),
                        "lower_95": round4(fc.lo95[i]), "upper_95": round4(fc.hi95[i]),
                    })
                })
                .collect();
            let total: f64 = fc.point.iter().sum();
            results.push(json!({
                "group": s.key_json(),
                "measure": m.label,
                "model": fc.model,
                "history_periods": values.len(),
                "history_last_period": periods.last(),
                "partial_periods_excluded": dropped,
                "forecast": rows,
                "summary": format!(
                    "{} for {}: next {h} {}s forecast {} in total (first {}: {} , 95% interval {}..{})",
                    m.label, s.key_text(), g.as_str(), round4(total), g.as_str(),
                    round4(fc.point[0]), round4(fc.lo95[0]), round4(fc.hi95[0])
                ),
            }));
        }
    }
    Ok((
        sql,
        table,
        json!({"horizon": {"periods": h, "grain": g.as_str()}, "interval_levels": [0.8, 0.95], "series": results}),
    ))
}

/// Centered rolling median (window `w`, odd), for a robust local level.
fn rolling_median(x: &[f64], w: usize) -> Vec<f64> {
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

const OUTLIER_THRESHOLD: f64 = 3.5;

fn outliers(ctx: &Ctx, plan: &mut Plan) -> Result<Out, EngineError> {
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

fn correlation(ctx: &Ctx, plan: &mut Plan) -> Result<Out, EngineError> {
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

fn segment_mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        f64::NAN
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

/// The series minus its seasonal component (robust STL from augurs' stlrs), when the series covers
/// at least two full seasons; None otherwise.
pub fn deseasonalize(y: &[f64], season: Option<usize>, min_cycles: usize) -> Option<Vec<f64>> {
    let s = season?;
    if s < 2 || y.len() < min_cycles * s {
        return None;
    }
    // a near-periodic seasonal component (long seasonal window), so level shifts stay out of it
    let fit = augurs::mstl::stlrs::params()
        .robust(true)
        .seasonal_length(10 * y.len() + 1)
        .fit(y, s)
        .ok()?;
    Some(y.iter().zip(fit.seasonal()).map(|(v, sv)| v - sv).collect())
}

/// Seasons a series must cover before change detection removes seasonality (with two, a shift in
/// the second year leaks into the seasonal component).
const CHANGE_MIN_CYCLES: usize = 3;

/// Candidate change points (indices where a new level starts) in `y`: the union of augurs' Bayesian
/// online change point detector (Normal-Gamma) and autoregressive Gaussian-process detector, run on
/// the standardised series.
pub fn change_points(y: &[f64]) -> Vec<usize> {
    if y.len() < 6 {
        return Vec::new();
    }
    let mean = segment_mean(y);
    let sd = (y.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (y.len() - 1) as f64).sqrt();
    if sd == 0.0 || !sd.is_finite() {
        return Vec::new();
    }
    let z: Vec<f64> = y.iter().map(|v| (v - mean) / sd).collect();
    let mut cps = NormalGammaDetector::default().detect_changepoints(&z);
    cps.extend(DefaultArgpcpDetector::default().detect_changepoints(&z));
    // augurs reports the index before each change (and always 0)
    let mut out: Vec<usize> = cps
        .into_iter()
        .filter(|&c| c > 0)
        .map(|c| c + 1)
        .filter(|&c| c < y.len())
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// Level shifts in `level` that pass a test: (index where the new level starts, shift beyond the
/// trend, p-value). Each candidate from [`change_points`] is moved to the split within ±6 periods
/// that best fits a trend-plus-step model over the window between its neighbours, and kept when
/// both sides have at least 3 periods and the step's t-test gives p < 0.01.
pub fn significant_changes(level: &[f64]) -> Vec<(usize, f64, f64)> {
    let n = level.len();
    // a shift must last: at least 3 periods and a twentieth of the series on each side
    let min_seg = (n / 20).max(3);
    let mut cps = change_points(level);
    loop {
        let mut bounds = vec![0];
        bounds.extend(cps.iter().copied());
        bounds.push(n);
        let mut worst: Option<(usize, f64)> = None;
        let mut out = Vec::new();
        for i in 0..cps.len() {
            let (lo, hi) = (bounds[i], bounds[i + 2]);
            let win = &level[lo..hi];
            let from = cps[i].saturating_sub(6).max(lo + min_seg);
            let to = (cps[i] + 6).min(hi.saturating_sub(min_seg));
            let best = (from..=to)
                .filter_map(|c| stats::step_test(win, c - lo).map(|r| (c, r)))
                .max_by(|a, b| a.1.1.abs().total_cmp(&b.1.1.abs()));
            let (cp, step, p) = match best {
                Some((c, (step, _, p))) => (c, step, p),
                None => (cps[i], 0.0, 1.0),
            };
            if p >= 0.01 && worst.is_none_or(|w| p > w.1) {
                worst = Some((i, p));
            }
            out.push((cp, step, p));
        }
        match worst {
            Some((i, _)) => {
                cps.remove(i);
            }
            None => {
                out.dedup_by_key(|c| c.0);
                return out;
            }
        }
    }
}

fn change(ctx: &Ctx, plan: &mut Plan) -> Result<Out, EngineError> {
    let g = time_series_plan(ctx, plan, AnalysisKind::Change, true)?;
    let m = plan.measures[0].clone();
    if plan.measures.len() > 1 {
        plan.notes.push(format!(
            "change points are computed on the first measure, {}",
            m.label
        ));
        plan.measures.truncate(1);
    }
    // the total series (filters applied), drivers come from the dimensions
    let group_dims = std::mem::take(&mut plan.group_by);
    let (sql, table) = ctx.run(plan)?;
    let total = split_series(&table, g.as_str(), &[], &m).into_iter().next();
    let Some(mut total) = total else {
        return Ok((
            sql,
            table,
            json!({"change_points": [], "summary": "no data in range"}),
        ));
    };
    while total.periods.last().is_some_and(|p| ctx.partial(plan, p, g)) {
        plan.notes.push(format!(
            "partial {} {} left out",
            g.as_str(),
            total.periods.last().expect("some")
        ));
        total.periods.pop();
        total.values.pop();
    }
    let adjusted = deseasonalize(&total.values, g.season(), CHANGE_MIN_CYCLES);
    let level: Vec<f64> = adjusted.clone().unwrap_or_else(|| total.values.clone());
    match (adjusted.is_some(), g.season()) {
        (true, Some(s)) => plan.notes.push(format!("levels are seasonally adjusted (STL, season of {s} {}s)", g.as_str())),
        (false, Some(s)) => plan.notes.push(format!(
            "the series has fewer than {CHANGE_MIN_CYCLES} seasons of {s} {}s, so seasonality is not removed: seasonal swings can show up as change points",
            g.as_str()
        )),
        _ => {}
    }
    let cps = significant_changes(&level);
    let mut bounds = vec![0];
    bounds.extend(cps.iter().map(|c| c.0));
    let cps: Vec<(usize, f64, f64)> = cps;
    bounds.push(total.values.len());
    // drivers: per-member series of each candidate dimension
    let additive = matches!(m.agg, Aggregation::Sum | Aggregation::Count);
    let dims: Vec<String> = if !group_dims.is_empty() {
        group_dims.clone()
    } else {
        ctx.ds
            .dimensions()
            .filter(|c| {
                Some(&c.name) != ctx.ds.key.as_ref() && ctx.engine.values(ctx.ds, &c.name).len() <= 50
            })
            .map(|c| c.name.clone())
            .collect()
    };
    let mut extra_sql = Vec::new();
    // segment sums per member, by dimension: (dimension, [(member, [segment means...])])
    let mut seg_means: Vec<(String, Vec<MemberSegments>)> = Vec::new();
    if additive && !cps.is_empty() && !dims.is_empty() {
        if adjusted.is_some() {
            // seasonally adjusted member series, then segment means
            for d in &dims {
                let mut p = plan.clone();
                p.group_by = vec![d.clone()];
                p.order = None;
                let (s, t) = ctx.run(&p)?;
                extra_sql.push(s.text);
                let mut members = Vec::new();
                for mut s in split_series(&t, g.as_str(), std::slice::from_ref(d), &m) {
                    s.periods.truncate(total.periods.len());
                    s.values.truncate(total.periods.len());
                    if s.values.len() < total.periods.len() {
                        continue;
                    }
                    if let Some(a) = deseasonalize(&s.values, g.season(), CHANGE_MIN_CYCLES) {
                        s.values = a;
                    }
                    let means = bounds
                        .windows(2)
                        .map(|w| segment_mean(&s.values[w[0]..w[1]]))
                        .collect();
                    members.push((s.key.first().map(|k| k.1.clone()).unwrap_or_default(), means));
                }
                seg_means.push((d.clone(), members));
            }
        } else {
            // per dimension: each segment's sum over its date range, divided by its periods
            let tc = ctx.ds.time_column().map(|c| c.name.clone()).unwrap_or_default();
            let ranges: Vec<(String, String, usize)> = bounds
                .windows(2)
                .map(|w| {
                    let first = total.periods[w[0]].clone();
                    let last = parse_date(&total.periods[w[1] - 1])
                        .map(|d| period_end(d, g).to_string())
                        .unwrap_or_default();
                    (first, last, w[1] - w[0])
                })
                .collect();
            let value = match &m.column {
                Some(c) if m.agg == Aggregation::Sum => format!("SUM({})", crate::store::quote_ident(c)),
                _ => "COUNT(*)".to_string(),
            };
            let q = crate::store::quote_ident;
            let month = Grain::Month.bucket_column(&tc);
            for d in &dims {
                // daily sums per member, grouped in the order of the (dimension, month, time) covering
                // index so SQLite needs no sort; the segments are summed here
                let (mut wh, mut params) = plan.conditions(ctx.ds);
                wh.push(format!("{} BETWEEN ? AND ?", q(&tc)));
                params.push(rusqlite::types::Value::Text(ranges[0].0.clone()));
                params.push(rusqlite::types::Value::Text(ranges[ranges.len() - 1].1.clone()));
                let sql = crate::plan::Sql {
                    text: format!(
                        "SELECT {}, {}, {value} FROM {} WHERE {} GROUP BY {}, {}, {}",
                        q(d),
                        q(&tc),
                        q(&ctx.ds.table_name()),
                        wh.join(" AND "),
                        q(d),
                        q(&month),
                        q(&tc)
                    ),
                    params,
                };
                let t = ctx.engine.run(&sql)?;
                extra_sql.push(sql.text);
                let mut sums: Vec<(String, Vec<f64>)> = Vec::new();
                for r in &t.rows {
                    let member = value_str(&r[0]);
                    let day = value_str(&r[1]);
                    let Some(seg) = ranges
                        .iter()
                        .position(|(a, b, _)| day.as_str() >= a.as_str() && day.as_str() <= b.as_str())
                    else {
                        continue;
                    };
                    let i = match sums.iter().rposition(|(mm, _)| *mm == member) {
                        Some(i) => i,
                        None => {
                            sums.push((member, vec![0.0; ranges.len()]));
                            sums.len() - 1
                        }
                    };
                    sums[i].1[seg] += value_f64(&r[2]).unwrap_or(0.0);
                }
                let members: Vec<MemberSegments> = sums
                    .into_iter()
                    .map(|(name, v)| {
                        (
                            name,
                            v.iter()
                                .zip(&ranges)
                                .map(|(s, (_, _, n))| s / *n as f64)
                                .collect(),
                        )
                    })
                    .collect();
                seg_means.push((d.clone(), members));
            }
        }
    }
    let mut points = Vec::new();
    for (bi, &(cp, step, p_value)) in cps.iter().enumerate() {
        let (lo, hi) = (bounds[bi], bounds[bi + 2]);
        let before = segment_mean(&level[lo..cp]);
        let after = segment_mean(&level[cp..hi]);
        let delta = after - before;
        let pct = if before != 0.0 {
            100.0 * delta / before.abs()
        } else {
            f64::NAN
        };
        let mut drivers = Vec::new();
        for (d, members) in &seg_means {
            let mut contrib: Vec<(String, f64, f64, f64)> = members
                .iter()
                .map(|(name, means)| (name.clone(), means[bi], means[bi + 1], means[bi + 1] - means[bi]))
                .collect();
            contrib.sort_by(|x, y| y.3.abs().total_cmp(&x.3.abs()));
            let top: Vec<Json> = contrib
                .iter()
                .take(3)
                .map(|(name, b, a, dd)| json!({
                    "member": name,
                    "level_before": round4(*b),
                    "level_after": round4(*a),
                    "change": round4(*dd),
                    "share_of_change_pct": if delta != 0.0 { Some(round4(100.0 * dd / delta)) } else { None },
                }))
                .collect();
            let lead_share = contrib
                .first()
                .map(|c| if delta != 0.0 { c.3 / delta } else { 0.0 })
                .unwrap_or(0.0);
            drivers.push((lead_share, json!({"dimension": d, "top_members": top})));
        }
        drivers.sort_by(|a, b| b.0.total_cmp(&a.0));
        let lead = drivers.first().and_then(|(share, d)| {
            let mem = d["top_members"].get(0)?;
            Some(format!(
                "; driven most by {} {} ({:.0}% of the change)",
                d["dimension"].as_str()?,
                mem["member"].as_str()?,
                100.0 * share
            ))
        });
        points.push(json!({
            "period": total.periods[cp],
            "level_before": round4(before),
            "level_after": round4(after),
            "change": round4(delta),
            "percent_change": round4(pct),
            "shift_beyond_trend": round4(step),
            "p_value": p_value,
            "segment_before": [total.periods[lo], total.periods[cp - 1]],
            "segment_after": [total.periods[cp], total.periods[hi - 1]],
            "drivers": drivers.into_iter().map(|(_, d)| d).collect::<Vec<_>>(),
            "summary": format!(
                "from {} the {} level of {} moved from {} to {} ({:+.1}%){}",
                total.periods[cp], g.as_str(), m.label, round4(before), round4(after), pct,
                lead.unwrap_or_default()
            ),
        }));
    }
    points.reverse(); // most recent first
    if !additive && !cps.is_empty() {
        plan.notes.push(format!(
            "{} is not additive ({}), so no member breakdown of the change",
            m.label,
            m.agg.as_str()
        ));
    }
    plan.group_by = group_dims;
    let summary = if points.is_empty() {
        format!(
            "no change point found in {} at {} grain over {} periods",
            m.label,
            g.as_str(),
            total.values.len()
        )
    } else {
        format!(
            "{} change point(s) in {} at {} grain; most recent: {}",
            points.len(),
            m.label,
            g.as_str(),
            points[0]["summary"].as_str().unwrap_or("")
        )
    };
    Ok((
        sql,
        table,
        json!({
            "method": "change point candidates from augurs' autoregressive Gaussian-process detector (DefaultArgpcpDetector) on the seasonally adjusted, linearly detrended, standardised series; each moved to the best-fitting split of a trend-plus-step model (±6 periods) and kept when both sides have at least max(3, n/20) periods and the step's t-test gives p < 0.01; levels are segment means of the seasonally adjusted series",
            "series": {"measure": m.label, "periods": total.periods, "values": total.values.iter().map(|v| round4(*v)).collect::<Vec<_>>()},
            "change_points": points,
            "driver_sql": extra_sql,
            "summary": summary,
        }),
    ))
}

fn pareto(ctx: &Ctx, plan: &mut Plan) -> Result<Out, EngineError> {
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
    let few: Vec<String> = table.rows.iter().take(vital).map(name).collect();
    if let Some(l) = limit {
        table.rows.truncate(l);
        plan.limit = Some(l);
    }
    let n = values.len();
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
            "vital_few_count": vital,
            "vital_few_share_of_members_pct": if n > 0 { round4(100.0 * vital as f64 / n as f64) } else { 0.0 },
            "vital_few_share_of_total_pct": round4(reached),
            "summary": format!(
                "{vital} of {n} {dim} values ({:.0}%) make {:.1}% of {}: {}",
                if n > 0 { 100.0 * vital as f64 / n as f64 } else { 0.0 }, reached, m.label, few.join(", ")
            ),
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn change_points_find_a_level_shift() {
        // 40 points at 10 ± 0.3, then 40 points at 16 ± 0.3: one change at index 40
        let y: Vec<f64> = (0..80)
            .map(|i| if i < 40 { 10.0 } else { 16.0 } + 0.3 * ((i * 7 % 5) as f64 - 2.0) / 2.0)
            .collect();
        let cps = change_points(&y);
        assert!(cps.iter().any(|&c| (39..=41).contains(&c)), "{cps:?}");
        assert!(cps.len() <= 2, "{cps:?}");
    }

    #[test]
    fn no_change_point_in_flat_noise() {
        let y: Vec<f64> = (0..60).map(|i| 10.0 + 0.3 * ((i * 7 % 5) as f64 - 2.0)).collect();
        assert!(change_points(&y).is_empty(), "{:?}", change_points(&y));
    }

    #[test]
    fn forecast_continues_a_linear_series_with_nested_intervals() {
        let y: Vec<f64> = (0..30)
            .map(|i| 100.0 + 5.0 * i as f64 + if i % 2 == 0 { 1.0 } else { -1.0 })
            .collect();
        let fc = forecast(&y, 3, None).unwrap();
        assert_eq!(fc.point.len(), 3);
        for i in 0..3 {
            let expected = 100.0 + 5.0 * (30 + i) as f64;
            assert!(
                (fc.point[i] - expected).abs() < 10.0,
                "{} vs {expected}",
                fc.point[i]
            );
            assert!(
                fc.lo95[i] <= fc.lo80[i]
                    && fc.lo80[i] <= fc.point[i]
                    && fc.point[i] <= fc.hi80[i]
                    && fc.hi80[i] <= fc.hi95[i]
            );
        }
    }

    #[test]
    fn seasonal_forecast_repeats_the_season() {
        // 4 years of monthly data: December peak
        let y: Vec<f64> = (0..48)
            .map(|i| 100.0 + if i % 12 == 11 { 50.0 } else { 0.0 } + (i % 3) as f64)
            .collect();
        let fc = forecast(&y, 12, Some(12)).unwrap();
        let dec = fc.point[11];
        let others = fc.point[..11].iter().cloned().fold(f64::MIN, f64::max);
        assert!(dec > others + 30.0, "{:?}", fc.point);
        assert!(fc.model.starts_with("MSTL"));
    }

    #[test]
    fn rolling_median_ignores_a_spike() {
        let mut x = vec![5.0; 21];
        x[10] = 100.0;
        let m = rolling_median(&x, 5);
        assert!(m.iter().all(|v| *v == 5.0));
    }

    #[test]
    fn horizon_conversion() {
        assert_eq!(horizon_in(Grain::Month, 1, Grain::Quarter), Some(3));
        assert_eq!(horizon_in(Grain::Week, 14, Grain::Day), Some(2));
        assert_eq!(horizon_in(Grain::Quarter, 2, Grain::Month), None);
        assert_eq!(horizon_in(Grain::Month, 3, Grain::Month), Some(3));
    }
}
