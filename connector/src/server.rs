//! The MCP handler: lists the tools and answers tool calls through the configured backend.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use rmcp::{
    ErrorData, RoleServer, ServerHandler,
    model::{
        CallToolRequestParams, CallToolResponse, CallToolResult, Implementation, ListResourcesResult,
        ListToolsResult, PaginatedRequestParams, ProgressNotificationParam, ReadResourceRequestParams,
        ReadResourceResponse, ServerCapabilities, ServerConfig, Tool,
    },
    service::RequestContext,
};
use tokio::sync::mpsc;

use crate::{
    auth::Caller,
    backend::{Backend, BackendError},
    metrics::{Metrics, Outcome, ToolLabels, ToolOnly},
    telemetry::{self, AuditEvent, CorrelationId},
    tools::{self, ToolCall, ToolName, envelope, envelope::ResultLimits},
    ui,
};

/// Everything a request needs, shared by all requests.
pub struct AppState {
    pub backend: Backend,
    pub limits: ResultLimits,
    pub metrics: Metrics,
    pub tools: Vec<Tool>,
}

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

    /// Answers one validated call through the backend.
    async fn answer(
        &self,
        call: ToolCall,
        context: &RequestContext<RoleServer>,
    ) -> (CallToolResult, Outcome) {
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
            Ok(data) => (envelope::success(data, self.state.limits), Outcome::success),
            Err(BackendError::Cancelled) => (
                envelope::error(BackendError::Cancelled.to_string()),
                Outcome::cancelled,
            ),
            Err(error) if error.is_caller_error() => (
                envelope::validation_error(error.to_string()),
                Outcome::validation_error,
            ),
            Err(error) => (envelope::error(error.to_string()), Outcome::error),
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
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                // MCP Apps: the chart view, a static `ui://` resource (see crate::ui).
                .enable_resources()
                .build(),
        )
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

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        // The view holds no data, but like the tools it is served only to callers the gate let in.
        let resources = if caller(&context).is_some() {
            ui::resources()
        } else {
            Vec::new()
        };
        Ok(ListResourcesResult::with_all_items(resources))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        match ui::read(&request.uri) {
            Some(result) if caller(&context).is_some() => Ok(result.into()),
            // -32002 (rmcp answers -32602 to 2026-07-28 peers, SEP-2164). The URI is the caller's own
            // text, returned to the caller only.
            _ => {
                let shown: String = request.uri.chars().take(128).collect();
                Err(ErrorData::resource_not_found(
                    format!("resource not found: {shown}"),
                    None,
                ))
            }
        }
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.state.tools.iter().find(|tool| tool.name == name).cloned()
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        // otel: the MCP span the HTTP layer made for this request (none when tracing is off).
        let span = context
            .extensions
            .get::<http::request::Parts>()
            .and_then(|parts| crate::otel::mcp_span(&parts.extensions));
        let Some(tool) = ToolName::parse(&request.name) else {
            crate::otel::record_rpc_error(span.as_ref(), -32602);
            // A protocol error, as the MCP specification asks for unknown tools. The name is the caller's
            // own text, returned to the caller only.
            let shown: String = request.name.chars().take(64).collect();
            return Err(ErrorData::invalid_params(format!("unknown tool: {shown}"), None));
        };
        // The HTTP gate already answered 403 for a tool the caller may not use; this holds even if a
        // request reached the handler another way.
        let Some(caller) = caller(&context).filter(|caller| caller.may_call(tool)) else {
            crate::otel::record_rpc_error(span.as_ref(), -32600);
            return Err(ErrorData::invalid_request(
                "this caller may not call this tool",
                None,
            ));
        };
        let started = Instant::now();
        self.state.metrics.in_flight.inc();
        let (result, outcome) = match tools::validate_call(tool, request.arguments.as_ref()) {
            // Boxed: rmcp moves this handler's future into a task of its own, copying it whole on spawn and
            // on completion; the backend call inside is large, and boxing it cut a call's instructions by 19%
            // (callgrind, BENCH_MODE=otel-instructions).
            Ok(call) => crate::otel::within(span.clone(), Box::pin(self.answer(call, &context))).await,
            Err(error) => (
                envelope::validation_error(error.to_string()),
                Outcome::validation_error,
            ),
        };
        crate::otel::record_tool_outcome(span.as_ref(), outcome.as_str()); // otel
        self.state.metrics.in_flight.dec();
        self.record(tool, outcome, started.elapsed(), &result, &caller, &context);
        Ok(result.into())
    }
}

impl ConnectorServer {
    fn record(
        &self,
        tool: ToolName,
        outcome: Outcome,
        elapsed: Duration,
        result: &CallToolResult,
        caller: &Caller,
        context: &RequestContext<RoleServer>,
    ) {
        let metrics = &self.state.metrics;
        let tool = tool.as_str();
        let outcome_label = outcome.as_str();
        metrics
            .tool_calls
            .get_or_create(&ToolLabels { tool, outcome })
            .inc();
        metrics
            .tool_latency
            .get_or_create(&ToolOnly { tool })
            .observe(elapsed.as_secs_f64());
        telemetry::audit(&AuditEvent {
            correlation_id: &correlation_id(context),
            caller: &caller.id,
            method: "tools/call",
            tool,
            outcome: outcome_label,
            reason: "-",
            status: 200,
            latency: elapsed,
            response_bytes: response_size(result),
        });
    }
}
