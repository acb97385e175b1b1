//! API-key authentication over real HTTP: each failure mode, tools/list filtering, per-tool 403, the
//! caller's key never reaching the backend, and hot reload of a keys file swapped the way kubelet updates a
//! Secret volume (symlinks).

mod auth_support;
mod support;

use std::{path::Path, time::Duration};

use auth_support::*;
use futures::StreamExt;
use serde_json::Value;
use support::start;

const FULL_KEY: &str = "lmk_full_0123456789abcdef0123456789abcdef0123456789abcdef01234567";
const META_KEY: &str = "lmk_meta_0123456789abcdef0123456789abcdef0123456789abcdef01234567";
const REVOKED_KEY: &str = "lmk_gone_0123456789abcdef0123456789abcdef0123456789abcdef01234567";

fn entries() -> Vec<String> {
    vec![
        key_entry("full-access", FULL_KEY, "[\"*\"]", false),
        key_entry(
            "metadata-only",
            META_KEY,
            "[get_dataset_metadata, get_metadata_info]",
            false,
        ),
        key_entry("old-laptop", REVOKED_KEY, "[\"*\"]", true),
    ]
}

#[tokio::test]
async fn each_failure_mode_is_401_and_never_reaches_the_backend() {
    let backend = backend(Duration::ZERO).await;
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys.yaml");
    write_keys(&keys, &entries());
    let server = start(api_keys_config(&backend.uri(), &keys), static_token(), false).await;

    // No credential: a challenge without error= (RFC 6750 §3.1).
    let response = rpc(&server.mcp, None, &call_body("nlq_to_data")).await;
    assert_eq!(response.status(), 401);
    let challenge = www_authenticate(&response);
    assert!(challenge.starts_with("Bearer "), "{challenge}");
    assert!(!challenge.contains("error="), "{challenge}");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], -32001);

    for (key, description) in [
        ("lmk_not_a_key_at_all", "the API key is not valid"),
        (REVOKED_KEY, "the API key was revoked"),
    ] {
        let response = rpc(&server.mcp, Some(key), &call_body("nlq_to_data")).await;
        assert_eq!(response.status(), 401);
        let challenge = www_authenticate(&response);
        assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
        assert!(challenge.contains(description), "{challenge}");
        let text = response.text().await.unwrap();
        assert!(!text.contains(key), "the answer echoes the key");
    }
    // Every method needs a credential, not only tools/call.
    let response = rpc(&server.mcp, None, &list_body()).await;
    assert_eq!(response.status(), 401);
    // Another scheme is no credential.
    let response = reqwest::Client::new()
        .post(&server.mcp)
        .header("authorization", format!("Basic {FULL_KEY}"))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .json(&list_body())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);

    assert!(
        tool_requests(&backend).await.is_empty(),
        "a refused call reached the backend"
    );
    let metrics = server.metrics.encode();
    assert_eq!(
        metric(
            &metrics,
            "lumenore_connector_auth_failures_total{reason=\"missing_credential\"}"
        ),
        3
    );
    assert_eq!(
        metric(
            &metrics,
            "lumenore_connector_auth_failures_total{reason=\"unknown_key\"}"
        ),
        1
    );
    assert_eq!(
        metric(
            &metrics,
            "lumenore_connector_auth_failures_total{reason=\"revoked_key\"}"
        ),
        1
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_key_sees_and_calls_only_its_tools_and_never_reaches_the_backend() {
    let backend = backend(Duration::ZERO).await;
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys.yaml");
    write_keys(&keys, &entries());
    let server = start(api_keys_config(&backend.uri(), &keys), static_token(), false).await;

    let all = listed_tools(rpc(&server.mcp, Some(FULL_KEY), &list_body()).await).await;
    assert_eq!(all.len(), 9, "{all:?}");
    let some = listed_tools(rpc(&server.mcp, Some(META_KEY), &list_body()).await).await;
    assert_eq!(some, ["get_dataset_metadata", "get_metadata_info"]);

    // A tool outside the key's list: 403 insufficient_scope, nothing sent to the backend.
    let response = rpc(&server.mcp, Some(META_KEY), &call_body("nlq_to_data")).await;
    assert_eq!(response.status(), 403);
    let challenge = www_authenticate(&response);
    assert!(challenge.contains("error=\"insufficient_scope\""), "{challenge}");
    assert!(challenge.contains("scope=\"lumenore:query\""), "{challenge}");
    assert!(tool_requests(&backend).await.is_empty());

    // Its own tools work; X-API-Key is accepted too.
    let response = rpc(&server.mcp, Some(META_KEY), &call_body("get_metadata_info")).await;
    assert_eq!(response.status(), 200);
    let value: Value = response.json().await.unwrap();
    assert_eq!(
        value["result"]["structuredContent"]["status"], "success",
        "{value}"
    );
    let response = reqwest::Client::new()
        .post(&server.mcp)
        .header("x-api-key", FULL_KEY)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .json(&call_body("nlq_to_data"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let value: Value = response.json().await.unwrap();
    assert_eq!(
        value["result"]["structuredContent"]["status"], "success",
        "{value}"
    );
    let response = rpc(&server.mcp, Some(FULL_KEY), &call_body("get_trend_data")).await;
    assert_eq!(response.status(), 200);

    assert_eq!(tool_requests(&backend).await.len(), 3);
    assert_backend_never_saw(&backend, FULL_KEY).await;
    assert_backend_never_saw(&backend, META_KEY).await;
    assert_backend_never_saw(&backend, "lmk_").await;
    let metrics = server.metrics.encode();
    assert_eq!(
        metric(
            &metrics,
            "lumenore_connector_auth_failures_total{reason=\"insufficient_scope\"}"
        ),
        1
    );
    server.stop().await.unwrap();
}

/// Lays the keys out as kubelet does for a Secret volume: `keys.yaml -> ..data/keys.yaml`,
/// `..data -> ..<version>`, and an update is a new version directory plus an atomic rename of `..data`.
fn kubelet_write(dir: &Path, version: &str, content: &str) {
    let versioned = dir.join(format!("..{version}"));
    std::fs::create_dir_all(&versioned).unwrap();
    std::fs::write(versioned.join("keys.yaml"), content).unwrap();
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(format!("..{version}"), &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
    let link = dir.join("keys.yaml");
    if std::fs::symlink_metadata(&link).is_err() {
        std::os::unix::fs::symlink("..data/keys.yaml", &link).unwrap();
    }
}

async fn status_with(server_mcp: &str, key: &str) -> u16 {
    rpc(server_mcp, Some(key), &list_body()).await.status().as_u16()
}

async fn wait_for(server_mcp: &str, key: &str, status: u16) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while status_with(server_mcp, key).await != status {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the key did not turn {status} within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_rotated_secret_takes_effect_without_restart_and_a_broken_one_keeps_the_last_good_keys() {
    let backend = backend(Duration::ZERO).await;
    let dir = tempfile::tempdir().unwrap();
    let first = format!("keys:\n{}", key_entry("one", "lmk_first_key", "[\"*\"]", false));
    kubelet_write(dir.path(), "v1", &first);
    let server = start(
        api_keys_config(&backend.uri(), &dir.path().join("keys.yaml")),
        static_token(),
        false,
    )
    .await;
    assert_eq!(status_with(&server.mcp, "lmk_first_key").await, 200);
    assert_eq!(status_with(&server.mcp, "lmk_second_key").await, 401);

    // Rotation: the second key is added, the first one revoked.
    let second = format!(
        "keys:\n{}{}",
        key_entry("one", "lmk_first_key", "[\"*\"]", true),
        key_entry("two", "lmk_second_key", "[get_dataset_metadata]", false)
    );
    kubelet_write(dir.path(), "v2", &second);
    wait_for(&server.mcp, "lmk_second_key", 200).await;
    assert_eq!(status_with(&server.mcp, "lmk_first_key").await, 401);
    let tools = listed_tools(rpc(&server.mcp, Some("lmk_second_key"), &list_body()).await).await;
    assert_eq!(tools, ["get_dataset_metadata"]);

    // A broken version: the last good keys stay, and the error is counted.
    kubelet_write(
        dir.path(),
        "v3",
        "keys:\n  - id: three\n    hash: sha256:nothex\n",
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let metrics = server.metrics.encode();
        if metric(
            &metrics,
            "lumenore_connector_api_key_reloads_total{outcome=\"error\"}",
        ) == 1
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the broken file was not noticed: {metrics}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status_with(&server.mcp, "lmk_second_key").await, 200);
    assert_eq!(status_with(&server.mcp, "lmk_first_key").await, 401);
    let metrics = server.metrics.encode();
    assert_eq!(
        metric(
            &metrics,
            "lumenore_connector_api_key_reloads_total{outcome=\"success\"}"
        ),
        1
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn start_fails_with_a_missing_keys_file() {
    let mut config = api_keys_config("http://127.0.0.1:9", Path::new("/nonexistent/keys.yaml"));
    config.api_keys_reload_interval = Duration::from_secs(1);
    let metrics = lumenore_connector::metrics::Metrics::new();
    let backend = lumenore_connector::app::build_backend(&config, static_token(), &metrics).unwrap();
    let error = lumenore_connector::app::try_build(&config, backend, metrics)
        .err()
        .expect("a missing keys file is refused at start");
    assert!(error.contains("cannot read the API keys file"), "{error}");
}

#[test]
fn hash_key_makes_a_key_whose_entry_authenticates_it() {
    use lumenore_connector::auth::{ToolSet, api_keys::KeySet};
    let binary = env!("CARGO_BIN_EXE_lumenore-connector");
    let output = std::process::Command::new(binary)
        .args(["hash-key", "--id", "alice"])
        .output()
        .unwrap();
    assert!(output.status.success());
    let stdout = String::from_utf8(output.stdout).unwrap();
    let (key, entry) = stdout.split_once('\n').unwrap();
    assert!(key.starts_with("lmk_") && key.len() == 68, "{key}");
    assert!(!entry.contains(key), "the entry holds the key itself");
    let set = KeySet::parse(&format!("keys:\n{entry}")).unwrap();
    let caller = set.authenticate(key).unwrap();
    assert_eq!(&*caller.id, "alice");
    assert_eq!(caller.tools, ToolSet::ALL);

    // --stdin hashes a given key to the same line the entry holds.
    let mut child = std::process::Command::new(binary)
        .args(["hash-key", "--stdin"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(key.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    let line = String::from_utf8(output.stdout).unwrap();
    assert!(entry.contains(line.trim()), "{line} not in {entry}");
}

#[tokio::test]
async fn an_unauthenticated_upload_is_refused_from_the_headers_without_waiting_for_its_body() {
    let backend = backend(Duration::ZERO).await;
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys.yaml");
    write_keys(&keys, &entries());
    let server = start(api_keys_config(&backend.uri(), &keys), static_token(), false).await;
    // A body that sends 1 KiB of a declared 1 MiB and then never more: only a server that answers from
    // the headers can answer at all.
    let stalled = futures::stream::once(async { Ok::<_, std::io::Error>(vec![b' '; 1024]) })
        .chain(futures::stream::pending());
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let response = client
        .post(&server.mcp)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("content-length", "1048576")
        .body(reqwest::Body::wrap_stream(stalled))
        .send()
        .await
        .expect("an answer before the body ends");
    assert_eq!(response.status(), 401);
}
