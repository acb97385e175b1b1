//! Rate limits and the concurrency cap under concurrent load, over real HTTP: exactly the allowed number of
//! calls reach the backend, the rest get 429 with Retry-After at once.

mod auth_support;
mod support;

use std::{num::NonZeroU32, time::Duration};

use auth_support::*;
use futures::future::join_all;
use serde_json::{Value, json};
use support::start;

fn limit(n: u32) -> Option<NonZeroU32> {
    NonZeroU32::new(n)
}

/// Fires `count` tool calls at once with `key`; returns (status, Retry-After) of each.
async fn burst(mcp: &str, key: &str, count: usize) -> Vec<(u16, Option<u64>)> {
    let calls = (0..count).map(|_| async {
        let response = rpc(mcp, Some(key), &call_body("get_trend_data")).await;
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        (response.status().as_u16(), retry_after)
    });
    join_all(calls).await
}

fn count(results: &[(u16, Option<u64>)], status: u16) -> usize {
    results.iter().filter(|(s, _)| *s == status).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_calls_with_ten_per_minute_let_exactly_ten_through() {
    let backend = backend(Duration::ZERO).await;
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys.yaml");
    write_keys(
        &keys,
        &[
            key_entry("a", "lmk_a", "[\"*\"]", false),
            key_entry("b", "lmk_b", "[\"*\"]", false),
        ],
    );
    let mut config = api_keys_config(&backend.uri(), &keys);
    config.rate_limit_caller_per_minute = limit(10);
    let server = start(config, static_token(), false).await;

    let results = burst(&server.mcp, "lmk_a", 50).await;
    assert_eq!(count(&results, 200), 10, "{results:?}");
    assert_eq!(count(&results, 429), 40, "{results:?}");
    for (status, retry_after) in &results {
        if *status == 429 {
            // One token every 6 s at 10 per minute.
            let seconds = retry_after.expect("429 without Retry-After");
            assert!((1..=6).contains(&seconds), "Retry-After {seconds}");
        }
    }
    assert_eq!(tool_requests(&backend).await.len(), 10);

    // Another caller has its own bucket; cheap methods are not limited.
    let results = burst(&server.mcp, "lmk_b", 12).await;
    assert_eq!(count(&results, 200), 10, "{results:?}");
    let tools = listed_tools(rpc(&server.mcp, Some("lmk_a"), &list_body()).await).await;
    assert_eq!(tools.len(), 9);
    let ping = rpc(
        &server.mcp,
        Some("lmk_a"),
        &json!({"jsonrpc": "2.0", "id": 2, "method": "ping"}),
    )
    .await;
    assert_eq!(ping.status(), 200);

    assert_eq!(tool_requests(&backend).await.len(), 20);
    let metrics = server.metrics.encode();
    assert_eq!(
        metric(
            &metrics,
            "lumenore_connector_rate_limited_total{limit=\"caller\"}"
        ),
        42
    );
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_tenant_limit_is_shared_by_all_callers() {
    let backend = backend(Duration::ZERO).await;
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys.yaml");
    write_keys(
        &keys,
        &[
            key_entry("a", "lmk_a", "[\"*\"]", false),
            key_entry("b", "lmk_b", "[\"*\"]", false),
        ],
    );
    let mut config = api_keys_config(&backend.uri(), &keys);
    config.rate_limit_caller_per_minute = limit(100);
    config.rate_limit_tenant_per_minute = limit(10);
    let server = start(config, static_token(), false).await;

    let (a, b) = tokio::join!(burst(&server.mcp, "lmk_a", 20), burst(&server.mcp, "lmk_b", 20));
    let passed = count(&a, 200) + count(&b, 200);
    assert_eq!(passed, 10, "{a:?} {b:?}");
    assert_eq!(count(&a, 429) + count(&b, 429), 30);
    assert!(a.iter().chain(&b).all(|(s, r)| *s == 200 || r.is_some()));
    assert_eq!(tool_requests(&backend).await.len(), 10);
    let metrics = server.metrics.encode();
    assert_eq!(
        metric(
            &metrics,
            "lumenore_connector_rate_limited_total{limit=\"tenant\"}"
        ),
        30
    );
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn resources_read_costs_work_and_takes_from_the_same_rate_limit() {
    let backend = backend(Duration::ZERO).await;
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys.yaml");
    write_keys(&keys, &[key_entry("a", "lmk_a", "[\"*\"]", false)]);
    let mut config = api_keys_config(&backend.uri(), &keys);
    config.rate_limit_caller_per_minute = limit(3);
    let server = start(config, static_token(), false).await;
    let read = json!({"jsonrpc": "2.0", "id": 7, "method": "resources/read",
        "params": {"uri": lumenore_connector::ui::CHART_URI}});
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(rpc(&server.mcp, Some("lmk_a"), &read).await.status().as_u16());
    }
    assert_eq!(
        statuses,
        [200, 200, 200, 429],
        "resources/read is rate limited per caller"
    );
    // The bucket is the caller's, shared with tool calls; cheap methods still pass.
    let call = rpc(&server.mcp, Some("lmk_a"), &call_body("get_trend_data")).await;
    assert_eq!(call.status(), 429);
    let list = rpc(&server.mcp, Some("lmk_a"), &list_body()).await;
    assert_eq!(list.status(), 200);
    let metrics = server.metrics.encode();
    assert_eq!(
        metric(
            &metrics,
            "lumenore_connector_rate_limited_total{limit=\"caller\"}"
        ),
        2
    );
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_concurrency_cap_refuses_at_once_and_frees_its_slots() {
    // Each backend call takes 1 s; two may run at once.
    let backend = backend(Duration::from_secs(1)).await;
    let mut config = support::config_for(&backend.uri());
    config.max_concurrent_backend_calls = limit(2);
    let server = start(config, static_token(), false).await;

    let started = std::time::Instant::now();
    let results = burst(&server.mcp, "unused", 10).await;
    assert_eq!(count(&results, 200), 2, "{results:?}");
    assert_eq!(count(&results, 429), 8, "{results:?}");
    assert!(
        results
            .iter()
            .filter(|(s, _)| *s == 429)
            .all(|(_, r)| *r == Some(1))
    );
    assert!(started.elapsed() < Duration::from_secs(3), "refusals waited");
    assert_eq!(tool_requests(&backend).await.len(), 2);

    // The slots are free again once the calls are answered.
    let results = burst(&server.mcp, "unused", 2).await;
    assert_eq!(count(&results, 200), 2, "{results:?}");
    let metrics = server.metrics.encode();
    assert_eq!(
        metric(
            &metrics,
            "lumenore_connector_rate_limited_total{limit=\"concurrency\"}"
        ),
        8
    );
    server.stop().await.unwrap();
}

/// A backend that answers in two chunks 800 ms apart, so a streamed (SSE) answer is under way for a while
/// after its response head was sent. Hand-written HTTP/1.1 so the pause sits inside the body.
async fn slow_chunked_backend() -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut buffer = [0u8; 4096];
                // Read the head, then the body named by Content-Length.
                loop {
                    let Ok(n) = socket.read(&mut buffer).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    seen.extend_from_slice(&buffer[..n]);
                    let text = String::from_utf8_lossy(&seen).to_string();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let length = text[..end]
                            .lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case("content-length")
                                    .then(|| v.trim().parse::<usize>().ok())?
                            })
                            .unwrap_or(0);
                        if seen.len() >= end + 4 + length {
                            break;
                        }
                    }
                }
                let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n";
                let first = "{\"rows\": [";
                let second = "[\"east\", 1]]}";
                let _ = socket
                    .write_all(format!("{head}{:x}\r\n{first}\r\n", first.len()).as_bytes())
                    .await;
                let _ = socket.flush().await;
                tokio::time::sleep(Duration::from_millis(800)).await;
                let _ = socket
                    .write_all(format!("{:x}\r\n{second}\r\n0\r\n\r\n", second.len()).as_bytes())
                    .await;
                let _ = socket.shutdown().await;
            });
        }
    });
    format!("http://{address}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_streamed_answer_holds_its_slot_until_the_stream_ends() {
    let backend = slow_chunked_backend().await;
    let mut config = support::config_for(&backend);
    config.max_concurrent_backend_calls = limit(1);
    let server = start(config, static_token(), false).await;

    // A call that asked for progress is answered as an SSE stream: the response head is sent with the
    // first progress notification, while the backend is still sending.
    let body = json!({
        "jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "nlq_to_data", "arguments": {"userQuery": "sales", "schemaId": 35403},
                   "_meta": {"progressToken": "p1"}}
    });
    let (head_tx, head_rx) = tokio::sync::oneshot::channel::<String>();
    let streamed = tokio::spawn({
        let mcp = server.mcp.clone();
        async move {
            let response = rpc(&mcp, None, &body).await;
            let content_type = response
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            let _ = head_tx.send(content_type);
            response.text().await.unwrap()
        }
    });
    let content_type = tokio::time::timeout(Duration::from_secs(5), head_rx)
        .await
        .expect("response head within 5 s")
        .unwrap();
    assert!(content_type.starts_with("text/event-stream"), "{content_type}");
    // The head is out, the call is still running: its slot is still taken.
    let second = rpc(&server.mcp, None, &call_body("get_trend_data")).await;
    assert_eq!(
        second.status(),
        429,
        "the slot was released before the stream ended"
    );
    let text = streamed.await.unwrap();
    assert!(text.contains("success"), "{text}");
    // The stream ended: the slot is free again.
    let third = rpc(&server.mcp, None, &call_body("get_trend_data")).await;
    assert_eq!(third.status(), 200);
    let value: Value = third.json().await.unwrap();
    assert_eq!(
        value["result"]["structuredContent"]["status"], "success",
        "{value}"
    );
    server.stop().await.unwrap();
}
