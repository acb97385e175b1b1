//! Trace spans of the engine's stages (`engine plan`, `engine query`), made through OpenTelemetry's global
//! tracer provider (which lumenore-connector sets when it exports traces) as children of the caller's current
//! span. Only under a recorded span: otherwise nothing is made, so an engine used without tracing pays one
//! thread-local read. The spans carry no attribute: the question and the SQL stay out.

use opentelemetry::{
    Context, ContextGuard,
    trace::{TraceContextExt, Tracer as _, TracerProvider as _},
};

/// Instrumentation scope of the engine's spans.
pub const SCOPE: &str = "lumenore-embedded";

/// Starts the span of a stage as the current span of this thread; it ends when the guard is dropped.
pub(crate) fn stage(name: &'static str) -> Option<ContextGuard> {
    let parent = Context::current();
    if !parent.span().is_recording() {
        return None;
    }
    let span = opentelemetry::global::tracer_provider()
        .tracer(SCOPE)
        .start_with_context(name, &parent);
    Some(parent.with_span(span).attach())
}
