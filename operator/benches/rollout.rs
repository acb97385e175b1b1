//! A full fleet rollout at scale: CPU per tenant reconcile, CPU per rollout reconcile and resident
//! memory of the operator while 10,000 LumenoreConnectors move to a new image in three waves.
//!
//! Run: `cargo bench -p lumenore-operator --bench rollout` (optionally `-- 1000,10000`).
//!
//! As in `benches/reconcile.rs`, the in-memory API server (`tests/common/fake_api.rs`) runs in a
//! separate child process behind a loopback listener, so its CPU and the objects it stores are not
//! counted; it also plays the Deployment controller (`POST /bench/roll` marks every changed
//! Deployment rolled out and Ready). The operator side runs on one thread.
//!
//! Per step: the rollout controller reconciles (O(tenants)); the rollout cache is refreshed; the
//! tenants whose image the rollout changed are found (what the tenant controller's rollout watch
//! does) and reconciled; the Deployments roll; the same tenants are reconciled again (what their
//! Deployment watch triggers) and report Ready. The tenant cache is refreshed with a LIST between
//! steps, standing in for the watch; its cost is printed on its own line, not in the figures.

#[path = "../tests/common/fake_api.rs"]
mod fake_api;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::reflector;
use lumenore_operator::controller::strip_unused_metadata;
use lumenore_operator::crd::LumenoreConnector;
use lumenore_operator::metrics::Metrics;
use lumenore_operator::reconcile::{Context, Guarded, OperatorConfig, reconcile};
use lumenore_operator::rollout::LumenoreFleetRollout;
use lumenore_operator::rollout::controller::{self as rc, RolloutContext, tenants_to_update};
use lumenore_operator::rollout::crd::Phase;
use lumenore_operator::rollout::fleet::fill_store;
use lumenore_operator::validate::ClusterIdentity;
use serde_json::json;

const COMMAND: &str = "cargo bench -p lumenore-operator --bench rollout";
const OLD: &str = "ghcr.io/lumenore/lumenore-connector:0.1.0";
const NEW: &str = "ghcr.io/lumenore/lumenore-connector:0.2.0";
const NS: &str = "tenants";
const OPS: &str = "lumenore-system";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    if args.first().map(String::as_str) == Some("--fake-server") {
        return fake_server();
    }
    if args.first().map(String::as_str) == Some("--one") {
        let n: usize = args.get(1).and_then(|s| s.parse().ok()).expect("--one N");
        let port: u16 = args.get(2).and_then(|s| s.parse().ok()).expect("--one N PORT");
        return one(n, port);
    }
    let sizes: Vec<usize> = args
        .iter()
        .find(|a| !a.starts_with('-'))
        .map(|s| s.split(',').filter_map(|x| x.parse().ok()).collect())
        .unwrap_or_else(|| vec![10_000]);
    let exe = std::env::current_exe().expect("own path");
    println!("# lumenore-operator fleet rollout benchmark");
    println!(
        "# command: {COMMAND}{}",
        if args.is_empty() {
            String::new()
        } else {
            format!(" -- {}", args.join(" "))
        }
    );
    println!(
        "# machine: {} CPUs; profile: {}",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release (bench)"
        }
    );
    for n in sizes {
        let mut server = Command::new(&exe)
            .arg("--fake-server")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start fake API server");
        let mut line = String::new();
        BufReader::new(server.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line.trim().to_string();
        let out = Command::new(&exe)
            .args(["--one", &n.to_string(), &port])
            .output()
            .expect("run operator side");
        print!("{}", String::from_utf8_lossy(&out.stdout));
        if !out.status.success() {
            eprintln!("{}", String::from_utf8_lossy(&out.stderr));
        }
        drop(server.stdin.take());
        let _ = server.kill();
        let _ = server.wait();
    }
}

/// Child process: the in-memory API server, plus the Deployment controller on `POST /bench/roll`.
fn fake_server() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let api = fake_api::FakeApi::quiet();
        let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
            let api = api.clone();
            async move {
                let (parts, body) = req.into_parts();
                if parts.uri.path() == "/bench/roll" {
                    let mut rolled = 0;
                    for name in api.names::<Deployment>(NS) {
                        let raw = api.get_raw::<Deployment>(NS, &name).unwrap();
                        if raw["status"]["observedGeneration"] != raw["metadata"]["generation"] {
                            api.set_deployment_ready(NS, &name, 1);
                            rolled += 1;
                        }
                    }
                    return http::Response::builder()
                        .status(200)
                        .body(axum::body::Body::from(rolled.to_string()))
                        .unwrap();
                }
                let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default();
                let ct = parts
                    .headers
                    .get(http::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                // The bench injects no hangs, so every request has an answer.
                let (code, out) = api
                    .handle(&parts.method, parts.uri.path(), parts.uri.query(), &ct, &bytes)
                    .unwrap_or((504, b"{}".to_vec()));
                http::Response::builder()
                    .status(code)
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .body(axum::body::Body::from(out))
                    .unwrap()
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        println!("{}", listener.local_addr().unwrap().port());
        std::io::stdout().flush().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        tokio::task::spawn_blocking(|| {
            let mut s = String::new();
            let _ = std::io::stdin().read_line(&mut s);
        })
        .await
        .unwrap();
    });
}

/// utime + stime of this process, in seconds.
fn process_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// (VmRSS, VmHWM) in MiB.
fn rss_mib() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Measured CPU: total seconds and count.
#[derive(Default)]
struct Meter {
    cpu: f64,
    n: usize,
}

impl Meter {
    fn per_ms(&self) -> f64 {
        self.cpu * 1000.0 / self.n.max(1) as f64
    }
}

fn one(n: usize, port: u16) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let (rss0, _) = rss_mib();
        let base = format!("http://127.0.0.1:{port}");
        let config = kube::Config::new(base.parse().unwrap());
        let client = kube::Client::try_from(config).expect("client");
        let http = reqwest_free_post(port);

        // Setup: N tenants, 1% of them canaries.
        let crs: Api<LumenoreConnector> = Api::namespaced(client.clone(), NS);
        for i in 0..n {
            let labels = if i % 100 == 0 { json!({"lumenore.io/ring": "canary"}) } else { json!({}) };
            let cr: LumenoreConnector = serde_json::from_value(json!({
                "apiVersion": "lumenore.io/v1alpha1", "kind": "LumenoreConnector",
                "metadata": {"name": format!("tenant-{i}"), "labels": labels},
                "spec": {"tenant": format!("tenant-{i}"), "region": {"cloud": "aws", "name": "eu-west-1"},
                         "backend": "embedded", "replicas": 1}
            }))
            .unwrap();
            crs.create(&PostParams::default(), &cr).await.expect("create CR");
        }

        let metrics = Arc::new(Metrics::new());
        let ctx = Arc::new(Context::new(
            client.clone(),
            OperatorConfig::new(ClusterIdentity::default(), OLD.into()),
            metrics.clone(),
        ));
        let (tenants, mut tenant_writer) = reflector::store::<Guarded>();
        let (rollouts, mut rollout_writer) = reflector::store::<LumenoreFleetRollout>();
        ctx.fleet.register_tenants(tenants.clone());
        ctx.fleet.set_rollouts(rollouts);
        let mut rctx = RolloutContext::new(client.clone(), ctx.fleet.clone(), metrics.clone(), OLD.into());
        rctx.poll = std::time::Duration::from_secs(1);
        let rctx = Arc::new(rctx);
        let guarded: Api<Guarded> = Api::namespaced(client.clone(), NS);
        let rollout_api: Api<LumenoreFleetRollout> = Api::namespaced(client.clone(), OPS);

        let mut refresh = Meter::default();
        let refresh_tenants = async |writer: &mut reflector::store::Writer<Guarded>, m: &mut Meter| {
            let c0 = process_cpu_seconds();
            let items = guarded.list(&ListParams::default()).await.expect("list").items;
            fill_store(writer, items.into_iter().map(|mut o| {
                strip_unused_metadata(&mut o);
                o
            }));
            m.cpu += process_cpu_seconds() - c0;
            m.n += 1;
        };

        // Before the rollout: every tenant deployed on OLD and Ready (not measured).
        refresh_tenants(&mut tenant_writer, &mut refresh).await;
        for o in tenants.state() {
            reconcile(o, ctx.clone()).await.expect("reconcile");
        }
        http("/bench/roll").await;
        refresh_tenants(&mut tenant_writer, &mut refresh).await;
        for o in tenants.state() {
            reconcile(o, ctx.clone()).await.expect("reconcile");
        }
        refresh_tenants(&mut tenant_writer, &mut refresh).await;

        let rollout: LumenoreFleetRollout = serde_json::from_value(json!({
            "apiVersion": "lumenore.io/v1alpha1", "kind": "LumenoreFleetRollout",
            "metadata": {"name": "to-0-2-0"},
            "spec": {"image": NEW, "maxUnavailable": n / 10, "bakeSeconds": 0, "readyDeadlineSeconds": 3600,
                     "waves": [
                        {"name": "canary", "selector": {"matchLabels": {"lumenore.io/ring": "canary"}}},
                        {"name": "early", "percent": 10},
                        {"name": "rest"}
                     ]}
        }))
        .unwrap();
        rollout_api.create(&PostParams::default(), &rollout).await.expect("create rollout");

        let mut tenant_m = Meter::default();
        let mut rollout_m = Meter::default();
        let mut mapper_m = Meter::default();
        let wall0 = Instant::now();
        let mut steps = 0;
        loop {
            steps += 1;
            assert!(steps < 200, "rollout did not finish");
            // The rollout controller.
            let r = Arc::new(rollout_api.get("to-0-2-0").await.expect("get rollout"));
            let c0 = process_cpu_seconds();
            rc::reconcile(r, rctx.clone()).await.expect("rollout reconcile");
            rollout_m.cpu += process_cpu_seconds() - c0;
            rollout_m.n += 1;
            let r = rollout_api.get("to-0-2-0").await.expect("get rollout");
            let phase = r.status.as_ref().and_then(|s| s.phase);
            fill_store(&mut rollout_writer, [r]);
            if phase == Some(Phase::Completed) {
                break;
            }
            // The tenant controller's rollout watch: which tenants to reconcile.
            let c0 = process_cpu_seconds();
            let todo = tenants_to_update(&ctx.fleet, &tenants, OLD);
            mapper_m.cpu += process_cpu_seconds() - c0;
            mapper_m.n += 1;
            let objs: Vec<Arc<Guarded>> = todo.iter().filter_map(|r| tenants.get(r)).collect();
            for pass in 0..2 {
                let c0 = process_cpu_seconds();
                for o in &objs {
                    // The second pass reads the object as its Deployment watch would deliver it.
                    let o = if pass == 0 { o.clone() } else { tenants.get(&kube::runtime::reflector::ObjectRef::from_obj(o.as_ref())).unwrap() };
                    reconcile(o, ctx.clone()).await.expect("reconcile");
                }
                tenant_m.cpu += process_cpu_seconds() - c0;
                tenant_m.n += objs.len();
                if pass == 0 {
                    http("/bench/roll").await;
                }
                refresh_tenants(&mut tenant_writer, &mut refresh).await;
            }
        }
        let wall = wall0.elapsed().as_secs_f64();
        let on_new = tenants
            .state()
            .iter()
            .filter(|g| g.0.as_ref().ok().and_then(|lc| lc.status.as_ref()?.connector.as_ref()?.image.clone()).as_deref() == Some(NEW))
            .count();
        let (rss, hwm) = rss_mib();
        println!("\n## {n} LumenoreConnectors, 3 waves (1% canary, 10%, rest), {} at a time", n / 10);
        println!("  result: {on_new} of {n} tenants on {NEW} after {steps} rollout steps, wall {wall:.1} s (incl. loopback API)");
        println!("  tenant: CPU {:.3} ms/reconcile over {} reconciles (target < 1 ms)", tenant_m.per_ms(), tenant_m.n);
        println!(" rollout: CPU {:.3} ms/reconcile over {} reconciles (one per step, scans all {n} tenants)", rollout_m.per_ms(), rollout_m.n);
        println!("  mapper: CPU {:.3} ms per rollout change (finds the tenants to reconcile among {n})", mapper_m.per_ms());
        println!("   cache: CPU {:.3} ms per LIST refresh of the tenant cache (stands in for the watch; not counted above)", refresh.per_ms());
        println!("  memory: operator RSS {rss:.1} MiB now, peak {hwm:.1} MiB (target < 150 MiB), {rss0:.1} MiB at start");
    });
}

/// A tiny HTTP/1.1 POST without a client library (the operator's own client is kube's).
fn reqwest_free_post(
    port: u16,
) -> impl Fn(&'static str) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>> {
    move |path: &'static str| {
        Box::pin(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .expect("connect");
            let req = format!(
                "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            s.write_all(req.as_bytes()).await.expect("write");
            let mut out = Vec::new();
            s.read_to_end(&mut out).await.expect("read");
        })
    }
}
