//! Logging set-up, and OpenTelemetry traces of the reconciles exported over OTLP/HTTP (protobuf) when an
//! endpoint is configured with the standard variables (`OTEL_EXPORTER_OTLP_ENDPOINT` or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, `_HEADERS`, `_TIMEOUT`, `OTEL_SERVICE_NAME`,
//! `OTEL_RESOURCE_ATTRIBUTES`). Off otherwise: the reconcile spans (`observe`) are then disabled at their
//! call sites.
//!
//! Only spans of [`TARGET`] are exported, never log events; they carry the object's namespace and name, the
//! stage and the error reason only.

use std::sync::OnceLock;

use opentelemetry::{KeyValue, trace::TracerProvider as _};
use opentelemetry_sdk::{Resource, trace::SdkTracerProvider};
use tracing_subscriber::{
    EnvFilter, Layer, filter::filter_fn, layer::SubscriberExt, util::SubscriberInitExt,
};

/// Target of the reconcile spans.
pub const TARGET: &str = "lumenore_operator::otel";
const SERVICE_NAME: &str = "lumenore-operator";

static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// Whether the standard variables ask for trace export: an endpoint is set, the SDK is not disabled, the
/// traces exporter is not `none`; a protocol other than http/protobuf is an error.
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
                    "{name}={protocol} is not supported: the operator exports traces with OTLP over HTTP, set it to http/protobuf"
                ));
            }
            break;
        }
    }
    Ok(true)
}

fn provider() -> Result<SdkTracerProvider, String> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
        .map_err(|error| format!("cannot set up the OTLP trace exporter: {error}"))?;
    let mut resource = Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(SERVICE_NAME);
    }
    let resource = resource
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}

/// Install the global subscriber: log lines (`json` or text, `RUST_LOG`, default `info,kube=warn`) and,
/// when configured, the trace export.
pub fn init(format: &str) -> Result<(), String> {
    let mut filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,kube=warn"));
    // The reconcile spans are traces, not log context.
    if let Ok(directive) = format!("{TARGET}=off").parse() {
        filter = filter.add_directive(directive);
    }
    let logs = if format == "json" {
        tracing_subscriber::fmt::layer()
            .json()
            .with_filter(filter)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer().with_filter(filter).boxed()
    };
    let (traces, problem) = match configured(|name| std::env::var(name).ok()).and_then(|on| {
        // The exporter's blocking HTTP client must not be built on a runtime thread.
        on.then(|| {
            std::thread::spawn(provider)
                .join()
                .unwrap_or_else(|_| Err("exporter set-up panicked".into()))
        })
        .transpose()
    }) {
        Ok(Some(provider)) => {
            let layer = tracing_opentelemetry::layer()
                .with_tracer(provider.tracer(SERVICE_NAME))
                .with_location(false)
                .with_threads(false)
                .with_tracked_inactivity(false)
                // Nothing reads the thread's current OpenTelemetry context; activating it on every poll costs CPU.
                .with_context_activation(false)
                .with_target(false)
                .with_filter(filter_fn(|meta| meta.is_span() && meta.target() == TARGET));
            let _ = PROVIDER.set(provider);
            (Some(layer), None)
        }
        Ok(None) => (None, None),
        Err(error) => (None, Some(error)),
    };
    tracing_subscriber::registry().with(logs).with(traces).init();
    match problem {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

/// Export the spans still buffered and stop the exporter (at exit).
pub fn shutdown() {
    if let Some(provider) = PROVIDER.get() {
        let _ = provider.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_needs_an_endpoint_and_http_protobuf() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| vars.iter().find(|(n, _)| *n == name).map(|(_, v)| v.to_string())
        };
        assert_eq!(configured(env(&[])), Ok(false));
        assert_eq!(
            configured(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318")])),
            Ok(true)
        );
        assert_eq!(
            configured(env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
                ("OTEL_SDK_DISABLED", "true")
            ])),
            Ok(false)
        );
        assert!(
            configured(env(&[
                ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c:4317"),
                ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc")
            ]))
            .is_err()
        );
    }
}
