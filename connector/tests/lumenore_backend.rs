//! The Lumenore backend client, driven through MCP tool calls against a mock Lumenore server.

mod support;

use std::time::Duration;

use serde_json::json;
use support::*;
use wiremock::{
    Mock, MockServer, ResponseTemplate,
    matchers::{body_json, header, method, path},
};

fn login_ok(token: &str) -> ResponseTemplate {
    ResponseTemplate::new(200)
        .insert_header(
            "set-cookie",
            format!("access_token={token}; Path=/; HttpOnly; Secure").as_str(),
        )
        .set_body_json(json!({"status": "ok"}))
}

async fn mount_login(server: &MockServer, token: &str, times: Option<u64>) {
    let mock = Mock::given(method("POST"))
        .and(path("/api/secure/client/user-login"))
        .and(body_json(
            json!({"data": {"clientId": "the-id", "secret": "the-secret"}}),
        ))
        .respond_with(login_ok(token));
    let mock = match times {
        Some(n) => mock.up_to_n_times(n),
        None => mock,
    };
    mock.mount(server).await;
}

#[tokio::test]
async fn logs_in_with_client_credentials_and_sends_the_cookie_token_as_bearer() {
    let backend = MockServer::start().await;
    mount_login(&backend, "T1", None).await;
    Mock::given(method("GET"))
        .and(path("/api/askme-manager/get-domain"))
        .and(header("authorization", "Bearer T1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"domains": [{"id": 35403}]})))
        .expect(1)
        .mount(&backend)
        .await;
    let server = start(
        config_for(&backend.uri()),
        client_credentials("the-id", "the-secret"),
        false,
    )
    .await;
    let result = call_tool(&server.mcp, "get_dataset_metadata", json!({})).await;
    assert_eq!(result["isError"], false, "{result}");
    assert_eq!(
        envelope(&result),
        &json!({"status": "success", "data": {"domains": [{"id": 35403}]}})
    );
}

#[tokio::test]
async fn every_tool_reaches_its_endpoint_with_the_documented_body() {
    let backend = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/askme-manager/metadata/get/35403"))
        .and(body_json(
            json!({"data": {"columns": ["description", "column_name", "column_alias",
            "column_type", "unit", "column_datatype_name", "date_format"], "domainId": 35403}}),
        ))
        .and(header("authorization", "static-token"))
        .and(header("accept", "application/json"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"columns": ["region"]})))
        .expect(1)
        .mount(&backend)
        .await;
    for (tool, endpoint) in [
        ("nlq_to_data", "nlq-to-data"),
        ("get_trend_data", "get-trend-data"),
        ("get_prediction_data", "get-prediction-data"),
        ("get_outlier_data", "get-outlier-data"),
        ("get_correlation_data", "get-correlation-data"),
        ("get_change_data", "get-change-data"),
        ("get_pareto_data", "get-pareto-data"),
    ] {
        Mock::given(method("POST"))
            .and(path(format!("/api/ai-engine/mcp/{endpoint}")))
            .and(header("authorization", "static-token"))
            .and(header("accept", "application/json"))
            .and(body_json(
                json!({"userQuery": format!("question for {tool}"), "schemaId": 35403}),
            ))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({"answer": tool})))
            .expect(1)
            .mount(&backend)
            .await;
    }
    let credentials =
        lumenore_connector::backend::lumenore::Credentials::StaticToken("static-token".to_string().into());
    let server = start(config_for(&backend.uri()), credentials, false).await;
    let result = call_tool(&server.mcp, "get_metadata_info", json!({"schemaId": 35403})).await;
    assert_eq!(envelope(&result)["data"], json!({"columns": ["region"]}));
    for tool in QUERY_TOOLS {
        let result = call_tool(
            &server.mcp,
            tool,
            json!({"userQuery": format!("question for {tool}"), "schemaId": 35403}),
        )
        .await;
        assert_eq!(
            envelope(&result),
            &json!({"status": "success", "data": {"answer": tool}}),
            "{tool}"
        );
    }
}

#[tokio::test]
async fn concurrent_first_calls_share_one_login() {
    let backend = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/secure/client/user-login"))
        .respond_with(login_ok("T1").set_delay(Duration::from_millis(300)))
        .expect(1)
        .mount(&backend)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/askme-manager/get-domain"))
        .and(header("authorization", "Bearer T1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!([])))
        .expect(16)
        .mount(&backend)
        .await;
    let server = start(
        config_for(&backend.uri()),
        client_credentials("the-id", "the-secret"),
        false,
    )
    .await;
    let calls = (0..16).map(|_| call_tool(&server.mcp, "get_dataset_metadata", json!({})));
    for result in futures::future::join_all(calls).await {
        assert_eq!(envelope(&result)["status"], "success", "{result}");
    }
}

#[tokio::test]
async fn an_expired_token_triggers_one_relogin_and_one_retry() {
    let backend = MockServer::start().await;
    mount_login(&backend, "OLD", Some(1)).await;
    mount_login(&backend, "NEW", Some(1)).await;
    Mock::given(method("GET"))
        .and(path("/api/askme-manager/get-domain"))
        .and(header("authorization", "Bearer OLD"))
        .respond_with(ResponseTemplate::new(401))
        .expect(1)
        .mount(&backend)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/askme-manager/get-domain"))
        .and(header("authorization", "Bearer NEW"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"ok": true})))
        .expect(1)
        .mount(&backend)
        .await;
    let server = start(
        config_for(&backend.uri()),
        client_credentials("the-id", "the-secret"),
        false,
    )
    .await;
    let result = call_tool(&server.mcp, "get_dataset_metadata", json!({})).await;
    assert_eq!(
        envelope(&result),
        &json!({"status": "success", "data": {"ok": true}})
    );
}

#[tokio::test]
async fn credentials_rejected_after_relogin_is_a_clean_error_with_two_logins_only() {
    let backend = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/secure/client/user-login"))
        .respond_with(login_ok("T"))
        .expect(2)
        .mount(&backend)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/askme-manager/get-domain"))
        .respond_with(ResponseTemplate::new(401))
        .expect(2)
        .mount(&backend)
        .await;
    let server = start(
        config_for(&backend.uri()),
        client_credentials("the-id", "the-secret"),
        false,
    )
    .await;
    let result = call_tool(&server.mcp, "get_dataset_metadata", json!({})).await;
    assert_eq!(result["isError"], true);
    assert_eq!(
        envelope(&result),
        &json!({"status": "error", "error": "the Lumenore backend rejected the connector's credentials"})
    );
}

#[tokio::test]
async fn a_rejected_login_is_reported_without_retrying() {
    let backend = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/secure/client/user-login"))
        .respond_with(ResponseTemplate::new(401))
        .expect(1)
        .mount(&backend)
        .await;
    let server = start(
        config_for(&backend.uri()),
        client_credentials("the-id", "the-secret"),
        false,
    )
    .await;
    let result = call_tool(
        &server.mcp,
        "nlq_to_data",
        json!({"userQuery": "q", "schemaId": 1}),
    )
    .await;
    assert_eq!(
        envelope(&result)["error"],
        "the Lumenore backend rejected the connector's credentials"
    );
}

#[tokio::test]
async fn a_login_without_the_cookie_is_reported() {
    let backend = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/secure/client/user-login"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"status": "ok"})))
        .mount(&backend)
        .await;
    let server = start(
        config_for(&backend.uri()),
        client_credentials("the-id", "the-secret"),
        false,
    )
    .await;
    let result = call_tool(&server.mcp, "get_dataset_metadata", json!({})).await;
    assert_eq!(
        envelope(&result)["error"],
        "the Lumenore backend login answered without an access_token cookie"
    );
}

#[tokio::test]
async fn a_static_token_never_logs_in_and_a_401_is_final() {
    let backend = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/secure/client/user-login"))
        .respond_with(login_ok("X"))
        .expect(0)
        .mount(&backend)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/askme-manager/get-domain"))
        .respond_with(ResponseTemplate::new(401))
        .expect(1)
        .mount(&backend)
        .await;
    let credentials =
        lumenore_connector::backend::lumenore::Credentials::StaticToken("tok".to_string().into());
    let server = start(config_for(&backend.uri()), credentials, false).await;
    let result = call_tool(&server.mcp, "get_dataset_metadata", json!({})).await;
    assert_eq!(
        envelope(&result)["error"],
        "the Lumenore backend rejected the connector's credentials"
    );
}

#[tokio::test]
async fn gateway_errors_are_retried_then_succeed() {
    let backend = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/askme-manager/get-domain"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(2)
        .expect(2)
        .mount(&backend)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/askme-manager/get-domain"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"ok": 1})))
        .expect(1)
        .mount(&backend)
        .await;
    let credentials =
        lumenore_connector::backend::lumenore::Credentials::StaticToken("tok".to_string().into());
    let server = start(config_for(&backend.uri()), credentials, false).await;
    let result = call_tool(&server.mcp, "get_dataset_metadata", json!({})).await;
    assert_eq!(envelope(&result)["status"], "success", "{result}");
}

#[tokio::test]
async fn retries_are_bounded_and_other_errors_are_not_retried() {
    let backend = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/ai-engine/mcp/get-trend-data"))
        .respond_with(ResponseTemplate::new(502))
        .expect(3) // first try + max_retries (2)
        .mount(&backend)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/ai-engine/mcp/get-pareto-data"))
        .respond_with(ResponseTemplate::new(500))
        .expect(1)
        .mount(&backend)
        .await;
    let credentials =
        lumenore_connector::backend::lumenore::Credentials::StaticToken("tok".to_string().into());
    let server = start(config_for(&backend.uri()), credentials, false).await;
    let trend = call_tool(
        &server.mcp,
        "get_trend_data",
        json!({"userQuery": "q", "schemaId": 1}),
    )
    .await;
    assert_eq!(
        envelope(&trend)["error"],
        "the Lumenore backend answered HTTP 502"
    );
    let pareto = call_tool(
        &server.mcp,
        "get_pareto_data",
        json!({"userQuery": "q", "schemaId": 1}),
    )
    .await;
    assert_eq!(
        envelope(&pareto)["error"],
        "the Lumenore backend answered HTTP 500"
    );
    let metrics = server.metrics.encode();
    assert!(
        metrics.contains(r#"backend_errors_total{class="http_5xx"} 2"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_slow_backend_times_out_with_a_clear_error() {
    let backend = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/ai-engine/mcp/nlq-to-data"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({}))
                .set_delay(Duration::from_secs(3)),
        )
        .mount(&backend)
        .await;
    let mut config = config_for(&backend.uri());
    config.request_timeout = Duration::from_millis(300);
    let credentials =
        lumenore_connector::backend::lumenore::Credentials::StaticToken("tok".to_string().into());
    let server = start(config, credentials, false).await;
    let result = call_tool(
        &server.mcp,
        "nlq_to_data",
        json!({"userQuery": "q", "schemaId": 1}),
    )
    .await;
    assert_eq!(
        envelope(&result)["error"],
        "the Lumenore backend sent nothing for 300ms"
    );
}

#[tokio::test]
async fn malformed_json_and_unreachable_backends_are_clean_errors() {
    let backend = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/askme-manager/get-domain"))
        .respond_with(ResponseTemplate::new(200).set_body_string("<html>gateway</html>"))
        .mount(&backend)
        .await;
    let credentials =
        lumenore_connector::backend::lumenore::Credentials::StaticToken("tok".to_string().into());
    let server = start(config_for(&backend.uri()), credentials.clone(), false).await;
    let result = call_tool(&server.mcp, "get_dataset_metadata", json!({})).await;
    assert_eq!(
        envelope(&result)["error"],
        "the Lumenore backend sent a response that is not valid JSON: it sent text/plain"
    );

    // A port nobody listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let server = start(config_for(&url), credentials, false).await;
    let result = call_tool(&server.mcp, "get_dataset_metadata", json!({})).await;
    assert_eq!(
        envelope(&result)["error"],
        "the Lumenore backend could not be reached"
    );
}

#[tokio::test]
async fn missing_credentials_are_explained() {
    let backend = MockServer::start().await;
    let server = start(
        config_for(&backend.uri()),
        lumenore_connector::backend::lumenore::Credentials::Missing,
        false,
    )
    .await;
    let result = call_tool(&server.mcp, "get_dataset_metadata", json!({})).await;
    let error = envelope(&result)["error"].as_str().unwrap();
    assert!(
        error.contains("LUMENORE_CLIENT_ID") && error.contains("LUMENORE_API_KEY"),
        "{error}"
    );
}

#[tokio::test]
async fn large_results_are_bounded_and_say_truncated() {
    let backend = MockServer::start().await;
    let rows: Vec<_> = (0..50)
        .map(|i| json!({"region": format!("r{i}"), "sales": i}))
        .collect();
    Mock::given(method("POST"))
        .and(path("/api/ai-engine/mcp/nlq-to-data"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"rows": rows})))
        .mount(&backend)
        .await;
    let mut config = config_for(&backend.uri());
    config.max_result_rows = 10;
    let credentials =
        lumenore_connector::backend::lumenore::Credentials::StaticToken("tok".to_string().into());
    let server = start(config, credentials, false).await;
    let result = call_tool(
        &server.mcp,
        "nlq_to_data",
        json!({"userQuery": "q", "schemaId": 1}),
    )
    .await;
    assert_eq!(envelope(&result)["truncated"], true);
    assert_eq!(envelope(&result)["data"]["rows"].as_array().unwrap().len(), 10);
}

#[tokio::test]
async fn readiness_follows_the_backend_credentials() {
    let backend = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/secure/client/user-login"))
        .respond_with(ResponseTemplate::new(401))
        .mount(&backend)
        .await;
    // A refused login is remembered for the login backoff; keep it short so the fix is seen soon.
    let mut config = config_for(&backend.uri());
    config.login_backoff = Duration::from_millis(300);
    let server = start(config, client_credentials("the-id", "the-secret"), true).await;
    let client = http();
    let mut last = (0, String::new());
    for _ in 0..50 {
        let response = client
            .get(format!("{}/readyz", server.base))
            .send()
            .await
            .unwrap();
        last = (response.status().as_u16(), response.text().await.unwrap());
        if last.1.contains("rejected") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(last.0, 503, "{}", last.1);
    assert!(
        last.1
            .contains("the Lumenore backend rejected the connector's credentials"),
        "{}",
        last.1
    );

    // The credentials start working: the pod becomes ready without a restart.
    backend.reset().await;
    mount_login(&backend, "T", None).await;
    Mock::given(method("GET"))
        .and(path("/api/askme-manager/get-domain"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!([])))
        .mount(&backend)
        .await;
    let mut ready = false;
    for _ in 0..100 {
        let response = client
            .get(format!("{}/readyz", server.base))
            .send()
            .await
            .unwrap();
        if response.status() == 200 {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ready, "never became ready");
}

const QUESTION: &str = "Top 5 sales regions last month";

fn static_key() -> lumenore_connector::backend::lumenore::Credentials {
    lumenore_connector::backend::lumenore::Credentials::StaticToken("key-789".to_string().into())
}

#[tokio::test]
async fn backend_error_messages_reach_the_caller_bounded_and_without_the_question() {
    let backend = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/ai-engine/mcp/nlq-to-data"))
        .respond_with(
            ResponseTemplate::new(500)
                .set_body_json(json!({"status": "error", "message": "Internal failure in ai-engine"})),
        )
        .mount(&backend)
        .await;
    // A backend that echoes the question, the schema id and the key, at length.
    let echo = format!(
        "cannot answer '{}' on 35403 with key-789 {}",
        QUESTION.to_uppercase(),
        "x".repeat(2000)
    );
    Mock::given(method("POST"))
        .and(path("/api/ai-engine/mcp/get-trend-data"))
        .respond_with(ResponseTemplate::new(422).set_body_json(json!({"detail": echo})))
        .mount(&backend)
        .await;
    let server = start(config_for(&backend.uri()), static_key(), false).await;
    let args = json!({"userQuery": QUESTION, "schemaId": 35403});
    let result = call_tool(&server.mcp, "nlq_to_data", args.clone()).await;
    assert_eq!(result["isError"], true, "{result}");
    assert_eq!(
        envelope(&result),
        &json!({"status": "error", "error": "the Lumenore backend answered HTTP 500: Internal failure in ai-engine"})
    );
    let result = call_tool(&server.mcp, "get_trend_data", args).await;
    let error = envelope(&result)["error"].as_str().unwrap().to_string();
    assert!(
        error.starts_with("the Lumenore backend answered HTTP 422: cannot answer"),
        "{error}"
    );
    assert!(!error.to_lowercase().contains("sales regions"), "{error}");
    assert!(!error.contains("35403") && !error.contains("key-789"), "{error}");
    assert!(error.chars().count() < 400, "{}", error.len());
    // The metrics carry the class only.
    let metrics = server.metrics.encode();
    assert!(!metrics.contains("Internal failure"), "{metrics}");
}

#[tokio::test]
async fn nlq_answers_in_text_or_server_sent_events_are_passed_on() {
    let backend = MockServer::start().await;
    let text = "Top 5 sales regions last month:\n1. North 120.5\n2. South 99.0\n";
    Mock::given(method("POST"))
        .and(path("/api/ai-engine/mcp/nlq-to-data"))
        .and(body_json(json!({"userQuery": "as text", "schemaId": 1})))
        .respond_with(ResponseTemplate::new(200).set_body_raw(text, "text/plain"))
        .mount(&backend)
        .await;
    // An event spread over two data lines, a retry field, a comment, then [DONE].
    let events = "retry: 500\nevent: message\ndata: {\"type\": \"sql\",\ndata:  \"sql\": \"SELECT 1\"}\n\n: ping\n\ndata: {\"type\": \"data\", \"rows\": [[\"North\", 120.5]]}\n\ndata: [DONE]\n\n";
    Mock::given(method("POST"))
        .and(path("/api/ai-engine/mcp/nlq-to-data"))
        .and(body_json(json!({"userQuery": "as events", "schemaId": 1})))
        .respond_with(ResponseTemplate::new(200).set_body_raw(events, "text/event-stream"))
        .mount(&backend)
        .await;
    let server = start(config_for(&backend.uri()), static_key(), false).await;
    let result = call_tool(
        &server.mcp,
        "nlq_to_data",
        json!({"userQuery": "as text", "schemaId": 1}),
    )
    .await;
    assert_eq!(result["isError"], false, "{result}");
    assert_eq!(result["content"][0]["text"], text);
    assert_eq!(
        envelope(&result),
        &json!({"status": "success", "format": "text", "data": text})
    );
    let result = call_tool(
        &server.mcp,
        "nlq_to_data",
        json!({"userQuery": "as events", "schemaId": 1}),
    )
    .await;
    assert_eq!(
        envelope(&result),
        &json!({"status": "success", "data": [
            {"type": "sql", "sql": "SELECT 1"},
            {"type": "data", "rows": [["North", 120.5]]}
        ]})
    );
}

#[tokio::test]
async fn schema_ids_sent_as_strings_or_floats_reach_the_backend_as_numbers() {
    let backend = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/ai-engine/mcp/get-trend-data"))
        .and(body_json(json!({"userQuery": QUESTION, "schemaId": 35403})))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"status": "success"})))
        .expect(2)
        .mount(&backend)
        .await;
    let server = start(config_for(&backend.uri()), static_key(), false).await;
    for id in [json!("35403"), json!(35403.0)] {
        let result = call_tool(
            &server.mcp,
            "get_trend_data",
            json!({"userQuery": QUESTION, "schemaId": id}),
        )
        .await;
        assert_eq!(envelope(&result)["status"], "success", "{result}");
    }
    let result = call_tool(
        &server.mcp,
        "get_trend_data",
        json!({"userQuery": QUESTION, "schemaId": "35403abc"}),
    )
    .await;
    assert_eq!(
        envelope(&result),
        &json!({"status": "validation_error", "error": "schemaId: must be a positive integer"})
    );
}

#[tokio::test]
async fn a_backend_refusing_every_token_costs_a_bounded_number_of_logins() {
    let backend = MockServer::start().await;
    mount_login(&backend, "T", None).await;
    Mock::given(method("GET"))
        .and(path("/api/askme-manager/get-domain"))
        .respond_with(
            ResponseTemplate::new(401).set_body_json(json!({"message": "Unauthorized: token expired"})),
        )
        .mount(&backend)
        .await;
    let server = start(
        config_for(&backend.uri()),
        client_credentials("the-id", "the-secret"),
        false,
    )
    .await;
    let mut errors = Vec::new();
    for _ in 0..20 {
        let result = call_tool(&server.mcp, "get_dataset_metadata", json!({})).await;
        assert_eq!(result["isError"], true, "{result}");
        errors.push(envelope(&result)["error"].as_str().unwrap().to_string());
    }
    let logins = backend
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|request| request.url.path() == "/api/secure/client/user-login")
        .count();
    // One login, one re-login for the first call; then the backoff (10 s) holds for the other 19.
    assert_eq!(logins, 2, "{errors:?}");
    assert_eq!(
        errors[0],
        "the Lumenore backend rejected the connector's credentials: Unauthorized: token expired"
    );
    assert!(
        errors[19].starts_with(
            "the Lumenore backend rejected a token it issued less than 10s ago: Unauthorized: token expired"
        ),
        "{}",
        errors[19]
    );
}
