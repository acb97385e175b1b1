//! The REAL operator binary against the in-memory API server (served over loopback HTTP), with trace export
//! on: (1) its live `/metrics` carries every series and label the chart's alerts and dashboard query
//! (`.ci/check_queries.py`, a real PromQL parser), including the new leader, stage-error and condition
//! reason metrics; (2) an OTLP receiver decoding with the official protobuf definitions
//! (`e2e/python/otlp_receiver.py`) gets one span per reconcile with one child per stage, linked to the
//! object by namespace/name only, the failing stage and reason recorded, and no spec value or Secret byte.
//!
//! Needs the project venv (`bash .ci/install-tools.sh`): skipped without it locally, a failure under CI.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::fake_api::FakeApi;
use http::Method;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::ObjectMeta;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_lumenore-operator");
const NS: &str = "tenants";
const SERVER_URL: &str = "https://canary-host-5e1d.lumenore.com";
const SECRET_VALUE: &str = "canary-secret-value-8c2f";

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The project venv's python when it has `modules`; None (skip) locally, panic under CI.
fn python_with(modules: &str) -> Option<PathBuf> {
    let tools = std::env::var_os("TOOLS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".tools"));
    let python = tools.join("venv/bin/python");
    let ok = Command::new(&python)
        .args(["-c", &format!("import {modules}")])
        .status()
        .is_ok_and(|s| s.success());
    let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
    match (ok, ci) {
        (true, _) => Some(python),
        (false, true) => {
            panic!("{python:?} lacks {modules} and CI is set: run `bash .ci/install-tools.sh` first")
        }
        (false, false) => {
            println!("SKIPPED: {python:?} lacks {modules} — run .ci/install-tools.sh");
            None
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Serve `api` over loopback HTTP on a thread of its own (the fake's own server); returns the port.
fn serve(api: FakeApi) -> u16 {
    // Bound here, before the operator starts, so its first API call never races the listener.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let l = tokio::net::TcpListener::from_std(listener).unwrap();
            api.serve(l).await;
        });
    });
    port
}

fn http_get(port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.split_once("\r\n\r\n").map(|(_, b)| b.to_string())
}

fn wait_until<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn secret() -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some("acme-creds".into()),
            namespace: Some(NS.into()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([
            (
                "client-id".to_string(),
                ByteString(b"canary-client-id-3b7a".to_vec()),
            ),
            (
                "client-secret".to_string(),
                ByteString(SECRET_VALUE.as_bytes().to_vec()),
            ),
        ])),
        ..Default::default()
    }
}

#[test]
fn live_metrics_and_reconcile_traces_of_the_real_binary() {
    let Some(python) =
        python_with("promql_parser, yaml, opentelemetry.proto.collector.trace.v1.trace_service_pb2")
    else {
        return;
    };
    // The OTLP receiver.
    let mut receiver = Command::new(&python)
        .arg(repo().join("e2e/python/otlp_receiver.py"))
        .arg("0")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the receiver");
    let mut lines = BufReader::new(receiver.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let otlp_port: u16 = first.strip_prefix("listening ").unwrap().parse().unwrap();
    let receiver = Kill(receiver);
    let spans = Arc::new(Mutex::new(Vec::<Value>::new()));
    {
        let spans = spans.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                spans.lock().unwrap().push(serde_json::from_str(&line).unwrap());
            }
        });
    }

    // The cluster: a valid connector (its first Deployment applies fail), one for another region.
    let api = FakeApi::quiet();
    api.put(&secret());
    let mut acme = common::minimal_spec();
    acme["serverUrl"] = json!(SERVER_URL);
    api.put(&common::connector(NS, "acme", acme));
    let mut far = common::minimal_spec();
    far["region"] = json!({"cloud": "aws", "name": "us-east-1"});
    far["serverUrl"] = json!(SERVER_URL);
    api.put(&common::connector(NS, "far", far));
    api.fail_next(Method::PATCH, "/deployments/acme", 500, 2);
    let api_port = serve(api.clone());
    let kubeconfig = std::env::temp_dir().join(format!("lumenore-obs-kubeconfig-{}", std::process::id()));
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: http://127.0.0.1:{api_port}\nusers:\n- name: u\n  user: {{}}\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: u\n    namespace: default\ncurrent-context: c\n"
        ),
    )
    .unwrap();
    let http = free_port();
    // The operator's own log, shown if the test times out (it carries names and reasons, no Secret data).
    let operator_log_path =
        std::env::temp_dir().join(format!("lumenore-obs-operator-{}.log", std::process::id()));
    let operator_log = std::fs::File::create(&operator_log_path).expect("operator log file");
    let _op = Kill(
        Command::new(BIN)
            .args([
                "--http-addr",
                &format!("127.0.0.1:{http}"),
                "--log-format",
                "text",
            ])
            .args(["--cluster-cloud", "aws", "--cluster-region", "eu-west-1"])
            .args([
                "--watch-namespaces",
                NS,
                "--leader-election-namespace",
                "operators",
            ])
            .args(["--retry-period-seconds", "1", "--shutdown-timeout-seconds", "3"])
            .env("KUBECONFIG", &kubeconfig)
            .env("POD_NAME", "operator-obs-0")
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env(
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                format!("http://127.0.0.1:{otlp_port}"),
            )
            .env("OTEL_BSP_SCHEDULE_DELAY", "100")
            .stdout(Stdio::null())
            .stderr(Stdio::from(operator_log.try_clone().expect("log file handle")))
            .spawn()
            .expect("start the operator"),
    );

    // 1. Live metrics: wait until the failures, the retry's success and the refusal are counted.
    let want = [
        "lumenore_operator_leader 1",
        r#"lumenore_operator_reconcile_errors_total{stage="apply",reason="ServerError"} 2"#,
        r#"lumenore_operator_connector_conditions{condition="Accepted",status="False",reason="RegionMismatch"} 1"#,
        r#"lumenore_operator_connector_conditions{condition="Accepted",status="True",reason="Accepted"} 1"#,
        r#"lumenore_operator_reconcile_stage_duration_seconds_count{stage="status"}"#,
    ];
    let deadline = Instant::now() + Duration::from_secs(120);
    let scrape = loop {
        let m = http_get(http, "/metrics").unwrap_or_default();
        let missing: Vec<&str> = want.iter().copied().filter(|w| !m.contains(w)).collect();
        if missing.is_empty() {
            break m;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for the operator's metrics; missing {missing:#?}; last scrape:\n{m}\noperator log:\n{}",
            std::fs::read_to_string(&operator_log_path).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let file = std::env::temp_dir().join(format!("lumenore-obs-operator-{}.metrics", std::process::id()));
    std::fs::write(&file, &scrape).unwrap();
    let out = Command::new(&python)
        .arg(repo().join(".ci/check_queries.py"))
        .arg(repo().join("charts/lumenore-operator/files/monitoring/alerts.yaml"))
        .arg(repo().join("charts/lumenore-operator/files/monitoring/lumenore-fleet-dashboard.json"))
        .arg("--scrape")
        .arg(format!("lumenore_operator_={}", file.display()))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "queries do not match the live scrape:\n{text}\n{scrape}"
    );
    let _ = std::fs::remove_file(&file);

    // 2. Traces: the reconciles of acme (two failing in apply, then one through every stage) and of far.
    let spans = wait_until("the reconcile spans", Duration::from_secs(30), || {
        let spans = spans.lock().unwrap().clone();
        let done = spans.iter().any(|s| {
            s["name"] == "reconcile LumenoreConnector"
                && s["attributes"]["lumenore.connector.name"] == "acme"
                && s["status"] == "STATUS_CODE_UNSET"
        }) && spans
            .iter()
            .any(|s| s["attributes"]["lumenore.connector.name"] == "far");
        done.then_some(spans)
    });
    let children = |parent: &Value| -> Vec<String> {
        spans
            .iter()
            .filter(|s| s["parent_span_id"] == parent["span_id"] && s["trace_id"] == parent["trace_id"])
            .map(|s| s["name"].as_str().unwrap().to_string())
            .collect()
    };
    let reconciles = |name: &str| -> Vec<&Value> {
        spans
            .iter()
            .filter(|s| {
                s["name"] == "reconcile LumenoreConnector"
                    && s["attributes"]["lumenore.connector.name"] == name
            })
            .collect()
    };
    for r in reconciles("acme").iter().chain(reconciles("far").iter()) {
        assert_eq!(r["kind"], "SPAN_KIND_INTERNAL");
        assert_eq!(r["parent_span_id"], "", "a reconcile is a root span");
        assert_eq!(r["attributes"]["k8s.namespace.name"], NS);
        assert_eq!(r["resource"]["service.name"], "lumenore-operator");
    }
    let failed: Vec<&Value> = reconciles("acme")
        .into_iter()
        .filter(|r| r["status"] == "STATUS_CODE_ERROR")
        .collect();
    assert_eq!(failed.len(), 2, "{spans:#?}");
    for f in &failed {
        assert_eq!(f["attributes"]["error.type"], "ServerError");
        let mut names = children(f);
        names.sort();
        let mut want = vec![
            "reconcile apply",
            "reconcile build",
            "reconcile read_inputs",
            "reconcile validate",
        ];
        want.sort();
        assert_eq!(names, want, "stages up to the failing apply");
        let apply = spans
            .iter()
            .find(|s| s["parent_span_id"] == f["span_id"] && s["name"] == "reconcile apply")
            .unwrap();
        assert_eq!(apply["status"], "STATUS_CODE_ERROR");
        assert_eq!(apply["attributes"]["error.type"], "ServerError");
        assert_eq!(apply["attributes"]["lumenore.reconcile.stage"], "apply");
    }
    let ok = reconciles("acme")
        .into_iter()
        .find(|r| r["status"] == "STATUS_CODE_UNSET")
        .unwrap();
    let mut names = children(ok);
    names.sort();
    let mut want = vec![
        "reconcile apply",
        "reconcile build",
        "reconcile read_inputs",
        "reconcile status",
        "reconcile validate",
    ];
    want.sort();
    assert_eq!(names, want, "a successful reconcile goes through every stage");
    let far = reconciles("far")[0];
    let mut names = children(far);
    names.sort();
    assert_eq!(
        names,
        vec!["reconcile status", "reconcile validate"],
        "a refused connector: validate, status"
    );

    // Only namespace/name, stage and reason: no spec value, Secret byte or message, no log event.
    let text = serde_json::to_string(&spans).unwrap();
    for canary in [
        SERVER_URL,
        "canary-host",
        SECRET_VALUE,
        "canary-client-id",
        "eu-west-1",
        "us-east-1",
    ] {
        assert!(!text.contains(canary), "{canary} exported: {text}");
    }
    assert!(spans.iter().all(|s| s["events"] == json!([])));
    drop(receiver);
    let _ = std::fs::remove_file(kubeconfig);
}
