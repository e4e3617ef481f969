"""Who commits the audit log with ``--workers 2``: each worker its own entries
(``--audit-writer per-worker``, the default) or the supervisor every worker's (one writer
for the log, ``--audit-writer supervisor``: :mod:`audit._relay`). Both servers of this
tree are up together and the load alternates between them in rounds (so the machine's
other load falls on both alike): Authorize with 256 calls in flight (calls/s, server CPU
per call, audit entries per commit), then a fixed rate (p50/p99).

The choice of default is made from these figures (issue 15: "one writer per log … your
choice from measurements"); the target judged is issue 15's ≥ 8 entries per commit at
256 in flight, for each writer.
"""

from __future__ import annotations

import statistics
from typing import Any

from attestation._ca import CertificateAuthority
from benchmarks._common import H2LOAD_MISSING, skipped, table
from benchmarks._load import LoadResult, Stream, frame, h2load_version, run_h2load, workdir
from benchmarks.bench_grpc import (
    AUTHORIZE,
    Docket,
    as_attested_device,
    bundle_cases,
    docket_server,
    expect_ok,
    mix,
)
from sdk.v1 import decisions_pb2 as pb

WRITERS = ("per-worker", "supervisor")
TARGET_PER_COMMIT = 8.0
FULL = {"rounds": 3, "seconds": 8.0, "rate": 600}
QUICK = {"rounds": 1, "seconds": 3.0, "rate": 300}


def _bodies(server: Docket, ca: CertificateAuthority) -> tuple[list[bytes], list[int]]:
    """The mix bodies, each checked to answer as its case expects, and their answer sizes."""
    bodies, sizes = [], []
    for case in mix(bundle_cases()):
        sent = as_attested_device(case, ca)
        reply = expect_ok(server.grpc, AUTHORIZE, sent.message, pb.AuthorizeResponse)
        assert isinstance(reply, pb.AuthorizeResponse)
        if reply.decision != sent.expected:
            raise RuntimeError(f"{case.name}: {reply.decision}, expected {sent.expected}")
        bodies.append(sent.message.SerializeToString())
        sizes.append(len(frame(reply.SerializeToString())))
    return bodies, sizes


def _percentile(result: LoadResult, q: float) -> float | None:
    latencies = result.latencies_us
    if not latencies:
        return None
    return latencies[min(int(q * len(latencies)), len(latencies) - 1)] / 1000


def run(*, quick: bool = False) -> dict[str, Any]:
    """Run the comparison, print its table, return its figures."""
    if h2load_version() is None:
        return skipped(H2LOAD_MISSING)
    times = QUICK if quick else FULL
    with (
        workdir("docket-bench-writer-") as tmp,
        docket_server(tmp / "per-worker", flags=("--audit-writer", "per-worker")) as first,
        docket_server(tmp / "supervisor", flags=("--audit-writer", "supervisor")) as second,
    ):
        servers = dict(zip(WRITERS, (first, second), strict=True))
        streams: dict[str, list[Stream]] = {}
        sizes: dict[str, list[int]] = {}
        for writer, server in servers.items():
            bodies, sizes[writer] = _bodies(server, CertificateAuthority.load(tmp / writer / "ca"))
            streams[writer] = [Stream(body, 2, streams=16) for body in bodies]
        print("  verified: the mix bodies answer as their cases expect on both servers")
        deep: dict[str, list[tuple[float, float | None, float | None]]] = {w: [] for w in WRITERS}
        for number in range(int(times["rounds"])):
            for writer, server in servers.items():
                before = server.commits()
                result = run_h2load(
                    f"http://{server.grpc}{AUTHORIZE}",
                    streams[writer],
                    duration_s=times["seconds"],
                    warm_up_s=1 if number == 0 else 0,
                    response_sizes=sizes[writer],
                    workdir=tmp,
                    server_pgid=server.pgid,
                )
                after = server.commits()
                per_commit = None
                if before and after and after[1] > before[1]:
                    per_commit = (after[0] - before[0]) / (after[1] - before[1])
                cpu = result.cpu.server * 1e6 / result.per_second if result.cpu else None
                deep[writer].append((result.per_second, cpu, per_commit))
                print(f"  round {number} {writer}: {result.per_second:,.0f}/s, "
                      f"{cpu or 0:,.0f} µs CPU/call, {per_commit or 0:.1f} entries/commit, "
                      f"failed {result.failed}", flush=True)  # fmt: skip
        rated: dict[str, tuple[float | None, float | None]] = {}
        for writer, server in servers.items():
            per_connection = max(int(times["rate"]) // (len(streams[writer]) * 2), 1)
            result = run_h2load(
                f"http://{server.grpc}{AUTHORIZE}",
                [Stream(s.body, 2, streams=16, rps=per_connection) for s in streams[writer]],
                duration_s=times["seconds"],
                warm_up_s=1,
                response_sizes=sizes[writer],
                workdir=tmp,
                server_pgid=server.pgid,
            )
            rated[writer] = (_percentile(result, 0.5), _percentile(result, 0.99))
    figures: dict[str, Any] = {}
    rows = []
    for writer in WRITERS:
        calls = statistics.median(x[0] for x in deep[writer])
        cpu = statistics.median(x[1] or 0 for x in deep[writer])
        per_commit = statistics.median(x[2] or 0 for x in deep[writer])
        p50, p99 = rated[writer]
        figures[writer] = {"calls_per_second": round(calls), "cpu_us_per_call": round(cpu),
                           "entries_per_commit": round(per_commit, 1), "p50_ms": p50,
                           "p99_ms": p99}  # fmt: skip
        rows.append((writer, f"{calls:,.0f}", f"{cpu:,.0f}", f"{per_commit:.1f}",
                     f"{p50 or 0:.2f}", f"{p99 or 0:.2f}"))  # fmt: skip
    rate = int(times["rate"])
    print(table(("writer", "calls/s @256", "µs CPU/call", "entries/commit",
                 f"p50 ms @{rate}/s", f"p99 ms @{rate}/s"), rows))  # fmt: skip
    ratio = figures["supervisor"]["calls_per_second"] / max(
        figures["per-worker"]["calls_per_second"], 1
    )
    print(f"supervisor's writer / per-worker writers, calls/s: {ratio:.2f}x")
    for writer in WRITERS:
        got = figures[writer]["entries_per_commit"]
        met = "MET" if got >= TARGET_PER_COMMIT else "NOT MET"
        print(f"target: ≥ {TARGET_PER_COMMIT:g} entries per commit at 256 in flight "
              f"({writer}) — {met} ({got})")  # fmt: skip
    figures["ratio"] = round(ratio, 3)
    return figures
