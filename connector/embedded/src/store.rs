//! SQLite storage: the catalog's files loaded into one shared in-memory database, read through a small
//! pool of connections so that many threads can query at once.

use std::collections::BTreeSet;
use std::io::Read;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::NaiveDate;
use rusqlite::types::Value;
use rusqlite::{Connection, OpenFlags};

use crate::EngineError;
use crate::catalog::{ColumnType, Dataset, Role, Source};
use crate::nlq::time::period_start;
use crate::plan::Grain;

/// Grains whose period start is stored next to the time column (`<time>__<grain>`).
pub const STORED_GRAINS: [Grain; 4] = [Grain::Week, Grain::Month, Grain::Quarter, Grain::Year];

static NEXT_DB: AtomicU64 = AtomicU64::new(0);

/// Sampled statistics for the query planner (full ANALYZE costs about half a second on the demo data;
/// without statistics the planner reads through the time index where a covering index is far cheaper).
const ANALYZE_SQL: &str = "PRAGMA analysis_limit = 1000; ANALYZE;";

/// Quote an SQL identifier.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A shared-cache in-memory database and a pool of connections to it.
pub struct Db {
    uri: String,
    idle: Mutex<Vec<Connection>>,
    /// Keeps the in-memory database alive while the engine exists.
    _anchor: Mutex<Connection>,
}

impl Db {
    pub fn new() -> Result<Db, EngineError> {
        let n = NEXT_DB.fetch_add(1, Ordering::Relaxed);
        let uri = format!(
            "file:lumenore_embedded_{}_{n}?mode=memory&cache=shared",
            std::process::id()
        );
        let anchor = open(&uri)?;
        Ok(Db {
            uri,
            idle: Mutex::new(Vec::new()),
            _anchor: Mutex::new(anchor),
        })
    }

    /// Run `f` with a pooled connection.
    pub fn with<R>(&self, f: impl FnOnce(&Connection) -> Result<R, EngineError>) -> Result<R, EngineError> {
        let conn = {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            idle.pop()
        };
        let conn = match conn {
            Some(c) => c,
            None => open(&self.uri)?,
        };
        let out = f(&conn);
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < 16 {
            idle.push(conn);
        }
        out
    }
}

fn open(uri: &str) -> Result<Connection, EngineError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_URI
        | OpenFlags::SQLITE_OPEN_SHARED_CACHE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(uri, flags)
        .map_err(|e| EngineError::Query(format!("cannot open the in-memory database: {e}")))?;
    // temp_store = MEMORY: sorts and temporary tables stay in memory, so no query ever spills data into a
    // temp file (the connector promises to write nothing to disk, and runs on a read-only root filesystem).
    conn.execute_batch("PRAGMA read_uncommitted = 1; PRAGMA temp_store = MEMORY;")
        .map_err(|e| EngineError::Query(format!("cannot configure the in-memory database: {e}")))?;
    Ok(conn)
}

/// What loading learned about a dataset.
pub struct Loaded {
    pub rows: usize,
    pub min_date: Option<NaiveDate>,
    pub max_date: Option<NaiveDate>,
    /// Every time value is the first day of a month (monthly data).
    pub monthly: bool,
    /// Distinct values of each dimension (same order as the dataset's columns; empty for others).
    pub values: Vec<Vec<String>>,
}

/// Load one dataset's file into table `ds.table_name()`.
pub fn load(db: &Db, ds: &Dataset, source: &Source) -> Result<Loaded, EngineError> {
    let raw = source.read(&ds.file)?;
    let bytes = if ds.file.ends_with(".gz") {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| {
                EngineError::Catalog(format!(
                    "data file {} (dataset {}): not valid gzip: {e}",
                    ds.file, ds.id
                ))
            })?;
        out
    } else if ds.file.ends_with(".csv") {
        raw
    } else {
        return Err(EngineError::Catalog(format!(
            "dataset {}: field `file` is {:?}; supported formats are .csv and .csv.gz",
            ds.id, ds.file
        )));
    };
    let ferr =
        |msg: String| EngineError::Catalog(format!("data file {} (dataset {}): {msg}", ds.file, ds.id));
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(&bytes[..]);
    let header = rdr
        .headers()
        .map_err(|e| ferr(format!("cannot read the header: {e}")))?
        .clone();
    let mut idx = Vec::with_capacity(ds.columns.len());
    for c in &ds.columns {
        let i = header.iter().position(|h| h.trim() == c.name).ok_or_else(|| {
            ferr(format!(
                "column `{}` named in the catalog is not in the header",
                c.name
            ))
        })?;
        idx.push(i);
    }
    let table = quote_ident(&ds.table_name());
    let time_col = ds.time_column().map(|c| c.name.clone());
    let mut defs: Vec<String> = ds
        .columns
        .iter()
        .map(|c| {
            let ty = match c.column_type() {
                ColumnType::Integer => "INTEGER",
                ColumnType::Number => "REAL",
                ColumnType::Text | ColumnType::Date => "TEXT",
            };
            format!("{} {ty}", quote_ident(&c.name))
        })
        .collect();
    if let Some(tc) = &time_col {
        for g in STORED_GRAINS {
            if ds.column(&g.bucket_column(tc)).is_some() {
                return Err(EngineError::Catalog(format!(
                    "dataset {}: column name `{}` is reserved for the {} of time column `{tc}`",
                    ds.id,
                    g.bucket_column(tc),
                    g.as_str()
                )));
            }
            defs.push(format!("{} TEXT", quote_ident(&g.bucket_column(tc))));
        }
    }
    let placeholders = vec!["?"; defs.len()].join(", ");
    let mut min_date: Option<NaiveDate> = None;
    let mut max_date: Option<NaiveDate> = None;
    let mut rows = 0usize;
    let mut monthly = true;
    db.with(|conn| {
        let qerr = |e: rusqlite::Error| EngineError::Query(format!("loading dataset {}: {e}", ds.id));
        conn.execute_batch(&format!(
            "DROP TABLE IF EXISTS {table}; CREATE TABLE {table} ({});",
            defs.join(", ")
        ))
        .map_err(qerr)?;
        let tx = conn.unchecked_transaction().map_err(qerr)?;
        {
            let mut ins = tx
                .prepare(&format!("INSERT INTO {table} VALUES ({placeholders})"))
                .map_err(qerr)?;
            let mut rec = csv::StringRecord::new();
            let mut vals: Vec<Value> = Vec::with_capacity(ds.columns.len());
            loop {
                let more = rdr
                    .read_record(&mut rec)
                    .map_err(|e| ferr(format!("row {}: {e}", rows + 2)))?;
                if !more {
                    break;
                }
                rows += 1;
                vals.clear();
                let mut time_value: Option<NaiveDate> = None;
                for (c, &i) in ds.columns.iter().zip(&idx) {
                    let cell = rec.get(i).unwrap_or("").trim();
                    if cell.is_empty() {
                        vals.push(Value::Null);
                        continue;
                    }
                    let bad = |what: &str| {
                        ferr(format!(
                            "row {}, column `{}`: {cell:?} is not {what}",
                            rows + 1,
                            c.name
                        ))
                    };
                    vals.push(match c.column_type() {
                        ColumnType::Text => Value::Text(cell.to_string()),
                        ColumnType::Integer => match cell.parse::<i64>() {
                            Ok(v) => Value::Integer(v),
                            Err(_) => match cell.parse::<f64>() {
                                Ok(v) if v.fract() == 0.0 => Value::Integer(v as i64),
                                _ => return Err(bad("an integer")),
                            },
                        },
                        ColumnType::Number => Value::Real(cell.parse::<f64>().map_err(|_| bad("a number"))?),
                        ColumnType::Date => {
                            let d = NaiveDate::parse_from_str(cell, c.date_format())
                                .map_err(|_| bad(&format!("a date in format {}", c.date_format())))?;
                            if c.role == Role::Time {
                                monthly &= chrono::Datelike::day(&d) == 1;
                                min_date = Some(min_date.map_or(d, |m| m.min(d)));
                                max_date = Some(max_date.map_or(d, |m| m.max(d)));
                            }
                            if c.role == Role::Time {
                                time_value = Some(d);
                            }
                            Value::Text(d.format("%Y-%m-%d").to_string())
                        }
                    });
                }
                if time_col.is_some() {
                    for g in STORED_GRAINS {
                        vals.push(match time_value {
                            Some(d) => Value::Text(period_start(d, g).format("%Y-%m-%d").to_string()),
                            None => Value::Null,
                        });
                    }
                }
                ins.execute(rusqlite::params_from_iter(vals.iter()))
                    .map_err(qerr)?;
            }
        }
        tx.commit().map_err(qerr)?;
        if let Some(t) = ds.time_column() {
            conn.execute_batch(&format!(
                "CREATE INDEX {} ON {table} ({})",
                quote_ident(&format!("{}_time", ds.table_name())),
                quote_ident(&t.name)
            ))
            .map_err(qerr)?;
        }
        Ok(())
    })?;
    if rows == 0 {
        return Err(ferr("no data rows".into()));
    }
    // Covering indexes (dimension, month, time, measures...) let GROUP BY <dimension> scan in order without a
    // sort; only for dimensions with few members (not keys). ANALYZE lets the planner choose.
    let measures: Vec<String> = ds.measures().map(|c| quote_ident(&c.name)).collect();
    let mut ddl = String::new();
    for c in ds.dimensions() {
        if ds.key.as_deref() == Some(c.name.as_str()) {
            continue;
        }
        let mut cols = vec![quote_ident(&c.name)];
        if let Some(tc) = &time_col {
            // (dimension, month, time): GROUP BY month, dimension also scans in order
            cols.push(quote_ident(&Grain::Month.bucket_column(tc)));
            cols.push(quote_ident(tc));
        }
        cols.extend(measures.iter().cloned());
        ddl.push_str(&format!(
            "CREATE INDEX {} ON {table} ({});\n",
            quote_ident(&format!("{}_{}_cover", ds.table_name(), c.name)),
            cols.join(", ")
        ));
    }
    // the same for the week and month columns, so weekly and monthly series need no sort
    if let Some(tc) = &time_col {
        for g in [Grain::Week, Grain::Month] {
            let mut cols = vec![quote_ident(&g.bucket_column(tc)), quote_ident(tc)];
            cols.extend(measures.iter().cloned());
            ddl.push_str(&format!(
                "CREATE INDEX {} ON {table} ({});\n",
                quote_ident(&format!("{}_{}_cover", ds.table_name(), g.as_str())),
                cols.join(", ")
            ));
        }
    }
    ddl.push_str(ANALYZE_SQL);
    db.with(|conn| {
        conn.execute_batch(&ddl)
            .map_err(|e| EngineError::Query(format!("indexing dataset {}: {e}", ds.id)))
    })?;
    let mut values = Vec::with_capacity(ds.columns.len());
    for c in &ds.columns {
        if c.role != Role::Dimension {
            values.push(Vec::new());
            continue;
        }
        let sql = format!(
            "SELECT DISTINCT {} FROM {table} WHERE {} IS NOT NULL",
            quote_ident(&c.name),
            quote_ident(&c.name)
        );
        let set: BTreeSet<String> = db.with(|conn| {
            let mut st = conn
                .prepare(&sql)
                .map_err(|e| EngineError::Query(e.to_string()))?;
            let it = st
                .query_map([], |r| r.get::<_, Value>(0))
                .map_err(|e| EngineError::Query(e.to_string()))?;
            let mut set = BTreeSet::new();
            for v in it {
                match v.map_err(|e| EngineError::Query(e.to_string()))? {
                    Value::Text(s) => {
                        set.insert(s);
                    }
                    Value::Integer(i) => {
                        set.insert(i.to_string());
                    }
                    Value::Real(f) => {
                        set.insert(f.to_string());
                    }
                    _ => {}
                }
            }
            Ok(set)
        })?;
        for canon in c.synonyms.keys() {
            if !set.contains(canon) {
                return Err(EngineError::Catalog(format!(
                    "dataset {}: column `{}`: field `synonyms` names value {canon:?}, which is not in the data",
                    ds.id, c.name
                )));
            }
        }
        values.push(set.into_iter().collect());
    }
    Ok(Loaded {
        rows,
        min_date,
        max_date,
        monthly: monthly && min_date.is_some(),
        values,
    })
}
