//! Rule-based reading of questions against a dataset's catalog vocabulary.
//!
//! Every word of the question must be accounted for: a catalog term (measure, derived measure, event,
//! dimension, value, column group, dataset word), a known keyword (aggregation, time phrase, grain,
//! ranking, comparison, business verb, analysis word) or a filler word. Anything else is refused with
//! the words that were not understood (and the nearest catalog phrase when one is close).
//!
//! `tokens` splits and stems, `vocabulary` matches catalog phrases, `keywords` fixed words, `time`
//! time phrases, `resolve` turns the understood pieces into a [`Plan`].

pub mod keywords;
pub mod resolve;
pub mod time;
pub mod tokens;
pub mod vocabulary;

use chrono::{Datelike, NaiveDate};

use crate::catalog::Dataset;
use crate::plan::Plan;
pub use keywords::It;
use keywords::{FILLER, keyword};
use time::parse_time;
use tokens::Words;
pub use tokens::tokenize;
pub use vocabulary::{Term, Vocab};

/// Context of one dataset.
pub struct Ctx<'a> {
    pub ds: &'a Dataset,
    pub vocab: &'a Vocab,
    pub latest: Option<NaiveDate>,
    pub earliest: Option<NaiveDate>,
    /// Every date is the first of a month (monthly data).
    pub monthly: bool,
}

/// Why a question was refused. `part` is the piece not understood.
#[derive(Debug, PartialEq)]
pub struct Refusal {
    pub part: String,
    pub reason: String,
}

pub fn refuse<T>(part: impl Into<String>, reason: impl Into<String>) -> Result<T, Refusal> {
    Err(Refusal {
        part: part.into(),
        reason: reason.into(),
    })
}

/// One understood piece: what it means, its words, and whether its words were a plural noun.
#[derive(Clone, Debug)]
pub struct Piece {
    pub it: It,
    pub text: String,
    pub plural: bool,
}

/// Split a question into understood pieces, or refuse with the words not understood.
pub fn scan(question: &str, ctx: &Ctx) -> Result<Vec<Piece>, Refusal> {
    let w = Words::new(question, |t| {
        ctx.vocab.knows_first(&tokens::stem(t)) || keyword(&[t.to_string()], &[tokens::stem(t)], 0).is_some()
    });
    let (t, stems) = (&w.raw, &w.stems);
    if t.is_empty() {
        // Nothing in it to point at: the whole question is the problem (a part the reason does not quote
        // would be a refusal that names nothing it says; found by the fuzz target with a question of NULs).
        return refuse(
            "",
            "the question has no words (only punctuation, symbols or spaces)",
        );
    }
    let latest = ctx
        .latest
        .unwrap_or_else(|| NaiveDate::from_ymd_opt(2000, 1, 1).expect("valid"));
    let earliest = ctx.earliest.unwrap_or(latest);
    // monthly data: the latest row stands for its whole month
    let latest = if ctx.monthly {
        time::month_end(latest.year(), latest.month()).unwrap_or(latest)
    } else {
        latest
    };
    let mut items: Vec<Piece> = Vec::new();
    let mut unknown: Vec<Vec<String>> = Vec::new();
    let mut last_unknown = false;
    let mut i = 0;
    while i < t.len() {
        let time = parse_time(t, i, latest, earliest).map(|(n, spec)| (n, It::Time(spec)));
        if ctx.ds.time_column().is_none()
            && let Some((n, _)) = time
        {
            // a time phrase on a dataset without a time column is not understood, as a whole
            unknown.push(t[i..i + n].to_vec());
            last_unknown = false;
            i += n;
            continue;
        }
        let kw = keyword(t, stems, i);
        let term = ctx
            .vocab
            .longest(stems, i)
            .map(|(n, term)| (n, It::Term(term.clone())));
        // a phrase of several words wins over a shorter one; on a tie the catalog wins
        let found = time.or(match (kw, term) {
            (Some(k), Some(v)) if k.0 > v.0 => Some(k),
            // "monthly" stems like a time column named "month": the grain word is meant
            (Some(k @ (_, It::Grain(_) | It::Over(_))), Some((n, It::Term(Term::Time(_))))) if k.0 == n => {
                Some(k)
            }
            (_, Some(v)) => Some(v),
            (Some(k), None) => Some(k),
            (None, None) => None,
        });
        match found {
            Some((n, it)) => {
                let text = t[i..i + n].join(" ");
                let plural = tokens::is_plural(&t[i + n - 1]);
                if it != It::Filler {
                    items.push(Piece { it, text, plural });
                }
                i += n;
                last_unknown = false;
            }
            None if FILLER.contains(&t[i].as_str()) => {
                i += 1;
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
        let hints: Vec<String> = unknown
            .iter()
            .flatten()
            .filter_map(|u| {
                ctx.vocab
                    .suggest(u)
                    .map(|s| format!("'{u}': did you mean '{s}'?"))
            })
            .collect();
        let mut reason = format!(
            "did not understand {} (not a measure, dimension, value or time phrase of dataset {})",
            parts.join(", "),
            ctx.ds.name
        );
        if !hints.is_empty() {
            reason.push_str(&format!("; {}", hints.join("; ")));
        }
        return refuse(parts.join(", "), reason);
    }
    Ok(items)
}

/// Read a question into a plan.
pub fn parse(question: &str, ctx: &Ctx) -> Result<Plan, Refusal> {
    let items = scan(question, ctx)?;
    let plan = resolve::resolve(&items, ctx)?;
    refuse_total_of_ranked_members(question, &plan)?;
    Ok(plan)
}

/// Words asking for one figure over several members.
const ONE_TOTAL_WORDS: [&str; 4] = ["combined", "altogether", "together", "collectively"];

/// "combined revenue of the top 3 regions" asks for one number over the ranked members; the plan would list
/// each member instead, a different question, so it is refused rather than answered.
fn refuse_total_of_ranked_members(question: &str, plan: &Plan) -> Result<(), Refusal> {
    if plan.limit.is_none() || plan.group_by.is_empty() {
        return Ok(());
    }
    let lower = question.to_lowercase();
    let word = lower
        .split(|c: char| !c.is_alphanumeric())
        .find(|w| ONE_TOTAL_WORDS.contains(w));
    match word {
        Some(word) => refuse(
            word.to_string(),
            format!(
                "'{word}' asks for one total over the top {} {}, which is not answered as one figure; \
                 ask for the top {} (one row each) or for the total without a ranking",
                plan.limit.unwrap_or_default(),
                plan.group_by.join(", "),
                plan.limit.unwrap_or_default(),
            ),
        ),
        None => Ok(()),
    }
}
