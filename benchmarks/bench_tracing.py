"""Tracing on against tracing off: what a traced Authorize costs through ``docket serve``.

Two servers of this tree side by side (one worker each, durable audit on SQLite): one
without ``otel_endpoint`` (off, the default), one with it pointing at an OTLP/gRPC
collector in this process that counts the spans it receives and drops them, every trace
kept (``otel_sampling_ratio`` 1, the default). h2load alternates between them in rounds,
as ``compare`` (b) does (:func:`benchmarks.bench_compare.compare_serve`, the same mix
and checks). Reported: Authorize calls/s of each, how much slower on is, and the spans
the collector received (three per call: the server span, evaluation, the audit commit).
What tracing off costs against the code before tracing is ``compare``'s question, with
``DOCKET_BENCH_BASE`` at that commit.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as otlp
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as otlp_grpc

from benchmarks._common import table
from benchmarks._load import h2load_version, workdir
from benchmarks.bench_compare import FULL, QUICK, ROOT, compare_serve


class Collector(otlp_grpc.TraceServiceServicer):
    """An OTLP/gRPC trace receiver that counts spans and keeps none."""

    def __init__(self) -> None:
        self.spans = 0
        self._lock = threading.Lock()
        self.server = grpc.server(ThreadPoolExecutor(2))
        otlp_grpc.add_TraceServiceServicer_to_server(self, self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")

    def Export(
        self, request: otlp.ExportTraceServiceRequest, context: grpc.ServicerContext
    ) -> otlp.ExportTraceServiceResponse:
        count = sum(len(s.spans) for r in request.resource_spans for s in r.scope_spans)
        with self._lock:
            self.spans += count
        return otlp.ExportTraceServiceResponse()


def run(*, quick: bool = False) -> dict[str, Any]:
    """Run the comparison, print its table, return its figures."""
    if h2load_version() is None:
        print("  SKIPPED (h2load not found: apt-get install nghttp2-client)")
        return {"skipped": "no h2load"}
    collector = Collector()
    collector.server.start()
    try:
        with workdir("docket-bench-tracing-") as tmp:
            serve = compare_serve(
                ROOT,
                QUICK if quick else FULL,
                tmp,
                this_env={"DOCKET_OTEL_ENDPOINT": f"http://127.0.0.1:{collector.port}"},
            )
    finally:
        collector.server.stop(5)
    off, on = serve["calls_per_second"]["base"], serve["calls_per_second"]["this"]
    print(
        table(
            ("", "tracing off", "tracing on (100 %)", "slower by"),
            [("docket serve Authorize, calls/s", off, on, f"{serve['slowdown']:+.1%}")],
        )
    )
    print(f"  spans received by the collector: {collector.spans:,}")
    return {
        "calls_per_second": {"off": off, "on": on},
        "rounds_per_second": {
            "off": serve["rounds_per_second"]["base"],
            "on": serve["rounds_per_second"]["this"],
        },
        "slowdown": serve["slowdown"],
        "spans_received": collector.spans,
    }
