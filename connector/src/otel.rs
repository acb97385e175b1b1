//! OpenTelemetry traces, exported over OTLP/HTTP (protobuf) when an endpoint is configured with the standard
//! variables (`OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, plus `_HEADERS`,
//! `_TIMEOUT`, `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`); off otherwise, and then every span below is
//! disabled at its call site (no allocation, no export). The exporter and the tracer provider keep the
//! SDK's defaults, which read `OTEL_EXPORTER_OTLP_HEADERS` (and `OTEL_EXPORTER_OTLP_TRACES_HEADERS`),
//! `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG`: the operator sets these (lumenore-operator's
//! `CONNECTOR_OTEL_ENV`, checked against this file).
//!
//! Spans (semantic conventions for HTTP and for MCP):
//! - `POST /mcp`, kind SERVER: one per HTTP request to /mcp; parent: the `traceparent` header.
//! - `{mcp.method.name} {gen_ai.tool.name}`, kind SERVER: one per MCP request; parent: the W3C trace context
//!   in `params._meta` when the client sent one (the HTTP span is then linked), else the HTTP span.
//! - `POST {path}` kind CLIENT: the backend login and each backend call (their `traceparent` header carries
//!   the trace on to the Lumenore backend); `engine plan` / `engine query`: the embedded engine.
//!
//! Privacy: only the OTel layer's own targets ([`TARGETS`]) are exported, spans only (no log events), and
//! their attributes are fixed names and values from fixed sets (method, tool, outcome, error class, status
//! code), a JSON-RPC id of safe characters and the server's address. Never a question, schema id,
//! argument, result, token, key or secret.

use std::{
    collections::HashMap,
    future::Future,
    sync::{
        OnceLock,
        atomic::{AtomicBool, Ordering},
    },
};

use axum::{extract::Request, middleware::Next, response::Response};
use opentelemetry::{
    KeyValue,
    propagation::TextMapPropagator,
    trace::{Status, TraceContextExt, TracerProvider as _},
};
use opentelemetry_http::{HeaderExtractor, HeaderInjector};
use opentelemetry_sdk::{
    Resource,
    propagation::TraceContextPropagator,
    trace::{SdkTracerProvider, SpanExporter},
};
use serde_json::Value;
use tracing::{Instrument, Span, level_filters::LevelFilter};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{
    EnvFilter, Layer, filter::filter_fn, layer::SubscriberExt, util::SubscriberInitExt,
};

use crate::{auth::http::RpcPeek, http::body::RpcMessage, telemetry, telemetry::LogFormat};

/// Target of every span this module makes.
pub const TARGET: &str = "lumenore_connector::otel";
/// Targets whose spans are exported: this module's and the embedded engine's.
pub const TARGETS: [&str; 2] = [TARGET, "lumenore_embedded::otel"];
const SERVICE_NAME: &str = "lumenore-connector";

static ENABLED: AtomicBool = AtomicBool::new(false);
static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// Whether spans are exported (an OTLP endpoint is configured).
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Whether the standard variables ask for trace export: an endpoint is set, the SDK is not disabled and
/// the traces exporter is not `none`.
pub fn configured(env: impl Fn(&str) -> Option<String>) -> Result<bool, String> {
    let set = |name: &str| env(name).is_some_and(|v| !v.trim().is_empty());
    if env("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
        || env("OTEL_TRACES_EXPORTER").is_some_and(|v| v.trim().eq_ignore_ascii_case("none"))
    {
        return Ok(false);
    }
    if !set("OTEL_EXPORTER_OTLP_ENDPOINT") && !set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
        return Ok(false);
    }
    for name in [
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    ] {
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
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
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

/// Turns span export on for the process with `provider`: keeps it for [`shutdown`], accepts and propagates
/// W3C trace context, enables the spans below, and returns the layer that exports them (see [`layer`]).
/// [`init`] calls it with the OTLP provider; a test may call it once with a provider of its own. Later calls
/// keep the first provider for [`shutdown`].
pub fn start<S>(provider: SdkTracerProvider) -> impl Layer<S> + Send + Sync
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a> + Send + Sync,
{
    let layer = layer(&provider);
    let _ = PROVIDER.set(provider);
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    ENABLED.store(true, Ordering::Relaxed);
    layer
}

/// The layer exporting this module's spans (spans only, never events) to `provider`.
pub fn layer<S>(provider: &SdkTracerProvider) -> impl Layer<S> + Send + Sync + use<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a> + Send + Sync,
{
    tracing_opentelemetry::layer()
        .with_tracer(provider.tracer(SERVICE_NAME))
        .with_location(false)
        .with_threads(false)
        .with_tracked_inactivity(false)
        // Entering a span would also make its context the thread's current OpenTelemetry context, on every
        // poll of every instrumented future: nothing here reads that (parents come from the tracing span
        // tree, `inject` from the span itself), and it was a fifth of the export's CPU cost.
        .with_context_activation(false)
        .with_target(false)
        .with_filter(filter_fn(|meta| {
            meta.is_span() && TARGETS.iter().any(|t| meta.target().starts_with(t))
        }))
}

/// Installs the global subscriber: the log layer of [`telemetry`] (its filter and privacy caps, plus: the
/// trace spans are not log lines) and, when configured, the OTLP trace layer. Replaces `telemetry::init`.
/// Returns an error text when the OTLP configuration cannot be used (logs are set up regardless).
pub fn init(format: LogFormat) -> Result<(), String> {
    let mut filter = EnvFilter::builder()
        .with_default_directive(LevelFilter::INFO.into())
        .from_env_lossy();
    for target in TARGETS {
        if let Ok(directive) = format!("{target}=off").parse() {
            filter = filter.add_directive(directive);
        }
    }
    let logs = telemetry::layer(
        format,
        filter,
        std::io::stderr,
        std::io::IsTerminal::is_terminal(&std::io::stderr()),
    );
    let wanted = configured(|name| std::env::var(name).ok());
    // The exporter's HTTPS client needs the process-wide crypto provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let provider = match wanted {
        Ok(true) => Some(provider()),
        Ok(false) => None,
        Err(error) => Some(Err(error)),
    };
    let (traces, problem) = match provider {
        Some(Ok(provider)) => (Some(start(provider)), None),
        Some(Err(error)) => (None, Some(error)),
        None => (None, None),
    };
    tracing_subscriber::registry().with(logs).with(traces).init();
    match problem {
        Some(error) => Err(error),
        None => {
            if enabled() {
                tracing::info!("exporting traces over OTLP/HTTP");
            }
            Ok(())
        }
    }
}

/// Exports the spans still buffered and stops the exporter (call once, at exit, outside the runtime).
pub fn shutdown() {
    if let Some(provider) = PROVIDER.get() {
        let _ = provider.shutdown();
    }
}

/// W3C trace context of one JSON-RPC message: its `params._meta` `traceparent`/`tracestate`, its id, and
/// the MCP protocol version header. Set by the body check; read by [`trace_mcp`].
#[derive(Clone, Debug, Default)]
pub struct RpcTrace {
    meta: HashMap<String, String>,
    id: Option<String>,
}

impl RpcTrace {
    /// Reads what tracing needs from a parsed JSON-RPC message: nothing else is kept.
    pub fn of(message: &serde_json::Map<String, Value>) -> RpcTrace {
        if !enabled() {
            return RpcTrace::default();
        }
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
        RpcTrace {
            meta,
            id: message.get("id").and_then(request_id),
        }
    }
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

/// The MCP span of the request, made by [`trace_mcp`]; the tool-call handler records its outcome on it.
#[derive(Clone, Debug)]
pub struct McpSpan(pub Span);

/// Middleware on `/mcp` (after the JSON-RPC body check): the HTTP server span and the MCP server span
/// around the rest of the request. Nothing happens when tracing is off.
pub async fn trace_mcp(mut request: Request, next: Next) -> Response {
    if !enabled() {
        return next.run(request).await;
    }
    let propagator = TraceContextPropagator::new();
    let version = match request.version() {
        http::Version::HTTP_2 => "2",
        http::Version::HTTP_10 => "1.0",
        _ => "1.1",
    };
    let method = request.method().as_str().to_string();
    let http_span = tracing::info_span!(
        target: TARGET,
        parent: None,
        "http.server",
        otel.name = format!("{method} /mcp"),
        otel.kind = "server",
        http.request.method = method.as_str(),
        http.route = "/mcp",
        url.path = "/mcp",
        url.scheme = "http",
        network.protocol.name = "http",
        network.protocol.version = version,
    );
    let _ = http_span.set_parent(propagator.extract(&HeaderExtractor(request.headers())));

    // The body guard parsed the message once; read what tracing needs from it.
    let message = request.extensions().get::<RpcMessage>().map(|m| m.0.clone());
    let peek = message.as_deref().map(RpcPeek::of);
    let trace = message.as_deref().map(RpcTrace::of).unwrap_or_default();
    let protocol = request
        .headers()
        .get("mcp-protocol-version")
        .and_then(|v| v.to_str().ok())
        .and_then(protocol_version);
    let mcp_span = peek
        .filter(|p| !matches!(p.method, "response" | "other"))
        .map(|peek| {
            let tool = peek.tool.map(|t| t.as_str());
            let name = match tool {
                Some(tool) => format!("{} {tool}", peek.method),
                None => peek.method.to_string(),
            };
            // Attributes given at creation cost one visit; each `set_attribute` later is a lookup of its own.
            let span = tracing::info_span!(
                target: TARGET,
                parent: None,
                "mcp.server",
                otel.name = name,
                otel.kind = "server",
                mcp.method.name = peek.method,
                gen_ai.tool.name = tool,
                gen_ai.operation.name = tool.map(|_| "execute_tool"),
                jsonrpc.request.id = trace.id.as_deref(),
                mcp.protocol.version = protocol,
                network.transport = "tcp",
                network.protocol.name = "http",
                network.protocol.version = version,
            );
            // The client's MCP span (from params._meta) is the parent; the HTTP request is linked.
            let meta = propagator.extract(&trace.meta);
            if meta.span().span_context().is_valid() {
                let _ = span.set_parent(meta);
                span.add_link(http_span.context().span().span_context().clone());
            } else {
                let _ = span.set_parent(http_span.context());
            }
            span
        });
    if let Some(span) = &mcp_span {
        request.extensions_mut().insert(McpSpan(span.clone()));
    }
    let inner = mcp_span.clone().unwrap_or_else(|| http_span.clone());
    let response = next.run(request).instrument(inner).await;

    let status = response.status().as_u16();
    http_span.set_attribute("http.response.status_code", i64::from(status));
    if status >= 500 {
        http_span.set_attribute("error.type", status.to_string());
        http_span.set_status(Status::error(""));
    }
    if let Some(span) = mcp_span
        && status >= 400
    {
        span.set_attribute("error.type", status.to_string());
        span.set_status(Status::error(""));
    }
    response
}

/// The MCP span of a request (from the HTTP layer), or a disabled span.
pub fn mcp_span(extensions: &http::Extensions) -> Span {
    extensions
        .get::<McpSpan>()
        .map(|s| s.0.clone())
        .unwrap_or_else(Span::none)
}

/// Record a tool call's outcome on its MCP span: `error.type` = `tool_error` when the result is an error
/// (as the MCP conventions ask), and the outcome class.
pub fn record_tool_outcome(span: &Span, outcome: &str) {
    if span.is_disabled() {
        return;
    }
    span.set_attribute("lumenore.tool.outcome", outcome.to_string());
    if outcome != "success" {
        span.set_attribute("error.type", "tool_error");
        span.set_status(Status::error(""));
    }
}

/// Record a JSON-RPC error answer (e.g. -32602 for an unknown tool) on the MCP span.
pub fn record_rpc_error(span: &Span, code: i32) {
    if span.is_disabled() {
        return;
    }
    span.set_attribute("rpc.response.status_code", code.to_string());
    span.set_attribute("error.type", code.to_string());
    span.set_status(Status::error(""));
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
    // Only within a traced MCP request: the readiness checks are not traced.
    if !enabled() || Span::current().is_disabled() {
        return fut.await;
    }
    let template = url_template(path);
    let span = tracing::info_span!(
        target: TARGET,
        "http.client",
        otel.name = format!("{method} {template}"),
        otel.kind = "client",
        http.request.method = method,
        url.template = template.as_str(),
        server.address = url.host_str(),
        server.port = url.port_or_known_default().map(i64::from),
    );
    let result = fut.instrument(span.clone()).await;
    if let Err(error) = &result {
        span.set_attribute("error.type", error.class());
        span.set_status(Status::error(""));
    }
    result
}

/// Add the current span's W3C trace context (`traceparent`, `tracestate`) to a backend request.
pub fn inject(request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    if !enabled() {
        return request;
    }
    let mut headers = http::HeaderMap::new();
    TraceContextPropagator::new()
        .inject_context(&Span::current().context(), &mut HeaderInjector(&mut headers));
    request.headers(headers)
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
    fn protocol_versions_must_look_like_dates() {
        assert_eq!(protocol_version("2025-06-18"), Some("2025-06-18"));
        assert_eq!(protocol_version("2025-06-1x"), None);
        assert_eq!(protocol_version("secret-key"), None);
    }
}
