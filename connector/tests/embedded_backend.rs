//! The nine tools answered by the embedded engine on the bundled demo datasets, through MCP.

mod support;

use lumenore_connector::{backend::lumenore::Credentials, config::BackendKind};
use serde_json::json;
use support::*;

#[tokio::test]
async fn all_nine_tools_answer_offline_with_their_plan() {
    let mut config = config_for("http://127.0.0.1:9");
    config.backend = BackendKind::Embedded;
    let server = start(config, Credentials::Missing, false).await;

    let datasets = call_tool(&server.mcp, "get_dataset_metadata", json!({})).await;
    let text = envelope(&datasets)["data"].to_string();
    for id in ["35403", "35404", "35405"] {
        assert!(text.contains(id), "dataset {id} missing: {text}");
    }
    let columns = call_tool(&server.mcp, "get_metadata_info", json!({"schemaId": 35403})).await;
    assert_eq!(envelope(&columns)["status"], "success", "{columns}");
    assert!(envelope(&columns)["data"].to_string().contains("revenue"));

    let questions = [
        (
            "nlq_to_data",
            "Show me total sales by region for Q4 2024, sorted by highest sales",
            35403,
        ),
        (
            "get_trend_data",
            "What are the monthly sales trends for Q4 2024?",
            35403,
        ),
        (
            "get_prediction_data",
            "Forecast monthly revenue for the next 3 months",
            35403,
        ),
        ("get_outlier_data", "Find unusual daily revenue in 2025", 35403),
        (
            "get_correlation_data",
            "How do units and revenue correlate?",
            35403,
        ),
        (
            "get_change_data",
            "Show monthly demand for each product category over the past year",
            35405,
        ),
        (
            "get_pareto_data",
            "Which products contribute to 80% of our sales?",
            35403,
        ),
    ];
    for (tool, question, schema_id) in questions {
        let result = call_tool(
            &server.mcp,
            tool,
            json!({"userQuery": question, "schemaId": schema_id}),
        )
        .await;
        let answer = envelope(&result);
        assert_eq!(answer["status"], "success", "{tool}: {result}");
        assert!(
            answer["data"]["plan"].is_object(),
            "{tool} answer has no plan: {answer}"
        );
        assert!(
            answer["data"]["sql"].is_string(),
            "{tool} answer has no SQL: {answer}"
        );
    }

    let refused = call_tool(
        &server.mcp,
        "nlq_to_data",
        json!({"userQuery": "what is the meaning of life", "schemaId": 35403}),
    )
    .await;
    assert_eq!(envelope(&refused)["status"], "validation_error");
    assert!(
        envelope(&refused)["error"]
            .as_str()
            .unwrap()
            .contains("did not understand")
    );
    let unknown = call_tool(
        &server.mcp,
        "nlq_to_data",
        json!({"userQuery": "total sales", "schemaId": 1}),
    )
    .await;
    assert_eq!(envelope(&unknown)["status"], "validation_error");
}
