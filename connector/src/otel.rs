//! OpenTelemetry traces, exported over OTLP/HTTP (protobuf) when an endpoint is configured with the standard
//! variables (`OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, plus `_HEADERS`,
//! `_TIMEOUT`, `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`); off otherwise, and then nothing below runs
//! (one atomic load per request). The exporter and the tracer provider keep the SDK's defaults, which read
//! `OTEL_EXPORTER_OTLP_HEADERS` (and `OTEL_EXPORTER_OTLP_TRACES_HEADERS`), `OTEL_TRACES_SAMPLER` and
//! `OTEL_TRACES_SAMPLER_ARG`: the operator sets these (lumenore-operator's `CONNECTOR_OTEL_ENV`, names from
//! `lumenore_contract::env::otel`; the e2e test `the_operators_telemetry_settings_rule_the_connectors_export`
//! runs this binary with them and checks the export follows them).
//!
//! Spans (semantic conventions for HTTP and for MCP):
//! - `POST /mcp`, kind SERVER: one per HTTP request to /mcp; parent: the `traceparent` header.
//! - `{mcp.method.name} {gen_ai.tool.name}`, kind SERVER: one per MCP request; parent: the W3C trace context
//!   in `params._meta` when the client sent one (the HTTP span is then linked), else the HTTP span.
//! - `POST {path}` kind CLIENT: the backend login and each backend call (their `traceparent` header carries
//!   the trace on to the Lumenore backend); `engine plan` / `engine query`: the embedded engine (made by
//!   lumenore-embedded through the global tracer provider set here).
//!
//! The spans are made with the OpenTelemetry API itself, not through `tracing`: the sampler decides when a
//! span starts, and only a span it records gets its attributes (the samplers the SDK reads from
//! `OTEL_TRACES_SAMPLER` do not look at attributes), so an unsampled request costs a few ids and its
//! `traceparent`. A bridge from `tracing` spans built every span in full before the sampler decided, and cost
//! four times as much. The current span travels as the OpenTelemetry [`Context`] of the request's future
//! (`with_context`), and across tasks and threads by [`current`] and [`within`].
//!
//! Privacy: spans only (no log events, no `tracing` data), and their attributes are fixed names and values
//! from fixed sets (method, tool, outcome, error class, status code), a JSON-RPC id of safe characters and
//! the server's address. Never a question, schema id, argument, result, token, key or secret.

use std::{
    borrow::Cow,
    collections::HashMap,
    future::Future,
    sync::{LazyLock, OnceLock},
};

use axum::{extract::Request, middleware::Next, response::Response};
use futures::future::Either;
use lumenore_contract::env::otel as vars;
use opentelemetry::{
    Context, KeyValue,
    context::{FutureExt as _, WithContext},
    propagation::TextMapPropagator,
    trace::{
        Link, Span as _, SpanContext, SpanKind, Status, TraceContextExt, TraceFlags, Tracer as _,
        TracerProvider as _,
    },
};
use opentelemetry_http::HeaderExtractor;
use opentelemetry_sdk::{
    Resource,
    propagation::TraceContextPropagator,
    trace::{SdkTracer, SdkTracerProvider, SpanExporter},
};
use serde_json::Value;
use tracing::level_filters::LevelFilter;
use tracing_subscriber::{EnvFilter, layer::SubscriberExt, util::SubscriberInitExt};

use crate::{
    http::body::RpcMessage, http::jsonrpc::RpcPeek, telemetry, telemetry::LogFormat, tools::ToolName,
};

/// Instrumentation scope of the connector's spans (the embedded engine's are `lumenore-embedded`).
pub const SCOPE: &str = "lumenore-connector";
const SERVICE_NAME: &str = "lumenore-connector";

static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();
static TRACER: OnceLock<SdkTracer> = OnceLock::new();

/// Whether spans are exported (an OTLP endpoint is configured).
pub fn enabled() -> bool {
    TRACER.get().is_some()
}

/// The tracer of the connector's spans, when export is on.
pub fn tracer() -> Option<&'static SdkTracer> {
    TRACER.get()
}

/// Whether the standard variables ask for trace export: an endpoint is set, the SDK is not disabled and
/// the traces exporter is not `none`.
pub fn configured(env: impl Fn(&str) -> Option<String>) -> Result<bool, String> {
    let set = |name: &str| env(name).is_some_and(|v| !v.trim().is_empty());
    if env(vars::SDK_DISABLED).is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
        || env(vars::TRACES_EXPORTER).is_some_and(|v| v.trim().eq_ignore_ascii_case("none"))
    {
        return Ok(false);
    }
    if !set(vars::EXPORTER_OTLP_ENDPOINT) && !set(vars::EXPORTER_OTLP_TRACES_ENDPOINT) {
        return Ok(false);
    }
    for name in [vars::EXPORTER_OTLP_TRACES_PROTOCOL, vars::EXPORTER_OTLP_PROTOCOL] {
        if let Some(protocol) = env(name).filter(|v| !v.trim().is_empty()) {
            if protocol.trim() != "http/protobuf" {
                return Err(format!(
                    "{name}={protocol} is not supported: the connector exports traces with OTLP over HTTP, set it to http/protobuf"
                ));
            }
            break;
        }
    }
    Ok(true)
}

/// The tracer provider exporting to the configured endpoint.
fn provider() -> Result<SdkTracerProvider, String> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
        .map_err(|error| format!("cannot set up the OTLP trace exporter: {error}"))?;
    Ok(tracer_provider(exporter))
}

/// A tracer provider sending to `exporter` through the batch processor (on its own thread), with the
/// connector's resource. [`init`] gives it the OTLP exporter; tests may give it an in-memory one.
pub fn tracer_provider(exporter: impl SpanExporter + 'static) -> SdkTracerProvider {
    let mut resource = Resource::builder();
    if std::env::var_os(vars::SERVICE_NAME).is_none() {
        resource = resource.with_service_name(SERVICE_NAME.to_string());
    }
    let resource = resource
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build();
    SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build()
}

/// Turns span export on for the process with `provider`: keeps it for [`shutdown`], makes it the global
/// provider (the embedded engine's spans use it), accepts and propagates W3C trace context, and enables the
/// spans below. [`init`] calls it with the OTLP provider; a test may call it once with a provider of its own.
/// Later calls change nothing.
pub fn start(provider: SdkTracerProvider) {
    if PROVIDER.set(provider.clone()).is_err() {
        return;
    }
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    opentelemetry::global::set_tracer_provider(provider.clone());
    let _ = TRACER.set(provider.tracer(SCOPE));
}

/// Installs the global `tracing` subscriber for logs ([`telemetry`]: its filter and privacy caps) and, when
/// configured, starts the OTLP trace export. Replaces `telemetry::init`. Returns an error text when the OTLP
/// configuration cannot be used (logs are set up regardless).
pub fn init(format: LogFormat) -> Result<(), String> {
    let filter = EnvFilter::builder()
        .with_default_directive(LevelFilter::INFO.into())
        .from_env_lossy();
    let logs = telemetry::layer(
        format,
        filter,
        std::io::stderr,
        std::io::IsTerminal::is_terminal(&std::io::stderr()),
    );
    tracing_subscriber::registry()
        .with(logs)
        .with(telemetry::http2_warnings_layer())
        .init();
    // The exporter's HTTPS client needs the process-wide crypto provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    match configured(|name| std::env::var(name).ok()).and_then(|wanted| wanted.then(provider).transpose()) {
        Ok(Some(provider)) => {
            start(provider);
            tracing::info!("exporting traces over OTLP/HTTP");
            Ok(())
        }
        Ok(None) => Ok(()),
        Err(error) => Err(error),
    }
}

/// Exports the spans still buffered and stops the exporter (call once, at exit, outside the runtime).
pub fn shutdown() {
    if let Some(provider) = PROVIDER.get() {
        let _ = provider.shutdown();
    }
}

/// The W3C trace context a JSON-RPC message carries in `params._meta` (`traceparent`, `tracestate`), as the
/// propagator reads it; nothing else of the message is kept.
fn meta_trace_context(message: &serde_json::Map<String, Value>) -> HashMap<String, String> {
    let mut meta = HashMap::new();
    if let Some(m) = message
        .get("params")
        .and_then(|params| params.get("_meta"))
        .and_then(Value::as_object)
    {
        for key in ["traceparent", "tracestate"] {
            if let Some(v) = m.get(key).and_then(Value::as_str).filter(|v| v.len() <= 512) {
                meta.insert(key.to_string(), v.to_string());
            }
        }
    }
    meta
}

/// A JSON-RPC id as an attribute: numbers, and short strings of safe characters (anything else is left out).
fn request_id(id: &Value) -> Option<String> {
    match id {
        Value::Number(n) => Some(n.to_string()),
        Value::String(s)
            if s.len() <= 64
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':')) =>
        {
            Some(s.clone())
        }
        _ => None,
    }
}

/// An MCP protocol version header value, when it looks like one (YYYY-MM-DD).
fn protocol_version(value: &str) -> Option<&str> {
    let b = value.as_bytes();
    (b.len() == 10
        && b.iter().enumerate().all(|(i, c)| {
            if i == 4 || i == 7 {
                *c == b'-'
            } else {
                c.is_ascii_digit()
            }
        }))
    .then_some(value)
}

/// `http.request.method` as the HTTP conventions ask: a known method, else `_OTHER`.
fn http_method(method: &str) -> &'static str {
    const KNOWN: [&str; 9] = [
        "POST", "GET", "DELETE", "PUT", "PATCH", "HEAD", "OPTIONS", "TRACE", "CONNECT",
    ];
    KNOWN
        .into_iter()
        .find(|known| *known == method)
        .unwrap_or("_OTHER")
}

/// `tools/call {tool}` for each tool, made once: the span name of a tool call without an allocation per call.
static TOOL_CALL_NAMES: LazyLock<Vec<String>> = LazyLock::new(|| {
    ToolName::ALL
        .iter()
        .map(|tool| format!("tools/call {}", tool.as_str()))
        .collect()
});

/// The MCP span name, `{mcp.method.name} {gen_ai.tool.name}` (the tool only for `tools/call`).
fn mcp_span_name(method: &'static str, tool: Option<ToolName>) -> Cow<'static, str> {
    let Some(tool) = tool else {
        return method.into();
    };
    match ToolName::ALL.iter().position(|known| *known == tool) {
        Some(index) if method == "tools/call" => TOOL_CALL_NAMES[index].as_str().into(),
        _ => format!("{method} {}", tool.as_str()).into(),
    }
}

/// The MCP span of the request, made by [`trace_mcp`], as the context whose current span it is; the tool-call
/// handler runs in it and records its outcome on it. The span ends when the last copy is dropped.
#[derive(Clone, Debug)]
pub struct McpSpan(pub Context);

/// Middleware on `/mcp` (after the JSON-RPC body check): the HTTP server span and the MCP server span
/// around the rest of the request. Nothing happens when tracing is off.
pub async fn trace_mcp(mut request: Request, next: Next) -> Response {
    let Some(tracer) = tracer() else {
        return next.run(request).await;
    };
    let propagator = TraceContextPropagator::new();
    let version = match request.version() {
        http::Version::HTTP_2 => "2",
        http::Version::HTTP_10 => "1.0",
        _ => "1.1",
    };
    let method = http_method(request.method().as_str());
    let client = propagator.extract(&HeaderExtractor(request.headers()));
    let http_name: Cow<'static, str> = match method {
        "POST" => "POST /mcp".into(),
        "GET" => "GET /mcp".into(),
        "DELETE" => "DELETE /mcp".into(),
        other => format!("{other} /mcp").into(),
    };
    // Attributes only for a span the sampler records (see the module notes).
    let mut http_span = tracer
        .span_builder(http_name)
        .with_kind(SpanKind::Server)
        .start_with_context(tracer, &client);
    if http_span.is_recording() {
        http_span.set_attributes([
            KeyValue::new("http.request.method", method),
            KeyValue::new("http.route", "/mcp"),
            KeyValue::new("url.path", "/mcp"),
            KeyValue::new("url.scheme", "http"),
            KeyValue::new("network.protocol.name", "http"),
            KeyValue::new("network.protocol.version", version),
        ]);
    }
    let http = client.with_span(http_span);

    // The body guard parsed the message once; read what tracing needs from it.
    let message = request.extensions().get::<RpcMessage>().map(|m| m.0.clone());
    let peek = request.extensions().get::<RpcPeek>().copied();
    let protocol = request
        .headers()
        .get("mcp-protocol-version")
        .and_then(|v| v.to_str().ok())
        .and_then(protocol_version);
    let mcp = peek
        .filter(|p| !matches!(p.method, "response" | "other"))
        .map(|peek| {
            // The client's MCP span (from params._meta) is the parent; the HTTP request is linked.
            let meta = message.as_deref().map(meta_trace_context).unwrap_or_default();
            let meta = propagator.extract(&meta);
            let (parent, links) = if meta.span().span_context().is_valid() {
                let link = Link::with_context(http.span().span_context().clone());
                (meta, vec![link])
            } else {
                (http.clone(), Vec::new())
            };
            let mut span = tracer
                .span_builder(mcp_span_name(peek.method, peek.tool))
                .with_kind(SpanKind::Server)
                .with_links(links)
                .start_with_context(tracer, &parent);
            if span.is_recording() {
                let mut attributes = Vec::with_capacity(8);
                attributes.push(KeyValue::new("mcp.method.name", peek.method));
                if let Some(tool) = peek.tool {
                    attributes.push(KeyValue::new("gen_ai.tool.name", tool.as_str()));
                    attributes.push(KeyValue::new("gen_ai.operation.name", "execute_tool"));
                }
                if let Some(id) = message.as_deref().and_then(|m| m.get("id")).and_then(request_id) {
                    attributes.push(KeyValue::new("jsonrpc.request.id", id));
                }
                if let Some(protocol) = protocol {
                    attributes.push(KeyValue::new("mcp.protocol.version", protocol.to_string()));
                }
                attributes.push(KeyValue::new("network.transport", "tcp"));
                attributes.push(KeyValue::new("network.protocol.name", "http"));
                attributes.push(KeyValue::new("network.protocol.version", version));
                span.set_attributes(attributes);
            }
            parent.with_span(span)
        });
    if let Some(cx) = &mcp {
        request.extensions_mut().insert(McpSpan(cx.clone()));
    }
    // Not made current for the rest of the request: the tool handler takes the MCP span from the extensions
    // and runs the backend in it ([`within`]); nothing between here and there makes spans.
    let response = next.run(request).await;

    let status = response.status().as_u16();
    let span = http.span();
    if span.is_recording() {
        span.set_attribute(KeyValue::new("http.response.status_code", i64::from(status)));
        if status >= 500 {
            span.set_attribute(KeyValue::new("error.type", status.to_string()));
            span.set_status(Status::error(""));
        }
    }
    if let Some(cx) = &mcp
        && status >= 400
        && cx.span().is_recording()
    {
        cx.span()
            .set_attribute(KeyValue::new("error.type", status.to_string()));
        cx.span().set_status(Status::error(""));
    }
    span.end();
    response
}

/// The MCP span of a request (from the HTTP layer), when there is one.
pub fn mcp_span(extensions: &http::Extensions) -> Option<Context> {
    extensions.get::<McpSpan>().map(|s| s.0.clone())
}

/// Record a tool call's outcome on its MCP span: `error.type` = `tool_error` when the result is an error
/// (as the MCP conventions ask), and the outcome class.
pub fn record_tool_outcome(cx: Option<&Context>, outcome: &'static str) {
    let Some(span) = cx.map(Context::span).filter(|span| span.is_recording()) else {
        return;
    };
    span.set_attribute(KeyValue::new("lumenore.tool.outcome", outcome));
    if outcome != "success" {
        span.set_attribute(KeyValue::new("error.type", "tool_error"));
        span.set_status(Status::error(""));
    }
}

/// Record a JSON-RPC error answer (e.g. -32602 for an unknown tool) on the MCP span.
pub fn record_rpc_error(cx: Option<&Context>, code: i32) {
    let Some(span) = cx.map(Context::span).filter(|span| span.is_recording()) else {
        return;
    };
    span.set_attribute(KeyValue::new("rpc.response.status_code", code.to_string()));
    span.set_attribute(KeyValue::new("error.type", code.to_string()));
    span.set_status(Status::error(""));
}

/// The current trace context when export is on, for work that moves to another task or thread (see
/// [`within`]).
pub fn current() -> Option<Context> {
    enabled().then(Context::current)
}

/// Run `fut` with `cx` (a request's MCP span) as its current trace context, so that the backend's spans and
/// `traceparent` headers descend from it; without one, `fut` runs as it is. A plain future (no `async fn`
/// around it): the handler's future is moved into rmcp's task whole, so every byte added to it is copied
/// on each spawn and completion (an `async fn` here holding `fut` twice cost 7% of a call's instructions).
pub fn within<F: Future>(cx: Option<Context>, fut: F) -> Either<WithContext<F>, F> {
    match cx {
        Some(cx) => Either::Left(fut.with_context(cx)),
        None => Either::Right(fut),
    }
}

/// The URL template of a backend API path: fixed words kept, any other segment (the schema id of
/// `metadata/get/{id}`) replaced by `{id}`.
fn url_template(path: &str) -> String {
    path.split('/')
        .map(|segment| {
            if !segment.is_empty() && segment.bytes().all(|b| b.is_ascii_lowercase() || b == b'-') {
                segment
            } else {
                "{id}"
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// The class of a failure, recorded as `error.type` (implemented by the backend's error type, so this module
/// needs no import of the backend).
pub trait ErrorClass {
    fn class(&self) -> &'static str;
}

/// Run a backend HTTP exchange (with its retries) in a CLIENT span named `{method} {url.template}` (the API
/// path with its variable segments replaced, see [`url_template`]). The failure's class becomes `error.type`.
pub async fn backend_call<T, E: ErrorClass>(
    method: &str,
    url: &url::Url,
    path: &str,
    fut: impl Future<Output = Result<T, E>>,
) -> Result<T, E> {
    let Some(tracer) = tracer() else {
        return fut.await;
    };
    // Only within a recorded MCP request: the readiness checks are not traced, and the child of an
    // unsampled span is not sampled either (its `traceparent` then names the unsampled parent).
    let parent = Context::current();
    if !parent.span().is_recording() {
        return fut.await;
    }
    let template = url_template(path);
    let mut attributes = vec![
        KeyValue::new("http.request.method", http_method(method)),
        KeyValue::new("url.template", template.clone()),
    ];
    if let Some(host) = url.host_str() {
        attributes.push(KeyValue::new("server.address", host.to_string()));
    }
    if let Some(port) = url.port_or_known_default() {
        attributes.push(KeyValue::new("server.port", i64::from(port)));
    }
    let span = tracer
        .span_builder(format!("{method} {template}"))
        .with_kind(SpanKind::Client)
        .with_attributes(attributes)
        .start_with_context(tracer, &parent);
    let cx = parent.with_span(span);
    let result = fut.with_context(cx.clone()).await;
    if let Err(error) = &result {
        cx.span()
            .set_attribute(KeyValue::new("error.type", error.class()));
        cx.span().set_status(Status::error(""));
    }
    cx.span().end();
    result
}

/// Add the current span's W3C trace context (`traceparent`, and `tracestate` when there is one) to a backend
/// request.
pub fn inject(request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    if !enabled() {
        return request;
    }
    let cx = Context::current();
    let span = cx.span();
    let context = span.span_context();
    let Some(traceparent) = traceparent(context) else {
        return request;
    };
    let request = request.header(TRACEPARENT, traceparent);
    let state = context.trace_state().header();
    match http::HeaderValue::from_str(&state) {
        Ok(value) if !state.is_empty() => request.header(TRACESTATE, value),
        _ => request,
    }
}

const TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");
const TRACESTATE: http::HeaderName = http::HeaderName::from_static("tracestate");

/// The W3C `traceparent` of a span (version 00: trace id, parent id and the sampled flag, in lowercase hex),
/// written straight into its 55 bytes: the same value as the SDK's `TraceContextPropagator`, which formats it
/// through `format!` and a header map at several times the cost (a tenth of the unsampled request's tracing).
fn traceparent(context: &SpanContext) -> Option<http::HeaderValue> {
    if !context.is_valid() {
        return None;
    }
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut value = [0u8; 55];
    let flags = context.trace_flags() & TraceFlags::SAMPLED;
    let fields: [(&[u8], usize); 3] = [
        (&context.trace_id().to_bytes(), 3),
        (&context.span_id().to_bytes(), 36),
        (&[flags.to_u8()], 53),
    ];
    value[..3].copy_from_slice(b"00-");
    value[35] = b'-';
    value[52] = b'-';
    for (bytes, at) in fields {
        for (i, byte) in bytes.iter().enumerate() {
            value[at + 2 * i] = HEX[usize::from(byte >> 4)];
            value[at + 2 * i + 1] = HEX[usize::from(byte & 0xf)];
        }
    }
    http::HeaderValue::from_bytes(&value).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| vars.iter().find(|(n, _)| *n == name).map(|(_, v)| v.to_string())
    }

    #[test]
    fn export_needs_an_endpoint_and_honours_the_standard_switches() {
        assert_eq!(configured(env(&[])), Ok(false));
        assert_eq!(
            configured(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")])),
            Ok(false)
        );
        assert_eq!(
            configured(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318")])),
            Ok(true)
        );
        assert_eq!(
            configured(env(&[(
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://c:4318/v1/traces"
            )])),
            Ok(true)
        );
        assert_eq!(
            configured(env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
                ("OTEL_SDK_DISABLED", "true")
            ])),
            Ok(false)
        );
        assert_eq!(
            configured(env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
                ("OTEL_TRACES_EXPORTER", "none")
            ])),
            Ok(false)
        );
        let grpc = configured(env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ]));
        assert!(
            grpc.unwrap_err()
                .contains("OTEL_EXPORTER_OTLP_PROTOCOL=grpc is not supported")
        );
        // The traces-specific protocol wins over the general one.
        assert_eq!(
            configured(env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
                ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ])),
            Ok(true)
        );
    }

    #[test]
    fn request_ids_are_kept_only_when_they_are_plain_identifiers() {
        assert_eq!(request_id(&json!(7)), Some("7".into()));
        assert_eq!(request_id(&json!("req-7:a")), Some("req-7:a".into()));
        assert_eq!(request_id(&json!("Top 5 sales regions")), None);
        assert_eq!(request_id(&json!("x".repeat(65))), None);
        assert_eq!(request_id(&json!(null)), None);
        assert_eq!(request_id(&json!({"a": 1})), None);
    }

    #[test]
    fn url_templates_keep_only_the_fixed_words_of_a_path() {
        assert_eq!(
            url_template("api/askme-manager/metadata/get/35403"),
            "api/askme-manager/metadata/get/{id}"
        );
        assert_eq!(
            url_template("api/ai-engine/mcp/nlq-to-data"),
            "api/ai-engine/mcp/nlq-to-data"
        );
        assert_eq!(url_template("api/x/Top%205"), "api/x/{id}");
    }

    #[test]
    fn traceparent_is_the_value_the_sdk_propagator_writes() {
        use opentelemetry::trace::{SpanId, TraceId, TraceState};
        use opentelemetry_http::HeaderInjector;
        let ids: [(u128, u64); 4] = [
            (1, 1),
            (u128::MAX, u64::MAX),
            (0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736, 0x00f0_67aa_0ba9_02b7),
            (0x0a00_0000_0000_0000_0000_0000_0000_00f0, 0x1000_0000_0000_000f),
        ];
        let flags = [
            TraceFlags::SAMPLED,
            TraceFlags::NOT_SAMPLED,
            TraceFlags::new(0xff),
        ];
        for (trace, span) in ids {
            for flags in flags {
                let context = SpanContext::new(
                    TraceId::from_bytes(trace.to_be_bytes()),
                    SpanId::from_bytes(span.to_be_bytes()),
                    flags,
                    true,
                    TraceState::default(),
                );
                let mut headers = http::HeaderMap::new();
                TraceContextPropagator::new().inject_context(
                    &Context::new().with_remote_span_context(context.clone()),
                    &mut HeaderInjector(&mut headers),
                );
                let want = headers.get("traceparent").cloned();
                assert!(want.is_some());
                assert_eq!(traceparent(&context), want, "{context:?}");
            }
        }
        // No context, no header (the propagator writes none either).
        assert_eq!(traceparent(&SpanContext::empty_context()), None);
    }

    #[test]
    fn tool_call_span_names_are_method_and_tool() {
        for tool in ToolName::ALL {
            assert_eq!(
                mcp_span_name("tools/call", Some(tool)),
                format!("tools/call {}", tool.as_str())
            );
        }
        assert_eq!(mcp_span_name("tools/list", None), "tools/list");
    }

    #[test]
    fn protocol_versions_must_look_like_dates() {
        assert_eq!(protocol_version("2025-06-18"), Some("2025-06-18"));
        assert_eq!(protocol_version("2025-06-1x"), None);
        assert_eq!(protocol_version("secret-key"), None);
    }
}
