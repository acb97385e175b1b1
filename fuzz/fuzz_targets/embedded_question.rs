//! The embedded engine's question reader (`lumenore-embedded`), on the bundled demo catalog and data.
//!
//! Layout: byte 0 chooses the dataset (`% 3`: 35403 sales, 35404 customers, 35405 inventory), the tool
//! (`/ 3 % 7`: nlq_to_data or one of the six analyses) and, when its two high bits are set, whether the
//! whole engine call runs too (SQL and analysis: slower, so only for a quarter of the inputs); the rest is
//! the question (invalid UTF-8 becomes U+FFFD), cut to the 5,000 characters the connector lets through, and
//! blank questions are skipped as the connector refuses them first.
//!
//! Invariants: no panic; a refusal says why in words, and names the part of the question it could not use
//! when it has one; a plan's SQL prepares in SQLite with as many parameters as it binds; the engine call
//! answers a JSON object or refuses the question (never an internal query failure); time is bounded by
//! libFuzzer's `-timeout` (see .ci/fuzz.sh).

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use lumenore_connector::tools::validate::MAX_QUERY_CHARS;
use lumenore_embedded::{
    AnalysisKind, Engine, EngineError, Tool,
    catalog::{self, Catalog, Source},
    demo,
    intent::route,
    nlq::{self, Ctx, Vocab},
    store::{self, Db, Loaded},
};
use lumenore_fuzz::{Input, first_chars, text};

/// The demo catalog read once as the engine reads it: its datasets, their loaded data and vocabularies.
struct Reader {
    catalog: Catalog,
    db: Db,
    loaded: Vec<(Loaded, Vocab)>,
}

fn reader() -> &'static Reader {
    static READER: OnceLock<Reader> = OnceLock::new();
    READER.get_or_init(|| {
        let catalog = catalog::parse(demo::CATALOG_YAML, "bundled demo catalog.yaml").expect("demo catalog");
        let db = Db::new().expect("in-memory database");
        let loaded = catalog
            .datasets
            .iter()
            .map(|ds| {
                let loaded = store::load(&db, ds, &Source::Embedded(demo::FILES)).expect("demo data");
                let vocab = Vocab::build(ds, &loaded.values);
                (loaded, vocab)
            })
            .collect();
        Reader { catalog, db, loaded }
    })
}

fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| Engine::demo().expect("demo engine"))
}

const SCHEMAS: [i64; 3] = [35403, 35404, 35405];

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let selector = input.byte();
    let schema_id = SCHEMAS[usize::from(selector % 3)];
    let tool = match (selector / 3) % 7 {
        0 => Tool::Data,
        k => Tool::Analysis(AnalysisKind::ALL[usize::from(k) - 1]),
    };
    let whole_call = selector & 0xC0 == 0xC0;
    let question = text(input.rest());
    let question = first_chars(&question, MAX_QUERY_CHARS);
    if question.trim().is_empty() {
        return;
    }

    read(question, schema_id, tool);
    if whole_call {
        call(question, schema_id, tool);
    }
});

/// The reader alone: question → plan → route → SQL, the SQL prepared (not run).
fn read(question: &str, schema_id: i64, tool: Tool) {
    let reader = reader();
    let (ds, (loaded, vocab)) = reader
        .catalog
        .datasets
        .iter()
        .zip(&reader.loaded)
        .find(|(ds, _)| ds.id == schema_id)
        .expect("a demo dataset");
    let ctx = Ctx {
        ds,
        vocab,
        latest: loaded.max_date,
        earliest: loaded.min_date,
        monthly: loaded.monthly,
    };
    let mut plan = match nlq::parse(question, &ctx) {
        Ok(plan) => plan,
        Err(refusal) => {
            names_something(&refusal.part, &refusal.reason);
            return;
        }
    };
    if let Err((part, reason)) = route(&mut plan, tool) {
        names_something(&part, &reason);
        return;
    }
    if plan.measures.is_empty() {
        // The engine refuses such a plan before any SQL is built ("the question names no measure":
        // `Engine::nlq_to_data`, `require_measure` of the analyses); the whole call checks that it does.
        return;
    }
    let sql = plan.sql(ds);
    let placeholders = sql.text.matches('?').count();
    assert_eq!(
        placeholders,
        sql.params.len(),
        "SQL with {placeholders} placeholders binds {} parameters: {}",
        sql.params.len(),
        sql.text
    );
    let prepared = reader.db.with(|conn| {
        conn.prepare(&sql.text)
            .map(|statement| statement.parameter_count())
            .map_err(|error| EngineError::Query(error.to_string()))
    });
    match prepared {
        Ok(count) => assert_eq!(count, sql.params.len(), "{}", sql.text),
        Err(error) => panic!("the plan's SQL does not prepare: {error}\n{}", sql.text),
    }
}

/// The whole call, as the connector makes it.
fn call(question: &str, schema_id: i64, tool: Tool) {
    let answer = match tool {
        Tool::Data => engine().nlq_to_data(question, schema_id),
        Tool::Analysis(kind) => engine().analyze(kind, question, schema_id),
    };
    match answer {
        Ok(json) => assert!(json.is_object(), "an answer that is not an object: {json}"),
        Err(EngineError::NotUnderstood { part, message }) => names_something(&part, &message),
        Err(other) => panic!("the engine failed on a question: {other}"),
    }
}

/// A refusal says why, and names the part of the question it is about when it has one: the part, or one
/// of its words (a repeated word, "total total", is named once: "'total' is not followed by a measure").
fn names_something(part: &str, reason: &str) {
    assert!(!reason.trim().is_empty(), "a refusal without a reason");
    let reason = reason.to_lowercase();
    let part = part.to_lowercase();
    let mut words = part
        .split(|c: char| !c.is_alphanumeric())
        .filter(|word| !word.is_empty())
        .peekable();
    if words.peek().is_none() {
        return;
    }
    assert!(
        reason.contains(part.trim()) || words.any(|word| reason.contains(word)),
        "the reason does not name the part {part:?}: {reason}"
    );
}
