//! The chart's alert rules and Grafana dashboard query only what the REAL connector exports: the binary is
//! driven through successes, validation errors, backend faults, a refused key and a rate limit, its live
//! `/metrics` is scraped, and `.ci/check_queries.py` (a real PromQL parser, PyPI `promql-parser`) checks that
//! every `lumenore_connector_*` selector names an exported series and only labels it carries. The operator
//! side is checked the same way in `operator/tests/observability.rs`.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use lumenore_e2e::{
    connector::{Connector, ConnectorSpec},
    fake_backend::{FakeConfig, FakeLumenore, Fault},
    http_client, install_crypto_provider,
    mcp::{PROTOCOL_VERSION, parse_answer, tool_call},
    repo_root, tools,
};
use serde_json::{Value, json};

const RULES: &str = "charts/lumenore-operator/files/monitoring/alerts.yaml";
const DASHBOARD: &str = "charts/lumenore-operator/files/monitoring/lumenore-fleet-dashboard.json";

fn python_with_promql() -> Option<PathBuf> {
    let python = tools::require("python venv", tools::venv_python())?;
    let ok = Command::new(&python)
        .args(["-c", "import promql_parser, yaml"])
        .status()
        .is_ok_and(|s| s.success());
    tools::require("promql-parser (python venv)", ok.then_some(python))
}

/// Runs the query checker against `scrape`: (success, output).
fn check(python: &Path, scrape: &Path) -> (bool, String) {
    let root = repo_root();
    let out = Command::new(python)
        .arg(root.join(".ci/check_queries.py"))
        .arg(root.join(RULES))
        .arg(root.join(DASHBOARD))
        .arg("--scrape")
        .arg(format!("lumenore_connector_={}", scrape.display()))
        .output()
        .expect("run check_queries.py");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

async fn call(url: &str, key: &str, name: &str, arguments: Value) -> (u16, Value) {
    let response = http_client(Duration::from_secs(30))
        .post(url)
        .bearer_auth(key)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", PROTOCOL_VERSION)
        .json(&tool_call(1, name, arguments))
        .send()
        .await
        .expect("POST /mcp");
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    (status, parse_answer(&text).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_and_dashboard_queries_match_the_connectors_live_metrics() {
    install_crypto_provider();
    let Some(python) = python_with_promql() else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("lumenore-obs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = "e2e-observability-key-0123456789abcdef";
    let keys = dir.join("keys.yaml");
    std::fs::write(
        &keys,
        format!(
            "keys:\n  - id: obs\n    hash: {}\n    tools: [\"*\"]\n",
            lumenore_e2e::raw::hash_key(key)
        ),
    )
    .unwrap();

    let fake = FakeLumenore::start(FakeConfig::default()).await;
    let defaults = FakeConfig::default();
    let spec = ConnectorSpec::lumenore(&fake.url(), &defaults.client_id, &defaults.secret)
        .env("LUMENORE_AUTH_MODE", "api-keys")
        .env("LUMENORE_API_KEYS_FILE", keys.to_str().unwrap())
        .env("LUMENORE_RATE_LIMIT_TENANT_PER_MINUTE", "6")
        .env("LUMENORE_MAX_RETRIES", "0");
    let mut connector = Connector::start(spec).await;
    connector
        .wait_ready(Duration::from_secs(30))
        .await
        .expect("ready");
    let url = connector.mcp.clone();
    let question = json!({"userQuery": "Top 5 sales regions last month", "schemaId": 35403});

    // Success, a validation error, a backend failure, a refused key, then over the tenant's rate limit.
    let (status, answer) = call(&url, key, "nlq_to_data", question.clone()).await;
    assert_eq!(
        (status, &answer["result"]["isError"]),
        (200, &json!(false)),
        "{answer}"
    );
    let (_, answer) = call(&url, key, "nlq_to_data", json!({"schemaId": 35403})).await;
    assert_eq!(answer["result"]["isError"], true, "{answer}");
    fake.push_faults(Fault::Status(503), 1);
    let (_, answer) = call(&url, key, "get_trend_data", question.clone()).await;
    assert_eq!(answer["result"]["isError"], true, "{answer}");
    let (status, _) = call(&url, "not-a-key", "nlq_to_data", question.clone()).await;
    assert_eq!(status, 401);
    let mut limited = false;
    for _ in 0..10 {
        let (status, _) = call(&url, key, "get_dataset_metadata", json!({})).await;
        limited |= status == 429;
    }
    assert!(limited, "the tenant limit of 6 per minute refused a call");

    let scrape = http_client(Duration::from_secs(5))
        .get(format!("{}/metrics", connector.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    connector.stop(Duration::from_secs(10)).await;
    for series in [
        r#"lumenore_connector_backend_errors_total{class="http_5xx"}"#,
        r#"lumenore_connector_backend_logins_total{outcome="success"}"#,
        r#"lumenore_connector_auth_failures_total{reason="unknown_key"}"#,
        r#"lumenore_connector_rate_limited_total{limit="tenant"}"#,
        r#"lumenore_connector_tool_calls_total{tool="nlq_to_data",outcome="validation_error"}"#,
    ] {
        assert!(scrape.contains(series), "{series} not in the scrape:\n{scrape}");
    }
    let live = dir.join("connector.metrics");
    std::fs::write(&live, &scrape).unwrap();
    let (ok, out) = check(&python, &live);
    assert!(
        ok,
        "queries do not match the live scrape:\n{out}\nscrape:\n{scrape}"
    );
    println!("{out}");

    // The check can fail: without the rate-limit family, or with a label renamed, it names the query.
    let without: String = scrape
        .lines()
        .filter(|l| !l.contains("lumenore_connector_rate_limited"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&live, without).unwrap();
    let (ok, out) = check(&python, &live);
    assert!(
        !ok && out.contains("lumenore_connector_rate_limited_total is not exported"),
        "{out}"
    );
    std::fs::write(&live, scrape.replace("outcome=", "result=")).unwrap();
    let (ok, out) = check(&python, &live);
    assert!(!ok && out.contains("has no label 'outcome'"), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}
