//! The real `lumenore-connector` binary as a child process.
//!
//! The binary is built once per test process with `cargo build -p lumenore-connector` into the same target
//! directory and profile as the running test (so `CARGO_TARGET_DIR=/work/target-e2e cargo test -p
//! lumenore-e2e` tests the debug binary of that directory), unless `LUMENORE_CONNECTOR_BIN` names a binary
//! to test instead (e.g. a release build for measurements).

use std::{
    io::{BufRead, BufReader, Read},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex, OnceLock},
    time::{Duration, Instant},
};

use crate::{free_port, http_client, repo_root};

/// The connector's `/readyz` reason while its backend loads (`http::starting::STARTING` in the connector;
/// `e2e/tests/faults.rs` checks that the two agree).
pub const STARTING: &str = "starting: loading the backend";

/// Overrides the binary under test.
pub const BIN_ENV: &str = "LUMENORE_CONNECTOR_BIN";

/// Path of the connector binary, building it first when needed (once per process).
pub fn connector_binary() -> PathBuf {
    static BINARY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BINARY
        .get_or_init(locate_or_build)
        .clone()
        .unwrap_or_else(|error| panic!("cannot get the connector binary: {error}"))
}

fn locate_or_build() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os(BIN_ENV) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!("{BIN_ENV}={} is not a file", path.display()))
        };
    }
    // The test executable is <target>/<profile>/deps/<name>-<hash>: build the connector beside it.
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or("unexpected test executable location")?
        .to_path_buf();
    let target_dir = profile_dir.parent().ok_or("no target dir")?.to_path_buf();
    let release = profile_dir.file_name().is_some_and(|name| name == "release");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(repo_root())
        .args([
            "build",
            "--quiet",
            "-p",
            "lumenore-connector",
            "--bin",
            "lumenore-connector",
        ])
        .arg("--target-dir")
        .arg(&target_dir);
    if release {
        command.arg("--release");
    }
    let started = Instant::now();
    let status = command
        .status()
        .map_err(|e| format!("cannot run cargo build: {e}"))?;
    if !status.success() {
        return Err(format!("cargo build -p lumenore-connector failed: {status}"));
    }
    let binary = profile_dir.join("lumenore-connector");
    eprintln!(
        "[e2e] connector binary: {} (cargo build took {:.1}s)",
        binary.display(),
        started.elapsed().as_secs_f64()
    );
    if binary.is_file() {
        Ok(binary)
    } else {
        Err(format!("{} missing after the build", binary.display()))
    }
}

/// What to start: backend, environment and extra flags. The child gets a clean environment (only `PATH`
/// and what is set here) and runs in an empty directory, so no stray `.env` or `LUMENORE_*` variable of
/// the test machine changes what is tested.
#[derive(Clone, Debug)]
pub struct ConnectorSpec {
    pub env: Vec<(String, String)>,
    pub args: Vec<String>,
}

impl ConnectorSpec {
    /// The embedded backend with the bundled demo catalog (no credentials).
    pub fn embedded() -> Self {
        Self {
            env: vec![("LUMENORE_BACKEND".into(), "embedded".into())],
            args: Vec::new(),
        }
    }

    /// The Lumenore backend at `server_url`, with client credentials.
    pub fn lumenore(server_url: &str, client_id: &str, secret: &str) -> Self {
        Self {
            env: vec![
                ("LUMENORE_BACKEND".into(), "lumenore".into()),
                ("SERVER_URL".into(), server_url.into()),
                ("LUMENORE_CLIENT_ID".into(), client_id.into()),
                ("LUMENORE_SECRET".into(), secret.into()),
            ],
            args: Vec::new(),
        }
    }

    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.retain(|(n, _)| n != name);
        self.env.push((name.into(), value.into()));
        self
    }

    pub fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.into());
        self
    }
}

/// What a stopped connector left behind.
#[derive(Debug)]
pub struct ExitReport {
    pub status: ExitStatus,
    /// Standard error and standard output, interleaved by line.
    pub logs: String,
}

/// A running connector process. Dropping it kills the process (SIGKILL) if it still runs.
pub struct Connector {
    child: Child,
    pub pid: u32,
    pub port: u16,
    /// `http://127.0.0.1:PORT`
    pub base: String,
    /// `http://127.0.0.1:PORT/mcp`
    pub mcp: String,
    pub spawned_at: Instant,
    logs: Arc<Mutex<String>>,
    exited: Option<ExitStatus>,
}

impl Connector {
    /// Starts the binary on a free port and waits until it has started (up to 60 s): see [`Self::wait_started`].
    pub async fn start(spec: ConnectorSpec) -> Connector {
        let binary = connector_binary();
        let mut last_logs = String::new();
        for _ in 0..3 {
            let mut connector = Self::spawn_on(&binary, &spec, free_port());
            match connector.wait_started(Duration::from_secs(60)).await {
                Ok(_) => return connector,
                Err(error) => {
                    // Most likely the port was taken between picking and binding it: try another one.
                    last_logs = format!("{error}\n{}", connector.logs());
                    connector.kill();
                }
            }
        }
        panic!("the connector did not become healthy:\n{last_logs}");
    }

    /// Starts the binary on a free port without waiting for anything.
    pub fn spawn(spec: ConnectorSpec) -> Connector {
        Self::spawn_on(&connector_binary(), &spec, free_port())
    }

    fn spawn_on(binary: &Path, spec: &ConnectorSpec, port: u16) -> Connector {
        let cwd = std::env::temp_dir().join("lumenore-e2e-empty-cwd");
        std::fs::create_dir_all(&cwd).expect("scratch directory");
        let mut command = Command::new(binary);
        command
            .current_dir(&cwd)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("RUST_LOG", "info")
            .env("LUMENORE_LISTEN", format!("127.0.0.1:{port}"))
            .envs(spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .args(&spec.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let spawned_at = Instant::now();
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let logs = Arc::new(Mutex::new(String::new()));
        if let Some(stderr) = child.stderr.take() {
            collect_lines(stderr, logs.clone());
        }
        if let Some(stdout) = child.stdout.take() {
            collect_lines(stdout, logs.clone());
        }
        Connector {
            pid: child.id(),
            child,
            port,
            base: format!("http://127.0.0.1:{port}"),
            mcp: format!("http://127.0.0.1:{port}/mcp"),
            spawned_at,
            logs,
            exited: None,
        }
    }

    /// The text of `GET /metrics` (panics when the connector does not answer within 5 s).
    pub async fn metrics(&self) -> String {
        crate::http_client(Duration::from_secs(5))
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics text")
    }

    /// Everything the process wrote so far.
    pub fn logs(&self) -> String {
        self.logs.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// `None` while running; the exit status once it exited.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().ok().flatten();
        }
        self.exited
    }

    /// Polls `path` until `done(status, body)`; returns the time since the process was spawned.
    async fn poll(
        &mut self,
        path: &str,
        timeout: Duration,
        done: impl Fn(reqwest::StatusCode, &str) -> bool,
    ) -> Result<Duration, String> {
        let client = http_client(Duration::from_secs(2));
        let url = format!("{}{path}", self.base);
        let deadline = Instant::now() + timeout;
        let mut last = String::from("no answer yet");
        while Instant::now() < deadline {
            if let Some(status) = self.try_exit() {
                return Err(format!("the connector exited early with {status}"));
            }
            match client.get(&url).send().await {
                Ok(response) => {
                    let status = response.status();
                    let body = response.text().await.unwrap_or_default();
                    if done(status, &body) {
                        return Ok(self.spawned_at.elapsed());
                    }
                    last = format!("{status} {body}");
                }
                Err(error) => last = error.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Err(format!(
            "{path} not as awaited within {timeout:?}; last answer: {last}"
        ))
    }

    /// Polls `path` until it answers 200.
    async fn wait_for(&mut self, path: &str, timeout: Duration) -> Result<Duration, String> {
        self.poll(path, timeout, |status, _| status.is_success()).await
    }

    pub async fn wait_healthy(&mut self, timeout: Duration) -> Result<Duration, String> {
        self.wait_for("/healthz", timeout).await
    }

    /// Waits until the backend is loaded: the port opens at once and answers `/readyz` with the reason
    /// "starting" until then; afterwards `/readyz` is 200, or 503 for another reason (a backend that is
    /// unreachable on purpose), and `/mcp` serves.
    pub async fn wait_started(&mut self, timeout: Duration) -> Result<Duration, String> {
        self.poll("/readyz", timeout, |status, body| {
            status.is_success() || !body.contains(STARTING)
        })
        .await
    }

    pub async fn wait_ready(&mut self, timeout: Duration) -> Result<Duration, String> {
        self.wait_for("/readyz", timeout).await
    }

    /// The HTTP status of `/readyz` now.
    pub async fn readyz(&self) -> u16 {
        http_client(Duration::from_secs(5))
            .get(format!("{}/readyz", self.base))
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    }

    /// Resident memory in KiB.
    pub fn rss_kib(&self) -> Option<u64> {
        crate::rss_kib(self.pid)
    }

    /// Sends SIGTERM (through `kill(1)`: the workspace forbids `unsafe`, so no direct libc call).
    pub fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()
            .expect("kill(1)");
        assert!(status.success(), "kill -TERM {} failed", self.pid);
    }

    /// Waits for the process to exit (polling; bounded by `timeout`).
    pub async fn wait_exit(&mut self, timeout: Duration) -> Result<ExitReport, String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_exit() {
                // Let the reader threads drain the pipes.
                tokio::time::sleep(Duration::from_millis(50)).await;
                return Ok(ExitReport {
                    status,
                    logs: self.logs(),
                });
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "still running {timeout:?} after the request to stop; logs:\n{}",
                    self.logs()
                ));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// SIGTERM, then waits up to `timeout` for the exit.
    pub async fn stop(mut self, timeout: Duration) -> ExitReport {
        self.sigterm();
        match self.wait_exit(timeout).await {
            Ok(report) => report,
            Err(error) => panic!("{error}"),
        }
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if self.try_exit().is_none() {
            let _ = self.child.kill();
            self.exited = self.child.wait().ok();
        }
    }
}

impl Drop for Connector {
    fn drop(&mut self) {
        self.kill();
    }
}

fn collect_lines(pipe: impl Read + Send + 'static, logs: Arc<Mutex<String>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if let Ok(mut logs) = logs.lock() {
                logs.push_str(&line);
                logs.push('\n');
            }
        }
    });
}
