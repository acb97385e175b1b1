use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use lumenore_operator::crd::Cloud;
use lumenore_operator::leader::{LeaseConfig, LeaseLock};
use lumenore_operator::metrics::Metrics;
use lumenore_operator::reconcile::{Context, OperatorConfig};
use lumenore_operator::run::RunConfig;
use lumenore_operator::validate::ClusterIdentity;
use lumenore_operator::{crdgen, leader, server};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// jemalloc rather than glibc's malloc, as in the connector: every re-list of the LumenoreConnector
/// watch builds a second copy of the cache before the first is dropped, and glibc keeps most of what
/// was freed as resident memory (fragmented arenas) while jemalloc returns it within seconds.
/// Measured with benches/reconcile.rs and benches/rollout.rs (benches/support/mod.rs declares the same
/// allocator): README, "Performance".
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Kubernetes operator reconciling LumenoreConnector resources into per-tenant connector deployments.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the operator (the default).
    Run,
    /// Print a CustomResourceDefinition YAML, or write every CRD into a directory.
    Crdgen {
        /// Directory to write `lumenore.io_lumenoreconnectors.yaml` and `lumenore.io_lumenorefleetrollouts.yaml` into; prints to stdout when absent.
        #[arg(long)]
        out: Option<PathBuf>,
        /// CRD to print when `--out` is absent: `connector` (LumenoreConnector) or `fleet-rollout` (LumenoreFleetRollout).
        #[arg(long, default_value = "connector", value_parser = ["connector", "fleet-rollout"])]
        crd: String,
    },
}

#[derive(Args, Debug)]
struct RunArgs {
    /// Cloud of this cluster (aws, azure, gcp, oci); connectors for another cloud are not deployed.
    #[arg(long, env = "LUMENORE_CLUSTER_CLOUD")]
    cluster_cloud: Option<Cloud>,
    /// Region of this cluster (as in the node label topology.kubernetes.io/region); connectors for another region are not deployed.
    #[arg(long, env = "LUMENORE_CLUSTER_REGION")]
    cluster_region: Option<String>,
    /// Connector image used when a LumenoreConnector sets no spec.image.
    #[arg(long, env = "LUMENORE_CONNECTOR_IMAGE", default_value = concat!("ghcr.io/lumenore/lumenore-connector:", env!("CARGO_PKG_VERSION")))]
    connector_image: String,
    /// Namespaces to watch, comma separated; empty watches all namespaces.
    #[arg(
        long,
        env = "LUMENORE_WATCH_NAMESPACES",
        value_delimiter = ',',
        default_value = ""
    )]
    watch_namespaces: Vec<String>,
    /// Maximum reconciles running at once (per watched namespace).
    #[arg(long, env = "LUMENORE_CONCURRENCY", default_value_t = 8)]
    concurrency: u16,
    /// Address of the /metrics, /healthz and /readyz endpoints.
    #[arg(long, env = "LUMENORE_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    http_addr: SocketAddr,
    /// Elect a leader through a Lease (needed when more than one replica runs).
    #[arg(long, env = "LUMENORE_LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set)]
    leader_elect: bool,
    /// Namespace of the leader-election Lease (defaults to POD_NAMESPACE, then "default").
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    leader_election_namespace: String,
    /// Namespace whose LumenoreFleetRollout governs the fleet (defaults to the operator's namespace, POD_NAMESPACE).
    #[arg(long, env = "LUMENORE_ROLLOUT_NAMESPACE")]
    rollout_namespace: Option<String>,
    /// Name of the leader-election Lease.
    #[arg(long, default_value = "lumenore-operator-leader")]
    leader_election_lease: String,
    /// Lease duration in seconds.
    #[arg(long, default_value_t = 15)]
    lease_duration_seconds: u64,
    /// Seconds within which the leader must renew, or stop.
    #[arg(long, default_value_t = 10)]
    renew_deadline_seconds: u64,
    /// Seconds between lease attempts.
    #[arg(long, default_value_t = 2)]
    retry_period_seconds: u64,
    /// Namespace whose pods (e.g. Prometheus) may scrape the connectors' /metrics through their NetworkPolicy.
    #[arg(long, env = "LUMENORE_MONITORING_NAMESPACE")]
    monitoring_namespace: Option<String>,
    /// Time limit of every Kubernetes API request, in seconds.
    #[arg(long, env = "LUMENORE_API_TIMEOUT_SECONDS", default_value_t = 30)]
    api_timeout_seconds: u64,
    /// Longest time allowed for a graceful shutdown after SIGTERM/SIGINT.
    #[arg(long, default_value_t = 20)]
    shutdown_timeout_seconds: u64,
    /// Server-side timeout of every watch, in seconds. A watch that sends nothing for this long plus
    /// 5 s is treated as dead and started again, so a silently dropped connection freezes no cache
    /// for longer.
    #[arg(long, env = "LUMENORE_WATCH_TIMEOUT_SECONDS", default_value_t = 60, value_parser = clap::value_parser!(u32).range(1..=3600))]
    watch_timeout_seconds: u32,
    /// How often an active fleet rollout looks at its tenants again, in seconds.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=600))]
    rollout_poll_seconds: u64,
    /// How often a missing LumenoreFleetRollout CRD is looked for again, in seconds.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    crd_probe_seconds: u64,
    /// Field manager of every write. Two installs whose watched namespaces could overlap need
    /// different ones (each starting with "lumenore-operator"): each then refuses the other's objects.
    #[arg(long, env = "LUMENORE_FIELD_MANAGER", default_value = "lumenore-operator", value_parser = parse_field_manager)]
    field_manager: String,
    /// Log format: json or text.
    #[arg(long, env = "LUMENORE_LOG_FORMAT", default_value = "json")]
    log_format: String,
}

/// A field manager this operator can recognise as one of its installs: "lumenore-operator" or
/// "lumenore-operator.<name>", at most 128 characters (the API server's limit).
fn parse_field_manager(s: &str) -> Result<String, String> {
    let ok = s == lumenore_operator::crd::MANAGER
        || s.strip_prefix("lumenore-operator.").is_some_and(|rest| {
            !rest.is_empty()
                && rest
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
        });
    if ok && s.len() <= 128 {
        Ok(s.to_string())
    } else {
        Err("must be \"lumenore-operator\" or \"lumenore-operator.<name>\" (letters, digits, '-', '.', '_'; at most 128 characters)".into())
    }
}

fn init_tracing(format: &str) -> anyhow::Result<()> {
    // otel: the log layer as before, plus OTLP trace export of the reconciles when configured.
    lumenore_operator::otel::init(format).map_err(anyhow::Error::msg)
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Crdgen { out: Some(dir), .. }) => {
            for path in crdgen::write_crds(&dir)? {
                eprintln!("wrote {}", path.display());
            }
            Ok(())
        }
        Some(Command::Crdgen { out: None, crd }) => {
            if crd == "fleet-rollout" {
                print!("{}", crdgen::rollout_crd_yaml()?);
            } else {
                print!("{}", crdgen::crd_yaml()?);
            }
            Ok(())
        }
        Some(Command::Run) | None => {
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            let result = rt.block_on(run(cli.run));
            lumenore_operator::otel::shutdown(); // otel: export the spans still buffered
            // Never wait on stuck tasks at exit: the shutdown is bounded.
            rt.shutdown_timeout(Duration::from_secs(2));
            result
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    // One TLS crypto provider for the whole process (kube is built with ring). Installed before tracing:
    // the OTLP exporter builds its HTTP client on another thread at init, and that client panics without a
    // provider (seen as a race in the observability test).
    let _ = rustls::crypto::ring::default_provider().install_default();
    init_tracing(&args.log_format)?;

    let namespaces: Vec<String> = args
        .watch_namespaces
        .iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    let lease_config = LeaseConfig {
        namespace: args.leader_election_namespace.clone(),
        name: args.leader_election_lease.clone(),
        identity: std::env::var("POD_NAME")
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| format!("lumenore-operator-{}", std::process::id())),
        lease_duration: Duration::from_secs(args.lease_duration_seconds),
        renew_deadline: Duration::from_secs(args.renew_deadline_seconds),
        retry_period: Duration::from_secs(args.retry_period_seconds),
    };
    if args.leader_elect {
        lease_config.check().map_err(anyhow::Error::msg)?;
    }
    let client = lumenore_operator::client::build(Duration::from_secs(args.api_timeout_seconds.max(1)))
        .await
        .context("creating the Kubernetes client (in-cluster config or KUBECONFIG)")?;
    let metrics = Arc::new(Metrics::new());
    let mut config = OperatorConfig::new(
        ClusterIdentity {
            cloud: args.cluster_cloud,
            region: args.cluster_region.clone(),
        },
        args.connector_image.clone(),
    );
    config.monitoring_namespace = args.monitoring_namespace.clone().filter(|n| !n.is_empty());
    config.watch_timeout_seconds = args.watch_timeout_seconds;
    config.field_manager = args.field_manager.clone();
    config.reporter.controller = args.field_manager.clone();
    let ctx = Arc::new(Context::new(client.clone(), config, metrics.clone()));
    let run_config = RunConfig {
        namespaces: namespaces.clone(),
        concurrency: args.concurrency,
        rollout_namespace: args
            .rollout_namespace
            .clone()
            .unwrap_or_else(|| args.leader_election_namespace.clone()),
        crd_probe_interval: Duration::from_secs(args.crd_probe_seconds),
        rollout_poll: Duration::from_secs(args.rollout_poll_seconds),
    };

    let shutdown = CancellationToken::new();
    let (ready_tx, ready_rx) = watch::channel(false);
    let http = tokio::spawn(server::serve(
        args.http_addr,
        server::router(metrics, ready_rx),
        shutdown.clone(),
    ));
    {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            shutdown_signal().await;
            tracing::info!("shutdown requested");
            shutdown.cancel();
        });
    }

    tracing::info!(
        namespaces = ?namespaces,
        cloud = ?args.cluster_cloud.map(|c| c.as_str()),
        region = ?args.cluster_region,
        image = %args.connector_image,
        concurrency = args.concurrency,
        leader_elect = args.leader_elect,
        "starting lumenore-operator"
    );

    let controllers_stop = shutdown.child_token();
    let mut lost_leadership = false;
    let election = if args.leader_elect {
        let lock = LeaseLock::new(client.clone(), lease_config);
        let (leader_tx, mut leader_rx) = watch::channel(false);
        // observe: lumenore_operator_leader follows the election.
        let stages = ctx.clone();
        let rx = leader_rx.clone();
        tokio::spawn(async move { stages.metrics.stages.follow_leadership(rx).await });
        let election_stop = CancellationToken::new();
        let handle = tokio::spawn(leader::run(lock, leader_tx, ready_tx, election_stop.clone()));
        // Wait to become leader (standbys stay ready: they are healthy and can take over).
        tokio::select! {
            _ = shutdown.cancelled() => {}
            r = leader_rx.wait_for(|l| *l) => { r.context("leader election stopped")?; }
        }
        if !shutdown.is_cancelled() {
            tracing::info!("leading: starting controllers");
            let stop = controllers_stop.clone();
            let lost = CancellationToken::new();
            let mut rx = leader_rx.clone();
            let watch_lost = {
                let lost = lost.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        r = rx.wait_for(|l| !*l) => { if r.is_ok() { lost.cancel(); } }
                        _ = stop.cancelled() => {}
                    }
                })
            };
            run_bounded(
                lumenore_operator::run::run_all(ctx, run_config, controllers_stop.clone()),
                &controllers_stop,
                &shutdown,
                &lost,
                args.shutdown_timeout_seconds,
            )
            .await;
            controllers_stop.cancel();
            let _ = watch_lost.await;
            lost_leadership = lost.is_cancelled();
        }
        election_stop.cancel();
        Some(handle)
    } else {
        // Readiness: the API server answered once.
        client
            .apiserver_version()
            .await
            .context("contacting the API server")?;
        let _ = ready_tx.send(true);
        ctx.metrics.stages.leader.set(1); // observe: without election this replica always leads
        run_bounded(
            lumenore_operator::run::run_all(ctx, run_config, controllers_stop.clone()),
            &controllers_stop,
            &shutdown,
            &CancellationToken::new(),
            args.shutdown_timeout_seconds,
        )
        .await;
        None
    };

    let deadline = Duration::from_secs(args.shutdown_timeout_seconds);
    if let Some(h) = election
        && tokio::time::timeout(deadline, h).await.is_err()
    {
        tracing::warn!("leader election did not stop in time");
    }
    shutdown.cancel();
    if tokio::time::timeout(Duration::from_secs(2), http).await.is_err() {
        tracing::warn!("http server did not stop in time");
    }
    if lost_leadership {
        anyhow::bail!("lost leadership; exiting so a fresh process rejoins as a standby");
    }
    tracing::info!("stopped");
    Ok(())
}

/// Run the controllers; once a stop is requested, give them `timeout_secs` to finish, then abandon
/// them (a kube-runtime controller was seen to hang on shutdown with the API server unreachable).
/// When leadership is `lost`, they are dropped at once, in-flight reconciles included: another
/// replica may lead from now on.
async fn run_bounded(
    fut: impl std::future::Future<Output = ()>,
    stop: &CancellationToken,
    shutdown: &CancellationToken,
    lost: &CancellationToken,
    timeout_secs: u64,
) {
    tokio::pin!(fut);
    tokio::select! {
        _ = &mut fut => return,
        _ = lost.cancelled() => {
            tracing::warn!("leadership lost: controllers stopped");
            return;
        }
        _ = stop.cancelled() => {}
        _ = shutdown.cancelled() => { stop.cancel(); }
    }
    if tokio::time::timeout(Duration::from_secs(timeout_secs), fut)
        .await
        .is_err()
    {
        tracing::warn!(timeout_secs, "controllers did not stop in time; exiting anyway");
    }
}
