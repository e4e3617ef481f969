"""An OTLP/gRPC trace receiver in a process of its own, for test_tracing_serve.py.

    python otlp_collector.py OUT

Listens on a free loopback port and prints ``listening PORT``; appends each span it is
sent to OUT as one JSON line (``trace_id``, ``span_id``, ``parent_span_id`` in hex,
``name``, ``kind``, ``attributes``: arrays as lists) and stops when its stdin closes.
A process, not a server in the test process: a test process serving gRPC while it forks
``docket serve`` can abort the child before it executes (gRPC's fork handlers).
"""

from __future__ import annotations

import json
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as otlp
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as otlp_grpc
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.trace.v1 import trace_pb2


def value(item: common_pb2.AnyValue) -> Any:
    kind = item.WhichOneof("value")
    if kind == "array_value":
        return [value(v) for v in item.array_value.values]
    return getattr(item, kind) if kind is not None else None


def record(span: trace_pb2.Span) -> dict[str, Any]:
    return {
        "trace_id": span.trace_id.hex(),
        "span_id": span.span_id.hex(),
        "parent_span_id": span.parent_span_id.hex(),
        "name": span.name,
        "kind": span.kind,
        "attributes": {a.key: value(a.value) for a in span.attributes},
    }


class Receiver(otlp_grpc.TraceServiceServicer):
    def __init__(self, out: Path) -> None:
        self.out = out
        self.lock = threading.Lock()

    def Export(
        self, request: otlp.ExportTraceServiceRequest, context: grpc.ServicerContext
    ) -> otlp.ExportTraceServiceResponse:
        lines = [
            json.dumps(record(span)) + "\n"
            for resource in request.resource_spans
            for scope in resource.scope_spans
            for span in scope.spans
        ]
        with self.lock, self.out.open("a") as sink:
            sink.writelines(lines)
        return otlp.ExportTraceServiceResponse()


def main() -> int:
    out = Path(sys.argv[1])
    out.touch()
    server = grpc.server(ThreadPoolExecutor(2))
    otlp_grpc.add_TraceServiceServicer_to_server(Receiver(out), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(f"listening {port}", flush=True)
    sys.stdin.read()  # until the test closes it (or dies)
    server.stop(0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
