//! Catalog: the YAML description of the datasets the engine serves.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::EngineError;

/// Role of a column in questions.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// A number that is aggregated (sum, average, ...).
    Measure,
    /// A category that questions group by or filter on.
    Dimension,
    /// The date column that time ranges and grains apply to.
    Time,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Measure => "measure",
            Role::Dimension => "dimension",
            Role::Time => "time",
        }
    }
}

/// Aggregation applied to a measure.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Aggregation {
    Sum,
    Avg,
    Min,
    Max,
    Count,
    CountDistinct,
}

impl Aggregation {
    pub fn as_str(self) -> &'static str {
        match self {
            Aggregation::Sum => "sum",
            Aggregation::Avg => "avg",
            Aggregation::Min => "min",
            Aggregation::Max => "max",
            Aggregation::Count => "count",
            Aggregation::CountDistinct => "count_distinct",
        }
    }
    pub fn label_prefix(self) -> &'static str {
        match self {
            Aggregation::Sum => "total",
            Aggregation::Avg => "average",
            Aggregation::Min => "min",
            Aggregation::Max => "max",
            Aggregation::Count => "count",
            Aggregation::CountDistinct => "distinct",
        }
    }
}

/// How a measure's per-period totals combine over time.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum TimeAggregation {
    /// Flows (revenue, units): totals add up over time.
    #[default]
    Sum,
    /// Rates and headcounts: a longer range is the average of the per-period totals.
    Average,
    /// Stock levels: a longer range is the level of its latest period (never summed over time).
    Last,
}

impl TimeAggregation {
    pub fn as_str(self) -> &'static str {
        match self {
            TimeAggregation::Sum => "sum",
            TimeAggregation::Average => "average",
            TimeAggregation::Last => "last",
        }
    }
}

/// A measure computed from other measures, e.g. profit = revenue - cost.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DerivedMeasure {
    pub name: String,
    /// `a - b`, `a + b`, `a * b` or `a / b`, where a and b are measure columns or earlier derived measures.
    pub formula: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub aliases: Vec<String>,
    #[serde(default)]
    pub unit: Option<String>,
}

/// Rows of the dataset counted as events over its time column ("signups by month").
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Event {
    pub name: String,
    /// The time column the events happen at (must be the dataset's time column).
    pub time_column: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub aliases: Vec<String>,
}

/// The whole catalog file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Catalog {
    /// Domain the datasets belong to (Lumenore groups datasets in domains).
    #[serde(default = "default_domain_id")]
    pub domain_id: i64,
    #[serde(default = "default_domain_name")]
    pub domain_name: String,
    pub datasets: Vec<Dataset>,
}

fn default_domain_id() -> i64 {
    1
}
fn default_domain_name() -> String {
    "Embedded".to_string()
}

/// One dataset (one table).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dataset {
    /// Schema id, as the tools' `schemaId`.
    pub id: i64,
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Data file (CSV, optionally gzip-compressed as `.csv.gz`), relative to the catalog file.
    pub file: String,
    /// Words that name the dataset itself (e.g. "sales"); they carry no meaning in a question.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Words meaning "rows of this dataset" (e.g. "transactions"): "how many transactions" counts rows.
    #[serde(default)]
    pub row_nouns: Vec<String>,
    /// Column identifying one entity per row (e.g. customer id), used by correlation/outliers by default.
    #[serde(default)]
    pub key: Option<String>,
    /// Named sets of dimensions, e.g. "demographics" = [gender, age_group].
    #[serde(default)]
    pub column_groups: Vec<ColumnGroup>,
    /// The money measure that business verbs (sell, earn, make, spend, "how much") stand for.
    #[serde(default)]
    pub sales_measure: Option<String>,
    /// The quantity measure that "how many ... sold" stands for.
    #[serde(default)]
    pub quantity_measure: Option<String>,
    /// Measures computed from other measures (profit = revenue - cost).
    #[serde(default)]
    pub derived_measures: Vec<DerivedMeasure>,
    /// Row counts over the time column with their own names ("signups").
    #[serde(default)]
    pub events: Vec<Event>,
    pub columns: Vec<Column>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnGroup {
    pub name: String,
    #[serde(default)]
    pub aliases: Vec<String>,
    pub columns: Vec<String>,
}

/// Column types.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ColumnType {
    Text,
    Integer,
    Number,
    Date,
}

impl ColumnType {
    pub fn as_str(self) -> &'static str {
        match self {
            ColumnType::Text => "text",
            ColumnType::Integer => "integer",
            ColumnType::Number => "number",
            ColumnType::Date => "date",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Column {
    /// Column name in the CSV header and in SQL.
    pub name: String,
    pub role: Role,
    /// Data type; defaults: measure → number, dimension → text, time → date.
    #[serde(default, rename = "type")]
    pub ty: Option<ColumnType>,
    /// Display name.
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default)]
    pub description: String,
    /// Other words for this column in questions.
    #[serde(default)]
    pub aliases: Vec<String>,
    #[serde(default)]
    pub unit: Option<String>,
    /// For time columns: chrono format of the dates in the file (default `%Y-%m-%d`).
    #[serde(default)]
    pub date_format: Option<String>,
    /// For measures: aggregation used when the question names none (default sum).
    #[serde(default)]
    pub aggregation: Option<Aggregation>,
    /// For measures: how per-period totals combine over time (default sum; `last` for stock levels).
    #[serde(default)]
    pub time_aggregation: Option<TimeAggregation>,
    /// For dimensions: other words for member values, e.g. `Online: [web, e-commerce]`.
    #[serde(default)]
    pub synonyms: BTreeMap<String, Vec<String>>,
}

impl Column {
    pub fn column_type(&self) -> ColumnType {
        self.ty.unwrap_or(match self.role {
            Role::Measure => ColumnType::Number,
            Role::Dimension => ColumnType::Text,
            Role::Time => ColumnType::Date,
        })
    }
    pub fn display(&self) -> String {
        self.display_name
            .clone()
            .unwrap_or_else(|| self.name.replace('_', " "))
    }
    pub fn date_format(&self) -> &str {
        self.date_format.as_deref().unwrap_or("%Y-%m-%d")
    }
    pub fn default_aggregation(&self) -> Aggregation {
        self.aggregation.unwrap_or(Aggregation::Sum)
    }
    pub fn time_aggregation(&self) -> TimeAggregation {
        self.time_aggregation.unwrap_or_default()
    }
}

impl Dataset {
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }
    pub fn time_column(&self) -> Option<&Column> {
        self.columns.iter().find(|c| c.role == Role::Time)
    }
    pub fn measures(&self) -> impl Iterator<Item = &Column> {
        self.columns.iter().filter(|c| c.role == Role::Measure)
    }
    pub fn dimensions(&self) -> impl Iterator<Item = &Column> {
        self.columns.iter().filter(|c| c.role == Role::Dimension)
    }
    /// SQL table name for this dataset.
    pub fn table_name(&self) -> String {
        format!("ds_{}", self.id)
    }
}

/// Where the catalog's data files are read from.
pub enum Source {
    /// A directory on disk.
    Dir(PathBuf),
    /// Files bundled in the binary.
    Embedded(&'static [(&'static str, &'static [u8])]),
}

impl Source {
    pub fn read(&self, file: &str) -> Result<Vec<u8>, EngineError> {
        match self {
            Source::Dir(dir) => {
                let p = dir.join(file);
                std::fs::read(&p)
                    .map_err(|e| EngineError::Catalog(format!("cannot read data file {}: {e}", p.display())))
            }
            Source::Embedded(files) => files
                .iter()
                .find(|(n, _)| *n == file)
                .map(|(_, b)| b.to_vec())
                .ok_or_else(|| EngineError::Catalog(format!("bundled data file {file} is missing"))),
        }
    }
}

/// Parse and validate catalog YAML. `origin` names the file in errors.
pub fn parse(yaml: &str, origin: &str) -> Result<Catalog, EngineError> {
    let cat: Catalog =
        serde_saphyr::from_str(yaml).map_err(|e| EngineError::Catalog(format!("{origin}: {e}")))?;
    validate(&cat, origin)?;
    Ok(cat)
}

/// Resolve `path` (a catalog file or a directory holding `catalog.yaml`).
pub fn locate(path: &Path) -> Result<(PathBuf, PathBuf), EngineError> {
    let file = if path.is_dir() {
        path.join("catalog.yaml")
    } else {
        path.to_path_buf()
    };
    if !file.is_file() {
        return Err(EngineError::Catalog(format!(
            "catalog file {} does not exist (give a catalog YAML file or a directory containing catalog.yaml)",
            file.display()
        )));
    }
    let dir = file
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    Ok((file, dir))
}

fn validate(cat: &Catalog, origin: &str) -> Result<(), EngineError> {
    let err = |msg: String| Err(EngineError::Catalog(format!("{origin}: {msg}")));
    if cat.datasets.is_empty() {
        return err("field `datasets` is empty".into());
    }
    let mut ids = HashMap::new();
    for (i, ds) in cat.datasets.iter().enumerate() {
        let at = format!("datasets[{i}] (id {})", ds.id);
        if ds.id <= 0 {
            return err(format!("{at}: field `id` must be a positive integer"));
        }
        if ids.insert(ds.id, i).is_some() {
            return err(format!("{at}: field `id` is used by two datasets"));
        }
        if ds.columns.is_empty() {
            return err(format!("{at}: field `columns` is empty"));
        }
        if ds.measures().next().is_none() {
            return err(format!("{at}: field `columns` has no column with role measure"));
        }
        if ds.columns.iter().filter(|c| c.role == Role::Time).count() > 1 {
            return err(format!(
                "{at}: field `columns` has more than one column with role time"
            ));
        }
        let mut names = HashMap::new();
        let mut words: HashMap<String, String> = HashMap::new();
        for c in &ds.columns {
            if c.name.is_empty() || c.name.contains('"') {
                return err(format!(
                    "{at}: column name {:?} is empty or contains a quote",
                    c.name
                ));
            }
            if names.insert(c.name.clone(), ()).is_some() {
                return err(format!("{at}: column `{}` appears twice", c.name));
            }
            match (c.role, c.column_type()) {
                (Role::Measure, ColumnType::Integer | ColumnType::Number) => {}
                (Role::Measure, t) => {
                    return err(format!(
                        "{at}: column `{}`: field `type` is {} but a measure must be integer or number",
                        c.name,
                        t.as_str()
                    ));
                }
                (Role::Time, ColumnType::Date) => {}
                (Role::Time, t) => {
                    return err(format!(
                        "{at}: column `{}`: field `type` is {} but a time column must be date",
                        c.name,
                        t.as_str()
                    ));
                }
                _ => {}
            }
            if !c.synonyms.is_empty() && c.role != Role::Dimension {
                return err(format!(
                    "{at}: column `{}`: field `synonyms` is only for dimensions",
                    c.name
                ));
            }
            if let Some(a) = c.aggregation
                && c.role != Role::Measure
            {
                return err(format!(
                    "{at}: column `{}`: field `aggregation` ({}) is only for measures",
                    c.name,
                    a.as_str()
                ));
            }
            let mut all = vec![c.name.replace('_', " ")];
            all.extend(c.aliases.iter().map(|a| a.to_lowercase()));
            if let Some(d) = &c.display_name {
                all.push(d.to_lowercase());
            }
            for w in all {
                if let Some(other) = words.get(&w)
                    && other != &c.name
                {
                    return err(format!(
                        "{at}: alias {w:?} of column `{}` is also a name or alias of column `{other}`",
                        c.name
                    ));
                }
                words.insert(w, c.name.clone());
            }
        }
        if let Some(k) = &ds.key
            && ds.column(k).is_none_or(|c| c.role != Role::Dimension)
        {
            return err(format!(
                "{at}: field `key` names `{k}`, which is not a dimension column"
            ));
        }
        for (field, m) in [
            ("sales_measure", &ds.sales_measure),
            ("quantity_measure", &ds.quantity_measure),
        ] {
            if let Some(m) = m
                && ds.column(m).is_none_or(|c| c.role != Role::Measure)
            {
                return err(format!(
                    "{at}: field `{field}` names `{m}`, which is not a measure column"
                ));
            }
        }
        for c in &ds.columns {
            if c.time_aggregation.is_some() && c.role != Role::Measure {
                return err(format!(
                    "{at}: column `{}`: field `time_aggregation` is only for measures",
                    c.name
                ));
            }
        }
        for (i, d) in ds.derived_measures.iter().enumerate() {
            if ds.column(&d.name).is_some() {
                return err(format!(
                    "{at}: derived measure `{}` has the name of a column",
                    d.name
                ));
            }
            let known: Vec<&str> = ds
                .measures()
                .map(|c| c.name.as_str())
                .chain(ds.derived_measures[..i].iter().map(|d| d.name.as_str()))
                .collect();
            if let Err(e) = parse_formula(&d.formula, &known) {
                return err(format!(
                    "{at}: derived measure `{}`: field `formula` {:?}: {e}",
                    d.name, d.formula
                ));
            }
        }
        for e in &ds.events {
            if ds.column(&e.time_column).is_none_or(|c| c.role != Role::Time) {
                return err(format!(
                    "{at}: event `{}`: field `time_column` names `{}`, which is not the time column",
                    e.name, e.time_column
                ));
            }
        }
        for g in &ds.column_groups {
            for c in &g.columns {
                if ds.column(c).is_none_or(|c| c.role != Role::Dimension) {
                    return err(format!(
                        "{at}: column group `{}` names `{c}`, which is not a dimension column",
                        g.name
                    ));
                }
            }
        }
    }
    Ok(())
}

/// A derived measure's formula: `left op right`.
#[derive(Clone, Debug, PartialEq)]
pub struct Formula {
    pub left: String,
    pub op: char,
    pub right: String,
}

/// Read `a op b` where a and b are in `known`.
pub fn parse_formula(text: &str, known: &[&str]) -> Result<Formula, String> {
    let parts: Vec<&str> = text.split_whitespace().collect();
    let [l, op, r] = parts[..] else {
        return Err("must be `measure op measure` with op one of + - * /, separated by spaces".into());
    };
    let op = match op {
        "+" | "-" | "*" | "/" => op.chars().next().expect("one char"),
        _ => return Err(format!("operator {op:?} is not one of + - * /")),
    };
    for side in [l, r] {
        if !known.contains(&side) {
            return Err(format!(
                "`{side}` is not a measure column or an earlier derived measure"
            ));
        }
    }
    Ok(Formula {
        left: l.to_string(),
        op,
        right: r.to_string(),
    })
}

impl Dataset {
    /// The formula of derived measure `name` (validated at load).
    pub fn derived(&self, name: &str) -> Option<(&DerivedMeasure, Formula)> {
        let i = self.derived_measures.iter().position(|d| d.name == name)?;
        let known: Vec<&str> = self
            .measures()
            .map(|c| c.name.as_str())
            .chain(self.derived_measures[..i].iter().map(|d| d.name.as_str()))
            .collect();
        let f = parse_formula(&self.derived_measures[i].formula, &known).ok()?;
        Some((&self.derived_measures[i], f))
    }
}
