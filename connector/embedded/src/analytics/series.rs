//! Series: one per group member, split from (period, group..., measure...) query results, and
//! seasonal adjustment shared by trend and change detection.

use std::collections::HashMap;

use chrono::{Duration, NaiveDate};
use serde_json::{Value as Json, json};

use crate::catalog::Aggregation;
use crate::nlq::time::add_periods;
use crate::plan::{Grain, MeasureSel};
use crate::table::{Table, value_f64, value_str};

/// One series: the group it belongs to, its periods and values.
#[derive(Clone, Debug)]
pub struct Series {
    pub key: Vec<(String, String)>,
    pub periods: Vec<String>,
    pub values: Vec<f64>,
}

impl Series {
    pub fn key_json(&self) -> Json {
        let mut o = serde_json::Map::new();
        for (k, v) in &self.key {
            o.insert(k.clone(), json!(v));
        }
        Json::Object(o)
    }
    pub fn key_text(&self) -> String {
        if self.key.is_empty() {
            "all".to_string()
        } else {
            self.key
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        }
    }
}

/// Split a (period, group..., measure...) table into one series per group for `measure`.
/// Periods missing in a group are 0 for sums and counts, and left out otherwise.
pub fn split_series(t: &Table, period_col: &str, group_by: &[String], m: &MeasureSel) -> Vec<Series> {
    let (Some(pi), Some(mi)) = (t.col(period_col), t.col(&m.label)) else {
        return Vec::new();
    };
    let gi: Vec<usize> = group_by.iter().filter_map(|g| t.col(g)).collect();
    let mut all_periods: Vec<String> = Vec::new();
    let mut seen = HashMap::new();
    let mut order: Vec<Vec<String>> = Vec::new();
    let mut data: HashMap<Vec<String>, HashMap<String, f64>> = HashMap::new();
    for r in &t.rows {
        let p = value_str(&r[pi]);
        if seen.insert(p.clone(), ()).is_none() {
            all_periods.push(p.clone());
        }
        let key: Vec<String> = gi.iter().map(|&i| value_str(&r[i])).collect();
        let e = data.entry(key.clone()).or_insert_with(|| {
            order.push(key.clone());
            HashMap::new()
        });
        if let Some(v) = value_f64(&r[mi]) {
            // several rows per (period, group) are summed (used for additive driver breakdowns)
            *e.entry(p).or_insert(0.0) += v;
        }
    }
    all_periods.sort();
    let fill = matches!(
        m.agg,
        Aggregation::Sum | Aggregation::Count | Aggregation::CountDistinct
    );
    order
        .into_iter()
        .map(|key| {
            let vals = &data[&key];
            let mut periods = Vec::new();
            let mut values = Vec::new();
            for p in &all_periods {
                match vals.get(p) {
                    Some(v) => {
                        periods.push(p.clone());
                        values.push(*v);
                    }
                    None if fill => {
                        periods.push(p.clone());
                        values.push(0.0);
                    }
                    None => {}
                }
            }
            Series {
                key: group_by.iter().cloned().zip(key).collect(),
                periods,
                values,
            }
        })
        .collect()
}

pub(crate) fn period_end(start: NaiveDate, g: Grain) -> NaiveDate {
    add_periods(start, g, 1)
        .map(|d| d - Duration::days(1))
        .unwrap_or(start)
}

pub(crate) fn parse_date(s: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()
}
