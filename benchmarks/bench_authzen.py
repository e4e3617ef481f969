"""AuthZEN Access Evaluations against gRPC Authorize on the same ``docket serve``.

The same requests (the cases of :data:`benchmarks.bench_grpc.MIX` that carry no device
posture: AuthZEN has no device credential to carry one) are sent as
``POST /access/v1/evaluation`` (JSON over HTTP/1.1, keep-alive, one request in flight
per connection) and as gRPC Authorize (HTTP/2, one stream per connection), by h2load
with the same number of connections, to a server with one process and then with two
workers. Every body is first checked to get its case's decision; every answer under load
must be a 200 of the verified size. The figure is the ratio of evaluations/s to
Authorize/s: what the HTTP binding costs against the gRPC one on the same engine and
audit log (each decision is recorded and durable before it is answered, either way).
The two alternate over several rounds (the order swapped each round) and the ratio is
the median of the rounds', so that a neighbour's load on a shared machine weighs on both.
The server's CPU time per request (*srv µs/req*, as in ``grpc``) is the figure a busy
machine disturbs least: its ratio (Authorize's over AuthZEN's) is printed too.
"""

from __future__ import annotations

import http.client
import json
import statistics
from functools import partial
from pathlib import Path
from typing import Any

from benchmarks._common import table
from benchmarks._load import LoadResult, Stream, h2load_version, merge, run_h2load, workdir
from benchmarks.bench_decide import load_cases
from benchmarks.bench_grpc import (
    AUTHORIZE,
    BUNDLE,
    MIX,
    Case,
    Docket,
    cores,
    cpu_us,
    docket_server,
    to_proto,
    verify_authorize,
)
from engine import Request
from sdk.v1 import decisions_pb2 as pb

EVALUATION = "/access/v1/evaluation"
JSON_HEADERS = ("content-type: application/json",)
CONNECTIONS_PER_BODY = 8  # 2 bodies x 8 = 16 connections, as bench_grpc's Authorize run
SECONDS = {"warm_up": 2.0, "run": 6.0, "rounds": 5}
QUICK = {"warm_up": 1.0, "run": 3.0, "rounds": 1}


def authzen_body(request: Request) -> bytes:
    """The request as an AuthZEN 1.0 Access Evaluation (docs/authzen.md's mapping)."""
    return json.dumps(
        {
            "subject": {"type": request.principal.type, "id": request.principal.id},
            "action": {"name": request.action.id},
            "resource": {"type": request.resource.type, "id": request.resource.id},
            "context": request.context,
        }
    ).encode()


def cases() -> list[tuple[str, Request, str]]:
    """The cases of the gRPC mix without a device or per-request entities."""
    return [
        (name, request, expected)
        for name, request, expected in load_cases(BUNDLE)
        if name in MIX and "device" not in request.context and not request.entities
    ]


def verify_authzen(address: str, body: bytes, expected: str) -> int:
    """POST ``body``; raise unless the decision is ``expected``. Returns the body size."""
    connection = http.client.HTTPConnection(address, timeout=10)
    try:
        connection.request("POST", EVALUATION, body, {"content-type": "application/json"})
        response = connection.getresponse()
        data = response.read()
    finally:
        connection.close()
    if response.status != 200 or json.loads(data) != {"decision": expected == "allow"}:
        raise RuntimeError(f"AuthZEN {body!r}: HTTP {response.status} {data!r}")
    return len(data)


def measure(server: Docket, tmp: Path, seconds: dict[str, float]) -> list[dict[str, LoadResult]]:
    """Both APIs under the same load, in alternating order, round after round."""
    authzen: list[Stream] = []
    authzen_sizes: list[int] = []
    grpc: list[Stream] = []
    grpc_sizes: list[int] = []
    for name, request, expected in cases():
        body = authzen_body(request)
        authzen_sizes.append(verify_authzen(server.metrics, body, expected))
        authzen.append(Stream(body, CONNECTIONS_PER_BODY, headers=JSON_HEADERS, path=EVALUATION))
        decision = pb.DECISION_ALLOW if expected == "allow" else pb.DECISION_DENY
        case = Case(name, to_proto(request), decision)
        grpc_sizes.append(verify_authorize(server.grpc, case))
        grpc.append(Stream(case.message.SerializeToString(), CONNECTIONS_PER_BODY))
    common: dict[str, Any] = {
        "duration_s": seconds["run"],
        "warm_up_s": seconds["warm_up"],
        "workdir": tmp,
        "server_pgid": server.pgid,
    }
    rounds = []
    for number in range(int(seconds["rounds"])):
        run_authzen = partial(
            run_h2load,
            f"http://{server.metrics}",
            authzen,
            response_sizes=authzen_sizes,
            http1=True,
            **common,
        )
        run_authorize = partial(
            run_h2load,
            f"http://{server.grpc}{AUTHORIZE}",
            grpc,
            response_sizes=grpc_sizes,
            **common,
        )
        if number % 2:
            authorize = run_authorize()
            rounds.append({"authzen": run_authzen(), "authorize": authorize})
        else:
            rounds.append({"authzen": run_authzen(), "authorize": run_authorize()})
    return rounds


def run(*, quick: bool = False) -> dict[str, Any]:
    """The ratio of AuthZEN evaluations/s to gRPC Authorize/s, with 1 and 2 workers."""
    if h2load_version() is None:
        print("  skipped: h2load (nghttp2-client) is not installed")
        return {"skipped": "h2load is not installed"}
    seconds = QUICK if quick else SECONDS
    figures: dict[str, Any] = {}
    rows = []
    for workers in (1, 2):
        with (
            workdir("docket-bench-authzen-") as tmp,
            docket_server(tmp / "data", workers=workers) as server,
        ):
            rounds = measure(server, tmp, seconds)
        ratios = [r["authzen"].per_second / r["authorize"].per_second for r in rounds]
        ratio = statistics.median(ratios)
        merged = {api: merge([r[api] for r in rounds]) for api in ("authzen", "authorize")}
        cpu = {api: cpu_us(result) for api, result in merged.items()}
        cpu_ratio = (
            cpu["authorize"] / cpu["authzen"] if cpu["authorize"] and cpu["authzen"] else None
        )
        figures[f"workers_{workers}"] = {
            **{api: result.figures() for api, result in merged.items()},
            "ratio": round(ratio, 3),
            "ratios": [round(r, 3) for r in ratios],
            "server_cpu_us": cpu,
            "cpu_ratio": None if cpu_ratio is None else round(cpu_ratio, 3),
        }
        for label, result in merged.items():
            rows.append(
                (
                    workers,
                    label,
                    result.connections,
                    f"{result.per_second:,.0f}",
                    f"{result.p50_ms:.2f}",
                    f"{result.p99_ms:.2f}",
                    cores(result),
                    cpu["authzen" if label == "authzen" else "authorize"],
                    result.failed,
                )
            )
        shown = ", ".join(f"{r:.2f}" for r in ratios)
        print(f"  workers {workers}: AuthZEN/Authorize = {ratio:.2f} (rounds: {shown})", flush=True)
        if cpu_ratio is not None:
            print(
                f"  workers {workers}: server CPU per request, Authorize/AuthZEN = {cpu_ratio:.2f}"
            )
    headers = ("workers", "API", "conns", "per s", "p50 ms", "p99 ms", "cores s/l/o")
    print(table((*headers, "srv µs/req", "failed"), rows))
    return figures
