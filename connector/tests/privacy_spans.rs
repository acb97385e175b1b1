//! Privacy proof for the exported trace spans, in process (the same check as `e2e/tests/otel.rs`, without the
//! binary or Python): the connector's spans go through the exporter set-up of `otel::init` (the same tracer
//! provider with its batch processor and resource, the same layer and switch, `otel::start`), but to
//! opentelemetry_sdk's in-memory exporter instead of OTLP. Real tool calls carry canary values for the
//! question, schema id, client id, secret, backend token and result, through a working Lumenore backend,
//! failing ones (HTTP 500, 401, a refused login), the embedded engine, validation errors and an unknown tool.
//! No canary may appear in any span name, attribute, event, link, status message, instrumentation scope or
//! resource attribute; and the spans must really have been exported (named spans, outcomes, error classes and
//! the client's trace id), so the test fails if exporting silently stops.
//!
//! Its own test binary: span export is switched on for the whole process.

mod support;

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use lumenore_connector::{
    backend::lumenore::Credentials,
    config::{BackendKind, Config},
    otel,
};
use opentelemetry::{
    KeyValue,
    trace::{Span as _, Status, Tracer as _},
};
use opentelemetry_sdk::{
    Resource,
    error::OTelSdkResult,
    trace::{InMemorySpanExporter, SdkTracerProvider, SpanData, SpanExporter},
};
use serde_json::{Value, json};
use support::{canary::*, *};
use wiremock::{
    Mock, MockServer, ResponseTemplate,
    matchers::{method, path, path_regex},
};

/// The client's W3C trace context: the HTTP header's parent and the MCP `params._meta` parent.
const TRACE_ID: &str = "5af7183fb1d4cf5f2b5e1c3d9a8e7f60";
const HTTP_PARENT: &str = "a1b2c3d4e5f60718";
const META_PARENT: &str = "0f1e2d3c4b5a6978";

/// The in-memory exporter, plus the resource the provider hands it (which it keeps to itself).
#[derive(Clone, Debug, Default)]
struct Recording {
    spans: InMemorySpanExporter,
    resource: Arc<Mutex<Option<Resource>>>,
}

impl SpanExporter for Recording {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        self.spans.export(batch).await
    }

    fn set_resource(&mut self, resource: &Resource) {
        *self.resource.lock().unwrap() = Some(resource.clone());
        self.spans.set_resource(resource);
    }
}

impl Recording {
    fn finished(&self, provider: &SdkTracerProvider) -> (Vec<SpanData>, Resource) {
        provider.force_flush().expect("flush the batch processor");
        let spans = self.spans.get_finished_spans().expect("finished spans");
        let resource = self
            .resource
            .lock()
            .unwrap()
            .clone()
            .expect("the provider gave the exporter its resource");
        (spans, resource)
    }
}

/// Every text an OTLP export of these spans carries, with where it is.
fn exported_texts(spans: &[SpanData], resource: &Resource) -> Vec<(String, String)> {
    let mut texts = Vec::new();
    for (key, value) in resource.iter() {
        texts.push((format!("resource {key}"), format!("{key}={}", value.as_str())));
    }
    for span in spans {
        let at = |what: &str| format!("span {:?} {what}", span.name);
        texts.push((at("name"), span.name.to_string()));
        for kv in &span.attributes {
            texts.push((at("attribute"), format!("{}={}", kv.key, kv.value.as_str())));
        }
        for event in span.events.iter() {
            texts.push((at("event name"), event.name.to_string()));
            for kv in &event.attributes {
                texts.push((at("event attribute"), format!("{}={}", kv.key, kv.value.as_str())));
            }
        }
        for link in span.links.iter() {
            texts.push((at("link trace state"), link.span_context.trace_state().header()));
            for kv in &link.attributes {
                texts.push((at("link attribute"), format!("{}={}", kv.key, kv.value.as_str())));
            }
        }
        texts.push((at("trace state"), span.span_context.trace_state().header()));
        if let Status::Error { description } = &span.status {
            texts.push((at("status message"), description.to_string()));
        }
        let scope = &span.instrumentation_scope;
        texts.push((at("scope"), scope.name().to_string()));
        texts.extend(scope.version().map(|v| (at("scope version"), v.to_string())));
        for kv in scope.attributes() {
            texts.push((at("scope attribute"), format!("{}={}", kv.key, kv.value.as_str())));
        }
    }
    texts
}

fn leaks(spans: &[SpanData], resource: &Resource) -> Vec<String> {
    let canaries = canaries();
    exported_texts(spans, resource)
        .into_iter()
        .filter(|(_, text)| canaries.iter().any(|canary| text.contains(canary.as_str())))
        .map(|(at, text)| format!("{at}: {text}"))
        .collect()
}

async fn lumenore(kind: &str) -> MockServer {
    let server = MockServer::start().await;
    let login = match kind {
        "login_refused" => ResponseTemplate::new(401)
            .set_body_json(json!({"message": format!("client {CLIENT_ID} with secret {SECRET} refused")})),
        _ => ResponseTemplate::new(200)
            .insert_header(
                "set-cookie",
                format!("access_token={TOKEN}; Path=/; HttpOnly").as_str(),
            )
            .set_body_json(json!({"echo": CLIENT_ID})),
    };
    Mock::given(method("POST"))
        .and(path("/api/secure/client/user-login"))
        .respond_with(login)
        .mount(&server)
        .await;
    let answer = match kind {
        "success" | "login_refused" => ResponseTemplate::new(200)
            .set_body_json(json!({"rows": [[RESULT, 1]], "question": QUERY, "schemaId": SCHEMA_ID})),
        "server_error" => ResponseTemplate::new(500)
            .set_body_json(json!({"message": format!("failed on {QUERY} for {SCHEMA_ID}: {RESULT}")})),
        "unauthorized" => {
            ResponseTemplate::new(401).set_body_string(format!("token {TOKEN} expired for {QUERY}"))
        }
        other => panic!("unknown backend kind {other}"),
    };
    Mock::given(path_regex("^/api/(askme-manager|ai-engine)/.*"))
        .respond_with(answer)
        .mount(&server)
        .await;
    server
}

/// A tool call as an MCP client with W3C tracing sends it: `traceparent` in the HTTP headers and in
/// `params._meta`.
async fn traced_call(mcp: &str, tool: &str, arguments: Value) -> Value {
    let body = json!({
        "jsonrpc": "2.0", "id": 7, "method": "tools/call",
        "params": {
            "name": tool, "arguments": arguments,
            "_meta": {"traceparent": format!("00-{TRACE_ID}-{META_PARENT}-01")},
        },
    });
    let response = http()
        .post(mcp)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-06-18")
        .header("traceparent", format!("00-{TRACE_ID}-{HTTP_PARENT}-01"))
        .json(&body)
        .send()
        .await
        .expect("request sent");
    let value: Value = response.json().await.expect("a JSON answer");
    value.get("result").cloned().unwrap_or(value)
}

/// Every tool with canary arguments, a validation error of each kind and an unknown tool.
async fn drive(mcp: &str) -> Vec<Value> {
    let query = json!({"userQuery": QUERY, "schemaId": SCHEMA_ID});
    let mut results = vec![
        call_tool(mcp, "get_dataset_metadata", json!({})).await,
        call_tool(mcp, "get_metadata_info", json!({"schemaId": SCHEMA_ID})).await,
        traced_call(mcp, "nlq_to_data", query.clone()).await,
    ];
    for tool in &QUERY_TOOLS[1..] {
        results.push(call_tool(mcp, tool, query.clone()).await);
    }
    // Validation errors: a schema id that is not one, and an unknown argument named and valued by canaries.
    results.push(
        call_tool(
            mcp,
            "nlq_to_data",
            json!({"userQuery": QUERY, "schemaId": format!("{SCHEMA_ID}{RESULT}")}),
        )
        .await,
    );
    results.push(
        call_tool(
            mcp,
            "get_trend_data",
            json!({"userQuery": QUERY, "schemaId": SCHEMA_ID, RESULT: SECRET}),
        )
        .await,
    );
    results.push(call_tool(mcp, "get_metadata_info", json!({"schemaId": QUERY})).await);
    // An unknown tool named by a canary.
    results.push(call_tool(mcp, &format!("tool_{RESULT}"), query.clone()).await);
    results
}

fn attribute(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.as_str().into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_canary_reaches_an_exported_span() {
    let recording = Recording::default();
    let provider = otel::tracer_provider(recording.clone());
    otel::start(provider.clone());
    assert!(otel::enabled(), "span export is not on");

    let mut answers = Vec::new();
    for kind in ["success", "server_error", "unauthorized", "login_refused"] {
        let backend = lumenore(kind).await;
        let mut config = config_for(&backend.uri());
        config.max_retries = 0;
        config.login_backoff = Duration::from_millis(1);
        let server = start(config, client_credentials(CLIENT_ID, SECRET), false).await;
        answers.push((kind, drive(&server.mcp).await));
        server.stop().await.unwrap();
    }
    let mut config = Config::defaults();
    config.backend = BackendKind::Embedded;
    let server = start(config, Credentials::Missing, false).await;
    let embedded = vec![
        traced_call(
            &server.mcp,
            "nlq_to_data",
            json!({"userQuery": QUERY, "schemaId": 35403}),
        )
        .await,
        call_tool(
            &server.mcp,
            "nlq_to_data",
            json!({"userQuery": "total sales by region", "schemaId": 35403}),
        )
        .await,
        call_tool(&server.mcp, "get_metadata_info", json!({"schemaId": SCHEMA_ID})).await,
        call_tool(
            &server.mcp,
            "get_trend_data",
            json!({"userQuery": QUERY, "schemaId": SCHEMA_ID}),
        )
        .await,
    ];
    answers.push(("embedded", embedded));
    server.stop().await.unwrap();

    // The calls really ran: the success path answered with the backend's result, and the failures failed.
    let success = answers[0].1[2].to_string();
    assert!(
        success.contains(RESULT),
        "no result from the working backend: {success}"
    );
    for (kind, results) in &answers[1..4] {
        assert!(
            results[2]["isError"] == json!(true),
            "{kind}: nlq_to_data did not fail: {}",
            results[2]
        );
    }

    let (spans, resource) = recording.finished(&provider);
    let names: std::collections::BTreeSet<&str> = spans.iter().map(|s| s.name.as_ref()).collect();
    for expected in [
        "POST /mcp",
        "tools/call",
        "tools/call get_dataset_metadata",
        "tools/call get_metadata_info",
        "tools/call nlq_to_data",
        "tools/call get_pareto_data",
        "POST api/secure/client/user-login",
        "GET api/askme-manager/get-domain",
        "POST api/askme-manager/metadata/get/{id}",
        "POST api/ai-engine/mcp/nlq-to-data",
        "POST api/ai-engine/mcp/get-trend-data",
        "engine plan",
        "engine query",
    ] {
        assert!(
            names.contains(expected),
            "no exported span {expected:?}; got {names:?}"
        );
    }
    let outcomes: std::collections::BTreeSet<String> = spans
        .iter()
        .filter_map(|s| attribute(s, "lumenore.tool.outcome"))
        .collect();
    for outcome in ["success", "validation_error", "error"] {
        assert!(
            outcomes.contains(outcome),
            "no span with outcome {outcome}: {outcomes:?}"
        );
    }
    let errors: std::collections::BTreeSet<String> =
        spans.iter().filter_map(|s| attribute(s, "error.type")).collect();
    for class in ["http_5xx", "unauthorized", "tool_error", "-32602"] {
        assert!(
            errors.contains(class),
            "no span with error.type {class}: {errors:?}"
        );
    }
    let client_trace = spans
        .iter()
        .filter(|s| s.span_context.trace_id().to_string() == TRACE_ID)
        .count();
    assert!(
        client_trace >= 5 * 2,
        "the client's trace id reached {client_trace} spans"
    );
    assert!(
        resource
            .iter()
            .any(|(k, v)| k.as_str() == "service.name" && v.as_str() == "lumenore-connector"),
        "resource: {resource:?}"
    );

    let found = leaks(&spans, &resource);
    eprintln!(
        "exported {} spans ({} texts checked), {client_trace} in the client's trace",
        spans.len(),
        exported_texts(&spans, &resource).len()
    );
    assert!(
        found.is_empty(),
        "{} exported texts carry a canary:\n{}",
        found.len(),
        found.join("\n")
    );

    // The check can fail: a span with a canary attribute, through the same pipeline, is caught.
    recording.spans.reset();
    let tracer = otel::tracer().expect("export is on");
    tracer
        .span_builder("control")
        .with_attributes([KeyValue::new("leak", QUERY)])
        .start(tracer)
        .end();
    let (control, resource) = recording.finished(&provider);
    let found = leaks(&control, &resource);
    assert!(
        found.iter().any(|leak| leak.contains("leak=")),
        "a canary attribute was not caught: {found:?}"
    );
}
