//! A full fleet rollout at scale: CPU per tenant reconcile, CPU per rollout reconcile and resident
//! memory of the operator while 10,000 LumenoreConnectors move to a new image in three waves.
//!
//! Run: `cargo bench -p lumenore-operator --bench rollout` (optionally `-- 1000,10000`).
//!
//! As in `benches/reconcile.rs` (both use `benches/support/mod.rs`), the in-memory API server
//! (`tests/common/fake_api.rs`) runs in a separate child process behind a loopback listener, so its CPU and the objects it stores are not
//! counted; it also plays the Deployment controller (`POST /bench/roll` marks every changed
//! Deployment rolled out and Ready). The operator side runs on one thread.
//!
//! Per step: the rollout controller reconciles (O(tenants)); the rollout cache is refreshed; the
//! tenants whose image the rollout changed are found (what the tenant controller's rollout watch
//! does) and reconciled; the Deployments roll; the same tenants are reconciled again (what their
//! Deployment watch triggers) and report Ready. The tenant cache is filled as the tenant controller's
//! reflector fills it (kube's watcher with the operator's watch configuration, managedFields stripped
//! per object) and re-filled that way after each pass, standing in for the watch; its cost is printed
//! on its own line, not in the figures. The allocator is the operator binary's (jemalloc). RSS is
//! printed after each phase and rollout step, to show what holds memory.

mod support;

use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, PostParams};
use kube::runtime::reflector;
use lumenore_operator::crd::LumenoreConnector;
use lumenore_operator::metrics::Metrics;
use lumenore_operator::reconcile::{Context, Guarded, OperatorConfig, reconcile};
use lumenore_operator::rollout::LumenoreFleetRollout;
use lumenore_operator::rollout::controller::{self as rc, RolloutContext, tenants_to_update};
use lumenore_operator::rollout::crd::Phase;
use lumenore_operator::rollout::fleet::fill_store;
use lumenore_operator::validate::ClusterIdentity;
use serde_json::json;
use support::fake_api::FakeApi;
use support::{Bench, Memory, fill_cache, process_cpu_seconds, rss_mib};

const OLD: &str = "ghcr.io/lumenore/lumenore-connector:0.1.0";
const NEW: &str = "ghcr.io/lumenore/lumenore-connector:0.2.0";
const NS: &str = "tenants";
const OPS: &str = "lumenore-system";

fn main() {
    support::run(Bench {
        title: "lumenore-operator fleet rollout benchmark",
        command: "cargo bench -p lumenore-operator --bench rollout",
        default_sizes: &[10_000],
        app,
        one,
    });
}

/// The API server child: the in-memory API server, plus the Deployment controller on
/// `POST /bench/roll` (every Deployment whose spec changed is marked rolled out and Ready; answers
/// how many).
fn app(api: FakeApi) -> axum::Router {
    let roll = api.clone();
    api.router().route(
        "/bench/roll",
        axum::routing::any(move || {
            let api = roll.clone();
            async move {
                let mut rolled = 0;
                for name in api.names::<Deployment>(NS) {
                    let raw = api.get_raw::<Deployment>(NS, &name).unwrap();
                    if raw["status"]["observedGeneration"] != raw["metadata"]["generation"] {
                        api.set_deployment_ready(NS, &name, 1);
                        rolled += 1;
                    }
                }
                rolled.to_string()
            }
        }),
    )
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
    support::operator_side(async move {
        let (rss0, _) = rss_mib();
        let mut mem = Memory::default();
        let client = support::client(port);
        let http = reqwest_free_post(port);

        // Setup: N tenants, 1% of them canaries.
        let crs: Api<LumenoreConnector> = Api::namespaced(client.clone(), NS);
        for i in 0..n {
            let labels = if i % 100 == 0 {
                json!({"lumenore.io/ring": "canary"})
            } else {
                json!({})
            };
            let cr: LumenoreConnector = serde_json::from_value(json!({
                "apiVersion": "lumenore.io/v1alpha1", "kind": "LumenoreConnector",
                "metadata": {"name": format!("tenant-{i}"), "labels": labels},
                "spec": {"tenant": format!("tenant-{i}"), "region": {"cloud": "aws", "name": "eu-west-1"},
                         "backend": "embedded", "replicas": 1}
            }))
            .unwrap();
            crs.create(&PostParams::default(), &cr).await.expect("create CR");
        }
        mem.mark("setup (N CRs created; client only)");

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
            fill_cache(&guarded, writer).await;
            m.cpu += process_cpu_seconds() - c0;
            m.n += 1;
        };

        // Before the rollout: every tenant deployed on OLD and Ready (not measured).
        refresh_tenants(&mut tenant_writer, &mut refresh).await;
        assert_eq!(tenants.state().len(), n);
        mem.mark("tenant cache filled (reflector store of N CRs)");
        for o in tenants.state() {
            reconcile(o, ctx.clone()).await.expect("reconcile");
        }
        http("/bench/roll").await;
        refresh_tenants(&mut tenant_writer, &mut refresh).await;
        for o in tenants.state() {
            reconcile(o, ctx.clone()).await.expect("reconcile");
        }
        refresh_tenants(&mut tenant_writer, &mut refresh).await;
        mem.mark("fleet on the old image and Ready (2 reconciles per tenant, 3 cache fills)");

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
        rollout_api
            .create(&PostParams::default(), &rollout)
            .await
            .expect("create rollout");

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
            let wave = r.status.as_ref().and_then(|s| s.current_wave_name.clone());
            fill_store(&mut rollout_writer, [r]);
            if phase == Some(Phase::Completed) {
                mem.mark(&format!("step {steps}: rollout Completed"));
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
                    let o = if pass == 0 {
                        o.clone()
                    } else {
                        tenants
                            .get(&kube::runtime::reflector::ObjectRef::from_obj(o.as_ref()))
                            .unwrap()
                    };
                    reconcile(o, ctx.clone()).await.expect("reconcile");
                }
                tenant_m.cpu += process_cpu_seconds() - c0;
                tenant_m.n += objs.len();
                if pass == 0 {
                    http("/bench/roll").await;
                }
                refresh_tenants(&mut tenant_writer, &mut refresh).await;
            }
            mem.mark(&format!(
                "step {steps}: wave {}, tenants reconciled twice: {}",
                wave.as_deref().unwrap_or("-"),
                objs.len()
            ));
        }
        let wall = wall0.elapsed().as_secs_f64();
        let on_new = tenants
            .state()
            .iter()
            .filter(|g| {
                g.0.as_ref()
                    .ok()
                    .and_then(|lc| lc.status.as_ref()?.connector.as_ref()?.image.clone())
                    .as_deref()
                    == Some(NEW)
            })
            .count();
        let (rss, hwm) = rss_mib();
        println!(
            "\n## {n} LumenoreConnectors, 3 waves (1% canary, 10%, rest), {} at a time",
            n / 10
        );
        println!(
            "  result: {on_new} of {n} tenants on {NEW} after {steps} rollout steps, wall {wall:.1} s (incl. loopback API)"
        );
        println!(
            "  tenant: CPU {:.3} ms/reconcile over {} reconciles (target < 1 ms)",
            tenant_m.per_ms(),
            tenant_m.n
        );
        println!(
            " rollout: CPU {:.3} ms/reconcile over {} reconciles (one per step, scans all {n} tenants)",
            rollout_m.per_ms(),
            rollout_m.n
        );
        println!(
            "  mapper: CPU {:.3} ms per rollout change (finds the tenants to reconcile among {n})",
            mapper_m.per_ms()
        );
        println!(
            "   cache: CPU {:.3} ms per re-fill (LIST) of the tenant cache (stands in for the watch; not counted above)",
            refresh.per_ms()
        );
        println!(
            "  memory: operator RSS {rss:.1} MiB now, peak {hwm:.1} MiB (target < 150 MiB), {rss0:.1} MiB at start"
        );
        mem.print();
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
