//! The real `lumenore-operator` binary: crdgen output, HTTP endpoints, leader election against the
//! in-memory API server served over loopback HTTP, and a bounded shutdown on SIGTERM even when the
//! API server is unreachable.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::fake_api::FakeApi;
use k8s_openapi::api::coordination::v1::Lease;

const BIN: &str = env!("CARGO_BIN_EXE_lumenore-operator");

struct Operator(Child);
impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn kubeconfig(server: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!(
        "lumenore-kubeconfig-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {server}\nusers:\n- name: u\n  user: {{}}\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: u\n    namespace: default\ncurrent-context: c\n"
        ),
    )
    .unwrap();
    path
}

/// GET `path` on 127.0.0.1:`port`: (status code, body).
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let code = out.split_whitespace().nth(1)?.parse().ok()?;
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((code, body))
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn sigterm(child: &Child) {
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "the operator did not exit within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn start(kubeconfig: &std::path::Path, http_port: u16, extra: &[&str]) -> Operator {
    Operator(
        Command::new(BIN)
            .args([
                "--http-addr",
                &format!("127.0.0.1:{http_port}"),
                "--log-format",
                "text",
            ])
            .args(["--shutdown-timeout-seconds", "3"])
            .args(extra)
            .env("KUBECONFIG", kubeconfig)
            .env("POD_NAME", "operator-test-0")
            .env_remove("KUBERNETES_SERVICE_HOST")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the operator"),
    )
}

#[test]
fn crdgen_prints_the_committed_crd() {
    let out = Command::new(BIN).arg("crdgen").output().unwrap();
    assert!(out.status.success());
    let committed = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds/lumenore.io_lumenoreconnectors.yaml"),
    )
    .unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), committed);
}

#[test]
fn shutdown_is_bounded_when_the_api_server_is_unreachable() {
    // Nothing listens on this port.
    let kc = kubeconfig(&format!("http://127.0.0.1:{}", free_port()));
    let http = free_port();
    let mut op = start(&kc, http, &[]);
    wait_until("/healthz", Duration::from_secs(20), || {
        http_get(http, "/healthz").is_some_and(|(c, _)| c == 200)
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        http_get(http, "/readyz").map(|(c, _)| c),
        Some(503),
        "not ready without an API server"
    );
    let t0 = Instant::now();
    sigterm(&op.0);
    wait_exit(&mut op.0, Duration::from_secs(10));
    assert!(t0.elapsed() < Duration::from_secs(10));
    let _ = std::fs::remove_file(kc);
}

#[test]
fn leads_serves_metrics_and_releases_the_lease_on_sigterm() {
    // The in-memory API server, served over loopback HTTP.
    let api = FakeApi::new();
    // Bound here, before any other port is chosen, so no later free_port() can hand out the same port.
    let api_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    api_listener.set_nonblocking(true).unwrap();
    let api_port = api_listener.local_addr().unwrap().port();
    {
        let api = api.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let l = tokio::net::TcpListener::from_std(api_listener).unwrap();
                api.serve(l).await;
            });
        });
    }
    let kc = kubeconfig(&format!("http://127.0.0.1:{api_port}"));
    let http = free_port();
    let mut op = start(
        &kc,
        http,
        &[
            "--leader-election-namespace",
            "operators",
            "--retry-period-seconds",
            "1",
            "--watch-namespaces",
            "tenants,other",
        ],
    );
    wait_until("leadership", Duration::from_secs(20), || {
        api.get::<Lease>("operators", "lumenore-operator-leader")
            .and_then(|l| l.spec?.holder_identity)
            .as_deref()
            == Some("operator-test-0")
    });
    wait_until("/readyz 200", Duration::from_secs(10), || {
        http_get(http, "/readyz").is_some_and(|(c, _)| c == 200)
    });
    let (code, metrics) = http_get(http, "/metrics").unwrap();
    assert_eq!(code, 200);
    assert!(
        metrics.contains("lumenore_operator_reconciles_total"),
        "{metrics}"
    );
    assert!(
        metrics.contains("lumenore_operator_reconcile_duration_seconds"),
        "{metrics}"
    );
    // The controllers watch only the namespaces asked for.
    wait_until("watch requests", Duration::from_secs(10), || {
        api.log()
            .iter()
            .any(|l| l.path.contains("/namespaces/tenants/lumenoreconnectors"))
    });
    assert!(
        api.log()
            .iter()
            .filter(|l| l.path.contains("lumenoreconnectors"))
            .all(|l| l.path.contains("/namespaces/tenants/") || l.path.contains("/namespaces/other/")),
        "only the watched namespaces are read"
    );

    sigterm(&op.0);
    let status = wait_exit(&mut op.0, Duration::from_secs(10));
    assert!(status.success(), "clean exit: {status:?}");
    let lease = api
        .get::<Lease>("operators", "lumenore-operator-leader")
        .unwrap()
        .spec
        .unwrap();
    assert_eq!(lease.holder_identity, None, "the lease is released for a standby");
    let _ = std::fs::remove_file(kc);
}
