//! The HTTP application: MCP at /mcp (stateless Streamable HTTP), health, readiness, metrics and a small
//! service description at /, plus the readiness loop and graceful shutdown.

use std::{sync::Arc, time::Duration};

use axum::{
    Json, Router,
    extract::State,
    http::{HeaderValue, StatusCode, header},
    middleware,
    response::{IntoResponse, Response},
    routing::get,
};
use rmcp::transport::streamable_http_server::{
    StreamableHttpServerConfig, StreamableHttpService, session::never::NeverSessionManager,
};
use serde_json::json;
use tokio::sync::{RwLock, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::{
    auth::{
        self,
        http::{AuthSettings, Gate},
        limits::StoreHealth,
    },
    backend::{
        Backend, Readiness,
        lumenore::{ClientSettings, Credentials, LumenoreBackend},
    },
    config::{BackendKind, Config},
    http::{self as web, HttpSettings, body::BodyLimits, drain::Drain, host::AllowedHosts},
    metrics::Metrics,
    server::{AppState, ConnectorServer},
    tools::{self, envelope::ResultLimits},
};

/// The MCP service behind one `Arc`. Every middleware layer clones the service it wraps on each request
/// (axum's `from_fn` does, so the layers in front of /mcp clone it a dozen times per call), and rmcp's
/// service clone copies its configuration, allowed hosts and origins included: about 8,000 instructions
/// per call (callgrind, `cargo bench -p lumenore-connector --bench throughput`), where an `Arc` costs one
/// atomic increment.
#[derive(Clone)]
struct SharedMcp(Arc<StreamableHttpService<ConnectorServer, NeverSessionManager>>);

impl tower::Service<axum::extract::Request> for SharedMcp {
    type Response = Response<http_body_util::combinators::BoxBody<bytes::Bytes, std::convert::Infallible>>;
    type Error = std::convert::Infallible;
    type Future = futures::future::BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: axum::extract::Request) -> Self::Future {
        let service = self.0.clone();
        Box::pin(async move { Ok(service.handle(request).await) })
    }
}

/// Installs the process-wide TLS crypto provider (ring). Safe to call more than once.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Readiness as last checked, plus the drain begun at shutdown.
pub struct Health {
    state: RwLock<Readiness>,
    drain: Arc<Drain>,
    /// The rate-limit store, noted on `/readyz` without deciding readiness: its failure policy decides what
    /// calls get, and a pod taken out of its Service would only turn a 503 with `Retry-After` into a
    /// refused connection.
    store: Option<Arc<StoreHealth>>,
}

impl Health {
    fn new(drain: Arc<Drain>, store: Option<Arc<StoreHealth>>) -> Self {
        Self {
            state: RwLock::new(Readiness::NotReady("not checked yet".into())),
            drain,
            store,
        }
    }

    /// `{"state": "ok"|"failing", "failurePolicy": "open"|"closed"}`, when there is a store.
    fn store_note(&self) -> Option<serde_json::Value> {
        self.store.as_ref().map(|store| {
            json!({
                "state": if store.is_up() { "ok" } else { "failing" },
                "failurePolicy": store.failure.as_str(),
            })
        })
    }
}

/// A built application, ready to serve.
pub struct App {
    pub router: Router,
    pub state: Arc<AppState>,
    pub health: Arc<Health>,
    /// Requests in flight on /mcp, and the draining flag.
    pub drain: Arc<Drain>,
    pub http: HttpSettings,
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
        #[cfg(feature = "embedded")]
        BackendKind::Embedded => Ok(Backend::Embedded(
            crate::backend::embedded::EmbeddedBackend::load(config.catalog.as_deref())?,
        )),
        #[cfg(not(feature = "embedded"))]
        BackendKind::Embedded => Err(crate::config::EMBEDDED_NOT_BUILT.to_string()),
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
        config.store_settings()?,
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
    let mcp = SharedMcp(Arc::new(StreamableHttpService::new(
        move || Ok(ConnectorServer::new(handler_state.clone())),
        Arc::new(NeverSessionManager::default()),
        mcp_config,
    )));
    let drain = Arc::new(Drain::default());
    let health = Arc::new(Health::new(drain.clone(), gate.store_health()));
    let backend_name = state.backend.name();
    let http = config.http_settings();
    // Permits, per-caller and per-connection shares and the minimum rate, from the final configuration.
    let body_limits = BodyLimits::new(&http, state.metrics.clone());

    // Outermost first: correlation id, drain (counts the request from here, 503 once draining), caller
    // authentication on the headers only, the body guard (bounded read, one strict parse), the caller's
    // permission for the tool and the rate limits, then the MCP service.
    let mcp_routes = Router::new()
        .nest_service("/mcp", mcp)
        .layer(middleware::from_fn_with_state(
            gate.clone(),
            auth::http::authorize,
        ))
        .layer(middleware::from_fn(crate::otel::trace_mcp)) // otel: HTTP and MCP server spans
        .layer(middleware::from_fn_with_state(body_limits, web::body::guard))
        .layer(middleware::from_fn_with_state(
            gate.clone(),
            auth::http::authenticate,
        ))
        .layer(middleware::from_fn_with_state(drain.clone(), web::drain::track));

    // The operational routes answer only Hosts that are allowed or IP literals (DNS-rebinding protection;
    // /mcp is checked by the MCP SDK).
    let ops_routes = Router::new()
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
        .route(
            "/metrics",
            get(metrics_text).with_state((state.clone(), Arc::new(Semaphore::new(crate::http::MAX_SCRAPES)))),
        )
        .layer(middleware::from_fn_with_state(
            AllowedHosts::new(&config.allowed_hosts),
            web::host::check,
        ));

    let router = Router::new()
        .route(
            "/.well-known/oauth-protected-resource",
            get(auth::http::protected_resource_metadata).with_state(gate.clone()),
        )
        .route(
            "/.well-known/oauth-protected-resource/{*resource}",
            get(auth::http::protected_resource_metadata).with_state(gate.clone()),
        )
        .merge(ops_routes)
        .merge(mcp_routes)
        .layer(middleware::from_fn(web::correlation::correlation));

    Ok(App {
        router,
        state,
        health,
        drain,
        http,
        shutdown,
    })
}

async fn readyz(State(health): State<Arc<Health>>) -> Response {
    if health.drain.is_draining() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "not ready", "reason": "shutting down"})),
        )
            .into_response();
    }
    let (status, mut body) = match &*health.state.read().await {
        Readiness::Ready => (StatusCode::OK, json!({"status": "ready"})),
        Readiness::NotReady(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"status": "not ready", "reason": reason}),
        ),
    };
    if let Some(note) = health.store_note() {
        body["rateLimitStore"] = note;
    }
    (status, Json(body)).into_response()
}

async fn metrics_text(State((state, scrapes)): State<(Arc<AppState>, Arc<Semaphore>)>) -> Response {
    let Ok(scrape) = scrapes.try_acquire_owned() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, HeaderValue::from_static("1"))],
            "too many scrapes at once: retry shortly\n",
        )
            .into_response();
    };
    let answer = (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        )],
        state.metrics.encode(),
    )
        .into_response();
    crate::http::tracked::hold_until_sent(answer, scrape)
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

/// The port from the moment it is bound: one accept loop whose connections see [`web::starting`]'s router
/// until [`Starting::serve`] hands them the application's, so no connection is handed over or dropped.
pub struct Starting {
    stop: CancellationToken,
    accepting: tokio::task::JoinHandle<(tokio::net::TcpListener, web::listener::Connections)>,
    app: Arc<std::sync::OnceLock<Router>>,
}

/// Serves [`web::starting::router`] on `listener` until [`Starting::serve`] switches to the application.
pub fn serve_starting(listener: tokio::net::TcpListener, config: &Config, metrics: &Metrics) -> Starting {
    let stop = CancellationToken::new();
    let app: Arc<std::sync::OnceLock<Router>> = Arc::default();
    let starting = web::starting::router(&config.allowed_hosts);
    let switch = {
        let app = app.clone();
        tower::service_fn(move |request: axum::extract::Request| {
            // One atomic load per request once started.
            let router = app.get().cloned().unwrap_or_else(|| starting.clone());
            tower::ServiceExt::oneshot(router, request)
        })
    };
    let accepting = tokio::spawn(web::listener::accept_until(
        listener,
        Router::new().fallback_service(switch),
        config.http_settings().connections(),
        metrics.clone(),
        stop.clone(),
    ));
    Starting { stop, accepting, app }
}

impl Starting {
    /// Every request from now on, on connections old and new, goes to `app`; then as [`serve`].
    pub async fn serve(
        self,
        app: App,
        grace: Duration,
        stop: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let _ = self.app.set(app.router.clone());
        drain_on(app, self.stop, self.accepting, grace, stop).await
    }
}

/// Serves until `stop` resolves, then drains: readiness turns false, new MCP requests get 503, the listener
/// closes, and requests in flight (counted from their acceptance, uploads included) get up to `grace` to
/// finish; then the MCP service is cancelled and the connections left are dropped.
pub async fn serve(
    app: App,
    listener: tokio::net::TcpListener,
    grace: Duration,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let stop_accepting = CancellationToken::new();
    let accepting = tokio::spawn(web::listener::accept_until(
        listener,
        app.router.clone(),
        app.http.connections(),
        app.state.metrics.clone(),
        stop_accepting.clone(),
    ));
    drain_on(app, stop_accepting, accepting, grace, stop).await
}

/// Waits for `stop`, then drains the connections of `accepting` (see [`serve`]).
async fn drain_on(
    app: App,
    stop_accepting: CancellationToken,
    accepting: tokio::task::JoinHandle<(tokio::net::TcpListener, web::listener::Connections)>,
    grace: Duration,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    stop.await;
    app.drain.begin();
    tracing::info!(
        grace_seconds = grace.as_secs(),
        in_flight = app.drain.in_flight(),
        "shutting down: draining in-flight requests"
    );
    stop_accepting.cancel();
    let (listener, connections) = accepting.await.map_err(std::io::Error::other)?;
    drop(listener);
    // Idle connections close at once; the others after the request they serve.
    let (drained, closed) = tokio::join!(app.drain.wait_idle(grace), connections.close(grace));
    if !drained {
        tracing::warn!(
            in_flight = app.drain.in_flight(),
            "grace period over with requests still in flight; stopping them"
        );
    } else if !closed {
        tracing::info!("connections still open after the grace period were closed");
    }
    app.shutdown.cancel();
    Ok(())
}
