//! Reconcile cost at scale: CPU time per reconcile and resident memory of the operator for 1,000 and
//! 10,000 LumenoreConnectors, against the in-memory API server.
//!
//! Run: `cargo bench -p lumenore-operator --bench reconcile` (optionally `-- 1000,10000`).
//!
//! The in-memory API server (`tests/common/fake_api.rs`) runs in a *separate child process* behind a
//! loopback HTTP listener, so neither its CPU time nor the memory of the objects it stores is counted:
//! the figures are those of the operator process alone. Each size runs in a fresh operator process
//! too, so memory figures do not carry over. The operator side runs on one thread (current-thread
//! runtime); waiting on the API does not consume CPU, so "API latency" is excluded, while the
//! operator's own work to build requests and parse responses (JSON, HTTP) is included.
//!
//! Phases per size N:
//! - setup: N Secrets and N CRs are created through the API (not measured);
//! - the CR cache is filled as the controller's reflector fills it: kube's watcher with the operator's
//!   watch configuration, LIST in pages of 500, managedFields stripped per object;
//! - `create`: one reconcile per CR on an empty namespace (5 applies, Secret read, status, Events);
//! - `steady`: the cache is re-listed into the same store (so it holds the status `create` wrote),
//!   then one more reconcile per CR, nothing to change (the periodic resync case);
//! - `pure`: validate + build the children + serialize them, no API at all.
//!
//! RSS is printed after each phase, to show what holds memory.

/// The operator binary's allocator (src/main.rs): the memory figures are those of the binary.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[path = "../tests/common/fake_api.rs"]
mod fake_api;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::core::DeserializeGuard;
use kube::runtime::reflector;
use kube::runtime::watcher;
use lumenore_operator::builders::{BuildInputs, build_children};
use lumenore_operator::controller::{connector_watch_config, strip_unused_metadata};
use lumenore_operator::crd::LumenoreConnector;
use lumenore_operator::metrics::Metrics;
use lumenore_operator::reconcile::{Context, Guarded, OperatorConfig, reconcile};
use lumenore_operator::validate::{ClusterIdentity, validate};
use serde_json::json;

const COMMAND: &str = "cargo bench -p lumenore-operator --bench reconcile";

fn main() {
    // `cargo bench` passes `--bench`; it is not ours.
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
        .unwrap_or_else(|| vec![1000, 10_000]);
    let exe = std::env::current_exe().expect("own path");
    println!("# lumenore-operator reconcile benchmark");
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
        // A fresh API server and a fresh operator process per size.
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

/// Child process: the in-memory API server on a loopback port (printed on stdout); exits when stdin closes.
fn fake_server() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let api = fake_api::FakeApi::quiet();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        println!("{}", listener.local_addr().unwrap().port());
        std::io::stdout().flush().unwrap();
        tokio::spawn(api.serve(listener));
        // Exit when the parent closes stdin.
        tokio::task::spawn_blocking(|| {
            let mut s = String::new();
            let _ = std::io::stdin().read_line(&mut s);
        })
        .await
        .unwrap();
    });
}

/// utime + stime of this process, in seconds (from /proc/self/stat).
fn process_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields after the command: state(0) ... utime(11) stime(12), in clock ticks (100 Hz on Linux).
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

/// RSS after each phase, to see what holds memory.
#[derive(Default)]
struct Memory(Vec<(String, f64, f64)>);

impl Memory {
    fn mark(&mut self, phase: &str) {
        let (rss, hwm) = rss_mib();
        self.0.push((phase.to_string(), rss, hwm));
    }

    fn print(&self) {
        for (phase, rss, hwm) in &self.0 {
            println!("         RSS {rss:6.1} MiB, peak {hwm:6.1} MiB  {phase}");
        }
    }
}

/// Fill (or re-fill) the reflector store as the controller's watcher does: the operator's watch
/// configuration, pages until `InitDone`, `strip_unused_metadata` on each object. (The in-memory API
/// server has no watch; the watch that would follow is not needed here.)
async fn fill_cache(api: &Api<Guarded>, writer: &mut reflector::store::Writer<Guarded>) {
    use futures::StreamExt;
    let mut events = watcher(api.clone(), connector_watch_config()).boxed();
    while let Some(ev) = events.next().await {
        let mut ev = ev.expect("list LumenoreConnectors");
        if let watcher::Event::InitApply(o) = &mut ev {
            strip_unused_metadata(o);
        }
        writer.apply_watcher_event(&ev);
        if matches!(ev, watcher::Event::InitDone) {
            break;
        }
    }
}

fn spec(i: usize) -> serde_json::Value {
    json!({
        "tenant": format!("tenant-{i}"),
        "region": {"cloud": "aws", "name": "eu-west-1"},
        "serverUrl": format!("https://tenant-{i}.lumenore.com"),
        "credentials": {"secretName": format!("creds-{i}"), "clientIdKey": "client-id", "clientSecretKey": "client-secret"},
        "replicas": if i.is_multiple_of(3) { json!(null) } else { json!(2) },
        "auth": if i.is_multiple_of(2) { json!({"mode": "none"}) } else {
            json!({"mode": "oauth", "oauth": {"issuer": "https://idp.example.com", "audience": format!("https://t{i}.example.com/mcp")}})
        },
        "rateLimits": {"perCallerPerMinute": 60},
        "network": {"networkPolicy": true},
        "backend": "lumenore",
        "suspend": false,
    })
}

fn one(n: usize, port: u16) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let (rss0, _) = rss_mib();
        let mut mem = Memory::default();
        let config = kube::Config::new(format!("http://127.0.0.1:{port}").parse().unwrap());
        let client = kube::Client::try_from(config).expect("client");
        let ns = "tenants";

        // Setup (not measured).
        let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
        let crs: Api<LumenoreConnector> = Api::namespaced(client.clone(), ns);
        for i in 0..n {
            let s = Secret {
                metadata: ObjectMeta {
                    name: Some(format!("creds-{i}")),
                    ..Default::default()
                },
                data: Some(BTreeMap::from([
                    ("client-id".to_string(), ByteString(format!("client-{i}").into_bytes())),
                    ("client-secret".to_string(), ByteString(format!("secret-{i}").into_bytes())),
                ])),
                ..Default::default()
            };
            secrets.create(&PostParams::default(), &s).await.expect("create secret");
            let cr: LumenoreConnector = serde_json::from_value(json!({
                "apiVersion": "lumenore.io/v1alpha1", "kind": "LumenoreConnector",
                "metadata": {"name": format!("tenant-{i}")}, "spec": spec(i)
            }))
            .unwrap();
            crs.create(&PostParams::default(), &cr).await.expect("create CR");
        }

        mem.mark("setup (N Secrets and N CRs created; client only)");

        // The controller's cache, filled as its reflector fills it: kube's watcher with the
        // operator's own watch configuration (LIST in pages of 500), managedFields stripped per
        // object as it arrives.
        let guarded: Api<Guarded> = Api::namespaced(client.clone(), ns);
        let (reader, mut writer) = reflector::store::<Guarded>();
        fill_cache(&guarded, &mut writer).await;
        assert_eq!(reader.state().len(), n);
        mem.mark("cache filled (reflector store of N CRs)");

        let ctx = Arc::new(Context::new(
            client.clone(),
            OperatorConfig::new(
                ClusterIdentity {
                    cloud: None,
                    region: Some("eu-west-1".into()),
                },
                "ghcr.io/lumenore/lumenore-connector:0.1.0".into(),
            ),
            Arc::new(Metrics::new()),
        ));

        let mut results = Vec::new();
        for phase in ["create", "steady"] {
            if phase == "steady" {
                // The status `create` wrote reaches the cache as a watch would deliver it; here by
                // a re-list into the same store (the reflector's relist: the new page set replaces
                // the old one at its end).
                fill_cache(&guarded, &mut writer).await;
            }
            let cpu0 = process_cpu_seconds();
            let wall0 = Instant::now();
            let mut failures = 0;
            for o in reader.state() {
                if reconcile(o, ctx.clone()).await.is_err() {
                    failures += 1;
                }
            }
            let cpu = process_cpu_seconds() - cpu0;
            let wall = wall0.elapsed().as_secs_f64();
            results.push((phase, cpu, wall, failures));
            mem.mark(&format!("after {phase}"));
        }

        // Pure part: validate + build + serialize the children, no API.
        let cluster = ClusterIdentity::default();
        let inputs = BuildInputs {
            default_image: "ghcr.io/lumenore/lumenore-connector:0.1.0".into(),
            credentials_hash: Some("0".repeat(64)),
            monitoring_namespace: None,
        };
        let objs = reader.state();
        let cpu0 = process_cpu_seconds();
        let t0 = Instant::now();
        let mut bytes = 0usize;
        for o in &objs {
            if let DeserializeGuard(Ok(lc)) = o.as_ref() {
                validate(lc, &cluster).ok();
                let c = build_children(lc, &inputs);
                bytes += serde_json::to_vec(&c.deployment).unwrap().len()
                    + serde_json::to_vec(&c.service).unwrap().len()
                    + serde_json::to_vec(&c.service_account).unwrap().len()
                    + serde_json::to_vec(&c.network_policy).unwrap().len()
                    + serde_json::to_vec(&c.pod_disruption_budget).unwrap().len();
            }
        }
        let pure_cpu = process_cpu_seconds() - cpu0;
        let pure_wall = t0.elapsed().as_secs_f64();

        mem.mark("after pure");
        let (rss, hwm) = rss_mib();
        println!("\n## {n} LumenoreConnectors");
        for (phase, cpu, wall, failures) in results {
            println!(
                "{phase:>7}: CPU {:.3} ms/reconcile (target < 1 ms), wall {:.3} ms/reconcile incl. loopback API, failures {failures}",
                cpu * 1000.0 / n as f64,
                wall * 1000.0 / n as f64
            );
        }
        println!(
            "   pure: CPU {:.3} ms/CR for validate + build + serialize children ({} bytes/CR), wall {:.3} ms/CR",
            pure_cpu * 1000.0 / n as f64,
            bytes / n.max(1),
            pure_wall * 1000.0 / n as f64
        );
        println!(
            " memory: operator RSS {rss:.1} MiB now, peak {hwm:.1} MiB (target < 150 MiB at 10,000), {rss0:.1} MiB at start; cache holds {} CRs; per-object state kept for {} CRs",
            reader.state().len(),
            ctx.tracked_objects()
        );
        mem.print();
    });
}
