//! Clients nobody here wrote, against the real connector binary (embedded backend):
//! the official MCP conformance suite, the official Python SDK client and the MCP Inspector CLI.
//!
//! Tools come from `bash .ci/install-tools.sh` (pinned versions in `.tools/`). A missing tool skips its
//! test with "SKIPPED: <tool> not installed — run .ci/install-tools.sh", unless `CI` is set: then it fails.

use std::{
    path::Path,
    process::Stdio,
    time::{Duration, Instant},
};

use lumenore_e2e::{
    connector::{Connector, ConnectorSpec},
    repo_root,
    tools::{self, find, require, venv_python},
};
use serde_json::Value;

/// Runs a command with a time bound; returns (success, stdout, stderr).
async fn run(
    program: &Path,
    args: &[&str],
    envs: &[(&str, &str)],
    timeout: Duration,
) -> (bool, String, String) {
    let started = Instant::now();
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = command
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
    let output = tokio::time::timeout(timeout, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{} {args:?} did not finish within {timeout:?}", program.display()))
        .expect("output");
    eprintln!(
        "[e2e] {} {} -> {} in {:.1}s",
        program.display(),
        args.join(" "),
        output.status,
        started.elapsed().as_secs_f64()
    );
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_suite_server_scenarios_pass() {
    let Some(conformance) = require("conformance", find("conformance")) else {
        return;
    };
    // Default configuration: dns-rebinding-protection needs localhost Origins accepted by default
    // (they are since 8d39bd9) and foreign Hosts/Origins refused.
    let connector = Connector::start(ConnectorSpec::embedded()).await;
    let expected = repo_root().join("e2e/conformance-expected-failures.yml");
    let out_dir = std::env::temp_dir().join(format!("lumenore-e2e-conformance-{}", std::process::id()));
    let (ok, stdout, stderr) = run(
        &conformance,
        &[
            "server",
            "--url",
            &connector.mcp,
            "--suite",
            "active",
            "--expected-failures",
            expected.to_str().unwrap(),
            "-o",
            out_dir.to_str().unwrap(),
        ],
        &[],
        Duration::from_secs(240),
    )
    .await;
    println!("{stdout}");
    assert!(
        ok,
        "conformance suite failed (beyond e2e/conformance-expected-failures.yml):\n{stdout}\n{stderr}\n--- connector logs ---\n{}",
        connector.logs()
    );
    // The generic scenarios for any server must have run and passed, not merely be absent.
    for scenario in [
        "server-initialize",
        "ping",
        "tools-list",
        "dns-rebinding-protection",
    ] {
        let (ok, stdout, stderr) = run(
            &conformance,
            &["server", "--url", &connector.mcp, "--scenario", scenario],
            &[],
            Duration::from_secs(60),
        )
        .await;
        assert!(ok, "conformance scenario {scenario} failed:\n{stdout}\n{stderr}");
    }
    let _ = std::fs::remove_dir_all(&out_dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_client_lists_and_calls_every_tool_with_valid_structured_content() {
    let Some(python) = require("python venv with mcp (.tools/venv)", venv_python()) else {
        return;
    };
    let connector = Connector::start(ConnectorSpec::embedded()).await;
    let script = repo_root().join("e2e/python/sdk_client_check.py");
    let (ok, stdout, stderr) = run(
        &python,
        &[script.to_str().unwrap(), &connector.mcp, "--mode", "both"],
        &[("PYTHONDONTWRITEBYTECODE", "1")],
        Duration::from_secs(180),
    )
    .await;
    println!("{stdout}");
    assert!(
        ok,
        "Python SDK client check failed:\n{stdout}\n{stderr}\n--- connector logs ---\n{}",
        connector.logs()
    );
    let last: Value = serde_json::from_str(stdout.lines().last().unwrap_or("{}")).unwrap_or_default();
    assert_eq!(last["result"], "OK", "{stdout}");
    // Two modes (legacy initialize, 2026-07-28 discover): 9 tools listed + 10 calls + 3 refusals each.
    assert_eq!(last["checks"], 44, "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_inspector_cli_lists_and_calls_tools() {
    let Some(inspector) = require("mcp-inspector", find("mcp-inspector")) else {
        return;
    };
    let connector = Connector::start(ConnectorSpec::embedded()).await;
    // The inspector keeps a catalog of servers; point it at a scratch file, not ~/.mcp-inspector.
    let catalog = std::env::temp_dir().join(format!("lumenore-e2e-inspector-{}.json", std::process::id()));
    let catalog = catalog.to_str().unwrap().to_string();
    let envs = [("MCP_CATALOG_PATH", catalog.as_str())];

    let (ok, stdout, stderr) = run(
        &inspector,
        &[
            "--cli",
            &connector.mcp,
            "--transport",
            "http",
            "--method",
            "tools/list",
            // Schema portability problems of error severity fail the run (exit 6); warnings are printed.
            "--strict",
        ],
        &envs,
        Duration::from_secs(90),
    )
    .await;
    assert!(ok, "inspector tools/list --strict failed:\n{stdout}\n{stderr}");
    if !stderr.trim().is_empty() {
        println!("inspector --strict notes:\n{stderr}");
    }
    let listing: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("tools/list output is not JSON ({e}):\n{stdout}\n{stderr}"));
    let names: Vec<&str> = listing["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("no tools in {listing}"))
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert_eq!(names.len(), 9, "{names:?}");
    assert!(
        names.contains(&"nlq_to_data") && names.contains(&"get_pareto_data"),
        "{names:?}"
    );

    let (ok, stdout, stderr) = run(
        &inspector,
        &[
            "--cli",
            &connector.mcp,
            "--transport",
            "http",
            "--method",
            "tools/call",
            "--tool-name",
            "nlq_to_data",
            "--tool-arg",
            "userQuery=Show me total sales by region for Q4 2024, sorted by highest sales",
            "schemaId=35403",
        ],
        &envs,
        Duration::from_secs(90),
    )
    .await;
    assert!(ok, "inspector tools/call failed:\n{stdout}\n{stderr}");
    let result: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("tools/call output is not JSON ({e}):\n{stdout}\n{stderr}"));
    assert_eq!(result["isError"], false, "{result}");
    assert_eq!(result["structuredContent"]["status"], "success", "{result}");
    assert!(result["structuredContent"]["data"].is_object(), "{result}");
    let _ = std::fs::remove_file(&catalog);
    let _ = tools::under_ci();
}
