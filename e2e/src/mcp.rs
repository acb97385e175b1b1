//! Raw MCP over HTTP: JSON-RPC bodies posted the way a stateless Streamable HTTP client posts them.

use serde_json::{Value, json};

/// The protocol revision sent in the `MCP-Protocol-Version` header (stateless, no initialize needed).
pub const PROTOCOL_VERSION: &str = "2025-06-18";

/// The body of a `tools/call` request.
pub fn tool_call(id: u64, name: &str, arguments: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": name, "arguments": arguments}})
}

/// How one tools/call ended, as a client sees it.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// `isError: false`; the `structuredContent`.
    Success(Value),
    /// `isError: true`; the `structuredContent` (`status` and `error`).
    ToolError(Value),
    /// A JSON-RPC error object.
    RpcError(Value),
    /// An HTTP status other than 200 (e.g. 503 while draining).
    Http(u16, String),
    /// No HTTP answer (refused, reset, timed out).
    Transport(String),
}

impl Outcome {
    pub fn is_success(&self) -> bool {
        matches!(self, Outcome::Success(_))
    }

    /// A clean failure: a tool error with a status and a message, nothing else.
    pub fn is_clean_tool_error(&self) -> bool {
        matches!(self, Outcome::ToolError(v) if v["status"].is_string() && v["error"].is_string())
    }
}

/// Posts one JSON-RPC message and returns the HTTP status and the parsed body.
pub async fn post(
    client: &reqwest::Client,
    url: &str,
    body: &Value,
) -> Result<(u16, String), reqwest::Error> {
    let response = client
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", PROTOCOL_VERSION)
        .json(body)
        .send()
        .await?;
    let status = response.status().as_u16();
    let text = response.text().await?;
    Ok((status, text))
}

/// Parses a JSON answer, or the last `data:` event of an SSE answer.
pub fn parse_answer(text: &str) -> Option<Value> {
    if let Ok(value) = serde_json::from_str::<Value>(text) {
        return Some(value);
    }
    text.lines()
        .filter_map(|line| line.strip_prefix("data:"))
        .filter_map(|data| serde_json::from_str::<Value>(data.trim()).ok())
        .rfind(|value| value.get("result").is_some() || value.get("error").is_some())
}

/// Calls a tool and classifies the answer.
pub async fn call_tool(client: &reqwest::Client, url: &str, name: &str, arguments: Value) -> Outcome {
    match post(client, url, &tool_call(1, name, arguments)).await {
        Err(error) => Outcome::Transport(error.to_string()),
        Ok((200, text)) => match parse_answer(&text) {
            Some(value) if value.get("result").is_some() => {
                let result = &value["result"];
                let content = result["structuredContent"].clone();
                if result["isError"] == true {
                    Outcome::ToolError(content)
                } else {
                    Outcome::Success(content)
                }
            }
            Some(value) if value.get("error").is_some() => Outcome::RpcError(value["error"].clone()),
            _ => Outcome::Http(200, text),
        },
        Ok((status, text)) => Outcome::Http(status, text),
    }
}
