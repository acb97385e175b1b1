//! The recorded facts of the original server (`connector/tests/fixtures/seed-contract/`, copied from the
//! recording): what it sent to the backend in each scenario, and what its MCP client got back.

use std::{collections::BTreeMap, path::PathBuf};

use serde_json::Value;

fn dir() -> PathBuf {
    lumenore_e2e::repo_root().join("connector/tests/fixtures/seed-contract")
}

fn lines(file: &str) -> Vec<Value> {
    let path = dir().join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{file}: {e}: {line}")))
        .collect()
}

/// One backend request of the original server, as recorded.
#[derive(Clone, Debug)]
pub struct OriginalRequest {
    pub method: String,
    pub path: String,
    pub query: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<Value>,
}

impl OriginalRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One scenario: a tool call with its arguments, the backend mode it ran in, the requests the original
/// sent, and what its client received.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// `ok/get_trend_data`, `apikey/401/get_trend_data`, …
    pub label: String,
    pub tool: String,
    pub arguments: Value,
    pub mode: String,
    pub nlq: String,
    pub requests: Vec<OriginalRequest>,
    /// The original's answer: the content text it returned (or the object it put there), and whether that
    /// content said it was an error.
    pub content: Value,
    pub content_is_error: bool,
    /// A validation error answered by the MCP framework itself (no content envelope).
    pub framework_error: bool,
}

impl Scenario {
    pub fn prefix(&self) -> &str {
        self.label.rsplit_once('/').map_or("", |(prefix, _)| prefix)
    }
}

/// The scenarios of one recording (`seed` or `seed_extras`), in the recorded order.
pub fn scenarios(suffix: &str) -> Vec<Scenario> {
    let recording = lines(&format!("recording_{suffix}.jsonl"));
    let results = lines(&format!("results_{suffix}.jsonl"));
    // The first mark of a label gives the backend mode it ran in; requests carry their label.
    let mut modes: BTreeMap<String, (String, String)> = BTreeMap::new();
    let mut requests: BTreeMap<String, Vec<OriginalRequest>> = BTreeMap::new();
    for line in &recording {
        if let Some(mark) = line["mark"].as_str() {
            modes.entry(mark.to_string()).or_insert_with(|| {
                (
                    line["mode"].as_str().unwrap_or("ok").into(),
                    line["nlq"].as_str().unwrap_or("ndjson").into(),
                )
            });
            continue;
        }
        let label = line["label"].as_str().expect("label").to_string();
        let headers = line["headers"]
            .as_array()
            .expect("headers")
            .iter()
            .map(|pair| {
                (
                    pair[0].as_str().unwrap().to_string(),
                    pair[1].as_str().unwrap().to_string(),
                )
            })
            .collect();
        requests.entry(label).or_default().push(OriginalRequest {
            method: line["method"].as_str().unwrap().into(),
            path: line["path"].as_str().unwrap().into(),
            query: line["query"].as_str().unwrap_or_default().into(),
            headers,
            body: Some(line["body_json"].clone()).filter(|body| !body.is_null()),
        });
    }
    results
        .iter()
        .filter(|result| result["label"] != "tools/list")
        .map(|result| {
            let tool = result["tool"].as_str().expect("tool").to_string();
            let label = format!("{}/{tool}", result["label"].as_str().unwrap());
            let (mode, nlq) = modes
                .get(&label)
                .cloned()
                .unwrap_or_else(|| panic!("no mark for {label}"));
            let structured = &result["response"]["result"]["structuredContent"];
            let framework_error = structured.is_null();
            let content = if framework_error {
                result["response"]["result"]["content"][0]["text"].clone()
            } else {
                structured["content"][0]["text"].clone()
            };
            // The extras do not repeat the arguments: they are the main scenarios' question.
            let arguments = result.get("arguments").cloned().unwrap_or_else(
                || serde_json::json!({"userQuery": "Top 5 sales regions last month", "schemaId": 35403}),
            );
            Scenario {
                requests: requests.get(&label).cloned().unwrap_or_default(),
                label,
                tool,
                arguments,
                mode,
                nlq,
                content,
                content_is_error: structured["isError"] == true,
                framework_error,
            }
        })
        .collect()
}
