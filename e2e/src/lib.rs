//! Shared helpers for the end-to-end tests.
//!
//! - [`connector`]: builds (once) and locates the real `lumenore-connector` binary, starts it as a child
//!   process on a free loopback port, waits for `/healthz` or `/readyz`, stops it with SIGTERM and hands back
//!   its exit status and standard error.
//! - [`fake_backend`]: a stateful fake Lumenore server (axum) with cookie login, expiring tokens, slow and
//!   streamed answers, injectable 5xx faults and connection resets, stop/start on the same port, and
//!   counters of requests and cancellations.
//! - [`mcp`]: raw JSON-RPC over HTTP, as any stateless MCP client would send it.
//! - [`raw`]: raw-socket helpers and the kernel's figures of a process, for the hostile-client tests.
//! - [`tools`]: finds the third-party tools installed by `.ci/install-tools.sh` and decides whether a
//!   missing one skips a test (locally) or fails it (`CI` set).

pub mod connector;
pub mod fake_backend;
pub mod mcp;
pub mod raw;
pub mod redis;
pub mod tools;

use std::time::Duration;

/// A free TCP port on 127.0.0.1 (bound and released; the caller binds it again right away).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free loopback port")
}

/// Resident memory of a process in KiB (`VmRSS` in `/proc/<pid>/status`), or `None` when it is gone.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

/// A plain HTTP client for loopback tests: no proxy, bounded per-request time.
pub fn http_client(timeout: Duration) -> reqwest::Client {
    install_crypto_provider();
    reqwest::Client::builder()
        .no_proxy()
        .timeout(timeout)
        .build()
        .expect("HTTP client")
}

/// reqwest is built without a default TLS provider in this workspace; install ring once.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The repository root (where `Cargo.toml` of the workspace lives).
pub fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("e2e/ has a parent")
        .to_path_buf()
}

/// Percentile (0..=100) of sorted durations.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}
