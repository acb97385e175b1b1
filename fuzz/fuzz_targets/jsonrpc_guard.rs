//! The strict JSON-RPC guard (`http::jsonrpc::parse_message`) against its documented rules, checked with
//! an independent reading of the same bytes by plain `serde_json`:
//! - it accepts exactly the single JSON objects with no duplicate key at any depth, at most
//!   `MAX_JSON_VALUES` values, `"jsonrpc": "2.0"`, a string `method` or a `result`/`error` member, and an id
//!   that is absent, a string or an integer;
//! - what is not JSON for serde_json is refused, and "not JSON" (-32700) is said only of such input;
//! - the envelope it returns is the message's top-level keys with the scalars of `jsonrpc`, `method`, `id`,
//!   of `params` only `name` and `_meta`'s `traceparent`/`tracestate`, and `null` for everything else.

#![no_main]

use libfuzzer_sys::fuzz_target;
use lumenore_connector::http::jsonrpc::{MAX_JSON_VALUES, Rejection, parse_message};
use lumenore_fuzz::shape;
use serde_json::{Map, Value};

fuzz_target!(|data: &[u8]| {
    let verdict = parse_message(data);
    let full = serde_json::from_slice::<Value>(data);
    let shape = shape(data);

    let Ok(full) = full else {
        // Not JSON for serde_json: refused, whatever rule was met first.
        assert!(verdict.is_err(), "accepted what serde_json refuses: {verdict:?}");
        return;
    };
    let shape = shape.expect("serde_json read it as a Value, so the plain walk reads it too");
    assert_ne!(
        verdict,
        Err(Rejection::NotJson),
        "valid JSON called a parse error"
    );

    let envelope_rules = match &full {
        Value::Object(message) => {
            let id_ok = match message.get("id") {
                None | Some(Value::String(_)) => true,
                Some(Value::Number(number)) => number.is_i64() || number.is_u64(),
                Some(_) => false,
            };
            message.get("jsonrpc") == Some(&Value::String("2.0".into()))
                && (message.get("method").is_some_and(Value::is_string)
                    || message.contains_key("result")
                    || message.contains_key("error"))
                && id_ok
        }
        _ => false,
    };
    let should_accept = envelope_rules && !shape.duplicate_key && shape.values <= MAX_JSON_VALUES;

    match verdict {
        Ok(envelope) => {
            assert!(
                should_accept,
                "accepted against the rules: {shape:?}, envelope rules {envelope_rules}"
            );
            let Value::Object(message) = &full else {
                unreachable!("the rules hold only for objects")
            };
            assert_eq!(
                Value::Object(envelope),
                Value::Object(expected_envelope(message)),
                "the envelope is not what the documentation says"
            );
        }
        Err(rejection) => {
            assert!(
                !should_accept,
                "refused a message that follows every rule: {rejection:?}"
            );
            if let Rejection::Invalid(rule) = rejection {
                assert!(!rule.is_empty());
            }
        }
    }
});

/// The envelope as `parse_message` documents it, built from the whole message.
fn expected_envelope(message: &Map<String, Value>) -> Map<String, Value> {
    message
        .iter()
        .map(|(key, value)| {
            let kept = match key.as_str() {
                "jsonrpc" | "method" | "id" => scalar(value),
                "params" => keep_of(value, &["name"], Some("_meta")),
                _ => Value::Null,
            };
            (key.clone(), kept)
        })
        .collect()
}

/// `params` (or `_meta`): an object of the members named in `scalars` (their scalar values) and of `nested`
/// (kept as `_meta` is); anything but an object is `null`.
fn keep_of(value: &Value, scalars: &[&str], nested: Option<&str>) -> Value {
    let Value::Object(map) = value else {
        return Value::Null;
    };
    let mut kept = Map::new();
    for (key, member) in map {
        if scalars.contains(&key.as_str()) {
            kept.insert(key.clone(), scalar(member));
        } else if nested == Some(key.as_str()) {
            kept.insert(key.clone(), keep_of(member, &["traceparent", "tracestate"], None));
        }
    }
    Value::Object(kept)
}

fn scalar(value: &Value) -> Value {
    match value {
        Value::Array(_) | Value::Object(_) => Value::Null,
        other => other.clone(),
    }
}
