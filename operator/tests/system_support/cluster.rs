//! The system under test: the fake API server served over loopback HTTP, real `lumenore-operator`
//! processes talking to it (each with its own kubeconfig whose bearer token is its identity, so the
//! fake knows which process wrote what), a simulated Deployment controller, and the invariant
//! checker hooked to every write.

use std::collections::{BTreeMap, HashSet};
use std::io::{Read, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use http::Method;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use lumenore_operator::crd::LumenoreConnector;
use lumenore_operator::rollout::LumenoreFleetRollout;
use lumenore_operator::rollout::plan;
use serde_json::{Value, json};

use super::checker::{CheckConfig, Checker, Rec, deployment_image};
use crate::common::fake_api::FakeApi;

pub const BIN: &str = env!("CARGO_BIN_EXE_lumenore-operator");

/// The binary under test: this build's, or `LUMENORE_OPERATOR_BIN` (another build, e.g. an older
/// commit's, to see which scenarios catch its defects).
pub fn bin() -> String {
    std::env::var("LUMENORE_OPERATOR_BIN").unwrap_or_else(|_| BIN.to_string())
}
/// The operator's namespace: Lease and rollouts.
pub const OPS: &str = "lumenore-system";
pub const LEASE: &str = "lumenore-operator-leader";
/// The operator's `--connector-image`: what the fleet runs before a rollout.
pub const OLD: &str = "ghcr.io/lumenore/lumenore-connector:0.1.0";
/// The rollout's target.
pub const NEW: &str = "ghcr.io/lumenore/lumenore-connector:0.2.0";
/// Prefix of every operator identity (POD_NAME and bearer token).
pub const OP_PREFIX: &str = "op-";
/// Field manager of the simulated kube-controller-manager.
pub const KCM: &str = "kube-controller-manager";

/// Election and watch timing of the operator processes (seconds).
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    pub lease: u64,
    pub renew: u64,
    pub retry: u64,
    pub watch_timeout: u64,
    pub rollout_poll: u64,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            lease: 3,
            renew: 2,
            retry: 1,
            watch_timeout: 3,
            rollout_poll: 1,
        }
    }
}

impl Timing {
    /// Longest time a standby needs to take over from a leader that vanished: the record must stay
    /// unchanged for a lease duration as observed by the standby, which looks once per retry period;
    /// one more retry period for the write itself.
    pub fn failover_bound(&self) -> Duration {
        Duration::from_secs(self.lease + self.renew + self.retry)
    }
}

/// Flags of the binary (read once from `--help`): the ones the lead adds may not exist yet.
fn binary_flags() -> &'static String {
    static HELP: OnceLock<String> = OnceLock::new();
    HELP.get_or_init(|| {
        let out = Command::new(bin()).arg("--help").output().expect("run --help");
        String::from_utf8_lossy(&out.stdout).into_owned()
    })
}

pub fn binary_has_flag(flag: &str) -> bool {
    binary_flags().contains(flag)
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `method path` with a JSON `body` on 127.0.0.1:`port`, without a token: (status code, body).
pub fn http_send(port: u16, method: &str, path: &str, body: &Value) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(1),
    )
    .ok()?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    let body = serde_json::to_vec(body).ok()?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .ok()?;
    s.write_all(&body).ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let code = out.split_whitespace().nth(1)?.parse().ok()?;
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((code, body))
}

/// GET `path` on 127.0.0.1:`port`: (status code, body).
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    http_get_as(port, path, None)
}

/// `GET path` with an `Authorization` header when given: (status code, body).
pub fn http_get_as(port: u16, path: &str, authorization: Option<&str>) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(1),
    )
    .ok()?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    let auth = authorization
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{auth}\r\n"
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

/// Poll `f` every 50 ms until it holds; `Err` after `timeout`. Returns the time it took.
pub fn wait_for(timeout: Duration, mut f: impl FnMut() -> bool) -> Result<Duration, Duration> {
    let t0 = Instant::now();
    loop {
        if f() {
            return Ok(t0.elapsed());
        }
        if t0.elapsed() >= timeout {
            return Err(t0.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// [`wait_for`], panicking with `what` on timeout.
pub fn must(what: &str, timeout: Duration, f: impl FnMut() -> bool) -> Duration {
    match wait_for(timeout, f) {
        Ok(d) => d,
        Err(d) => panic!("timed out after {d:?} waiting for {what}"),
    }
}

/// One `lumenore-operator` process; killed (SIGKILL) when dropped.
pub struct Operator {
    pub id: String,
    pub child: Child,
    pub http: u16,
    pub log: PathBuf,
    pub started: Instant,
}

impl Operator {
    /// Still running?
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGKILL, and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM.
    pub fn term(&self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
    }

    pub fn metrics(&self) -> Option<String> {
        http_get(self.http, "/metrics")
            .filter(|(c, _)| *c == 200)
            .map(|(_, b)| b)
    }

    /// The last `n` lines of its log (colours removed).
    pub fn log_tail(&self, n: usize) -> String {
        let text = strip_ansi(&std::fs::read_to_string(&self.log).unwrap_or_default());
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `s` without ANSI colour sequences (ESC [ ... m).
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Tenants whose pods never get Ready on the new image (`ns/name`).
pub type NeverReady = Arc<Mutex<HashSet<String>>>;

/// The simulated Deployment controller (kube-controller-manager) as a thread.
struct DeploymentSim {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Drop for DeploymentSim {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// The status kube-controller-manager's deployment controller writes once the pods are (or are
/// not) Ready.
fn sim_status(d: &Value, never_ready: bool) -> Value {
    let generation = d["metadata"]["generation"].clone();
    let want = d["spec"]["replicas"].as_i64().unwrap_or(1);
    if never_ready && want > 0 {
        json!({
            "observedGeneration": generation,
            "replicas": want, "updatedReplicas": want, "readyReplicas": 0, "availableReplicas": 0,
            "unavailableReplicas": want,
            "conditions": [
                {"type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable",
                 "message": "Deployment does not have minimum availability."},
                {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
                 "message": "ReplicaSet has timed out progressing."}
            ]
        })
    } else {
        json!({
            "observedGeneration": generation,
            "replicas": want, "updatedReplicas": want, "readyReplicas": want, "availableReplicas": want,
            "conditions": [
                {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable",
                 "message": "Deployment has minimum availability."},
                {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable",
                 "message": "ReplicaSet has successfully progressed."}
            ]
        })
    }
}

fn sim_pass(api: &FakeApi, namespaces: &[String], never: &NeverReady) {
    for ns in namespaces {
        for name in api.names::<Deployment>(ns) {
            let Some(d) = api.get_raw::<Deployment>(ns, &name) else {
                continue;
            };
            let broken = deployment_image(&d).as_deref() == Some(NEW)
                && never
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .contains(&format!("{ns}/{name}"));
            let want = sim_status(&d, broken);
            let st = &d["status"];
            let same = [
                "observedGeneration",
                "replicas",
                "updatedReplicas",
                "readyReplicas",
                "availableReplicas",
            ]
            .iter()
            .all(|k| st[*k] == want[*k]);
            if same {
                continue;
            }
            // A merge patch of /status through the API (recorded, seen by watches); a 404 when the
            // Deployment went meanwhile is fine.
            request(
                api,
                Method::PATCH,
                &format!("/apis/apps/v1/namespaces/{ns}/deployments/{name}/status"),
                KCM,
                &json!({"status": want}),
            );
        }
    }
}

/// One request to the fake through its request path (so it is recorded, judged and seen by the
/// watches), as a client without identity using field manager `manager`; (code, body).
pub fn request(api: &FakeApi, method: Method, path: &str, manager: &str, body: &Value) -> (u16, Value) {
    let ct = if method == Method::PATCH {
        "application/merge-patch+json"
    } else {
        "application/json"
    };
    let body = if body.is_null() {
        Vec::new()
    } else {
        serde_json::to_vec(body).unwrap()
    };
    match api.handle(&method, path, Some(&format!("fieldManager={manager}")), ct, &body) {
        Some((code, out)) => (code, serde_json::from_slice(&out).unwrap_or(Value::Null)),
        None => (0, Value::Null),
    }
}

/// The fake API server on a thread, stopped when dropped.
struct Server {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Everything one scenario runs.
pub struct Cluster {
    pub api: FakeApi,
    pub server_url: String,
    /// Tenant namespaces, watched by the operators.
    pub namespaces: Vec<String>,
    pub checker: Arc<Checker>,
    pub never_ready: NeverReady,
    pub timing: Timing,
    pub procs: Vec<Operator>,
    /// Extra flags for every operator started from now on.
    pub extra_args: Vec<String>,
    /// `RUST_LOG` of every operator started from now on (default: `SYSTEM_RUST_LOG`, else
    /// `info,kube=warn`).
    pub rust_log: Option<String>,
    pub dir: PathBuf,
    next_id: usize,
    sim: Option<DeploymentSim>,
    _server: Server,
    pub t0: Instant,
    /// Printed with the logs when the scenario fails.
    pub notes: Vec<String>,
    /// One scenario at a time, whatever the test runner's thread count: they start processes and
    /// measure timings on two cores. Declared last, so it is released after everything above.
    _serial: std::sync::MutexGuard<'static, ()>,
}

/// Held by each running scenario (see [`Cluster::_serial`]).
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The fake's write record, as the checker reads it.
fn rec_of(w: &crate::common::fake_api::Write) -> Rec {
    Rec {
        seq: w.seq,
        identity: w.identity.clone().unwrap_or_default(),
        field_manager: w.field_manager.clone().unwrap_or_default(),
        method: w.method.to_string(),
        plural: w.plural.clone(),
        namespace: w.namespace.clone().unwrap_or_default(),
        name: w.name.clone(),
        subresource: w.subresource.clone().unwrap_or_default(),
        code: w.status,
        object: w.object.clone(),
    }
}

const LC_PATH: &str = "/apis/lumenore.io/v1alpha1/namespaces";

impl Cluster {
    /// A fake API server with `namespaces` for tenants and the operator's namespace, the checker
    /// hooked to it, and the Deployment controller running. No operator yet.
    pub fn new(namespaces: &[&str]) -> Cluster {
        Self::with_timing(namespaces, Timing::default())
    }

    pub fn with_timing(namespaces: &[&str], timing: Timing) -> Cluster {
        // A scenario that failed poisons the lock; the next one still runs.
        let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let api = FakeApi::new();
        let checker = Arc::new(Checker::new(CheckConfig {
            new_image: NEW.into(),
            lease_namespace: OPS.into(),
            lease_name: LEASE.into(),
            operator_prefix: OP_PREFIX.into(),
        }));
        {
            let checker = checker.clone();
            api.on_write(Arc::new(move |w, _api| checker.on_write(rec_of(w))));
        }
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let served = api.clone();
        let handle = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let l = tokio::net::TcpListener::from_std(listener).unwrap();
                tokio::select! {
                    _ = served.serve(l) => {}
                    _ = stop_rx => {}
                }
            });
            rt.shutdown_timeout(Duration::from_secs(1));
        });
        let dir =
            std::env::temp_dir().join(format!("lumenore-system-{}-{}", std::process::id(), free_port()));
        std::fs::create_dir_all(&dir).unwrap();
        let namespaces: Vec<String> = namespaces.iter().map(|s| s.to_string()).collect();
        let never_ready: NeverReady = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let sim = {
            let (api, namespaces, never, stop) =
                (api.clone(), namespaces.clone(), never_ready.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    sim_pass(&api, &namespaces, &never);
                    std::thread::sleep(Duration::from_millis(150));
                }
            })
        };
        Cluster {
            api,
            server_url: format!("http://127.0.0.1:{port}"),
            namespaces,
            checker,
            never_ready,
            timing,
            procs: Vec::new(),
            extra_args: Vec::new(),
            rust_log: None,
            dir,
            next_id: 1,
            sim: Some(DeploymentSim {
                stop,
                handle: Some(sim),
            }),
            _server: Server {
                stop: Some(stop_tx),
                handle: Some(handle),
            },
            t0: Instant::now(),
            _serial: serial,
            notes: Vec::new(),
        }
    }

    /// Seconds since the cluster started, for notes.
    pub fn clock(&self) -> String {
        format!("{:>6.2}s", self.t0.elapsed().as_secs_f64())
    }

    pub fn note(&mut self, msg: impl Into<String>) {
        let line = format!("[{}] {}", self.clock(), msg.into());
        eprintln!("{line}");
        self.notes.push(line);
    }

    fn kubeconfig(&self, identity: &str) -> PathBuf {
        let path = self.dir.join(format!("kubeconfig-{identity}"));
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {}\nusers:\n- name: u\n  user: {{token: {identity}}}\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: u\n    namespace: default\ncurrent-context: c\n",
                self.server_url
            ),
        )
        .unwrap();
        path
    }

    /// The flags every operator process gets.
    pub fn operator_args(&self, http: u16) -> Vec<String> {
        let t = self.timing;
        let mut a: Vec<String> = [
            "--http-addr",
            &format!("127.0.0.1:{http}"),
            "--log-format",
            "text",
            "--leader-election-namespace",
            OPS,
            "--rollout-namespace",
            OPS,
            "--watch-namespaces",
            &self.namespaces.join(","),
            "--connector-image",
            OLD,
            "--lease-duration-seconds",
            &t.lease.to_string(),
            "--renew-deadline-seconds",
            &t.renew.to_string(),
            "--retry-period-seconds",
            &t.retry.to_string(),
            "--shutdown-timeout-seconds",
            "2",
            "--api-timeout-seconds",
            "10",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for (flag, value) in [
            ("--watch-timeout-seconds", t.watch_timeout.to_string()),
            ("--rollout-poll-seconds", t.rollout_poll.to_string()),
            ("--field-manager", "lumenore-operator".to_string()),
        ] {
            if binary_has_flag(flag) {
                a.push(flag.into());
                a.push(value);
            }
        }
        a.extend(self.extra_args.iter().cloned());
        a
    }

    /// Start a new operator process (identity `op-N`); returns its identity.
    pub fn start(&mut self) -> String {
        let id = format!("{OP_PREFIX}{}", self.next_id);
        self.next_id += 1;
        let http = free_port();
        let kc = self.kubeconfig(&id);
        let log = self.dir.join(format!("{id}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let err = out.try_clone().unwrap();
        let child = Command::new(bin())
            .args(self.operator_args(http))
            .env("KUBECONFIG", &kc)
            .env("POD_NAME", &id)
            .env(
                "RUST_LOG",
                self.rust_log
                    .clone()
                    .or_else(|| std::env::var("SYSTEM_RUST_LOG").ok())
                    .unwrap_or_else(|| "info,kube=warn".into()),
            )
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env_remove("POD_NAMESPACE")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("start lumenore-operator");
        self.procs.push(Operator {
            id: id.clone(),
            child,
            http,
            log,
            started: Instant::now(),
        });
        self.note(format!("started {id}"));
        id
    }

    pub fn proc(&mut self, id: &str) -> Option<&mut Operator> {
        self.procs.iter_mut().find(|p| p.id == id)
    }

    /// SIGKILL process `id` (kept in `procs` for its log).
    pub fn kill(&mut self, id: &str) {
        if let Some(p) = self.proc(id) {
            p.kill();
        }
        self.note(format!("SIGKILL {id}"));
    }

    /// Identities of the processes still running.
    pub fn running(&mut self) -> Vec<String> {
        self.procs
            .iter_mut()
            .filter_map(|p| p.alive().then(|| p.id.clone()))
            .collect()
    }

    /// The Lease holder as stored (expired or not).
    pub fn holder(&self) -> Option<String> {
        self.api
            .get::<Lease>(OPS, LEASE)
            .and_then(|l| l.spec?.holder_identity)
            .filter(|h| !h.is_empty())
    }

    /// Wait for a holder among the running processes (other than `not`).
    pub fn wait_leader(&mut self, not: Option<&str>, timeout: Duration) -> String {
        let mut found = None;
        let t0 = Instant::now();
        while t0.elapsed() < timeout {
            if let Some(h) = self.holder()
                && Some(h.as_str()) != not
                && self.running().contains(&h)
            {
                found = Some(h);
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        found.unwrap_or_else(|| {
            panic!(
                "no running operator (other than {not:?}) holds the Lease within {timeout:?}; holder {:?}",
                self.holder()
            )
        })
    }

    /// Kill the leader with SIGKILL; returns its identity.
    pub fn kill_leader(&mut self) -> String {
        let leader = self.wait_leader(None, Duration::from_secs(30));
        self.kill(&leader);
        leader
    }

    /// A request over HTTP to the API server, as a client without a token.
    pub fn http(&self, method: &str, path: &str, body: &Value) -> (u16, String) {
        let port: u16 = self
            .server_url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("server port");
        http_send(port, method, path, body).unwrap_or((0, String::new()))
    }

    // ---- objects (through the fake's request path: recorded, judged, watched) ----

    fn must_ok(&self, what: &str, (code, body): (u16, Value)) -> Value {
        assert!(
            (200..300).contains(&code),
            "{what}: the fake answered {code}: {body}"
        );
        body
    }

    /// Create a tenant (as `kubectl create` would).
    pub fn create_tenant(&self, lc: &LumenoreConnector) {
        let ns = lc.metadata.namespace.clone().unwrap_or_default();
        let r = request(
            &self.api,
            Method::POST,
            &format!("{LC_PATH}/{ns}/lumenoreconnectors"),
            "kubectl-create",
            &serde_json::to_value(lc).unwrap(),
        );
        self.must_ok(
            &format!("create tenant {ns}/{}", lc.metadata.name.as_deref().unwrap_or("")),
            r,
        );
    }

    /// Store a tenant directly, bypassing the request path (admission, the write record).
    pub fn store_tenant(&self, lc: &LumenoreConnector) {
        self.api.put(lc);
    }

    /// `n` tenants `t-00..` in each namespace.
    pub fn add_tenants(&self, per_namespace: usize) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for ns in &self.namespaces {
            for i in 0..per_namespace {
                let name = format!("t-{i:02}");
                self.create_tenant(&tenant(ns, &name, &[], |_| {}));
                out.push((ns.clone(), name));
            }
        }
        out
    }

    /// Every tenant `(ns, name)` stored now.
    pub fn tenant_keys(&self) -> Vec<(String, String)> {
        self.namespaces
            .iter()
            .flat_map(|ns| {
                self.api
                    .names::<LumenoreConnector>(ns)
                    .into_iter()
                    .map(move |n| (ns.clone(), n))
            })
            .collect()
    }

    /// Merge-patch a tenant (as `kubectl patch --type merge` would).
    pub fn patch_tenant(&self, ns: &str, name: &str, patch: Value) {
        let r = request(
            &self.api,
            Method::PATCH,
            &format!("{LC_PATH}/{ns}/lumenoreconnectors/{name}"),
            "kubectl-patch",
            &patch,
        );
        self.must_ok(&format!("patch tenant {ns}/{name}"), r);
    }

    pub fn delete_tenant(&self, ns: &str, name: &str) {
        let r = request(
            &self.api,
            Method::DELETE,
            &format!("{LC_PATH}/{ns}/lumenoreconnectors/{name}"),
            "kubectl-delete",
            &Value::Null,
        );
        self.must_ok(&format!("delete tenant {ns}/{name}"), r);
    }

    /// Set a Deployment's spec.replicas as an HPA does.
    pub fn scale(&self, ns: &str, name: &str, replicas: i64) {
        let r = request(
            &self.api,
            Method::PATCH,
            &format!("/apis/apps/v1/namespaces/{ns}/deployments/{name}"),
            "horizontal-pod-autoscaler",
            &json!({"spec": {"replicas": replicas}}),
        );
        self.must_ok(&format!("scale {ns}/{name}"), r);
    }

    pub fn create_rollout(&self, name: &str, spec: Value) {
        let r = request(
            &self.api,
            Method::POST,
            &format!("{LC_PATH}/{OPS}/lumenorefleetrollouts"),
            "kubectl-create",
            &serde_json::to_value(rollout(name, spec)).unwrap(),
        );
        self.must_ok(&format!("create rollout {name}"), r);
    }

    pub fn delete_rollout(&self, name: &str) {
        let r = request(
            &self.api,
            Method::DELETE,
            &format!("{LC_PATH}/{OPS}/lumenorefleetrollouts/{name}"),
            "kubectl-delete",
            &Value::Null,
        );
        self.must_ok(&format!("delete rollout {name}"), r);
    }

    pub fn rollout(&self, name: &str) -> Option<LumenoreFleetRollout> {
        self.api.get::<LumenoreFleetRollout>(OPS, name)
    }

    /// (phase, currentWave, partition) of a rollout's status.
    pub fn progress(&self, name: &str) -> Option<(String, u32, String)> {
        let st = self.rollout(name)?.status?;
        Some((
            st.phase.map(|p| p.as_str().to_string()).unwrap_or_default(),
            st.current_wave.unwrap_or(0),
            st.partition.unwrap_or_default(),
        ))
    }

    pub fn phase(&self, name: &str) -> Option<String> {
        self.progress(name).map(|p| p.0)
    }

    pub fn image_of(&self, ns: &str, name: &str) -> Option<String> {
        self.api
            .get_raw::<Deployment>(ns, name)
            .and_then(|d| deployment_image(&d))
    }

    /// Tenants whose Deployment does not run `image` (`ns/name=image`).
    pub fn not_on(&self, image: &str) -> Vec<String> {
        self.tenant_keys()
            .into_iter()
            .filter_map(|(ns, n)| {
                let img = self.image_of(&ns, &n);
                (img.as_deref() != Some(image)).then(|| format!("{ns}/{n}={img:?}"))
            })
            .collect()
    }

    /// A one-line summary of a rollout's status for messages.
    pub fn describe(&self, name: &str) -> String {
        match self.rollout(name).and_then(|r| r.status) {
            None => format!("rollout {name}: no status"),
            Some(st) => format!(
                "rollout {name}: phase {:?} wave {:?}/{} partition {:?} fleet {:?} failed {:?} message {:?}",
                st.phase.map(|p| p.as_str()),
                st.current_wave,
                st.waves.len(),
                st.partition,
                st.fleet,
                st.failed_tenants
                    .iter()
                    .map(|f| format!("{} {}", f.tenant, f.reason))
                    .collect::<Vec<_>>(),
                st.conditions
                    .iter()
                    .find(|c| c.type_ == "Ready")
                    .map(|c| c.message.clone())
            ),
        }
    }

    /// Wait for phase Completed with every tenant on `NEW`; panics with the state otherwise.
    pub fn wait_completed(&self, name: &str, timeout: Duration) -> Duration {
        match wait_for(timeout, || {
            self.phase(name).as_deref() == Some("Completed") && self.not_on(NEW).is_empty()
        }) {
            Ok(d) => d,
            Err(d) => panic!(
                "rollout did not complete within {d:?}: {}; not on {NEW}: {:?}",
                self.describe(name),
                self.not_on(NEW)
            ),
        }
    }

    /// Wait until every tenant reports Ready on `image` (operator caught up).
    pub fn wait_tenants_ready(&self, image: &str, timeout: Duration) -> Duration {
        let pending = || -> Vec<String> {
            self.tenant_keys()
                .into_iter()
                .filter(|(ns, n)| {
                    let Some(lc) = self.api.get::<LumenoreConnector>(ns, n) else {
                        return false;
                    };
                    let st = lc.status.unwrap_or_default();
                    let ready = st
                        .conditions
                        .iter()
                        .any(|c| c.type_ == "Ready" && c.status == "True");
                    let on = st.connector.and_then(|c| c.image).as_deref() == Some(image);
                    !(ready && on)
                })
                .map(|(ns, n)| format!("{ns}/{n}"))
                .collect()
        };
        match wait_for(timeout, || pending().is_empty()) {
            Ok(d) => d,
            Err(d) => panic!("tenants not Ready on {image} after {d:?}: {:?}", pending()),
        }
    }

    // ---- end checks ----

    /// (f): the leader's /metrics count exactly the tenants that exist, and the rollout's status
    /// names no deleted tenant.
    pub fn check_no_ghosts(&mut self, rollout_name: Option<&str>) {
        let live: HashSet<String> = self
            .tenant_keys()
            .into_iter()
            .map(|(ns, n)| format!("{ns}/{n}"))
            .collect();
        let leader = self.holder();
        let metrics = leader
            .as_deref()
            .and_then(|l| self.procs.iter().find(|p| p.id == l))
            .and_then(Operator::metrics);
        match metrics {
            None => self
                .checker
                .violation(format!("(f) no /metrics from the leader {leader:?}")),
            Some(m) => {
                for (series, label) in [
                    ("lumenore_operator_connector_conditions", "condition=\"Ready\""),
                    ("lumenore_operator_connectors", "condition=\"Ready\""),
                ] {
                    let counted = sum_series(&m, series, label);
                    if counted != live.len() as i64 {
                        self.checker.violation(format!(
                            "(f) {series}{{{label}}} counts {counted} tenants, {} exist: deleted tenants are still counted",
                            live.len()
                        ));
                    }
                }
                for key in ghost_names(&m, &live, &self.namespaces) {
                    self.checker
                        .violation(format!("(f) /metrics names deleted tenant {key}"));
                }
            }
        }
        if let Some(name) = rollout_name
            && let Some(st) = self.rollout(name).and_then(|r| r.status)
        {
            for f in &st.failed_tenants {
                if !live.contains(&f.tenant) {
                    self.checker.violation(format!(
                        "(f) rollout {name} status lists deleted tenant {} as failed",
                        f.tenant
                    ));
                }
            }
            let f = &st.fleet;
            let counted = f.tenants + f.pinned + f.skipped + f.not_deployed;
            if counted as usize != live.len() {
                self.checker.violation(format!(
                    "(f) rollout {name} status counts {counted} tenants ({f:?}), {} exist",
                    live.len()
                ));
            }
        }
    }

    /// For scenarios whose fleet does not change: every rollout status the operator wrote counts all
    /// `tenants` (tenants + pinned + skipped + notDeployed). A smaller count is a decision made on a
    /// partial fleet (caches still filling, one namespace at a time), which can finish a wave early.
    pub fn check_whole_fleet_decisions(&self, tenants: usize) {
        for w in self.api.writes() {
            let status_write = w.plural == "lumenorefleetrollouts"
                && w.subresource.as_deref() == Some("status")
                && (200..300).contains(&w.status);
            let Some(fleet) = w
                .object
                .as_ref()
                .map(|o| &o["status"]["fleet"])
                .filter(|_| status_write)
            else {
                continue;
            };
            let counted: i64 = ["tenants", "pinned", "skipped", "notDeployed"]
                .iter()
                .map(|k| fleet[*k].as_i64().unwrap_or(0))
                .sum();
            if counted != tenants as i64 {
                self.checker.violation(format!(
                    "(g) decision on a partial fleet: write #{} by {:?} wrote a rollout status counting {counted} of {tenants} tenants (fleet {fleet}, currentWave {}, partition {})",
                    w.seq,
                    w.identity,
                    w.object.as_ref().map(|o| o["status"]["currentWave"].clone()).unwrap_or_default(),
                    w.object.as_ref().map(|o| o["status"]["partition"].clone()).unwrap_or_default(),
                ));
            }
        }
    }

    /// Assert no invariant was violated; prints them all otherwise.
    pub fn assert_invariants(&self) {
        let v = self.checker.violations();
        let from_operators: usize = self
            .procs
            .iter()
            .map(|p| self.checker.writes_by(&p.id).len())
            .sum();
        assert!(
            from_operators > 0,
            "no write by an operator identity was recorded ({} writes): (e) judged nothing",
            self.checker.writes_seen()
        );
        assert!(
            v.is_empty(),
            "{} invariant violation(s) over {} writes:\n  {}",
            v.len(),
            self.checker.writes_seen(),
            v.join("\n  ")
        );
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for p in &mut self.procs {
            p.kill();
        }
        self.sim.take();
        if std::thread::panicking() {
            eprintln!("---- scenario notes ----");
            for n in &self.notes {
                eprintln!("{n}");
            }
            let v = self.checker.violations();
            if !v.is_empty() {
                eprintln!("---- {} invariant violation(s) ----", v.len());
                for x in v.iter().take(40) {
                    eprintln!("  {x}");
                }
            }
            for p in &self.procs {
                eprintln!("---- log of {} (last 40 lines; {}) ----", p.id, p.log.display());
                eprintln!("{}", p.log_tail(40));
            }
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Sum of the samples of `series` whose labels contain `label`.
pub fn sum_series(metrics: &str, series: &str, label: &str) -> i64 {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(&format!("{series}{{")) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as i64)
        .sum()
}

/// `ns/name` of tenants named in any metric label that are not in `live`.
pub fn ghost_names(metrics: &str, live: &HashSet<String>, namespaces: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for l in metrics.lines().filter(|l| !l.starts_with('#')) {
        let Some(labels) = l
            .split_once('{')
            .and_then(|(_, r)| r.split_once('}'))
            .map(|(x, _)| x)
        else {
            continue;
        };
        let mut ns = None;
        let mut name = None;
        for kv in labels.split(',') {
            if let Some((k, v)) = kv.split_once('=') {
                let v = v.trim_matches('"');
                match k {
                    "namespace" => ns = Some(v.to_string()),
                    "name" | "tenant" | "object" => name = Some(v.to_string()),
                    _ => {}
                }
            }
        }
        let key = match (ns, name) {
            (Some(ns), Some(n)) => format!("{ns}/{n}"),
            (None, Some(n)) if n.contains('/') => n,
            _ => continue,
        };
        if namespaces.iter().any(|ns| key.starts_with(&format!("{ns}/"))) && !live.contains(&key) {
            out.push(key);
        }
    }
    out.sort();
    out.dedup();
    out
}

// ---- objects ----

/// A LumenoreConnector with the embedded backend (no Secret needed), one replica, `labels`;
/// `edit` changes its spec JSON.
pub fn tenant(
    ns: &str,
    name: &str,
    labels: &[(&str, &str)],
    edit: impl FnOnce(&mut Value),
) -> LumenoreConnector {
    let mut spec = json!({
        "tenant": name.replace('.', "-"),
        "region": {"cloud": "aws", "name": "eu-west-1"},
        "backend": "embedded",
        "replicas": 1,
    });
    edit(&mut spec);
    let labels: BTreeMap<&str, &str> = labels.iter().copied().collect();
    serde_json::from_value(json!({
        "apiVersion": "lumenore.io/v1alpha1",
        "kind": "LumenoreConnector",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": spec,
    }))
    .expect("valid LumenoreConnector")
}

/// A rollout in the operator's namespace.
pub fn rollout(name: &str, spec: Value) -> LumenoreFleetRollout {
    serde_json::from_value(json!({
        "apiVersion": "lumenore.io/v1alpha1",
        "kind": "LumenoreFleetRollout",
        "metadata": {"name": name, "namespace": OPS},
        "spec": spec,
    }))
    .expect("valid LumenoreFleetRollout")
}

/// canary 10% / half 50% / rest, to `NEW`.
pub fn three_waves(max_unavailable: u32, bake: u32, deadline: u32) -> Value {
    json!({
        "image": NEW,
        "maxUnavailable": max_unavailable,
        "bakeSeconds": bake,
        "readyDeadlineSeconds": deadline,
        "waves": [
            {"name": "canary", "percent": 10},
            {"name": "half", "percent": 50},
            {"name": "rest"}
        ]
    })
}

/// Wave index of each `(ns, name)` under `spec`'s waves (no labels).
pub fn waves_of(spec: &Value, tenants: &[(String, String)]) -> Vec<usize> {
    let spec: lumenore_operator::rollout::LumenoreFleetRolloutSpec =
        serde_json::from_value(spec.clone()).unwrap();
    let plan = plan::Plan::compile(&spec.waves).unwrap();
    let empty = BTreeMap::new();
    tenants
        .iter()
        .map(|(ns, n)| {
            plan.wave_of(&plan::TenantId {
                namespace: ns,
                name: n,
                labels: &empty,
            })
            .expect("every tenant has a wave")
        })
        .collect()
}
