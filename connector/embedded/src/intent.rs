//! What a question asks for: the tool answering it, and the one routing check that every tool runs
//! before answering (a forecast horizon only for predictions, a share only for Pareto, ...).

use crate::plan::{Compare, Plan};

/// The analysis tools: defined in the fleet's contract, shared with the connector.
pub use lumenore_contract::AnalysisKind;

/// The tool a question is asked through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tool {
    /// nlq_to_data: the plain data.
    Data,
    /// One of the analysis tools.
    Analysis(AnalysisKind),
}

/// Check that a plan's words fit the tool it was asked through: (part, reason) when they do not.
/// Notes for the answer are added to the plan.
pub fn route(plan: &mut Plan, tool: Tool) -> Result<(), (String, String)> {
    let kind = match tool {
        Tool::Data => None,
        Tool::Analysis(k) => Some(k),
    };
    let is = |k: AnalysisKind| kind == Some(k);
    let by = |k: AnalysisKind, what: &str| -> String {
        match kind {
            None => format!("{what} is answered by {}, not nlq_to_data", k.tool()),
            Some(_) => format!("{what} is answered by {}", k.tool()),
        }
    };
    if let Some(s) = plan.share
        && !is(AnalysisKind::Pareto)
    {
        return Err((
            format!("{s}%"),
            by(AnalysisKind::Pareto, &format!("'{s}%' (a share of the total)")),
        ));
    }
    if plan.horizon.is_some() && !is(AnalysisKind::Prediction) {
        return Err((
            "next".into(),
            by(AnalysisKind::Prediction, "a future period ('next ...')"),
        ));
    }
    if plan.recent && !is(AnalysisKind::Change) {
        return Err((
            "recently".into(),
            "'recently' is vague for this tool: give a time range, e.g. 'past 3 months'".into(),
        ));
    }
    if plan.high.is_some() && kind.is_some() && !is(AnalysisKind::Outlier) {
        return Err((
            "unusually".into(),
            by(AnalysisKind::Outlier, "'unusually high/low'"),
        ));
    }
    if kind.is_some()
        && let Some(Compare::OverPeriods(g)) = plan.compare
    {
        // "growing month over month": the analysis reads the series at that grain
        plan.compare = None;
        plan.notes.push(format!(
            "'{} over {}' read as a {} series",
            g.as_str(),
            g.as_str(),
            g.as_str()
        ));
    }
    if kind.is_some()
        && let Some(range) = plan.range_compared.take()
    {
        // an analysis reads the whole range between the two periods
        plan.compare = None;
        plan.time = Some(range);
        plan.notes
            .retain(|n| !n.starts_with("one row per period") && !n.contains("with a change word"));
    }
    if kind.is_some()
        && let Some(Compare::Periods(_)) = plan.compare
    {
        return Err((
            "vs".into(),
            "a comparison of periods ('2025 vs 2024', 'year over year') is answered by nlq_to_data".into(),
        ));
    }
    if kind.is_none() {
        // "which region grew the most": ranking by a growth or a change is not ranking by the level
        if plan.limit.is_some()
            && let Some(k) = plan.intents.iter().find(|k| {
                matches!(
                    k,
                    AnalysisKind::Trend | AnalysisKind::Change | AnalysisKind::Outlier
                )
            })
        {
            return Err((
                k.as_str().into(),
                format!(
                    "ranking by {} is not ranking by the measure: compare periods instead ('revenue by region 2025 vs 2024' gives each member's change), or use {}",
                    match k {
                        AnalysisKind::Outlier => "how unusual a value is",
                        _ => "growth or change",
                    },
                    k.tool()
                ),
            ));
        }
        if plan.high.is_some() {
            return Err((
                "unusually".into(),
                by(AnalysisKind::Outlier, "'unusually high/low'"),
            ));
        }
        for intent in plan.intents.clone() {
            plan.notes.push(format!(
                "the question reads like a {} question; this is the plain data, {} adds the {} analysis",
                intent.as_str(),
                intent.tool(),
                intent.as_str()
            ));
        }
    }
    Ok(())
}
