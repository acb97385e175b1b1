#!/usr/bin/env python3
"""The official MCP Python SDK (PyPI `mcp` 2.x) as a client of a running lumenore-connector.

Usage: python sdk_client_check.py URL [--mode legacy|auto|both]

For each connection mode (`legacy`: the initialize handshake of the 2025 revisions; `auto`: the
2026-07-28 `server/discover` flow, falling back to initialize), it:
  1. lists the tools and checks the nine expected ones, each with a title, a description, an input
     schema, an output schema and read-only/idempotent/non-destructive annotations;
  2. calls every tool against the embedded backend with real questions (those of the original
     README) and validates each `structuredContent` against the tool's `outputSchema` with
     `jsonschema`, and that the text content carries the same JSON;
  3. sends arguments the tools must refuse (blank question, schemaId 0, wrong type) and checks
     the error semantics: `isError: true`, `status: "validation_error"`, the field named, and a
     `structuredContent` that is still valid against the output schema.
Prints one JSON line per check and a final summary; exits 1 on the first failure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

import jsonschema
from mcp import Client

EXPECTED_TOOLS = {
    "get_dataset_metadata",
    "get_metadata_info",
    "nlq_to_data",
    "get_trend_data",
    "get_prediction_data",
    "get_outlier_data",
    "get_correlation_data",
    "get_change_data",
    "get_pareto_data",
}

# Real questions: the original README's examples, on the bundled demo datasets
# (35403 sales, 35404 customers, 35405 inventory).
CALLS = [
    ("get_dataset_metadata", {}),
    ("get_metadata_info", {"schemaId": 35403}),
    ("nlq_to_data", {"userQuery": "Top 5 sales regions last month", "schemaId": 35403}),
    ("nlq_to_data", {"userQuery": "Show me total sales by region for Q4 2024, sorted by highest sales", "schemaId": 35403}),
    ("get_trend_data", {"userQuery": "What are the monthly sales trends for Q4 2024?", "schemaId": 35403}),
    ("get_prediction_data", {"userQuery": "Forecast monthly revenue for the next 3 months", "schemaId": 35403}),
    ("get_outlier_data", {"userQuery": "Find unusual daily revenue in 2025", "schemaId": 35403}),
    ("get_correlation_data", {"userQuery": "What factors correlate with customer lifetime value?", "schemaId": 35404}),
    ("get_change_data", {"userQuery": "Have there been any significant changes in demand patterns recently?", "schemaId": 35405}),
    ("get_pareto_data", {"userQuery": "Which products contribute to 80% of our sales?", "schemaId": 35403}),
]

# Arguments the tools must refuse with a validation error naming the field.
INVALID = [
    ("nlq_to_data", {"userQuery": "   ", "schemaId": 35403}, "userQuery"),
    ("get_trend_data", {"userQuery": "What are the monthly sales trends?", "schemaId": 0}, "schemaId"),
    ("get_metadata_info", {"schemaId": "not-a-number"}, "schemaId"),
]


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
        report(mode=mode, protocol_version=client.protocol_version,
               server=(client.server_info.name if client.server_info else None))
        listing = await client.list_tools()
        tools = {tool.name: tool for tool in listing.tools}
        check(set(tools) == EXPECTED_TOOLS, f"tools listed: {sorted(tools)}")
        for tool in tools.values():
            check(bool(tool.title) and bool(tool.description), f"{tool.name}: no title/description")
            check(tool.input_schema.get("type") == "object", f"{tool.name}: input schema not an object")
            check(tool.output_schema is not None, f"{tool.name}: no output schema")
            jsonschema.Draft202012Validator.check_schema(tool.output_schema)
            jsonschema.Draft202012Validator.check_schema(tool.input_schema)
            a = tool.annotations
            check(a is not None and a.read_only_hint is True and a.idempotent_hint is True
                  and a.destructive_hint is False, f"{tool.name}: annotations {a}")
            checks += 1
        report(mode=mode, check="tools/list", tools=len(tools))

        called = set()
        for name, arguments in CALLS:
            jsonschema.validate(arguments, tools[name].input_schema)
            result = await client.call_tool(name, arguments)
            structured = result.structured_content
            check(result.is_error is False, f"{name} {arguments}: isError with {structured}")
            check(isinstance(structured, dict), f"{name}: no structuredContent")
            jsonschema.validate(structured, tools[name].output_schema)
            check(structured["status"] == "success", f"{name}: status {structured.get('status')}")
            check("data" in structured, f"{name}: no data")
            texts = [block.text for block in result.content if getattr(block, "type", None) == "text"]
            check(any(json.loads(t) == structured for t in texts), f"{name}: text content differs from structuredContent")
            called.add(name)
            checks += 1
            report(mode=mode, check="tools/call", tool=name, status=structured["status"],
                   data_bytes=len(json.dumps(structured["data"])))
        check(called == EXPECTED_TOOLS, f"tools not called: {sorted(EXPECTED_TOOLS - called)}")

        for name, arguments, field in INVALID:
            result = await client.call_tool(name, arguments)
            structured = result.structured_content
            check(result.is_error is True, f"{name} {arguments}: expected isError, got {structured}")
            check(isinstance(structured, dict), f"{name}: error without structuredContent")
            jsonschema.validate(structured, tools[name].output_schema)
            check(structured["status"] == "validation_error", f"{name}: status {structured.get('status')}")
            check(field in structured.get("error", ""), f"{name}: error does not name {field}: {structured}")
            checks += 1
            report(mode=mode, check="validation error", tool=name, field=field, error=structured["error"])
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
    except jsonschema.ValidationError as failure:
        report(result="FAILED", reason=f"schema validation: {failure.message}")
        return 1
    report(result="OK", checks=total, modes=modes)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
