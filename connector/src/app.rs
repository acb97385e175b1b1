//! The HTTP application: MCP at /mcp (stateless Streamable HTTP), health, readiness, metrics and a small
//! service description at /, plus the readiness loop and graceful shutdown.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use axum::{
    Json, Router,
    extract::{Request, State},
    http::{HeaderValue, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::get,
};
use rmcp::transport::streamable_http_server::{
    StreamableHttpServerConfig, StreamableHttpService, session::never::NeverSessionManager,
};
use serde_json::json;
use tokio::sync::RwLock;
use tokio_util::sync::CancellationToken;

use crate::{
    auth::{
        self,
        http::{AuthSettings, Gate, RpcPeek},
    },
    backend::{
        Backend, Readiness,
        embedded::EmbeddedBackend,
        lumenore::{ClientSettings, LumenoreBackend},
    },
    config::{BackendKind, Config, Credentials},
    metrics::Metrics,
    server::{AppState, ConnectorServer, CorrelationId},
    tools::{self, envelope::ResultLimits},
};

/// Installs the process-wide TLS crypto provider (ring). Safe to call more than once.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Readiness as last checked, plus the draining flag set at shutdown.
pub struct Health {
    state: RwLock<Readiness>,
    draining: AtomicBool,
}

impl Health {
    fn new() -> Self {
        Self {
            state: RwLock::new(Readiness::NotReady("not checked yet".into())),
            draining: AtomicBool::new(false),
        }
    }
}

/// A built application, ready to serve.
pub struct App {
    pub router: Router,
    pub state: Arc<AppState>,
    pub health: Arc<Health>,
    /// Cancels the MCP service and the readiness loop.
    pub shutdown: CancellationToken,
}

/// Builds the backend named by the configuration.
pub fn build_backend(
    config: &Config,
    credentials: Credentials,
    metrics: &Metrics,
) -> Result<Backend, String> {
    match config.backend {
        BackendKind::Lumenore => {
            let backend =
                LumenoreBackend::new(ClientSettings::from_config(config), credentials, metrics.clone())?;
            Ok(Backend::Lumenore(Box::new(backend)))
        }
        BackendKind::Embedded => Ok(Backend::Embedded(EmbeddedBackend::load(
            config.catalog.as_deref(),
        )?)),
    }
}

/// Builds the application; panics when the caller authentication cannot be set up (see [`try_build`]).
/// For tests and benchmarks; `main` uses [`try_build`]. Needs a Tokio runtime.
pub fn build(config: &Config, backend: Backend, metrics: Metrics) -> App {
    match try_build(config, backend, metrics) {
        Ok(app) => app,
        Err(message) => panic!("cannot build the connector: {message}"),
    }
}

/// Builds the application: checks the caller authentication settings, loads the API keys file (or sets
/// up the OAuth validator) and starts their background tasks, which stop with the app's shutdown token.
/// Needs a Tokio runtime.
pub fn try_build(config: &Config, backend: Backend, metrics: Metrics) -> Result<App, String> {
    install_crypto_provider();
    let auth_settings = config.auth_settings()?;
    if matches!(auth_settings, AuthSettings::None) && config.allow_unauthenticated {
        tracing::warn!(
            listen = %config.listen,
            "caller authentication is off (LUMENORE_AUTH_MODE=none with LUMENORE_ALLOW_UNAUTHENTICATED=true): \
             anyone who can reach this port can call every tool"
        );
    }
    let shutdown = CancellationToken::new();
    let gate = Gate::start(
        auth_settings,
        config.limit_settings(),
        metrics.clone(),
        shutdown.child_token(),
    )?;
    let state = Arc::new(AppState {
        backend,
        limits: ResultLimits {
            max_rows: config.max_result_rows,
            max_bytes: config.max_result_bytes,
        },
        metrics,
        tools: tools::definitions(),
    });
    let mut mcp_config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .with_json_response(true)
        .with_sse_keep_alive(None)
        .with_cancellation_token(shutdown.child_token())
        .with_max_request_body_bytes(config.max_request_bytes)
        .with_allowed_hosts(config.allowed_hosts.iter().map(|host| host.trim().to_string()));
    let origins: Vec<String> = config
        .allowed_origins
        .iter()
        .map(|origin| origin.trim().to_string())
        .filter(|origin| !origin.is_empty())
        .collect();
    mcp_config = if origins.is_empty() {
        // No browser origin is allowed: refuse every request that carries an Origin header.
        mcp_config.enforce_origin_validation()
    } else {
        mcp_config.with_allowed_origins(origins)
    };
    let handler_state = state.clone();
    let mcp = StreamableHttpService::new(
        move || Ok(ConnectorServer::new(handler_state.clone())),
        Arc::new(NeverSessionManager::default()),
        mcp_config,
    );
    let health = Arc::new(Health::new());
    let backend_name = state.backend.name();

    // Outermost first: correlation id, draining gate, JSON-RPC body check (leaves an RpcPeek), then the
    // caller gate (authentication, tool permission, rate limits), then the MCP service.
    let mcp_routes = Router::new()
        .nest_service("/mcp", mcp)
        .layer(middleware::from_fn_with_state(gate.clone(), auth::http::gate))
        .layer(middleware::from_fn(crate::otel::trace_mcp)) // otel: HTTP and MCP server spans
        .layer(middleware::from_fn_with_state(
            config.max_request_bytes,
            check_json_rpc_body,
        ))
        .layer(middleware::from_fn_with_state(
            health.clone(),
            refuse_while_draining,
        ))
        .layer(middleware::from_fn(correlation));

    let router = Router::new()
        .route(
            "/",
            get(move || async move {
                Json(json!({
                    "name": "lumenore-connector",
                    "version": env!("CARGO_PKG_VERSION"),
                    "mcp": {"endpoint": "/mcp", "transport": "streamable-http"},
                    "backend": backend_name,
                    "health": "/healthz",
                    "readiness": "/readyz",
                    "metrics": "/metrics"
                }))
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz).with_state(health.clone()))
        .route("/metrics", get(metrics_text).with_state(state.clone()))
        .route(
            "/.well-known/oauth-protected-resource",
            get(auth::http::protected_resource_metadata).with_state(gate.clone()),
        )
        .route(
            "/.well-known/oauth-protected-resource/{*resource}",
            get(auth::http::protected_resource_metadata).with_state(gate.clone()),
        )
        .merge(mcp_routes);

    Ok(App {
        router,
        state,
        health,
        shutdown,
    })
}

async fn readyz(State(health): State<Arc<Health>>) -> Response {
    if health.draining.load(Ordering::Relaxed) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "not ready", "reason": "shutting down"})),
        )
            .into_response();
    }
    match &*health.state.read().await {
        Readiness::Ready => (StatusCode::OK, Json(json!({"status": "ready"}))).into_response(),
        Readiness::NotReady(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "not ready", "reason": reason})),
        )
            .into_response(),
    }
}

async fn metrics_text(State(state): State<Arc<AppState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        )],
        state.metrics.encode(),
    )
        .into_response()
}

/// New MCP requests are refused once shutdown began; calls already running finish.
async fn refuse_while_draining(State(health): State<Arc<Health>>, request: Request, next: Next) -> Response {
    if health.draining.load(Ordering::Relaxed) {
        let mut response = (StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response();
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return response;
    }
    next.run(request).await
}

/// A JSON-RPC error response with the given HTTP status.
fn json_rpc_error(status: StatusCode, code: i64, message: &str) -> Response {
    (
        status,
        Json(json!({"jsonrpc": "2.0", "id": null, "error": {"code": code, "message": message}})),
    )
        .into_response()
}

/// Answers bodies that are too large or not JSON-RPC with a JSON-RPC error, before the MCP SDK sees them:
/// 413 for an oversized body, -32700 for a body that is not JSON, -32600 for JSON that is not a JSON-RPC
/// message. The error text never quotes the body.
async fn check_json_rpc_body(State(limit): State<usize>, request: Request, next: Next) -> Response {
    if request.method() != axum::http::Method::POST {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, limit).await else {
        return json_rpc_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            -32600,
            &format!("request body is larger than {limit} bytes"),
        );
    };
    let value: serde_json::Value = match serde_json::from_slice(&bytes) {
        Ok(value) => value,
        Err(_) => {
            return json_rpc_error(
                StatusCode::BAD_REQUEST,
                -32700,
                "Parse error: the body is not valid JSON",
            );
        }
    };
    let looks_like_message = value.get("jsonrpc").and_then(|v| v.as_str()) == Some("2.0")
        && (value.get("method").is_some_and(|m| m.is_string())
            || value.get("result").is_some()
            || value.get("error").is_some());
    if !looks_like_message {
        return json_rpc_error(
            StatusCode::BAD_REQUEST,
            -32600,
            "Invalid Request: expected a JSON-RPC 2.0 request, notification or response object",
        );
    }
    let mut request = Request::from_parts(parts, axum::body::Body::from(bytes));
    request.extensions_mut().insert(RpcPeek::of(&value));
    request.extensions_mut().insert(crate::otel::RpcTrace::of(&value)); // otel: params._meta context
    next.run(request).await
}

/// Takes the caller's `X-Request-Id` when it is a short token of safe characters, else makes one, and
/// returns it on the response.
async fn correlation(mut request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get("x-request-id")
        .and_then(|value| value.to_str().ok())
        .filter(|value| {
            !value.is_empty()
                && value.len() <= 64
                && value
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        })
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    request.extensions_mut().insert(CorrelationId(id.clone()));
    let mut response = next.run(request).await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}

/// Re-checks readiness until shutdown: every `interval` while ready, twice as often while not.
pub fn spawn_readiness_loop(app: &App, interval: Duration) -> tokio::task::JoinHandle<()> {
    let state = app.state.clone();
    let health = app.health.clone();
    let stop = app.shutdown.clone();
    tokio::spawn(async move {
        loop {
            let readiness = tokio::select! {
                readiness = state.backend.check_readiness() => readiness,
                () = stop.cancelled() => return,
            };
            let ready = readiness == Readiness::Ready;
            state.metrics.ready.set(i64::from(ready));
            {
                let mut current = health.state.write().await;
                if *current != readiness {
                    match &readiness {
                        Readiness::Ready => tracing::info!("backend ready"),
                        Readiness::NotReady(reason) => tracing::warn!(%reason, "backend not ready"),
                    }
                    *current = readiness;
                }
            }
            let wait = if ready { interval } else { interval / 2 };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = stop.cancelled() => return,
            }
        }
    })
}

/// Serves until `stop` resolves, then drains: readiness turns false, new MCP requests get 503, and calls
/// in flight get up to `grace` to finish.
pub async fn serve(
    app: App,
    listener: tokio::net::TcpListener,
    grace: Duration,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let health = app.health.clone();
    let shutdown = app.shutdown.clone();
    let state = app.state.clone();
    let (stopped_tx, stopped_rx) = tokio::sync::oneshot::channel::<()>();
    let signal = async move {
        stop.await;
        health.draining.store(true, Ordering::Relaxed);
        tracing::info!(
            grace_seconds = grace.as_secs(),
            "shutting down: draining in-flight calls"
        );
        let _ = stopped_tx.send(());
    };
    let server = axum::serve(
        listener,
        app.router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(signal);
    let server = tokio::spawn(async move { server.await });
    let _ = stopped_rx.await;
    // Wait for in-flight calls, bounded by the grace period.
    let drained = tokio::time::timeout(grace, async {
        while state.metrics.in_flight.get() > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .is_ok();
    if !drained {
        tracing::warn!("grace period over with calls still in flight; stopping them");
    }
    shutdown.cancel();
    // Connections still open after the grace period are dropped with the process.
    match tokio::time::timeout(Duration::from_secs(1), server).await {
        Ok(Ok(result)) => result,
        _ => Ok(()),
    }
}
