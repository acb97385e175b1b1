//! Test harness: starts the connector in-process on a free loopback port, and speaks JSON-RPC to it.
#![allow(dead_code)]

pub mod canary;

use std::time::Duration;

use lumenore_connector::{
    app,
    backend::{Backend, lumenore::Credentials},
    config::Config,
    metrics::Metrics,
};
use secrecy::SecretString;
use serde_json::{Value, json};
use tokio::sync::oneshot;

pub struct TestServer {
    pub base: String,
    pub mcp: String,
    pub metrics: Metrics,
    stop: Option<oneshot::Sender<()>>,
    pub handle: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl TestServer {
    /// Triggers the graceful shutdown and waits for the server to return.
    pub async fn stop(mut self) -> std::io::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.handle.await.expect("server task")
    }

    pub fn trigger_stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

pub fn config_for(server_url: &str) -> Config {
    let mut config = Config::defaults();
    config.server_url = server_url.parse().unwrap();
    config.connect_timeout = Duration::from_secs(2);
    config.request_timeout = Duration::from_secs(5);
    config
}

pub fn client_credentials(id: &str, secret: &str) -> Credentials {
    Credentials::ClientCredentials {
        client_id: SecretString::from(id),
        secret: SecretString::from(secret),
    }
}

pub async fn start(config: Config, credentials: Credentials, readiness_loop: bool) -> TestServer {
    app::install_crypto_provider();
    let metrics = Metrics::new();
    let backend = app::build_backend(&config, credentials, &metrics).expect("backend");
    start_with_backend(config, backend, metrics, readiness_loop).await
}

pub async fn start_with_backend(
    config: Config,
    backend: Backend,
    metrics: Metrics,
    readiness_loop: bool,
) -> TestServer {
    let app = app::build(&config, backend, metrics.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    if readiness_loop {
        app::spawn_readiness_loop(&app, Duration::from_millis(200));
    }
    let (stop, stopped) = oneshot::channel::<()>();
    let grace = config.shutdown_grace;
    let handle = tokio::spawn(app::serve(app, listener, grace, async move {
        let _ = stopped.await;
    }));
    TestServer {
        base: format!("http://{address}"),
        mcp: format!("http://{address}/mcp"),
        metrics,
        stop: Some(stop),
        handle,
    }
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// Posts a JSON-RPC body as a stateless 2025-06-18 client would (no session, protocol header).
pub async fn post(client: &reqwest::Client, url: &str, body: &Value) -> reqwest::Response {
    client
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-06-18")
        .json(body)
        .send()
        .await
        .expect("request sent")
}

/// Calls a tool and returns the JSON-RPC `result` (or the whole response when it is an error).
pub async fn call_tool(url: &str, name: &str, arguments: Value) -> Value {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": name, "arguments": arguments}});
    let response = post(&http(), url, &body).await;
    let text = response.text().await.unwrap();
    let value: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
    value.get("result").cloned().unwrap_or(value)
}

/// The structured envelope of a tool result.
pub fn envelope(result: &Value) -> &Value {
    &result["structuredContent"]
}

pub const QUERY_TOOLS: [&str; 7] = [
    "nlq_to_data",
    "get_trend_data",
    "get_prediction_data",
    "get_outlier_data",
    "get_correlation_data",
    "get_change_data",
    "get_pareto_data",
];
