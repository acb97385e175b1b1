//! The set-up the fuzz targets share: how the first bytes of an input choose a mode, how a body is cut into
//! the chunks a network would deliver, and the independent JSON measures the invariants are checked with
//! (written plainly on `serde_json`, never on the code under test).

#![forbid(unsafe_code)]

use std::{borrow::Cow, cell::Cell, collections::HashSet, fmt};

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

/// Reads parameters off the front of a fuzz input; past its end every byte reads as zero.
pub struct Input<'a> {
    bytes: &'a [u8],
}

impl<'a> Input<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes }
    }

    /// The next byte (0 once the input is used up).
    pub fn byte(&mut self) -> u8 {
        match self.bytes.split_first() {
            Some((first, rest)) => {
                self.bytes = rest;
                *first
            }
            None => 0,
        }
    }

    /// What is left: the body or the question.
    pub fn rest(self) -> &'a [u8] {
        self.bytes
    }
}

/// Cuts `body` into chunks as `selector` says (its two low bits pick the way, the rest tunes it):
/// - 0: one chunk (or none for an empty body when bit 2 is set);
/// - 1: one byte per chunk (a trickling peer: every boundary of the readers is crossed);
/// - 2: chunks of `(selector >> 2) + 1` bytes (1 to 64);
/// - 3: chunks of varying sizes (1 to 97 bytes, and now and then an empty chunk), from a generator seeded
///   with the selector.
pub fn chunks(body: &[u8], selector: u8) -> Vec<&[u8]> {
    match selector & 3 {
        0 if body.is_empty() && selector & 4 != 0 => Vec::new(),
        0 => vec![body],
        1 => body.chunks(1).collect(),
        2 => body.chunks(usize::from(selector >> 2) + 1).collect(),
        _ => {
            let mut state = u32::from(selector) | 0x9e37_7900;
            let mut out = Vec::new();
            let mut rest = body;
            while !rest.is_empty() {
                // xorshift32
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                let size = if state % 16 == 0 {
                    0
                } else {
                    (state % 97) as usize + 1
                };
                let (chunk, tail) = rest.split_at(size.min(rest.len()));
                out.push(chunk);
                rest = tail;
            }
            out
        }
    }
}

/// The input as text: invalid UTF-8 becomes U+FFFD, so every input is a question.
pub fn text(bytes: &[u8]) -> Cow<'_, str> {
    String::from_utf8_lossy(bytes)
}

/// The first `max_chars` characters of `text`.
pub fn first_chars(text: &str, max_chars: usize) -> &str {
    match text.char_indices().nth(max_chars) {
        Some((at, _)) => &text[..at],
        None => text,
    }
}

/// JSON as plain `serde_json` reads it: one document, or several separated by whitespace (JSON lines)
/// as an array. The reference the bounded readers are compared with.
pub fn json_documents(bytes: &[u8]) -> Result<Value, serde_json::Error> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let first: Value = serde::Deserialize::deserialize(&mut deserializer)?;
    if deserializer.end().is_ok() {
        return Ok(first);
    }
    let mut documents = vec![first];
    loop {
        documents.push(serde::Deserialize::deserialize(&mut deserializer)?);
        if deserializer.end().is_ok() {
            return Ok(Value::Array(documents));
        }
    }
}

/// The longest array anywhere in `value` (0 when it holds none).
pub fn longest_array(value: &Value) -> usize {
    match value {
        Value::Array(items) => items.iter().map(longest_array).fold(items.len(), usize::max),
        Value::Object(map) => map.values().map(longest_array).max().unwrap_or(0),
        _ => 0,
    }
}

/// The longest object key anywhere in `value`, in bytes.
pub fn longest_key(value: &Value) -> usize {
    match value {
        Value::Array(items) => items.iter().map(longest_key).max().unwrap_or(0),
        Value::Object(map) => map
            .iter()
            .map(|(key, value)| key.len().max(longest_key(value)))
            .max()
            .unwrap_or(0),
        _ => 0,
    }
}

/// Nesting depth: 0 for a scalar, 1 for a flat array or object.
pub fn depth(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// The size the result limits count for a kept value (the bounded reader's estimate of its JSON, without
/// escapes): a string its length + 2, an integer 8, a fraction 12, `true`/`false` 5, `null` 4, an array 2 +
/// each item + 1, an object 2 + each key + 4 + its value.
pub fn counted_bytes(value: &Value) -> usize {
    match value {
        Value::Null => 4,
        Value::Bool(_) => 5,
        Value::Number(number) if number.is_f64() => 12,
        Value::Number(_) => 8,
        Value::String(text) => text.len() + 2,
        Value::Array(items) => 2 + items.iter().map(|item| counted_bytes(item) + 1).sum::<usize>(),
        Value::Object(map) => {
            2 + map
                .iter()
                .map(|(key, value)| key.len() + 4 + counted_bytes(value))
                .sum::<usize>()
        }
    }
}

/// What a JSON text holds, read by a plain walk: how many values (objects, arrays, strings, numbers,
/// literals; keys are not values) and whether any object has the same key twice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    pub values: usize,
    pub duplicate_key: bool,
}

/// The [`Shape`] of `bytes`, or serde_json's error when they are not one JSON document.
pub fn shape(bytes: &[u8]) -> Result<Shape, serde_json::Error> {
    let values = Cell::new(0usize);
    let duplicate = Cell::new(false);
    let walk = Walk {
        values: &values,
        duplicate: &duplicate,
    };
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    walk.deserialize(&mut deserializer)?;
    deserializer.end()?;
    Ok(Shape {
        values: values.get(),
        duplicate_key: duplicate.get(),
    })
}

#[derive(Clone, Copy)]
struct Walk<'c> {
    values: &'c Cell<usize>,
    duplicate: &'c Cell<bool>,
}

impl Walk<'_> {
    fn one(&self) {
        self.values.set(self.values.get() + 1);
    }
}

impl<'de> DeserializeSeed<'de> for Walk<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        self.one();
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        self.one();
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        self.one();
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        self.one();
        Ok(())
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        self.one();
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        self.one();
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.one();
        while seq.next_element_seed(self)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        self.one();
        let mut keys = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if !keys.insert(key) {
                self.duplicate.set(true);
            }
            map.next_value_seed(self)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_the_body_in_order() {
        let body: Vec<u8> = (0..=255).collect();
        for selector in 0..=255u8 {
            let parts = chunks(&body, selector);
            assert_eq!(parts.concat(), body, "selector {selector}");
        }
        assert!(chunks(b"", 4).is_empty());
    }

    #[test]
    fn shape_counts_values_and_finds_duplicates() {
        let found = shape(br#"{"a":[1,"x",null],"b":{"c":true}}"#).unwrap();
        assert_eq!(
            found,
            Shape {
                values: 7,
                duplicate_key: false
            }
        );
        assert!(shape(br#"{"a":{"k":1,"k":2}}"#).unwrap().duplicate_key);
        assert!(shape(b"{} x").is_err());
    }

    #[test]
    fn json_lines_read_as_an_array() {
        assert_eq!(
            json_documents(b"{\"a\":1}\n{\"b\":2}\n").unwrap(),
            serde_json::json!([{"a": 1}, {"b": 2}])
        );
        assert_eq!(json_documents(b" 7 ").unwrap(), serde_json::json!(7));
    }
}
