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
    if !token.chars().all(char::is_alphabetic) {
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
    pub fn new(q: &str) -> Words {
        let raw = tokenize(q);
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
        assert!(is_plural("regions") && is_plural("categories"));
        assert!(!is_plural("region") && !is_plural("this") && !is_plural("business"));
    }
}
