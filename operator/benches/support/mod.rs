//! What the operator benchmarks share (`mod support;` in `benches/reconcile.rs` and
//! `benches/rollout.rs`): the operator binary's allocator, the process layout, the cache fill and the
//! CPU and memory readers.
//!
//! Process layout: the bench binary runs as three roles. Without a role it is the driver: per size
//! it starts the in-memory API server (`tests/common/fake_api.rs`) as a child process behind a
//! loopback HTTP listener (`--fake-server`, prints its port, exits when its stdin closes) and a fresh
//! operator-side process (`--one N PORT`), and prints what the latter prints. So neither the API
//! server's CPU time nor the memory of the objects it stores is counted, and memory figures do not
//! carry over from one size to the next.
#![allow(dead_code)]

#[path = "../../tests/common/fake_api.rs"]
pub mod fake_api;

use std::future::Future;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use kube::api::Api;
use kube::runtime::{reflector, watcher};
use lumenore_operator::controller::{connector_watch_config, strip_unused_metadata};
use lumenore_operator::reconcile::Guarded;

use fake_api::FakeApi;

/// The operator binary's allocator (src/main.rs): the memory figures are those of the binary.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// One benchmark: how it is named and run, and its two child roles.
pub struct Bench {
    /// First line of the output, after `# `.
    pub title: &'static str,
    /// The command that runs it (printed with the arguments given).
    pub command: &'static str,
    /// Sizes when none are given (`-- 1000,10000`).
    pub default_sizes: &'static [usize],
    /// The HTTP application the API server child serves (the fake, maybe with routes of its own).
    pub app: fn(FakeApi) -> axum::Router,
    /// The operator side for N objects against the API server on this loopback port.
    pub one: fn(usize, u16),
}

/// The bench's `main`: the role its arguments name, else the driver.
pub fn run(bench: Bench) {
    // `cargo bench` passes `--bench`; it is not ours.
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    if args.first().map(String::as_str) == Some("--fake-server") {
        return fake_server(bench.app);
    }
    if args.first().map(String::as_str) == Some("--one") {
        let n: usize = args.get(1).and_then(|s| s.parse().ok()).expect("--one N");
        let port: u16 = args.get(2).and_then(|s| s.parse().ok()).expect("--one N PORT");
        return (bench.one)(n, port);
    }
    let sizes: Vec<usize> = args
        .iter()
        .find(|a| !a.starts_with('-'))
        .map(|s| s.split(',').filter_map(|x| x.parse().ok()).collect())
        .unwrap_or_else(|| bench.default_sizes.to_vec());
    let exe = std::env::current_exe().expect("own path");
    println!("# {}", bench.title);
    println!(
        "# command: {}{}",
        bench.command,
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

/// Child process: the in-memory API server on a loopback port (printed on stdout); exits when stdin
/// closes.
fn fake_server(app: fn(FakeApi) -> axum::Router) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let app = app(FakeApi::quiet());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        println!("{}", listener.local_addr().unwrap().port());
        std::io::stdout().flush().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.expect("serve the fake API") });
        // Exit when the parent closes stdin.
        tokio::task::spawn_blocking(|| {
            let mut s = String::new();
            let _ = std::io::stdin().read_line(&mut s);
        })
        .await
        .unwrap();
    });
}

/// The operator side's runtime: one thread (current-thread runtime), the TLS crypto provider the
/// binary installs; waiting on the API does not consume CPU.
pub fn operator_side<F: Future>(f: F) -> F::Output {
    let _ = rustls::crypto::ring::default_provider().install_default();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// A kube client for the API server child on this loopback port.
pub fn client(port: u16) -> kube::Client {
    let config = kube::Config::new(format!("http://127.0.0.1:{port}").parse().unwrap());
    kube::Client::try_from(config).expect("client")
}

/// Fill (or re-fill) a LumenoreConnector reflector store as the controller's watcher does: kube's
/// watcher with the operator's watch configuration, events until `InitDone`, `strip_unused_metadata`
/// on each object as it arrives. The configuration's any-semantic LIST (`resourceVersion=0`) is
/// answered from the API server's watch cache, which ignores the page size: one response with every
/// object, as the fake answers it. A re-fill is the reflector's re-list: the new object set replaces
/// the old one at `InitDone`. (The in-memory API server has no watch; the watch that would follow is
/// not needed here.)
pub async fn fill_cache(api: &Api<Guarded>, writer: &mut reflector::store::Writer<Guarded>) {
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

/// utime + stime of this process, in seconds (from /proc/self/stat).
pub fn process_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields after the command: state(0) ... utime(11) stime(12), in clock ticks (100 Hz on Linux).
    let ticks = |i: usize| f.get(i).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// (VmRSS, VmHWM) in MiB.
pub fn rss_mib() -> (f64, f64) {
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
pub struct Memory(Vec<(String, f64, f64)>);

impl Memory {
    pub fn mark(&mut self, phase: &str) {
        let (rss, hwm) = rss_mib();
        self.0.push((phase.to_string(), rss, hwm));
    }

    pub fn print(&self) {
        for (phase, rss, hwm) in &self.0 {
            println!("         RSS {rss:6.1} MiB, peak {hwm:6.1} MiB  {phase}");
        }
    }
}
