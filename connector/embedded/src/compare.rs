//! Comparisons of periods: each row gets, for every measure, its change from the period before it
//! (same group), absolute and in percent.

use std::collections::HashMap;

use rusqlite::types::Value;

use crate::plan::{Compare, Plan};
use crate::table::{Table, value_f64, value_str};

/// Add `<measure>_change` and `<measure>_pct_change` columns to a period comparison's rows. Returns
/// a note saying what the change is measured against, or None when the plan compares no periods.
pub fn add_changes(table: &mut Table, plan: &Plan) -> Option<String> {
    let period_col = match plan.compare.as_ref()? {
        Compare::Periods(_) => "period_start".to_string(),
        Compare::OverPeriods(g) => g.as_str().to_string(),
        Compare::Members { .. } => return None,
    };
    let pi = table.col(&period_col)?;
    let gi: Vec<usize> = plan.group_by.iter().filter_map(|g| table.col(g)).collect();
    let mi: Vec<usize> = plan.measures.iter().filter_map(|m| table.col(&m.label)).collect();
    // row index by (group, period), and the periods of each group in order
    let mut at: HashMap<(Vec<String>, String), usize> = HashMap::new();
    let mut periods: HashMap<Vec<String>, Vec<String>> = HashMap::new();
    for (r, row) in table.rows.iter().enumerate() {
        let key: Vec<String> = gi.iter().map(|&i| value_str(&row[i])).collect();
        let p = value_str(&row[pi]);
        at.insert((key.clone(), p.clone()), r);
        periods.entry(key).or_default().push(p);
    }
    for ps in periods.values_mut() {
        ps.sort();
        ps.dedup();
    }
    let mut extra: Vec<Vec<Value>> = vec![Vec::new(); table.rows.len()];
    for (r, row) in table.rows.iter().enumerate() {
        let key: Vec<String> = gi.iter().map(|&i| value_str(&row[i])).collect();
        let p = value_str(&row[pi]);
        let ps = &periods[&key];
        let pos = ps.iter().position(|x| *x == p).expect("indexed");
        let prev = pos
            .checked_sub(1)
            .and_then(|j| at.get(&(key.clone(), ps[j].clone())))
            .map(|&j| &table.rows[j]);
        for &m in &mi {
            let now = value_f64(&row[m]);
            let before = prev.and_then(|pr| value_f64(&pr[m]));
            match (now, before) {
                (Some(a), Some(b)) => {
                    extra[r].push(Value::Real(a - b));
                    extra[r].push(if b != 0.0 {
                        Value::Real(100.0 * (a - b) / b.abs())
                    } else {
                        Value::Null
                    });
                }
                _ => {
                    extra[r].push(Value::Null);
                    extra[r].push(Value::Null);
                }
            }
        }
    }
    for &m in &mi {
        let label = table.columns[m].clone();
        table.columns.push(format!("{label}_change"));
        table.columns.push(format!("{label}_pct_change"));
    }
    for (row, e) in table.rows.iter_mut().zip(extra) {
        row.extend(e);
    }
    Some(format!(
        "<measure>_change and <measure>_pct_change: the change from the {} before (empty for the first)",
        match plan.compare.as_ref()? {
            Compare::Periods(_) => "compared period".to_string(),
            Compare::OverPeriods(g) => g.as_str().to_string(),
            Compare::Members { .. } => unreachable!("returned above"),
        }
    ))
}
