//! Words of a question: lowercase tokens and their stems (Snowball English stemmer), so that
//! "order", "orders" and "ordered", or "sell", "sells" and "selling", read as one word.

use rust_stemmers::{Algorithm, Stemmer};

/// Split a question (or a catalog phrase) into lowercase tokens. Dates ("2025-03-01", "03/2025"),
/// ranges of values ("18-24", "65+") and shares ("80%") stay one token; dashes between words used as
/// ranges ("jan–mar") become the word "to".
pub fn tokenize(q: &str) -> Vec<String> {
    let lower = q
        .to_lowercase()
        .replace(['\'', '’'], "")
        .replace(['–', '—'], " to ");
    lower
        .split(|c: char| !(c.is_alphanumeric() || matches!(c, '-' | '+' | '%' | '.' | '/')))
        .map(|t| t.trim_matches(|c: char| matches!(c, '.' | '-' | '/')))
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect()
}

/// The stem of one token ("selling" → "sell", "categories" → "categori"). Tokens holding digits or
/// punctuation are their own stem.
pub fn stem(token: &str) -> String {
    // "t-shirts" → "t-shirt": each part of a hyphenated word
    if token.contains('-') && token.split('-').all(|p| p.chars().all(char::is_alphabetic)) {
        return token.split('-').map(stem).collect::<Vec<_>>().join("-");
    }
    if token.is_empty() || !token.chars().all(char::is_alphabetic) {
        return token.to_string();
    }
    thread_local! {
        static STEMMER: Stemmer = Stemmer::create(Algorithm::English);
    }
    STEMMER.with(|s| s.stem(token).into_owned())
}

/// Whether a token is the plural form of its stem's word ("regions", "categories"; not "sales"
/// names or "this").
pub fn is_plural(token: &str) -> bool {
    token.len() > 3 && token.ends_with('s') && !token.ends_with("ss") && stem(token) != token
}

/// A question's tokens with their stems.
pub struct Words {
    pub raw: Vec<String>,
    pub stems: Vec<String>,
}

impl Words {
    /// The question's words. A hyphenated word the caller does not `keep` is read as its parts
    /// ("best-selling" → "best selling"; "jan-mar" → "jan to mar").
    pub fn new(q: &str, keep: impl Fn(&str) -> bool) -> Words {
        let mut raw = Vec::new();
        for t in tokenize(q) {
            let parts: Vec<&str> = t.split('-').collect();
            if parts.len() < 2
                || keep(&t)
                || !parts
                    .iter()
                    .all(|p| !p.is_empty() && p.chars().all(char::is_alphabetic))
            {
                raw.push(t);
                continue;
            }
            let months =
                parts.len() == 2 && parts.iter().all(|p| crate::nlq::time::month_number(p).is_some());
            for (k, p) in parts.iter().enumerate() {
                if k > 0 && months {
                    raw.push("to".to_string());
                }
                raw.push((*p).to_string());
            }
        }
        let stems = raw.iter().map(|t| stem(t)).collect();
        Words { raw, stems }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(tokenize("Jan–Mar 03/2025"), ["jan", "to", "mar", "03/2025"]);
    }

    #[test]
    fn stems_join_inflections() {
        assert_eq!(stem("selling"), stem("sell"));
        assert_eq!(stem("orders"), stem("order"));
        assert_eq!(stem("categories"), stem("category"));
        assert_eq!(stem("transactions"), stem("transaction"));
        assert_eq!(stem("2025-01-01"), "2025-01-01");
        assert_eq!(stem("t-shirts"), stem("t-shirt"));
        assert!(is_plural("regions") && is_plural("categories"));
        assert!(!is_plural("region") && !is_plural("this") && !is_plural("business"));
    }
}
