//! OpenTelemetry traces of the REAL connector binary, received by an OTLP/HTTP receiver that decodes them with
//! the official protobuf definitions (`e2e/python/otlp_receiver.py`, PyPI `opentelemetry-proto`): span names,
//! kinds, attributes (semantic conventions for HTTP and MCP), parent/child links, the client's trace id
//! carried through (HTTP `traceparent` and MCP `params._meta`) and on to the Lumenore backend, and no
//! canary (question, schema id, client id, secret, token) in any span name, attribute, event or link.

use std::{
    io::{BufRead, BufReader, Write},
    process::{Child, ChildStdin, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use lumenore_e2e::{
    connector::{Connector, ConnectorSpec},
    fake_backend::{FakeConfig, FakeLumenore},
    http_client, install_crypto_provider,
    mcp::PROTOCOL_VERSION,
    repo_root, tools,
};
use serde_json::{Value, json};

const CLIENT_ID: &str = "canary-client-id-7f3a";
const SECRET: &str = "canary-secret-9b1c";
const QUESTION: &str = "canary question 4d2e about sales";
const SCHEMA_ID: i64 = 987651;
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const HTTP_PARENT: &str = "00f067aa0ba902b7";
const META_PARENT: &str = "b7ad6b7169203331";

/// The receiver as a child process; its stdout lines (one JSON span each) are collected.
struct Receiver {
    child: Child,
    stdin: Option<ChildStdin>,
    port: u16,
    spans: Arc<Mutex<Vec<Value>>>,
}

impl Receiver {
    fn start() -> Option<Receiver> {
        let python = tools::require("python venv (opentelemetry-proto)", tools::venv_python())?;
        let has_proto = Command::new(&python)
            .args([
                "-c",
                "import opentelemetry.proto.collector.trace.v1.trace_service_pb2",
            ])
            .status()
            .is_ok_and(|s| s.success());
        tools::require("opentelemetry-proto", has_proto.then_some(python.clone()))?;
        let mut child = Command::new(python)
            .arg(repo_root().join("e2e/python/otlp_receiver.py"))
            .arg("0")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the OTLP receiver");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines.next().expect("receiver output").expect("receiver line");
        let port = first
            .strip_prefix("listening ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("unexpected receiver line {first:?}"));
        let spans = Arc::new(Mutex::new(Vec::new()));
        let sink = spans.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                let value: Value = serde_json::from_str(&line).expect("receiver prints JSON");
                sink.lock().unwrap().push(value);
            }
        });
        Some(Receiver {
            stdin: child.stdin.take(),
            child,
            port,
            spans,
        })
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn spans(&self) -> Vec<Value> {
        self.spans.lock().unwrap().clone()
    }

    /// Waits until `done` holds for the spans received (at most 30 s).
    async fn wait_for(&self, what: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let spans = self.spans();
            assert!(
                !spans.iter().any(|s| s.get("error").is_some()),
                "the receiver could not decode an export: {spans:#?}"
            );
            if done(&spans) {
                return spans;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; spans: {spans:#?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = stdin.write_all(b"");
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn with_otlp(spec: ConnectorSpec, receiver: &Receiver) -> ConnectorSpec {
    spec.env("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.endpoint())
        .env("OTEL_SERVICE_NAME", "acme-connector")
        .env("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment.name=e2e")
        // Export within 100 ms instead of 5 s.
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
}

/// POST one JSON-RPC message to /mcp with an optional `traceparent` header; returns the parsed answer.
async fn post(url: &str, traceparent: Option<&str>, body: Value) -> Value {
    let mut request = http_client(Duration::from_secs(30))
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", PROTOCOL_VERSION)
        .json(&body);
    if let Some(tp) = traceparent {
        request = request.header("traceparent", tp);
    }
    let response = request.send().await.expect("POST /mcp");
    assert_eq!(response.status(), 200);
    lumenore_e2e::mcp::parse_answer(&response.text().await.unwrap()).expect("a JSON-RPC answer")
}

fn attr<'a>(span: &'a Value, key: &str) -> &'a Value {
    &span["attributes"][key]
}

fn find(spans: &[Value], pred: impl Fn(&Value) -> bool) -> Vec<&Value> {
    spans.iter().filter(|s| pred(s)).collect()
}

fn one<'a>(spans: &'a [Value], what: &str, pred: impl Fn(&Value) -> bool) -> &'a Value {
    let found = find(spans, pred);
    assert_eq!(
        found.len(),
        1,
        "expected one {what}, got {found:#?}\nall spans: {spans:#?}"
    );
    found[0]
}

/// Every string in the spans (names, attribute keys and string values, events, links, resource).
fn strings(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::String(s) => out.push(s.clone()),
        Value::Array(items) => items.iter().for_each(|v| strings(v, out)),
        Value::Object(map) => map.iter().for_each(|(k, v)| {
            out.push(k.clone());
            strings(v, out);
        }),
        _ => {}
    }
}

fn assert_no_canaries(spans: &[Value], canaries: &[&str]) {
    let mut all = Vec::new();
    for span in spans {
        strings(span, &mut all);
    }
    for canary in canaries {
        let leaks: Vec<&String> = all.iter().filter(|s| s.contains(canary)).collect();
        assert!(leaks.is_empty(), "canary {canary:?} exported in spans: {leaks:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_tool_call_is_traced_end_to_end_without_leaking_data() {
    install_crypto_provider();
    let Some(receiver) = Receiver::start() else { return };
    let fake = FakeLumenore::start(FakeConfig {
        client_id: CLIENT_ID.into(),
        secret: SECRET.into(),
        ..FakeConfig::default()
    })
    .await;
    // One readiness check (the first login) at start, none during the test.
    let spec =
        ConnectorSpec::lumenore(&fake.url(), CLIENT_ID, SECRET).env("LUMENORE_READINESS_INTERVAL", "1h");
    let mut connector = Connector::start(with_otlp(spec, &receiver)).await;
    connector
        .wait_ready(Duration::from_secs(30))
        .await
        .expect("ready");

    // 1. A tool call carrying the client's trace context in the HTTP header and in params._meta.
    let answer = post(
        &connector.mcp,
        Some(&format!("00-{TRACE_ID}-{HTTP_PARENT}-01")),
        json!({"jsonrpc": "2.0", "id": "req-42", "method": "tools/call", "params": {
            "name": "nlq_to_data",
            "arguments": {"userQuery": QUESTION, "schemaId": SCHEMA_ID},
            "_meta": {"traceparent": format!("00-{TRACE_ID}-{META_PARENT}-01"), "progressToken": "p1"}}}),
    )
    .await;
    assert_eq!(answer["result"]["isError"], false, "{answer}");
    let spans = receiver
        .wait_for("the HTTP, MCP and backend spans of req-42", |spans| {
            find(spans, |s| s["trace_id"] == TRACE_ID).len() >= 3
        })
        .await;
    let http = one(&spans, "HTTP server span", |s| {
        s["trace_id"] == TRACE_ID && s["name"] == "POST /mcp"
    });
    assert_eq!(http["kind"], "SPAN_KIND_SERVER");
    assert_eq!(
        http["parent_span_id"], HTTP_PARENT,
        "the HTTP span continues the traceparent header"
    );
    assert_eq!(attr(http, "http.request.method"), "POST");
    assert_eq!(attr(http, "http.route"), "/mcp");
    assert_eq!(attr(http, "http.response.status_code"), 200);
    assert_eq!(
        http["resource"]["service.name"], "acme-connector",
        "OTEL_SERVICE_NAME"
    );
    assert_eq!(
        http["resource"]["deployment.environment.name"], "e2e",
        "OTEL_RESOURCE_ATTRIBUTES"
    );

    let mcp = one(&spans, "MCP server span", |s| {
        s["trace_id"] == TRACE_ID && s["name"] == "tools/call nlq_to_data"
    });
    assert_eq!(mcp["kind"], "SPAN_KIND_SERVER");
    assert_eq!(
        mcp["parent_span_id"], META_PARENT,
        "the MCP span's parent is the client span in params._meta"
    );
    assert_eq!(
        mcp["links"],
        json!([{"trace_id": TRACE_ID, "span_id": http["span_id"], "attributes": {}}]),
        "the MCP span links the HTTP span"
    );
    for (key, want) in [
        ("mcp.method.name", json!("tools/call")),
        ("gen_ai.tool.name", json!("nlq_to_data")),
        ("gen_ai.operation.name", json!("execute_tool")),
        ("jsonrpc.request.id", json!("req-42")),
        ("mcp.protocol.version", json!(PROTOCOL_VERSION)),
        ("network.transport", json!("tcp")),
        ("network.protocol.name", json!("http")),
        ("lumenore.tool.outcome", json!("success")),
    ] {
        assert_eq!(attr(mcp, key), &want, "{key} of {mcp:#}");
    }
    assert!(
        attr(mcp, "error.type").is_null() && mcp["status"] == "STATUS_CODE_UNSET",
        "{mcp:#}"
    );

    let call = one(&spans, "backend call span", |s| {
        s["trace_id"] == TRACE_ID && s["name"] == "POST api/ai-engine/mcp/nlq-to-data"
    });
    assert_eq!(call["kind"], "SPAN_KIND_CLIENT");
    assert_eq!(
        call["parent_span_id"], mcp["span_id"],
        "the backend call is a child of the MCP span"
    );
    assert_eq!(attr(call, "http.request.method"), "POST");
    assert_eq!(attr(call, "server.address"), "127.0.0.1");
    assert_eq!(attr(call, "server.port"), i64::from(fake.port));
    // The trace went on to the backend: its traceparent names the backend call span as parent.
    let sent = fake.traceparents();
    assert!(
        sent.iter()
            .any(|(path, tp)| path == "/api/ai-engine/mcp/nlq-to-data"
                && *tp == format!("00-{TRACE_ID}-{}-01", call["span_id"].as_str().unwrap())),
        "backend traceparent headers: {sent:?}"
    );

    // 2. A call after the backend revoked the token: the login runs inside the call and is traced there.
    //    Only the HTTP header carries context now: the MCP span is the HTTP span's child.
    fake.revoke_tokens();
    let trace2 = "0af7651916cd43dd8448eb211c80319c";
    let answer = post(
        &connector.mcp,
        Some(&format!("00-{trace2}-{HTTP_PARENT}-01")),
        json!({"jsonrpc": "2.0", "id": 43, "method": "tools/call", "params": {
            "name": "get_metadata_info", "arguments": {"schemaId": SCHEMA_ID}}}),
    )
    .await;
    assert_eq!(answer["result"]["isError"], false, "{answer}");
    let spans = receiver
        .wait_for("the login span of call 43", |spans| {
            find(spans, |s| {
                s["trace_id"] == trace2 && s["name"] == "POST api/secure/client/user-login"
            })
            .len()
                == 1
        })
        .await;
    let http2 = one(&spans, "HTTP span of call 43", |s| {
        s["trace_id"] == trace2 && s["name"] == "POST /mcp"
    });
    let mcp2 = one(&spans, "MCP span of call 43", |s| {
        s["trace_id"] == trace2 && s["name"] == "tools/call get_metadata_info"
    });
    assert_eq!(mcp2["parent_span_id"], http2["span_id"]);
    assert_eq!(mcp2["links"], json!([]));
    assert_eq!(attr(mcp2, "jsonrpc.request.id"), "43");
    let login = one(&spans, "login span", |s| {
        s["trace_id"] == trace2 && s["name"] == "POST api/secure/client/user-login"
    });
    assert_eq!(
        login["parent_span_id"], mcp2["span_id"],
        "the login is a child of the MCP span"
    );
    assert_eq!(login["kind"], "SPAN_KIND_CLIENT");
    let calls = find(&spans, |s| {
        s["trace_id"] == trace2 && s["kind"] == "SPAN_KIND_CLIENT" && s["name"] != login["name"]
    });
    assert_eq!(
        calls.len(),
        2,
        "the refused attempt and the retry after the login: {calls:#?}"
    );
    assert!(calls.iter().all(|c| c["parent_span_id"] == mcp2["span_id"]));
    assert!(
        calls
            .iter()
            .all(|c| c["name"] == "POST api/askme-manager/metadata/get/{id}"),
        "the schema id is not in the span name: {calls:#?}"
    );
    assert!(
        fake.traceparents()
            .iter()
            .any(|(path, tp)| path == "/api/secure/client/user-login" && tp.contains(trace2)),
        "the login request carries the trace"
    );

    // 3. A validation error: the MCP span says tool_error, with ERROR status.
    let answer = post(
        &connector.mcp,
        None,
        json!({"jsonrpc": "2.0", "id": 44, "method": "tools/call", "params": {
            "name": "nlq_to_data", "arguments": {"userQuery": QUESTION}}}),
    )
    .await;
    assert_eq!(answer["result"]["isError"], true, "{answer}");
    let spans = receiver
        .wait_for("the span of call 44", |spans| {
            find(spans, |s| s["attributes"]["jsonrpc.request.id"] == "44").len() == 1
        })
        .await;
    let failed = one(&spans, "MCP span of call 44", |s| {
        s["attributes"]["jsonrpc.request.id"] == "44"
    });
    assert_eq!(attr(failed, "error.type"), "tool_error");
    assert_eq!(attr(failed, "lumenore.tool.outcome"), "validation_error");
    assert_eq!(failed["status"], "STATUS_CODE_ERROR");
    // A fresh trace (no client context): the HTTP span is a root.
    let http3 = one(&spans, "HTTP span of call 44", |s| {
        s["span_id"] == failed["parent_span_id"]
    });
    assert_eq!(http3["parent_span_id"], "");

    // Only the spans above: no log event became a span event, and nothing carries user data or secrets.
    assert!(
        spans.iter().all(|s| s["events"] == json!([])),
        "span events exported"
    );
    let tokens: Vec<String> = (1..=3).map(|n| format!("fake-token-{n}")).collect();
    let mut canaries = vec![QUESTION, "canary question", CLIENT_ID, SECRET, "987651"];
    canaries.extend(tokens.iter().map(String::as_str));
    assert_no_canaries(&spans, &canaries);
    connector.stop(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_engine_plan_and_query_are_child_spans() {
    install_crypto_provider();
    let Some(receiver) = Receiver::start() else { return };
    let mut connector = Connector::start(with_otlp(ConnectorSpec::embedded(), &receiver)).await;
    connector
        .wait_ready(Duration::from_secs(60))
        .await
        .expect("ready");
    let question = "total revenue by region";
    let answer = post(
        &connector.mcp,
        None,
        json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
            "name": "nlq_to_data", "arguments": {"userQuery": question, "schemaId": 35403}}}),
    )
    .await;
    assert_eq!(answer["result"]["isError"], false, "{answer}");
    let spans = receiver
        .wait_for("engine spans", |spans| {
            find(spans, |s| s["name"] == "engine query").len() == 1
        })
        .await;
    let mcp = one(&spans, "MCP span", |s| s["name"] == "tools/call nlq_to_data");
    for name in ["engine plan", "engine query"] {
        let span = one(&spans, name, |s| s["name"] == name);
        assert_eq!(
            span["parent_span_id"], mcp["span_id"],
            "{name} is a child of the MCP span"
        );
        assert_eq!(span["trace_id"], mcp["trace_id"]);
        assert_eq!(span["attributes"], json!({}), "{name} carries no attribute");
    }
    assert_no_canaries(&spans, &[question, "35403"]);
    connector.stop(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_endpoint_nothing_is_exported_and_a_grpc_protocol_is_refused() {
    install_crypto_provider();
    let Some(receiver) = Receiver::start() else { return };
    // No endpoint: the receiver gets nothing, whatever else is set.
    let mut connector = Connector::start(
        ConnectorSpec::embedded()
            .env("OTEL_SERVICE_NAME", "x")
            .env("OTEL_BSP_SCHEDULE_DELAY", "50"),
    )
    .await;
    connector
        .wait_ready(Duration::from_secs(60))
        .await
        .expect("ready");
    let answer = post(
        &connector.mcp,
        Some(&format!("00-{TRACE_ID}-{HTTP_PARENT}-01")),
        json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
            "name": "get_dataset_metadata", "arguments": {}}}),
    )
    .await;
    assert_eq!(answer["result"]["isError"], false, "{answer}");
    connector.stop(Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(receiver.spans().is_empty(), "{:#?}", receiver.spans());

    // gRPC is not built in: a clear start-up error naming the variable.
    let refused = Command::new(lumenore_e2e::connector::connector_binary())
        .env_clear()
        .env("LUMENORE_BACKEND", "embedded")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint())
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        .stdin(Stdio::null())
        .output()
        .expect("run the connector");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("OTEL_EXPORTER_OTLP_PROTOCOL=grpc is not supported"),
        "{stderr}"
    );
}

/// The running whole of the operator's telemetry settings: the environment `lumenore-operator` builds for
/// a tenant's connector pod (`builders::connector_env`, the very function the reconciler uses) runs the
/// real connector binary, with what the kubelet would do done by hand (Secret references resolved, the
/// port moved to loopback). The export then follows the custom resource: the collector gets the Secret's
/// header, the default `service.name`, and `samplingRatio: 0` samples no trace the connector starts while
/// a caller's sampled trace is kept (parent-based). The header's value is in no log line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operators_telemetry_settings_rule_the_connectors_export() {
    use lumenore_operator::{builders, crd::LumenoreConnector};
    const HEADER_SECRET: &str = "otlp-canary-5c1d";
    install_crypto_provider();
    let Some(receiver) = Receiver::start() else { return };
    let lc: LumenoreConnector = serde_json::from_value(json!({
        "apiVersion": "lumenore.io/v1alpha1",
        "kind": "LumenoreConnector",
        "metadata": {"name": "demo", "namespace": "tenants", "uid": "uid-demo", "generation": 1},
        "spec": {
            "tenant": "demo",
            "region": {"cloud": "oci", "name": "eu-frankfurt-1"},
            "backend": "embedded",
            "network": {"extraAllowedHosts": ["127.0.0.1"]},
            "telemetry": {"otlp": {
                "endpoint": receiver.endpoint(),
                "headersSecretRef": {"name": "demo-otlp", "key": "headers"},
                "samplingRatio": 0.0
            }}
        }
    }))
    .expect("a valid LumenoreConnector");

    let mut spec = ConnectorSpec {
        env: Vec::new(),
        args: Vec::new(),
    };
    for var in builders::connector_env(&lc) {
        let value = match (&var.value, &var.value_from) {
            (Some(value), _) => value.clone(),
            (None, Some(from)) => {
                let secret = from.secret_key_ref.as_ref().expect("only Secret references");
                assert_eq!(
                    (secret.name.as_str(), secret.key.as_str()),
                    ("demo-otlp", "headers")
                );
                format!("x-tenant-token={HEADER_SECRET}")
            }
            (None, None) => String::new(),
        };
        // The harness gives the process a loopback port instead of the pod's 0.0.0.0:8080.
        if var.name != lumenore_contract::env::LISTEN {
            spec = spec.env(&var.name, &value);
        }
    }
    assert!(
        spec.env
            .iter()
            .any(|(name, value)| name == "OTEL_TRACES_SAMPLER_ARG" && value == "0"),
        "{:?}",
        spec.env
    );
    // Not from the operator: export every 100 ms instead of every 5 s, so the test is quick.
    let mut connector = Connector::start(spec.env("OTEL_BSP_SCHEDULE_DELAY", "100")).await;
    connector
        .wait_ready(Duration::from_secs(60))
        .await
        .expect("ready with the operator's environment");

    let call = |id: u32| {
        json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {
            "name": "get_dataset_metadata", "arguments": {}}})
    };
    // A trace the connector starts: ratio 0 samples it out.
    let answer = post(&connector.mcp, None, call(1)).await;
    assert_eq!(answer["result"]["isError"], false, "{answer}");
    // A caller's sampled trace: parent-based, kept. The batch exporter sends in order, so once these
    // spans are in, spans of the first call would be in too.
    let answer = post(
        &connector.mcp,
        Some(&format!("00-{TRACE_ID}-{HTTP_PARENT}-01")),
        call(2),
    )
    .await;
    assert_eq!(answer["result"]["isError"], false, "{answer}");
    let spans = receiver
        .wait_for("the spans of the caller's sampled trace", |spans| {
            find(spans, |s| s["trace_id"] == TRACE_ID).len() >= 2
        })
        .await;
    let foreign = find(&spans, |s| s["trace_id"] != TRACE_ID);
    assert!(
        foreign.is_empty(),
        "samplingRatio 0 exported a trace the connector started: {foreign:#?}"
    );
    for span in &spans {
        assert_eq!(
            span["request_headers"]["x-tenant-token"], HEADER_SECRET,
            "{span:#}"
        );
        assert_eq!(
            span["resource"]["service.name"], "lumenore-connector-demo",
            "{span:#}"
        );
    }
    let logs = connector.stop(Duration::from_secs(10)).await.logs;
    assert!(
        !logs.contains(HEADER_SECRET),
        "the OTLP header's value was logged:\n{logs}"
    );
}
