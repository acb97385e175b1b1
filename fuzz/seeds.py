#!/usr/bin/env python3
"""Writes the committed seed corpora of the fuzz targets (fuzz/corpus/<target>/), deterministically.

Sources: real JSON-RPC messages of the MCP methods the connector serves (written here), the backend answers
the original server received and passed on (../shared/seed-contract/results_seed.jsonl, when present beside
the repository), hand-made answers in every form the readers take, and questions of the embedded engine's
evaluation set (connector/embedded/eval/questions.yaml). Run from anywhere: python3 fuzz/seeds.py
The corpus files are named by the SHA-1 of their content, as libFuzzer names the inputs it adds.
"""

import hashlib
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CORPUS = os.path.join(HERE, "corpus")


def write(target, data):
    if isinstance(data, str):
        data = data.encode()
    directory = os.path.join(CORPUS, target)
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, hashlib.sha1(data).hexdigest()), "wb") as f:
        f.write(data)


def compact(value):
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


# ---- jsonrpc_guard: the request bodies of an MCP session, and the broken ones ------------------------
def jsonrpc():
    t = "jsonrpc_guard"
    meta = {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "tracestate": "vendor=x",
            "progressToken": 7}
    good = [
        {"jsonrpc": "2.0", "id": 0, "method": "initialize",
         "params": {"protocolVersion": "2025-11-25", "capabilities": {"roots": {"listChanged": True}},
                    "clientInfo": {"name": "claude-ai", "version": "0.1.0"}}},
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
        {"jsonrpc": "2.0", "id": "list-2", "method": "tools/list", "params": {"cursor": "abc"}},
        {"jsonrpc": "2.0", "id": 2, "method": "ping"},
        {"jsonrpc": "2.0", "id": 3, "method": "resources/list"},
        {"jsonrpc": "2.0", "id": 4, "method": "resources/read", "params": {"uri": "ui://lumenore/answer.html"}},
        {"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {"name": "get_dataset_metadata", "arguments": {}}},
        {"jsonrpc": "2.0", "id": 6, "method": "tools/call",
         "params": {"name": "get_metadata_info", "arguments": {"schemaId": 35403}}},
        {"jsonrpc": "2.0", "id": 7, "method": "tools/call",
         "params": {"name": "nlq_to_data", "arguments": {"userQuery": "Top 5 sales regions last month", "schemaId": 35403},
                    "_meta": meta}},
        {"jsonrpc": "2.0", "id": 8, "method": "tools/call",
         "params": {"name": "get_trend_data", "arguments": {"userQuery": "revenue by month in 2025", "schemaId": 35403}}},
        {"jsonrpc": "2.0", "id": 9, "method": "tools/call",
         "params": {"name": "get_prediction_data", "arguments": {"userQuery": "revenue next 3 months", "schemaId": "35403"}}},
        {"jsonrpc": "2.0", "id": 10, "method": "tools/call",
         "params": {"name": "get_outlier_data", "arguments": {"userQuery": "unusually high sales", "schemaId": 35403.0}}},
        {"jsonrpc": "2.0", "id": 11, "method": "tools/call",
         "params": {"_meta": {"traceparent": ["not", "a", "string"]}, "name": "get_pareto_data",
                    "arguments": {"userQuery": "which products make 80% of revenue", "schemaId": 35403}}},
        {"jsonrpc": "2.0", "id": -7, "method": "tools/call",
         "params": {"name": "get_change_data", "arguments": {"userQuery": "\u00e9t\u00e9 \U0001F600 \"quoted\"", "schemaId": 1}}},
        {"jsonrpc": "2.0", "id": 18446744073709551615, "method": "notifications/cancelled",
         "params": {"requestId": 7, "reason": "user"}},
        {"jsonrpc": "2.0", "id": 3, "result": {}},
        {"jsonrpc": "2.0", "id": "s-1", "error": {"code": -32601, "message": "Method not found"}},
        {"method": "tools/call", "params": {"name": 7, "arguments": [1, 2.5, None, True, {"a": {}}]}, "id": "z",
         "jsonrpc": "2.0", "extra": {"deep": [[[[]]]]}},
    ]
    for message in good:
        write(t, compact(message))
    write(t, json.dumps(good[9], indent=2))
    broken = [
        '{"jsonrpc":"2.0","id":1,"id":2,"method":"ping"}',
        '{"jsonrpc":"2.0","id":1,"\\u0069d":2,"method":"ping"}',
        '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","name":"b"}}',
        '{"jsonrpc":"2.0","id":1,"method":"x","params":{"l":[{"k":1,"k":1}]}}',
        '[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","id":2,"method":"ping"}]',
        '[]',
        '{"jsonrpc":"1.0","id":1,"method":"ping"}',
        '{"jsonrpc":2.0,"id":1,"method":"ping"}',
        '{"jsonrpc":"2.0","id":null,"method":"ping"}',
        '{"jsonrpc":"2.0","id":1.5,"method":"ping"}',
        '{"jsonrpc":"2.0","id":1e3,"method":"ping"}',
        '{"jsonrpc":"2.0","id":{"a":1},"method":"ping"}',
        '{"jsonrpc":"2.0","id":[1],"method":"ping"}',
        '{"jsonrpc":"2.0","id":1,"method":7}',
        '{"jsonrpc":"2.0","id":1}',
        '{"hello":"world"}',
        '{"jsonrpc":"2.0","id":1,"method":"x"} {}',
        '{"jsonrpc": "2.0", bad',
        '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","arguments":{"q":"\\ud800"}}}',
        '\ufeff{"jsonrpc":"2.0","id":1,"method":"ping"}',
        '',
        'null',
        '"2.0"',
        '{"jsonrpc":"2.0","id":-0,"method":"ping","params":' + "[" * 130 + "]" * 130 + "}",
        '{"jsonrpc":"2.0","id":1,"method":"ping","params":{"a":' + "[" * 126 + "]" * 126 + "}}",
    ]
    for text in broken:
        write(t, text)
    write(t, b'{"jsonrpc":"2.0","id":1,"method":"t\xff\xfe"}')
    # The value budget's edges: 20,000 values in all (accepted) and one more (refused).
    envelope = 5  # the object, jsonrpc, id, method, params; then arguments and the array
    for values in (20_000, 20_001):
        items = values - envelope - 2
        write(t, '{"jsonrpc":"2.0","id":1,"method":"x","params":{"a":[' + ",".join(["0"] * items) + "]}}")
    keys = ",".join('"k%d":0' % i for i in range(40))
    write(t, '{"jsonrpc":"2.0","id":1,"method":"x","params":{' + keys + ',"k17":1}}')


# ---- backend_answer: 4 bytes of mode, chunking, rows, bytes, then the body ----------------------------
def header(stream, content_type, reset=False, large=False, small_cap=False, reader=False, chunking=0, rows=9, size=63):
    mode = (1 if stream else 0) | (content_type << 1) | (0x10 if reset else 0) | (0x20 if large else 0)
    mode |= (0x40 if small_cap else 0) | (0x80 if reader else 0)
    return bytes([mode, chunking, rows, size])


def backend():
    t = "backend_answer"
    bodies = []
    results = os.path.join(ROOT, "..", "shared", "seed-contract", "results_seed.jsonl")
    if os.path.exists(results):
        seen = set()
        with open(results) as f:
            for line in f:
                record = json.loads(line)
                if "structuredContent" not in json.dumps(record):
                    continue
                try:
                    text = record["response"]["result"]["structuredContent"]["content"][0]["text"]
                except (KeyError, IndexError, TypeError):
                    continue
                if isinstance(text, str) and text not in seen and len(text) < 4000:
                    seen.add(text)
                    bodies.append(text.encode())
    else:
        print("note: ../shared/seed-contract/results_seed.jsonl not found; hand-made answers only", file=sys.stderr)
    rows = [{"region": r, "sales": 1000 + i, "share": 0.25 * i} for i, r in enumerate(["North", "South", "East", "West"])]
    bodies += [
        compact({"data": {"result": {"resultSet": rows}}, "status": "success"}).encode(),
        compact({"data": [{"domain_id": 35403, "domain_name": "Sales", "domain_timestamp": "2025-11-01T10:00:00Z"}]}).encode(),
        b"\n".join(compact({"part": i, "rows": [rows[i % 4]]}).encode() for i in range(24)) + b"\n",
        b'{"type": "status", "message": "Understanding your question"}\n{"type": "sql", "sql": "SELECT 1"}\r\n\r\n'
        b'{"type": "data", "columns": ["region", "sales"], "rows": [["North", 120.5], ["South", 99.0]]}',
        b"retry: 1000\r\nevent: message\r\ndata: {\"type\":\r\ndata:  \"status\"}\r\n\r\n: keep-alive\n\nid: 7\n"
        b"foo: bar\ndata: plain words\n\ndata: [DONE]\n\ndata: {\"after\": \"done\"}\n\n",
        b"\xef\xbb\xbfdata: {\"a\": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18]}\n\n"
        b"data: not json at all, quite a long line of text that goes on past the byte limit of the answer\n\n",
        b"event: message\ndata: " + b"x" * 600 + b"\n\n" + b"data: 1\n\n" * 20,
        b"data: [DONE]\n\n",
        b"\r\n".join(b"data: " + compact(rows[i % 4]).encode() + b"\r\n" for i in range(20)),
        "Top 5 sales regions last month:\n1. North 120.5\n2. South 99.0\n\u00e9t\u00e9 \U0001F600\n".encode(),
        b"[INFO] 2 rows",
        b"<html><body>Gateway login page</body></html>",
        b"\xff\xfe invalid utf-8 \xc3\x28 text",
        b"  \n\t ",
        b"",
        b"None",
        b"[" + b",".join(b"%d" % i for i in range(40)) + b"]",
        b"[[[[[[[[[[1,2,3],[4,5,6]]]]]]]]]]",
        b'{"blob": "' + "\u00e9".encode() * 300 + b'", "k": "\\u0000\\n\\"\\\\\\ud83d\\ude00"}',
        b'{"a": 1, "a": 2, "' + b"k" * 200 + b'": [true, false, null]}',
        b"[-9223372036854775808, 18446744073709551615, 1e308, -0, 0.1, 123456789012345678901234567890]",
        b'{"rows": [1, 2,',
        b'[{"a": "unfinished',
        b'{"a": 1} <html>',
        b"1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20",
        b'"just a string"\n',
        b"\x0c{\"form\": \"feed\"}",
    ]
    for i, body in enumerate(bodies):
        first = body.lstrip()[:1]
        sse = body.lstrip(b"\xef\xbb\xbf").startswith((b"data:", b"event:", b"retry:", b":", b"id:"))
        stream = sse or not first or first not in b"{[\"-0123456789tfn" or i % 2 == 1
        content_type = 3 if sse else (2 if stream and first == b"{" else (4 if stream else 1))
        write(t, header(stream, content_type, chunking=(i * 37) & 0xFF, rows=(i * 5) % 16, size=(i * 11) % 64) + body)
    # A few with the other modes: a reset, a large body parsed while it arrives, a small cap, a reader.
    write(t, header(False, 1, reset=True, chunking=1) + bodies[-8])
    write(t, header(True, 3, reset=True, chunking=2) + b"data: 1\n\ndata: [DONE]\n\n")
    write(t, header(False, 0, large=True, chunking=3) + b"[" + b",".join(b"%d" % i for i in range(30)) + b"]")
    write(t, header(True, 0, large=True, reset=True) + b'{"rows": [1, 2, 3]}')
    write(t, header(False, 1, small_cap=True, chunking=5) + b'{"pad": "' + b"y" * 200 + b'"}')
    write(t, header(True, 2, reader=True, chunking=7, rows=2, size=1) + b"\n".join(b'{"n": %d}' % i for i in range(8)))


# ---- embedded_question: a selector byte (dataset, tool), then the question ------------------------------
def questions():
    t = "embedded_question"
    datasets = {"sales": 0, "customers": 1, "inventory": 2}
    tools = ["nlq", "trend", "prediction", "outlier", "correlation", "change", "pareto"]

    def selector(dataset, tool, whole=False):
        for b in (range(0xC0, 0x100) if whole else range(0x30, 0x7F)):
            if b % 3 == dataset and (b // 3) % 7 == tool:
                return bytes([b])
        raise ValueError((dataset, tool, whole))

    try:
        import yaml
    except ImportError:
        sys.exit("PyYAML is needed (the project venv has it: .tools/venv/bin/python fuzz/seeds.py)")
    with open(os.path.join(ROOT, "connector", "embedded", "eval", "questions.yaml")) as f:
        evalset = yaml.safe_load(f)["questions"]
    picked = {}
    for q in evalset:
        key = (q["ds"], q.get("tool", "nlq"))
        picked.setdefault(key, [])
        if len(picked[key]) < 3:
            picked[key].append(q["q"])
    n = 0
    for (ds, tool), texts in sorted(picked.items()):
        for text in texts:
            # Every other question also runs the whole engine call.
            write(t, selector(datasets[ds], tools.index(tool), whole=n % 2 == 0) + text.encode())
            n += 1
    extra = [
        (0, 0, "combined revenue of the top 3 regions"),
        (0, 0, "revenue by region 2025 vs 2024"),
        (0, 0, "how did the North do in June"),
        (0, 2, "revenue for the next 200 years"),
        (0, 0, "revnue by regoin"),
        (1, 0, "how many customers by segment"),
        (2, 3, "unusually high stock levels by warehouse"),
        (0, 6, "which products make up 80% of revenue"),
        (0, 0, "\u00c9t\u00e9 \U0001F600 \u0000 \u202e revenue"),
        (0, 0, "revenue " * 40),
    ]
    for dataset, tool, text in extra:
        write(t, selector(dataset, tool, whole=True) + text.encode())


if __name__ == "__main__":
    jsonrpc()
    backend()
    questions()
    for target in sorted(os.listdir(CORPUS)):
        files = os.listdir(os.path.join(CORPUS, target))
        size = sum(os.path.getsize(os.path.join(CORPUS, target, name)) for name in files)
        print(f"{target}: {len(files)} files, {size} bytes")
