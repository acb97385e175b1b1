//! The real binary while its backend loads, made deterministic: the catalog's data file is a named pipe, so
//! loading blocks until the test writes the data (or forever). No timing assumption about how long the
//! demo catalog takes to load on a slow machine.
#![cfg(unix)]

use std::{
    io::{BufRead, BufReader, Write},
    path::Path,
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde_json::{Value, json};

const STARTING: &str = lumenore_connector::http::starting::STARTING;

const CATALOG: &str = r#"
datasets:
  - id: 7
    name: Shop
    description: A tiny shop.
    file: shop.csv
    columns:
      - {name: day, role: time, date_format: "%d/%m/%Y"}
      - {name: store, role: dimension}
      - {name: amount, role: measure, unit: EUR}
"#;

const CSV: &str = "day,store,amount\n01/02/2025,Main Street,10.5\n02/02/2025,Harbour,4\n";

/// A catalog directory whose data file is a named pipe: loading it blocks until [`feed`].
fn stalled_catalog() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("catalog.yaml"), CATALOG).unwrap();
    let status = Command::new("mkfifo")
        .arg(dir.path().join("shop.csv"))
        .status()
        .expect("mkfifo");
    assert!(status.success(), "mkfifo failed");
    dir
}

/// Writes the data into the pipe, which lets the connector finish loading.
fn feed(catalog: &Path) -> std::thread::JoinHandle<()> {
    let pipe = catalog.join("shop.csv");
    std::thread::spawn(move || {
        let mut writer = std::fs::OpenOptions::new().write(true).open(pipe).unwrap();
        writer.write_all(CSV.as_bytes()).unwrap();
    })
}

struct Connector {
    child: Child,
    base: String,
    logs: Arc<Mutex<String>>,
}

impl Connector {
    fn spawn(catalog: &Path) -> Connector {
        lumenore_connector::app::install_crypto_provider(); // for the test's reqwest clients
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut child = Command::new(env!("CARGO_BIN_EXE_lumenore-connector"))
            .current_dir(catalog)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("RUST_LOG", "info")
            .env("LUMENORE_LISTEN", format!("127.0.0.1:{port}"))
            .env("LUMENORE_BACKEND", "embedded")
            .env("LUMENORE_CATALOG", catalog)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let logs = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut logs = sink.lock().unwrap();
                logs.push_str(&line);
                logs.push('\n');
            }
        });
        Connector {
            child,
            base: format!("http://127.0.0.1:{port}"),
            logs,
        }
    }

    fn logs(&self) -> String {
        self.logs.lock().unwrap().clone()
    }

    /// Polls `/readyz` until its answer satisfies `done` (60 s at most; the process must stay up).
    async fn wait_readyz(&mut self, what: &str, done: impl Fn(u16, &str) -> bool) -> (u16, String) {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut last = String::from("no answer yet");
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("the connector exited with {status}:\n{}", self.logs());
            }
            match client.get(format!("{}/readyz", self.base)).send().await {
                Ok(response) => {
                    let status = response.status().as_u16();
                    let body = response.text().await.unwrap_or_default();
                    if done(status, &body) {
                        return (status, body);
                    }
                    last = format!("{status} {body}");
                }
                Err(error) => last = error.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("waiting for {what}: last /readyz answer {last}\n{}", self.logs());
    }

    fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// The exit status, or `None` if the process is still running after `timeout`.
    async fn exit_within(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }
}

impl Drop for Connector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn mcp_call(id: u64) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": {"name": "get_dataset_metadata", "arguments": {}}})
}

async fn post_mcp(client: &reqwest::Client, base: &str, id: u64) -> reqwest::Response {
    client
        .post(format!("{base}/mcp"))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .json(&mcp_call(id))
        .send()
        .await
        .expect("an answer from /mcp")
}

fn starting(status: u16, body: &str) -> bool {
    status == 503 && body.contains(STARTING)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_the_backend_loads_stops_the_process_without_waiting_for_the_load() {
    let catalog = stalled_catalog();
    let mut connector = Connector::spawn(catalog.path());
    connector.wait_readyz("the start-up router", starting).await;
    connector.terminate();
    // The load never finishes (nobody writes the pipe): only a process that does not wait for it exits.
    let status = connector.exit_within(Duration::from_secs(30)).await;
    let logs = connector.logs();
    assert_eq!(status.and_then(|status| status.code()), Some(0), "{logs}");
    assert!(logs.contains("stopped while the backend was loading"), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_answers_then_the_same_clients_are_served_over_http1_and_http2() {
    let catalog = stalled_catalog();
    let mut connector = Connector::spawn(catalog.path());
    connector.wait_readyz("the start-up router", starting).await;
    let http1 = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .http1_only()
        .build()
        .unwrap();
    let http2 = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .http2_prior_knowledge()
        .build()
        .unwrap();

    // While loading (the pipe is not written yet, so these are start-up answers for certain).
    let healthz = http1
        .get(format!("{}/healthz", connector.base))
        .send()
        .await
        .unwrap();
    assert_eq!(healthz.status(), 200);
    for (client, version) in [(&http1, "HTTP/1.1"), (&http2, "HTTP/2")] {
        let response = post_mcp(client, &connector.base, 1).await;
        let status = response.status().as_u16();
        let retry_after = response.headers().get("retry-after").cloned();
        let connection = response.headers().get("connection").cloned();
        let body: Value = response.json().await.unwrap();
        assert_eq!(status, 503, "{version}: {body}");
        assert_eq!(retry_after.unwrap(), "1", "{version}");
        assert_eq!(body["error"]["code"], -32000, "{version}: {body}");
        if version == "HTTP/1.1" {
            assert_eq!(connection.unwrap(), "close");
        } else {
            assert!(connection.is_none(), "HTTP/2 forbids Connection");
        }
    }

    feed(catalog.path()).join().unwrap();
    connector
        .wait_readyz("the backend to load", |status, body| !starting(status, body))
        .await;

    // The same clients (the HTTP/2 one had a connection to the start-up router) are now served.
    for (id, client) in [(2, &http1), (3, &http2)] {
        let response = post_mcp(client, &connector.base, id).await;
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap();
        assert_eq!(status, 200, "{body}\n{}", connector.logs());
        assert_eq!(body["result"]["isError"], false, "{body}");
    }

    connector.terminate();
    let status = connector.exit_within(Duration::from_secs(30)).await;
    assert_eq!(
        status.and_then(|status| status.code()),
        Some(0),
        "{}",
        connector.logs()
    );
}

/// A connection opened while the backend loads, whose request comes after the switch, is answered by the
/// application (one accept loop throughout: nothing is closed or handed over when loading ends).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_opened_while_loading_is_served_after_the_switch() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let catalog = stalled_catalog();
    let mut connector = Connector::spawn(catalog.path());
    connector.wait_readyz("the start-up router", starting).await;
    let address = connector.base.trim_start_matches("http://").to_string();
    // Opened during loading, silent until the backend is loaded (well inside the 10 s header timeout).
    let mut early = tokio::net::TcpStream::connect(&address).await.unwrap();

    feed(catalog.path()).join().unwrap();
    connector
        .wait_readyz("the backend to load", |status, body| !starting(status, body))
        .await;

    let body = serde_json::to_vec(&mcp_call(4)).unwrap();
    let head = format!(
        "POST /mcp HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n\
         accept: application/json, text/event-stream\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    early.write_all(head.as_bytes()).await.unwrap();
    early.write_all(&body).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), early.read_to_end(&mut answer))
        .await
        .expect("an answer within 20 s")
        .expect("the connection stays readable");
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "the early connection got: {answer:?}\n{}",
        connector.logs()
    );
    assert!(answer.contains(r#""isError":false"#), "{answer}");
}
