//! MCP Apps (the `io.modelcontextprotocol/ui` extension, stable 2026-01-26): the one `ui://` resource the
//! connector serves, and the tool `_meta` that points hosts at it. Pure: no I/O.
//!
//! The view is a self-contained HTML document compiled into the binary. A host that supports MCP Apps reads
//! it with `resources/read` and renders it in a sandboxed iframe next to a tool's answer; it draws only the
//! tool's `structuredContent` and makes no requests of its own (see PRIVACY.md). Hosts without MCP Apps
//! ignore the `_meta` and see the same JSON answers as before.

use std::sync::LazyLock;

use rmcp::model::{JsonObject, MetaObject, ReadResourceResult, Resource, ResourceContents};
use serde_json::{Value, json};

/// The chart view's URI.
pub const CHART_URI: &str = "ui://lumenore/chart.html";
/// The MIME type the MCP Apps specification gives HTML views.
pub const MIME_TYPE: &str = "text/html;profile=mcp-app";
/// The flat `_meta` key of the 2025 drafts. The SDK's `registerAppTool` still writes it next to
/// `ui.resourceUri` and its host helpers still read it, so older hosts find the view too.
pub const LEGACY_RESOURCE_URI_KEY: &str = "ui/resourceUri";

/// The view's source: one HTML document, inline script and style, no external references.
const CHART_SOURCE: &str = include_str!("chart.html");

/// The view as served: the source without indentation, blank lines and whole-line `//` comments (the
/// source has no multi-line strings or preformatted text, so nothing else changes).
pub fn chart_html() -> &'static str {
    static SERVED: LazyLock<String> = LazyLock::new(|| {
        CHART_SOURCE
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n")
    });
    &SERVED
}

/// `_meta` of a tool whose answer the view can draw.
pub fn tool_meta() -> MetaObject {
    MetaObject(object(json!({
        "ui": { "resourceUri": CHART_URI },
        LEGACY_RESOURCE_URI_KEY: CHART_URI,
    })))
}

/// `_meta.ui` of the resource: no `csp` entry, so hosts grant no network origins at all (the secure
/// default); a border, because a chart reads better framed.
fn resource_meta() -> MetaObject {
    MetaObject(object(json!({ "ui": { "prefersBorder": true } })))
}

/// What `resources/list` shows.
pub fn resources() -> Vec<Resource> {
    vec![
        Resource::new(CHART_URI, "lumenore-chart")
            .with_title("Lumenore answer chart")
            .with_description(
                "Interactive chart and table of a Lumenore tool answer (MCP Apps view). Draws only the \
                 tool's structuredContent; makes no network requests.",
            )
            .with_mime_type(MIME_TYPE)
            .with_size(chart_html().len() as u64)
            .with_meta(resource_meta()),
    ]
}

/// What `resources/read` answers for `uri`, or `None` for a URI the connector does not serve.
pub fn read(uri: &str) -> Option<ReadResourceResult> {
    (uri == CHART_URI).then(|| {
        ReadResourceResult::new(vec![
            ResourceContents::text(chart_html(), CHART_URI)
                .with_mime_type(MIME_TYPE)
                .with_meta(resource_meta()),
        ])
    })
}

fn object(value: Value) -> JsonObject {
    match value {
        Value::Object(map) => map,
        // Only called with object literals above.
        other => unreachable!("meta must be a JSON object, got {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_view_is_self_contained_and_small() {
        let html = chart_html();
        assert!(html.len() < 60_000, "{} bytes", html.len());
        assert!(html.starts_with("<!doctype html>") && html.ends_with("</html>"));
        // The SVG namespace is a name, not an address the view loads.
        let lower = html
            .to_ascii_lowercase()
            .replace("\"http://www.w3.org/2000/svg\"", "");
        // No external scripts, styles, fonts, images or frames; no network APIs.
        for forbidden in [
            "<script src",
            "<link",
            "@import",
            "url(",
            "<iframe",
            "<img",
            "fetch(",
            "xmlhttprequest",
            "websocket",
            "eventsource",
            "sendbeacon",
            "importscripts",
            "http://",
            "https://",
            // Nothing stored, nothing logged, no HTML parsing of answer text.
            "localstorage",
            "sessionstorage",
            "indexeddb",
            "document.cookie",
            "console.",
            "innerhtml",
            "insertadjacenthtml",
            "eval(",
            // No requests to the host beyond the handshake and size reports.
            "tools/call",
            "resources/read",
            "ui/message",
            "ui/open-link",
            "ui/download-file",
            "ui/update-model-context",
        ] {
            assert!(!lower.contains(forbidden), "the view contains {forbidden:?}");
        }
    }

    #[test]
    fn list_and_read_agree() {
        let listed = resources();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].uri, CHART_URI);
        assert_eq!(listed[0].mime_type.as_deref(), Some(MIME_TYPE));
        let read = read(CHART_URI).expect("the chart resource");
        let json = serde_json::to_value(&read).unwrap();
        assert_eq!(json["contents"][0]["mimeType"], MIME_TYPE);
        assert_eq!(json["contents"][0]["text"], chart_html());
        assert_eq!(json["contents"][0]["_meta"]["ui"]["prefersBorder"], true);
        assert!(json["contents"][0]["_meta"]["ui"].get("csp").is_none());
        assert!(super::read("ui://lumenore/other.html").is_none());
    }

    #[test]
    fn tool_meta_carries_both_keys() {
        let meta = serde_json::to_value(tool_meta()).unwrap();
        assert_eq!(meta["ui"]["resourceUri"], CHART_URI);
        assert_eq!(meta[LEGACY_RESOURCE_URI_KEY], CHART_URI);
    }
}
