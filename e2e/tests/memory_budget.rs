//! Issue 21, the memory budget: the real connector binary derives its caps from a memory limit, prints and
//! exports the budget, refuses caps that cannot fit, and, driven to the worst case its caps allow (every
//! connection slot holding a full read buffer, every body permit holding a call whose kept result is the
//! densest a backend can send, answers left unread), stays under the limit by the kernel's count (VmHWM).
//!
//! `cargo test -p lumenore-e2e --test memory_budget -- --nocapture --test-threads 1` prints the predicted
//! and measured figures (`BENCH` lines) quoted in docs/hardening.md.

use std::time::Duration;

use lumenore_e2e::{
    connector::{Connector, ConnectorSpec},
    fake_backend::{FakeConfig, FakeLumenore},
    raw::{post_head, raise_open_files_limit, status_kib},
};
use serde_json::json;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

const MIB: u64 = 1024 * 1024;

/// The value of one sample of `/metrics` (`name{label="value"} N`).
fn sample(metrics: &str, series: &str) -> Option<u64> {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse::<f64>().ok())
        .map(|value| value as u64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explicit_caps_that_cannot_fit_stop_the_connector_with_the_figures() {
    let mut connector = Connector::spawn(
        ConnectorSpec::embedded()
            .env("LUMENORE_MEMORY_LIMIT", "160Mi")
            .env("LUMENORE_MAX_CONCURRENT_BODY_READS", "64")
            .env("LUMENORE_MAX_REQUEST_BYTES", "1048576"),
    );
    let report = connector
        .wait_exit(Duration::from_secs(60))
        .await
        .expect("the connector should stop");
    assert!(!report.status.success(), "{}", report.logs);
    assert!(
        report.logs.contains("memory budget does not fit")
            && report.logs.contains("--max-concurrent-body-reads")
            && report.logs.contains("160.0 MiB limit (--memory-limit)"),
        "{}",
        report.logs
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_caps_are_derived_from_the_limit_printed_and_exported() {
    let mut connector =
        Connector::start(ConnectorSpec::embedded().env("LUMENORE_MEMORY_LIMIT", "256Mi")).await;
    connector
        .wait_ready(Duration::from_secs(60))
        .await
        .expect("ready");
    let text = connector.metrics().await;
    let connections = sample(&text, "lumenore_connector_caps{cap=\"max_connections\"}").expect("cap");
    let body_reads = sample(
        &text,
        "lumenore_connector_caps{cap=\"max_concurrent_body_reads\"}",
    )
    .expect("cap");
    let worst = sample(
        &text,
        "lumenore_connector_memory_budget_bytes{term=\"worst_case\"}",
    )
    .expect("term");
    let usable = sample(&text, "lumenore_connector_memory_budget_bytes{term=\"usable\"}").expect("term");
    let limit = sample(&text, "lumenore_connector_memory_budget_bytes{term=\"limit\"}").expect("term");
    println!(
        "BENCH budget at 256 MiB (embedded demo): {connections} connections, {body_reads} body reads, worst case \
         {:.1} MiB of {:.1} usable",
        worst as f64 / MIB as f64,
        usable as f64 / MIB as f64
    );
    assert_eq!(limit, 256 * MIB);
    assert!((16..2048).contains(&connections), "{connections}");
    assert!((2..64).contains(&body_reads), "{body_reads}");
    assert!(worst <= usable, "worst case {worst} over usable {usable}");
    assert!(
        connector.logs().contains("memory budget: worst case"),
        "{}",
        connector.logs()
    );
    // Without a limit (`none`), the defaults stand.
    let unlimited = Connector::start(ConnectorSpec::embedded().env("LUMENORE_MEMORY_LIMIT", "none")).await;
    let text = unlimited.metrics().await;
    assert_eq!(
        sample(
            &text,
            "lumenore_connector_caps{cap=\"max_concurrent_body_reads\"}"
        ),
        Some(64)
    );
}

/// A connection that sends most of a request head (under the 64 KiB read buffer) and then nothing.
async fn fill_read_buffer(port: u16) -> Option<TcpStream> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    let mut head = b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\n".to_vec();
    while head.len() < 60 * 1024 {
        head.extend_from_slice(format!("x-filler-{}: {}\r\n", head.len(), "a".repeat(200)).as_bytes());
    }
    stream.write_all(&head).await.ok()?;
    Some(stream)
}

/// A tool call whose answer is never read: the permit stays held until the send timeout.
async fn unread_call(port: u16, id: u64) -> Option<TcpStream> {
    let body =
        json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": "get_trend_data",
        "arguments": {"userQuery": "sales by region", "schemaId": 35403}}})
        .to_string();
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    stream
        .write_all(format!("{}{body}", post_head(body.len() as u64, "")).as_bytes())
        .await
        .ok()?;
    Some(stream)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn driven_to_its_worst_case_the_connector_stays_under_its_limit() {
    raise_open_files_limit();
    let config = FakeConfig {
        answer_bytes: Some(8 * 1024 * 1024),
        dense_answer: true,
        ..FakeConfig::default()
    };
    let fake = FakeLumenore::start(config.clone()).await;
    let limit = 256 * MIB;
    let mut connector = Connector::start(
        ConnectorSpec::lumenore(&fake.url(), &config.client_id, &config.secret)
            .env("LUMENORE_MEMORY_LIMIT", "256Mi")
            .env("LUMENORE_READINESS_INTERVAL", "60s")
            .env("LUMENORE_SEND_TIMEOUT", "30s")
            // One client drives it all: the per-peer and per-caller shares would otherwise stop it first.
            .env("LUMENORE_MAX_CONNECTIONS_PER_PEER", "100000")
            .env("LUMENORE_MAX_BODY_READS_PER_CALLER", "100000")
            .env("LUMENORE_MAX_BODY_READS_PER_CONNECTION", "100000"),
    )
    .await;
    connector
        .wait_ready(Duration::from_secs(30))
        .await
        .expect("ready");
    let text = connector.metrics().await;
    let connections =
        sample(&text, "lumenore_connector_caps{cap=\"max_connections\"}").expect("cap") as usize;
    let body_reads = sample(
        &text,
        "lumenore_connector_caps{cap=\"max_concurrent_body_reads\"}",
    )
    .expect("cap") as usize;
    let predicted = sample(
        &text,
        "lumenore_connector_memory_budget_bytes{term=\"worst_case\"}",
    )
    .expect("term");
    let baseline_kib = status_kib(connector.pid, "VmRSS:");

    // Every permit: a call whose kept result is the densest a backend sends, its answer never read.
    let mut calls = Vec::new();
    for id in 0..body_reads {
        calls.extend(unread_call(connector.port, id as u64 + 1).await);
    }
    // Every other slot but one: a head filling its read buffer.
    let mut heads = Vec::new();
    for _ in 0..connections.saturating_sub(body_reads + 1) {
        heads.extend(fill_read_buffer(connector.port).await);
    }
    // Let the calls fetch and keep their results, then read the peak.
    let mut peak_kib = 0;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        peak_kib = peak_kib.max(status_kib(connector.pid, "VmHWM:"));
    }
    assert!(
        connector.try_exit().is_none(),
        "the connector died:\n{}",
        connector.logs()
    );
    // The calls really ran: the backend was asked once per permit.
    let asked = fake.counts().by_endpoint.values().sum::<u64>();
    let peak = peak_kib * 1024;
    println!(
        "BENCH worst case at 256 MiB (remote, dense 8 MiB answers): {} calls held, {} heads; baseline {:.1} MiB, \
         peak {:.1} MiB, predicted {:.1} MiB (per request {:.1} MiB measured vs {:.1} MiB modelled); backend asked \
         {asked}",
        calls.len(),
        heads.len(),
        baseline_kib as f64 / 1024.0,
        peak as f64 / MIB as f64,
        predicted as f64 / MIB as f64,
        (peak.saturating_sub(baseline_kib * 1024)) as f64 / body_reads.max(1) as f64 / MIB as f64,
        sample(
            &text,
            "lumenore_connector_memory_budget_bytes{term=\"per_request\"}"
        )
        .unwrap_or(0) as f64
            / MIB as f64,
    );
    assert!(
        asked >= body_reads as u64,
        "only {asked} backend calls for {body_reads} permits"
    );
    assert!(peak <= limit, "peak {peak} over the {limit} limit");
    assert!(
        peak <= predicted,
        "peak {peak} over the predicted worst case {predicted}"
    );
    // And a client is still served once the unread answers are dropped.
    drop(calls);
    drop(heads);
    let mut probe = TcpStream::connect(("127.0.0.1", connector.port))
        .await
        .expect("connect");
    probe
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
        .await
        .expect("write");
    let mut answer = [0u8; 12];
    tokio::time::timeout(Duration::from_secs(5), probe.read_exact(&mut answer))
        .await
        .expect("answered in time")
        .expect("read");
    assert_eq!(&answer[9..12], b"200");
}
