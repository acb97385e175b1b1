use std::process::ExitCode;

use lumenore_connector::{
    app,
    auth::api_keys,
    backend::lumenore::Credentials,
    budget::{self, Cap},
    config::{BackendKind, Command, Config},
    metrics::Metrics,
    otel,
};
use tokio_util::sync::CancellationToken;

/// jemalloc rather than the system allocator: fewer CPU cycles per call under concurrent load, and memory
/// freed after a burst of clients goes back to the system within seconds (glibc's malloc keeps it).
/// Measured side by side on one binary (LD_PRELOAD): README, "Performance".
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc gives freed pages back to the system only when some thread allocates again, so a connector
/// that goes quiet after a burst of clients would keep its peak forever. One background thread returns
/// them within the decay time (10 s) whether or not calls keep coming (`cargo bench -p
/// lumenore-connector` with `BENCH_MODE=burst` measures it).
#[cfg(not(target_env = "msvc"))]
fn return_freed_memory_when_idle() {
    let enabled = tikv_jemalloc_ctl::max_background_threads::write(1)
        .and_then(|()| tikv_jemalloc_ctl::background_thread::write(true));
    if let Err(error) = enabled {
        tracing::warn!(%error, "jemalloc background purging is unavailable; freed memory returns only under load");
    }
}

#[cfg(target_env = "msvc")]
fn return_freed_memory_when_idle() {}

fn main() -> ExitCode {
    // A .env file beside the process is read first; real environment variables win over it.
    let _ = dotenvy::dotenv();
    let config = Config::from_args();
    if let Some(command) = &config.command {
        return run_command(command);
    }
    // otel: logs as telemetry::init, plus OTLP trace export when OTEL_EXPORTER_OTLP_*ENDPOINT is set.
    if let Err(message) = otel::init(config.log_format) {
        tracing::error!(%message, "invalid OpenTelemetry configuration");
        eprintln!("error: {message}");
        return ExitCode::from(2);
    }
    return_freed_memory_when_idle();
    if let Err(message) = config.validate() {
        tracing::error!(%message, "invalid configuration");
        eprintln!("error: {message}");
        return ExitCode::from(2);
    }
    let mut config = config;
    let memory_limit = budget::resolve_limit(config.memory_limit);
    fit_connections_to_memory(&mut config, memory_limit.as_ref());
    fit_connections_to_open_files(&mut config);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(config, memory_limit));
    if matches!(result, Ok(Stopped::WhileLoading)) {
        // The backend set-up still runs on a blocking thread and cannot be interrupted; dropping the
        // runtime would wait for it (seconds for a large catalog, forever for a stalled file).
        runtime.shutdown_background();
    } else {
        drop(runtime);
    }
    otel::shutdown(); // otel: export the spans still buffered
    match result {
        Ok(_) => ExitCode::SUCCESS,
        Err(message) => {
            tracing::error!(%message, "connector stopped");
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Lowers a default `--max-connections` to its share of the memory limit (before the listener opens; the
/// rest of the budget is decided once the backend loaded, in [`fit_requests_to_memory`]).
fn fit_connections_to_memory(config: &mut Config, limit: Option<&budget::Limit>) {
    let per_connection = budget::per_connection_bytes(budget::kernel_socket_bytes());
    let wanted = config.max_connections;
    config.max_connections = budget::connections(
        limit,
        Cap {
            value: wanted,
            explicit: config.explicit.max_connections,
        },
        per_connection,
    );
    if config.max_connections < wanted {
        tracing::info!(
            max_connections = config.max_connections,
            default = wanted,
            per_connection_kib = per_connection / 1024,
            "--max-connections (LUMENORE_MAX_CONNECTIONS) derived from the memory limit"
        );
    }
}

/// Once the backend loaded: measures the baseline, lowers a default `--max-concurrent-body-reads` to what
/// is left of the memory limit, prints the budget and exports it; refuses when explicit caps do not fit.
fn fit_requests_to_memory(
    config: &mut Config,
    limit: Option<budget::Limit>,
    metrics: &Metrics,
) -> Result<(), String> {
    let remote = matches!(config.backend, BackendKind::Lumenore);
    let plan = budget::plan(
        limit,
        budget::resident_bytes().unwrap_or(0) + budget::SCRAPES_BYTES,
        config.max_connections,
        budget::per_connection_bytes(budget::kernel_socket_bytes()),
        Cap {
            value: config.max_concurrent_body_reads,
            explicit: config.explicit.max_concurrent_body_reads,
        },
        budget::per_request_bytes(config.max_request_bytes, config.max_result_bytes, remote),
    )?;
    config.max_concurrent_body_reads = plan.body_reads;
    plan.record(metrics);
    tracing::info!(
        max_connections = plan.connections,
        max_concurrent_body_reads = plan.body_reads,
        "memory budget: {plan}"
    );
    Ok(())
}

/// File descriptors kept for everything but client connections: backend connections (one per call in
/// flight, plus the idle pool), the listener, logs, the catalog and the runtime's own.
fn reserved_descriptors(config: &Config) -> u64 {
    let calls = config
        .max_concurrent_backend_calls
        .map_or(256, |calls| u64::from(calls.get()));
    64 + calls + config.backend_pool_max_idle as u64
}

/// Raises the soft open-files limit to the hard one, and keeps `--max-connections` below it (less the
/// descriptors reserved for the rest), so the cap answers before `accept` runs out of descriptors.
fn fit_connections_to_open_files(config: &mut Config) {
    let limit = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(error) => {
            tracing::warn!(%error, "cannot read or raise the open-files limit");
            return;
        }
    };
    let reserved = reserved_descriptors(config);
    let fits = limit.saturating_sub(reserved).max(1);
    let wanted = config.max_connections as u64;
    if wanted > fits {
        config.max_connections = fits as usize;
        tracing::warn!(
            open_files_limit = limit,
            reserved,
            requested = wanted,
            max_connections = config.max_connections,
            "--max-connections (LUMENORE_MAX_CONNECTIONS) lowered to fit the open-files limit (raise `ulimit -n` \
             to keep it)"
        );
    } else {
        tracing::info!(
            open_files_limit = limit,
            reserved,
            max_connections = config.max_connections,
            "open-files limit raised to its hard limit; the connection cap fits below it"
        );
    }
}

/// How [`run`] ended without an error.
enum Stopped {
    /// A shutdown signal arrived while the backend was being set up.
    WhileLoading,
    /// After serving and draining.
    AfterServing,
}

async fn run(mut config: Config, memory_limit: Option<budget::Limit>) -> Result<Stopped, String> {
    // One listener for SIGTERM/SIGINT from the start to the end: a signal that arrives while the application
    // is being built, after the backend loaded, is not lost.
    let stop = CancellationToken::new();
    tokio::spawn({
        let stop = stop.clone();
        let signal = shutdown_signal();
        async move {
            signal.await;
            stop.cancel();
        }
    });
    app::install_crypto_provider();
    let metrics = Metrics::new();
    let credentials = Credentials::from_env();
    let started = std::time::Instant::now();
    // The port opens first: while the backend loads, liveness answers and readiness says "starting".
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|error| format!("cannot listen on {}: {error}", config.listen))?;
    let address = listener.local_addr().map_err(|error| error.to_string())?;
    let starting = app::serve_starting(listener, &config, &metrics);
    // Loading the embedded catalog is CPU and file work: keep it off the async workers.
    let loading = {
        let config = config.clone();
        let credentials = credentials.clone();
        let metrics = metrics.clone();
        tokio::task::spawn_blocking(move || app::build_backend(&config, credentials, &metrics))
    };
    let backend = tokio::select! {
        loaded = loading => loaded.map_err(|_| "backend set-up stopped unexpectedly".to_string())??,
        () = stop.cancelled() => {
            tracing::info!("stopped while the backend was loading");
            return Ok(Stopped::WhileLoading);
        }
    };
    tracing::info!(
        backend = backend.name(),
        load_ms = started.elapsed().as_millis() as u64,
        "backend loaded"
    );
    fit_requests_to_memory(&mut config, memory_limit, &metrics)?;
    let app = app::try_build(&config, backend, metrics)?;
    tracing::info!(
        %address,
        backend = app.state.backend.name(),
        credentials = credentials.describe(),
        auth_mode = ?config.auth_mode,
        "serving MCP at http://{address}/mcp"
    );
    app::spawn_readiness_loop(&app, config.readiness_interval);
    starting
        .serve(app, config.shutdown_grace, stop.cancelled_owned())
        .await
        .map(|()| Stopped::AfterServing)
        .map_err(|error| format!("server error: {error}"))
}

fn run_command(command: &Command) -> ExitCode {
    match command {
        Command::HashKey { id, stdin } => {
            if *stdin {
                let mut key = String::new();
                if std::io::stdin().read_line(&mut key).is_err() || key.trim().is_empty() {
                    eprintln!("error: give the key on standard input");
                    return ExitCode::from(2);
                }
                println!("{}", api_keys::hash_line(key.trim()));
                return ExitCode::SUCCESS;
            }
            let key = api_keys::generate_key();
            eprintln!(
                "# The key: give it to the caller (Authorization: Bearer <key>); it is not stored anywhere."
            );
            println!("{key}");
            eprintln!("# Its entry for the keys file (only the hash is kept there):");
            println!(
                "  - id: {id}\n    hash: {}\n    tools: [\"*\"]",
                api_keys::hash_line(&key)
            );
            ExitCode::SUCCESS
        }
    }
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C elsewhere). On Unix the handlers are installed when this is called,
/// so a signal that arrives before the future is first polled still counts.
#[cfg(unix)]
fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{Signal, SignalKind, signal};
    async fn received(signal: Option<Signal>) {
        match signal {
            Some(mut signal) => {
                signal.recv().await;
            }
            None => std::future::pending::<()>().await,
        }
    }
    let terminate = signal(SignalKind::terminate()).ok();
    let interrupt = signal(SignalKind::interrupt()).ok();
    async move {
        tokio::select! {
            () = received(terminate) => {},
            () = received(interrupt) => {},
        }
    }
}

#[cfg(not(unix))]
fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}
