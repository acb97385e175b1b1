//! Builds JSON values while they are parsed, keeping only what the result limits allow: at most `max_rows`
//! items of any array and about `max_bytes` of JSON in all. What is not kept is skipped by the parser
//! (serde's `IgnoredAny`, which allocates nothing) and counted, so a 31 MiB answer costs the memory of the
//! part that is kept, not of a tree 17 times its size. Pure: no I/O beyond the reader it is given.

use std::{cell::Cell, fmt};

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

use crate::tools::envelope::ResultLimits;

/// What may still be kept, and what was left out. Shared by the seeds of one answer.
#[derive(Debug)]
pub struct Budget {
    max_rows: usize,
    bytes_left: Cell<usize>,
    dropped: Cell<u64>,
}

impl Budget {
    pub fn new(limits: ResultLimits) -> Self {
        Self {
            max_rows: limits.max_rows,
            bytes_left: Cell::new(limits.max_bytes),
            dropped: Cell::new(0),
        }
    }

    /// How many values (array items, object members, cut strings) were left out.
    pub fn dropped(&self) -> u64 {
        self.dropped.get()
    }

    pub fn max_rows(&self) -> usize {
        self.max_rows
    }

    pub(crate) fn has_room(&self) -> bool {
        self.bytes_left.get() > 0
    }

    /// Counts `bytes` of kept JSON (an estimate of its serialized size).
    fn charge(&self, bytes: usize) {
        self.bytes_left.set(self.bytes_left.get().saturating_sub(bytes));
    }

    pub fn drop_one(&self) {
        self.dropped.set(self.dropped.get() + 1);
    }

    /// A string, cut at a character boundary when it does not fit in what is left.
    pub(crate) fn string(&self, text: &str) -> Value {
        let room = self.bytes_left.get();
        if text.len() + 2 <= room {
            self.charge(text.len() + 2);
            return Value::String(text.to_owned());
        }
        self.drop_one();
        let mut end = room.saturating_sub(2).min(text.len());
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        self.charge(room);
        Value::String(text[..end].to_owned())
    }
}

/// A seed that deserializes any JSON value within the budget.
#[derive(Clone, Copy)]
pub struct Capped<'a>(pub &'a Budget);

impl<'de> DeserializeSeed<'de> for Capped<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Capped<'_> {
    type Value = Value;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a JSON value")
    }

    fn visit_bool<E>(self, value: bool) -> Result<Value, E> {
        self.0.charge(5);
        Ok(Value::Bool(value))
    }

    fn visit_i64<E>(self, value: i64) -> Result<Value, E> {
        self.0.charge(8);
        Ok(Value::Number(value.into()))
    }

    fn visit_u64<E>(self, value: u64) -> Result<Value, E> {
        self.0.charge(8);
        Ok(Value::Number(value.into()))
    }

    fn visit_f64<E>(self, value: f64) -> Result<Value, E> {
        self.0.charge(12);
        Ok(Number::from_f64(value).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, value: &str) -> Result<Value, E> {
        Ok(self.0.string(value))
    }

    fn visit_string<E>(self, value: String) -> Result<Value, E> {
        Ok(self.0.string(&value))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        self.0.charge(4);
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        self.0.charge(4);
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        self.0.charge(2);
        let mut items = Vec::new();
        while items.len() < self.0.max_rows && self.0.has_room() {
            match seq.next_element_seed(self)? {
                Some(item) => {
                    self.0.charge(1);
                    items.push(item);
                }
                None => return Ok(Value::Array(items)),
            }
        }
        while seq.next_element::<IgnoredAny>()?.is_some() {
            self.0.drop_one();
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        self.0.charge(2);
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if self.0.has_room() {
                self.0.charge(key.len() + 4);
                let value = map.next_value_seed(self)?;
                object.insert(key, value);
            } else {
                map.next_value::<IgnoredAny>()?;
                self.0.drop_one();
            }
        }
        Ok(Value::Object(object))
    }
}

/// Parses one JSON document, or several separated by whitespace (JSON lines), within the limits. Several
/// documents become an array of them, itself limited to `max_rows` documents. Returns the value and
/// whether anything was left out.
pub fn parse_documents<'de, R: serde_json::de::Read<'de>>(
    read: R,
    limits: ResultLimits,
) -> Result<(Value, bool), serde_json::Error> {
    let budget = Budget::new(limits);
    let mut deserializer = serde_json::Deserializer::new(read);
    let first = Capped(&budget).deserialize(&mut deserializer)?;
    // `end` only looks past whitespace: when something follows, the next document starts there.
    if deserializer.end().is_ok() {
        return Ok((first, budget.dropped() > 0));
    }
    let mut documents = vec![first];
    loop {
        if documents.len() < budget.max_rows() && budget.has_room() {
            documents.push(Capped(&budget).deserialize(&mut deserializer)?);
        } else {
            serde::Deserialize::deserialize(&mut deserializer).map(|IgnoredAny| ())?;
            budget.drop_one();
        }
        if deserializer.end().is_ok() {
            break;
        }
    }
    Ok((Value::Array(documents), budget.dropped() > 0))
}

/// [`parse_documents`] over bytes in memory.
pub fn parse_slice(bytes: &[u8], limits: ResultLimits) -> Result<(Value, bool), serde_json::Error> {
    parse_documents(serde_json::de::SliceRead::new(bytes), limits)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const LOOSE: ResultLimits = ResultLimits {
        max_rows: 1000,
        max_bytes: 1 << 20,
    };

    #[test]
    fn small_documents_are_parsed_whole() {
        let value = json!({"a": [1, 2.5, "x", null, true], "b": {"c": -3}});
        let text = value.to_string();
        assert_eq!(parse_slice(text.as_bytes(), LOOSE).unwrap(), (value, false));
    }

    #[test]
    fn json_lines_become_an_array() {
        let (value, cut) = parse_slice(b"{\"a\":1}\n{\"b\":2}\n\n 3 \n", LOOSE).unwrap();
        assert_eq!(value, json!([{"a": 1}, {"b": 2}, 3]));
        assert!(!cut);
    }

    #[test]
    fn arrays_keep_max_rows_items_and_count_the_rest() {
        let rows: Vec<Value> = (0..5000).map(|i| json!({"region": "North", "v": i})).collect();
        let text = serde_json::to_vec(&json!({"resultSet": rows})).unwrap();
        let limits = ResultLimits {
            max_rows: 10,
            max_bytes: 1 << 20,
        };
        let (value, cut) = parse_slice(&text, limits).unwrap();
        assert!(cut);
        assert_eq!(value["resultSet"].as_array().unwrap().len(), 10);
        assert_eq!(value["resultSet"][9], json!({"region": "North", "v": 9}));
    }

    #[test]
    fn bytes_are_bounded_while_parsing() {
        let rows: Vec<Value> = (0..100_000).map(|i| json!([i, "some text here"])).collect();
        let text = serde_json::to_vec(&rows).unwrap();
        let limits = ResultLimits {
            max_rows: 1_000_000,
            max_bytes: 10_000,
        };
        let (value, cut) = parse_slice(&text, limits).unwrap();
        assert!(cut);
        let kept = serde_json::to_vec(&value).unwrap().len();
        assert!(kept < 12_000, "{kept}");
        assert!(value.as_array().unwrap().len() > 100);
    }

    #[test]
    fn a_huge_string_is_cut_at_a_character_boundary() {
        let text = json!({"blob": "é".repeat(10_000)}).to_string();
        let limits = ResultLimits {
            max_rows: 10,
            max_bytes: 1001,
        };
        let (value, cut) = parse_slice(text.as_bytes(), limits).unwrap();
        assert!(cut);
        let blob = value["blob"].as_str().unwrap();
        assert!(blob.len() <= 1001 && blob.len() > 900, "{}", blob.len());
    }

    #[test]
    fn invalid_and_truncated_json_is_an_error() {
        assert!(parse_slice(b"<html>", LOOSE).is_err());
        assert!(parse_slice(b"{\"a\": [1, 2", LOOSE).is_err());
        assert!(parse_slice(b"{\"a\": 1} <html>", LOOSE).is_err());
        assert!(parse_slice(b"", LOOSE).is_err());
    }

    #[test]
    fn a_reader_is_parsed_incrementally() {
        let text = b"[1, 2, 3]\n[4]";
        let (value, _) = parse_documents(serde_json::de::IoRead::new(&text[..]), LOOSE).unwrap();
        assert_eq!(value, json!([[1, 2, 3], [4]]));
    }
}
