//! The real connector binary against the stateful fake Lumenore backend: cookie login, expiring tokens,
//! streamed answers, 5xx faults and connection resets, as the process sees them over real sockets.

use std::time::Duration;

use lumenore_e2e::{
    connector::{Connector, ConnectorSpec},
    fake_backend::{FakeConfig, FakeLumenore, Fault},
    http_client,
    mcp::{Outcome, call_tool},
};
use serde_json::{Value, json};

const QUESTION: &str = "Show me total sales by region for Q4 2024, sorted by highest sales";

fn spec(fake: &FakeLumenore, config: &FakeConfig) -> ConnectorSpec {
    ConnectorSpec::lumenore(&fake.url(), &config.client_id, &config.secret)
        .env("LUMENORE_CONNECT_TIMEOUT", "1s")
        .env("LUMENORE_REQUEST_TIMEOUT", "5s")
        .env("LUMENORE_READINESS_INTERVAL", "60s")
}

fn success(outcome: Outcome, what: &str) -> Value {
    match outcome {
        Outcome::Success(value) => value,
        other => panic!("{what}: expected success, got {other:?}"),
    }
}

fn tool_error(outcome: Outcome, what: &str) -> Value {
    assert!(
        outcome.is_clean_tool_error(),
        "{what}: expected a clean tool error, got {outcome:?}"
    );
    match outcome {
        Outcome::ToolError(value) => value,
        _ => unreachable!(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookie_login_every_tool_and_a_streamed_answer() {
    let config = FakeConfig {
        stream_chunks: 5,
        chunk_delay: Duration::from_millis(20),
        ..FakeConfig::default()
    };
    let fake = FakeLumenore::start(config.clone()).await;
    let mut connector = Connector::start(spec(&fake, &config)).await;
    connector
        .wait_ready(Duration::from_secs(10))
        .await
        .expect("ready with the fake backend");
    let http = http_client(Duration::from_secs(20));

    let datasets = success(
        call_tool(&http, &connector.mcp, "get_dataset_metadata", json!({})).await,
        "get_dataset_metadata",
    );
    assert_eq!(datasets["data"]["data"][0]["id"], 35403, "{datasets}");
    let columns = success(
        call_tool(
            &http,
            &connector.mcp,
            "get_metadata_info",
            json!({"schemaId": 35403}),
        )
        .await,
        "get_metadata_info",
    );
    assert_eq!(columns["data"]["schemaId"], "35403", "{columns}");
    let streamed = success(
        call_tool(
            &http,
            &connector.mcp,
            "nlq_to_data",
            json!({"userQuery": QUESTION, "schemaId": 35403}),
        )
        .await,
        "nlq_to_data",
    );
    let parts = streamed["data"].as_array().expect("the JSON lines as an array");
    assert_eq!(parts.len(), 5, "{streamed}");
    assert_eq!(parts[4]["part"], 4);
    for kind in [
        "trend",
        "prediction",
        "outlier",
        "correlation",
        "change",
        "pareto",
    ] {
        let tool = format!("get_{kind}_data");
        let answer = success(
            call_tool(
                &http,
                &connector.mcp,
                &tool,
                json!({"userQuery": "What are the monthly sales trends for Q4 2024?", "schemaId": 35403}),
            )
            .await,
            &tool,
        );
        assert_eq!(answer["data"]["analysis"], kind, "{answer}");
    }
    let counts = fake.counts();
    // One login shared by the readiness check and all nine calls.
    assert_eq!(counts.logins, 1, "{counts:?}");
    assert_eq!(counts.unauthorized, 0, "{counts:?}");
    assert_eq!(counts.cancelled, 0, "{counts:?}");
    let report = connector.stop(Duration::from_secs(10)).await;
    assert_eq!(report.status.code(), Some(0), "{}", report.logs);
    // The canaries of this test never reach the connector's output.
    for secret in [config.secret.as_str(), "fake-token-1", QUESTION] {
        assert!(
            !report.logs.contains(secret),
            "{secret:?} leaked into the logs:\n{}",
            report.logs
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_that_expire_by_use_or_by_age_are_renewed_transparently() {
    let config = FakeConfig {
        token_max_uses: Some(3),
        ..FakeConfig::default()
    };
    let fake = FakeLumenore::start(config.clone()).await;
    let connector = Connector::start(spec(&fake, &config)).await;
    let http = http_client(Duration::from_secs(20));
    for i in 0..10 {
        success(
            call_tool(
                &http,
                &connector.mcp,
                "get_trend_data",
                json!({"userQuery": QUESTION, "schemaId": 35403}),
            )
            .await,
            &format!("call {i} with tokens good for 3 uses"),
        );
    }
    let counts = fake.counts();
    assert!(counts.logins >= 3, "{counts:?}");
    assert!(counts.unauthorized >= 2, "{counts:?}");
    assert_eq!(
        counts.unauthorized,
        counts.logins - 1,
        "one re-login per 401: {counts:?}"
    );

    // By age: a token older than 300 ms is refused.
    fake.configure(|c| {
        c.token_max_uses = None;
        c.token_ttl = Some(Duration::from_millis(300));
    });
    let before = fake.counts();
    for i in 0..3 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        success(
            call_tool(
                &http,
                &connector.mcp,
                "get_pareto_data",
                json!({"userQuery": QUESTION, "schemaId": 35403}),
            )
            .await,
            &format!("call {i} with tokens good for 300 ms"),
        );
    }
    let after = fake.counts();
    assert!(after.logins >= before.logins + 3, "{before:?} -> {after:?}");

    // Revoked tokens (the backend restarted and forgot its sessions): one re-login, no error.
    fake.configure(|c| c.token_ttl = None);
    fake.revoke_tokens();
    success(
        call_tool(&http, &connector.mcp, "get_dataset_metadata", json!({})).await,
        "after revocation",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_errors_and_resets_are_retried_other_errors_are_clean() {
    let config = FakeConfig::default();
    let fake = FakeLumenore::start(config.clone()).await;
    let connector = Connector::start(spec(&fake, &config).env("LUMENORE_MAX_RETRIES", "2")).await;
    let http = http_client(Duration::from_secs(30));
    let call = || {
        call_tool(
            &http,
            &connector.mcp,
            "get_change_data",
            json!({"userQuery": QUESTION, "schemaId": 35405}),
        )
    };
    // Warm up the login so the faults below hit data requests only.
    success(call().await, "warm-up");

    for fault in [
        Fault::Status(503),
        Fault::Status(502),
        Fault::Status(504),
        Fault::ResetMidBody,
        Fault::CloseBeforeHeaders,
    ] {
        fake.push_faults(fault, 2);
        let before = fake.counts();
        success(call().await, &format!("two {fault:?} then an answer"));
        let after = fake.counts();
        assert_eq!(after.faults - before.faults, 2, "{fault:?}: {after:?}");
        assert_eq!(fake.pending_faults(), 0);
    }

    // More gateway errors than retries: a clean error after 1 + 2 attempts, not a hang.
    fake.push_faults(Fault::Status(503), 10);
    let error = tool_error(call().await, "503 beyond the retries");
    assert_eq!(error["status"], "error", "{error}");
    assert_eq!(fake.pending_faults(), 7, "exactly three attempts");
    fake.clear_faults();

    // A 500 is not retried.
    fake.push_faults(Fault::Status(500), 2);
    let error = tool_error(call().await, "500");
    assert!(error["error"].as_str().unwrap().contains("500"), "{error}");
    assert_eq!(fake.pending_faults(), 1, "a 500 is not retried");
    tool_error(call().await, "the second 500");
    success(call().await, "after the 500s");
    assert_eq!(fake.pending_faults(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_keep_the_connector_not_ready_with_clean_errors() {
    let config = FakeConfig::default();
    let fake = FakeLumenore::start(config.clone()).await;
    let connector = Connector::start(
        ConnectorSpec::lumenore(&fake.url(), &config.client_id, "not-the-secret")
            .env("LUMENORE_READINESS_INTERVAL", "200ms"),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(connector.readyz().await, 503);
    let http = http_client(Duration::from_secs(20));
    let error = tool_error(
        call_tool(&http, &connector.mcp, "get_dataset_metadata", json!({})).await,
        "rejected credentials",
    );
    assert_eq!(error["status"], "error", "{error}");
    let counts = fake.counts();
    assert!(counts.logins_rejected >= 1 && counts.logins == 0, "{counts:?}");
    let report = connector.stop(Duration::from_secs(10)).await;
    assert!(!report.logs.contains("not-the-secret"), "{}", report.logs);
}
