//! The result envelopes kept from the original server, and bounding of results. Pure.
//!
//! Success: `{"status": "success", "data": …}` (plus `"truncated": true` when cut) as `structuredContent`,
//! with the same JSON as text. A backend answer that is plain text (not JSON) is passed on as it came: the
//! text is the content block, and the envelope says `"format": "text"` with the text as `data`. Errors:
//! `isError: true` with `{"status": "validation_error" | "error", "error": "…"}`.

use rmcp::model::{CallToolResult, ContentBlock};
use serde_json::{Value, json};

/// What a backend answered, already parsed (and possibly already cut while it was read).
#[derive(Clone, Debug, PartialEq)]
pub enum Answer {
    /// A JSON answer (one document, or the documents of a stream as an array).
    Json { data: Value, truncated: bool },
    /// A plain-text answer, passed on as text.
    Text { text: String, truncated: bool },
}

impl From<Value> for Answer {
    fn from(data: Value) -> Self {
        Answer::Json {
            data,
            truncated: false,
        }
    }
}

/// Limits applied to every result.
#[derive(Clone, Copy, Debug)]
pub struct ResultLimits {
    pub max_rows: usize,
    pub max_bytes: usize,
}

pub fn output_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "status": {
                "type": "string",
                "enum": ["success", "validation_error", "error"],
                "description": "success, or why the call failed: validation_error (fix the arguments) or error."
            },
            "data": { "description": "The backend's answer (present when status is success)." },
            "truncated": {
                "type": "boolean",
                "description": "true when the answer was cut to the connector's row or size limit."
            },
            "format": {
                "type": "string",
                "enum": ["text"],
                "description": "Present when the backend answered plain text instead of JSON: data is that text."
            },
            "error": { "type": "string", "description": "What went wrong (present when status is not success)." }
        },
        "required": ["status"]
    })
}

fn structured(value: Value, is_error: bool) -> CallToolResult {
    let text = value.to_string();
    let mut result = if is_error {
        CallToolResult::error(vec![ContentBlock::text(text)])
    } else {
        CallToolResult::success(vec![ContentBlock::text(text)])
    };
    result.structured_content = Some(value);
    result
}

pub fn success(answer: impl Into<Answer>, limits: ResultLimits) -> CallToolResult {
    match answer.into() {
        Answer::Json { data, truncated } => {
            let (data, cut) = bound(data, limits);
            let mut envelope = json!({"status": "success", "data": data});
            if truncated || cut {
                envelope["truncated"] = Value::Bool(true);
            }
            structured(envelope, false)
        }
        Answer::Text { text, truncated } => {
            let (text, cut) = bound_text(text, limits.max_bytes.saturating_sub(64));
            let mut envelope = json!({"status": "success", "format": "text", "data": text});
            if truncated || cut {
                envelope["truncated"] = Value::Bool(true);
            }
            // The text itself is the content, as the original server passed it on.
            let mut result = CallToolResult::success(vec![ContentBlock::text(text)]);
            result.structured_content = Some(envelope);
            result
        }
    }
}

/// Cuts text to at most `max_bytes`, at a character boundary. Returns whether it was cut.
pub fn bound_text(mut text: String, max_bytes: usize) -> (String, bool) {
    if text.len() <= max_bytes {
        return (text, false);
    }
    let mut end = max_bytes;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    (text, true)
}

pub fn validation_error(message: impl Into<String>) -> CallToolResult {
    structured(
        json!({"status": "validation_error", "error": message.into()}),
        true,
    )
}

pub fn error(message: impl Into<String>) -> CallToolResult {
    structured(json!({"status": "error", "error": message.into()}), true)
}

/// Cuts `data` to the limits: every array to at most `max_rows` items, then the longest array again and
/// again until the JSON fits in `max_bytes`. A result that still cannot fit (a huge scalar) is replaced by
/// `null`. Returns whether anything was cut.
pub fn bound(mut data: Value, limits: ResultLimits) -> (Value, bool) {
    let mut truncated = cap_arrays(&mut data, limits.max_rows);
    // Room for the envelope around the data.
    let budget = limits.max_bytes.saturating_sub(64);
    let mut size = serialized_len(&data);
    while size > budget {
        let Some(len) = longest_array_len(&data) else {
            return (Value::Null, true);
        };
        if len == 0 {
            return (Value::Null, true);
        }
        // Shrink proportionally to the overshoot, at least by one item.
        let keep = ((len as f64) * (budget as f64 / size as f64) * 0.95) as usize;
        shrink_longest(&mut data, len, keep.min(len - 1));
        truncated = true;
        size = serialized_len(&data);
    }
    (data, truncated)
}

fn serialized_len(value: &Value) -> usize {
    serde_json::to_vec(value)
        .map(|bytes| bytes.len())
        .unwrap_or(usize::MAX)
}

fn cap_arrays(value: &mut Value, max: usize) -> bool {
    match value {
        Value::Array(items) => {
            let mut cut = items.len() > max;
            items.truncate(max);
            for item in items.iter_mut() {
                cut |= cap_arrays(item, max);
            }
            cut
        }
        Value::Object(map) => map
            .values_mut()
            .fold(false, |cut, item| cap_arrays(item, max) | cut),
        _ => false,
    }
}

fn longest_array_len(value: &Value) -> Option<usize> {
    match value {
        Value::Array(items) => {
            let inner = items.iter().filter_map(longest_array_len).max();
            Some(inner.map_or(items.len(), |inner| inner.max(items.len())))
        }
        Value::Object(map) => map.values().filter_map(longest_array_len).max(),
        _ => None,
    }
}

/// Truncates the first array found with length `len` to `keep` items.
fn shrink_longest(value: &mut Value, len: usize, keep: usize) -> bool {
    match value {
        Value::Array(items) if items.len() == len => {
            items.truncate(keep);
            true
        }
        Value::Array(items) => items.iter_mut().any(|item| shrink_longest(item, len, keep)),
        Value::Object(map) => map.values_mut().any(|item| shrink_longest(item, len, keep)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOOSE: ResultLimits = ResultLimits {
        max_rows: 1000,
        max_bytes: 1 << 20,
    };

    #[test]
    fn small_results_pass_untouched() {
        let data = json!({"rows": [[1, "a"], [2, "b"]], "columns": ["n", "s"]});
        assert_eq!(bound(data.clone(), LOOSE), (data, false));
    }

    #[test]
    fn rows_are_capped_at_every_depth() {
        let data = json!({"rows": (0..10).collect::<Vec<_>>(), "nested": {"x": [[1, 2, 3, 4]]}});
        let (bounded, cut) = bound(
            data,
            ResultLimits {
                max_rows: 3,
                max_bytes: 1 << 20,
            },
        );
        assert!(cut);
        assert_eq!(bounded["rows"], json!([0, 1, 2]));
        assert_eq!(bounded["nested"]["x"], json!([[1, 2, 3]]));
    }

    #[test]
    fn bytes_are_capped_by_cutting_the_longest_array() {
        let rows: Vec<Value> = (0..5000)
            .map(|i| json!({"region": format!("r{i}"), "v": i}))
            .collect();
        let data = json!({"rows": rows, "sql": "select 1"});
        let limits = ResultLimits {
            max_rows: 100_000,
            max_bytes: 4096,
        };
        let (bounded, cut) = bound(data, limits);
        assert!(cut);
        assert!(
            serialized_len(&bounded) <= 4096 - 64,
            "{}",
            serialized_len(&bounded)
        );
        assert_eq!(bounded["sql"], "select 1");
        assert!(!bounded["rows"].as_array().unwrap().is_empty());
    }

    #[test]
    fn an_unboundable_scalar_becomes_null() {
        let data = json!({"blob": "x".repeat(10_000)});
        let (bounded, cut) = bound(
            data,
            ResultLimits {
                max_rows: 10,
                max_bytes: 1024,
            },
        );
        assert!(cut);
        assert_eq!(bounded, Value::Null);
    }

    #[test]
    fn text_answers_are_passed_on_as_text_and_say_so() {
        let answer = Answer::Text {
            text: "Top regions:\n1. North".into(),
            truncated: false,
        };
        let result = success(answer, LOOSE);
        assert_eq!(result.is_error, Some(false));
        assert_eq!(
            result.content[0].as_text().unwrap().text,
            "Top regions:\n1. North"
        );
        assert_eq!(
            result.structured_content.unwrap(),
            json!({"status": "success", "format": "text", "data": "Top regions:\n1. North"})
        );
        let long = Answer::Text {
            text: "é".repeat(2000),
            truncated: false,
        };
        let cut = success(
            long,
            ResultLimits {
                max_rows: 10,
                max_bytes: 1024,
            },
        );
        let envelope = cut.structured_content.unwrap();
        assert_eq!(envelope["truncated"], true);
        assert!(envelope["data"].as_str().unwrap().len() <= 1024 - 64);
    }

    #[test]
    fn a_json_answer_cut_while_read_says_truncated() {
        let answer = Answer::Json {
            data: json!([1, 2]),
            truncated: true,
        };
        let envelope = success(answer, LOOSE).structured_content.unwrap();
        assert_eq!(
            envelope,
            json!({"status": "success", "data": [1, 2], "truncated": true})
        );
    }

    #[test]
    fn envelopes_carry_status_and_same_text() {
        let ok = success(json!({"a": 1}), LOOSE);
        assert_eq!(ok.is_error, Some(false));
        let structured = ok.structured_content.clone().unwrap();
        assert_eq!(structured, json!({"status": "success", "data": {"a": 1}}));
        let text = ok.content[0].as_text().unwrap().text.clone();
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), structured);

        let bad = validation_error("schemaId: is required");
        assert_eq!(bad.is_error, Some(true));
        assert_eq!(
            bad.structured_content.unwrap(),
            json!({"status": "validation_error", "error": "schemaId: is required"})
        );
    }
}
