//! From understood pieces to a plan. Every piece that carries meaning changes the plan, or the
//! question is refused naming it: nothing is silently dropped.

use std::collections::HashMap;

use chrono::Datelike;

use crate::catalog::{Aggregation, Dataset, TimeAggregation};
use crate::nlq::keywords::It;
use crate::nlq::time::{TimeSpec, add_periods, parse_unit};
use crate::nlq::vocabulary::Term;
use crate::nlq::{Ctx, Piece, Refusal, refuse};
use crate::plan::{Compare, Filter, Grain, MeasureSel, Order, Plan, TimeRange};
use crate::store::quote_ident;

/// Adjective of a grain: "daily", "monthly".
fn adjective(g: Grain) -> &'static str {
    match g {
        Grain::Day => "daily",
        Grain::Week => "weekly",
        Grain::Month => "monthly",
        Grain::Quarter => "quarterly",
        Grain::Year => "yearly",
    }
}

/// SQL of a derived measure over aggregated columns, and whether it is a ratio.
fn derived_sql(ds: &Dataset, name: &str, agg: &str) -> Option<(String, bool)> {
    let (_, f) = ds.derived(name)?;
    let side = |s: &str| -> Option<String> {
        if ds.column(s).is_some() {
            Some(format!("{agg}({})", quote_ident(s)))
        } else {
            derived_sql(ds, s, agg).map(|(e, _)| e)
        }
    };
    let (l, r) = (side(&f.left)?, side(&f.right)?);
    Some(if f.op == '/' {
        (format!("(1.0 * {l} / NULLIF({r}, 0))"), true)
    } else {
        (format!("({l} {} {r})", f.op), false)
    })
}

/// Number of whole calendar months from `s` to `e`, when the range is exactly whole months.
fn whole_months(s: chrono::NaiveDate, e: chrono::NaiveDate) -> Option<i32> {
    let next = e + chrono::Duration::days(1);
    (s.day() == 1 && next.day() == 1)
        .then(|| (next.year() - s.year()) * 12 + next.month() as i32 - s.month() as i32)
}

fn push_measure(plan: &mut Plan, sel: MeasureSel) -> String {
    if let Some(existing) = plan.measures.iter().find(|m| m.label == sel.label) {
        return existing.label.clone();
    }
    let l = sel.label.clone();
    plan.measures.push(sel);
    l
}

fn is_measure_piece(it: &It) -> bool {
    matches!(
        it,
        It::Term(Term::Measure(_) | Term::Derived(_) | Term::Event(_) | Term::RowNoun)
    )
}

pub fn resolve(items: &[Piece], ctx: &Ctx) -> Result<Plan, Refusal> {
    let ds = ctx.ds;
    let native = if ctx.monthly { Grain::Month } else { Grain::Day };
    let mut plan = Plan::default();
    let n = items.len();
    let it = |k: usize| items.get(k).map(|p| &p.it);

    // Values next to their own dimension name ("West region", "region West") are filters, and the
    // dimension word only qualifies them.
    let mut qualifier = vec![false; n];
    let mut value_dim: HashMap<usize, (usize, String)> = HashMap::new();
    for (k, p) in items.iter().enumerate() {
        if let It::Term(Term::Value(cands)) = &p.it {
            let next_dim = match it(k + 1) {
                Some(It::Term(Term::Dimension(d))) => Some(*d),
                _ => None,
            };
            let prev_dim = match (k.checked_sub(1).and_then(it), k.checked_sub(2).and_then(it)) {
                (Some(It::Term(Term::Dimension(d))), before) if !matches!(before, Some(It::By)) => Some(*d),
                _ => None,
            };
            if let Some(d) = next_dim
                && let Some(c) = cands.iter().find(|c| c.0 == d)
            {
                qualifier[k + 1] = true;
                value_dim.insert(k, c.clone());
            } else if let Some(d) = prev_dim
                && let Some(c) = cands.iter().find(|c| c.0 == d)
            {
                qualifier[k - 1] = true;
                value_dim.insert(k, c.clone());
            } else if cands.len() == 1 {
                value_dim.insert(k, cands[0].clone());
            } else {
                let cols: Vec<String> = cands.iter().map(|c| ds.columns[c.0].name.clone()).collect();
                return refuse(
                    p.text.clone(),
                    format!(
                        "'{}' is a value of several columns ({}); add the column name, e.g. '{} {}'",
                        p.text,
                        cols.join(", "),
                        p.text,
                        ds.columns[cands[0].0].display()
                    ),
                );
            }
        }
    }

    // ranking or shares of members (Pareto) need one row per member
    let has_ranking = items.iter().any(|p| {
        matches!(
            p.it,
            It::Top(..)
                | It::Number(_)
                | It::Dir { ranking: true, .. }
                | It::Share(_)
                | It::Intent(crate::AnalysisKind::Pareto)
        )
    });
    let has_avg = items.iter().any(|p| matches!(p.it, It::Agg(Aggregation::Avg)));
    let key_col = ds
        .key
        .as_ref()
        .and_then(|k| ds.columns.iter().position(|c| &c.name == k));

    // Pieces read together with a neighbour.
    let mut skip = vec![false; n];
    // "customer count", "transaction count": a count of the word before
    let mut postfix_count = vec![false; n];
    // "average daily revenue", "daily average revenue", "average revenue per day"
    let mut avg_over: HashMap<usize, Grain> = HashMap::new();
    // "all products": every member together
    let mut all_members = vec![false; n];
    let mut per_row: Option<usize> = None;
    let mut quantity_asked = false;
    for k in 0..n {
        match &items[k].it {
            // "how many did we sell per region": how many units, not how many regions
            It::Count
                if matches!(it(k + 1), Some(It::Business))
                    && ds.quantity_measure.is_some()
                    && !matches!(it(k + 2), Some(It::Term(_))) =>
            {
                skip[k] = true;
                quantity_asked = true;
            }
            It::Count if k > 0 && matches!(items[k].text.as_str(), "count" | "counts") => {
                if matches!(
                    items[k - 1].it,
                    It::Term(Term::Dimension(_) | Term::RowNoun | Term::Event(_))
                ) {
                    postfix_count[k - 1] = true;
                    skip[k] = true;
                }
            }
            It::Agg(Aggregation::Avg) => {
                // "average daily", "daily average", "an average day"
                let adj = |j: usize| match it(j) {
                    Some(It::Grain(g)) if !items[j].text.contains(' ') => Some(*g),
                    Some(It::Unit { grain, plural: false }) => Some(*grain),
                    Some(It::Term(Term::Time(_))) if !items[j].plural => parse_unit(&items[j].text),
                    _ => None,
                };
                if let Some(g) = adj(k + 1) {
                    avg_over.insert(k, g);
                    skip[k + 1] = true;
                } else if let Some(g) = k.checked_sub(1).and_then(adj) {
                    avg_over.insert(k, g);
                    skip[k - 1] = true;
                } else if let Some(m) = (k + 1..n).find(|&j| is_measure_piece(&items[j].it))
                    && let Some(It::Grain(g)) = it(m + 1)
                    && (items[m + 1].text.starts_with("per ") || items[m + 1].text.starts_with("a "))
                {
                    avg_over.insert(k, *g);
                    skip[m + 1] = true;
                }
            }
            It::All => {
                // "all channels and regions": every dimension of the list
                let mut j = k + 1;
                while let Some(It::Term(Term::Dimension(_))) = it(j) {
                    all_members[j] = true;
                    if matches!(it(j + 1), Some(It::Conj)) {
                        j += 2;
                    } else {
                        break;
                    }
                }
            }
            // "revenue per transaction": the measure averaged over the rows
            It::Term(Term::RowNoun) if k > 0 && items[k - 1].text == "per" => {
                per_row = Some(k);
            }
            // "the most customers", "the fewest products": a count of the members
            It::Dir { ranking: true, .. }
                if matches!(items[k].text.as_str(), "most" | "fewest" | "least") =>
            {
                // ("the most enterprise customers": values in between)
                let mut j = k + 1;
                while matches!(it(j), Some(It::Term(Term::Value(_)))) {
                    j += 1;
                }
                if matches!(it(j), Some(It::Term(Term::Dimension(_)))) {
                    postfix_count[j] = true;
                }
            }
            _ => {}
        }
    }

    let mut pending_agg: Option<(Aggregation, String, Option<Grain>)> = None;
    let mut pending_count: Option<String> = None;
    let mut distinct = false;
    let mut negate = false;
    let mut sort_ctx = false;
    let mut dir: Option<bool> = None;
    let mut ranking_word: Option<String> = None;
    let mut order_key: Option<String> = None;
    let mut top: Option<(bool, Option<usize>, String)> = None;
    let mut number: Option<(usize, String)> = None;
    let mut number_limit: Option<usize> = None;
    // a singular member or period word picked by a superlative ("best region", "biggest month")
    let mut singular_pick: Option<String> = None;
    let mut unit_pick = false;
    let mut ranges: Vec<TimeRange> = Vec::new();
    let mut compare_words: Vec<String> = Vec::new();
    let mut over: Option<(Grain, String)> = None;
    let mut business: Option<String> = None;
    let mut how_much: Option<String> = None;
    let mut latest_word: Option<String> = None;
    let mut recent: Option<String> = None;
    let mut rows_named: Option<String> = None;
    let mut each_dims: Vec<String> = Vec::new();
    let mut range_ends: Option<[(chrono::NaiveDate, chrono::NaiveDate); 2]> = None;
    let mut end_of: Option<String> = None;

    let set_grain = |plan: &mut Plan, g: Grain, text: &str| -> Result<(), Refusal> {
        if let Some(old) = plan.grain
            && old != g
        {
            return refuse(
                text.to_string(),
                format!("two time grains given ({} and {})", old.as_str(), g.as_str()),
            );
        }
        plan.grain = Some(g);
        Ok(())
    };

    for (k, p) in items.iter().enumerate() {
        if skip[k] {
            continue;
        }
        let text = &p.text;
        if !matches!(p.it, It::Term(Term::Value(_)) | It::Conj | It::Negate) {
            negate = false;
        }
        if let Some((num, w)) = &number
            && !matches!(
                p.it,
                It::Term(Term::Dimension(_) | Term::Time(_) | Term::Value(_))
                    | It::Unit { .. }
                    | It::Dir { .. }
                    | It::Business
            )
        {
            return refuse(
                w.clone(),
                format!(
                    "'{w}' is not a count of members to rank ('which {num} products'), a date or a top/bottom N"
                ),
            );
        }
        match &p.it {
            // "revenue per unit": a ratio of two measures' totals
            It::Term(Term::Measure(ci))
                if k > 0
                    && items[k - 1].text == "per"
                    && plan.measures.last().is_some_and(|m| {
                        m.column.is_some() && m.agg == Aggregation::Sum && m.over.is_none() && !m.last
                    }) =>
            {
                let col = &ds.columns[*ci];
                let num = plan.measures.pop().expect("checked");
                let a = num.column.clone().expect("checked");
                let mut sel = MeasureSel::new(None, Aggregation::Sum);
                sel.expr = Some(format!(
                    "(1.0 * SUM({}) / NULLIF(SUM({}), 0))",
                    quote_ident(&a),
                    quote_ident(&col.name)
                ));
                sel.label = format!("{a}_per_{}", col.name);
                plan.notes.push(format!(
                    "'{} per {text}': total {a} divided by total {}",
                    a, col.name
                ));
                let label = push_measure(&mut plan, sel);
                if order_key.as_deref() == Some(num.label.as_str()) {
                    order_key = Some(label);
                }
            }
            It::Term(Term::Measure(ci)) => {
                let col = &ds.columns[*ci];
                // "customers aged 18-24": an inflected word that only shares a measure's stem, right
                // before a value, qualifies the value
                if matches!(it(k + 1), Some(It::Term(Term::Value(_)))) && !ctx.vocab.is_exact(text) {
                    continue;
                }
                // "unit volume", "sales revenue": a second name of a measure already asked for
                if pending_agg.is_none()
                    && let Some(existing) = plan
                        .measures
                        .iter()
                        .find(|m| m.column.as_deref() == Some(col.name.as_str()))
                {
                    if sort_ctx {
                        order_key = Some(existing.label.clone());
                        sort_ctx = false;
                    }
                    pending_count = None;
                    continue;
                }
                let (agg, over_g) = match pending_agg.take() {
                    Some((a, _, g)) => (a, g),
                    None => (col.default_aggregation(), None),
                };
                pending_count = None;
                let mut sel = MeasureSel::new(Some(&col.name), agg);
                if let Some(g) = over_g {
                    if col.default_aggregation() != Aggregation::Sum {
                        return refuse(
                            text.clone(),
                            format!(
                                "'average {}' averages per-{} totals, but {} is not a total (its aggregation is {})",
                                adjective(g),
                                g.as_str(),
                                col.name,
                                col.default_aggregation().as_str()
                            ),
                        );
                    }
                    sel = MeasureSel::new(Some(&col.name), Aggregation::Sum);
                    sel.over = Some(g);
                    sel.label = format!("average_{}_{}", adjective(g), col.name);
                    sel.last = col.time_aggregation() == TimeAggregation::Last && g != native;
                } else if agg == Aggregation::Sum {
                    match col.time_aggregation() {
                        TimeAggregation::Last => sel.last = true,
                        TimeAggregation::Average => {
                            sel.over = Some(native);
                            sel.label = format!("average_{}_{}", adjective(native), col.name);
                        }
                        TimeAggregation::Sum => {}
                    }
                }
                let label = push_measure(&mut plan, sel);
                if sort_ctx {
                    order_key = Some(label);
                    sort_ctx = false;
                }
                distinct = false;
            }
            It::Term(Term::Derived(di)) => {
                let d = &ds.derived_measures[*di];
                let (agg, over_g) = match pending_agg.take() {
                    Some((a, _, g)) => (a, g),
                    None => (Aggregation::Sum, None),
                };
                pending_count = None;
                let sql_agg = match agg {
                    Aggregation::Sum => "SUM",
                    Aggregation::Avg if over_g.is_some() => "SUM",
                    Aggregation::Avg => "AVG",
                    other => {
                        return refuse(
                            text.clone(),
                            format!(
                                "{} is derived ({}); it can be totalled or averaged, not {}",
                                d.name,
                                d.formula,
                                other.as_str()
                            ),
                        );
                    }
                };
                let Some((expr, ratio)) = derived_sql(ds, &d.name, sql_agg) else {
                    return refuse(
                        text.clone(),
                        format!("derived measure {} cannot be computed", d.name),
                    );
                };
                let mut sel = MeasureSel::new(
                    None,
                    if sql_agg == "SUM" {
                        Aggregation::Sum
                    } else {
                        Aggregation::Avg
                    },
                );
                sel.expr = Some(expr);
                sel.source = Some(d.name.clone());
                sel.label = match (over_g, ratio) {
                    (Some(g), _) => format!("average_{}_{}", adjective(g), d.name),
                    (None, true) => d.name.clone(),
                    (None, false) => format!("{}_{}", sel.agg.label_prefix(), d.name),
                };
                sel.over = over_g;
                if ratio && over_g.is_some() {
                    return refuse(
                        text.clone(),
                        format!(
                            "{} is a ratio ({}); an average of per-period ratios is not offered",
                            d.name, d.formula
                        ),
                    );
                }
                let label = push_measure(&mut plan, sel);
                if sort_ctx {
                    order_key = Some(label);
                    sort_ctx = false;
                }
            }
            It::Term(Term::Event(ei)) => {
                let e = &ds.events[*ei];
                let over_g = match pending_agg.take() {
                    Some((Aggregation::Avg, _, Some(g))) => Some(g),
                    Some((Aggregation::Sum | Aggregation::Count, _, None)) | None => None,
                    Some((a, w, _)) => {
                        return refuse(
                            format!("{w} {text}"),
                            format!(
                                "'{text}' counts events ({}); '{w}' ({}) does not apply",
                                e.name,
                                a.as_str()
                            ),
                        );
                    }
                };
                pending_count = None;
                let mut sel = MeasureSel::new(None, Aggregation::Count);
                sel.source = Some(e.name.clone());
                sel.label = match over_g {
                    Some(g) => format!("average_{}_{}", adjective(g), e.name),
                    None => e.name.clone(),
                };
                sel.over = over_g;
                let label = push_measure(&mut plan, sel);
                if sort_ctx {
                    order_key = Some(label);
                    sort_ctx = false;
                }
            }
            It::Term(Term::Dimension(ci)) => {
                if qualifier[k] {
                    continue;
                }
                let col = &ds.columns[*ci];
                if let Some((num, _)) = number.take() {
                    number_limit = Some(num);
                }
                let prev = k.checked_sub(1).map(|j| &items[j]);
                let after_by = matches!(prev.map(|p| &p.it), Some(It::By));
                let counting = postfix_count[k]
                    || pending_count.is_some()
                    || distinct
                    || matches!(
                        pending_agg,
                        Some((Aggregation::Count | Aggregation::CountDistinct, _, _))
                    );
                // "customers" in a dataset of customers names its rows: a grouping only when ranked
                // ("top 10 customers") or asked per member ("by customer"; but "average orders per
                // customer" is the average over the rows)
                if Some(*ci) == key_col && !counting {
                    // ("orders placed by customers": a plural after "by" names who, not a grouping)
                    let per_member =
                        after_by && !p.plural && !(has_avg && prev.is_some_and(|p| p.text == "per"));
                    // ranked themselves: "top 10 customers", "which 5 enterprise customers"; a
                    // Pareto of customers
                    let mut j = k;
                    while j > 0 && matches!(items[j - 1].it, It::Term(Term::Value(_))) {
                        j -= 1;
                    }
                    let ranked = j > 0
                        && matches!(
                            items[j - 1].it,
                            It::Top(..) | It::Number(_) | It::Dir { ranking: true, .. }
                        )
                        || items
                            .iter()
                            .any(|p| matches!(p.it, It::Share(_) | It::Intent(crate::AnalysisKind::Pareto)))
                        || (has_ranking
                            && plan.group_by.is_empty()
                            && !items[k + 1..]
                                .iter()
                                .any(|p| matches!(p.it, It::Term(Term::Dimension(_)))));
                    if !per_member && !ranked {
                        rows_named = Some(text.clone());
                        continue;
                    }
                }
                // "grocery products": a dimension word right after a value of another dimension names
                // what the value filters, not a grouping (unless ranked: "top 3 grocery products")
                if !counting
                    && !after_by
                    && !has_ranking
                    && matches!(prev.map(|p| &p.it), Some(It::Term(Term::Value(_))))
                {
                    plan.notes.push(format!(
                        "'{} {text}' read as a filter, not one row per {}",
                        prev.map(|p| p.text.as_str()).unwrap_or(""),
                        col.display()
                    ));
                    continue;
                }
                if counting {
                    pending_count = None;
                    pending_agg = None;
                    distinct = false;
                    let sel = MeasureSel::new(Some(&col.name), Aggregation::CountDistinct);
                    let label = push_measure(&mut plan, sel);
                    if sort_ctx {
                        order_key = Some(label);
                        sort_ctx = false;
                    }
                    continue;
                }
                if let Some((a, w, _)) = &pending_agg {
                    return refuse(
                        format!("{w} {text}"),
                        format!(
                            "'{w}' ({}) needs a measure, but '{text}' is the dimension {}",
                            a.as_str(),
                            col.name
                        ),
                    );
                }
                if all_members[k] {
                    plan.notes.push(format!(
                        "'all {text}': one total over every {}, not one row each",
                        col.display()
                    ));
                    continue;
                }
                if !p.plural && !matches!(k.checked_sub(1).map(|j| &items[j].it), Some(It::By)) {
                    singular_pick.get_or_insert_with(|| text.clone());
                }
                if !plan.group_by.contains(&col.name) {
                    plan.group_by.push(col.name.clone());
                }
                if matches!(prev.map(|p| p.text.as_str()), Some("each" | "per"))
                    && !plan.rank_within.contains(&col.name)
                {
                    each_dims.push(col.name.clone());
                }
                if sort_ctx {
                    order_key = Some(col.name.clone());
                    sort_ctx = false;
                }
            }
            It::Term(Term::Value(_)) => {
                let (ci, val) = value_dim.get(&k).cloned().expect("resolved above");
                let colname = ds.columns[ci].name.clone();
                if let Some(f) = plan
                    .filters
                    .iter_mut()
                    .find(|f| f.column == colname && f.negate == negate)
                {
                    if !f.values.contains(&val) {
                        f.values.push(val);
                    }
                } else {
                    plan.filters.push(Filter {
                        column: colname,
                        values: vec![val],
                        negate,
                    });
                }
            }
            It::Term(Term::Group(gi)) => {
                for c in &ds.column_groups[*gi].columns {
                    if !plan.group_by.contains(c) {
                        plan.group_by.push(c.clone());
                    }
                }
                push_measure(&mut plan, MeasureSel::new(None, Aggregation::Count));
            }
            It::Term(Term::RowNoun) if per_row == Some(k) && !plan.measures.is_empty() => {
                for m in plan.measures.iter_mut() {
                    if m.agg == Aggregation::Sum && m.expr.is_none() && m.over.is_none() && !m.last {
                        *m = MeasureSel::new(m.column.as_deref(), Aggregation::Avg);
                    }
                }
                plan.notes.push(format!(
                    "'{} {text}': the average over the {text}",
                    items[k - 1].text
                ));
            }
            It::Term(Term::RowNoun) => {
                pending_count = None;
                if matches!(
                    pending_agg,
                    Some((Aggregation::Count | Aggregation::Sum, _, None))
                ) {
                    pending_agg = None;
                }
                if let Some((Aggregation::Avg, w, Some(g))) = &pending_agg {
                    let mut sel = MeasureSel::new(None, Aggregation::Count);
                    sel.over = Some(*g);
                    sel.label = format!("average_{}_{}", adjective(*g), "row_count");
                    let _ = w;
                    pending_agg = None;
                    push_measure(&mut plan, sel);
                    continue;
                }
                let label = push_measure(&mut plan, MeasureSel::new(None, Aggregation::Count));
                if sort_ctx {
                    order_key = Some(label);
                    sort_ctx = false;
                }
            }
            It::Term(Term::DatasetWord) | It::By | It::Conj | It::Filler => {}
            It::Term(Term::Time(ci)) => {
                let after_by = k > 0 && matches!(items[k - 1].it, It::By);
                let unit = parse_unit(text);
                if let Some((num, _)) = number.take() {
                    number_limit = Some(num);
                }
                if after_by {
                    // "by date" / "by month" sets the grain
                    let g = parse_unit(&ds.columns[*ci].name).unwrap_or(Grain::Day);
                    set_grain(&mut plan, g, text)?;
                } else if let Some(g) = unit {
                    // a bare period word that is also the time column's name ("month")
                    set_grain(&mut plan, g, text)?;
                    unit_pick |= !p.plural;
                }
                // otherwise it names the column time ranges apply to
            }
            It::Agg(a) => {
                if let Some((_, w, _)) = &pending_agg {
                    return refuse(
                        format!("{w} {text}"),
                        format!("'{w}' is not followed by a measure"),
                    );
                }
                pending_agg = Some((*a, text.clone(), avg_over.get(&k).copied()));
            }
            It::Count => pending_count = Some(text.clone()),
            It::Distinct => distinct = true,
            It::Negate => negate = true,
            It::SortBy => sort_ctx = true,
            It::Dir { desc, ranking } => {
                dir = Some(*desc);
                if *ranking {
                    ranking_word = Some(text.clone());
                }
                if let Some((num, _)) = number.take() {
                    number_limit = Some(num);
                }
            }
            It::Top(d, nn) => {
                if top.is_some() {
                    return refuse(text.clone(), "the question asks for top/bottom twice");
                }
                top = Some((*d, *nn, text.clone()));
                ranking_word = Some(text.clone());
            }
            It::Grain(g) => set_grain(&mut plan, *g, text)?,
            It::Unit { grain, plural } => {
                // "tenure in months": the measure's unit, not a grain
                if let Some(It::Term(Term::Measure(mi))) = k.checked_sub(1).map(|j| &items[j].it)
                    && ds.columns[*mi].unit.as_deref().is_some_and(|u| {
                        u.eq_ignore_ascii_case(text) || format!("{u}s").eq_ignore_ascii_case(text)
                    })
                {
                    continue;
                }
                if let Some((num, _)) = number.take() {
                    number_limit = Some(num);
                }
                set_grain(&mut plan, *grain, text)?;
                unit_pick |= !plural;
            }
            It::Over(g) => {
                if over.is_some() {
                    return refuse(text.clone(), "two period-over-period comparisons given");
                }
                over = Some((*g, text.clone()));
            }
            It::Time(TimeSpec::Range {
                start,
                end,
                relative,
                note,
                ends,
            }) => {
                ranges.push(TimeRange {
                    start: *start,
                    end: *end,
                    phrase: text.clone(),
                    relative: *relative,
                });
                range_ends = *ends;
                if let Some(n) = note {
                    plan.notes.push(n.clone());
                }
            }
            It::Time(TimeSpec::Horizon { periods, grain }) => {
                if plan.horizon.is_some() {
                    return refuse(text.clone(), "two forecast horizons given");
                }
                plan.horizon = Some((*periods, *grain));
            }
            It::Share(v) => {
                if !(*v > 0.0 && *v < 100.0) {
                    return refuse(text.clone(), "a share must be between 0% and 100%");
                }
                plan.share = Some(*v);
            }
            It::AllMeasures => plan.all_measures = true,
            It::Intent(s) => {
                if !plan.intents.contains(s) {
                    plan.intents.push(*s);
                }
            }
            It::High(h) => {
                plan.high = Some(*h);
                if !plan.intents.contains(&crate::AnalysisKind::Outlier) {
                    plan.intents.push(crate::AnalysisKind::Outlier);
                }
            }
            It::Recent => recent = Some(text.clone()),
            It::Compare | It::Between => compare_words.push(text.clone()),
            It::All => {}
            It::Number(num) => number = Some((*num, text.clone())),
            It::Business => business = Some(text.clone()),
            It::HowMuch => how_much = Some(text.clone()),
            It::Latest => latest_word = Some(text.clone()),
            It::EndOf => end_of = Some(text.clone()),
        }
    }
    if let Some((_, w)) = number {
        return refuse(
            w.clone(),
            format!("'{w}' is not followed by what to rank ('which {w} products')"),
        );
    }

    // Business words stand for the dataset's declared sales (or quantity) measure.
    // ("best region" with no measure ranks by the sales measure)
    let lexicon = business.clone().or(how_much.clone()).or(ranking_word
        .clone()
        .filter(|_| pending_count.is_none() && pending_agg.is_none()));
    if plan.measures.is_empty()
        && let Some(word) = lexicon
    {
        let quantity = (pending_count.is_some() || quantity_asked) && how_much.is_none();
        let (field, name) = if quantity {
            ("quantity_measure", ds.quantity_measure.clone())
        } else {
            ("sales_measure", ds.sales_measure.clone())
        };
        let Some(name) = name else {
            return refuse(
                word.clone(),
                format!(
                    "'{word}' stands for the dataset's {field}, and dataset {} declares none",
                    ds.name
                ),
            );
        };
        let col = ds.column(&name).expect("validated at load");
        let (agg, over_g) = match pending_agg.take() {
            Some((a, _, g)) => (a, g),
            None => (Aggregation::Sum, None),
        };
        pending_count = None;
        let mut sel = MeasureSel::new(Some(&col.name), agg);
        if let Some(g) = over_g {
            sel = MeasureSel::new(Some(&col.name), Aggregation::Sum);
            sel.over = Some(g);
            sel.label = format!("average_{}_{}", adjective(g), col.name);
        } else if agg == Aggregation::Sum {
            // the measure's own time aggregation applies, as when it is named
            match col.time_aggregation() {
                TimeAggregation::Last => sel.last = true,
                TimeAggregation::Average => {
                    sel.over = Some(native);
                    sel.label = format!("average_{}_{}", adjective(native), col.name);
                }
                TimeAggregation::Sum => {}
            }
        }
        plan.notes.push(format!(
            "'{word}' read as {} {}, the dataset's {}",
            sel.agg.label_prefix(),
            col.name,
            field.replace('_', " ")
        ));
        let label = push_measure(&mut plan, sel);
        if sort_ctx {
            order_key = Some(label);
            sort_ctx = false;
        }
    }
    // "which age group spends the most per order": a word of money (earn, spend, make) next to
    // measures that are not money would be answered with the other measure; refuse instead ("cost
    // of what we sold" is fine: selling qualifies any measure)
    if let Some(word) = &business
        && !matches!(crate::nlq::tokens::stem(word).as_str(), "sell" | "sold")
        && !plan.measures.is_empty()
        && !plan.measures.iter().any(|m| {
            m.expr.is_some()
                || m.column.is_none()
                || matches!(m.agg, Aggregation::Count | Aggregation::CountDistinct)
                || m.column == ds.sales_measure
                || m.column == ds.quantity_measure
        })
    {
        let names: Vec<String> = plan.measures.iter().filter_map(|m| m.column.clone()).collect();
        return refuse(
            word.clone(),
            format!(
                "'{word}' speaks of {} but the question measures {}; ask for one of them",
                ds.sales_measure.as_deref().unwrap_or("money"),
                names.join(", ")
            ),
        );
    }
    if let Some((_, w, _)) = pending_agg {
        return refuse(w.clone(), format!("'{w}' is not followed by a measure"));
    }
    if pending_count.is_some() {
        push_measure(&mut plan, MeasureSel::new(None, Aggregation::Count));
    }
    // "customers by age group": the rows named, counted
    if plan.measures.is_empty()
        && let Some(w) = &rows_named
    {
        plan.notes.push(format!("'{w}' with no measure: counted"));
        push_measure(&mut plan, MeasureSel::new(None, Aggregation::Count));
    }
    // "average lifetime value of customers who signed up in 2025": the event words say which time
    // the range is about; they are not a second measure
    let event_measure =
        |m: &MeasureSel| m.source.is_some() && m.agg == Aggregation::Count && m.expr.is_none();
    if plan.measures.iter().any(event_measure)
        && plan
            .measures
            .iter()
            .any(|m| !event_measure(m) && !matches!(m.agg, Aggregation::Count | Aggregation::CountDistinct))
    {
        let names: Vec<String> = plan
            .measures
            .iter()
            .filter(|m| event_measure(m))
            .map(|m| m.label.clone())
            .collect();
        plan.measures.retain(|m| !event_measure(m));
        plan.notes.push(format!(
            "'{}' qualifies the rows (by their {} date), it is not counted",
            names.join(", "),
            ds.time_column().map(|c| c.name.as_str()).unwrap_or("time")
        ));
    }
    if distinct {
        return refuse(
            "distinct",
            "'distinct' / 'unique' is not followed by a dimension to count",
        );
    }
    // an event counts the rows itself: "how many customers signed up" is the signup count
    if plan
        .measures
        .iter()
        .any(|m| m.source.is_some() && m.agg == Aggregation::Count)
    {
        let key = ds.key.clone();
        plan.measures.retain(|m| {
            !(m.label == "row_count"
                || (m.agg == Aggregation::CountDistinct && m.column.is_some() && m.column == key))
        });
    }
    if sort_ctx && plan.measures.is_empty() {
        return refuse(
            "sorted by",
            "'sorted by' is not followed by a measure or dimension",
        );
    }

    // "how did revenue change between 2024 and 2025": a change between two whole periods of the same
    // length is a comparison of those periods, not their sum
    let moves = plan.intents.contains(&crate::AnalysisKind::Change)
        || items.iter().any(|p| {
            matches!(p.it, It::Intent(crate::AnalysisKind::Trend))
                && matches!(p.text.as_str(), "grow" | "grew" | "growing" | "growth")
        });
    if moves
        && ranges.len() == 1
        && let Some([(s1, e1), (s2, e2)]) = range_ends
        && s1 != s2
        && whole_months(s1, e1).is_some()
        && whole_months(s1, e1) == whole_months(s2, e2)
    {
        let phrase = ranges[0].phrase.clone();
        ranges = vec![
            TimeRange {
                start: s1,
                end: e1,
                phrase: s1.to_string(),
                relative: false,
            },
            TimeRange {
                start: s2,
                end: e2,
                phrase: s2.to_string(),
                relative: false,
            },
        ];
        plan.notes
            .push(format!("'{phrase}' with a change word: the two periods compared"));
        plan.range_compared = Some(TimeRange {
            start: s1,
            end: e2,
            phrase: phrase.clone(),
            relative: false,
        });
        compare_words.push(phrase);
    }
    // Time ranges, comparisons of periods, period over period.
    let comparing = !compare_words.is_empty();
    match ranges.len() {
        0 => {}
        1 => plan.time = ranges.pop(),
        _ if comparing => {
            // "this month vs last month" when the data ends on a month end: both name the latest
            // month; the comparison means the month before it
            for a in 0..ranges.len() {
                for b in a + 1..ranges.len() {
                    if (ranges[a].start, ranges[a].end) != (ranges[b].start, ranges[b].end) {
                        continue;
                    }
                    let older = |r: &TimeRange| {
                        ["last", "previous", "prior"]
                            .iter()
                            .any(|w| r.phrase.starts_with(w))
                    };
                    let j = if older(&ranges[a]) && !older(&ranges[b]) {
                        a
                    } else {
                        b
                    };
                    let r = &ranges[j];
                    let whole_months = r.start.day() == 1 && (r.end + chrono::Duration::days(1)).day() == 1;
                    let (start, end) = if whole_months {
                        let months = (r.end.year() - r.start.year()) * 12 + r.end.month() as i32
                            - r.start.month() as i32
                            + 1;
                        let back =
                            |d: chrono::NaiveDate| d.checked_sub_months(chrono::Months::new(months as u32));
                        let end =
                            back(r.end + chrono::Duration::days(1)).map(|d| d - chrono::Duration::days(1));
                        (back(r.start), end)
                    } else {
                        let len = r.end - r.start + chrono::Duration::days(1);
                        (Some(r.start - len), Some(r.end - len))
                    };
                    if let (Some(start), Some(end)) = (start, end) {
                        plan.notes.push(format!(
                            "'{}' and '{}' name the same period; '{}' read as the period before: {start}..{end}",
                            ranges[a].phrase, ranges[b].phrase, ranges[j].phrase
                        ));
                        ranges[j].start = start;
                        ranges[j].end = end;
                    }
                }
            }
            ranges.sort_by_key(|r| r.start);
            plan.notes.push(format!(
                "one row per period ({}); each with its change from the period before",
                ranges
                    .iter()
                    .map(|r| r.phrase.clone())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            plan.compare = Some(Compare::Periods(ranges.clone()));
        }
        _ => {
            return refuse(
                ranges[1].phrase.clone(),
                format!(
                    "two time ranges given ('{}' and '{}'); give one, or compare them with 'vs'",
                    ranges[0].phrase, ranges[1].phrase
                ),
            );
        }
    }
    if let Some((g, w)) = &over {
        if plan.compare.is_some() {
            return refuse(
                w.clone(),
                format!("'{w}' and a comparison of named periods given; give one"),
            );
        }
        match plan.time.clone() {
            Some(r) if add_periods(r.start, *g, 1).is_some_and(|next| next > r.end) => {
                let shift = |d| add_periods(d, *g, -1).unwrap_or(d);
                let before = TimeRange {
                    start: shift(r.start),
                    end: shift(r.end),
                    phrase: format!("{} a {} earlier", r.phrase, g.as_str()),
                    relative: r.relative,
                };
                plan.notes.push(format!(
                    "'{w}': {} compared with the same period a {} earlier",
                    r.phrase,
                    g.as_str()
                ));
                plan.compare = Some(Compare::Periods(vec![before, r]));
                plan.time = None;
            }
            _ => {
                set_grain(&mut plan, *g, w)?;
                plan.notes.push(format!(
                    "'{w}': one row per {}, each with its change from the {} before",
                    g.as_str(),
                    g.as_str()
                ));
                plan.compare = Some(Compare::OverPeriods(*g));
            }
        }
    }
    if comparing && plan.compare.is_none() {
        let w = compare_words[0].clone();
        if let Some(f) = plan
            .filters
            .iter()
            .find(|f| !f.negate && f.values.len() >= 2)
            .cloned()
        {
            if !plan.group_by.contains(&f.column) {
                plan.group_by.insert(0, f.column.clone());
            }
            plan.notes.push(format!(
                "'{w}': one row per {} ({})",
                f.column,
                f.values.join(", ")
            ));
            plan.compare = Some(Compare::Members {
                column: f.column.clone(),
                values: f.values.clone(),
            });
        } else if plan.group_by.is_empty() && plan.measures.len() < 2 && plan.intents.is_empty() {
            return refuse(
                w.clone(),
                format!(
                    "'{w}' needs two things to compare: two members ('online vs retail'), two periods ('2025 vs 2024') or a dimension ('by region')"
                ),
            );
        }
    }

    if ds.time_column().is_none()
        && let Some(g) = plan.grain
    {
        return refuse(
            g.as_str(),
            format!(
                "dataset {} has no time column, so it has no {} grain",
                ds.name,
                g.as_str()
            ),
        );
    }
    if let Some(inner) = plan.measures.iter().find_map(|m| m.over) {
        if plan.measures.iter().any(|m| m.over != Some(inner)) {
            return refuse(
                adjective(inner),
                format!(
                    "an average of {} totals and another aggregation in one question: ask them separately",
                    adjective(inner)
                ),
            );
        }
        if let Some(g) = plan.grain {
            let finer = |a: Grain, b: Grain| match (a, b) {
                (Grain::Day, x) => x != Grain::Day,
                // weeks straddle months, quarters and years
                (Grain::Week, _) => false,
                (Grain::Month, x) => matches!(x, Grain::Quarter | Grain::Year),
                (Grain::Quarter, x) => x == Grain::Year,
                (Grain::Year, _) => false,
            };
            if !finer(inner, g) {
                return refuse(
                    g.as_str(),
                    format!(
                        "an average of {} totals per {} is not offered (each {} must hold whole {}s)",
                        adjective(inner),
                        g.as_str(),
                        g.as_str(),
                        inner.as_str()
                    ),
                );
            }
        }
        plan.notes.push(format!(
            "average of the {} totals: each {}'s total first, then their mean (periods without rows are not counted)",
            adjective(inner),
            inner.as_str()
        ));
    }
    // a dataset of events (customers at their signup date): its time column is when the rows
    // happened, so say what a range filters
    if plan.time.is_some()
        && !ds.events.is_empty()
        && !plan.measures.iter().any(|m| m.source.is_some())
        && let Some(tc) = ds.time_column()
    {
        plan.notes.push(format!(
            "the time range applies to {} ({})",
            tc.name,
            if tc.description.is_empty() {
                "the dataset's time column"
            } else {
                &tc.description
            }
        ));
    }
    if plan.measures.iter().any(|m| m.last) {
        plan.notes.push(
            "levels (time_aggregation: last) are the latest period's value in the range, never summed over time"
                .into(),
        );
    }
    if let Some(w) = end_of
        && !plan.measures.iter().all(|m| m.last)
    {
        return refuse(
            w.clone(),
            format!("'{w}' a period applies to levels (stock); for these measures give the period itself"),
        );
    }
    if let Some(w) = latest_word
        && !plan.measures.iter().any(|m| m.last)
        && plan.time.is_none()
    {
        return refuse(
            w.clone(),
            format!(
                "'{w}' names no period for these measures: say 'this month', 'this year' or 'latest month'"
            ),
        );
    }
    if let Some(r) = recent {
        plan.notes
            .push(format!("'{r}' read as: most recent changes first"));
        plan.recent = true;
    }

    // Ordering and ranking.
    let period_pick = unit_pick && plan.grain.is_some();
    if period_pick {
        plan.rank_periods = true;
    }
    let by_default = |plan: &Plan| {
        order_key
            .clone()
            .or_else(|| plan.measures.first().map(|m| m.label.clone()))
    };
    let pick_one = period_pick || singular_pick.is_some();
    if let Some((desc, nn, text)) = top {
        let Some(by) = by_default(&plan) else {
            let reason = format!("'{text}' needs a measure to rank by");
            return refuse(text, reason);
        };
        let limit = match nn.or(number_limit) {
            Some(0) => return refuse(text.clone(), "top/bottom 0 asks for nothing"),
            Some(n) => n,
            None if pick_one => 1,
            None => {
                plan.notes
                    .push(format!("'{text}' without a number read as {text} 10"));
                10
            }
        };
        plan.order = Some(Order {
            by,
            desc: dir.unwrap_or(desc),
            source: "question",
        });
        plan.limit = Some(limit);
    } else if let Some(nl) = number_limit.filter(|_| ranking_word.is_some() || order_key.is_none()) {
        let Some(by) = by_default(&plan) else {
            return refuse(nl.to_string(), format!("'{nl}' needs a measure to rank by"));
        };
        if nl == 0 {
            return refuse("0", "top/bottom 0 asks for nothing");
        }
        plan.order = Some(Order {
            by,
            desc: dir.unwrap_or(true),
            source: "question",
        });
        plan.limit = Some(nl);
    } else if let (Some(w), true) = (&ranking_word, pick_one) {
        let Some(by) = by_default(&plan) else {
            return refuse(w.clone(), format!("'{w}' needs a measure to rank by"));
        };
        plan.notes.push(format!(
            "'{w} {}' read as the one member ranked first",
            singular_pick
                .clone()
                .unwrap_or_else(|| plan.grain.map(Grain::as_str).unwrap_or("").to_string())
        ));
        plan.order = Some(Order {
            by,
            desc: dir.unwrap_or(true),
            source: "question",
        });
        plan.limit = Some(1);
    } else if let Some(by) = order_key {
        let is_measure = plan.measures.iter().any(|m| m.label == by);
        plan.order = Some(Order {
            by,
            desc: dir.unwrap_or(is_measure),
            source: "question",
        });
    } else if let Some(d) = dir {
        match plan.measures.first() {
            Some(m) => {
                plan.order = Some(Order {
                    by: m.label.clone(),
                    desc: d,
                    source: "question",
                });
            }
            None => {
                let w = ranking_word.unwrap_or_else(|| "highest".into());
                return refuse(w.clone(), format!("'{w}' needs a measure to rank by"));
            }
        }
    } else if !plan.group_by.is_empty()
        && plan.grain.is_none()
        && let Some(m) = plan.measures.first()
    {
        plan.order = Some(Order {
            by: m.label.clone(),
            desc: true,
            source: "default",
        });
    }
    if plan.limit.is_some() && plan.grain.is_some() && plan.group_by.is_empty() {
        // ranking periods: "the 3 biggest months"
        plan.rank_periods = true;
    }
    if matches!(plan.compare, Some(Compare::OverPeriods(_))) {
        plan.order = None;
    }
    // "top 3 products in each region": the ranking restarts in each region
    if plan.limit.is_some() && !each_dims.is_empty() && plan.group_by.len() > each_dims.len() {
        plan.notes.push(format!(
            "top/bottom {} within each {}",
            plan.limit.unwrap_or_default(),
            each_dims.join(" × ")
        ));
        plan.rank_within = each_dims;
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use chrono::NaiveDate;

    use crate::catalog::{self, Aggregation};
    use crate::nlq::{Ctx, Refusal, Vocab, parse};
    use crate::plan::{Compare, Filter, Grain, MeasureSel, Plan};

    fn with_sales<R>(f: impl FnOnce(&Ctx) -> R) -> R {
        let cat = catalog::parse(crate::demo::CATALOG_YAML, "demo").unwrap();
        let ds = cat.datasets.iter().find(|d| d.id == 35403).unwrap();
        let values: Vec<Vec<String>> = ds
            .columns
            .iter()
            .map(|c| match c.name.as_str() {
                "region" => ["Central", "East", "North", "South", "West"]
                    .map(String::from)
                    .to_vec(),
                "channel" => ["Online", "Retail", "Wholesale"].map(String::from).to_vec(),
                "product" => ["Laptop", "Office Chair", "T-Shirt"].map(String::from).to_vec(),
                "category" => ["Electronics", "Furniture"].map(String::from).to_vec(),
                _ => Vec::new(),
            })
            .collect();
        let vocab = Vocab::build(ds, &values);
        let ctx = Ctx {
            ds,
            vocab: &vocab,
            latest: NaiveDate::from_ymd_opt(2025, 12, 31),
            earliest: NaiveDate::from_ymd_opt(2024, 1, 1),
            monthly: false,
        };
        f(&ctx)
    }

    fn plan(q: &str) -> Plan {
        with_sales(|ctx| parse(q, ctx).unwrap_or_else(|r| panic!("{q}: {r:?}")))
    }

    fn refusal(q: &str) -> Refusal {
        with_sales(|ctx| parse(q, ctx).expect_err(q))
    }

    #[test]
    fn measures_aggregations_groups_and_order() {
        let p = plan("Show me total sales by region for Q4 2024, sorted by highest sales");
        assert_eq!(
            p.measures,
            vec![MeasureSel::new(Some("revenue"), Aggregation::Sum)]
        );
        assert_eq!(p.group_by, ["region"]);
        let o = p.order.unwrap();
        assert_eq!(
            (o.by.as_str(), o.desc, o.source),
            ("total_revenue", true, "question")
        );
        assert_eq!(p.limit, None, "'by region' lists every region");
        let p = plan("average units and max cost per channel and category");
        assert_eq!(
            p.measures,
            vec![
                MeasureSel::new(Some("units"), Aggregation::Avg),
                MeasureSel::new(Some("cost"), Aggregation::Max)
            ]
        );
        assert_eq!(p.group_by, ["channel", "category"]);
    }

    #[test]
    fn filters_qualifiers_and_negation() {
        let p = plan("revenue for the Western region and web channel");
        assert!(p.group_by.is_empty());
        assert_eq!(p.filters.len(), 2);
        let p = plan("units by region excluding north and south");
        assert_eq!(
            p.filters,
            vec![Filter {
                column: "region".into(),
                values: vec!["North".into(), "South".into()],
                negate: true
            }]
        );
        let p = plan("revenue of office chairs and laptops");
        assert_eq!(p.filters[0].values, ["Office Chair", "Laptop"]);
        assert!(p.compare.is_none() && p.group_by.is_empty(), "'and' alone sums");
    }

    #[test]
    fn comparisons_averages_and_ranking() {
        let p = plan("laptops vs t-shirts revenue");
        assert_eq!(p.group_by, ["product"]);
        assert!(matches!(p.compare, Some(Compare::Members { .. })));
        let p = plan("revenue in 2025 vs 2024");
        assert!(matches!(&p.compare, Some(Compare::Periods(ps)) if ps.len() == 2 && ps[0].phrase == "2024"));
        let p = plan("average weekly units");
        assert_eq!(p.measures[0].over, Some(Grain::Week));
        let p = plan("average daily revenue by month");
        assert_eq!(
            (p.measures[0].over, p.grain),
            (Some(Grain::Day), Some(Grain::Month))
        );
        let p = plan("best region");
        assert_eq!(
            (p.limit, p.group_by.as_slice()),
            (Some(1), &["region".to_string()][..])
        );
        let p = plan("the 3 lowest products by units");
        assert_eq!((p.limit, p.order.unwrap().desc), (Some(3), false));
        let p = plan("profit margin by category");
        assert_eq!(p.measures[0].label, "margin");
        assert!(p.measures[0].expr.as_deref().unwrap().contains("NULLIF"));
    }

    #[test]
    fn refusals_say_which_part() {
        assert_eq!(refusal("revenue by planet").part, "'planet'");
        assert_eq!(
            refusal("show the fluffy unicorn revenue").part,
            "'fluffy unicorn'"
        );
        assert_eq!(refusal("revenue in 2024 and 2025").part, "2025");
        assert_eq!(refusal("average region").part, "average region");
        assert_eq!(refusal("daily revenue by month").part, "by month");
        assert!(
            refusal("top 0 regions by revenue")
                .reason
                .contains("top/bottom 0")
        );
        assert!(refusal("revenue for 150% of target").part.contains("target"));
        assert_eq!(refusal("revenue versus").part, "versus");
        assert_eq!(refusal("revenue for 7 laptops").part, "7");
        assert!(
            refusal("revenue by regoin")
                .reason
                .contains("did you mean 'region'")
        );
    }
}
