//! Query plans: what a question was read as, and the SQL that answers it.

use chrono::NaiveDate;
use rusqlite::types::Value;
use serde_json::{Value as Json, json};

use crate::AnalysisKind;
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
    /// Column aggregated; None for COUNT(*) (rows or events) and derived measures.
    pub column: Option<String>,
    pub agg: Aggregation,
    /// Output column name.
    pub label: String,
    /// SQL of a derived measure over aggregated columns, e.g. `(SUM("revenue") - SUM("cost"))`.
    pub expr: Option<String>,
    /// Name of the derived measure or event this measure stands for.
    pub source: Option<String>,
    /// A level that is not summed over time (`time_aggregation: last`): the latest period's total.
    pub last: bool,
    /// The average of the per-period totals at this grain ("average daily revenue").
    pub over: Option<Grain>,
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
            expr: None,
            source: None,
            last: false,
            over: None,
        }
    }
    /// Whether sums of it over members and periods add up (for shares and driver breakdowns).
    pub fn additive(&self) -> bool {
        matches!(self.agg, Aggregation::Sum | Aggregation::Count)
            && self.expr.is_none()
            && !self.last
            && self.over.is_none()
    }
    /// The aggregate SQL (within one group of the query it is used in).
    pub fn sql(&self) -> String {
        if let Some(e) = &self.expr {
            return e.clone();
        }
        match (&self.column, self.agg) {
            (None, _) => "COUNT(*)".to_string(),
            (Some(c), Aggregation::Sum) if self.last => {
                format!(
                    "SUM(CASE WHEN {T}.\"__t\" = \"__last\".\"__lt\" THEN {T}.{} END)",
                    quote_ident(c),
                    T = TBL
                )
            }
            (Some(c), Aggregation::Sum) => format!("SUM({})", quote_ident(c)),
            (Some(c), Aggregation::Avg) => format!("AVG({})", quote_ident(c)),
            (Some(c), Aggregation::Min) => format!("MIN({})", quote_ident(c)),
            (Some(c), Aggregation::Max) => format!("MAX({})", quote_ident(c)),
            (Some(c), Aggregation::Count) => format!("COUNT({})", quote_ident(c)),
            (Some(c), Aggregation::CountDistinct) => format!("COUNT(DISTINCT {})", quote_ident(c)),
        }
    }
}

/// Alias of the dataset table in generated SQL.
const TBL: &str = "\"__d\"";

/// What a comparison in the question compares.
#[derive(Clone, Debug, PartialEq)]
pub enum Compare {
    /// "online vs retail": one row per member (grouped and filtered).
    Members { column: String, values: Vec<String> },
    /// "2025 vs 2024", "this year vs last year", "Q1 2025 year over year": one row per period.
    Periods(Vec<TimeRange>),
    /// "revenue year over year": a series at this grain with the change from each period to the next.
    OverPeriods(Grain),
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
    pub intents: Vec<AnalysisKind>,
    /// "recently": most recent changes first (change analysis only).
    pub recent: bool,
    /// What the question compares ("vs", "year over year").
    pub compare: Option<Compare>,
    /// Ranking runs over the periods of the grain ("biggest month"), within each group.
    pub rank_periods: bool,
    /// Dimensions that top/bottom N ranks within ("top 3 products in each region").
    pub rank_within: Vec<String>,
    /// "how did revenue change between 2024 and 2025": the range whose two ends are compared (the
    /// analyses read the whole range instead).
    pub range_compared: Option<TimeRange>,
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
                "derived_from": m.source.as_ref().and_then(|n| ds.derived(n)).map(|(d, _)| d.formula.clone()),
                "event": m.source.as_ref().filter(|n| ds.events.iter().any(|e| &e.name == *n)),
                "over_time": if m.last { Some("latest period's level (time_aggregation: last)") } else { None },
                "average_of_period_totals": m.over.map(Grain::as_str),
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
            "limit_within": self.rank_within,
            "horizon": self.horizon.map(|(n, g)| json!({"periods": n, "grain": g.as_str()})),
            "share_threshold": self.share,
            "compare": self.compare.as_ref().map(|c| match c {
                Compare::Members { column, values } => json!({"members_of": column, "values": values}),
                Compare::Periods(ps) => json!({"periods": ps.iter().map(|t| json!({
                    "label": t.phrase, "start": t.start.to_string(), "end": t.end.to_string(),
                })).collect::<Vec<_>>()}),
                Compare::OverPeriods(g) => json!({"period_over_period": g.as_str()}),
            }),
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
        if let Some(Compare::Periods(periods)) = &self.compare {
            return self.periods_sql(ds, periods);
        }
        if let Some(inner) = self.measures.iter().find_map(|m| m.over) {
            return self.nested_sql(ds, inner);
        }
        let grains: Vec<Grain> = self.grain.into_iter().collect();
        let mut sql = self.core_sql(ds, &grains, &self.measures);
        self.finish(&mut sql, self.grain.is_some());
        sql
    }

    /// One row per compared period: the plan without the comparison, once per period.
    fn periods_sql(&self, ds: &Dataset, periods: &[TimeRange]) -> Sql {
        let mut parts = Vec::new();
        let mut params = Vec::new();
        for p in periods {
            let mut one = self.clone();
            one.compare = None;
            one.time = Some(p.clone());
            one.order = None;
            one.limit = None;
            let sub = one.sql(ds);
            parts.push(format!(
                "SELECT ? AS \"period\", ? AS \"period_start\", ? AS \"period_end\", * FROM ({})",
                sub.text
            ));
            params.push(Value::Text(p.phrase.clone()));
            params.push(Value::Text(p.start.to_string()));
            params.push(Value::Text(p.end.to_string()));
            params.extend(sub.params);
        }
        let mut order = vec!["\"period_start\"".to_string()];
        order.extend(self.group_by.iter().map(|g| quote_ident(g)));
        Sql {
            text: format!("{} ORDER BY {}", parts.join(" UNION ALL "), order.join(", ")),
            params,
        }
    }

    /// Averages of per-period totals: the totals per `inner` period, then their average per group.
    fn nested_sql(&self, ds: &Dataset, inner: Grain) -> Sql {
        let mut grains: Vec<Grain> = self.grain.into_iter().collect();
        grains.push(inner);
        let inner_measures: Vec<MeasureSel> = self
            .measures
            .iter()
            .map(|m| MeasureSel {
                over: None,
                ..m.clone()
            })
            .collect();
        let sub = self.core_sql(ds, &grains, &inner_measures);
        let mut keys: Vec<String> = self.grain.iter().map(|g| quote_ident(g.as_str())).collect();
        keys.extend(self.group_by.iter().map(|g| quote_ident(g)));
        let mut select = keys.clone();
        for m in &self.measures {
            select.push(format!(
                "AVG({}) AS {}",
                quote_ident(&m.label),
                quote_ident(&m.label)
            ));
        }
        let mut text = format!("SELECT {} FROM ({})", select.join(", "), sub.text);
        if !keys.is_empty() {
            text.push_str(&format!(" GROUP BY {}", keys.join(", ")));
        }
        let mut sql = Sql {
            text,
            params: sub.params,
        };
        self.finish(&mut sql, self.grain.is_some());
        sql
    }

    /// SELECT time buckets (one per grain), group-by dimensions and measures, grouped.
    fn core_sql(&self, ds: &Dataset, grains: &[Grain], measures: &[MeasureSel]) -> Sql {
        let time_col = ds.time_column().map(|c| c.name.clone());
        let mut select = Vec::new();
        let mut group = Vec::new();
        if let Some(tc) = &time_col {
            for g in grains {
                select.push(format!(
                    "{TBL}.{} AS {}",
                    quote_ident(&g.bucket_column(tc)),
                    quote_ident(g.as_str())
                ));
                group.push(quote_ident(g.as_str()));
            }
        }
        for d in &self.group_by {
            select.push(format!("{TBL}.{} AS {}", quote_ident(d), quote_ident(d)));
            group.push(quote_ident(d));
        }
        for m in measures {
            select.push(format!("{} AS {}", m.sql(), quote_ident(&m.label)));
        }
        let (wh, cond_params) = self.conditions(ds);
        let table = quote_ident(&ds.table_name());
        let wh_text = if wh.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", wh.join(" AND "))
        };
        let mut params = Vec::new();
        let mut text = String::new();
        let needs_last = measures
            .iter()
            .any(|m| m.last && m.expr.is_none() && m.column.is_some());
        let mut from = format!("{table} AS {TBL}");
        if let (true, Some(tc)) = (needs_last, &time_col) {
            // the latest date of each time bucket (of the whole range without a grain): a level's value
            let bucket = grains.last().filter(|g| **g != Grain::Day);
            let (b_sel, b_group, b_join) = match bucket {
                Some(g) => {
                    let col = quote_ident(&g.bucket_column(tc));
                    (
                        format!("{col} AS \"__b\", "),
                        format!(" GROUP BY {col}"),
                        format!("\"__last\".\"__b\" = {TBL}.{col}"),
                    )
                }
                None => (String::new(), String::new(), "1 = 1".to_string()),
            };
            text.push_str(&format!(
                "WITH \"__last\" AS (SELECT {b_sel}MAX({}) AS \"__lt\" FROM {table}{wh_text}{b_group}) ",
                quote_ident(tc)
            ));
            params.extend(cond_params.iter().cloned());
            from = format!(
                "(SELECT *, {} AS \"__t\" FROM {table}) AS {TBL} JOIN \"__last\" ON {b_join}",
                quote_ident(tc)
            );
        }
        // conditions refer to the dataset's own columns; qualify nothing: names are unique
        text.push_str(&format!("SELECT {} FROM {from}{wh_text}", select.join(", ")));
        params.extend(cond_params);
        if !group.is_empty() {
            text.push_str(&format!(" GROUP BY {}", group.join(", ")));
        }
        Sql { text, params }
    }

    /// ORDER BY and LIMIT (top N within each period when a grain and groups are both present).
    fn finish(&self, sql: &mut Sql, has_grain: bool) {
        let mut group: Vec<String> = self.grain.iter().map(|g| quote_ident(g.as_str())).collect();
        group.extend(self.group_by.iter().map(|g| quote_ident(g)));
        // "top 3 products in each region": ranked within each member of the 'each' dimensions
        if let (Some(limit), Some(o)) = (self.limit, &self.order)
            && !self.rank_within.is_empty()
            && self.group_by.len() > self.rank_within.len()
        {
            let mut per: Vec<String> = self.grain.iter().map(|g| quote_ident(g.as_str())).collect();
            per.extend(self.rank_within.iter().map(|d| quote_ident(d)));
            let per = per.join(", ");
            let inner = std::mem::take(&mut sql.text);
            sql.text = format!(
                "SELECT * FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY {per} ORDER BY {} {}) AS \"rank\" FROM ({inner})) WHERE \"rank\" <= {limit} ORDER BY {per}, \"rank\"",
                quote_ident(&o.by),
                if o.desc { "DESC" } else { "ASC" }
            );
            return;
        }
        if let (Some(g), Some(limit), Some(o)) = (self.grain.filter(|_| has_grain), self.limit, &self.order)
            && !self.group_by.is_empty()
        {
            let per = if self.rank_periods {
                self.group_by
                    .iter()
                    .map(|d| quote_ident(d))
                    .collect::<Vec<_>>()
                    .join(", ")
            } else {
                quote_ident(g.as_str())
            };
            let inner = std::mem::take(&mut sql.text);
            sql.text = format!(
                "SELECT * FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY {per} ORDER BY {} {}) AS \"rank\" FROM ({inner})) WHERE \"rank\" <= {limit} ORDER BY {per}, \"rank\"",
                quote_ident(&o.by),
                if o.desc { "DESC" } else { "ASC" }
            );
            return;
        }
        let mut order = Vec::new();
        if let Some(o) = &self.order {
            order.push(format!(
                "{} {}",
                quote_ident(&o.by),
                if o.desc { "DESC" } else { "ASC" }
            ));
        }
        order.extend(group);
        if !order.is_empty() {
            sql.text.push_str(&format!(" ORDER BY {}", order.join(", ")));
        }
        if let Some(l) = self.limit {
            sql.text.push_str(&format!(" LIMIT {l}"));
        }
    }
}
