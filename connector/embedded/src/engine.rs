//! The engine: catalog, loaded data, questions and analyses.

use std::path::Path;

use chrono::NaiveDate;
use rusqlite::types::Value;
use serde_json::{Map, Value as Json, json};

use crate::catalog::{self, Catalog, Dataset, Role, Source};
use crate::intent::{AnalysisKind, Tool, route};
use crate::nlq::{self, Ctx, Vocab};
use crate::plan::{Plan, Sql};
use crate::store::{self, Db, Loaded};
use crate::table::{Table, value_json};
use crate::{EngineError, analytics, compare, demo};

pub(crate) struct DatasetRt {
    vocab: Vocab,
    loaded: Loaded,
}

/// The analytics engine: catalog, loaded data and query machinery. `Send + Sync`; share it in an `Arc`.
pub struct Engine {
    catalog: Catalog,
    rt: Vec<DatasetRt>,
    db: Db,
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
        let plan = self.plan(ds, rt, query, Tool::Data)?;
        if plan.measures.is_empty() {
            return Err(self.no_measure(ds));
        }
        let sql = plan.sql(ds);
        let mut table = self.run(&sql)?;
        let mut plan = plan;
        if let Some(note) = compare::add_changes(&mut table, &plan) {
            plan.notes.push(note);
        }
        Ok(self.answer(ds, rt, &plan, &sql, &table, None))
    }

    /// Run one analysis tool.
    pub fn analyze(&self, kind: AnalysisKind, query: &str, schema_id: i64) -> Result<Json, EngineError> {
        let (ds, rt) = self.dataset(schema_id)?;
        let plan = self.plan(ds, rt, query, Tool::Analysis(kind))?;
        analytics::run(self, kind, ds, rt_info(rt), plan)
    }

    /// Read a question and check it fits the tool (the one routing step of every tool).
    fn plan(&self, ds: &Dataset, rt: &DatasetRt, query: &str, tool: Tool) -> Result<Plan, EngineError> {
        let ctx = Ctx {
            ds,
            vocab: &rt.vocab,
            latest: rt.loaded.max_date,
            earliest: rt.loaded.min_date,
            monthly: rt.loaded.monthly,
        };
        // A trace span (exported by the connector when tracing is on); no attribute: the question stays out.
        let _plan_span = crate::otel::stage("engine plan");
        let mut plan = nlq::parse(query, &ctx).map_err(|r| self.not_understood(ds, r.part, r.reason))?;
        route(&mut plan, tool).map_err(|(part, reason)| self.not_understood(ds, part, reason))?;
        // "how has revenue changed over time" as data: the series, not one total
        if tool == Tool::Data
            && plan.grain.is_none()
            && plan.compare.is_none()
            && ds.time_column().is_some()
            && plan
                .intents
                .iter()
                .any(|k| matches!(k, AnalysisKind::Trend | AnalysisKind::Change))
        {
            plan.grain = Some(crate::plan::Grain::Month);
            plan.order = None;
            plan.notes
                .push("a trend or change asked as data: one row per month".into());
        }
        Ok(plan)
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
        // A trace span (exported by the connector when tracing is on); no attribute: the query stays out.
        let _span = crate::otel::stage("engine query");
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
    if !ds.derived_measures.is_empty() {
        s.push_str(&format!(
            " Derived measures: {}.",
            ds.derived_measures
                .iter()
                .map(|d| format!("{} = {}", d.name, d.formula))
                .collect::<Vec<_>>()
                .join("; ")
        ));
    }
    if !ds.events.is_empty() {
        s.push_str(&format!(
            " Events (counted over {}): {}.",
            ds.events[0].time_column,
            ds.events
                .iter()
                .map(|e| e.name.clone())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if let Some(t) = ds.time_column() {
        s.push_str(&format!(
            " Time column: {} (time ranges like 'last month', 'Q4 2024', 'past 3 months', 'between 2025-01-01 and 2025-03-31'; grains daily/weekly/monthly/quarterly/yearly).",
            t.name
        ));
    }
    s
}
