//! JSON-RPC at the HTTP boundary: the error answers the HTTP layer gives, and the one strict parse of a
//! request body (duplicate keys refused, ids checked) before anything else reads it. Pure: no I/O.

use std::{borrow::Cow, cell::Cell, collections::HashSet, fmt};

use axum::{
    Json,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::de::{self, Deserialize, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value, json};

use crate::tools::ToolName;

/// What the gate, the audit and the trace spans know of a JSON-RPC request: the method (from a fixed
/// list) and, for `tools/call`, the tool when it is one of ours. Never the arguments. Computed once, by the
/// body guard, and left in the request's extensions beside [`super::body::RpcMessage`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RpcPeek {
    pub method: &'static str,
    pub tool: Option<ToolName>,
}

const KNOWN_METHODS: [&str; 14] = [
    "initialize",
    "ping",
    "tools/list",
    "tools/call",
    "server/discover",
    "resources/list",
    "resources/read",
    "resources/templates/list",
    "prompts/list",
    "logging/setLevel",
    "completion/complete",
    "notifications/initialized",
    "notifications/cancelled",
    "notifications/progress",
];

fn known_method(name: &str) -> &'static str {
    KNOWN_METHODS
        .into_iter()
        .find(|known| *known == name)
        .unwrap_or("other")
}

impl RpcPeek {
    /// Reads the method and tool name of a parsed JSON-RPC message.
    pub fn of(message: &serde_json::Map<String, serde_json::Value>) -> RpcPeek {
        let method = match message.get("method").and_then(|m| m.as_str()) {
            Some(name) => known_method(name),
            None => "response",
        };
        let tool = if method == "tools/call" {
            message
                .get("params")
                .and_then(|p| p.get("name"))
                .and_then(|n| n.as_str())
                .and_then(ToolName::parse)
        } else {
            None
        };
        RpcPeek { method, tool }
    }

    /// What the `Mcp-Method` and `Mcp-Name` headers (sent by clients of the 2026 protocol revision) say,
    /// for audit events of requests refused before their body was read. Mapped to fixed lists.
    pub fn of_headers(headers: &HeaderMap) -> Option<RpcPeek> {
        let method = known_method(headers.get("mcp-method")?.to_str().ok()?);
        let tool = (method == "tools/call")
            .then(|| headers.get("mcp-name")?.to_str().ok().and_then(ToolName::parse))
            .flatten();
        Some(RpcPeek { method, tool })
    }

    pub fn is_tool_call(&self) -> bool {
        self.method == "tools/call"
    }

    /// Methods that cost work (a backend or engine call, or a large answer built): they go through the
    /// rate limits and the concurrency cap. `resources/read` builds an MCP Apps page of tens of KiB.
    pub fn costs_work(&self) -> bool {
        matches!(self.method, "tools/call" | "resources/read")
    }
}

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
const TOO_MANY_VALUES: &str = "the message has too many JSON values";

/// Most JSON values (objects, arrays, strings, numbers, literals) one message may hold. A tool's arguments
/// are at most a few thousand characters; this refuses a wide array or a flat object of many keys before
/// anything builds it in memory.
pub const MAX_JSON_VALUES: usize = 20_000;

/// Checks a body against JSON-RPC and MCP rules in one pass that builds only the envelope: duplicate object
/// keys at any depth (which parsers resolve differently), more than [`MAX_JSON_VALUES`] values, batches, a
/// missing or wrong `jsonrpc`, and ids that are not a string or an integer (null, booleans, fractions,
/// objects, arrays) are refused.
///
/// The map returned is the envelope, not the whole message: the top-level keys, with the values of
/// `jsonrpc`, `method` and `id` when they are scalars, and of `params` only `name` and the `traceparent`
/// and `tracestate` of `_meta`; every other value is `null`. The MCP SDK parses the message itself, so the
/// body is built into a tree once.
pub fn parse_message(body: &[u8]) -> Result<Map<String, Value>, Rejection> {
    let context = Context {
        budget: Cell::new(MAX_JSON_VALUES),
        failure: Cell::new(None),
    };
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let parsed = Envelope(&context)
        .deserialize(&mut deserializer)
        .and_then(|envelope| deserializer.end().map(|()| envelope));
    let envelope = parsed.map_err(|error| match (error.classify(), context.failure.get()) {
        (serde_json::error::Category::Data, Some(rule)) => Rejection::Invalid(rule),
        (serde_json::error::Category::Data, None) => Rejection::Invalid(DUPLICATE_KEY),
        _ => Rejection::NotJson,
    })?;
    let Some(message) = envelope else {
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

/// The budget of values left, and the rule a refusal broke.
struct Context {
    budget: Cell<usize>,
    failure: Cell<Option<&'static str>>,
}

impl Context {
    fn fail<E: de::Error>(&self, rule: &'static str) -> E {
        self.failure.set(Some(rule));
        E::custom(rule)
    }

    /// Counts one value against the budget.
    fn count<E: de::Error>(&self) -> Result<(), E> {
        match self.budget.get().checked_sub(1) {
            Some(left) => {
                self.budget.set(left);
                Ok(())
            }
            None => Err(self.fail(TOO_MANY_VALUES)),
        }
    }

    /// Reads the keys of an object, refusing a duplicate; `value` reads the value of each key.
    fn keys<'de, A: MapAccess<'de>>(
        &self,
        mut access: A,
        mut value: impl FnMut(&mut A, &str) -> Result<(), A::Error>,
    ) -> Result<(), A::Error> {
        self.count()?;
        let mut seen: Vec<Cow<'de, str>> = Vec::new();
        let mut many: Option<HashSet<Cow<'de, str>>> = None;
        while let Some(Key(key)) = access.next_key()? {
            let duplicate = match &mut many {
                Some(set) => !set.insert(key.clone()),
                None if seen.contains(&key) => true,
                None => {
                    seen.push(key.clone());
                    if seen.len() > 16 {
                        many = Some(std::mem::take(&mut seen).into_iter().collect());
                    }
                    false
                }
            };
            if duplicate {
                return Err(self.fail(DUPLICATE_KEY));
            }
            value(&mut access, &key)?;
        }
        Ok(())
    }
}

/// An object key, borrowed from the body when it has no escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

/// What to keep of a value: nothing (checked only), a scalar, `params`, or `params._meta`.
#[derive(Clone, Copy)]
enum Keep {
    Nothing,
    Scalar,
    Params,
    Meta,
}

/// Reads any JSON value under the rules, keeping what `Keep` says (`Value::Null` for the rest).
struct Checked<'c> {
    context: &'c Context,
    keep: Keep,
}

impl<'de> DeserializeSeed<'de> for Checked<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Checked<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        self.context.count()?;
        Ok(self.scalar(|| Value::Bool(v)))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        self.context.count()?;
        Ok(self.scalar(|| Value::Number(v.into())))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        self.context.count()?;
        Ok(self.scalar(|| Value::Number(v.into())))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        self.context.count()?;
        Ok(self.scalar(|| Number::from_f64(v).map_or(Value::Null, Value::Number)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        self.context.count()?;
        Ok(self.scalar(|| Value::String(v.to_owned())))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        self.context.count()?;
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        self.context.count()?;
        while seq
            .next_element_seed(Checked {
                context: self.context,
                keep: Keep::Nothing,
            })?
            .is_some()
        {}
        Ok(Value::Null)
    }

    fn visit_map<A: MapAccess<'de>>(self, access: A) -> Result<Value, A::Error> {
        let context = self.context;
        let mut kept = Map::new();
        context.keys(access, |access, key| {
            let keep = match (self.keep, key) {
                (Keep::Params, "name") => Keep::Scalar,
                (Keep::Params, "_meta") => Keep::Meta,
                (Keep::Meta, "traceparent" | "tracestate") => Keep::Scalar,
                _ => Keep::Nothing,
            };
            let value = access.next_value_seed(Checked { context, keep })?;
            if !matches!(keep, Keep::Nothing) {
                kept.insert(key.to_owned(), value);
            }
            Ok(())
        })?;
        Ok(match self.keep {
            Keep::Params | Keep::Meta => Value::Object(kept),
            _ => Value::Null,
        })
    }
}

impl Checked<'_> {
    fn scalar(&self, value: impl FnOnce() -> Value) -> Value {
        match self.keep {
            Keep::Scalar => value(),
            _ => Value::Null,
        }
    }
}

/// The whole message: `Some(envelope)` for an object, `None` for anything else (checked all the same).
struct Envelope<'c>(&'c Context);

impl<'de> DeserializeSeed<'de> for Envelope<'_> {
    type Value = Option<Map<String, Value>>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Envelope<'_> {
    type Value = Option<Map<String, Value>>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        Checked {
            context: self.0,
            keep: Keep::Nothing,
        }
        .visit_seq(seq)
        .map(|_| None)
    }

    fn visit_map<A: MapAccess<'de>>(self, access: A) -> Result<Self::Value, A::Error> {
        let context = self.0;
        let mut envelope = Map::new();
        context.keys(access, |access, key| {
            let keep = match key {
                "jsonrpc" | "method" | "id" => Keep::Scalar,
                "params" => Keep::Params,
                _ => Keep::Nothing,
            };
            let value = access.next_value_seed(Checked { context, keep })?;
            envelope.insert(key.to_owned(), value);
            Ok(())
        })?;
        Ok(Some(envelope))
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
    fn the_envelope_keeps_what_the_layers_read_and_nothing_else() {
        let text = r#"{"jsonrpc":"2.0","id":"a\u002d1","method":"tools/call","params":{"name":"t","arguments":
            {"q":"secret","l":[1,-2,3.5,"x",null,true,{}]},"_meta":{"traceparent":"00-ab","progressToken":7}}}"#;
        let envelope = Value::Object(parse(text).unwrap());
        assert_eq!(
            envelope,
            serde_json::json!({"jsonrpc": "2.0", "id": "a-1", "method": "tools/call",
                "params": {"name": "t", "_meta": {"traceparent": "00-ab"}}})
        );
        let response = parse(r#"{"jsonrpc":"2.0","id":3,"result":{"big":[1,2,3]}}"#).unwrap();
        assert_eq!(response.get("result"), Some(&Value::Null));
    }

    #[test]
    fn wide_messages_are_refused_before_they_are_built() {
        let wide = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"t","arguments":{{"a":[{}]}}}}}}"#,
            vec!["0"; MAX_JSON_VALUES].join(",")
        );
        assert_eq!(parse(&wide), Err(Rejection::Invalid(TOO_MANY_VALUES)));
        let keys: Vec<String> = (0..MAX_JSON_VALUES).map(|i| format!(r#""k{i}":0"#)).collect();
        let flat = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"x","params":{{{}}}}}"#,
            keys.join(",")
        );
        assert_eq!(parse(&flat), Err(Rejection::Invalid(TOO_MANY_VALUES)));
        // Duplicates among many keys are found too.
        let mut keys: Vec<String> = (0..100).map(|i| format!(r#""k{i}":0"#)).collect();
        keys.push(r#""k42":1"#.into());
        let duplicate = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"x","params":{{{}}}}}"#,
            keys.join(",")
        );
        assert_eq!(parse(&duplicate), Err(Rejection::Invalid(DUPLICATE_KEY)));
        // Trailing bytes after the message are not JSON-RPC.
        assert_eq!(
            parse(r#"{"jsonrpc":"2.0","id":1,"method":"x"} {}"#),
            Err(Rejection::NotJson)
        );
    }
}
