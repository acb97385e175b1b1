//! Change: level shifts (change points) in a series and the dimension members that drove them.
//!
//! The series is fitted with the seasonal model shared with the trend tool (intercept, trend,
//! seasonal dummies once two seasons are covered) and level steps are searched by forward selection
//! ([`seasonal::find_steps`]). Drivers: each member series of a dimension is fitted with the same
//! steps; since least squares is linear, the members' steps add up to the total's step, so each
//! member's share of the change is exact.

use serde_json::{Value as Json, json};

use crate::AnalysisKind;
use crate::EngineError;
use crate::analytics::seasonal::{self, Step};
use crate::analytics::series::{Series, parse_date, period_end, split_series};
use crate::analytics::{Ctx, Out, bound_points, time_series_plan};
use std::collections::HashMap;

use rusqlite::types::Value;

use crate::nlq::time::period_start;
use crate::plan::{Grain, MeasureSel, Plan, Sql};
use crate::store::quote_ident;
use crate::table::round4;
use crate::table::{Table, value_f64, value_str};

/// A member and its (level before, level after, step size) at each change point.
type MemberSteps = (String, Vec<(f64, f64, f64)>);

/// Most members listed per dimension and change point.
const TOP_MEMBERS: usize = 3;

/// Dimensions with more members than this are not searched for drivers.
const MAX_DRIVER_MEMBERS: usize = 50;

fn segment_mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        f64::NAN
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

/// Seasonally adjusted series under the model with these steps.
fn adjusted(y: &[f64], season: Option<usize>, steps: &[usize]) -> Vec<f64> {
    let sc = seasonal::seasonal_component(y, season, steps);
    y.iter().zip(&sc).map(|(v, s)| v - s).collect()
}

/// For each step: (level before, level after, step size) of one member series.
fn member_steps(
    s: &Series,
    n: usize,
    season: Option<usize>,
    at: &[usize],
    bounds: &[usize],
) -> Option<Vec<(f64, f64, f64)>> {
    if s.values.len() < n {
        return None;
    }
    let y = &s.values[..n];
    let sizes = seasonal::step_sizes(y, season, at);
    let adj = adjusted(y, season, at);
    Some(
        sizes
            .iter()
            .enumerate()
            .map(|(k, st)| {
                let before = segment_mean(&adj[bounds[k]..st.at]);
                let after = segment_mean(&adj[st.at..bounds[k + 2]]);
                (before, after, st.size)
            })
            .collect(),
    )
}

/// (period, member, value) rows of dimension `d` at grain `g`. Daily data is read in the order of
/// the (dimension, month, day) covering index, so SQLite needs no sort, and the days are put into
/// their periods here (profiled: a GROUP BY week or over several dimensions sorts every row).
fn member_table(
    ctx: &Ctx,
    plan: &Plan,
    d: &str,
    g: Grain,
    m: &MeasureSel,
) -> Result<(String, Table), EngineError> {
    let tc = ctx.ds.time_column().map(|c| c.name.clone()).unwrap_or_default();
    if ctx.info.monthly || g == Grain::Day {
        let mut p = plan.clone();
        p.group_by = vec![d.to_string()];
        p.order = None;
        let (s, t) = ctx.run(&p)?;
        return Ok((s.text, t));
    }
    let q = quote_ident;
    let (wh, params) = plan.conditions(ctx.ds);
    let sql = Sql {
        text: format!(
            "SELECT {}, {}, {} FROM {}{} GROUP BY {}, {}, {}",
            q(d),
            q(&tc),
            m.sql(),
            q(&ctx.ds.table_name()),
            if wh.is_empty() {
                String::new()
            } else {
                format!(" WHERE {}", wh.join(" AND "))
            },
            q(d),
            q(&Grain::Month.bucket_column(&tc)),
            q(&tc)
        ),
        params,
    };
    let days = ctx.engine.run(&sql)?;
    let mut sums: HashMap<(String, String), f64> = HashMap::new();
    let mut order: Vec<(String, String)> = Vec::new();
    for r in &days.rows {
        let Some(day) = parse_date(&value_str(&r[1])) else {
            continue;
        };
        let key = (period_start(day, g).to_string(), value_str(&r[0]));
        let e = sums.entry(key.clone()).or_insert_with(|| {
            order.push(key.clone());
            0.0
        });
        *e += value_f64(&r[2]).unwrap_or(0.0);
    }
    let rows = order
        .into_iter()
        .map(|k| {
            let v = sums[&k];
            vec![Value::Text(k.0), Value::Text(k.1), Value::Real(v)]
        })
        .collect();
    Ok((
        sql.text,
        Table {
            columns: vec![g.as_str().to_string(), d.to_string(), m.label.clone()],
            rows,
        },
    ))
}

pub(crate) fn change(ctx: &Ctx, plan: &mut Plan) -> Result<Out, EngineError> {
    let g = time_series_plan(ctx, plan, AnalysisKind::Change, true)?;
    let m = plan.measures[0].clone();
    if plan.measures.len() > 1 {
        plan.notes.push(format!(
            "change points are computed on the first measure, {}",
            m.label
        ));
        plan.measures.truncate(1);
    }
    // the total series (filters applied); drivers come from the dimensions
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
    let n = total.values.len();
    let season = seasonal::season_used(n, g.season());
    match (season, g.season()) {
        (Some(s), _) => plan.notes.push(format!(
            "levels are seasonally adjusted (a seasonal pattern of {s} {}s fitted with the trend and the steps; the trend tool uses the same model)",
            g.as_str()
        )),
        (None, Some(s)) => plan.notes.push(format!(
            "the series has fewer than {} seasons of {s} {}s, so seasonality is not modelled: seasonal swings can show up as change points",
            seasonal::MIN_CYCLES,
            g.as_str()
        )),
        _ => {}
    }
    // positive series (money, counts) grow and swing in proportion: steps are searched on the log
    // scale, where seasonality and growth are additive
    let log_scale = total.values.iter().all(|v| *v > 0.0);
    // totals of daily data over months, quarters or weeks are compared per day, so that a 28-day
    // February is not read as a drop (calendar adjustment)
    let per_day = !ctx.info.monthly && g != Grain::Day && m.additive();
    let (lo, hi) = ctx.span(plan);
    let days = |p: &str| -> f64 {
        match (per_day, parse_date(p)) {
            (true, Some(start)) => {
                ((period_end(start, g).min(hi) - start.max(lo)).num_days() + 1).max(1) as f64
            }
            _ => 1.0,
        }
    };
    let to_detect = |values: &[f64]| -> Vec<f64> {
        let log = values.iter().all(|v| *v > 0.0);
        values
            .iter()
            .zip(&total.periods)
            .map(|(v, p)| if log { (v / days(p)).ln() } else { v / days(p) })
            .collect()
    };
    let (found, spikes) = seasonal::find_steps_robust(&to_detect(&total.values), season);
    if !spikes.is_empty() {
        plan.notes.push(format!(
            "single-period spikes set aside while searching for level changes: {}",
            spikes
                .iter()
                .map(|&i| total.periods[i].clone())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let mut at: Vec<usize> = found.iter().map(|s| s.at).collect();
    if log_scale && !at.is_empty() {
        plan.notes.push(format!(
            "{} is positive: steps were searched on the log scale (seasonality and growth in proportion); their sizes are in {} units",
            m.label, m.label
        ));
    }

    // member series of each candidate dimension (drivers)
    let dims: Vec<String> = if !group_dims.is_empty() {
        group_dims.clone()
    } else {
        ctx.ds
            .dimensions()
            .filter(|c| {
                Some(&c.name) != ctx.ds.key.as_ref()
                    && ctx.engine.values(ctx.ds, &c.name).len() <= MAX_DRIVER_MEMBERS
            })
            .map(|c| c.name.clone())
            .collect()
    };
    let mut extra_sql = Vec::new();
    let mut member_series: Vec<(String, Vec<Series>)> = Vec::new();
    if m.additive() && !at.is_empty() && !dims.is_empty() {
        for d in &dims {
            let (sql, t) = member_table(ctx, plan, d, g, &m)?;
            extra_sql.push(sql);
            let series: Vec<Series> = split_series(&t, g.as_str(), std::slice::from_ref(d), &m)
                .into_iter()
                .filter(|s| s.values.len() >= n)
                .map(|mut s| {
                    s.values.truncate(n);
                    s.periods.truncate(n);
                    s
                })
                .collect();
            member_series.push((d.clone(), series));
        }
    } else if !at.is_empty() {
        plan.notes.push(format!(
            "{} is not additive ({}), so no member breakdown of the change",
            m.label,
            m.agg.as_str()
        ));
    }
    // timing: when one member makes most of a step, its own series (where the change is not diluted
    // by the others) places the step; the total's size is then measured there
    let min_seg = (n / 20).max(3);
    for k in 0..at.len() {
        let total_size = seasonal::step_sizes(&total.values, season, &at)[k].size;
        let dominant = member_series
            .iter()
            .flat_map(|(_, ss)| ss.iter())
            .map(|s| (s, seasonal::step_sizes(&s.values, season, &at)[k].size))
            .filter(|(_, size)| total_size != 0.0 && size / total_size >= 0.75)
            .max_by(|a, b| a.1.total_cmp(&b.1));
        if let Some((s, _)) = dominant
            && let (own, _) = seasonal::find_steps_robust(&to_detect(&s.values), season)
            && let Some(near) = own
                .iter()
                .map(|x| x.at)
                .filter(|c| c.abs_diff(at[k]) <= min_seg && *c != at[k])
                .min_by_key(|c| c.abs_diff(at[k]))
            && at
                .iter()
                .enumerate()
                .all(|(j, c)| j == k || c.abs_diff(near) >= min_seg)
        {
            plan.notes.push(format!(
                "the change first found at {} is placed at {}, where the series of {} (which makes most of it) changes",
                total.periods[at[k]],
                total.periods[near],
                s.key_text()
            ));
            at[k] = near;
        }
    }
    at.sort_unstable();
    // sizes in the measure's units, from the same model on the series itself (they add up over members)
    let p_of = |c: usize| {
        found.iter().find(|f| f.at == c).map_or_else(
            || {
                seasonal::step_sizes(&to_detect(&total.values), season, &at)
                    .iter()
                    .find(|f| f.at == c)
                    .map_or(f64::NAN, |f| f.p_value)
            },
            |f| f.p_value,
        )
    };
    let steps: Vec<Step> = seasonal::step_sizes(&total.values, season, &at)
        .into_iter()
        .map(|lin| Step {
            p_value: p_of(lin.at),
            ..lin
        })
        .collect();
    let level = adjusted(&total.values, season, &at);
    let mut bounds = vec![0];
    bounds.extend(at.iter().copied());
    bounds.push(n);
    // (dimension, [(member, [(before, after, size) per step])])
    let by_dim: Vec<(String, Vec<MemberSteps>)> = member_series
        .iter()
        .map(|(d, ss)| {
            let members = ss
                .iter()
                .filter_map(|s| {
                    member_steps(s, n, season, &at, &bounds)
                        .map(|v| (s.key.first().map(|k| k.1.clone()).unwrap_or_default(), v))
                })
                .collect();
            (d.clone(), members)
        })
        .collect();
    let mut points = Vec::new();
    for (k, st) in steps.iter().enumerate() {
        let before = segment_mean(&level[bounds[k]..st.at]);
        let after = segment_mean(&level[st.at..bounds[k + 2]]);
        let delta = st.size;
        let pct = if before != 0.0 {
            100.0 * delta / before.abs()
        } else {
            f64::NAN
        };
        let mut drivers = Vec::new();
        for (d, members) in &by_dim {
            let mut contrib: Vec<(&String, (f64, f64, f64))> =
                members.iter().map(|(name, v)| (name, v[k])).collect();
            contrib.sort_by(|x, y| y.1.2.abs().total_cmp(&x.1.2.abs()));
            let share = |dd: f64| {
                if delta != 0.0 {
                    Some(round4(100.0 * dd / delta))
                } else {
                    None
                }
            };
            let top: Vec<Json> = contrib
                .iter()
                .take(TOP_MEMBERS)
                .map(|(name, (b, a, dd))| {
                    json!({
                        "member": name,
                        "level_before": round4(*b),
                        "level_after": round4(*a),
                        "change": round4(*dd),
                        "share_of_change_pct": share(*dd),
                    })
                })
                .collect();
            let lead_share = contrib
                .first()
                .map(|c| if delta != 0.0 { c.1.2 / delta } else { 0.0 })
                .unwrap_or(0.0);
            let mut dj = json!({"dimension": d, "members": contrib.len(), "top_members": top});
            if contrib.len() > TOP_MEMBERS {
                dj["more_members"] = json!(contrib.len() - TOP_MEMBERS);
            }
            drivers.push((lead_share, dj));
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
        let (lo, hi) = (bounds[k], bounds[k + 2]);
        points.push(json!({
            "period": total.periods[st.at],
            "level_before": round4(before),
            "level_after": round4(after),
            "change": round4(delta),
            "percent_change": round4(pct),
            "p_value": st.p_value,
            "segment_before": [total.periods[lo], total.periods[st.at - 1]],
            "segment_after": [total.periods[st.at], total.periods[hi - 1]],
            "drivers": drivers.into_iter().map(|(_, d)| d).collect::<Vec<_>>(),
            "summary": format!(
                "from {} the {} level of {} moved from {} to {} ({:+.1}%){}",
                total.periods[st.at], g.as_str(), m.label, round4(before), round4(before + delta), pct,
                lead.unwrap_or_default()
            ),
        }));
    }
    points.reverse(); // most recent first
    plan.group_by = group_dims;
    let summary = if points.is_empty() {
        format!(
            "no change point found in {} at {} grain over {n} periods",
            m.label,
            g.as_str(),
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
    let (periods, values, note) = bound_points(&total.periods, &level);
    if let Some(note) = note {
        plan.notes.push(note);
    }
    Ok((
        sql,
        table,
        json!({
            "method": "least squares of the series on an intercept, a linear trend, a seasonal pattern (once two seasons are covered: per-position means for short seasons, three Fourier harmonics for yearly ones) and level steps; steps found by forward selection (the split that most reduces the squared error, kept when its t-test p-value times the number of candidate splits is below 1 %, each side at least max(3, n/20) periods); levels are segment means of the seasonally adjusted series, the change is the fitted step; drivers: the same model on each member's series, whose steps add up to the total's",
            "grain": g.as_str(),
            "series": {"measure": m.label, "seasonally_adjusted": season.is_some(), "periods": periods, "values": values},
            "change_points": points,
            "driver_sql": extra_sql,
            "summary": summary,
        }),
    ))
}
