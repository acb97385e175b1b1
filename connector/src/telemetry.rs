//! Logging set-up with privacy caps.
//!
//! The MCP SDK logs whole requests and results at DEBUG/TRACE (and some peer messages at INFO/WARN), and the
//! HTTP stack logs headers (bearer tokens, cookies) at TRACE. Whatever `RUST_LOG` asks for, those targets are
//! capped here, so no query, schema id, result, token or secret can reach a log line. The connector's own
//! log lines carry metadata only (tool name, outcome, latency, error class).

use tracing::level_filters::LevelFilter;
use tracing_subscriber::{
    EnvFilter, Layer, filter::Targets, layer::SubscriberExt, registry::LookupSpan, util::SubscriberInitExt,
};

/// Log format on standard error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Target of the audit events: one line per tool call, metadata only.
pub const AUDIT_TARGET: &str = "lumenore_connector::audit";

/// One audit event: who called which tool, how it ended, how long it took. Metadata only: never the
/// arguments or the result; the caller is a key id or a token subject, never the credential.
#[derive(Clone, Copy, Debug)]
pub struct AuditEvent<'a> {
    pub correlation_id: &'a str,
    pub caller: &'a str,
    /// The JSON-RPC method, from a fixed list ("-" when the body was not read).
    pub method: &'static str,
    /// The tool, from the fixed list of tool names ("-" when unknown).
    pub tool: &'static str,
    pub outcome: &'static str,
    /// Why a request was refused ("-" for a served call).
    pub reason: &'static str,
    pub status: u16,
    pub latency: std::time::Duration,
    pub response_bytes: usize,
}

/// Writes an audit event: the one place audit lines are made, for served and refused calls alike.
pub fn audit(event: &AuditEvent<'_>) {
    let message = if event.status == 200 {
        "tool call"
    } else {
        "request refused"
    };
    tracing::info!(
        target: AUDIT_TARGET,
        correlation_id = event.correlation_id,
        caller = event.caller,
        method = event.method,
        tool = event.tool,
        outcome = event.outcome,
        reason = event.reason,
        status = event.status,
        latency_ms = event.latency.as_secs_f64() * 1000.0,
        response_bytes = event.response_bytes,
        "{message}"
    );
}

/// A correlation id for one HTTP request, set by the HTTP layer and carried into audit events.
#[derive(Clone, Debug)]
pub struct CorrelationId(pub String);

/// Highest level each third-party target may log at, whatever `RUST_LOG` says.
pub const PRIVACY_CAPS: &[(&str, LevelFilter)] = &[
    // rmcp logs requests, results and peer error messages (which may quote arguments) at INFO and WARN,
    // and a client that hangs up at ERROR (a caller must not be able to trip error alerts). Off: the
    // connector logs what matters itself (server errors, client disconnects at DEBUG), metadata only.
    ("rmcp", LevelFilter::OFF),
    // HTTP client and server internals: headers (Authorization, Cookie) and bodies at DEBUG/TRACE.
    ("hyper", LevelFilter::INFO),
    ("hyper_util", LevelFilter::INFO),
    ("h2", LevelFilter::INFO),
    ("reqwest", LevelFilter::INFO),
    ("rustls", LevelFilter::INFO),
    ("tower", LevelFilter::INFO),
    ("tower_http", LevelFilter::INFO),
    ("axum", LevelFilter::INFO),
    ("cookie_store", LevelFilter::WARN),
    ("wiremock", LevelFilter::INFO),
];

/// The cap filter on its own, so tests can install the same caps on their own subscriber.
pub fn privacy_caps() -> Targets {
    PRIVACY_CAPS.iter().fold(
        Targets::new().with_default(LevelFilter::TRACE),
        |targets, (target, level)| targets.with_target(*target, *level),
    )
}

/// A formatting layer writing to `writer`, filtered by `RUST_LOG` (default `info`) and the privacy caps.
pub fn layer<S, W>(
    format: LogFormat,
    filter: EnvFilter,
    writer: W,
    ansi: bool,
) -> Box<dyn Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    use tracing_subscriber::filter::FilterExt;
    let filter = filter.and(privacy_caps());
    match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(ansi)
            .with_writer(writer)
            .with_target(true)
            .with_filter(filter)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_writer(writer)
            .with_filter(filter)
            .boxed(),
    }
}

/// Installs the global subscriber on standard error.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::builder()
        .with_default_directive(LevelFilter::INFO.into())
        .from_env_lossy();
    tracing_subscriber::registry()
        .with(layer(
            format,
            filter,
            std::io::stderr,
            std::io::IsTerminal::is_terminal(&std::io::stderr()),
        ))
        .init();
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Level;

    #[test]
    fn caps_hold_against_any_rust_log() {
        let caps = privacy_caps();
        assert!(!caps.would_enable("rmcp::service", &Level::WARN));
        assert!(!caps.would_enable("rmcp::service", &Level::ERROR));
        assert!(!caps.would_enable("h2::codec", &Level::DEBUG));
        assert!(!caps.would_enable("hyper_util::client", &Level::TRACE));
        assert!(caps.would_enable("lumenore_connector::server", &Level::TRACE));
    }
}
