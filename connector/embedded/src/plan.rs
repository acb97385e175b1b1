//! Query plans: what a question was read as, and the SQL that answers it.

use chrono::NaiveDate;
use rusqlite::types::Value;
use serde_json::{Value as Json, json};

use crate::catalog::{Aggregation, Dataset};
use crate::store::quote_ident;

/// Time grain of a series.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Grain {
    Day,
    Week,
    Month,
    Quarter,
    Year,
}

impl Grain {
    pub fn as_str(self) -> &'static str {
        match self {
            Grain::Day => "day",
            Grain::Week => "week",
            Grain::Month => "month",
            Grain::Quarter => "quarter",
            Grain::Year => "year",
        }
    }
    /// Column holding the first day of this grain's period for time column `col` (the loader adds
    /// `<col>__week`, `<col>__month`, `<col>__quarter` and `<col>__year`).
    pub fn bucket_column(self, col: &str) -> String {
        match self {
            Grain::Day => col.to_string(),
            g => format!("{col}__{}", g.as_str()),
        }
    }
    /// Seasonal period (in periods of this grain) worth modelling, if any.
    pub fn season(self) -> Option<usize> {
        match self {
            Grain::Day => Some(7),
            Grain::Week => Some(52),
            Grain::Month => Some(12),
            Grain::Quarter => Some(4),
            Grain::Year => None,
        }
    }
}

/// One measure to compute.
#[derive(Clone, Debug, PartialEq)]
pub struct MeasureSel {
    /// Column aggregated; None for COUNT(*).
    pub column: Option<String>,
    pub agg: Aggregation,
    /// Output column name.
    pub label: String,
}

impl MeasureSel {
    pub fn new(column: Option<&str>, agg: Aggregation) -> MeasureSel {
        let label = match column {
            None => "row_count".to_string(),
            Some(c) => format!("{}_{c}", agg.label_prefix()),
        };
        MeasureSel {
            column: column.map(str::to_string),
            agg,
            label,
        }
    }
    pub fn sql(&self) -> String {
        match (&self.column, self.agg) {
            (None, _) => "COUNT(*)".to_string(),
            (Some(c), Aggregation::Sum) => format!("SUM({})", quote_ident(c)),
            (Some(c), Aggregation::Avg) => format!("AVG({})", quote_ident(c)),
            (Some(c), Aggregation::Min) => format!("MIN({})", quote_ident(c)),
            (Some(c), Aggregation::Max) => format!("MAX({})", quote_ident(c)),
            (Some(c), Aggregation::Count) => format!("COUNT({})", quote_ident(c)),
            (Some(c), Aggregation::CountDistinct) => format!("COUNT(DISTINCT {})", quote_ident(c)),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Filter {
    pub column: String,
    pub values: Vec<String>,
    pub negate: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct TimeRange {
    pub start: NaiveDate,
    pub end: NaiveDate,
    /// The words of the question it came from.
    pub phrase: String,
    /// Whether it was relative ("last month") and so resolved against the latest date.
    pub relative: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Order {
    /// Output column to sort by.
    pub by: String,
    pub desc: bool,
    /// "question" or "default".
    pub source: &'static str,
}

/// A parsed question.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    pub measures: Vec<MeasureSel>,
    pub group_by: Vec<String>,
    pub filters: Vec<Filter>,
    pub time: Option<TimeRange>,
    pub grain: Option<Grain>,
    pub order: Option<Order>,
    pub limit: Option<usize>,
    /// Forecast horizon (periods, grain) from "next 3 months".
    pub horizon: Option<(usize, Grain)>,
    /// Share threshold from "80%" (Pareto).
    pub share: Option<f64>,
    /// "factors", "drivers": all other measures (correlation).
    pub all_measures: bool,
    /// "unusually high" → Some(true), "unusually low" → Some(false).
    pub high: Option<bool>,
    /// Analysis kinds the question's words point to ("trend", "forecast", ...).
    pub intents: Vec<&'static str>,
    pub notes: Vec<String>,
}

/// SQL text and its bound parameters.
pub struct Sql {
    pub text: String,
    pub params: Vec<Value>,
}

impl Plan {
    pub fn to_json(&self, ds: &Dataset) -> Json {
        json!({
            "dataset": {"schema_id": ds.id, "name": ds.name},
            "measures": self.measures.iter().map(|m| json!({
                "column": m.column,
                "aggregation": m.agg.as_str(),
                "output": m.label,
                "unit": m.column.as_deref().and_then(|c| ds.column(c)).and_then(|c| c.unit.clone()),
            })).collect::<Vec<_>>(),
            "group_by": self.group_by,
            "filters": self.filters.iter().map(|f| json!({
                "column": f.column,
                "operator": if f.negate { "not in" } else { "in" },
                "values": f.values,
            })).collect::<Vec<_>>(),
            "time_range": self.time.as_ref().map(|t| json!({
                "column": ds.time_column().map(|c| c.name.clone()),
                "start": t.start.to_string(),
                "end": t.end.to_string(),
                "from_question": t.phrase,
                "relative": t.relative,
            })),
            "time_grain": self.grain.map(Grain::as_str),
            "order": self.order.as_ref().map(|o| json!({
                "by": o.by, "direction": if o.desc { "desc" } else { "asc" }, "source": o.source,
            })),
            "limit": self.limit,
            "horizon": self.horizon.map(|(n, g)| json!({"periods": n, "grain": g.as_str()})),
            "share_threshold": self.share,
        })
    }

    /// WHERE conditions (time range, filters) and their bound parameters.
    pub fn conditions(&self, ds: &Dataset) -> (Vec<String>, Vec<Value>) {
        let mut wh = Vec::new();
        let mut params = Vec::new();
        if let (Some(t), Some(tc)) = (&self.time, ds.time_column()) {
            wh.push(format!("{} BETWEEN ? AND ?", quote_ident(&tc.name)));
            params.push(Value::Text(t.start.to_string()));
            params.push(Value::Text(t.end.to_string()));
        }
        for f in &self.filters {
            let ph = vec!["?"; f.values.len()].join(", ");
            wh.push(format!(
                "{} {} ({ph})",
                quote_ident(&f.column),
                if f.negate { "NOT IN" } else { "IN" }
            ));
            params.extend(f.values.iter().map(|v| Value::Text(v.clone())));
        }
        (wh, params)
    }

    /// Build the SQL for this plan.
    pub fn sql(&self, ds: &Dataset) -> Sql {
        let mut select = Vec::new();
        let mut group = Vec::new();
        let time_col = ds.time_column().map(|c| c.name.clone());
        if let (Some(g), Some(tc)) = (self.grain, &time_col) {
            select.push(format!(
                "{} AS {}",
                quote_ident(&g.bucket_column(tc)),
                quote_ident(g.as_str())
            ));
            group.push(quote_ident(g.as_str()));
        }
        for d in &self.group_by {
            select.push(quote_ident(d));
            group.push(quote_ident(d));
        }
        for m in &self.measures {
            select.push(format!("{} AS {}", m.sql(), quote_ident(&m.label)));
        }
        let (wh, params) = self.conditions(ds);
        let mut text = format!(
            "SELECT {} FROM {}",
            select.join(", "),
            quote_ident(&ds.table_name())
        );
        if !wh.is_empty() {
            text.push_str(&format!(" WHERE {}", wh.join(" AND ")));
        }
        if !group.is_empty() {
            text.push_str(&format!(" GROUP BY {}", group.join(", ")));
        }
        // Top N within each period: rank inside the period.
        if let (Some(g), Some(limit), Some(o)) = (self.grain, self.limit, &self.order)
            && !self.group_by.is_empty()
            && time_col.is_some()
        {
            let per = quote_ident(g.as_str());
            let inner = text;
            text = format!(
                "SELECT * FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY {per} ORDER BY {} {}) AS \"rank\" FROM ({inner})) WHERE \"rank\" <= {limit} ORDER BY {per}, \"rank\"",
                quote_ident(&o.by),
                if o.desc { "DESC" } else { "ASC" }
            );
            return Sql { text, params };
        }
        let mut order = Vec::new();
        if let Some(o) = &self.order {
            order.push(format!(
                "{} {}",
                quote_ident(&o.by),
                if o.desc { "DESC" } else { "ASC" }
            ));
        }
        order.extend(group.iter().cloned());
        if !order.is_empty() {
            text.push_str(&format!(" ORDER BY {}", order.join(", ")));
        }
        if let Some(l) = self.limit {
            text.push_str(&format!(" LIMIT {l}"));
        }
        Sql { text, params }
    }
}
