//! Validation of tool arguments. Failures name the field and the rule, and become MCP tool errors with
//! `status: "validation_error"`, so the assistant can correct itself. Error texts never quote the value.

use rmcp::model::JsonObject;
use serde_json::Value;

use super::ToolName;

/// Longest accepted question, in characters.
pub const MAX_QUERY_CHARS: usize = 5000;

/// One tool call, parsed once: the tool and its validated arguments in one value (`lumenore-contract`), so
/// a tool can never be paired with another tool's arguments. The handler hands this same value to the
/// backend (`Backend::call`).
pub use lumenore_contract::ToolCall;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {rule}")]
pub struct ValidationError {
    pub field: String,
    pub rule: &'static str,
}

impl ValidationError {
    fn new(field: impl Into<String>, rule: &'static str) -> Self {
        Self {
            field: field.into(),
            rule,
        }
    }
}

/// The rule a `schemaId` must follow, said the same way in every refusal (the input schema says that a
/// string of digits is a positive integer too).
const SCHEMA_ID_RULE: &str = "must be a positive integer";

/// A schema id: a positive integer, also accepted as an integral float (`35403.0`) or a string of digits
/// (`"35403"`), as language models often send ids that way and the original server coerced them.
fn schema_id(args: &JsonObject) -> Result<i64, ValidationError> {
    let refused = || ValidationError::new("schemaId", SCHEMA_ID_RULE);
    let id = match args.get("schemaId") {
        None | Some(Value::Null) => return Err(ValidationError::new("schemaId", "is required")),
        Some(Value::Number(number)) => match (number.as_i64(), number.as_f64()) {
            (Some(id), _) => id,
            // Integral floats up to 2^53 are exact; beyond that a float does not name one id.
            (None, Some(float)) if float.fract() == 0.0 && float.abs() <= 9_007_199_254_740_992.0 => {
                float as i64
            }
            _ => return Err(refused()),
        },
        Some(Value::String(text)) => {
            if text.is_empty() || text.len() > 18 || !text.bytes().all(|byte| byte.is_ascii_digit()) {
                return Err(refused());
            }
            text.parse::<i64>().map_err(|_| refused())?
        }
        Some(_) => return Err(refused()),
    };
    if id > 0 { Ok(id) } else { Err(refused()) }
}

fn user_query(args: &JsonObject) -> Result<String, ValidationError> {
    match args.get("userQuery") {
        None | Some(Value::Null) => Err(ValidationError::new("userQuery", "is required")),
        Some(Value::String(text)) => {
            if text.trim().is_empty() {
                Err(ValidationError::new("userQuery", "must not be blank"))
            } else if text.chars().count() > MAX_QUERY_CHARS {
                Err(ValidationError::new(
                    "userQuery",
                    "must be at most 5000 characters",
                ))
            } else {
                Ok(text.clone())
            }
        }
        Some(_) => Err(ValidationError::new("userQuery", "must be a string")),
    }
}

fn reject_unknown(args: &JsonObject, allowed: &[&str]) -> Result<(), ValidationError> {
    match args.keys().find(|key| !allowed.contains(&key.as_str())) {
        // The key is the caller's own text, returned only to the caller; it is never logged.
        Some(key) => Err(ValidationError::new(
            key.chars().take(64).collect::<String>(),
            "is not an argument of this tool",
        )),
        None => Ok(()),
    }
}

/// Checks the arguments of `tool` and returns the typed call.
pub fn validate_call(tool: ToolName, args: Option<&JsonObject>) -> Result<ToolCall, ValidationError> {
    let empty = JsonObject::new();
    let args = args.unwrap_or(&empty);
    match tool {
        ToolName::GetDatasetMetadata => {
            reject_unknown(args, &[])?;
            Ok(ToolCall::DatasetMetadata)
        }
        ToolName::GetMetadataInfo => {
            reject_unknown(args, &["schemaId"])?;
            Ok(ToolCall::MetadataInfo {
                schema_id: schema_id(args)?,
            })
        }
        ToolName::NlqToData | ToolName::Analysis(_) => {
            reject_unknown(args, &["userQuery", "schemaId"])?;
            let user_query = user_query(args)?;
            let schema_id = schema_id(args)?;
            Ok(match tool {
                ToolName::Analysis(kind) => ToolCall::Analysis {
                    kind,
                    user_query,
                    schema_id,
                },
                _ => ToolCall::NlqToData {
                    user_query,
                    schema_id,
                },
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(value: Value) -> JsonObject {
        value.as_object().unwrap().clone()
    }

    fn check(value: Value) -> Result<ToolCall, ValidationError> {
        validate_call(ToolName::NlqToData, Some(&obj(value)))
    }

    #[test]
    fn accepts_valid_query() {
        assert_eq!(
            check(json!({"userQuery": "Top 5 sales regions last month", "schemaId": 35403})),
            Ok(ToolCall::NlqToData {
                user_query: "Top 5 sales regions last month".into(),
                schema_id: 35403
            })
        );
    }

    #[test]
    fn names_field_and_rule() {
        let cases = [
            (json!({"schemaId": 1}), "userQuery: is required"),
            (
                json!({"userQuery": "   ", "schemaId": 1}),
                "userQuery: must not be blank",
            ),
            (
                json!({"userQuery": 5, "schemaId": 1}),
                "userQuery: must be a string",
            ),
            (json!({"userQuery": "q"}), "schemaId: is required"),
            (
                json!({"userQuery": "q", "schemaId": "35x"}),
                "schemaId: must be a positive integer",
            ),
            (
                json!({"userQuery": "q", "schemaId": "-3"}),
                "schemaId: must be a positive integer",
            ),
            (
                json!({"userQuery": "q", "schemaId": " 35403"}),
                "schemaId: must be a positive integer",
            ),
            (
                json!({"userQuery": "q", "schemaId": "0"}),
                "schemaId: must be a positive integer",
            ),
            (
                json!({"userQuery": "q", "schemaId": ""}),
                "schemaId: must be a positive integer",
            ),
            (
                json!({"userQuery": "q", "schemaId": "99999999999999999999"}),
                "schemaId: must be a positive integer",
            ),
            (
                json!({"userQuery": "q", "schemaId": 0}),
                "schemaId: must be a positive integer",
            ),
            (
                json!({"userQuery": "q", "schemaId": -3}),
                "schemaId: must be a positive integer",
            ),
            (
                json!({"userQuery": "q", "schemaId": 1.5}),
                "schemaId: must be a positive integer",
            ),
            (
                json!({"userQuery": "q", "schemaId": 1e300}),
                "schemaId: must be a positive integer",
            ),
            (
                json!({"userQuery": "q", "schemaId": [35403]}),
                "schemaId: must be a positive integer",
            ),
            (
                json!({"userQuery": "q", "schemaId": true}),
                "schemaId: must be a positive integer",
            ),
            (
                json!({"userQuery": "q", "schemaId": 1, "schema_id": 2}),
                "schema_id: is not an argument of this tool",
            ),
        ];
        for (args, expected) in cases {
            assert_eq!(check(args.clone()).unwrap_err().to_string(), expected, "{args}");
        }
    }

    #[test]
    fn schema_ids_sent_as_digit_strings_or_integral_floats_are_accepted() {
        // As the original server coerced them (recorded: val_schemaId_string, val_schemaId_float).
        for id in [json!(35403), json!("35403"), json!(35403.0), json!("0035403")] {
            assert_eq!(
                check(json!({"userQuery": "q", "schemaId": id.clone()})),
                Ok(ToolCall::NlqToData {
                    user_query: "q".into(),
                    schema_id: 35403
                }),
                "{id}"
            );
        }
    }

    #[test]
    fn query_length_is_counted_in_characters() {
        let at_limit = "é".repeat(MAX_QUERY_CHARS);
        assert!(check(json!({"userQuery": at_limit, "schemaId": 1})).is_ok());
        let over = "a".repeat(MAX_QUERY_CHARS + 1);
        assert_eq!(
            check(json!({"userQuery": over, "schemaId": 1}))
                .unwrap_err()
                .to_string(),
            "userQuery: must be at most 5000 characters"
        );
    }

    #[test]
    fn metadata_tools() {
        assert_eq!(
            validate_call(ToolName::GetDatasetMetadata, None),
            Ok(ToolCall::DatasetMetadata)
        );
        assert_eq!(
            validate_call(ToolName::GetMetadataInfo, Some(&obj(json!({"schemaId": 7})))),
            Ok(ToolCall::MetadataInfo { schema_id: 7 })
        );
        assert!(validate_call(ToolName::GetMetadataInfo, None).is_err());
    }

    #[test]
    fn every_tool_gets_its_own_call_shape() {
        let query = obj(json!({"userQuery": "q", "schemaId": 3}));
        for tool in ToolName::ALL {
            let args = match tool {
                ToolName::GetDatasetMetadata => None,
                ToolName::GetMetadataInfo => Some(obj(json!({"schemaId": 3}))),
                _ => Some(query.clone()),
            };
            let call = validate_call(tool, args.as_ref()).unwrap();
            assert_eq!(call.tool(), tool);
        }
    }
}
