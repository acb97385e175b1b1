//! Time expressions in questions: "last month", "Q4 2024", "past 3 weeks", "between 2025-01-01 and
//! 2025-03-31", "March 2025", "next 3 months" (a horizon). Relative ones resolve against the dataset's
//! latest date.

use chrono::{Datelike, Duration, Months, NaiveDate};

use crate::plan::Grain;

/// What a time phrase means.
#[derive(Clone, Debug, PartialEq)]
pub enum TimeSpec {
    Range {
        start: NaiveDate,
        end: NaiveDate,
        relative: bool,
        note: Option<String>,
        /// For "between A and B" / "from A to B": the two periods named, each (first day, last day).
        ends: Option<[(NaiveDate, NaiveDate); 2]>,
    },
    Horizon {
        periods: usize,
        grain: Grain,
    },
}

pub fn parse_number(tok: &str) -> Option<usize> {
    if let Ok(n) = tok.parse::<usize>() {
        return Some(n);
    }
    let words = [
        "zero",
        "one",
        "two",
        "three",
        "four",
        "five",
        "six",
        "seven",
        "eight",
        "nine",
        "ten",
        "eleven",
        "twelve",
        "thirteen",
        "fourteen",
        "fifteen",
        "sixteen",
        "seventeen",
        "eighteen",
        "nineteen",
        "twenty",
    ];
    if let Some(n) = words.iter().position(|w| *w == tok) {
        return Some(n);
    }
    match tok {
        "thirty" => Some(30),
        "fifty" => Some(50),
        "hundred" => Some(100),
        _ => None,
    }
}

pub fn parse_unit(tok: &str) -> Option<Grain> {
    match tok {
        "day" | "days" => Some(Grain::Day),
        "week" | "weeks" => Some(Grain::Week),
        "month" | "months" => Some(Grain::Month),
        "quarter" | "quarters" => Some(Grain::Quarter),
        "year" | "years" => Some(Grain::Year),
        _ => None,
    }
}

pub fn month_number(tok: &str) -> Option<u32> {
    let names = [
        ("january", "jan"),
        ("february", "feb"),
        ("march", "mar"),
        ("april", "apr"),
        ("may", "may"),
        ("june", "jun"),
        ("july", "jul"),
        ("august", "aug"),
        ("september", "sep"),
        ("october", "oct"),
        ("november", "nov"),
        ("december", "dec"),
    ];
    names
        .iter()
        .position(|(full, short)| tok == *full || tok == *short || (tok == "sept" && *short == "sep"))
        .map(|i| i as u32 + 1)
}

fn year(tok: &str) -> Option<i32> {
    if tok.len() == 4 && tok.bytes().all(|b| b.is_ascii_digit()) {
        let y: i32 = tok.parse().ok()?;
        if (1900..=2200).contains(&y) {
            return Some(y);
        }
    }
    None
}

fn iso_date(tok: &str) -> Option<NaiveDate> {
    if tok.len() == 10 {
        NaiveDate::parse_from_str(tok, "%Y-%m-%d").ok()
    } else {
        None
    }
}

fn ymd(y: i32, m: u32, d: u32) -> Option<NaiveDate> {
    NaiveDate::from_ymd_opt(y, m, d)
}

pub fn month_end(y: i32, m: u32) -> Option<NaiveDate> {
    let first = ymd(y, m, 1)?;
    first
        .checked_add_months(Months::new(1))
        .map(|d| d - Duration::days(1))
}

/// First day of the period of `grain` containing `d`.
pub fn period_start(d: NaiveDate, grain: Grain) -> NaiveDate {
    match grain {
        Grain::Day => d,
        Grain::Week => d - Duration::days(i64::from(d.weekday().num_days_from_monday())),
        Grain::Month => d.with_day(1).unwrap_or(d),
        Grain::Quarter => ymd(d.year(), (d.month() - 1) / 3 * 3 + 1, 1).unwrap_or(d),
        Grain::Year => ymd(d.year(), 1, 1).unwrap_or(d),
    }
}

/// Add `n` periods of `grain` to `d` (negative allowed).
pub fn add_periods(d: NaiveDate, grain: Grain, n: i64) -> Option<NaiveDate> {
    let months = |k: i64| {
        if k >= 0 {
            d.checked_add_months(Months::new(k as u32))
        } else {
            d.checked_sub_months(Months::new((-k) as u32))
        }
    };
    match grain {
        Grain::Day => d.checked_add_signed(Duration::days(n)),
        Grain::Week => d.checked_add_signed(Duration::days(7 * n)),
        Grain::Month => months(n),
        Grain::Quarter => months(3 * n),
        Grain::Year => months(12 * n),
    }
}

/// A day of the month: "1", "1st", "22nd".
fn day_number(tok: &str) -> Option<u32> {
    let digits = tok.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let suffix = &tok[digits.len()..];
    if !matches!(suffix, "" | "st" | "nd" | "rd" | "th") || digits.is_empty() || digits.len() > 2 {
        return None;
    }
    let d: u32 = digits.parse().ok()?;
    (1..=31).contains(&d).then_some(d)
}

/// Numeric forms: "03/2025", "2025-03", "2025/03" (a month) and "3/15/2025" (a day, US order; a
/// first number above 12 is read as the day).
fn numeric_date(tok: &str) -> Option<(NaiveDate, NaiveDate, Option<String>)> {
    let parts: Vec<&str> = tok.split(['/', '-']).collect();
    let num = |s: &str| -> Option<u32> {
        (!s.is_empty() && s.len() <= 4 && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    match parts[..] {
        [a, b] => {
            let (m, y) = if a.len() == 4 {
                (num(b)?, year(a)?)
            } else {
                (num(a)?, year(b)?)
            };
            if !(1..=12).contains(&m) {
                return None;
            }
            Some((ymd(y, m, 1)?, month_end(y, m)?, None))
        }
        [a, b, c] if tok.contains('/') => {
            let y = year(c)?;
            let (x, z) = (num(a)?, num(b)?);
            let (m, d, note) = if x > 12 {
                (z, x, None)
            } else if z > 12 || x == z {
                (x, z, None)
            } else {
                (x, z, Some(format!("{tok} read as month/day/year")))
            };
            let day = ymd(y, m, d)?;
            Some((day, day, note))
        }
        _ => None,
    }
}

/// A point in time naming a whole period: (tokens used, first day, last day, note).
fn parse_point(
    t: &[String],
    i: usize,
    latest: NaiveDate,
) -> Option<(usize, NaiveDate, NaiveDate, Option<String>)> {
    let tok = t.get(i)?.as_str();
    if let Some(d) = iso_date(tok) {
        return Some((1, d, d, None));
    }
    if let Some((s, e, note)) = numeric_date(tok) {
        return Some((1, s, e, note));
    }
    // halves: H1 [of] [YYYY], first/second half [of] [YYYY], YYYY H2
    let half = match (tok, t.get(i + 1).map(String::as_str)) {
        ("h1", _) => Some((1, 1)),
        ("h2", _) => Some((2, 1)),
        ("first" | "1st", Some("half")) => Some((1, 2)),
        ("second" | "2nd" | "last", Some("half")) => Some((2, 2)),
        _ => None,
    };
    if let Some((h, used)) = half {
        let mut j = i + used;
        if matches!(t.get(j).map(String::as_str), Some("of" | "in"))
            && t.get(j + 1).and_then(|s| year(s)).is_some()
        {
            j += 1;
        }
        let first_month = if h == 1 { 1 } else { 7 };
        let (y, n, note) = match t.get(j).and_then(|s| year(s)) {
            Some(y) => (y, j + 1 - i, None),
            None => {
                let mut y = latest.year();
                if ymd(y, first_month, 1)? > latest {
                    y -= 1;
                }
                (
                    y,
                    used,
                    Some(format!(
                        "H{h} without a year read as H{h} {y}, the most recent one in the data"
                    )),
                )
            }
        };
        return Some((n, ymd(y, first_month, 1)?, month_end(y, first_month + 5)?, note));
    }
    // Qn [of|in] [YYYY] / YYYY Qn
    let quarter = |s: &str| -> Option<u32> {
        match s {
            "q1" => Some(1),
            "q2" => Some(2),
            "q3" => Some(3),
            "q4" => Some(4),
            _ => None,
        }
    };
    let ordinal_quarter = |s: &str| -> Option<u32> {
        match s {
            "first" | "1st" => Some(1),
            "second" | "2nd" => Some(2),
            "third" | "3rd" => Some(3),
            "fourth" | "4th" => Some(4),
            _ => None,
        }
    };
    let (q, used) = if let Some(q) = quarter(tok) {
        (Some(q), 1)
    } else if let (Some(q), Some("quarter")) = (ordinal_quarter(tok), t.get(i + 1).map(String::as_str)) {
        (Some(q), 2)
    } else {
        (None, 0)
    };
    if let Some(q) = q {
        let mut j = i + used;
        if matches!(t.get(j).map(String::as_str), Some("of" | "in"))
            && t.get(j + 1).and_then(|s| year(s)).is_some()
        {
            j += 1;
        }
        let (y, note, n) = match t.get(j).and_then(|s| year(s)) {
            Some(y) => (y, None, j + 1 - i),
            None => {
                // most recent such quarter that has started by the latest date
                let mut y = latest.year();
                if ymd(y, (q - 1) * 3 + 1, 1)? > latest {
                    y -= 1;
                }
                (
                    y,
                    Some(format!(
                        "Q{q} without a year read as Q{q} {y}, the most recent one in the data"
                    )),
                    used,
                )
            }
        };
        let start = ymd(y, (q - 1) * 3 + 1, 1)?;
        let end = month_end(y, q * 3)?;
        return Some((n, start, end, note));
    }
    if let Some(y) = year(tok) {
        if let Some(q) = t.get(i + 1).and_then(|s| quarter(s)) {
            return Some((2, ymd(y, (q - 1) * 3 + 1, 1)?, month_end(y, q * 3)?, None));
        }
        if let Some(h) = t.get(i + 1).and_then(|s| match s.as_str() {
            "h1" => Some(1),
            "h2" => Some(7),
            _ => None,
        }) {
            return Some((2, ymd(y, h, 1)?, month_end(y, h + 5)?, None));
        }
        return Some((1, ymd(y, 1, 1)?, ymd(y, 12, 31)?, None));
    }
    // day month year: "1 march 2025", "1st of march 2025"
    if let Some(d) = day_number(tok) {
        let mut j = i + 1;
        if t.get(j).map(String::as_str) == Some("of") {
            j += 1;
        }
        let m = t.get(j).and_then(|s| month_number(s))?;
        let y = t.get(j + 1).and_then(|s| year(s))?;
        let day = ymd(y, m, d)?;
        return Some((j + 2 - i, day, day, None));
    }
    if let Some(m) = month_number(tok) {
        // month day year: "march 1 2025", "march 1st, 2025"
        if let (Some(d), Some(y)) = (
            t.get(i + 1).and_then(|s| day_number(s)),
            t.get(i + 2).and_then(|s| year(s)),
        ) {
            let day = ymd(y, m, d)?;
            return Some((3, day, day, None));
        }
        let mut j = i + 1;
        if t.get(j).map(String::as_str) == Some("of") {
            j += 1;
        }
        if let Some(y) = t.get(j).and_then(|s| year(s)) {
            return Some((j + 1 - i, ymd(y, m, 1)?, month_end(y, m)?, None));
        }
        // "may" without a year is too likely to be the verb; "mar", "jun"... alone are fine.
        if tok == "may" {
            return None;
        }
        let mut y = latest.year();
        if ymd(y, m, 1)? > latest {
            y -= 1;
        }
        let name = ymd(y, m, 1)?.format("%B %Y").to_string();
        return Some((
            1,
            ymd(y, m, 1)?,
            month_end(y, m)?,
            Some(format!(
                "{tok} without a year read as {name}, the most recent one in the data"
            )),
        ));
    }
    None
}

/// Try to read a time expression at `i`. Returns tokens used and its meaning.
pub fn parse_time(
    t: &[String],
    i: usize,
    latest: NaiveDate,
    earliest: NaiveDate,
) -> Option<(usize, TimeSpec)> {
    let tok = t.get(i)?.as_str();
    let next = t.get(i + 1).map(String::as_str);
    let next2 = t.get(i + 2).map(String::as_str);
    let range = |start: NaiveDate, end: NaiveDate, relative: bool, note: Option<String>| TimeSpec::Range {
        start,
        end,
        relative,
        note,
        ends: None,
    };
    match tok {
        "between" | "from" => {
            let (n1, s, e1, note1) = parse_point(t, i + 1, latest)?;
            let sep = t.get(i + 1 + n1).map(String::as_str)?;
            let ok = if tok == "between" {
                sep == "and"
            } else {
                matches!(sep, "to" | "until" | "through" | "till" | "and")
            };
            if !ok {
                return None;
            }
            let (n2, s2, e, note2) = parse_point(t, i + 2 + n1, latest)?;
            let (s, note1) = match (month_number(&t[i + 1]), n1, &note1, &note2) {
                // "between january and march 2025": the year of the second month applies to both
                (Some(m), 1, Some(_), None) => {
                    let y = if m <= s2.month() { s2.year() } else { s2.year() - 1 };
                    (ymd(y, m, 1)?, None)
                }
                _ => (s, note1),
            };
            if e < s {
                return None;
            }
            let note = match (note1, note2) {
                (Some(a), Some(b)) => Some(format!("{a}; {b}")),
                (a, b) => a.or(b),
            };
            let ends = Some([(s, e1.max(s)), (s2, e)]);
            return Some((
                2 + n1 + n2,
                TimeSpec::Range {
                    start: s,
                    end: e,
                    relative: false,
                    note,
                    ends,
                },
            ));
        }
        "week" | "month" | "quarter" | "year" if next == Some("of") => {
            // "the week of 2025-03-03": the whole period holding that day
            // only of a day: "which quarter of 2025" names no single quarter
            let g = parse_unit(tok)?;
            let (n, s, e, note) = parse_point(t, i + 2, latest)?;
            if s != e {
                return None;
            }
            let start = period_start(s, g);
            let end = add_periods(start, g, 1)? - Duration::days(1);
            return Some((2 + n, range(start, end, false, note)));
        }
        "since" => {
            let (n, s, _, note) = parse_point(t, i + 1, latest)?;
            return Some((1 + n, range(s, latest, true, note)));
        }
        "before" => {
            let (n, s, _, note) = parse_point(t, i + 1, latest)?;
            return Some((1 + n, range(earliest, s - Duration::days(1), false, note)));
        }
        "ytd" => {
            return Some((1, range(period_start(latest, Grain::Year), latest, true, None)));
        }
        "qtd" => {
            return Some((1, range(period_start(latest, Grain::Quarter), latest, true, None)));
        }
        "mtd" => {
            return Some((1, range(period_start(latest, Grain::Month), latest, true, None)));
        }
        "year" | "quarter" | "month" if next == Some("to") && next2 == Some("date") => {
            let g = parse_unit(tok)?;
            return Some((3, range(period_start(latest, g), latest, true, None)));
        }
        "year-to-date" => {
            return Some((1, range(period_start(latest, Grain::Year), latest, true, None)));
        }
        _ => {}
    }
    // last/past/previous/trailing N units (rolling), last/previous unit (calendar), past unit (rolling 1)
    if matches!(tok, "last" | "past" | "previous" | "prior" | "trailing") {
        if let (Some(n), Some(g)) = (next.and_then(parse_number), next2.and_then(parse_unit)) {
            if n == 0 {
                return None;
            }
            let start = add_periods(latest, g, -(n as i64))? + Duration::days(1);
            return Some((3, range(start, latest, true, None)));
        }
        if let Some(g) = next.and_then(parse_unit) {
            if matches!(tok, "past" | "trailing") {
                let start = add_periods(latest, g, -1)? + Duration::days(1);
                return Some((2, range(start, latest, true, None)));
            }
            // the latest complete period: when the data ends on the last day of a month (quarter,
            // week), "last month" is that month; "last year" is always the calendar year before
            let this = period_start(latest, g);
            let this_end = add_periods(this, g, 1)? - Duration::days(1);
            if g != Grain::Year && this_end == latest {
                return Some((2, range(this, latest, true, None)));
            }
            let start = add_periods(this, g, -1)?;
            return Some((2, range(start, this - Duration::days(1), true, None)));
        }
        return None;
    }
    if matches!(tok, "this" | "current" | "latest") {
        let g = next
            .and_then(parse_unit)
            .filter(|_| !next.is_some_and(|n| n.ends_with('s')))?;
        return Some((2, range(period_start(latest, g), latest, true, None)));
    }
    if tok == "most" && next == Some("recent") {
        let g = next2
            .and_then(parse_unit)
            .filter(|_| !next2.is_some_and(|n| n.ends_with('s')))?;
        return Some((3, range(period_start(latest, g), latest, true, None)));
    }
    // month ranges: "jan to mar 2025", "january through march"
    if let Some(m1) = month_number(tok)
        && matches!(next, Some("to" | "through" | "thru" | "until" | "till"))
        && next2.and_then(month_number).is_some()
    {
        let (n2, s2, e, note2) = parse_point(t, i + 2, latest)?;
        let y = if m1 <= s2.month() {
            s2.year()
        } else {
            s2.year() - 1
        };
        let s = ymd(y, m1, 1)?;
        if e < s {
            return None;
        }
        return Some((2 + n2, range(s, e, false, note2)));
    }
    if matches!(tok, "next" | "coming" | "following") {
        if let (Some(n), Some(g)) = (next.and_then(parse_number), next2.and_then(parse_unit)) {
            if n == 0 {
                return None;
            }
            return Some((3, TimeSpec::Horizon { periods: n, grain: g }));
        }
        let g = next.and_then(parse_unit)?;
        return Some((2, TimeSpec::Horizon { periods: 1, grain: g }));
    }
    let (n, s, e, note) = parse_point(t, i, latest)?;
    Some((n, range(s, e, false, note)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }
    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }
    fn rng(s: &str, latest: &str) -> (usize, NaiveDate, NaiveDate) {
        match parse_time(&toks(s), 0, d(latest), d("2020-01-01")) {
            Some((n, TimeSpec::Range { start, end, .. })) => (n, start, end),
            other => panic!("{s}: {other:?}"),
        }
    }

    #[test]
    fn relative_ranges_resolve_against_latest_date() {
        assert_eq!(
            rng("last month", "2025-12-31"),
            (2, d("2025-12-01"), d("2025-12-31"))
        );
        assert_eq!(
            rng("last month", "2025-03-15"),
            (2, d("2025-02-01"), d("2025-02-28"))
        );
        assert_eq!(
            rng("last quarter", "2025-12-31"),
            (2, d("2025-10-01"), d("2025-12-31"))
        );
        assert_eq!(
            rng("last quarter", "2025-11-30"),
            (2, d("2025-07-01"), d("2025-09-30"))
        );
        assert_eq!(
            rng("last year", "2025-12-31"),
            (2, d("2024-01-01"), d("2024-12-31"))
        );
        assert_eq!(
            rng("this year", "2025-06-30"),
            (2, d("2025-01-01"), d("2025-06-30"))
        );
        assert_eq!(
            rng("this quarter", "2025-05-10"),
            (2, d("2025-04-01"), d("2025-05-10"))
        );
        assert_eq!(
            rng("past 30 days", "2025-12-31"),
            (3, d("2025-12-02"), d("2025-12-31"))
        );
        assert_eq!(
            rng("past 3 months", "2025-12-31"),
            (3, d("2025-10-01"), d("2025-12-31"))
        );
        assert_eq!(
            rng("last two weeks", "2025-12-31"),
            (3, d("2025-12-18"), d("2025-12-31"))
        );
        assert_eq!(
            rng("past year", "2025-12-01"),
            (2, d("2024-12-02"), d("2025-12-01"))
        );
        assert_eq!(
            rng("last week", "2025-12-31"),
            (2, d("2025-12-22"), d("2025-12-28"))
        );
        assert_eq!(
            rng("year to date", "2025-03-03"),
            (3, d("2025-01-01"), d("2025-03-03"))
        );
    }

    #[test]
    fn absolute_ranges() {
        assert_eq!(
            rng("q4 2024", "2025-12-31"),
            (2, d("2024-10-01"), d("2024-12-31"))
        );
        assert_eq!(
            rng("q1 of 2025", "2025-12-31"),
            (3, d("2025-01-01"), d("2025-03-31"))
        );
        assert_eq!(
            rng("2024 q2", "2025-12-31"),
            (2, d("2024-04-01"), d("2024-06-30"))
        );
        assert_eq!(
            rng("fourth quarter of 2024", "2025-12-31"),
            (4, d("2024-10-01"), d("2024-12-31"))
        );
        assert_eq!(rng("2024", "2025-12-31"), (1, d("2024-01-01"), d("2024-12-31")));
        assert_eq!(
            rng("february 2024", "2025-12-31"),
            (2, d("2024-02-01"), d("2024-02-29"))
        );
        assert_eq!(rng("march", "2025-02-10"), (1, d("2024-03-01"), d("2024-03-31")));
        assert_eq!(
            rng("between 2025-01-15 and 2025-02-10", "2025-12-31"),
            (4, d("2025-01-15"), d("2025-02-10"))
        );
        assert_eq!(
            rng("from jan 2025 to march 2025", "2025-12-31"),
            (6, d("2025-01-01"), d("2025-03-31"))
        );
        assert_eq!(
            rng("since 2025-11-15", "2025-12-31"),
            (2, d("2025-11-15"), d("2025-12-31"))
        );
        assert_eq!(rng("q4", "2025-06-30"), (1, d("2024-10-01"), d("2024-12-31")));
    }

    #[test]
    fn horizons_and_rejections() {
        assert_eq!(
            parse_time(&toks("next 3 months"), 0, d("2025-12-31"), d("2020-01-01")),
            Some((
                3,
                TimeSpec::Horizon {
                    periods: 3,
                    grain: Grain::Month
                }
            ))
        );
        assert_eq!(
            parse_time(&toks("next quarter"), 0, d("2025-12-31"), d("2020-01-01")),
            Some((
                2,
                TimeSpec::Horizon {
                    periods: 1,
                    grain: Grain::Quarter
                }
            ))
        );
        assert_eq!(
            parse_time(&toks("may"), 0, d("2025-12-31"), d("2020-01-01")),
            None
        );
        assert_eq!(
            parse_time(&toks("last"), 0, d("2025-12-31"), d("2020-01-01")),
            None
        );
        assert_eq!(
            parse_time(
                &toks("between 2025-03-01 and 2025-01-01"),
                0,
                d("2025-12-31"),
                d("2020-01-01")
            ),
            None
        );
        assert_eq!(
            parse_time(&toks("past 0 days"), 0, d("2025-12-31"), d("2020-01-01")),
            None
        );
    }
}
