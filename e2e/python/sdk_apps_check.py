#!/usr/bin/env python3
"""MCP Apps through the official MCP Python SDK (PyPI `mcp` 2.x): the connector's `ui://` view.

Usage: python sdk_apps_check.py URL [--mode legacy|auto|both]

For each connection mode (`legacy`: the 2025 initialize handshake; `auto`: 2026-07-28 `server/discover`):
  1. the server declares the resources capability;
  2. `resources/list` has the chart view: a `ui://` URI, the MCP Apps MIME type `text/html;profile=mcp-app`,
     a name and a size;
  3. `resources/read` of that URI returns one text content with the same URI and MIME type, a whole HTML
     document of the listed size that loads nothing from outside, and `_meta.ui` without network origins;
  4. the data tools point at it with `_meta.ui.resourceUri` (and the legacy `ui/resourceUri` key), the two
     metadata tools do not;
  5. reading an unknown `ui://` URI is an error, not an empty success.
Prints one JSON line per check and a final summary; exits 1 on the first failure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys

from mcp import Client
from mcp.shared.exceptions import MCPError

VIEW_URI = "ui://lumenore/chart.html"
MIME = "text/html;profile=mcp-app"
CHARTED = {
    "nlq_to_data", "get_trend_data", "get_prediction_data", "get_outlier_data",
    "get_correlation_data", "get_change_data", "get_pareto_data",
}
UNCHARTED = {"get_dataset_metadata", "get_metadata_info"}
# Anything that would make the document load or send something.
EXTERNAL = re.compile(r"<script[^>]+src|<link|@import|url\(|<img|<iframe|fetch\(|XMLHttpRequest|WebSocket|https?://(?!www\.w3\.org/2000/svg\")", re.I)


class CheckFailed(Exception):
    pass


def report(**fields) -> None:
    print(json.dumps(fields, sort_keys=True), flush=True)


def check(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


async def run(url: str, mode: str) -> int:
    checks = 0
    async with Client(url, mode=mode, read_timeout_seconds=60) as client:
        caps = client.server_capabilities
        check(caps is not None and caps.resources is not None, f"no resources capability: {caps}")
        checks += 1

        listing = await client.list_resources()
        views = [r for r in listing.resources if str(r.uri) == VIEW_URI]
        check(len(views) == 1, f"resources/list: {[str(r.uri) for r in listing.resources]}")
        view = views[0]
        check(view.mime_type == MIME and bool(view.name) and (view.size or 0) > 0, f"listed view: {view}")
        checks += 1
        report(mode=mode, check="resources/list", uri=VIEW_URI, mime=view.mime_type, size=view.size)

        read = await client.read_resource(VIEW_URI)
        check(len(read.contents) == 1, f"resources/read: {len(read.contents)} contents")
        content = read.contents[0]
        text = getattr(content, "text", None)
        check(str(content.uri) == VIEW_URI and content.mime_type == MIME, f"read content: {content.uri} {content.mime_type}")
        check(isinstance(text, str) and text.lower().startswith("<!doctype html>") and text.rstrip().endswith("</html>"),
              "not a whole HTML document")
        check(len(text.encode()) == view.size, f"listed size {view.size} != served {len(text.encode())}")
        check(len(text.encode()) < 60_000, f"view is {len(text.encode())} bytes")
        found = EXTERNAL.search(text)
        check(found is None, f"the view references something external: {found and found.group(0)}")
        ui_meta = (content.meta or {}).get("ui", {})
        check("csp" not in ui_meta, f"the view asks for network origins: {ui_meta}")
        checks += 1
        report(mode=mode, check="resources/read", bytes=len(text.encode()), ui_meta=ui_meta)

        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
        for name in CHARTED:
            meta = tools[name].meta or {}
            check(meta.get("ui", {}).get("resourceUri") == VIEW_URI, f"{name}: _meta {meta}")
            check(meta.get("ui/resourceUri") == VIEW_URI, f"{name}: legacy key missing: {meta}")
            checks += 1
        for name in UNCHARTED:
            meta = tools[name].meta or {}
            check("ui" not in meta and "ui/resourceUri" not in meta, f"{name} should have no view: {meta}")
            checks += 1
        report(mode=mode, check="tools/list _meta.ui", charted=sorted(CHARTED))

        try:
            await client.read_resource("ui://lumenore/missing.html")
        except MCPError as error:
            report(mode=mode, check="unknown resource", code=error.error.code)
        else:
            raise CheckFailed("reading an unknown ui:// resource succeeded")
        checks += 1
    return checks


async def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--mode", choices=["legacy", "auto", "both"], default="both")
    args = parser.parse_args()
    modes = ["legacy", "auto"] if args.mode == "both" else [args.mode]
    total = 0
    try:
        for mode in modes:
            total += await run(args.url, mode)
    except CheckFailed as failure:
        report(result="FAILED", reason=str(failure))
        return 1
    report(result="OK", checks=total, modes=modes)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
