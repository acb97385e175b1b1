//! Prediction: augurs MSTL + AutoETS (or AutoETS) forecasts with 80 % and 95 % intervals.

use augurs::ets::AutoETS;
use augurs::mstl::MSTLModel;
use augurs::{Fit, Predict};

use serde_json::{Value as Json, json};

use crate::AnalysisKind;
use crate::EngineError;
use crate::analytics::series::{parse_date, split_series};
use crate::analytics::{Ctx, Out};
use crate::analytics::{limit_series, time_series_plan};
use crate::nlq::time::{add_periods, period_start};
use crate::plan::{Grain, Plan};
use crate::table::round4;

/// Horizon in periods of `g`.
pub(crate) fn horizon_in(g: Grain, periods: usize, hg: Grain) -> Option<usize> {
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

pub(crate) struct Fc {
    model: String,
    point: Vec<f64>,
    lo80: Vec<f64>,
    hi80: Vec<f64>,
    lo95: Vec<f64>,
    hi95: Vec<f64>,
}

pub(crate) fn forecast(y: &[f64], h: usize, season: Option<usize>) -> Result<Fc, String> {
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

pub(crate) fn prediction(ctx: &Ctx, plan: &mut Plan) -> Result<Out, EngineError> {
    // "predict units for Q1 2026": a range after the data is the horizon, in months
    if let (Some(t), Some(latest)) = (plan.time.clone(), ctx.info.latest)
        && t.start > latest
        && plan.horizon.is_none()
    {
        use chrono::Datelike;
        let months = (t.end.year() - latest.year()) * 12 + t.end.month() as i32 - latest.month() as i32;
        if months < 1 {
            return Err(ctx.refuse(
                &t.phrase,
                format!("'{}' is not after the data's last month", t.phrase),
            ));
        }
        plan.horizon = Some((months as usize, Grain::Month));
        if plan.grain.is_none() {
            plan.grain = Some(Grain::Month);
        }
        plan.notes.push(format!(
            "'{}' is after the data (last date {latest}): forecast {months} months ahead, to {}",
            t.phrase, t.end
        ));
        plan.time = None;
    }
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn horizon_conversion() {
        assert_eq!(horizon_in(Grain::Month, 1, Grain::Quarter), Some(3));
        assert_eq!(horizon_in(Grain::Week, 14, Grain::Day), Some(2));
        assert_eq!(horizon_in(Grain::Quarter, 2, Grain::Month), None);
        assert_eq!(horizon_in(Grain::Month, 3, Grain::Month), Some(3));
    }
}
