//! Logging set-up with privacy caps.
//!
//! The MCP SDK logs whole requests and results at DEBUG/TRACE (and some peer messages at INFO/WARN), and the
//! HTTP stack logs headers (bearer tokens, cookies) at TRACE. Whatever `RUST_LOG` asks for, those targets are
//! capped here, so no query, schema id, result, token or secret can reach a log line. The connector's own
//! log lines carry metadata only (tool name, outcome, latency, error class).

use std::sync::LazyLock;

use prometheus_client::metrics::counter::Counter;
use tracing::{Event, Level, Subscriber, level_filters::LevelFilter};
use tracing_subscriber::{
    EnvFilter, Layer, filter::Targets, layer::Context, layer::SubscriberExt, registry::LookupSpan,
    util::SubscriberInitExt,
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
    // Its WARN lines say what a peer did (a rapid-reset flood writes one per connection, before any
    // authentication): counted in `lumenore_connector_http2_peer_warnings_total`, not logged, so no client
    // can write log lines at will.
    ("h2", LevelFilter::ERROR),
    ("reqwest", LevelFilter::INFO),
    ("rustls", LevelFilter::INFO),
    ("tower", LevelFilter::INFO),
    ("tower_http", LevelFilter::INFO),
    ("axum", LevelFilter::INFO),
    ("cookie_store", LevelFilter::WARN),
    // The rate-limit store's client: commands and their arguments (AUTH's password among them) below WARN.
    ("redis", LevelFilter::WARN),
    ("wiremock", LevelFilter::INFO),
];

/// The cap filter on its own, so tests can install the same caps on their own subscriber.
pub fn privacy_caps() -> Targets {
    PRIVACY_CAPS.iter().fold(
        Targets::new().with_default(LevelFilter::TRACE),
        |targets, (target, level)| targets.with_target(*target, *level),
    )
}

/// WARN events of the HTTP/2 library (what peers did), counted instead of logged
/// (`lumenore_connector_http2_peer_warnings_total`; one counter for the process, as its log is one).
pub static HTTP2_PEER_WARNINGS: LazyLock<Counter> = LazyLock::new(Counter::default);

/// Counts [`HTTP2_PEER_WARNINGS`]; filtered to `h2` WARN and above, so it enables no other event.
pub struct CountHttp2Warnings;

impl<S: Subscriber> Layer<S> for CountHttp2Warnings {
    fn on_event(&self, event: &Event<'_>, _context: Context<'_, S>) {
        if *event.metadata().level() == Level::WARN {
            HTTP2_PEER_WARNINGS.inc();
        }
    }
}

/// The layer counting [`HTTP2_PEER_WARNINGS`], to install beside [`layer`] (a layer of its own: composed
/// into one boxed layer, two per-layer filters silenced every log line).
pub fn http2_warnings_layer<S>() -> impl Layer<S> + Send + Sync
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
{
    CountHttp2Warnings.with_filter(Targets::new().with_target("h2", LevelFilter::WARN))
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
        .with(http2_warnings_layer())
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
        assert!(!caps.would_enable("redis::aio::connection_manager", &Level::DEBUG));
        assert!(caps.would_enable("lumenore_connector::server", &Level::TRACE));
        assert!(!caps.would_enable("h2::proto::streams::recv", &Level::WARN));
    }

    #[test]
    fn http2_peer_warnings_are_counted_not_logged() {
        #[derive(Clone, Default)]
        struct Lines(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Lines {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let lines = Lines::default();
        let writer = lines.clone();
        // As installed: the default filter (info), the formatting layer and the counting layer beside it.
        let subscriber = tracing_subscriber::registry()
            .with(layer(
                LogFormat::Text,
                EnvFilter::new("info"),
                move || writer.clone(),
                false,
            ))
            .with(http2_warnings_layer());
        let before = HTTP2_PEER_WARNINGS.get();
        tracing::subscriber::with_default(subscriber, || {
            for _ in 0..5 {
                tracing::warn!(target: "h2::proto::streams::recv", "recv_reset; remotely-reset pending-accept streams reached limit (20)");
            }
            tracing::debug!(target: "h2::codec", "not counted");
            tracing::warn!(target: "lumenore_connector::server", "logged");
        });
        // Other tests may count in parallel: at least these five.
        assert!(HTTP2_PEER_WARNINGS.get() >= before + 5);
        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        assert!(
            !text.contains("recv_reset") && !text.contains("not counted"),
            "{text}"
        );
        assert!(text.contains("logged"), "{text}");
    }
}
