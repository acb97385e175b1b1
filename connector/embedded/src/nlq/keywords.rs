//! Fixed words and phrases of questions (not from the catalog): aggregations, counting, ranking, sort
//! order, grains, comparisons, business verbs, analysis words, and the filler words that carry no
//! meaning for a plan.

use crate::AnalysisKind;
use crate::catalog::Aggregation;
use crate::nlq::time::{TimeSpec, parse_number, parse_unit};
use crate::nlq::vocabulary::Term;
use crate::plan::Grain;

/// An understood piece of a question.
#[derive(Clone, Debug, PartialEq)]
pub enum It {
    Term(Term),
    /// "by" / "per" before a dimension.
    By,
    Agg(Aggregation),
    /// "how many", "number of", "count".
    Count,
    Distinct,
    Negate,
    SortBy,
    /// Sort direction (true = descending). `ranking` is true for a superlative that picks members
    /// ("the highest region"), false for a sort instruction ("highest first", "descending").
    Dir {
        desc: bool,
        ranking: bool,
    },
    Top(bool, Option<usize>),
    /// A time grain: "daily", "by month", "per week".
    Grain(Grain),
    /// A bare period word: "month" in "biggest month", "months" in "which months".
    Unit {
        grain: Grain,
        plural: bool,
    },
    /// Period over period: "year over year", "month over month", "yoy".
    Over(Grain),
    Time(TimeSpec),
    Share(f64),
    AllMeasures,
    Intent(AnalysisKind),
    High(bool),
    Recent,
    Conj,
    /// vs, versus, against, compare, compared to.
    Compare,
    /// "between" that does not start a date range ("correlation between units and revenue").
    Between,
    /// "all" / "across all": every member together, not one row each.
    All,
    /// A count that is not a time phrase or top/bottom N ("which 3 products").
    Number(usize),
    /// Verbs and nouns of selling and earning (sell, sold, earn, made, money, spend).
    Business,
    /// "how much": an amount of money.
    HowMuch,
    /// "current", "latest" on their own: the latest period.
    Latest,
    /// Phrases that carry no meaning for the plan ("look like").
    Filler,
    /// "at the end of" a period: the level at its last period.
    EndOf,
}

/// Words that carry no meaning for the plan.
pub const FILLER: &[&str] = &[
    "a",
    "an",
    "the",
    "of",
    "for",
    "in",
    "on",
    "at",
    "to",
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
    "value",
    "values",
    "amount",
    "breakdown",
    "broken",
    "down",
    "split",
    "grouped",
    "group",
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
    "so",
    "far",
    "up",
    "into",
    "out",
    "some",
    "based",
    "way",
    "overall",
    "level",
    "levels",
    "performance",
    "patterns",
    "pattern",
    "significant",
    "significantly",
    "go",
    "going",
    "went",
    "same",
    "period",
    "time",
    "this",
    "detect",
    "identify",
    "spot",
    "check",
    "happen",
    "happened",
    "occur",
    "occurred",
    "where",
    "when",
    "from",
    "whole",
    "entire",
    "place",
    "placed",
    "places",
    "placing",
    "point",
    "points",
    "like",
    "closely",
    "strongly",
    "sudden",
    "suddenly",
    "really",
    "actually",
    "doing",
    "done",
    "anything",
    "something",
    "combined",
    "altogether",
    "name",
    "pairs",
    "pair",
    "pieces",
    "hold",
    "holds",
    "held",
    "holding",
    "carry",
    "carries",
    "kept",
    "keep",
];

/// Stems of business verbs and nouns that name the dataset's sales measure.
const BUSINESS_STEMS: &[&str] = &[
    "sell", "sold", "earn", "spend", "spent", "money", "make", "made", "generat", "bring", "brought", "book",
];

fn word(t: &[String], i: usize) -> Option<&str> {
    t.get(i).map(String::as_str)
}

fn is_ranking_word(w: &str) -> Option<bool> {
    match w {
        "highest" | "largest" | "biggest" | "greatest" | "most" | "best" | "top" | "strongest" => Some(true),
        "lowest" | "smallest" | "least" | "fewest" | "worst" | "bottom" | "weakest" => Some(false),
        _ => None,
    }
}

/// Fixed keywords of one or more tokens at `i` (`t` raw lowercase tokens, `stems` their stems).
pub fn keyword(t: &[String], stems: &[String], i: usize) -> Option<(usize, It)> {
    let w = t[i].as_str();
    let n1 = word(t, i + 1);
    let n2 = word(t, i + 2);
    // multi-token first
    match (w, n1, n2) {
        ("how", Some("many"), _) => return Some((2, It::Count)),
        ("how", Some("much"), _) => return Some((2, It::HowMuch)),
        ("number" | "count" | "counts", Some("of"), _) => return Some((2, It::Count)),
        ("compared" | "comparing" | "compare", Some("to" | "with" | "against"), _) => {
            return Some((2, It::Compare));
        }
        ("as", Some("opposed"), Some("to")) => return Some((3, It::Compare)),
        ("change" | "changes", Some("point" | "points"), _) => {
            return Some((2, It::Intent(AnalysisKind::Change)));
        }
        ("look" | "looks" | "looked", Some("like"), _) => return Some((2, It::Filler)),
        ("right", Some("now"), _) => return Some((2, It::Latest)),
        ("at" | "by", Some("the"), Some("end")) if word(t, i + 3) == Some("of") => {
            return Some((4, It::EndOf));
        }
        ("end", Some("of"), _) => return Some((2, It::EndOf)),
        ("move" | "moves" | "go" | "goes", Some("together"), _) => {
            return Some((2, It::Intent(AnalysisKind::Correlation)));
        }
        ("make" | "makes" | "made", Some("up"), _) => return Some((2, It::Intent(AnalysisKind::Pareto))),
        ("account" | "accounts" | "accounted", Some("for"), _) => {
            return Some((2, It::Intent(AnalysisKind::Pareto)));
        }
        // ("units per order by region": there "order" is the row noun)
        ("sorted" | "sort" | "order" | "ordered" | "ranked" | "rank", Some("by"), _)
            if !(w == "order"
                && i > 0
                && matches!(t[i - 1].as_str(), "per" | "each" | "every" | "an" | "a")) =>
        {
            return Some((2, It::SortBy));
        }
        ("from", Some("highest" | "high" | "largest" | "most"), Some("to")) => {
            if matches!(word(t, i + 3), Some("lowest" | "low" | "smallest" | "least")) {
                return Some((
                    4,
                    It::Dir {
                        desc: true,
                        ranking: false,
                    },
                ));
            }
        }
        ("from", Some("lowest" | "low" | "smallest" | "least"), Some("to")) => {
            if matches!(word(t, i + 3), Some("highest" | "high" | "largest" | "most")) {
                return Some((
                    4,
                    It::Dir {
                        desc: false,
                        ranking: false,
                    },
                ));
            }
        }
        ("high" | "highest", Some("to"), Some("low" | "lowest")) => {
            return Some((
                3,
                It::Dir {
                    desc: true,
                    ranking: false,
                },
            ));
        }
        ("low" | "lowest", Some("to"), Some("high" | "highest")) => {
            return Some((
                3,
                It::Dir {
                    desc: false,
                    ranking: false,
                },
            ));
        }
        (_, Some("first"), _) if is_ranking_word(w).is_some() => {
            return Some((
                2,
                It::Dir {
                    desc: is_ranking_word(w).expect("checked"),
                    ranking: false,
                },
            ));
        }
        (
            "unusually" | "abnormally" | "unexpectedly" | "extremely" | "exceptionally",
            Some("high" | "large"),
            _,
        ) => return Some((2, It::High(true))),
        (
            "unusually" | "abnormally" | "unexpectedly" | "extremely" | "exceptionally",
            Some("low" | "small"),
            _,
        ) => return Some((2, It::High(false))),
        ("other", Some("than"), _) => return Some((2, It::Negate)),
        ("not", Some("in"), _) => return Some((2, It::Negate)),
        ("over", Some("time"), _) => return Some((2, It::Intent(AnalysisKind::Trend))),
        ("80/20", _, _) => return Some((1, It::Share(80.0))),
        ("day" | "week" | "month" | "quarter" | "year", Some("over" | "on"), Some(x)) if x == w => {
            return Some((3, It::Over(parse_unit(w)?)));
        }
        // "vs the same period last year", "same quarter a year ago"
        (
            "same",
            Some("period" | "time" | "day" | "week" | "month" | "quarter"),
            Some("last" | "previous" | "prior"),
        ) if word(t, i + 3).and_then(parse_unit).is_some() => {
            return Some((4, It::Over(parse_unit(word(t, i + 3)?)?)));
        }
        ("same", Some("period" | "time" | "day" | "week" | "month" | "quarter"), Some("a" | "one"))
            if word(t, i + 3).and_then(parse_unit).is_some() && word(t, i + 4) == Some("ago") =>
        {
            return Some((5, It::Over(parse_unit(word(t, i + 3)?)?)));
        }
        ("year-over-year" | "year-on-year", _, _) => return Some((1, It::Over(Grain::Year))),
        ("month-over-month" | "month-on-month", _, _) => return Some((1, It::Over(Grain::Month))),
        ("quarter-over-quarter" | "quarter-on-quarter", _, _) => return Some((1, It::Over(Grain::Quarter))),
        ("week-over-week" | "week-on-week", _, _) => return Some((1, It::Over(Grain::Week))),
        ("by" | "per" | "each" | "every" | "a", Some(u), _) => {
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
        (n, Some(r), _) if parse_number(n).is_some() && is_ranking_word(r).is_some() && r != "most" => {
            return Some((2, It::Top(is_ranking_word(r).expect("checked"), parse_number(n))));
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
    if BUSINESS_STEMS.contains(&stems[i].as_str()) {
        return Some((1, It::Business));
    }
    if let Some(n) = parse_number(w) {
        return Some((1, It::Number(n)));
    }
    let it = match w {
        "by" | "per" | "each" => It::By,
        "total" | "sum" | "totals" => It::Agg(Aggregation::Sum),
        "average" | "avg" | "mean" | "averages" | "typical" => It::Agg(Aggregation::Avg),
        "minimum" | "min" => It::Agg(Aggregation::Min),
        "maximum" | "max" | "peak" => It::Agg(Aggregation::Max),
        "count" | "counts" => It::Count,
        "distinct" | "unique" | "different" => It::Distinct,
        "excluding" | "except" | "without" | "exclude" | "not" => It::Negate,
        "top" | "best" => It::Top(true, None),
        "bottom" | "worst" => It::Top(false, None),
        "highest" | "largest" | "biggest" | "greatest" | "most" | "strongest" | "higher" | "bigger"
        | "larger" | "better" => It::Dir {
            desc: true,
            ranking: true,
        },
        "lowest" | "smallest" | "least" | "fewest" | "weakest" | "lower" | "smaller" | "worse" => It::Dir {
            desc: false,
            ranking: true,
        },
        "descending" | "desc" | "decreasing" | "rank" | "ranked" | "ranking" => It::Dir {
            desc: true,
            ranking: false,
        },
        "ascending" | "asc" | "increasing" => It::Dir {
            desc: false,
            ranking: false,
        },
        "daily" => It::Grain(Grain::Day),
        "weekly" => It::Grain(Grain::Week),
        "monthly" => It::Grain(Grain::Month),
        "quarterly" => It::Grain(Grain::Quarter),
        "yearly" | "annual" | "annually" => It::Grain(Grain::Year),
        "day" | "week" | "month" | "quarter" | "year" | "days" | "weeks" | "months" | "quarters"
        | "years" => It::Unit {
            grain: parse_unit(w)?,
            plural: w.ends_with('s'),
        },
        "yoy" => It::Over(Grain::Year),
        "qoq" => It::Over(Grain::Quarter),
        "mom" => It::Over(Grain::Month),
        "wow" => It::Over(Grain::Week),
        "vs" | "versus" | "against" | "compare" | "compared" | "comparing" | "comparison" => It::Compare,
        "between" => It::Between,
        "all" => It::All,
        "current" | "latest" | "now" | "currently" | "today" => It::Latest,
        "trend" | "trends" | "trending" | "trended" | "trajectory" | "growth" | "grow" | "growing"
        | "grew" | "evolve" | "evolved" | "evolution" => It::Intent(AnalysisKind::Trend),
        "predict" | "prediction" | "predictions" | "forecast" | "forecasts" | "forecasting" | "projected"
        | "projection" | "projections" | "expected" | "expect" | "project" => {
            It::Intent(AnalysisKind::Prediction)
        }
        "outlier" | "outliers" | "anomaly" | "anomalies" | "anomalous" | "unusual" | "unusually"
        | "abnormal" | "spikes" | "spike" => It::Intent(AnalysisKind::Outlier),
        "correlate" | "correlates" | "correlated" | "correlation" | "correlations" | "relationship"
        | "relationships" | "related" | "relate" | "associated" | "association" | "link" | "links"
        | "linked" | "track" | "tracks" | "connection" | "connected" | "depend" | "depends"
        | "dependence" => It::Intent(AnalysisKind::Correlation),
        "change" | "changes" | "changed" | "shift" | "shifts" | "shifted" | "break" | "breaks" | "jump"
        | "jumps" | "step" => It::Intent(AnalysisKind::Change),
        "pareto" | "contribute" | "contributes" | "contributing" | "contribution" | "contributions"
        | "concentration" | "account" | "accounts" => It::Intent(AnalysisKind::Pareto),
        "factors" | "factor" | "drivers" | "driver" | "drive" | "drives" | "influence" | "influences"
        | "affect" | "affects" | "measures" | "metrics" | "variables" => It::AllMeasures,
        "recently" | "recent" | "lately" => It::Recent,
        "and" | "or" | "&" | "plus" => It::Conj,
        _ => return None,
    };
    Some((1, it))
}

/// Whether a scanned piece is a time range (for comparisons of periods).
pub fn is_range(it: &It) -> bool {
    matches!(it, It::Time(TimeSpec::Range { .. }))
}
