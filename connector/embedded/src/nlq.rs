//! Rule-based reading of questions against a dataset's catalog vocabulary.
//!
//! Every word of the question must be accounted for: a catalog term (measure, dimension, value,
//! column group, dataset word), a known keyword (aggregation, time phrase, grain, top/bottom, sort,
//! analysis word) or a filler word. Anything else is refused with the words that were not understood.

use std::collections::HashMap;

use chrono::NaiveDate;

use crate::catalog::{Aggregation, Dataset, Role};
use crate::plan::{Filter, Grain, MeasureSel, Order, Plan, TimeRange};
use crate::timeexpr::{TimeSpec, parse_number, parse_time, parse_unit};

/// Split a question (or a catalog phrase) into lowercase tokens.
pub fn tokenize(q: &str) -> Vec<String> {
    let lower = q.to_lowercase().replace(['\'', '’'], "");
    lower
        .split(|c: char| !(c.is_alphanumeric() || matches!(c, '-' | '+' | '%' | '.' | '/')))
        .map(|t| t.trim_matches(|c: char| matches!(c, '.' | '-' | '/')))
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect()
}

fn plural(word: &str) -> Option<String> {
    if word.ends_with('s')
        || word.chars().any(|c| c.is_ascii_digit())
        || !word.chars().all(char::is_alphabetic)
    {
        return None;
    }
    if let Some(stem) = word.strip_suffix('y')
        && !stem.ends_with(['a', 'e', 'o', 'u'])
    {
        return Some(format!("{stem}ies"));
    }
    if word.ends_with("ch") || word.ends_with("sh") || word.ends_with('x') {
        return Some(format!("{word}es"));
    }
    Some(format!("{word}s"))
}

/// A catalog term a phrase can name.
#[derive(Clone, Debug, PartialEq)]
pub enum Term {
    Measure(usize),
    Dimension(usize),
    Time(usize),
    /// Candidate (dimension column index, canonical value) pairs.
    Value(Vec<(usize, String)>),
    Group(usize),
    RowNoun,
    DatasetWord,
}

impl Term {
    fn priority(&self) -> u8 {
        match self {
            Term::Measure(_) | Term::Dimension(_) | Term::Time(_) | Term::Group(_) => 3,
            Term::RowNoun => 2,
            Term::Value(_) => 1,
            Term::DatasetWord => 0,
        }
    }
}

/// Phrases of one dataset, indexed by their first token.
#[derive(Default)]
pub struct Vocab {
    by_first: HashMap<String, Vec<(Vec<String>, Term)>>,
}

impl Vocab {
    pub fn build(ds: &Dataset, values: &[Vec<String>]) -> Vocab {
        let mut v = Vocab::default();
        for (ci, c) in ds.columns.iter().enumerate() {
            let term = match c.role {
                Role::Measure => Term::Measure(ci),
                Role::Dimension => Term::Dimension(ci),
                Role::Time => Term::Time(ci),
            };
            v.add_with_plural(&c.name.replace('_', " "), &term);
            if let Some(d) = &c.display_name {
                v.add_with_plural(d, &term);
            }
            for a in &c.aliases {
                v.add_with_plural(a, &term);
            }
            if c.role == Role::Dimension {
                for val in &values[ci] {
                    let t = Term::Value(vec![(ci, val.clone())]);
                    v.add_with_plural(val, &t);
                    if let Some(syns) = c.synonyms.get(val) {
                        for s in syns {
                            v.add_with_plural(s, &t);
                        }
                    }
                }
            }
        }
        for (gi, g) in ds.column_groups.iter().enumerate() {
            v.add_with_plural(&g.name, &Term::Group(gi));
            for a in &g.aliases {
                v.add_with_plural(a, &Term::Group(gi));
            }
        }
        for r in &ds.row_nouns {
            v.add_with_plural(r, &Term::RowNoun);
        }
        v.add(&ds.name, Term::DatasetWord);
        for a in &ds.aliases {
            v.add(a, Term::DatasetWord);
        }
        v
    }

    fn add_with_plural(&mut self, phrase: &str, term: &Term) {
        let toks = tokenize(phrase);
        if let Some(last) = toks.last()
            && let Some(p) = plural(last)
        {
            let mut pt = toks.clone();
            *pt.last_mut().expect("non-empty") = p;
            self.add_tokens(pt, term.clone());
        }
        self.add_tokens(toks, term.clone());
    }

    fn add(&mut self, phrase: &str, term: Term) {
        self.add_tokens(tokenize(phrase), term);
    }

    fn add_tokens(&mut self, toks: Vec<String>, term: Term) {
        let Some(first) = toks.first().cloned() else {
            return;
        };
        let list = self.by_first.entry(first).or_default();
        if let Some(existing) = list.iter_mut().find(|(t, _)| *t == toks) {
            match (&mut existing.1, term) {
                (Term::Value(a), Term::Value(b)) => {
                    for x in b {
                        if !a.contains(&x) {
                            a.push(x);
                        }
                    }
                }
                (e, t) if t.priority() > e.priority() => *e = t,
                _ => {}
            }
            return;
        }
        list.push((toks, term));
        list.sort_by_key(|e| std::cmp::Reverse(e.0.len()));
    }

    /// Longest phrase starting at `i`.
    fn longest(&self, t: &[String], i: usize) -> Option<(usize, &Term)> {
        let list = self.by_first.get(&t[i])?;
        list.iter()
            .find(|(p, _)| t.len() - i >= p.len() && t[i..i + p.len()] == p[..])
            .map(|(p, term)| (p.len(), term))
    }
}

/// Words that carry no meaning for the plan.
const FILLER: &[&str] = &[
    "a",
    "an",
    "the",
    "of",
    "for",
    "in",
    "on",
    "at",
    "to",
    "and",
    "or",
    "with",
    "me",
    "us",
    "our",
    "my",
    "we",
    "i",
    "show",
    "give",
    "list",
    "display",
    "get",
    "find",
    "tell",
    "what",
    "whats",
    "which",
    "who",
    "how",
    "is",
    "are",
    "was",
    "were",
    "be",
    "been",
    "being",
    "has",
    "have",
    "had",
    "there",
    "any",
    "do",
    "does",
    "did",
    "please",
    "can",
    "could",
    "would",
    "will",
    "you",
    "all",
    "each",
    "every",
    "across",
    "over",
    "during",
    "within",
    "that",
    "those",
    "these",
    "them",
    "it",
    "its",
    "their",
    "as",
    "data",
    "numbers",
    "figures",
    "breakdown",
    "broken",
    "down",
    "split",
    "grouped",
    "group",
    "compare",
    "compared",
    "comparison",
    "versus",
    "vs",
    "view",
    "report",
    "analysis",
    "analyze",
    "analyse",
    "see",
    "look",
    "let",
    "know",
    "want",
    "need",
    "about",
    "much",
    "so",
    "far",
    "up",
    "by",
    "per",
    "where",
    "when",
    "into",
    "out",
    "some",
    "based",
    "look",
    "made",
    "make",
    "had",
    "way",
    "overall",
    "level",
    "levels",
    "performance",
    "patterns",
    "pattern",
    "significant",
    "significantly",
    "any",
    "been",
    "go",
    "going",
    "went",
    "did",
    "generated",
    "generate",
    "sold",
    "earned",
    "brought",
    "them",
    "same",
    "period",
    "time",
    "this",
];

/// An understood piece of the question.
#[derive(Clone, Debug, PartialEq)]
enum It {
    Term(Term),
    By,
    Agg(Aggregation),
    Count,
    Distinct,
    Negate,
    SortBy,
    Dir(bool),
    Top(bool, Option<usize>),
    Grain(Grain),
    Time(TimeSpec),
    Share(f64),
    AllMeasures,
    Intent(&'static str),
    High(bool),
    Recent,
    Conj,
}

/// Context of one dataset.
pub struct Ctx<'a> {
    pub ds: &'a Dataset,
    pub vocab: &'a Vocab,
    pub latest: Option<NaiveDate>,
    pub earliest: Option<NaiveDate>,
}

/// Why a question was refused. `part` is the piece not understood.
#[derive(Debug, PartialEq)]
pub struct Refusal {
    pub part: String,
    pub reason: String,
}

fn refuse<T>(part: impl Into<String>, reason: impl Into<String>) -> Result<T, Refusal> {
    Err(Refusal {
        part: part.into(),
        reason: reason.into(),
    })
}

/// Fixed keywords of one or more tokens at `i`.
fn keyword(t: &[String], i: usize) -> Option<(usize, It)> {
    let w = t[i].as_str();
    let n1 = t.get(i + 1).map(String::as_str);
    let n2 = t.get(i + 2).map(String::as_str);
    // multi-token first
    match (w, n1, n2) {
        ("how", Some("many"), _) => return Some((2, It::Count)),
        ("number" | "count" | "counts", Some("of"), _) => return Some((2, It::Count)),
        ("sorted" | "sort" | "order" | "ordered" | "ranked" | "rank", Some("by"), _) => {
            return Some((2, It::SortBy));
        }
        ("from", Some("highest" | "high" | "largest" | "most"), Some("to")) => {
            if matches!(
                t.get(i + 3).map(String::as_str),
                Some("lowest" | "low" | "smallest" | "least")
            ) {
                return Some((4, It::Dir(true)));
            }
        }
        ("from", Some("lowest" | "low" | "smallest" | "least"), Some("to")) => {
            if matches!(
                t.get(i + 3).map(String::as_str),
                Some("highest" | "high" | "largest" | "most")
            ) {
                return Some((4, It::Dir(false)));
            }
        }
        ("high" | "highest", Some("to"), Some("low" | "lowest")) => {
            return Some((3, It::Dir(true)));
        }
        ("low" | "lowest", Some("to"), Some("high" | "highest")) => {
            return Some((3, It::Dir(false)));
        }
        (
            "unusually" | "abnormally" | "unexpectedly" | "extremely" | "exceptionally",
            Some("high" | "large"),
            _,
        ) => {
            return Some((2, It::High(true)));
        }
        (
            "unusually" | "abnormally" | "unexpectedly" | "extremely" | "exceptionally",
            Some("low" | "small"),
            _,
        ) => {
            return Some((2, It::High(false)));
        }
        ("other", Some("than"), _) => return Some((2, It::Negate)),
        ("not", Some("in"), _) => return Some((2, It::Negate)),
        ("over", Some("time"), _) => return Some((2, It::Intent("trend"))),
        ("80/20", _, _) => return Some((1, It::Share(80.0))),
        ("day" | "week" | "month" | "quarter" | "year", Some("over" | "by" | "on"), Some(x)) if x == w => {
            return Some((3, It::Grain(parse_unit(w)?)));
        }
        ("by" | "per" | "each" | "every", Some(u), _) => {
            if let Some(g) = parse_unit(u)
                && !u.ends_with('s')
            {
                return Some((2, It::Grain(g)));
            }
        }
        ("top" | "best" | "highest" | "largest" | "biggest", Some(n), _) if parse_number(n).is_some() => {
            return Some((2, It::Top(true, parse_number(n))));
        }
        ("bottom" | "worst" | "lowest" | "smallest", Some(n), _) if parse_number(n).is_some() => {
            return Some((2, It::Top(false, parse_number(n))));
        }
        (n, Some("best" | "top" | "highest" | "largest"), _) if parse_number(n).is_some() => {
            return Some((2, It::Top(true, parse_number(n))));
        }
        (n, Some("worst" | "bottom" | "lowest" | "smallest"), _) if parse_number(n).is_some() => {
            return Some((2, It::Top(false, parse_number(n))));
        }
        (n, Some("percent" | "pct"), _) => {
            if let Ok(v) = n.parse::<f64>() {
                return Some((2, It::Share(v)));
            }
        }
        _ => {}
    }
    if let Some(p) = w.strip_suffix('%')
        && let Ok(v) = p.parse::<f64>()
    {
        return Some((1, It::Share(v)));
    }
    let it = match w {
        "by" | "per" => It::By,
        "total" | "sum" | "totals" => It::Agg(Aggregation::Sum),
        "average" | "avg" | "mean" | "averages" => It::Agg(Aggregation::Avg),
        "minimum" | "min" => It::Agg(Aggregation::Min),
        "maximum" | "max" | "peak" => It::Agg(Aggregation::Max),
        "count" => It::Count,
        "distinct" | "unique" | "different" => It::Distinct,
        "excluding" | "except" | "without" | "exclude" | "not" => It::Negate,
        "top" | "best" => It::Top(true, None),
        "bottom" | "worst" => It::Top(false, None),
        "highest" | "largest" | "biggest" | "most" | "descending" | "desc" | "decreasing" => It::Dir(true),
        "lowest" | "smallest" | "least" | "fewest" | "ascending" | "asc" | "increasing" => It::Dir(false),
        "first"
            if i > 0
                && matches!(
                    t[i - 1].as_str(),
                    "highest" | "largest" | "lowest" | "smallest" | "biggest"
                ) =>
        {
            It::Conj
        }
        "daily" => It::Grain(Grain::Day),
        "weekly" => It::Grain(Grain::Week),
        "monthly" => It::Grain(Grain::Month),
        "quarterly" => It::Grain(Grain::Quarter),
        "yearly" | "annual" | "annually" => It::Grain(Grain::Year),
        "trend" | "trends" | "trending" | "growth" | "grow" | "growing" | "grew" | "evolve" | "evolved"
        | "evolution" => It::Intent("trend"),
        "predict" | "prediction" | "predictions" | "forecast" | "forecasts" | "forecasting" | "projected"
        | "projection" | "projections" | "expected" | "expect" => It::Intent("prediction"),
        "outlier" | "outliers" | "anomaly" | "anomalies" | "anomalous" | "unusual" | "unusually"
        | "abnormal" | "spikes" | "spike" => It::Intent("outlier"),
        "correlate" | "correlates" | "correlated" | "correlation" | "correlations" | "relationship"
        | "relationships" | "related" | "relate" | "associated" | "association" => It::Intent("correlation"),
        "change" | "changes" | "changed" | "shift" | "shifts" | "shifted" | "break" | "breaks" | "jump"
        | "jumps" => It::Intent("change"),
        "pareto" | "contribute" | "contributes" | "contributing" | "contribution" | "contributions"
        | "concentration" | "account" | "accounts" => It::Intent("pareto"),
        "factors" | "factor" | "drivers" | "driver" | "drive" | "drives" | "influence" | "influences"
        | "affect" | "affects" | "measures" | "metrics" | "variables" => It::AllMeasures,
        "recently" | "recent" | "lately" => It::Recent,
        "and" | "or" | "&" | "plus" => It::Conj,
        _ => return None,
    };
    Some((1, it))
}

/// Read a question into a plan.
pub fn parse(question: &str, ctx: &Ctx) -> Result<Plan, Refusal> {
    let ds = ctx.ds;
    let t = tokenize(question);
    if t.is_empty() {
        return refuse(question.trim(), "the question has no words");
    }
    let latest = ctx
        .latest
        .unwrap_or_else(|| NaiveDate::from_ymd_opt(2000, 1, 1).expect("valid"));
    let earliest = ctx.earliest.unwrap_or(latest);
    let mut items: Vec<(It, String)> = Vec::new();
    let mut unknown: Vec<Vec<String>> = Vec::new();
    let mut last_unknown = false;
    let mut i = 0;
    while i < t.len() {
        let found = if ctx.latest.is_some()
            && let Some((n, spec)) = parse_time(&t, i, latest, earliest)
        {
            Some((n, It::Time(spec)))
        } else if let Some((n, It::Grain(g))) = keyword(&t, i).filter(|(n, _)| *n > 1) {
            Some((n, It::Grain(g)))
        } else if let Some((n, term)) = ctx.vocab.longest(&t, i) {
            Some((n, It::Term(term.clone())))
        } else if let Some(k) = keyword(&t, i) {
            Some(k)
        } else if FILLER.contains(&t[i].as_str()) {
            i += 1;
            last_unknown = false;
            continue;
        } else {
            None
        };
        match found {
            Some((n, it)) => {
                items.push((it, t[i..i + n].join(" ")));
                i += n;
                last_unknown = false;
            }
            None => {
                if last_unknown {
                    unknown.last_mut().expect("set").push(t[i].clone());
                } else {
                    unknown.push(vec![t[i].clone()]);
                }
                last_unknown = true;
                i += 1;
            }
        }
    }
    if !unknown.is_empty() {
        let parts: Vec<String> = unknown.iter().map(|u| format!("'{}'", u.join(" "))).collect();
        return refuse(
            parts.join(", "),
            format!(
                "did not understand {} (not a measure, dimension, value or time phrase of dataset {})",
                parts.join(", "),
                ds.name
            ),
        );
    }
    resolve(&items, ctx)
}

fn resolve(items: &[(It, String)], ctx: &Ctx) -> Result<Plan, Refusal> {
    let ds = ctx.ds;
    let mut plan = Plan::default();
    // Values next to their own dimension name ("West region", "region West") are filters, and the
    // dimension word only qualifies them.
    let mut qualifier = vec![false; items.len()];
    let mut value_dim: HashMap<usize, (usize, String)> = HashMap::new();
    for (k, (it, text)) in items.iter().enumerate() {
        if let It::Term(Term::Value(cands)) = it {
            let next_dim = match items.get(k + 1) {
                Some((It::Term(Term::Dimension(d)), _)) => Some(*d),
                _ => None,
            };
            let prev_dim = match (
                k.checked_sub(1).map(|p| &items[p].0),
                k.checked_sub(2).map(|p| &items[p].0),
            ) {
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
                    text.clone(),
                    format!(
                        "'{text}' is a value of several columns ({}); add the column name, e.g. '{text} {}'",
                        cols.join(", "),
                        ds.columns[cands[0].0].display()
                    ),
                );
            }
        }
    }

    let mut pending_agg: Option<(Aggregation, String)> = None;
    let mut pending_count: Option<String> = None;
    let mut distinct = false;
    let mut negate = false;
    let mut sort_ctx = false;
    let mut dir: Option<bool> = None;
    let mut order_key: Option<String> = None;
    let mut top: Option<(bool, Option<usize>, String)> = None;
    let mut recent: Option<String> = None;

    for (k, (it, text)) in items.iter().enumerate() {
        if !matches!(it, It::Term(Term::Value(_)) | It::Conj | It::Negate) {
            negate = false;
        }
        match it {
            It::Term(Term::Measure(ci)) => {
                let col = &ds.columns[*ci];
                let agg = match (pending_agg.take(), pending_count.take()) {
                    (Some((a, _)), _) => a,
                    (None, _) => col.default_aggregation(),
                };
                let sel = MeasureSel::new(Some(&col.name), agg);
                let label = if let Some(existing) = plan.measures.iter().find(|m| {
                    m.column.as_deref() == Some(col.name.as_str())
                        && (m.agg == agg || agg == col.default_aggregation())
                }) {
                    existing.label.clone()
                } else {
                    let l = sel.label.clone();
                    plan.measures.push(sel);
                    l
                };
                if sort_ctx {
                    order_key = Some(label);
                    sort_ctx = false;
                }
                distinct = false;
            }
            It::Term(Term::Dimension(ci)) => {
                if qualifier[k] {
                    continue;
                }
                let col = &ds.columns[*ci];
                // "enterprise customers": the key column after a value names the rows, not a grouping
                if ds.key.as_deref() == Some(col.name.as_str())
                    && k > 0
                    && matches!(items[k - 1].0, It::Term(Term::Value(_)))
                    && pending_count.is_none()
                    && !distinct
                {
                    continue;
                }
                if pending_count.is_some()
                    || distinct
                    || matches!(
                        pending_agg,
                        Some((Aggregation::Count | Aggregation::CountDistinct, _))
                    )
                {
                    pending_count = None;
                    pending_agg = None;
                    distinct = false;
                    let sel = MeasureSel::new(Some(&col.name), Aggregation::CountDistinct);
                    if !plan.measures.contains(&sel) {
                        plan.measures.push(sel.clone());
                    }
                    if sort_ctx {
                        order_key = Some(sel.label);
                        sort_ctx = false;
                    }
                    continue;
                }
                if let Some((a, w)) = &pending_agg {
                    return refuse(
                        format!("{w} {text}"),
                        format!(
                            "'{w}' ({}) needs a measure, but '{text}' is the dimension {}",
                            a.as_str(),
                            col.name
                        ),
                    );
                }
                if !plan.group_by.contains(&col.name) {
                    plan.group_by.push(col.name.clone());
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
                let count = MeasureSel::new(None, Aggregation::Count);
                if !plan.measures.contains(&count) {
                    plan.measures.push(count);
                }
            }
            It::Term(Term::RowNoun) => {
                pending_count = None;
                let count = MeasureSel::new(None, Aggregation::Count);
                if !plan.measures.contains(&count) {
                    plan.measures.push(count);
                }
                if sort_ctx {
                    order_key = Some("row_count".into());
                    sort_ctx = false;
                }
            }
            It::Term(Term::DatasetWord) | It::By | It::Conj => {}
            It::Term(Term::Time(ci)) => {
                // "by date" / "by month" sets the grain; a bare mention names the column ranges apply to
                if k > 0 && matches!(items[k - 1].0, It::By) {
                    let g = parse_unit(&ds.columns[*ci].name).unwrap_or(Grain::Day);
                    if let Some(old) = plan.grain
                        && old != g
                    {
                        return refuse(
                            text.clone(),
                            format!("two time grains given ({} and {})", old.as_str(), g.as_str()),
                        );
                    }
                    plan.grain = Some(g);
                }
            }
            It::Agg(a) => {
                if let Some((_, w)) = &pending_agg {
                    return refuse(
                        format!("{w} {text}"),
                        format!("'{w}' is not followed by a measure"),
                    );
                }
                pending_agg = Some((*a, text.clone()));
            }
            It::Count => pending_count = Some(text.clone()),
            It::Distinct => distinct = true,
            It::Negate => negate = true,
            It::SortBy => sort_ctx = true,
            It::Dir(d) => dir = Some(*d),
            It::Top(d, n) => {
                if top.is_some() {
                    return refuse(text.clone(), "the question asks for top/bottom twice");
                }
                top = Some((*d, *n, text.clone()));
            }
            It::Grain(g) => {
                if let Some(old) = plan.grain
                    && old != *g
                {
                    return refuse(
                        text.clone(),
                        format!("two time grains given ({} and {})", old.as_str(), g.as_str()),
                    );
                }
                plan.grain = Some(*g);
            }
            It::Time(TimeSpec::Range {
                start,
                end,
                relative,
                note,
            }) => {
                if let Some(old) = &plan.time {
                    return refuse(
                        text.clone(),
                        format!("two time ranges given ('{}' and '{text}'); give one", old.phrase),
                    );
                }
                plan.time = Some(TimeRange {
                    start: *start,
                    end: *end,
                    phrase: text.clone(),
                    relative: *relative,
                });
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
                    plan.intents.push(s);
                }
            }
            It::High(h) => {
                plan.high = Some(*h);
                if !plan.intents.contains(&"outlier") {
                    plan.intents.push("outlier");
                }
            }
            It::Recent => recent = Some(text.clone()),
        }
    }
    if let Some((_, w)) = pending_agg {
        return refuse(w.clone(), format!("'{w}' is not followed by a measure"));
    }
    if pending_count.is_some() {
        let count = MeasureSel::new(None, Aggregation::Count);
        if !plan.measures.contains(&count) {
            plan.measures.push(count);
        }
    }
    if distinct {
        return refuse(
            "distinct",
            "'distinct' / 'unique' is not followed by a dimension to count",
        );
    }
    if sort_ctx {
        // "sorted by highest" with no key: the first measure
        if plan.measures.is_empty() {
            return refuse(
                "sorted by",
                "'sorted by' is not followed by a measure or dimension",
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
    if let Some(r) = recent {
        plan.notes
            .push(format!("'{r}' read as: most recent changes first"));
        plan.intents.push("recent");
    }
    // ordering
    if let Some((desc, n, text)) = top {
        let by = order_key
            .clone()
            .or_else(|| plan.measures.first().map(|m| m.label.clone()));
        let Some(by) = by else {
            let reason = format!("'{text}' needs a measure to rank by");
            return refuse(text, reason);
        };
        let limit = match n {
            Some(0) => return refuse(text.clone(), "top/bottom 0 asks for nothing"),
            Some(n) => n,
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
    } else if let Some(by) = order_key {
        let is_measure = plan.measures.iter().any(|m| m.label == by);
        plan.order = Some(Order {
            by,
            desc: dir.unwrap_or(is_measure),
            source: "question",
        });
    } else if let Some(d) = dir {
        if let Some(m) = plan.measures.first() {
            plan.order = Some(Order {
                by: m.label.clone(),
                desc: d,
                source: "question",
            });
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
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog;

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
    fn tokenizer_keeps_dates_ranges_and_hyphenated_values() {
        assert_eq!(
            tokenize("Sales of T-Shirts, 18-24 & 65+ between 2025-01-01 and Q4's end?"),
            [
                "sales",
                "of",
                "t-shirts",
                "18-24",
                "65+",
                "between",
                "2025-01-01",
                "and",
                "q4s",
                "end"
            ]
        );
        assert_eq!(tokenize("80% of 'revenue'."), ["80%", "of", "revenue"]);
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
        let t = p.time.unwrap();
        assert_eq!(
            (t.start.to_string(), t.end.to_string(), t.relative),
            ("2024-10-01".into(), "2024-12-31".into(), false)
        );

        let p = plan("average units and max cost per channel and category");
        assert_eq!(
            p.measures,
            vec![
                MeasureSel::new(Some("units"), Aggregation::Avg),
                MeasureSel::new(Some("cost"), Aggregation::Max)
            ]
        );
        assert_eq!(p.group_by, ["channel", "category"]);
        assert_eq!(p.order.unwrap().source, "default");
    }

    #[test]
    fn top_bottom_and_counts() {
        let p = plan("Top 5 sales regions last month");
        assert_eq!((p.limit, p.order.as_ref().unwrap().desc), (Some(5), true));
        assert!(p.time.unwrap().relative);
        let p = plan("worst three products by units");
        assert_eq!((p.limit, p.order.unwrap().desc), (Some(3), false));
        let p = plan("how many transactions by channel");
        assert_eq!(p.measures, vec![MeasureSel::new(None, Aggregation::Count)]);
        let p = plan("number of distinct products per region");
        assert_eq!(
            p.measures,
            vec![MeasureSel::new(Some("product"), Aggregation::CountDistinct)]
        );
        assert_eq!(p.group_by, ["region"]);
        let p = plan("top regions by revenue");
        assert_eq!(p.limit, Some(10));
        assert!(p.notes[0].contains("top 10"));
    }

    #[test]
    fn filters_synonyms_negation_and_qualifiers() {
        let p = plan("revenue for the Western region and web channel");
        assert_eq!(
            p.group_by,
            Vec::<String>::new(),
            "the dimension words only qualify the values"
        );
        assert_eq!(
            p.filters,
            vec![
                Filter {
                    column: "region".into(),
                    values: vec!["West".into()],
                    negate: false
                },
                Filter {
                    column: "channel".into(),
                    values: vec!["Online".into()],
                    negate: false
                },
            ]
        );
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
    }

    #[test]
    fn grains_and_time_phrases() {
        assert_eq!(plan("monthly revenue").grain, Some(Grain::Month));
        assert_eq!(plan("revenue by week").grain, Some(Grain::Week));
        assert_eq!(plan("revenue by date").grain, Some(Grain::Day));
        assert_eq!(plan("revenue month over month").grain, Some(Grain::Month));
        let t = plan("revenue past 3 months").time.unwrap();
        assert_eq!(
            (t.start.to_string(), t.end.to_string()),
            ("2025-10-01".into(), "2025-12-31".into())
        );
        assert_eq!(
            plan("revenue for the next 2 quarters").horizon,
            Some((2, Grain::Quarter))
        );
        assert_eq!(
            plan("Which products contribute to 80% of our sales?").share,
            Some(80.0)
        );
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
    }
}
