//! A dataset's vocabulary: the phrases that name its measures, derived measures, events, dimensions,
//! dimension values, column groups and rows, matched on word stems.

use std::collections::HashMap;

use crate::catalog::{Dataset, Role};
use crate::nlq::tokens::{stem, tokenize};

/// A catalog term a phrase can name.
#[derive(Clone, Debug, PartialEq)]
pub enum Term {
    Measure(usize),
    /// Index into the dataset's `derived_measures`.
    Derived(usize),
    /// Index into the dataset's `events`.
    Event(usize),
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
            Term::Measure(_)
            | Term::Derived(_)
            | Term::Event(_)
            | Term::Dimension(_)
            | Term::Time(_)
            | Term::Group(_) => 3,
            Term::RowNoun => 2,
            Term::Value(_) => 1,
            Term::DatasetWord => 0,
        }
    }
}

/// Phrases of one dataset, indexed by the stem of their first word.
#[derive(Default)]
pub struct Vocab {
    by_first: HashMap<String, Vec<(Vec<String>, Term)>>,
    /// Every phrase as written in the catalog (for did-you-mean suggestions).
    phrases: Vec<String>,
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
            v.add(&c.name.replace('_', " "), &term);
            if let Some(d) = &c.display_name {
                v.add(d, &term);
            }
            for a in &c.aliases {
                v.add(a, &term);
            }
            if c.role == Role::Dimension {
                for val in &values[ci] {
                    let t = Term::Value(vec![(ci, val.clone())]);
                    v.add(val, &t);
                    if let Some(syns) = c.synonyms.get(val) {
                        for s in syns {
                            v.add(s, &t);
                        }
                    }
                }
            }
        }
        for (di, d) in ds.derived_measures.iter().enumerate() {
            v.add(&d.name.replace('_', " "), &Term::Derived(di));
            for a in &d.aliases {
                v.add(a, &Term::Derived(di));
            }
        }
        for (ei, e) in ds.events.iter().enumerate() {
            // "new signups" is the signups
            for name in std::iter::once(e.name.replace('_', " ")).chain(e.aliases.iter().cloned()) {
                v.add(&name, &Term::Event(ei));
                if !name.starts_with("new ") {
                    v.add(&format!("new {name}"), &Term::Event(ei));
                }
            }
        }
        for (gi, g) in ds.column_groups.iter().enumerate() {
            v.add(&g.name, &Term::Group(gi));
            for a in &g.aliases {
                v.add(a, &Term::Group(gi));
            }
        }
        for r in &ds.row_nouns {
            v.add(r, &Term::RowNoun);
        }
        v.add(&ds.name, &Term::DatasetWord);
        for a in &ds.aliases {
            v.add(a, &Term::DatasetWord);
        }
        v
    }

    fn add(&mut self, phrase: &str, term: &Term) {
        let toks: Vec<String> = tokenize(phrase).iter().map(|t| stem(t)).collect();
        let Some(first) = toks.first().cloned() else {
            return;
        };
        self.phrases.push(phrase.to_lowercase());
        let list = self.by_first.entry(first).or_default();
        if let Some(existing) = list.iter_mut().find(|(t, _)| *t == toks) {
            match (&mut existing.1, term.clone()) {
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
        list.push((toks, term.clone()));
        list.sort_by_key(|e| std::cmp::Reverse(e.0.len()));
    }

    /// Longest phrase starting at word `i` of `stems`.
    pub fn longest(&self, stems: &[String], i: usize) -> Option<(usize, &Term)> {
        let list = self.by_first.get(&stems[i])?;
        list.iter()
            .find(|(p, _)| stems.len() - i >= p.len() && stems[i..i + p.len()] == p[..])
            .map(|(p, term)| (p.len(), term))
    }

    /// Whether these words are a catalog phrase as written (not only by their stems: "aged" is not).
    pub fn is_exact(&self, words: &str) -> bool {
        self.phrases.iter().any(|p| p == words)
    }

    /// Whether some catalog phrase starts with this stem.
    pub fn knows_first(&self, stem: &str) -> bool {
        self.by_first.contains_key(stem)
    }

    /// The catalog phrase closest to a word not understood, when it is close enough to be a typo.
    pub fn suggest(&self, word: &str) -> Option<String> {
        if word.chars().count() < 3 {
            return None;
        }
        self.phrases
            .iter()
            .map(|p| (strsim::normalized_damerau_levenshtein(word, p), p))
            .filter(|(score, _)| *score >= 0.7)
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, p)| p.clone())
    }
}
