//! Embedded analytics engine for `lumenore-connector --backend embedded`.
//!
//! A catalog (YAML) describes datasets (CSV files) and their columns. The files are loaded into an
//! in-memory SQLite database; questions are read by a rule-based parser against the catalog vocabulary
//! into a [`plan::Plan`], turned into SQL with bound parameters, and run. The analysis tools add
//! statistics on top (augurs for forecasts and change points, statrs for distributions).
//!
//! The library never prints or logs anything: questions and results only go back to the caller.

pub mod analytics;
pub mod catalog;
pub mod demo;
pub mod nlq;
pub mod plan;
pub mod stats;
pub mod store;
pub mod timeexpr;

use std::path::Path;

use chrono::NaiveDate;
use rusqlite::types::Value;
use serde_json::{Map, Value as Json, json};

use crate::catalog::{Catalog, Dataset, Role, Source};
use crate::nlq::{Ctx, Vocab};
use crate::plan::{Plan, Sql};
use crate::store::{Db, Loaded};

/// The analysis tools.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AnalysisKind {
    Trend,
    Prediction,
    Outlier,
    Correlation,
    Change,
    Pareto,
}

impl AnalysisKind {
    pub const ALL: [AnalysisKind; 6] = [
        AnalysisKind::Trend,
        AnalysisKind::Prediction,
        AnalysisKind::Outlier,
        AnalysisKind::Correlation,
        AnalysisKind::Change,
        AnalysisKind::Pareto,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            AnalysisKind::Trend => "trend",
            AnalysisKind::Prediction => "prediction",
            AnalysisKind::Outlier => "outlier",
            AnalysisKind::Correlation => "correlation",
            AnalysisKind::Change => "change",
            AnalysisKind::Pareto => "pareto",
        }
    }
    /// The MCP tool answering this kind.
    pub fn tool(self) -> &'static str {
        match self {
            AnalysisKind::Trend => "get_trend_data",
            AnalysisKind::Prediction => "get_prediction_data",
            AnalysisKind::Outlier => "get_outlier_data",
            AnalysisKind::Correlation => "get_correlation_data",
            AnalysisKind::Change => "get_change_data",
            AnalysisKind::Pareto => "get_pareto_data",
        }
    }
}

/// Engine errors. Messages go back to the caller only; they never contain data rows.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The schema id is not in the catalog.
    #[error("unknown schemaId; known schema ids: {known}")]
    UnknownSchema { schema_id: i64, known: String },
    /// The question could not be read.
    #[error("{message}")]
    NotUnderstood { part: String, message: String },
    /// A catalog or data file problem at load time.
    #[error("catalog error: {0}")]
    Catalog(String),
    /// The engine failed.
    #[error("query failed: {0}")]
    Query(String),
}

impl EngineError {
    /// Whether the caller can fix it (a tool error rather than a server error).
    pub fn is_caller_error(&self) -> bool {
        matches!(
            self,
            EngineError::UnknownSchema { .. } | EngineError::NotUnderstood { .. }
        )
    }
}

struct DatasetRt {
    vocab: Vocab,
    loaded: Loaded,
}

/// The analytics engine: catalog, loaded data and query machinery. `Send + Sync`; share it in an `Arc`.
pub struct Engine {
    catalog: Catalog,
    rt: Vec<DatasetRt>,
    db: Db,
}

/// A query result.
pub(crate) struct Table {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Value>>,
}

impl Table {
    pub fn col(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c == name)
    }
}

pub(crate) fn value_f64(v: &Value) -> Option<f64> {
    match v {
        Value::Integer(i) => Some(*i as f64),
        Value::Real(f) => Some(*f),
        _ => None,
    }
}

pub(crate) fn value_str(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::Integer(i) => i.to_string(),
        Value::Real(f) => f.to_string(),
        Value::Text(s) => s.clone(),
        Value::Blob(_) => "<blob>".into(),
    }
}

/// Round for display: 4 decimals.
pub(crate) fn round4(x: f64) -> f64 {
    if x.is_finite() {
        (x * 10_000.0).round() / 10_000.0
    } else {
        x
    }
}

pub(crate) fn value_json(v: &Value) -> Json {
    match v {
        Value::Null => Json::Null,
        Value::Integer(i) => json!(i),
        Value::Real(f) => json!(round4(*f)),
        Value::Text(s) => json!(s),
        Value::Blob(_) => Json::Null,
    }
}

impl Engine {
    /// The bundled demo catalog and data (sales 35403, customers 35404, inventory 35405).
    pub fn demo() -> Result<Engine, EngineError> {
        let catalog = catalog::parse(demo::CATALOG_YAML, "bundled demo catalog.yaml")?;
        Engine::load(catalog, &Source::Embedded(demo::FILES))
    }

    /// A catalog YAML file, or a directory containing `catalog.yaml`. Data files are relative to it.
    pub fn from_path(path: &Path) -> Result<Engine, EngineError> {
        let (file, dir) = catalog::locate(path)?;
        let yaml = std::fs::read_to_string(&file)
            .map_err(|e| EngineError::Catalog(format!("cannot read catalog file {}: {e}", file.display())))?;
        let catalog = catalog::parse(&yaml, &file.display().to_string())?;
        Engine::load(catalog, &Source::Dir(dir))
    }

    fn load(catalog: Catalog, source: &Source) -> Result<Engine, EngineError> {
        let db = Db::new()?;
        let mut rt = Vec::with_capacity(catalog.datasets.len());
        for ds in &catalog.datasets {
            let loaded = store::load(&db, ds, source)?;
            let vocab = Vocab::build(ds, &loaded.values);
            rt.push(DatasetRt { vocab, loaded });
        }
        Ok(Engine { catalog, rt, db })
    }

    fn dataset(&self, schema_id: i64) -> Result<(&Dataset, &DatasetRt), EngineError> {
        self.catalog
            .datasets
            .iter()
            .zip(&self.rt)
            .find(|(d, _)| d.id == schema_id)
            .ok_or_else(|| EngineError::UnknownSchema {
                schema_id,
                known: self
                    .catalog
                    .datasets
                    .iter()
                    .map(|d| format!("{} ({})", d.id, d.name))
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    /// Datasets, in the shape of Lumenore's `get-domain`.
    /// SQLite's temp_store setting on the engine's connections (2 = memory): a privacy check, since no
    /// query may spill data into temp files.
    pub fn temp_store_mode(&self) -> Result<i64, EngineError> {
        self.db.with(|conn| {
            conn.query_row("PRAGMA temp_store", [], |row| row.get(0))
                .map_err(|e| EngineError::Query(e.to_string()))
        })
    }

    pub fn dataset_metadata(&self) -> Json {
        let datasets: Vec<Json> = self
            .catalog
            .datasets
            .iter()
            .zip(&self.rt)
            .map(|(ds, rt)| {
                json!({
                    "schemaId": ds.id,
                    "schemaName": ds.name,
                    "description": ds.description,
                    "rowCount": rt.loaded.rows,
                    "timeColumn": ds.time_column().map(|c| c.name.clone()),
                    "dataFrom": rt.loaded.min_date.map(|d| d.to_string()),
                    "dataTo": rt.loaded.max_date.map(|d| d.to_string()),
                    "measures": ds.measures().map(|c| c.name.clone()).collect::<Vec<_>>(),
                    "dimensions": ds.dimensions().map(|c| c.name.clone()).collect::<Vec<_>>(),
                })
            })
            .collect();
        json!({
            "domains": [{
                "domainId": self.catalog.domain_id,
                "domainName": self.catalog.domain_name,
                "datasets": datasets,
            }]
        })
    }

    /// Columns of one dataset with role, aliases, description, unit, in the shape of Lumenore's `metadata/get`.
    pub fn metadata_info(&self, schema_id: i64) -> Result<Json, EngineError> {
        let (ds, rt) = self.dataset(schema_id)?;
        let columns: Vec<Json> = ds
            .columns
            .iter()
            .enumerate()
            .map(|(ci, c)| {
                let mut o = Map::new();
                o.insert("columnName".into(), json!(c.name));
                o.insert("displayName".into(), json!(c.display()));
                o.insert("role".into(), json!(c.role.as_str()));
                o.insert("dataType".into(), json!(c.column_type().as_str()));
                o.insert("description".into(), json!(c.description));
                o.insert("aliases".into(), json!(c.aliases));
                o.insert("unit".into(), json!(c.unit));
                match c.role {
                    Role::Measure => {
                        o.insert(
                            "defaultAggregation".into(),
                            json!(c.default_aggregation().as_str()),
                        );
                    }
                    Role::Time => {
                        o.insert("dateFormat".into(), json!(c.date_format()));
                        o.insert("minDate".into(), json!(rt.loaded.min_date.map(|d| d.to_string())));
                        o.insert("maxDate".into(), json!(rt.loaded.max_date.map(|d| d.to_string())));
                    }
                    Role::Dimension => {
                        let vals = &rt.loaded.values[ci];
                        o.insert("distinctValues".into(), json!(vals.len()));
                        let shown: Vec<&String> = vals.iter().take(50).collect();
                        o.insert("values".into(), json!(shown));
                        if vals.len() > 50 {
                            o.insert("valuesTruncated".into(), json!(true));
                        }
                        if !c.synonyms.is_empty() {
                            o.insert("valueSynonyms".into(), json!(c.synonyms));
                        }
                    }
                }
                Json::Object(o)
            })
            .collect();
        Ok(json!({
            "domainId": self.catalog.domain_id,
            "schemaId": ds.id,
            "schemaName": ds.name,
            "description": ds.description,
            "rowCount": rt.loaded.rows,
            "key": ds.key,
            "columnGroups": ds.column_groups.iter().map(|g| json!({"name": g.name, "aliases": g.aliases, "columns": g.columns})).collect::<Vec<_>>(),
            "columns": columns,
        }))
    }

    /// Answer a question with data.
    pub fn nlq_to_data(&self, query: &str, schema_id: i64) -> Result<Json, EngineError> {
        let (ds, rt) = self.dataset(schema_id)?;
        let mut plan = self.parse(ds, rt, query)?;
        if let Some(s) = plan.share {
            return Err(self.not_understood(
                ds,
                format!("{s}%"),
                format!("'{s}%' (a share of the total) is answered by get_pareto_data, not nlq_to_data"),
            ));
        }
        if plan.horizon.is_some() {
            return Err(self.not_understood(
                ds,
                "next",
                "a future period ('next ...') is answered by get_prediction_data, not nlq_to_data"
                    .to_string(),
            ));
        }
        if plan.intents.contains(&"recent") {
            return Err(self.not_understood(
                ds,
                "recently",
                "'recently' is vague for data: give a time range, e.g. 'past 3 months'".to_string(),
            ));
        }
        for intent in plan.intents.clone() {
            if let Some(k) = AnalysisKind::ALL.iter().find(|k| k.as_str() == intent) {
                plan.notes.push(format!(
                    "the question reads like a {intent} question; this is the plain data, {} adds the {intent} analysis",
                    k.tool()
                ));
            }
        }
        if plan.measures.is_empty() {
            return Err(self.no_measure(ds));
        }
        let sql = plan.sql(ds);
        let table = self.run(&sql)?;
        Ok(self.answer(ds, rt, &plan, &sql, &table, None))
    }

    /// Run one analysis tool.
    pub fn analyze(&self, kind: AnalysisKind, query: &str, schema_id: i64) -> Result<Json, EngineError> {
        let (ds, rt) = self.dataset(schema_id)?;
        let plan = self.parse(ds, rt, query)?;
        analytics::run(self, kind, ds, rt_info(rt), plan)
    }

    fn parse(&self, ds: &Dataset, rt: &DatasetRt, query: &str) -> Result<Plan, EngineError> {
        // A trace span (exported by the connector when tracing is on); no field: the question stays out.
        let _span =
            tracing::info_span!(target: "lumenore_embedded::otel", "engine.plan", otel.name = "engine plan")
                .entered();
        let ctx = Ctx {
            ds,
            vocab: &rt.vocab,
            latest: rt.loaded.max_date,
            earliest: rt.loaded.min_date,
        };
        nlq::parse(query, &ctx).map_err(|r| self.not_understood(ds, r.part, r.reason))
    }

    pub(crate) fn not_understood(
        &self,
        ds: &Dataset,
        part: impl Into<String>,
        reason: String,
    ) -> EngineError {
        let part = part.into();
        EngineError::NotUnderstood {
            message: format!("{reason}. {}", vocabulary_hint(ds)),
            part,
        }
    }

    pub(crate) fn no_measure(&self, ds: &Dataset) -> EngineError {
        self.not_understood(
            ds,
            "",
            "the question names no measure: say what to measure, e.g. 'total <measure>' or 'how many <dimension>'"
                .to_string(),
        )
    }

    pub(crate) fn run(&self, sql: &Sql) -> Result<Table, EngineError> {
        let _span = tracing::info_span!(target: "lumenore_embedded::otel", "engine.query", otel.name = "engine query").entered();
        self.db.with(|conn| {
            let qerr = |e: rusqlite::Error| EngineError::Query(e.to_string());
            let mut st = conn.prepare_cached(&sql.text).map_err(qerr)?;
            let columns: Vec<String> = st.column_names().map(|s| s.to_string()).collect();
            let n = columns.len();
            let mut rows = Vec::new();
            let mut it = st
                .query(rusqlite::params_from_iter(sql.params.iter()))
                .map_err(qerr)?;
            while let Some(r) = it.next().map_err(qerr)? {
                let mut row = Vec::with_capacity(n);
                for i in 0..n {
                    row.push(r.get::<_, Value>(i).map_err(qerr)?);
                }
                rows.push(row);
            }
            Ok(Table { columns, rows })
        })
    }

    /// The common answer: plan, SQL, columns, rows, notes (+ analysis).
    pub(crate) fn answer(
        &self,
        ds: &Dataset,
        rt: &DatasetRt,
        plan: &Plan,
        sql: &Sql,
        table: &Table,
        analysis: Option<(AnalysisKind, Json)>,
    ) -> Json {
        let info = rt_info(rt);
        let mut notes = plan.notes.clone();
        if let Some(t) = &plan.time {
            if t.relative
                && let Some(l) = info.latest
            {
                notes.insert(
                    0,
                    format!("relative dates resolved against the dataset's latest date {l}"),
                );
            }
            if let (Some(lo), Some(hi)) = (info.earliest, info.latest)
                && (t.end < lo || t.start > hi)
            {
                notes.push(format!(
                    "the time range {}..{} is outside the data ({lo}..{hi})",
                    t.start, t.end
                ));
            }
        }
        if table.rows.is_empty() {
            notes.push("no rows match the question".into());
        }
        let columns: Vec<Json> = table
            .columns
            .iter()
            .map(|c| {
                let m = plan.measures.iter().find(|m| &m.label == c);
                let role = if m.is_some() {
                    "measure"
                } else if plan.grain.is_some_and(|g| g.as_str() == c) {
                    "time"
                } else if plan.group_by.iter().any(|g| g == c) {
                    "dimension"
                } else {
                    // computed by the analysis (rank, shares, scores, correlation pairs...)
                    "derived"
                };
                let unit = m
                    .and_then(|m| m.column.as_deref())
                    .and_then(|c| ds.column(c))
                    .filter(|_| {
                        !matches!(
                            m.map(|m| m.agg),
                            Some(catalog::Aggregation::CountDistinct | catalog::Aggregation::Count)
                        )
                    })
                    .and_then(|c| c.unit.clone());
                json!({"name": c, "role": role, "unit": unit})
            })
            .collect();
        let rows: Vec<Json> = table
            .rows
            .iter()
            .map(|r| {
                let mut o = Map::new();
                for (c, v) in table.columns.iter().zip(r) {
                    o.insert(c.clone(), value_json(v));
                }
                Json::Object(o)
            })
            .collect();
        let mut out = Map::new();
        out.insert("schemaId".into(), json!(ds.id));
        out.insert("dataset".into(), json!(ds.name));
        out.insert("plan".into(), plan.to_json(ds));
        out.insert("sql".into(), json!(sql.text));
        out.insert(
            "parameters".into(),
            Json::Array(sql.params.iter().map(value_json).collect()),
        );
        out.insert("columns".into(), Json::Array(columns));
        out.insert("rowCount".into(), json!(rows.len()));
        out.insert("rows".into(), Json::Array(rows));
        if let Some((kind, a)) = analysis {
            out.insert("analysis".into(), json!({"kind": kind.as_str()}));
            if let (Some(Json::Object(dst)), Json::Object(src)) = (out.get_mut("analysis"), a) {
                dst.extend(src);
            }
        }
        out.insert("notes".into(), json!(notes));
        Json::Object(out)
    }
}

/// Loaded facts analytics needs.
#[derive(Clone, Copy)]
pub(crate) struct RtInfo {
    pub latest: Option<NaiveDate>,
    pub earliest: Option<NaiveDate>,
    pub monthly: bool,
}

fn rt_info(rt: &DatasetRt) -> RtInfo {
    RtInfo {
        latest: rt.loaded.max_date,
        earliest: rt.loaded.min_date,
        monthly: rt.loaded.monthly,
    }
}

impl Engine {
    pub(crate) fn rt(&self, ds: &Dataset) -> &DatasetRt {
        let i = self
            .catalog
            .datasets
            .iter()
            .position(|d| d.id == ds.id)
            .expect("dataset of this engine");
        &self.rt[i]
    }
    pub(crate) fn values(&self, ds: &Dataset, column: &str) -> &[String] {
        let ci = ds
            .columns
            .iter()
            .position(|c| c.name == column)
            .expect("column of this dataset");
        &self.rt(ds).loaded.values[ci]
    }
}

/// "Measures: ...; dimensions: ...; time: ..." for refusals.
fn vocabulary_hint(ds: &Dataset) -> String {
    let list = |role: Role| {
        ds.columns
            .iter()
            .filter(|c| c.role == role)
            .map(|c| {
                if c.aliases.is_empty() {
                    c.name.clone()
                } else {
                    format!(
                        "{} (also: {})",
                        c.name,
                        c.aliases.iter().take(4).cloned().collect::<Vec<_>>().join(", ")
                    )
                }
            })
            .collect::<Vec<_>>()
            .join("; ")
    };
    let mut s = format!(
        "Dataset {} has measures: {}. Dimensions: {}.",
        ds.name,
        list(Role::Measure),
        list(Role::Dimension)
    );
    if let Some(t) = ds.time_column() {
        s.push_str(&format!(
            " Time column: {} (time ranges like 'last month', 'Q4 2024', 'past 3 months', 'between 2025-01-01 and 2025-03-31'; grains daily/weekly/monthly/quarterly/yearly).",
            t.name
        ));
    }
    s
}
