//! The tool contract: names, titles, descriptions, schemas and annotations of the nine tools (kept from the
//! original Python server so existing prompts keep working), and validation of their arguments. Pure: no I/O.

pub mod envelope;
pub mod validate;

use std::sync::Arc;

use rmcp::model::{JsonObject, Tool, ToolAnnotations};
use serde_json::{Value, json};

pub use validate::{ToolCall, ValidationError, validate_call};

/// The tool names, the analysis kinds and the typed call are the fleet's contract
/// (`lumenore-contract`): the embedded engine answers them and the operator's tests name them too.
pub use lumenore_contract::{AnalysisKind, ToolName};

/// What MCP says about a tool: its definition, made from the contract's name.
trait ToolText {
    fn title(self) -> &'static str;
    fn description(self) -> &'static str;
    fn input_schema(self) -> Value;
    fn has_chart_view(self) -> bool;
}

impl ToolText for ToolName {
    fn title(self) -> &'static str {
        match self {
            ToolName::GetDatasetMetadata => "List datasets",
            ToolName::GetMetadataInfo => "Describe a dataset's columns",
            ToolName::NlqToData => "Answer a question with data",
            ToolName::Analysis(AnalysisKind::Trend) => "Trend analysis",
            ToolName::Analysis(AnalysisKind::Prediction) => "Forecast",
            ToolName::Analysis(AnalysisKind::Outlier) => "Outlier detection",
            ToolName::Analysis(AnalysisKind::Correlation) => "Correlation analysis",
            ToolName::Analysis(AnalysisKind::Change) => "Change detection",
            ToolName::Analysis(AnalysisKind::Pareto) => "Pareto (80/20) analysis",
        }
    }

    fn description(self) -> &'static str {
        match self {
            ToolName::GetDatasetMetadata => {
                "Lists the datasets this tenant can query, with their schema ids, names and descriptions. \
                 Call it first to find the schemaId for the other tools."
            }
            ToolName::GetMetadataInfo => {
                "Describes one dataset: its columns, their roles (measure, dimension, time), aliases, units \
                 and descriptions. Use it to phrase questions with the right column names."
            }
            ToolName::NlqToData => {
                "Answers a natural-language question about one dataset with data, e.g. \"Top 5 sales regions \
                 last month\". Be specific about measures, groupings, filters and time ranges."
            }
            ToolName::Analysis(AnalysisKind::Trend) => {
                "Finds the trend of a measure over time: the series, its slope, percent change and whether \
                 the trend is significant."
            }
            ToolName::Analysis(AnalysisKind::Prediction) => {
                "Forecasts a measure over time with prediction intervals; say the horizon in the question \
                 (e.g. \"next 3 months\")."
            }
            ToolName::Analysis(AnalysisKind::Outlier) => {
                "Detects unusual values of a measure and explains why each flagged point stands out."
            }
            ToolName::Analysis(AnalysisKind::Correlation) => {
                "Measures how strongly measures move together (Pearson and Spearman), with the strength in words."
            }
            ToolName::Analysis(AnalysisKind::Change) => {
                "Finds points where a measure's level shifted, the levels before and after, and what drove the change."
            }
            ToolName::Analysis(AnalysisKind::Pareto) => {
                "Performs an 80/20 analysis: which members of a dimension contribute 80% of a measure."
            }
        }
    }

    fn input_schema(self) -> Value {
        // Language models often send ids as strings or floats: a string of digits and an integral number
        // (35403.0) are accepted too, as the original server accepted them.
        let schema_id = json!({
            "anyOf": [
                { "type": "integer", "minimum": 1 },
                { "type": "string", "pattern": "^[0-9]{1,18}$" }
            ],
            "description": "Numeric id of the dataset, from get_dataset_metadata (a positive integer, or a string of digits)."
        });
        let user_query = json!({
            "type": "string",
            "minLength": 1,
            "maxLength": validate::MAX_QUERY_CHARS,
            "description": "The question in natural language, e.g. \"Show me total sales by region for Q4 2024\"."
        });
        match self {
            ToolName::GetDatasetMetadata => json!({
                "type": "object",
                "properties": {},
                "additionalProperties": false
            }),
            ToolName::GetMetadataInfo => json!({
                "type": "object",
                "properties": { "schemaId": schema_id },
                "required": ["schemaId"],
                "additionalProperties": false
            }),
            ToolName::NlqToData | ToolName::Analysis(_) => json!({
                "type": "object",
                "properties": { "userQuery": user_query, "schemaId": schema_id },
                "required": ["userQuery", "schemaId"],
                "additionalProperties": false
            }),
        }
    }

    /// Whether MCP Apps hosts show the chart view (crate::ui) next to this tool's answer: the tools that
    /// answer with data. The two metadata tools answer with catalog descriptions, which read better as JSON.
    fn has_chart_view(self) -> bool {
        matches!(self, ToolName::NlqToData | ToolName::Analysis(_))
    }
}

/// The MCP tool definition of `name`.
pub fn definition(name: ToolName) -> Tool {
    let annotations = ToolAnnotations::with_title(name.title())
        .read_only(true)
        .destructive(false)
        .idempotent(true)
        // The Lumenore backend is a closed system of the tenant's own data, not the open web.
        .open_world(false);
    let mut tool = Tool::new(name.as_str(), name.description(), as_object(name.input_schema()))
        .with_title(name.title())
        .with_annotations(annotations);
    tool = tool.with_raw_output_schema(as_object(envelope::output_schema()));
    if name.has_chart_view() {
        tool = tool.with_meta(crate::ui::tool_meta());
    }
    tool
}

fn as_object(value: Value) -> Arc<JsonObject> {
    match value {
        Value::Object(map) => Arc::new(map),
        // The schemas above are object literals; anything else is a programming error caught by tests.
        other => unreachable!("tool schema must be a JSON object, got {other}"),
    }
}

/// All nine tool definitions, in a stable order.
pub fn definitions() -> Vec<Tool> {
    ToolName::ALL.into_iter().map(definition).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_contract_snapshot() {
        // A change to names, schemas or annotations must be deliberate: review and accept the snapshot.
        let tools = serde_json::to_value(definitions()).unwrap();
        insta::assert_json_snapshot!("tool_contract", tools);
    }

    #[test]
    fn every_tool_is_read_only_idempotent_and_described() {
        for tool in definitions() {
            let annotations = tool.annotations.as_ref().unwrap();
            assert_eq!(annotations.read_only_hint, Some(true), "{}", tool.name);
            assert_eq!(annotations.idempotent_hint, Some(true), "{}", tool.name);
            assert_eq!(annotations.destructive_hint, Some(false), "{}", tool.name);
            assert!(tool.title.is_some() && tool.description.is_some() && tool.output_schema.is_some());
        }
    }
}
