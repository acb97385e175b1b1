//! MCP-level tests with the rmcp client over real HTTP: the 2026-07-28 stateless flow (server/discover) and
//! the legacy initialize flow; streamed answers with progress; client disconnects; graceful shutdown.

mod support;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{Router, body::Body, routing::post};
use rmcp::{
    ClientHandler, ClientLifecycleMode, ClientServiceExt, RoleClient,
    model::{
        CallToolRequestParams, NumberOrString, ProgressNotificationParam, ProgressToken, ProtocolVersion,
        RequestMetaObject,
    },
    service::NotificationContext,
    transport::StreamableHttpClientTransport,
};
use serde_json::{Value, json};
use support::*;
use wiremock::{
    Mock, MockServer, ResponseTemplate,
    matchers::{method, path},
};

#[derive(Clone, Default)]
struct ProgressCounter {
    seen: Arc<AtomicUsize>,
}

impl ClientHandler for ProgressCounter {
    async fn on_progress(
        &self,
        _params: ProgressNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        self.seen.fetch_add(1, Ordering::SeqCst);
    }
}

async fn mock_backend() -> MockServer {
    let backend = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/askme-manager/get-domain"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"domains": [{"schemaId": 35403, "name": "sales"}]})),
        )
        .mount(&backend)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/ai-engine/mcp/get-pareto-data"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"vitalFew": ["Widgets"]})))
        .mount(&backend)
        .await;
    backend
}

fn static_token() -> lumenore_connector::backend::lumenore::Credentials {
    lumenore_connector::backend::lumenore::Credentials::StaticToken("tok".to_string().into())
}

fn args(value: Value) -> rmcp::model::JsonObject {
    value.as_object().unwrap().clone()
}

async fn exercise(lifecycle: ClientLifecycleMode) {
    let backend = mock_backend().await;
    let server = start(config_for(&backend.uri()), static_token(), false).await;
    let transport = StreamableHttpClientTransport::from_uri(server.mcp.clone());
    let client = ProgressCounter::default()
        .serve_with_lifecycle(transport, lifecycle)
        .await
        .expect("client connects");

    let tools = client.list_all_tools().await.unwrap();
    let names: Vec<_> = tools.iter().map(|tool| tool.name.to_string()).collect();
    assert_eq!(names.len(), 9, "{names:?}");
    assert!(names.contains(&"get_pareto_data".to_string()));

    let result = client
        .call_tool(
            CallToolRequestParams::new("get_pareto_data").with_arguments(args(json!({
                "userQuery": "Which products contribute to 80% of our sales?", "schemaId": 35403
            }))),
        )
        .await
        .unwrap();
    assert_eq!(result.is_error, Some(false));
    assert_eq!(
        result.structured_content.unwrap(),
        json!({"status": "success", "data": {"vitalFew": ["Widgets"]}})
    );

    let invalid = client
        .call_tool(
            CallToolRequestParams::new("get_pareto_data")
                .with_arguments(args(json!({"userQuery": "", "schemaId": 1}))),
        )
        .await
        .unwrap();
    assert_eq!(invalid.is_error, Some(true));
    assert_eq!(invalid.structured_content.unwrap()["status"], "validation_error");
    client.cancel().await.ok();
}

#[tokio::test]
async fn current_revision_stateless_flow() {
    exercise(ClientLifecycleMode::Discover {
        preferred_versions: vec![ProtocolVersion::V_2026_07_28],
    })
    .await;
}

#[tokio::test]
async fn legacy_initialize_flow() {
    exercise(ClientLifecycleMode::Initialize).await;
}

/// A Lumenore stand-in that streams nlq answers in chunks, and records when a caller went away.
async fn streaming_backend(chunk_delay: Duration, dropped: Arc<AtomicBool>) -> String {
    struct DropFlag(Arc<AtomicBool>);
    impl Drop for DropFlag {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    let app = Router::new().route(
        "/api/ai-engine/mcp/nlq-to-data",
        post(move || {
            let dropped = dropped.clone();
            async move {
                let chunks = futures::stream::unfold((0, DropFlag(dropped)), move |(i, flag)| async move {
                    if i == 3 {
                        // Finished normally: do not count as dropped.
                        std::mem::forget(flag);
                        return None;
                    }
                    tokio::time::sleep(chunk_delay).await;
                    let line = format!("{{\"part\": {i}}}\n");
                    Some((Ok::<_, std::io::Error>(line), (i + 1, flag)))
                });
                Body::from_stream(chunks)
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{address}")
}

#[tokio::test]
async fn streamed_answers_report_progress_when_asked() {
    let dropped = Arc::new(AtomicBool::new(false));
    let backend = streaming_backend(Duration::from_millis(50), dropped.clone()).await;
    let server = start(config_for(&backend), static_token(), false).await;
    let counter = ProgressCounter::default();
    let seen = counter.seen.clone();
    let transport = StreamableHttpClientTransport::from_uri(server.mcp.clone());
    let client = counter
        .serve_with_lifecycle(
            transport,
            ClientLifecycleMode::Discover {
                preferred_versions: vec![ProtocolVersion::V_2026_07_28],
            },
        )
        .await
        .unwrap();
    let mut params = CallToolRequestParams::new("nlq_to_data").with_arguments(args(
        json!({"userQuery": "Top 5 sales regions last month", "schemaId": 35403}),
    ));
    params.meta = Some(RequestMetaObject::with_progress_token(ProgressToken(
        NumberOrString::String("p-1".into()),
    )));
    let result = client.call_tool(params).await.unwrap();
    assert_eq!(
        result.structured_content.unwrap(),
        json!({"status": "success", "data": [{"part": 0}, {"part": 1}, {"part": 2}]})
    );
    // One notification per chunk received (the client may see the last ones after the result).
    for _ in 0..40 {
        if seen.load(Ordering::SeqCst) >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        seen.load(Ordering::SeqCst) >= 3,
        "progress notifications: {}",
        seen.load(Ordering::SeqCst)
    );
    assert!(!dropped.load(Ordering::SeqCst));
}

#[tokio::test]
async fn a_client_that_disconnects_cancels_its_backend_call() {
    let dropped = Arc::new(AtomicBool::new(false));
    let backend = streaming_backend(Duration::from_secs(5), dropped.clone()).await;
    let server = start(config_for(&backend), static_token(), false).await;
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "nlq_to_data", "arguments": {"userQuery": "slow question", "schemaId": 1}}});
    let outcome = impatient
        .post(&server.mcp)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-06-18")
        .json(&body)
        .send()
        .await;
    assert!(outcome.is_err(), "the client should have given up");
    for _ in 0..60 {
        if dropped.load(Ordering::SeqCst) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        dropped.load(Ordering::SeqCst),
        "the backend request was not cancelled"
    );
    // The in-flight gauge returns to zero.
    assert!(
        server
            .metrics
            .encode()
            .contains("lumenore_connector_tool_calls_in_flight 0")
    );
}

#[tokio::test]
async fn shutdown_lets_in_flight_calls_finish_and_refuses_new_ones() {
    let backend = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/ai-engine/mcp/get-trend-data"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"slope": 1.5}))
                .set_delay(Duration::from_millis(800)),
        )
        .mount(&backend)
        .await;
    let mut config = config_for(&backend.uri());
    config.shutdown_grace = Duration::from_secs(5);
    let mut server = start(config, static_token(), false).await;
    let mcp = server.mcp.clone();
    let in_flight = tokio::spawn(async move {
        call_tool(&mcp, "get_trend_data", json!({"userQuery": "q", "schemaId": 1})).await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    server.trigger_stop();
    tokio::time::sleep(Duration::from_millis(100)).await;

    // A new request is refused: the listener is closed (connection error) or the drain gate answers 503.
    let late = http()
        .post(&server.mcp)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .json(&json!({"jsonrpc": "2.0", "id": 9, "method": "ping"}))
        .send()
        .await;
    match late {
        Ok(response) => assert_eq!(response.status(), 503),
        Err(error) => assert!(error.is_connect() || error.is_request(), "{error}"),
    }

    let result = in_flight.await.unwrap();
    assert_eq!(
        envelope(&result),
        &json!({"status": "success", "data": {"slope": 1.5}})
    );
    let stopped = tokio::time::timeout(Duration::from_secs(5), server.handle).await;
    assert!(
        matches!(stopped, Ok(Ok(Ok(())))),
        "server did not stop cleanly: {stopped:?}"
    );
}
