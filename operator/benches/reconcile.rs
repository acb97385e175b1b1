//! Reconcile cost at scale: CPU time per reconcile and resident memory of the operator for 1,000 and
//! 10,000 LumenoreConnectors, against the in-memory API server.
//!
//! Run: `cargo bench -p lumenore-operator --bench reconcile` (optionally `-- 1000,10000`).
//!
//! The in-memory API server (`tests/common/fake_api.rs`) runs in a *separate child process* behind a
//! loopback HTTP listener, so neither its CPU time nor the memory of the objects it stores is counted:
//! the figures are those of the operator process alone. Each size runs in a fresh operator process
//! too, so memory figures do not carry over (see `benches/support/mod.rs`). The operator side runs on
//! one thread (current-thread runtime); waiting on the API does not consume CPU, so "API latency" is
//! excluded, while the operator's own work to build requests and parse responses (JSON, HTTP) is
//! included.
//!
//! Phases per size N:
//! - setup: N Secrets and N CRs are created through the API (not measured);
//! - the CR cache is filled as the controller's reflector fills it: kube's watcher with the operator's
//!   watch configuration (an any-semantic LIST, which the watch cache answers in one response),
//!   managedFields stripped per object;
//! - `create`: one reconcile per CR on an empty namespace (5 applies, Secret read, status, Events);
//! - `steady`: the cache is re-listed into the same store (so it holds the status `create` wrote),
//!   then one more reconcile per CR, nothing to change (the periodic resync case);
//! - `pure`: validate + build the children + serialize them, no API at all.
//!
//! RSS is printed after each phase, to show what holds memory.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::core::DeserializeGuard;
use kube::runtime::reflector;
use lumenore_operator::builders::{BuildInputs, build_children};
use lumenore_operator::crd::LumenoreConnector;
use lumenore_operator::metrics::Metrics;
use lumenore_operator::reconcile::{Context, Guarded, OperatorConfig, reconcile};
use lumenore_operator::validate::{ClusterIdentity, validate};
use serde_json::json;
use support::{Bench, Memory, fill_cache, process_cpu_seconds, rss_mib};

fn main() {
    support::run(Bench {
        title: "lumenore-operator reconcile benchmark",
        command: "cargo bench -p lumenore-operator --bench reconcile",
        default_sizes: &[1000, 10_000],
        app: support::fake_api::FakeApi::router,
        one,
    });
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
    support::operator_side(async move {
        let (rss0, _) = rss_mib();
        let mut mem = Memory::default();
        let client = support::client(port);
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
                    (
                        "client-id".to_string(),
                        ByteString(format!("client-{i}").into_bytes()),
                    ),
                    (
                        "client-secret".to_string(),
                        ByteString(format!("secret-{i}").into_bytes()),
                    ),
                ])),
                ..Default::default()
            };
            secrets
                .create(&PostParams::default(), &s)
                .await
                .expect("create secret");
            let cr: LumenoreConnector = serde_json::from_value(json!({
                "apiVersion": "lumenore.io/v1alpha1", "kind": "LumenoreConnector",
                "metadata": {"name": format!("tenant-{i}")}, "spec": spec(i)
            }))
            .unwrap();
            crs.create(&PostParams::default(), &cr).await.expect("create CR");
        }

        mem.mark("setup (N Secrets and N CRs created; client only)");

        // The controller's cache, filled as its reflector fills it: kube's watcher with the
        // operator's own watch configuration (one any-semantic LIST), managedFields stripped per
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
                // a re-list into the same store (the reflector's relist: the new object set replaces
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
            egress_services: Vec::new(),
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
