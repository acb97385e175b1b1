//! The six analysis tools, one file each: trend, prediction, outliers, correlation, change, Pareto.
//! `series` splits query results into series; this module holds what they share.

mod change;
mod correlation;
mod outliers;
mod pareto;
mod prediction;
pub mod seasonal;
pub mod series;
mod trend;

use chrono::NaiveDate;
use serde_json::Value as Json;

use crate::catalog::Dataset;
use crate::engine::RtInfo;
use crate::plan::{Grain, Plan};
use crate::table::Table;
use crate::{AnalysisKind, Engine, EngineError};
pub use series::{Series, split_series};
use series::{parse_date, period_end};

/// Most series analysed per question (one per group member).
const MAX_SERIES: usize = 12;

/// Most points of a series, and most rows, an analysis answer lists (a language model reads it; the
/// statistics always use every point).
pub const MAX_POINTS: usize = 200;

/// The last MAX_POINTS periods and values (rounded), and a note when some were left out.
pub(crate) fn bound_points(periods: &[String], values: &[f64]) -> (Vec<String>, Vec<f64>, Option<String>) {
    let n = periods.len();
    let from = n.saturating_sub(MAX_POINTS);
    let note = (from > 0)
        .then(|| format!("the answer lists the last {MAX_POINTS} of {n} periods; the analysis used all {n}"));
    (
        periods[from..].to_vec(),
        values[from..].iter().map(|v| crate::table::round4(*v)).collect(),
        note,
    )
}

pub(crate) struct Ctx<'a> {
    pub engine: &'a Engine,
    pub ds: &'a Dataset,
    pub info: RtInfo,
}

impl Ctx<'_> {
    pub(crate) fn refuse(&self, part: &str, reason: String) -> EngineError {
        self.engine.not_understood(self.ds, part, reason)
    }
    pub(crate) fn require_time(&self, kind: AnalysisKind) -> Result<String, EngineError> {
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
    pub(crate) fn require_measure(&self, plan: &Plan) -> Result<(), EngineError> {
        if plan.measures.is_empty() {
            Err(self.engine.no_measure(self.ds))
        } else {
            Ok(())
        }
    }
    /// Default grain for a time analysis over the plan's range.
    pub(crate) fn default_grain(&self, plan: &Plan, coarse: bool) -> Grain {
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
    pub(crate) fn span(&self, plan: &Plan) -> (NaiveDate, NaiveDate) {
        let lo = self.info.earliest.unwrap_or_default();
        let hi = self.info.latest.unwrap_or_default();
        match &plan.time {
            Some(t) => (t.start.max(lo), t.end.min(hi)),
            None => (lo, hi),
        }
    }
    /// Periods at the edges that the data or the range covers only in part (not for monthly data at
    /// month grain or coarser).
    pub(crate) fn partial(&self, plan: &Plan, period: &str, g: Grain) -> bool {
        if self.info.monthly && g != Grain::Day && g != Grain::Week {
            return false;
        }
        let (lo, hi) = self.span(plan);
        match parse_date(period) {
            Some(p) => p < lo || period_end(p, g) > hi,
            None => false,
        }
    }
    pub(crate) fn run(&self, plan: &Plan) -> Result<(crate::plan::Sql, Table), EngineError> {
        let sql = plan.sql(self.ds);
        let t = self.engine.run(&sql)?;
        Ok((sql, t))
    }
}

pub(crate) fn apply_default_grain(plan: &mut Plan, g: Grain) {
    if plan.grain.is_none() {
        plan.grain = Some(g);
        plan.notes
            .push(format!("no time grain in the question: used {}", g.as_str()));
    }
}

pub(crate) fn limit_series(series: Vec<Series>, plan: &mut Plan) -> Vec<Series> {
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
    let (sql, table, analysis) = match kind {
        AnalysisKind::Trend => trend::trend(&ctx, &mut plan)?,
        AnalysisKind::Prediction => prediction::prediction(&ctx, &mut plan)?,
        AnalysisKind::Outlier => outliers::outliers(&ctx, &mut plan)?,
        AnalysisKind::Correlation => correlation::correlation(&ctx, &mut plan)?,
        AnalysisKind::Change => change::change(&ctx, &mut plan)?,
        AnalysisKind::Pareto => pareto::pareto(&ctx, &mut plan)?,
    };
    let rt = engine.rt(ds);
    Ok(engine.answer(ds, rt, &plan, &sql, &table, Some((kind, analysis))))
}

pub(crate) type Out = (crate::plan::Sql, Table, Json);

pub(crate) fn time_series_plan(
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
