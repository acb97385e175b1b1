//! Audit events: one line per tool call on `lumenore_connector::audit` — served, refused at the door
//! (unauthenticated, forbidden, rate limited) — with the caller id and metadata only. In JSON format every
//! line is one JSON object. With every level on, no query, schema id, API key or JWT reaches any log line.
//! Own test binary: it installs a global subscriber.

mod auth_support;
mod support;

use std::{
    io::Write,
    num::NonZeroU32,
    sync::{Arc, Mutex},
    time::Duration,
};

use auth_support::*;
use lumenore_connector::{config::LogFormat, telemetry};
use serde_json::{Value, json};
use support::start;
use tracing_subscriber::{EnvFilter, Layer, fmt::MakeWriter, layer::SubscriberExt};

const QUERY: &str = "canary audit question about margins 6b1c";
const SCHEMA_ID: i64 = 771_203_448;
const FULL_KEY: &str = "lmk_canary_full_key_4fd8a9b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9";
const META_KEY: &str = "lmk_canary_meta_key_93e1a9b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9";
const WRONG_KEY: &str = "lmk_canary_wrong_key_0aa7";

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Buffer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl Write for Buffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Buffer {
    type Writer = Buffer;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

fn query_call(tool: &str, schema_id: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
           "params": {"name": tool, "arguments": {"userQuery": QUERY, "schemaId": schema_id}}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_tool_call_has_one_audit_line_with_the_caller_and_no_user_data() {
    let text_logs = Buffer::default();
    let json_logs = Buffer::default();
    let uncapped = Buffer::default();
    let subscriber = tracing_subscriber::registry()
        .with(telemetry::layer(
            LogFormat::Text,
            EnvFilter::new("trace"),
            text_logs.clone(),
            false,
        ))
        .with(telemetry::layer(
            LogFormat::Json,
            EnvFilter::new("trace"),
            json_logs.clone(),
            false,
        ))
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(uncapped.clone())
                .with_filter(EnvFilter::new("trace")),
        );
    tracing::subscriber::set_global_default(subscriber).expect("global subscriber");

    // API keys, with a caller limit of 2 per minute.
    let backend = backend(Duration::ZERO).await;
    let dir = tempfile::tempdir().unwrap();
    let keys_file = dir.path().join("keys.yaml");
    write_keys(
        &keys_file,
        &[
            key_entry("audit-full", FULL_KEY, "[\"*\"]", false),
            key_entry("audit-meta", META_KEY, "[get_dataset_metadata]", false),
        ],
    );
    let mut config = api_keys_config(&backend.uri(), &keys_file);
    config.rate_limit_caller_per_minute = NonZeroU32::new(2);
    let server = start(config, static_token(), false).await;
    let mut expected = Vec::new();
    let mcp = &server.mcp;
    let status = |r: reqwest::Response| r.status().as_u16();
    assert_eq!(
        status(rpc(mcp, Some(FULL_KEY), &query_call("nlq_to_data", json!(SCHEMA_ID))).await),
        200
    );
    expected.push(("audit-full", "nlq_to_data", "success"));
    assert_eq!(
        status(
            rpc(
                mcp,
                Some(FULL_KEY),
                // A digit string is a valid schemaId since issue 16; a word is not.
                &query_call("get_trend_data", json!(format!("schema {SCHEMA_ID}")))
            )
            .await
        ),
        200
    );
    expected.push(("audit-full", "get_trend_data", "validation_error"));
    assert_eq!(
        status(
            rpc(
                mcp,
                Some(FULL_KEY),
                &query_call("get_change_data", json!(SCHEMA_ID))
            )
            .await
        ),
        429
    );
    expected.push(("audit-full", "get_change_data", "rate_limited"));
    assert_eq!(
        status(rpc(mcp, Some(META_KEY), &query_call("nlq_to_data", json!(SCHEMA_ID))).await),
        403
    );
    expected.push(("audit-meta", "nlq_to_data", "forbidden"));
    assert_eq!(
        status(rpc(mcp, None, &query_call("get_outlier_data", json!(SCHEMA_ID))).await),
        401
    );
    // Refused from the headers: counted and logged as a sampled line (below), not as an audit line each.
    assert_eq!(
        status(
            rpc(
                mcp,
                Some(WRONG_KEY),
                &query_call("get_pareto_data", json!(SCHEMA_ID))
            )
            .await
        ),
        401
    );
    // Refused from the headers: counted and logged as a sampled line (below), not as an audit line each.
    // Not a tool call: no audit line for a served tools/list.
    assert_eq!(status(rpc(mcp, Some(FULL_KEY), &list_body()).await), 200);
    server.stop().await.unwrap();

    // OAuth: the caller id is the token's subject; the token itself appears nowhere.
    let key = TestKey::rsa("issuer-rsa.pem", "rsa-1");
    let issuer = issuer(&[&key]).await;
    let server = start(oauth_config(&backend.uri(), &issuer.uri()), static_token(), false).await;
    let token = key.sign(&claims(&issuer.uri(), "lumenore:read"));
    let mut old = claims(&issuer.uri(), "lumenore:read");
    old["exp"] = json!(now() - 3600);
    let expired = key.sign(&old);
    assert_eq!(
        status(
            rpc(
                &server.mcp,
                Some(&token),
                &query_call("get_correlation_data", json!(SCHEMA_ID))
            )
            .await
        ),
        200
    );
    expected.push(("user-7f3a", "get_correlation_data", "success"));
    assert_eq!(
        status(
            rpc(
                &server.mcp,
                Some(&expired),
                &query_call("get_prediction_data", json!(SCHEMA_ID))
            )
            .await
        ),
        401
    );
    // Refused from the headers: counted and logged as a sampled line (below), not as an audit line each.
    server.stop().await.unwrap();

    // Mode none off loopback with the explicit flag: a warning at start.
    let mut config = support::config_for(&backend.uri());
    config.listen = "0.0.0.0:8080".parse().unwrap();
    config.allow_unauthenticated = true;
    let server = start(config, static_token(), false).await;
    server.stop().await.unwrap();

    tokio::time::sleep(Duration::from_millis(100)).await;
    let text = text_logs.text();
    let json_text = json_logs.text();
    let uncapped = uncapped.text();

    // JSON: every line is one JSON object; the audit lines are exactly one per tool call.
    let lines: Vec<Value> = json_text
        .lines()
        .map(|line| {
            serde_json::from_str::<Value>(line).unwrap_or_else(|_| panic!("not one JSON object: {line}"))
        })
        .collect();
    assert!(lines.iter().all(Value::is_object));
    let audit: Vec<&Value> = lines
        .iter()
        .filter(|line| line["target"] == "lumenore_connector::audit")
        .collect();
    let seen: Vec<(&str, &str, &str)> = audit
        .iter()
        .map(|line| {
            (
                line["caller"].as_str().unwrap(),
                line["tool"].as_str().unwrap(),
                line["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(seen, expected, "audit lines:\n{json_text}");
    for line in &audit {
        for field in [
            "timestamp",
            "correlation_id",
            "latency_ms",
            "response_bytes",
            "method",
            "status",
        ] {
            assert!(line.get(field).is_some(), "audit line without {field}: {line}");
        }
        let expected_method = if line["outcome"] == "unauthenticated" {
            "-"
        } else {
            "tools/call"
        };
        assert_eq!(line["method"], expected_method, "{line}");
    }
    // Unauthenticated refusals: at most one line a second per server, with the count since the last one.
    let sampled: Vec<&Value> = lines
        .iter()
        .filter(|line| line["target"] == "lumenore_connector::refusals")
        .collect();
    assert!(
        (2..=3).contains(&sampled.len()),
        "sampled refusal lines of two servers:\n{json_text}"
    );
    for line in &sampled {
        assert_eq!(line["outcome"], "unauthenticated", "{line}");
        assert!(line["count"].as_u64().is_some_and(|count| count >= 1), "{line}");
    }
    assert!(
        audit[0]["response_bytes"].as_u64().unwrap() > 0,
        "a served call reports its response size"
    );
    let text_audit = text
        .lines()
        .filter(|l| l.contains("lumenore_connector::audit"))
        .count();
    assert_eq!(text_audit, expected.len(), "text audit lines:\n{text}");
    assert!(
        text.contains("caller authentication is off"),
        "no warning for mode none with --allow-unauthenticated"
    );

    // The check can fail: the uncapped layer saw the query.
    assert!(
        uncapped.contains(QUERY),
        "the uncapped layer never saw the query; the test proves nothing"
    );

    let signature = token.rsplit('.').next().unwrap().to_string();
    let canaries = [
        QUERY.to_string(),
        "6b1c".to_string(),
        SCHEMA_ID.to_string(),
        FULL_KEY.to_string(),
        META_KEY.to_string(),
        WRONG_KEY.to_string(),
        "lmk_canary".to_string(),
        token.clone(),
        signature,
        expired.clone(),
        BACKEND_TOKEN.to_string(),
    ];
    for canary in &canaries {
        for (name, logs) in [("text", &text), ("json", &json_text)] {
            let leaking: Vec<&str> = logs
                .lines()
                .filter(|l| l.contains(canary.as_str()))
                .take(3)
                .collect();
            assert!(
                leaking.is_empty(),
                "{name} log leaks {canary}:\n{}",
                leaking.join("\n")
            );
        }
    }
}
