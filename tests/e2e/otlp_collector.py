"""An OTLP/gRPC trace receiver in a process of its own, for test_tracing_serve.py.

    python otlp_collector.py OUT

Listens for OTLP/gRPC and OTLP/HTTP (protobuf, ``POST /v1/traces``) on free loopback
ports and prints ``listening GRPC_PORT HTTP_PORT``; appends each span it is sent to OUT
as one JSON line (``trace_id``, ``span_id``, ``parent_span_id`` in hex, ``name``,
``kind``, ``attributes`` with arrays as lists, and its ``resource``'s attributes); stops
when its stdin closes.
A process, not a server in the test process: a test process serving gRPC while it forks
``docket serve`` can abort the child before it executes (gRPC's fork handlers).
"""

from __future__ import annotations

import json
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as otlp
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as otlp_grpc
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.proto.trace.v1 import trace_pb2


def value(item: common_pb2.AnyValue) -> Any:
    kind = item.WhichOneof("value")
    if kind == "array_value":
        return [value(v) for v in item.array_value.values]
    return getattr(item, kind) if kind is not None else None


def attributes(item: resource_pb2.Resource | trace_pb2.Span) -> dict[str, Any]:
    return {a.key: value(a.value) for a in item.attributes}


def record(span: trace_pb2.Span) -> dict[str, Any]:
    return {
        "trace_id": span.trace_id.hex(),
        "span_id": span.span_id.hex(),
        "parent_span_id": span.parent_span_id.hex(),
        "name": span.name,
        "kind": span.kind,
        "attributes": attributes(span),
    }


class Receiver(otlp_grpc.TraceServiceServicer):
    def __init__(self, out: Path) -> None:
        self.out = out
        self.lock = threading.Lock()

    def Export(
        self, request: otlp.ExportTraceServiceRequest, context: grpc.ServicerContext
    ) -> otlp.ExportTraceServiceResponse:
        self.keep(request)
        return otlp.ExportTraceServiceResponse()

    def keep(self, request: otlp.ExportTraceServiceRequest) -> None:
        lines = [
            json.dumps({**record(span), "resource": attributes(resource.resource)}) + "\n"
            for resource in request.resource_spans
            for scope in resource.scope_spans
            for span in scope.spans
        ]
        with self.lock, self.out.open("a") as sink:
            sink.writelines(lines)


def http_handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if self.path != "/v1/traces":
                self.send_error(404)
                return
            receiver.keep(otlp.ExportTraceServiceRequest.FromString(body))
            answer = otlp.ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args: Any) -> None:
            pass  # not on the test's stderr

    return Handler


def main() -> int:
    out = Path(sys.argv[1])
    out.touch()
    receiver = Receiver(out)
    server = grpc.server(ThreadPoolExecutor(2))
    otlp_grpc.add_TraceServiceServicer_to_server(receiver, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    http = ThreadingHTTPServer(("127.0.0.1", 0), http_handler(receiver))
    threading.Thread(target=http.serve_forever, daemon=True).start()
    print(f"listening {port} {http.server_port}", flush=True)
    sys.stdin.read()  # until the test closes it (or dies)
    http.shutdown()
    server.stop(0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
