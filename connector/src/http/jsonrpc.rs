//! JSON-RPC at the HTTP boundary: the error answers the HTTP layer gives, and the one strict parse of a
//! request body (duplicate keys refused, ids checked) before anything else reads it. Pure: no I/O.

use std::fmt;

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value, json};

/// JSON-RPC 2.0 error codes used at the HTTP boundary.
pub const PARSE_ERROR: i64 = -32700;
pub const INVALID_REQUEST: i64 = -32600;

/// A JSON-RPC error response (`id: null`, as JSON-RPC asks when the id could not be read) with the given
/// HTTP status. The message is a fixed text: it never quotes the body.
pub fn error_response(status: StatusCode, code: i64, message: &str) -> Response {
    (
        status,
        Json(json!({"jsonrpc": "2.0", "id": null, "error": {"code": code, "message": message}})),
    )
        .into_response()
}

/// [`error_response`] with `Retry-After` (seconds), for refusals that pass.
pub fn retry_later(status: StatusCode, code: i64, message: &str, seconds: u32) -> Response {
    let mut response = error_response(status, code, message);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    response
}

/// Why a body is not an acceptable JSON-RPC message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// Not JSON at all (-32700).
    NotJson,
    /// JSON, but not a valid JSON-RPC 2.0 message (-32600); the text says which rule.
    Invalid(&'static str),
}

impl Rejection {
    /// The HTTP 400 answer for this rejection.
    pub fn into_response(self) -> Response {
        match self {
            Rejection::NotJson => error_response(
                StatusCode::BAD_REQUEST,
                PARSE_ERROR,
                "Parse error: the body is not valid JSON",
            ),
            Rejection::Invalid(rule) => error_response(
                StatusCode::BAD_REQUEST,
                INVALID_REQUEST,
                &format!("Invalid Request: {rule}"),
            ),
        }
    }
}

const DUPLICATE_KEY: &str = "an object has the same key twice";

/// Parses a body into a JSON-RPC 2.0 message object, refusing what JSON-RPC and MCP refuse: duplicate
/// object keys at any depth (which parsers resolve differently), batches, a missing or wrong `jsonrpc`,
/// and ids that are not a string or an integer (null, booleans, fractions, objects, arrays).
pub fn parse_message(body: &[u8]) -> Result<Map<String, Value>, Rejection> {
    let Strict(value) = serde_json::from_slice(body).map_err(|error| match error.classify() {
        serde_json::error::Category::Data => Rejection::Invalid(DUPLICATE_KEY),
        _ => Rejection::NotJson,
    })?;
    let Value::Object(message) = value else {
        return Err(Rejection::Invalid(
            "expected one JSON-RPC 2.0 message object (batches are not supported)",
        ));
    };
    if message.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err(Rejection::Invalid("\"jsonrpc\" must be \"2.0\""));
    }
    let is_request = message.get("method").is_some_and(Value::is_string);
    let is_response = message.contains_key("result") || message.contains_key("error");
    if !is_request && !is_response {
        return Err(Rejection::Invalid(
            "expected a JSON-RPC 2.0 request, notification or response object",
        ));
    }
    match message.get("id") {
        None | Some(Value::String(_)) => {}
        Some(Value::Number(number)) if number.is_i64() || number.is_u64() => {}
        Some(_) => return Err(Rejection::Invalid("\"id\" must be a string or an integer")),
    }
    Ok(message)
}

/// A JSON value whose objects have no duplicate keys (serde_json keeps the last one silently).
struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(Strict(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let mut map = Map::new();
        while let Some(key) = access.next_key::<String>()? {
            let Strict(value) = access.next_value()?;
            if map.insert(key, value).is_some() {
                return Err(de::Error::custom(DUPLICATE_KEY));
            }
        }
        Ok(Value::Object(map))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Map<String, Value>, Rejection> {
        parse_message(text.as_bytes())
    }

    #[test]
    fn requests_notifications_and_responses_with_good_ids_pass() {
        for text in [
            r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#,
            r#"{"jsonrpc":"2.0","id":"a-1","method":"ping"}"#,
            r#"{"jsonrpc":"2.0","id":-7,"method":"ping"}"#,
            r#"{"jsonrpc":"2.0","id":18446744073709551615,"method":"ping"}"#,
            r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
            r#"{"jsonrpc":"2.0","id":3,"result":{}}"#,
        ] {
            assert!(parse(text).is_ok(), "{text}");
        }
    }

    #[test]
    fn ids_that_are_not_strings_or_integers_are_invalid_requests() {
        for id in ["null", "true", "false", "1.5", "1e3", "{}", "[1]", r#"{"a":1}"#] {
            let text = format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"ping"}}"#);
            assert_eq!(
                parse(&text),
                Err(Rejection::Invalid("\"id\" must be a string or an integer")),
                "{text}"
            );
        }
    }

    #[test]
    fn duplicate_keys_at_any_depth_are_invalid_requests() {
        for text in [
            r#"{"jsonrpc":"2.0","id":1,"id":2,"method":"ping"}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","name":"b"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"x","params":{"l":[{"k":1,"k":1}]}}"#,
        ] {
            assert_eq!(parse(text), Err(Rejection::Invalid(DUPLICATE_KEY)), "{text}");
        }
    }

    #[test]
    fn broken_json_is_a_parse_error_and_other_shapes_are_invalid() {
        assert_eq!(parse(r#"{"jsonrpc": "2.0", bad"#), Err(Rejection::NotJson));
        assert_eq!(parse(""), Err(Rejection::NotJson));
        assert!(matches!(parse("[]"), Err(Rejection::Invalid(_))));
        assert!(matches!(
            parse(r#"{"hello":"world"}"#),
            Err(Rejection::Invalid(_))
        ));
        assert!(matches!(
            parse(r#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#),
            Err(Rejection::Invalid(_))
        ));
        assert!(matches!(
            parse(r#"{"jsonrpc":"2.0","id":1,"method":7}"#),
            Err(Rejection::Invalid(_))
        ));
    }

    #[test]
    fn values_survive_the_strict_parse_unchanged() {
        let text = r#"{"jsonrpc":"2.0","id":1,"method":"m","params":{"a":[1,-2,3.5,"x",null,true,{}]}}"#;
        let strict = Value::Object(parse(text).unwrap());
        let plain: Value = serde_json::from_str(text).unwrap();
        assert_eq!(strict, plain);
    }
}
