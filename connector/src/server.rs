//! The MCP handler: lists the tools and answers tool calls through the configured backend.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use rmcp::{
    ErrorData, RoleServer, ServerHandler,
    model::{
        CallToolRequestParams, CallToolResponse, CallToolResult, Implementation, ListToolsResult,
        PaginatedRequestParams, ProgressNotificationParam, ServerCapabilities, ServerConfig, Tool,
    },
    service::RequestContext,
};
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::{
    auth::Caller,
    backend::{Backend, BackendCall, BackendError},
    metrics::{Metrics, Outcome, ToolLabels, ToolOnly},
    telemetry::AUDIT_TARGET,
    tools::{self, ToolName, envelope, envelope::ResultLimits},
};

/// Everything a request needs, shared by all requests.
pub struct AppState {
    pub backend: Backend,
    pub limits: ResultLimits,
    pub metrics: Metrics,
    pub tools: Vec<Tool>,
}

/// A correlation id for one HTTP request, set by the HTTP layer and carried into audit events.
#[derive(Clone, Debug)]
pub struct CorrelationId(pub String);

/// The rmcp handler. One is made per request; it only holds the shared state.
#[derive(Clone)]
pub struct ConnectorServer {
    state: Arc<AppState>,
}

const INSTRUCTIONS: &str = "Lumenore analytics. Start with get_dataset_metadata to find a dataset's schemaId, \
then get_metadata_info for its columns. Ask nlq_to_data for data, and the get_*_data tools for trends, \
forecasts, outliers, correlations, changes and Pareto analyses. Every result has a status field: success, \
validation_error (fix the arguments) or error.";

impl ConnectorServer {
    pub fn new(state: Arc<AppState>) -> Self {
        Self { state }
    }

    async fn answer(
        &self,
        request: &CallToolRequestParams,
        context: &RequestContext<RoleServer>,
    ) -> (CallToolResult, Outcome, &'static str) {
        // The caller checked the name already; see call_tool.
        let Some(tool) = ToolName::parse(&request.name) else {
            return (envelope::error("unknown tool"), Outcome::error, "unknown");
        };
        let tool_name = tool.as_str();
        let args = match tools::validate_arguments(tool, request.arguments.as_ref()) {
            Ok(args) => args,
            Err(error) => {
                return (
                    envelope::validation_error(error.to_string()),
                    Outcome::validation_error,
                    tool_name,
                );
            }
        };
        let Some(call) = BackendCall::from_tool(tool, args) else {
            return (
                envelope::error("arguments do not fit the tool"),
                Outcome::error,
                tool_name,
            );
        };

        let (progress, forwarder) = match context.meta.get_progress_token() {
            Some(token) => {
                let (sender, mut receiver) = mpsc::unbounded_channel::<u64>();
                let peer = context.peer.clone();
                let forwarder = tokio::spawn(async move {
                    while let Some(bytes) = receiver.recv().await {
                        let param = ProgressNotificationParam::new(token.clone(), bytes as f64)
                            .with_message(format!("received {bytes} bytes from the backend"));
                        if peer.notify_progress(param).await.is_err() {
                            break;
                        }
                    }
                });
                (Some(sender), Some(forwarder))
            }
            None => (None, None),
        };

        let outcome = tokio::select! {
            result = self.state.backend.call(call, progress) => result,
            // The MCP client disconnected or sent notifications/cancelled: dropping the backend future
            // aborts its HTTP request.
            () = context.ct.cancelled() => Err(BackendError::Cancelled),
        };
        // The backend dropped its progress sender: let the last notifications out before the result.
        if let Some(forwarder) = forwarder {
            let _ = tokio::time::timeout(Duration::from_secs(1), forwarder).await;
        }
        match outcome {
            Ok(data) => (
                envelope::success(data, self.state.limits),
                Outcome::success,
                tool_name,
            ),
            Err(BackendError::Cancelled) => (
                envelope::error(BackendError::Cancelled.to_string()),
                Outcome::cancelled,
                tool_name,
            ),
            Err(error) if error.is_caller_error() => (
                envelope::validation_error(error.to_string()),
                Outcome::validation_error,
                tool_name,
            ),
            Err(error) => (envelope::error(error.to_string()), Outcome::error, tool_name),
        }
    }
}

/// The caller the HTTP gate authenticated. `None` only when the handler is reached without the gate,
/// which the router never allows; such a request is served nothing.
fn caller(context: &RequestContext<RoleServer>) -> Option<Caller> {
    context
        .extensions
        .get::<http::request::Parts>()
        .and_then(|parts| parts.extensions.get::<Caller>())
        .cloned()
}

fn correlation_id(context: &RequestContext<RoleServer>) -> String {
    context
        .extensions
        .get::<http::request::Parts>()
        .and_then(|parts| parts.extensions.get::<CorrelationId>())
        .map(|id| id.0.clone())
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

fn response_size(result: &CallToolResult) -> usize {
    result
        .content
        .iter()
        .filter_map(|block| block.as_text().map(|text| text.text.len()))
        .sum()
}

impl ServerHandler for ConnectorServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(
                Implementation::new("lumenore-connector", env!("CARGO_PKG_VERSION"))
                    .with_title("Lumenore Analytics"),
            )
            .with_instructions(INSTRUCTIONS)
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        // A caller sees only the tools it may call.
        let caller = caller(&context);
        let visible = self
            .state
            .tools
            .iter()
            .filter(|tool| {
                let name = ToolName::parse(&tool.name);
                matches!((&caller, name), (Some(caller), Some(name)) if caller.may_call(name))
            })
            .cloned()
            .collect();
        Ok(ListToolsResult::with_all_items(visible))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.state.tools.iter().find(|tool| tool.name == name).cloned()
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        // otel: the MCP span the HTTP layer made for this request (disabled when tracing is off).
        let span = context
            .extensions
            .get::<http::request::Parts>()
            .map(|parts| crate::otel::mcp_span(&parts.extensions))
            .unwrap_or_else(tracing::Span::none);
        if ToolName::parse(&request.name).is_none() {
            crate::otel::record_rpc_error(&span, -32602);
            // A protocol error, as the MCP specification asks for unknown tools. The name is the caller's
            // own text, returned to the caller only.
            let shown: String = request.name.chars().take(64).collect();
            return Err(ErrorData::invalid_params(format!("unknown tool: {shown}"), None));
        }
        // The HTTP gate already answered 403 for a tool the caller may not use; this holds even if a
        // request reached the handler another way.
        let caller = caller(&context);
        let allowed = matches!((&caller, ToolName::parse(&request.name)), (Some(caller), Some(tool)) if caller.may_call(tool));
        if !allowed {
            crate::otel::record_rpc_error(&span, -32600);
            return Err(ErrorData::invalid_request(
                "this caller may not call this tool",
                None,
            ));
        }
        let caller_id = caller.map(|caller| caller.id);
        let started = Instant::now();
        self.state.metrics.in_flight.inc();
        let (result, outcome, tool) = self.answer(&request, &context).instrument(span.clone()).await;
        crate::otel::record_tool_outcome(&span, &format!("{outcome:?}"));
        self.state.metrics.in_flight.dec();
        let elapsed = started.elapsed();
        self.record(tool, outcome, elapsed, &result, caller_id.as_deref(), &context);
        Ok(result.into())
    }
}

impl ConnectorServer {
    fn record(
        &self,
        tool: &'static str,
        outcome: Outcome,
        elapsed: Duration,
        result: &CallToolResult,
        caller: Option<&str>,
        context: &RequestContext<RoleServer>,
    ) {
        let metrics = &self.state.metrics;
        metrics
            .tool_calls
            .get_or_create(&ToolLabels {
                tool,
                outcome: outcome.clone(),
            })
            .inc();
        metrics
            .tool_latency
            .get_or_create(&ToolOnly { tool })
            .observe(elapsed.as_secs_f64());
        // Metadata only: never the arguments or the result. The caller is a key id or a token subject,
        // never the credential. Same fields as the gate's "request refused" events.
        tracing::info!(
            target: AUDIT_TARGET,
            correlation_id = %correlation_id(context),
            caller = caller.unwrap_or("-"),
            method = "tools/call",
            tool,
            outcome = ?outcome,
            reason = "-",
            status = 200u16,
            latency_ms = elapsed.as_secs_f64() * 1000.0,
            response_bytes = response_size(result),
            "tool call"
        );
    }
}
