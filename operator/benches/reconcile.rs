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
//! - the CR cache is filled with a LIST, as the controller's reflector does (managedFields stripped);
//! - `create`: one reconcile per CR on an empty namespace (5 applies, Secret read, status, Events);
//! - `steady`: one more reconcile per CR, nothing to change (the periodic resync case);
//! - `pure`: validate + build the children + serialize them, no API at all.

#[path = "../tests/common/fake_api.rs"]
mod fake_api;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams, ObjectMeta, PostParams};
use kube::core::DeserializeGuard;
use kube::runtime::reflector;
use kube::runtime::watcher;
use lumenore_operator::builders::{BuildInputs, build_children};
use lumenore_operator::controller::strip_unused_metadata;
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

        // The controller's cache: LIST once, managedFields stripped, as the reflector holds it.
        let guarded: Api<Guarded> = Api::namespaced(client.clone(), ns);
        let (reader, mut writer) = reflector::store::<Guarded>();
        writer.apply_watcher_event(&watcher::Event::Init);
        for mut o in guarded.list(&ListParams::default()).await.expect("list").items {
            strip_unused_metadata(&mut o);
            writer.apply_watcher_event(&watcher::Event::InitApply(o));
        }
        writer.apply_watcher_event(&watcher::Event::InitDone);
        assert_eq!(reader.state().len(), n);

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
            // Reconcile what the cache holds; status written by `create` is re-read, as a watch would deliver it.
            let objs: Vec<Arc<Guarded>> = if phase == "create" {
                reader.state()
            } else {
                let mut v = Vec::with_capacity(n);
                for mut o in guarded.list(&ListParams::default()).await.expect("list").items {
                    strip_unused_metadata(&mut o);
                    writer.apply_watcher_event(&watcher::Event::Apply(o.clone()));
                    v.push(Arc::new(o));
                }
                v
            };
            let cpu0 = process_cpu_seconds();
            let wall0 = Instant::now();
            let mut failures = 0;
            for o in objs {
                if reconcile(o, ctx.clone()).await.is_err() {
                    failures += 1;
                }
            }
            let cpu = process_cpu_seconds() - cpu0;
            let wall = wall0.elapsed().as_secs_f64();
            results.push((phase, cpu, wall, failures));
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
            " memory: operator RSS {rss:.1} MiB now, peak {hwm:.1} MiB (target < 150 MiB at 10,000), {rss0:.1} MiB at start; cache holds {} CRs",
            reader.state().len()
        );
    });
}
