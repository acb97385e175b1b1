//! The running whole of a fleet-rollout analysis (issue 22): a real Prometheus server (Debian's
//! `prometheus`, behind basic auth) scraping real `lumenore-connector` processes with the `namespace`
//! and `tenant` labels the chart's PodMonitor gives; the connectors talk to stand-in Lumenore
//! backends; a kubelet thread restarts a tenant's process whenever its Deployment's image changes, on
//! the backend that image stands for (the version under test may fail a share of calls or answer
//! slowly); traffic threads send tool calls through them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use lumenore_e2e::fake_backend::{FakeConfig, FakeLumenore};
use serde_json::Value;

use super::checker::deployment_image;
use super::cluster::{NEW, free_port, http_get_as, must};
use super::connectors::tool_call;
use crate::common::fake_api::FakeApi;

pub const PROM_USER: &str = "analysis";
pub const PROM_PASSWORD: &str = "analysis-secret";
/// bcrypt (cost 4) of [`PROM_PASSWORD`], for Prometheus' web config (made once with Python's `crypt`).
const PROM_HASH: &str = "$2b$04$4BxMD2J3q/QsAtAoQgydd.efgmQXU1ceG0EvXBJOEQ8/DWg33KH1G";

/// A tenant as Prometheus scrapes it.
#[derive(Clone, Debug)]
pub struct Target {
    pub namespace: String,
    pub name: String,
    /// `spec.tenant` (the `tenant` label).
    pub tenant: String,
    pub port: u16,
    /// Traffic is sent through it.
    pub traffic: bool,
}

/// A Prometheus server process; killed on drop.
pub struct Prometheus {
    child: Option<Child>,
    pub port: u16,
    pub dir: PathBuf,
}

fn basic_auth() -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(format!("{PROM_USER}:{PROM_PASSWORD}"))
}

/// GET `path` with basic auth: (status, body).
fn get(port: u16, path: &str) -> Option<(u16, String)> {
    http_get_as(port, path, Some(&format!("Basic {}", basic_auth())))
}

impl Prometheus {
    /// Starts Prometheus scraping `targets` every second, behind basic auth; waits until it is
    /// ready.
    pub fn start(dir: &Path, targets: &[Target]) -> Prometheus {
        std::fs::create_dir_all(dir).unwrap();
        let mut cfg = String::from(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\nscrape_configs:\n- job_name: connectors\n  static_configs:\n",
        );
        for t in targets {
            cfg.push_str(&format!(
                "  - targets: ['127.0.0.1:{}']\n    labels: {{namespace: '{}', tenant: '{}', pod: '{}-0'}}\n",
                t.port, t.namespace, t.tenant, t.name
            ));
        }
        let config = dir.join("prometheus.yml");
        std::fs::write(&config, cfg).unwrap();
        let web = dir.join("web.yml");
        std::fs::write(&web, format!("basic_auth_users:\n  {PROM_USER}: '{PROM_HASH}'\n")).unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--web.config.file={}", web.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("prometheus (Debian package `prometheus`; .ci/install-tools.sh installs it)");
        let p = Prometheus {
            child: Some(child),
            port,
            dir: dir.to_path_buf(),
        };
        must("Prometheus ready", Duration::from_secs(60), || {
            get(port, "/-/ready").is_some_and(|(c, _)| c == 200)
        });
        p
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// An instant query's result array.
    pub fn query(&self, q: &str) -> Option<Vec<Value>> {
        let path = format!(
            "/api/v1/query?{}",
            url::form_urlencoded::Serializer::new(String::new())
                .append_pair("query", q)
                .finish()
        );
        let (code, body) = get(self.port, &path)?;
        let v: Value = serde_json::from_str(&body).ok()?;
        (code == 200)
            .then(|| v["data"]["result"].as_array().cloned())
            .flatten()
    }

    /// Kill it (a crash: the query API is gone).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The stand-in backends: `old` for the previous image, `new` for the version under test.
pub struct Backends {
    pub rt: tokio::runtime::Runtime,
    pub old: FakeLumenore,
    pub new: FakeLumenore,
}

impl Backends {
    pub fn start(new: impl FnOnce(&mut FakeConfig)) -> Backends {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let mut cfg = FakeConfig::default();
        new(&mut cfg);
        let (old, new) = rt.block_on(async {
            (
                FakeLumenore::start(FakeConfig::default()).await,
                FakeLumenore::start(cfg).await,
            )
        });
        Backends { rt, old, new }
    }
}

fn spawn_connector(binary: &Path, port: u16, backend: &str) -> Child {
    let cfg = FakeConfig::default();
    Command::new(binary)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("LUMENORE_BACKEND", "lumenore")
        .env("SERVER_URL", backend)
        .env("LUMENORE_CLIENT_ID", &cfg.client_id)
        .env("LUMENORE_SECRET", &cfg.secret)
        .env("LUMENORE_LISTEN", format!("127.0.0.1:{port}"))
        .env("LUMENORE_REQUEST_TIMEOUT", "5s")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("lumenore-connector")
}

/// The tenants' connector processes, the kubelet thread and the traffic threads; all stopped on drop.
pub struct Tenants {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
    procs: Arc<Mutex<BTreeMap<u16, Child>>>,
    /// Processes started on the version under test.
    pub started_new: Arc<AtomicU64>,
    /// Tool calls sent, and those answered 200.
    pub calls: Arc<AtomicU64>,
    pub answered: Arc<AtomicU64>,
}

impl Tenants {
    pub fn start(api: FakeApi, binary: PathBuf, targets: &[Target], backends: &Backends) -> Tenants {
        let stop = Arc::new(AtomicBool::new(false));
        let procs: Arc<Mutex<BTreeMap<u16, Child>>> = Arc::default();
        let started_new = Arc::new(AtomicU64::new(0));
        let (old_url, new_url) = (backends.old.url(), backends.new.url());
        for t in targets {
            let child = spawn_connector(&binary, t.port, &old_url);
            procs.lock().unwrap().insert(t.port, child);
        }
        for t in targets {
            must("a connector answering", Duration::from_secs(60), || {
                tool_call(t.port).is_some()
            });
        }
        let mut threads = Vec::new();
        // The kubelet: a Deployment's new image is a new process, on the backend of that image.
        {
            let (stop, procs, started_new, targets) =
                (stop.clone(), procs.clone(), started_new.clone(), targets.to_vec());
            threads.push(std::thread::spawn(move || {
                let mut running: BTreeMap<u16, String> = BTreeMap::new();
                while !stop.load(Ordering::Relaxed) {
                    for t in &targets {
                        let Some(image) = api
                            .get_raw::<Deployment>(&t.namespace, &t.name)
                            .and_then(|d| deployment_image(&d))
                        else {
                            continue;
                        };
                        let was = running.insert(t.port, image.clone());
                        if was.is_none() || was.as_deref() == Some(image.as_str()) {
                            continue;
                        }
                        let backend = if image == NEW { &new_url } else { &old_url };
                        let mut procs = procs.lock().unwrap();
                        if let Some(mut old) = procs.remove(&t.port) {
                            let _ = old.kill();
                            let _ = old.wait();
                        }
                        procs.insert(t.port, spawn_connector(&binary, t.port, backend));
                        if image == NEW {
                            started_new.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }));
        }
        let calls = Arc::new(AtomicU64::new(0));
        let answered = Arc::new(AtomicU64::new(0));
        for t in targets.iter().filter(|t| t.traffic) {
            let (stop, port, calls, answered) = (stop.clone(), t.port, calls.clone(), answered.clone());
            threads.push(std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    calls.fetch_add(1, Ordering::Relaxed);
                    if tool_call(port) == Some(200) {
                        answered.fetch_add(1, Ordering::Relaxed);
                    } else {
                        // Restarting: do not spin.
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    std::thread::sleep(Duration::from_millis(25));
                }
            }));
        }
        Tenants {
            stop,
            threads,
            procs,
            started_new,
            calls,
            answered,
        }
    }
}

impl Drop for Tenants {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        for (_, mut c) in std::mem::take(&mut *self.procs.lock().unwrap()) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
