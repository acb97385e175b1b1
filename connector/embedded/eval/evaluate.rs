//! Judges the engine's answers against `eval/expected.json` (truths computed by DuckDB in `eval/truth.py`,
//! never by the engine). Shared by `examples/eval.rs` (the evaluation command) and `tests/eval.rs` (the CI
//! gate) through `#[path]`. The comparison rules are written down in `eval/README.md`.
#![allow(dead_code)] // each includer uses a different part

use std::collections::HashSet;
use std::fmt::Write as _;
use std::path::PathBuf;

use chrono::{Datelike, Duration, NaiveDate, Weekday};
use lumenore_embedded::{AnalysisKind, Engine, EngineError};
use serde::Deserialize;
use serde_json::{Map, Value as Json};

/// The committed truths.
#[derive(Debug, Deserialize)]
pub struct Expected {
    pub questions: Vec<Question>,
    #[serde(default)]
    pub metamorphic: Vec<Metamorphic>,
}

/// One question and its true answer.
#[derive(Debug, Deserialize)]
pub struct Question {
    pub id: String,
    pub schema_id: i64,
    pub dataset: String,
    pub tool: String,
    pub question: String,
    pub ordered: bool,
    pub ratio: bool,
    pub tol_rel: f64,
    pub tol_abs: f64,
    pub check: Option<String>,
    #[serde(default)]
    pub measures: Vec<String>,
    #[serde(default)]
    pub derived: Map<String, Json>,
    #[serde(default)]
    pub tags: Vec<String>,
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Json>>,
}

/// A relation that must hold between several answers of the engine.
#[derive(Debug, Deserialize)]
pub struct Metamorphic {
    pub id: String,
    pub schema_id: i64,
    pub dataset: String,
    pub tool: String,
    pub rule: String,
    pub a: String,
    pub b: Option<String>,
    #[serde(default)]
    pub parts: Vec<String>,
    #[serde(default)]
    pub tags: Vec<String>,
}

/// The path of the committed truths.
pub fn expected_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("eval/expected.json")
}

/// Reads the committed truths.
pub fn load_expected() -> Result<Expected, String> {
    let path = expected_path();
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// How one answer was judged.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Correct,
    /// The engine refused (a caller error): the message it gave.
    Refused(String),
    /// Anything else: what came back and why it is not the truth.
    Wrong {
        got: String,
        why: String,
    },
}

/// One judged question or metamorphic relation.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub id: String,
    pub question: String,
    pub expected: String,
    pub tags: Vec<String>,
    /// nlq or the analysis tool.
    pub tool: String,
    /// How long the engine took (all its questions, for a metamorphic relation).
    pub elapsed: std::time::Duration,
    /// The size of the answer as JSON text (what a language model would receive), when there was one.
    pub answer_bytes: Option<usize>,
    pub verdict: Verdict,
}

/// All outcomes of one run.
#[derive(Debug, Default)]
pub struct Report {
    pub questions: Vec<Outcome>,
    pub metamorphic: Vec<Outcome>,
}

/// (correct, refused, wrong)
pub fn counts(outcomes: &[Outcome]) -> (usize, usize, usize) {
    let mut c = (0, 0, 0);
    for o in outcomes {
        match o.verdict {
            Verdict::Correct => c.0 += 1,
            Verdict::Refused(_) => c.1 += 1,
            Verdict::Wrong { .. } => c.2 += 1,
        }
    }
    c
}

impl Report {
    /// `N/M correct, R refused, W wrong` over the questions.
    pub fn summary(&self) -> String {
        let (c, r, w) = counts(&self.questions);
        format!("{c}/{} correct, {r} refused, {w} wrong", self.questions.len())
    }

    /// The metamorphic relations' summary.
    pub fn metamorphic_summary(&self) -> String {
        let (c, r, w) = counts(&self.metamorphic);
        format!(
            "metamorphic: {c}/{} hold, {r} refused, {w} broken",
            self.metamorphic.len()
        )
    }

    /// Refusals whose message does not name what was not understood (a quoted word) and the measures
    /// that exist (issue 10: refusals keep saying both).
    pub fn uninformative_refusals(&self) -> Vec<&str> {
        self.questions
            .iter()
            .chain(&self.metamorphic)
            .filter(|o| matches!(&o.verdict, Verdict::Refused(m) if !refusal_is_informative(m)))
            .map(|o| o.id.as_str())
            .collect()
    }

    /// "nlq p50 … ms, p95 … ms (n); analyses p50 …": the engine's time per answered question (refusals
    /// excluded) in this run; a figure to read, not a target (use a release build).
    pub fn latency(&self) -> String {
        let mut parts = Vec::new();
        for (label, analysis) in [("answered questions (nlq)", false), ("answered analyses", true)] {
            let mut ms: Vec<f64> = self
                .questions
                .iter()
                .filter(|o| (o.tool != "nlq") == analysis && !matches!(o.verdict, Verdict::Refused(_)))
                .map(|o| o.elapsed.as_secs_f64() * 1000.0)
                .collect();
            if ms.is_empty() {
                continue;
            }
            ms.sort_by(f64::total_cmp);
            let at = |p: f64| ms[((ms.len() - 1) as f64 * p).round() as usize];
            parts.push(format!(
                "{label} p50 {:.1} ms, p95 {:.1} ms, max {:.1} ms (n = {})",
                at(0.5),
                at(0.95),
                at(1.0),
                ms.len()
            ));
        }
        format!("latency: {}", parts.join("; "))
    }

    /// The largest answers (JSON text a language model would receive), largest first.
    pub fn largest_answers(&self, n: usize) -> String {
        let mut sized: Vec<(usize, &str)> = self
            .questions
            .iter()
            .filter_map(|o| o.answer_bytes.map(|b| (b, o.id.as_str())))
            .collect();
        sized.sort_by(|a, b| b.cmp(a));
        let shown: Vec<String> = sized
            .iter()
            .take(n)
            .map(|(b, id)| format!("{id} {:.1} KB", *b as f64 / 1024.0))
            .collect();
        format!("largest answers: {}", shown.join(", "))
    }

    pub fn wrong_ids(&self) -> Vec<&str> {
        self.questions
            .iter()
            .chain(&self.metamorphic)
            .filter(|o| matches!(o.verdict, Verdict::Wrong { .. }))
            .map(|o| o.id.as_str())
            .collect()
    }

    /// The full text: summary, the wrong answers, the refusals, the score by pattern, the summary again.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "{}", self.summary());
        let _ = writeln!(out, "{}", self.metamorphic_summary());
        let all: Vec<&Outcome> = self.questions.iter().chain(&self.metamorphic).collect();
        let wrong: Vec<&&Outcome> = all
            .iter()
            .filter(|o| matches!(o.verdict, Verdict::Wrong { .. }))
            .collect();
        if !wrong.is_empty() {
            let _ = writeln!(out, "\nWRONG ({}):", wrong.len());
            for o in wrong {
                if let Verdict::Wrong { got, why } = &o.verdict {
                    let _ = writeln!(out, "- {} {:?}", o.id, o.question);
                    let _ = writeln!(out, "    expected: {}", o.expected);
                    let _ = writeln!(out, "    got:      {got}");
                    let _ = writeln!(out, "    why:      {why}");
                }
            }
        }
        let refused: Vec<&&Outcome> = all
            .iter()
            .filter(|o| matches!(o.verdict, Verdict::Refused(_)))
            .collect();
        if !refused.is_empty() {
            let _ = writeln!(out, "\nREFUSED ({}):", refused.len());
            for o in refused {
                if let Verdict::Refused(msg) = &o.verdict {
                    let _ = writeln!(out, "- {} {:?}: {}", o.id, o.question, clip(msg, 160));
                }
            }
        }
        let mut tags: Vec<&str> = self
            .questions
            .iter()
            .flat_map(|o| o.tags.iter().map(String::as_str))
            .collect();
        tags.sort_unstable();
        tags.dedup();
        let (_, n_refused, _) = counts(&all.iter().map(|o| (*o).clone()).collect::<Vec<_>>());
        let _ = writeln!(
            out,
            "\nrefusals naming the words not understood and the measures: {}/{n_refused}",
            n_refused - self.uninformative_refusals().len()
        );
        let _ = writeln!(out, "{}", self.latency());
        let _ = writeln!(out, "{}", self.largest_answers(5));
        let _ = writeln!(out, "\nby pattern (correct/refused/wrong of total):");
        for t in tags {
            let of: Vec<Outcome> = self
                .questions
                .iter()
                .filter(|o| o.tags.iter().any(|x| x == t))
                .cloned()
                .collect();
            let (c, r, w) = counts(&of);
            let _ = writeln!(out, "  {t:<16} {c}/{r}/{w} of {}", of.len());
        }
        let _ = writeln!(out, "\n{}", self.summary());
        let _ = writeln!(out, "{}", self.metamorphic_summary());
        out
    }
}

/// Numeric tolerance of one question.
#[derive(Debug, Clone, Copy)]
pub struct Tol {
    pub rel: f64,
    pub abs: f64,
    /// The answer may give a ratio as a percentage.
    pub ratio: bool,
}

impl Tol {
    pub const DEFAULT: Tol = Tol {
        rel: 1e-6,
        abs: 0.01,
        ratio: false,
    };
    fn of(q: &Question) -> Tol {
        Tol {
            rel: q.tol_rel,
            abs: q.tol_abs,
            ratio: q.ratio,
        }
    }
}

fn close(expected: f64, got: f64, rel: f64, abs: f64) -> bool {
    (got - expected).abs() <= abs.max(rel * expected.abs())
}

/// A refusal names what it did not understand (a quoted word) and the measures that exist.
pub fn refusal_is_informative(message: &str) -> bool {
    let quoted = message.matches('\'').count() >= 2
        || message.matches('"').count() >= 2
        || (message.contains('«') && message.contains('»'));
    quoted && message.to_ascii_lowercase().contains("measure")
}

fn tool_kind(tool: &str) -> Result<Option<AnalysisKind>, String> {
    Ok(match tool {
        "nlq" => None,
        "trend" => Some(AnalysisKind::Trend),
        "prediction" => Some(AnalysisKind::Prediction),
        "outlier" => Some(AnalysisKind::Outlier),
        "correlation" => Some(AnalysisKind::Correlation),
        "change" => Some(AnalysisKind::Change),
        "pareto" => Some(AnalysisKind::Pareto),
        other => return Err(format!("unknown tool '{other}'")),
    })
}

/// Asks the engine; `Err(verdict)` when there is no answer to judge (a refusal or a failure).
fn ask(engine: &Engine, tool: &str, question: &str, schema_id: i64) -> Result<Json, Verdict> {
    let kind = tool_kind(tool).map_err(|why| Verdict::Wrong {
        got: String::new(),
        why,
    })?;
    let answer = match kind {
        None => engine.nlq_to_data(question, schema_id),
        Some(k) => engine.analyze(k, question, schema_id),
    };
    answer.map_err(|e: EngineError| {
        if e.is_caller_error() {
            Verdict::Refused(e.to_string())
        } else {
            Verdict::Wrong {
                got: format!("error: {e}"),
                why: "an engine error that is not a refusal".into(),
            }
        }
    })
}

/// Runs every question (and metamorphic relation) whose id passes `keep`.
pub fn evaluate(engine: &Engine, expected: &Expected, keep: &dyn Fn(&str) -> bool) -> Report {
    let questions = expected
        .questions
        .iter()
        .filter(|q| keep(&q.id))
        .map(|q| {
            let started = std::time::Instant::now();
            let (verdict, answer_bytes) = judge_sized(engine, q);
            Outcome {
                id: q.id.clone(),
                question: q.question.clone(),
                expected: describe_expected(q),
                tags: q.tags.clone(),
                tool: q.tool.clone(),
                elapsed: started.elapsed(),
                answer_bytes,
                verdict,
            }
        })
        .collect();
    let metamorphic = expected
        .metamorphic
        .iter()
        .filter(|m| keep(&m.id))
        .map(|m| {
            let started = std::time::Instant::now();
            let verdict = judge_metamorphic(engine, m);
            Outcome {
                id: m.id.clone(),
                question: match &m.b {
                    Some(b) => format!("{} | {b}", m.a),
                    None => format!("{} | {}", m.a, m.parts.join(" | ")),
                },
                expected: format!("rule '{}'", m.rule),
                tags: m.tags.clone(),
                tool: m.tool.clone(),
                elapsed: started.elapsed(),
                answer_bytes: None,
                verdict,
            }
        })
        .collect();
    Report {
        questions,
        metamorphic,
    }
}

/// The engine's answer to a question as pretty JSON (rows cut to 20), or its error.
pub fn show_answer(engine: &Engine, q: &Question) -> String {
    match ask(engine, &q.tool, &q.question, q.schema_id) {
        Ok(mut a) => {
            if let Some(rows) = a.get_mut("rows").and_then(Json::as_array_mut) {
                rows.truncate(20);
            }
            serde_json::to_string_pretty(&a).unwrap_or_default()
        }
        Err(Verdict::Refused(m)) => format!("refused: {m}"),
        Err(v) => format!("{v:?}"),
    }
}

/// Judges one question.
pub fn judge(engine: &Engine, q: &Question) -> Verdict {
    judge_sized(engine, q).0
}

/// Judges one question; also gives the answer's size as JSON text.
fn judge_sized(engine: &Engine, q: &Question) -> (Verdict, Option<usize>) {
    let answer = match ask(engine, &q.tool, &q.question, q.schema_id) {
        Ok(a) => a,
        Err(v) => return (v, None),
    };
    let bytes = answer.to_string().len();
    let verdict = match judge_answer(q, &answer) {
        Ok(()) => Verdict::Correct,
        Err(why) => Verdict::Wrong {
            got: describe_answer(&answer),
            why,
        },
    };
    (verdict, Some(bytes))
}

/// Compares one answer with the truth.
pub fn judge_answer(q: &Question, answer: &Json) -> Result<(), String> {
    let tol = Tol::of(q);
    match q.check.as_deref() {
        None => {
            let (cols, rows) = table(answer)?;
            compare_table(&q.columns, &q.rows, &cols, &rows, tol, q.ordered)
        }
        Some("pearson") => check_pearson(q, answer),
        Some("pareto") => check_pareto(q, answer),
        Some("trend") => check_trend(q, answer),
        Some("shift") => check_shift(q, answer),
        Some("horizon") => check_horizon(q, answer),
        Some("flagged") => check_flagged(q, answer),
        Some(other) => Err(format!("unknown check '{other}'")),
    }
}

// ----------------------------------------------------------------------------------------------------------
// Tables

/// The answer's table: column names and rows (values in column order).
pub fn table(answer: &Json) -> Result<(Vec<String>, Vec<Vec<Json>>), String> {
    let cols: Vec<String> = answer
        .get("columns")
        .and_then(Json::as_array)
        .ok_or("the answer has no 'columns' array")?
        .iter()
        .map(|c| match c {
            Json::String(s) => s.clone(),
            other => other
                .get("name")
                .and_then(Json::as_str)
                .unwrap_or_default()
                .to_string(),
        })
        .collect();
    let rows = answer
        .get("rows")
        .and_then(Json::as_array)
        .ok_or("the answer has no 'rows' array")?
        .iter()
        .map(|r| match r {
            Json::Array(a) => a.clone(),
            Json::Object(o) => cols
                .iter()
                .map(|c| o.get(c).cloned().unwrap_or(Json::Null))
                .collect(),
            other => vec![other.clone()],
        })
        .collect();
    Ok((cols, rows))
}

/// Whether an answer value stands for the expected value (README.md, "Comparison rules").
pub fn value_matches(expected: &Json, got: &Json, tol: Tol) -> bool {
    match expected {
        Json::Number(n) => {
            let Some(e) = n.as_f64() else { return false };
            let Some(g) = number(got) else { return false };
            close(e, g, tol.rel, tol.abs) || (tol.ratio && close(e * 100.0, g, tol.rel, tol.abs * 100.0))
        }
        Json::String(s) => {
            if let Some(d) = iso_date(s) {
                return period(got).is_some_and(|(a, b)| a <= d && d <= b);
            }
            match got {
                Json::String(g) => g.trim().eq_ignore_ascii_case(s.trim()),
                Json::Number(g) => g.to_string() == s.trim(),
                _ => false,
            }
        }
        Json::Bool(b) => got.as_bool() == Some(*b),
        Json::Null => got.is_null(),
        _ => false,
    }
}

fn number(v: &Json) -> Option<f64> {
    match v {
        Json::Number(n) => n.as_f64(),
        Json::String(s) => s.trim().trim_end_matches('%').replace(',', "").parse().ok(),
        _ => None,
    }
}

fn iso_date(s: &str) -> Option<NaiveDate> {
    let s = s.trim();
    if s.len() != 10 {
        return None;
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()
}

fn month_end(y: i32, m: u32) -> Option<NaiveDate> {
    let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
    NaiveDate::from_ymd_opt(ny, nm, 1).map(|d| d - Duration::days(1))
}

fn months(y: i32, first: u32, count: u32) -> Option<(NaiveDate, NaiveDate)> {
    Some((
        NaiveDate::from_ymd_opt(y, first, 1)?,
        month_end(y, first + count - 1)?,
    ))
}

fn year_of(s: &str) -> Option<i32> {
    (s.len() == 4 && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
}

/// The days a period label covers: a date, `YYYY-MM`, `YYYY`, quarters (`2025-Q4`, `Q4 2025`), halves
/// (`2025-H1`, `H1 2025`), ISO weeks (`2025-W10`), `March 2025` / `Mar 2025`, and ranges `A..B` / `A to B`.
pub fn period(v: &Json) -> Option<(NaiveDate, NaiveDate)> {
    let s = match v {
        Json::String(s) => s.trim().to_string(),
        Json::Number(n) => {
            let y = i32::try_from(n.as_i64()?).ok()?;
            return (1900..=2100).contains(&y).then(|| months(y, 1, 12)).flatten();
        }
        _ => return None,
    };
    for sep in ["..", " to ", " – ", " - "] {
        if let Some((a, b)) = s.split_once(sep) {
            let (a, _) = period(&Json::String(a.to_string()))?;
            let (_, b) = period(&Json::String(b.to_string()))?;
            return Some((a, b));
        }
    }
    if s.len() >= 10 {
        let head = &s[..10];
        let rest = &s[10..];
        if (rest.is_empty() || rest.starts_with('T') || rest.starts_with(' '))
            && let Some(d) = iso_date(head)
        {
            return Some((d, d));
        }
    }
    if let Some(y) = year_of(&s) {
        return months(y, 1, 12);
    }
    let upper = s.to_ascii_uppercase().replace(['_', '/'], "-");
    // YYYY-MM, YYYY-Qn, YYYY-Hn, YYYY-Www (also with a space)
    if upper.len() >= 6 {
        let (y, rest) = upper.split_at(4);
        if let Some(y) = year_of(y) {
            let rest = rest.trim_start_matches(['-', ' ']);
            if let Some(q) = rest.strip_prefix('Q').and_then(|q| q.parse::<u32>().ok()) {
                return (1..=4).contains(&q).then(|| months(y, 3 * q - 2, 3)).flatten();
            }
            if let Some(h) = rest.strip_prefix('H').and_then(|h| h.parse::<u32>().ok()) {
                return (1..=2).contains(&h).then(|| months(y, 6 * h - 5, 6)).flatten();
            }
            if let Some(w) = rest.strip_prefix('W').and_then(|w| w.parse::<u32>().ok()) {
                let start = NaiveDate::from_isoywd_opt(y, w, Weekday::Mon)?;
                return Some((start, start + Duration::days(6)));
            }
            if let Ok(m) = rest.parse::<u32>() {
                return (1..=12).contains(&m).then(|| months(y, m, 1)).flatten();
            }
        }
    }
    // Qn YYYY, Hn YYYY, "March 2025", "Mar 2025"
    let words: Vec<&str> = upper.split([' ', '-']).filter(|w| !w.is_empty()).collect();
    if let [first, second] = words.as_slice()
        && let Some(y) = year_of(second)
    {
        if let Some(q) = first.strip_prefix('Q').and_then(|q| q.parse::<u32>().ok()) {
            return (1..=4).contains(&q).then(|| months(y, 3 * q - 2, 3)).flatten();
        }
        if let Some(h) = first.strip_prefix('H').and_then(|h| h.parse::<u32>().ok()) {
            return (1..=2).contains(&h).then(|| months(y, 6 * h - 5, 6)).flatten();
        }
        for fmt in ["%d %B %Y", "%d %b %Y"] {
            if let Ok(d) = NaiveDate::parse_from_str(&format!("1 {first} {y}"), fmt) {
                return months(d.year(), d.month(), 1);
            }
        }
    }
    None
}

/// Maximum bipartite matching (Kuhn): `edge(i, j)` says left i may pair with right j. True when every left
/// node gets a distinct right node.
fn perfect_matching(n_left: usize, n_right: usize, edge: &dyn Fn(usize, usize) -> bool) -> bool {
    fn augment(i: usize, adj: &[Vec<usize>], seen: &mut [bool], owner: &mut [Option<usize>]) -> bool {
        for &j in &adj[i] {
            if seen[j] {
                continue;
            }
            seen[j] = true;
            if owner[j].is_none_or(|k| augment(k, adj, seen, owner)) {
                owner[j] = Some(i);
                return true;
            }
        }
        false
    }
    if n_left > n_right {
        return false;
    }
    let adj: Vec<Vec<usize>> = (0..n_left)
        .map(|i| (0..n_right).filter(|&j| edge(i, j)).collect())
        .collect();
    let mut owner = vec![None; n_right];
    (0..n_left).all(|i| augment(i, &adj, &mut vec![false; n_right], &mut owner))
}

/// Correct when the row counts agree and some injective mapping of expected columns to answer columns makes
/// every row match (rows in order when `ordered`, else as a multiset).
pub fn compare_table(
    exp_cols: &[String],
    exp_rows: &[Vec<Json>],
    cols: &[String],
    rows: &[Vec<Json>],
    tol: Tol,
    ordered: bool,
) -> Result<(), String> {
    if rows.len() != exp_rows.len() {
        return Err(format!("expected {} row(s), got {}", exp_rows.len(), rows.len()));
    }
    let n = rows.len();
    let cell = |r: &Vec<Json>, c: usize| r.get(c).cloned().unwrap_or(Json::Null);
    // Answer columns that can hold each expected column's values.
    let mut candidates: Vec<Vec<usize>> = Vec::new();
    for (j, name) in exp_cols.iter().enumerate() {
        let fits: Vec<usize> = (0..cols.len())
            .filter(|&c| {
                if ordered {
                    (0..n).all(|i| value_matches(&exp_rows[i][j], &cell(&rows[i], c), tol))
                } else {
                    perfect_matching(n, n, &|i, k| {
                        value_matches(&exp_rows[i][j], &cell(&rows[k], c), tol)
                    })
                }
            })
            .collect();
        if fits.is_empty() {
            return Err(format!("no answer column holds the expected values of '{name}'"));
        }
        candidates.push(fits);
    }
    let rows_match = |assign: &[usize]| {
        let row_ok = |i: usize, k: usize| {
            assign
                .iter()
                .enumerate()
                .all(|(j, &c)| value_matches(&exp_rows[i][j], &cell(&rows[k], c), tol))
        };
        if ordered {
            (0..n).all(|i| row_ok(i, i))
        } else {
            perfect_matching(n, n, &row_ok)
        }
    };
    fn search(
        j: usize,
        candidates: &[Vec<usize>],
        assign: &mut Vec<usize>,
        ok: &dyn Fn(&[usize]) -> bool,
    ) -> bool {
        if j == candidates.len() {
            return ok(assign);
        }
        for &c in &candidates[j] {
            if assign.contains(&c) {
                continue;
            }
            assign.push(c);
            if search(j + 1, candidates, assign, ok) {
                return true;
            }
            assign.pop();
        }
        false
    }
    if search(0, &candidates, &mut Vec::new(), &rows_match) {
        Ok(())
    } else if ordered {
        Err(
            "the values are there but the rows are not in the expected order or not paired as expected"
                .into(),
        )
    } else {
        Err("each expected column's values are there, but not paired in the same rows".into())
    }
}

// ----------------------------------------------------------------------------------------------------------
// Analysis checks

fn analysis(answer: &Json) -> Result<&Map<String, Json>, String> {
    answer
        .get("analysis")
        .and_then(Json::as_object)
        .ok_or_else(|| "the answer has no 'analysis' object".to_string())
}

/// The first value under a key that `want` accepts, searching depth first.
fn find_key<'a>(v: &'a Json, want: &dyn Fn(&str) -> bool) -> Option<&'a Json> {
    match v {
        Json::Object(o) => {
            if let Some((_, found)) = o.iter().find(|(k, _)| want(k)) {
                return Some(found);
            }
            o.values().find_map(|x| find_key(x, want))
        }
        Json::Array(a) => a.iter().find_map(|x| find_key(x, want)),
        _ => None,
    }
}

fn norm(s: &str) -> String {
    s.to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

fn derived_f64(q: &Question, key: &str) -> Result<f64, String> {
    q.derived
        .get(key)
        .and_then(Json::as_f64)
        .ok_or_else(|| format!("expected.json lacks derived.{key} for {}", q.id))
}

fn check_pearson(q: &Question, answer: &Json) -> Result<(), String> {
    let expected = q
        .rows
        .first()
        .and_then(|r| r.first())
        .and_then(Json::as_f64)
        .ok_or("expected.json lacks the correlation")?;
    let a = analysis(answer)?;
    let pairs: Vec<&Json> = match a.get("pairs").and_then(Json::as_array) {
        Some(p) => p.iter().collect(),
        None => vec![answer.get("analysis").unwrap_or(&Json::Null)],
    };
    let wanted: Vec<String> = q.measures.iter().map(|m| norm(m)).collect();
    let names = |p: &Json| -> String {
        ["measure_a", "measure_b", "x", "y", "measures"]
            .iter()
            .filter_map(|k| p.get(*k))
            .map(|v| norm(&v.to_string()))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let pair = pairs
        .iter()
        .find(|p| {
            let n = names(p);
            wanted.iter().all(|w| n.contains(w.as_str()))
        })
        .or(if pairs.len() == 1 { pairs.first() } else { None })
        .ok_or_else(|| format!("no correlation pair for {}", q.measures.join(" and ")))?;
    let r = ["pearson", "pearson_r", "r", "correlation"]
        .iter()
        .find_map(|k| pair.get(*k).and_then(Json::as_f64))
        .ok_or("the pair has no Pearson coefficient")?;
    if (r - expected).abs() <= 0.01 {
        Ok(())
    } else {
        Err(format!(
            "Pearson r {r} differs from {expected:.4} by more than 0.01"
        ))
    }
}

fn check_pareto(q: &Question, answer: &Json) -> Result<(), String> {
    let want_count = derived_f64(q, "vital_few_count")?;
    let want_share = derived_f64(q, "vital_few_share")? * 100.0;
    let a = answer
        .get("analysis")
        .ok_or("the answer has no 'analysis' object")?;
    let count = find_key(a, &|k| k.contains("vital_few_count"))
        .and_then(Json::as_f64)
        .ok_or("the analysis reports no vital_few_count")?;
    if count != want_count {
        return Err(format!("vital few count {count}, expected {want_count}"));
    }
    let share = find_key(a, &|k| k.contains("vital_few_share_of_total"))
        .and_then(Json::as_f64)
        .ok_or("the analysis reports no vital_few_share_of_total_pct")?;
    if (share - want_share).abs() > 0.05 {
        return Err(format!(
            "vital few share {share}% of the total, expected {want_share:.4}%"
        ));
    }
    let allowed: HashSet<String> = ["vital_few", "tied_at_cut"]
        .iter()
        .filter_map(|k| q.derived.get(*k).and_then(Json::as_array))
        .flatten()
        .filter_map(Json::as_str)
        .map(str::to_ascii_lowercase)
        .collect();
    if let Some(listed) = find_key(a, &|k| k == "vital_few").and_then(Json::as_array) {
        for m in listed.iter().filter_map(Json::as_str) {
            let lower = m.trim().to_ascii_lowercase();
            // A bounded list may end with a note such as "and 1,936 more".
            if lower.starts_with("and ") || lower.starts_with('…') || lower.starts_with("...") {
                continue;
            }
            if !allowed.contains(&lower) {
                return Err(format!("'{m}' is listed in the vital few but is not one of them"));
            }
        }
    }
    Ok(())
}

fn direction(s: &str) -> Option<&'static str> {
    let s = s.to_ascii_lowercase();
    if ["increas", "up", "rising", "grow", "upward"]
        .iter()
        .any(|w| s.contains(w))
    {
        Some("up")
    } else if ["decreas", "down", "declin", "fall", "downward"]
        .iter()
        .any(|w| s.contains(w))
    {
        Some("down")
    } else {
        None
    }
}

/// The single (ungrouped) series of a trend/prediction analysis.
fn only_series(a: &Map<String, Json>) -> Result<&Json, String> {
    let series = a
        .get("series")
        .and_then(Json::as_array)
        .ok_or("the analysis has no 'series' array")?;
    match series.as_slice() {
        [one] => Ok(one),
        [] => Err("the analysis has an empty 'series' array".into()),
        many => Err(format!("expected one series, got {}", many.len())),
    }
}

fn check_trend(q: &Question, answer: &Json) -> Result<(), String> {
    let (cols, rows) = table(answer)?;
    compare_table(&q.columns, &q.rows, &cols, &rows, Tol::DEFAULT, false)
        .map_err(|e| format!("the series: {e}"))?;
    let s = only_series(analysis(answer)?)?;
    let want = q
        .derived
        .get("direction")
        .and_then(Json::as_str)
        .ok_or("expected.json lacks derived.direction")?;
    let got = s
        .get("direction")
        .and_then(Json::as_str)
        .ok_or("the series reports no direction")?;
    if direction(got) != Some(want) {
        return Err(format!("direction '{got}', expected {want}"));
    }
    let first = derived_f64(q, "first_value")?;
    let last = derived_f64(q, "last_value")?;
    let tol = Tol::DEFAULT;
    let fv = s.get("first_value").and_then(Json::as_f64);
    let lv = s.get("last_value").and_then(Json::as_f64);
    let pct = s.get("percent_change").and_then(Json::as_f64);
    match (fv, lv, pct) {
        (Some(f), Some(l), _) => {
            if close(first, f, tol.rel, tol.abs) && close(last, l, tol.rel, tol.abs) {
                Ok(())
            } else {
                Err(format!(
                    "first/last values {f}/{l}, expected {first}/{last} (total change {})",
                    last - first
                ))
            }
        }
        (_, _, Some(p)) => {
            let want = (last - first) / first * 100.0;
            if (p - want).abs() <= 0.01 {
                Ok(())
            } else {
                Err(format!("percent change {p}, expected {want:.4}"))
            }
        }
        _ => Err("the series reports no total change (first/last value or percent change)".into()),
    }
}

fn periods_of(items: &[Json]) -> Vec<Json> {
    items
        .iter()
        .filter_map(|p| {
            ["period", "date", "month", "start", "at"]
                .iter()
                .find_map(|k| p.get(*k))
                .cloned()
        })
        .collect()
}

fn expected_dates(q: &Question) -> Vec<Json> {
    q.rows.iter().filter_map(|r| r.first().cloned()).collect()
}

fn check_shift(q: &Question, answer: &Json) -> Result<(), String> {
    let a = analysis(answer)?;
    let points = a
        .get("change_points")
        .and_then(Json::as_array)
        .ok_or("the analysis has no 'change_points' array")?;
    let found = periods_of(points);
    let want = expected_dates(q);
    if points.len() > 3 {
        return Err(format!(
            "{} change points (at most 3 may be reported)",
            points.len()
        ));
    }
    for w in &want {
        if !found.iter().any(|f| value_matches(w, f, Tol::DEFAULT)) {
            return Err(format!("no change point at {w}; found {found:?}"));
        }
    }
    Ok(())
}

fn check_horizon(q: &Question, answer: &Json) -> Result<(), String> {
    let s = only_series(analysis(answer)?)?;
    let forecast = s
        .get("forecast")
        .and_then(Json::as_array)
        .ok_or("the series has no 'forecast' array")?;
    let got = periods_of(forecast);
    let want = expected_dates(q);
    if got.len() != want.len() || forecast.len() != want.len() {
        return Err(format!(
            "{} forecast period(s), expected {}",
            forecast.len(),
            want.len()
        ));
    }
    for (w, g) in want.iter().zip(&got) {
        if !value_matches(w, g, Tol::DEFAULT) {
            return Err(format!("forecast period {g}, expected {w}"));
        }
    }
    Ok(())
}

fn check_flagged(q: &Question, answer: &Json) -> Result<(), String> {
    let a = analysis(answer)?;
    let flagged = a
        .get("flagged")
        .and_then(Json::as_array)
        .ok_or("the analysis has no 'flagged' array")?;
    let found = periods_of(flagged);
    for w in expected_dates(q) {
        if !found.iter().any(|f| value_matches(&w, f, Tol::DEFAULT)) {
            return Err(format!("{w} is not flagged"));
        }
    }
    Ok(())
}

// ----------------------------------------------------------------------------------------------------------
// Metamorphic relations

/// Judges one metamorphic relation.
pub fn judge_metamorphic(engine: &Engine, m: &Metamorphic) -> Verdict {
    let ask_one = |q: &str| ask(engine, &m.tool, q, m.schema_id);
    let a = match ask_one(&m.a) {
        Ok(a) => a,
        Err(v) => return v,
    };
    let mut seen = vec![format!("a: {}", describe_answer(&a))];
    let mut ask_more = |q: &str| {
        let x = ask_one(q)?;
        seen.push(format!("{q:?}: {}", describe_answer(&x)));
        Ok::<Json, Verdict>(x)
    };
    let result = match (m.rule.as_str(), m.b.as_deref()) {
        ("same", Some(b)) => match ask_more(b) {
            Ok(b) => same_answer(&a, &b),
            Err(v) => return v,
        },
        ("not_more", Some(b)) => match ask_more(b) {
            Ok(b) => not_more(&a, &b),
            Err(v) => return v,
        },
        ("parts", _) => {
            let mut parts = Vec::new();
            for p in &m.parts {
                match ask_more(p) {
                    Ok(x) => parts.push(x),
                    Err(v) => return v,
                }
            }
            parts_match(&a, &parts)
        }
        (other, _) => Err(format!("rule '{other}' is unknown or lacks its second question")),
    };
    match result {
        Ok(()) => Verdict::Correct,
        Err(why) => Verdict::Wrong {
            got: seen.join(" | "),
            why,
        },
    }
}

/// Above this many rows two answers are compared as sorted rows (the matching is quadratic).
const LARGE_TABLE: usize = 500;

/// The answer's data columns (dimensions, time, measures) as an expected table.
fn data_table(answer: &Json) -> Result<(Vec<String>, Vec<Vec<Json>>), String> {
    let (cols, rows) = table(answer)?;
    let roles: Vec<String> = answer
        .get("columns")
        .and_then(Json::as_array)
        .map(|c| {
            c.iter()
                .map(|c| c.get("role").and_then(Json::as_str).unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default();
    let mut keep: Vec<usize> = (0..cols.len())
        .filter(|&i| roles.get(i).is_none_or(|r| r != "derived"))
        .collect();
    if keep.is_empty() {
        // An analysis table (pairs, shares, scores) is all derived: compare all of it.
        keep = (0..cols.len()).collect();
    }
    Ok((
        keep.iter().map(|&i| cols[i].clone()).collect(),
        rows.iter()
            .map(|r| {
                keep.iter()
                    .map(|&i| r.get(i).cloned().unwrap_or(Json::Null))
                    .collect()
            })
            .collect(),
    ))
}

fn same_answer(a: &Json, b: &Json) -> Result<(), String> {
    let (ec, er) = data_table(a)?;
    if er.len() > LARGE_TABLE {
        // The matching is quadratic: compare large tables' data columns as sorted rows instead.
        let (_, br) = data_table(b)?;
        let sorted = |rows: &[Vec<Json>]| {
            let mut r: Vec<String> = rows.iter().map(|r| Json::Array(r.clone()).to_string()).collect();
            r.sort_unstable();
            r
        };
        return if sorted(&er) == sorted(&br) {
            Ok(())
        } else {
            Err(format!(
                "the paraphrases disagree ({} and {} rows)",
                er.len(),
                br.len()
            ))
        };
    }
    let (cols, rows) = table(b)?;
    compare_table(&ec, &er, &cols, &rows, Tol::DEFAULT, false)
        .map_err(|e| format!("the paraphrases disagree: {e}"))
}

/// The single number a one-row, one-measure answer gives.
fn single_value(answer: &Json) -> Result<f64, String> {
    let (cols, rows) = data_table(answer)?;
    let [row] = rows.as_slice() else {
        return Err(format!("expected a single row, got {}", rows.len()));
    };
    let nums: Vec<f64> = row.iter().filter_map(Json::as_f64).collect();
    match nums.as_slice() {
        [v] => Ok(*v),
        _ => Err(format!(
            "expected one number in the row {cols:?}, got {}",
            nums.len()
        )),
    }
}

fn not_more(filtered: &Json, unfiltered: &Json) -> Result<(), String> {
    let f = single_value(filtered)?;
    let u = single_value(unfiltered)?;
    if f <= u + Tol::DEFAULT.abs {
        Ok(())
    } else {
        Err(format!("the filtered sum {f} exceeds the unfiltered {u}"))
    }
}

fn parts_match(whole: &Json, parts: &[Json]) -> Result<(), String> {
    let (_, rows) = data_table(whole)?;
    if rows.len() != parts.len() {
        return Err(format!(
            "{} row(s) for {} separate question(s)",
            rows.len(),
            parts.len()
        ));
    }
    let values: Vec<f64> = parts.iter().map(single_value).collect::<Result<_, _>>()?;
    let tol = Tol::DEFAULT;
    let ok = perfect_matching(values.len(), rows.len(), &|i, k| {
        rows[k]
            .iter()
            .filter_map(Json::as_f64)
            .any(|g| close(values[i], g, tol.rel, tol.abs))
    });
    if ok {
        Ok(())
    } else {
        Err(format!("the rows do not hold the separate answers {values:?}"))
    }
}

// ----------------------------------------------------------------------------------------------------------
// Descriptions for the report

fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(max).collect::<String>())
    }
}

fn rows_text(cols: &[String], rows: &[Vec<Json>]) -> String {
    let shown: Vec<String> = rows
        .iter()
        .take(6)
        .map(|r| {
            r.iter()
                .map(|v| match v {
                    Json::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect::<Vec<_>>()
                .join(", ")
        })
        .collect();
    let more = if rows.len() > 6 {
        format!(" … {} rows", rows.len())
    } else {
        String::new()
    };
    format!("[{}] ({}){more}", cols.join(", "), shown.join(") ("))
}

fn describe_expected(q: &Question) -> String {
    let mut s = rows_text(&q.columns, &q.rows);
    if !q.derived.is_empty() {
        let d: Map<String, Json> = q
            .derived
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "vital_few" | "tied_at_cut"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let _ = write!(s, " {}", Json::Object(d));
    }
    clip(&s, 400)
}

fn describe_answer(answer: &Json) -> String {
    let mut s = match table(answer) {
        Ok((c, r)) => rows_text(&c, &r),
        Err(e) => e,
    };
    if let Some(a) = answer.get("analysis") {
        let _ = write!(s, " analysis: {}", clip(&a.to_string(), 300));
    }
    if let Some(n) = answer.get("notes").and_then(Json::as_array)
        && !n.is_empty()
    {
        let _ = write!(s, " notes: {}", Json::Array(n.clone()));
    }
    clip(&s, 600)
}
