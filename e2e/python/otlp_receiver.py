#!/usr/bin/env python3
"""A minimal OTLP/HTTP trace receiver for the end-to-end tests.

Listens on 127.0.0.1 (port from argv[1], 0 = any free port), accepts `POST /v1/traces` with an
`application/x-protobuf` body (gzip-encoded or not), decodes it with the official OpenTelemetry protobuf
definitions (PyPI `opentelemetry-proto`) and prints one JSON object per span on stdout:

    {"trace_id", "span_id", "parent_span_id", "name", "kind", "status", "status_message",
     "attributes": {...}, "events": [{"name", "attributes"}], "links": [{"trace_id", "span_id", "attributes"}],
     "resource": {...}, "scope": "...", "request_headers": {...}}

where `request_headers` holds the export request's `x-*` headers (lower-cased names), the ones
OTEL_EXPORTER_OTLP_HEADERS adds.

The first line is `listening PORT`. Anything that does not decode is answered 400 and reported as
`{"error": ...}`. Stops on stdin EOF or SIGTERM.
"""

import gzip
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

LOCK = threading.Lock()


def emit(obj):
    with LOCK:
        sys.stdout.write(json.dumps(obj, sort_keys=True) + "\n")
        sys.stdout.flush()


def value(v):
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: value(kv.value) for kv in v.kvlist_value.values}
    if kind == "bytes_value":
        return v.bytes_value.hex()
    return getattr(v, kind) if kind else None


def attrs(kvs):
    return {kv.key: value(kv.value) for kv in kvs}


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep stdout for spans, stderr quiet
        pass

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        if self.path != "/v1/traces":
            self.send_response(404)
            self.end_headers()
            return
        try:
            if self.headers.get("content-encoding") == "gzip":
                body = gzip.decompress(body)
            if self.headers.get("content-type", "").split(";")[0].strip() != "application/x-protobuf":
                raise ValueError(f"content-type {self.headers.get('content-type')!r}")
            request = ExportTraceServiceRequest()
            request.ParseFromString(body)
        except (DecodeError, ValueError, OSError) as error:
            emit({"error": str(error)})
            self.send_response(400)
            self.end_headers()
            return
        extra = {k.lower(): v for k, v in self.headers.items() if k.lower().startswith("x-")}
        for rs in request.resource_spans:
            resource = attrs(rs.resource.attributes)
            for ss in rs.scope_spans:
                for s in ss.spans:
                    emit({
                        "trace_id": s.trace_id.hex(),
                        "span_id": s.span_id.hex(),
                        "parent_span_id": s.parent_span_id.hex(),
                        "name": s.name,
                        "kind": Span.SpanKind.Name(s.kind),
                        "status": Status.StatusCode.Name(s.status.code),
                        "status_message": s.status.message,
                        "attributes": attrs(s.attributes),
                        "events": [{"name": e.name, "attributes": attrs(e.attributes)} for e in s.events],
                        "links": [{"trace_id": l.trace_id.hex(), "span_id": l.span_id.hex(),
                                   "attributes": attrs(l.attributes)} for l in s.links],
                        "resource": resource,
                        "scope": ss.scope.name,
                        "request_headers": extra,
                    })
        out = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)


def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    emit_line = f"listening {server.server_address[1]}"
    with LOCK:
        print(emit_line, flush=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    # The test closes stdin (or kills us) to stop.
    sys.stdin.read()
    server.shutdown()


if __name__ == "__main__":
    main()
