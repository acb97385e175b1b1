//! The HTTP surface: service description, health, readiness, metrics, and bad input of every kind.

mod support;

use serde_json::{Value, json};
use support::*;
use wiremock::{Mock, MockServer, ResponseTemplate, matchers::method};

async fn server_with(
    config_change: impl FnOnce(&mut lumenore_connector::config::Config),
) -> (TestServer, MockServer) {
    let backend = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!([])))
        .mount(&backend)
        .await;
    let mut config = config_for(&backend.uri());
    config_change(&mut config);
    let credentials =
        lumenore_connector::backend::lumenore::Credentials::StaticToken("tok".to_string().into());
    (start(config, credentials, false).await, backend)
}

fn raw(client: &reqwest::Client, url: &str) -> reqwest::RequestBuilder {
    client
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-06-18")
}

#[tokio::test]
async fn root_answers_get_and_head_with_200() {
    let (server, _backend) = server_with(|_| {}).await;
    let client = http();
    let get = client.get(&server.base).send().await.unwrap();
    assert_eq!(get.status(), 200);
    let body: Value = get.json().await.unwrap();
    assert_eq!(body["mcp"]["endpoint"], "/mcp");
    assert_eq!(client.head(&server.base).send().await.unwrap().status(), 200);
    assert_eq!(
        client
            .get(format!("{}/healthz", server.base))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn metrics_count_calls_by_tool_and_outcome() {
    let (server, _backend) = server_with(|_| {}).await;
    call_tool(&server.mcp, "get_dataset_metadata", json!({})).await;
    call_tool(&server.mcp, "nlq_to_data", json!({"schemaId": 1})).await;
    let text = http()
        .get(format!("{}/metrics", server.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains(
            r#"lumenore_connector_tool_calls_total{tool="get_dataset_metadata",outcome="success"} 1"#
        ),
        "{text}"
    );
    assert!(
        text.contains(
            r#"lumenore_connector_tool_calls_total{tool="nlq_to_data",outcome="validation_error"} 1"#
        ),
        "{text}"
    );
    assert!(
        text.contains("lumenore_connector_tool_call_duration_seconds_bucket"),
        "{text}"
    );
}

#[tokio::test]
async fn malformed_json_is_a_json_rpc_parse_error() {
    let (server, _backend) = server_with(|_| {}).await;
    let response = raw(&http(), &server.mcp)
        .body("{\"jsonrpc\": \"2.0\", bad")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], -32700);
    assert_eq!(body["id"], Value::Null);

    let response = raw(&http(), &server.mcp)
        .body(r#"{"hello": "world"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], -32600);
}

#[tokio::test]
async fn wrong_argument_types_are_tool_errors_naming_the_field() {
    let (server, _backend) = server_with(|_| {}).await;
    let result = call_tool(
        &server.mcp,
        "get_trend_data",
        json!({"userQuery": ["a"], "schemaId": 1}),
    )
    .await;
    assert_eq!(result["isError"], true);
    assert_eq!(
        envelope(&result),
        &json!({"status": "validation_error", "error": "userQuery: must be a string"})
    );
    let result = call_tool(&server.mcp, "get_metadata_info", json!({"schemaId": "abc"})).await;
    assert_eq!(envelope(&result)["error"], "schemaId: must be a positive integer");
}

#[tokio::test]
async fn an_oversized_body_gets_413() {
    let (server, _backend) = server_with(|config| config.max_request_bytes = 2048).await;
    let big = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "nlq_to_data", "arguments": {"userQuery": "x".repeat(4096), "schemaId": 1}}});
    let response = raw(&http(), &server.mcp).json(&big).send().await.unwrap();
    assert_eq!(response.status(), 413);
}

#[tokio::test]
async fn an_unknown_tool_is_a_json_rpc_error() {
    let (server, _backend) = server_with(|_| {}).await;
    let response = call_tool(&server.mcp, "drop_all_tables", json!({})).await;
    assert_eq!(response["error"]["code"], -32602, "{response}");
    assert_eq!(response["error"]["message"], "unknown tool: drop_all_tables");
}

#[tokio::test]
async fn disallowed_hosts_and_origins_get_403() {
    let (server, _backend) = server_with(|_| {}).await;
    let client = http();
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}});
    let response = raw(&client, &server.mcp)
        .header("host", "attacker.example")
        .json(&init)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    let response = raw(&client, &server.mcp)
        .header("origin", "https://attacker.example")
        .json(&init)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    let response = raw(&client, &server.mcp).json(&init).send().await.unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn configured_hosts_and_origins_are_accepted() {
    let (server, _backend) = server_with(|config| {
        config.allowed_hosts = vec!["connector.tenant-a.svc".into(), "127.0.0.1".into()];
        config.allowed_origins = vec!["https://assistant.example.com".into()];
    })
    .await;
    let client = http();
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}});
    let response = raw(&client, &server.mcp)
        .header("host", "connector.tenant-a.svc")
        .json(&init)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let response = raw(&client, &server.mcp)
        .header("origin", "https://assistant.example.com")
        .json(&init)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let response = raw(&client, &server.mcp)
        .header("origin", "https://other.example.com")
        .json(&init)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
}

#[tokio::test]
async fn correlation_ids_are_echoed_or_made() {
    let (server, _backend) = server_with(|_| {}).await;
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "ping"});
    let response = raw(&http(), &server.mcp)
        .header("x-request-id", "abc-123")
        .json(&init)
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "abc-123");
    let response = raw(&http(), &server.mcp)
        .header("x-request-id", "bad id with spaces")
        .json(&init)
        .send()
        .await
        .unwrap();
    assert_ne!(response.headers()["x-request-id"], "bad id with spaces");
}

#[tokio::test]
async fn local_origins_are_accepted_by_default_and_an_empty_list_refuses_all() {
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}});
    let (server, _backend) = server_with(|_| {}).await;
    let port = server.base.rsplit(':').next().unwrap().to_string();
    let local = format!("http://127.0.0.1:{port}");
    let response = raw(&http(), &server.mcp)
        .header("origin", &local)
        .json(&init)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    let (server, _backend) = server_with(|config| config.allowed_origins = vec![String::new()]).await;
    let response = raw(&http(), &server.mcp)
        .header("origin", &local)
        .json(&init)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
}

#[tokio::test]
async fn invalid_ids_and_duplicate_keys_are_invalid_requests_not_415() {
    let (server, _backend) = server_with(|_| {}).await;
    for body in [
        r#"{"jsonrpc":"2.0","id":null,"method":"ping"}"#,
        r#"{"jsonrpc":"2.0","id":true,"method":"ping"}"#,
        r#"{"jsonrpc":"2.0","id":2.5,"method":"ping"}"#,
        r#"{"jsonrpc":"2.0","id":{"a":1},"method":"ping"}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"ping","method":"tools/list"}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":"not an object"}"#,
    ] {
        let response = raw(&http(), &server.mcp).body(body).send().await.unwrap();
        assert_eq!(response.status(), 400, "{body}");
        let answer: Value = response.json().await.unwrap();
        assert_eq!(answer["error"]["code"], -32600, "{body}: {answer}");
        assert_eq!(answer["id"], Value::Null);
    }
}

#[tokio::test]
async fn a_declared_length_over_the_limit_is_413_and_other_media_types_415() {
    let (server, _backend) = server_with(|config| config.max_request_bytes = 2048).await;
    // Declared too long, with a body that never comes: refused from the headers.
    let stalled = futures::stream::pending::<Result<Vec<u8>, std::io::Error>>();
    let response = raw(&http(), &server.mcp)
        .header("content-length", "99999999999")
        .body(reqwest::Body::wrap_stream(stalled))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    let response = http()
        .post(&server.mcp)
        .header("content-type", "text/plain")
        .header("accept", "application/json, text/event-stream")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 415);
}

#[tokio::test]
async fn operational_routes_check_the_host_but_accept_ip_literals() {
    let (server, _backend) = server_with(|_| {}).await;
    for path in ["/metrics", "/readyz", "/healthz", "/"] {
        let url = format!("{}{path}", server.base);
        let foreign = http()
            .get(&url)
            .header("host", "rebind.attacker.example")
            .send()
            .await
            .unwrap();
        assert_eq!(foreign.status(), 403, "{path}");
        let pod_ip = http()
            .get(&url)
            .header("host", "10.0.0.7:8080")
            .send()
            .await
            .unwrap();
        assert_ne!(pod_ip.status(), 403, "{path}");
    }
}
