"""Run the benchmarks: ``python -m benchmarks [--quick] [--only NAME]``.

Prints the machine and each benchmark's figures, and writes them all as JSON to
``benchmarks/.out/latest.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks import (
    bench_admission,
    bench_archive,
    bench_attest,
    bench_audit,
    bench_authzen,
    bench_cerbos,
    bench_compare,
    bench_decide,
    bench_envoy,
    bench_eventlog,
    bench_fleet,
    bench_front,
    bench_grpc,
    bench_index,
    bench_record,
    bench_replay,
    bench_serving,
    bench_shadow,
    bench_startup,
    bench_tail,
    bench_tracing,
    bench_writer,
)
from benchmarks._common import machine, machine_line

BENCHMARKS: dict[str, tuple[str, Callable[..., dict[str, Any]]]] = {
    "decide": ("Engine.decide latency, default bundle", bench_decide.run),
    "index": ("policy index: cost versus policy count", bench_index.run),
    "grpc": ("docket serve under gRPC load (h2load)", bench_grpc.run),
    "envoy": ("ext_authz Check through Envoy against direct Check", bench_envoy.run),
    "authzen": ("AuthZEN evaluations/s against gRPC Authorize/s, one server", bench_authzen.run),
    "cerbos": ("peer: Cerbos CheckResources against Docket Authorize", bench_cerbos.run),
    "audit": ("audit log: durable appends, verification, proofs", bench_audit.run),
    "archive": ("audit archival: archive MB/s, prune, verify log + archive", bench_archive.run),
    "attest": ("device attestation: verify a TPM quote, issue an SVID and a JWT", bench_attest.run),
    "eventlog": ("TCG boot event log: parse a 40 KB log and replay it", bench_eventlog.run),
    "admission": ("Kubernetes admission webhook under HTTPS load (h2load)", bench_admission.run),
    "fleet": ("1,000 edge sites pushing to one collector (simulated)", bench_fleet.run),
    "startup": ("CLI start-up against a bare `import click`", bench_startup.run),
    "serving": (
        "side by side: trivial grpcio, previous Docket, Docket, Cerbos (issue 15's targets)",
        bench_serving.run,
    ),
    "front": (
        "the gRPC front: Docket behind grpc.aio against behind pyvoy (issue 15's native piece)",
        bench_front.run,
    ),
    "tail": ("Authorize p99 at a fixed rate, this tree against a base revision", bench_tail.run),
    "writer": ("--workers 2: per-worker writers against the supervisor's one", bench_writer.run),
    "compare": ("this tree against a base revision ($DOCKET_BENCH_BASE)", bench_compare.run),
    "tracing": ("docket serve Authorize with tracing on against off", bench_tracing.run),
    "shadow": ("docket serve Authorize with a shadow bundle against none", bench_shadow.run),
    "replay": ("policy diff: replayed requests/s, bytes per recorded request", bench_replay.run),
    "record": ("docket serve Authorize with record_requests against without", bench_record.run),
}
OUT = Path(__file__).resolve().parent / ".out" / "latest.json"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer iterations (a smoke run)")
    parser.add_argument("--only", choices=sorted(BENCHMARKS), help="run one benchmark")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the selected benchmarks; return the exit status."""
    args = parse_args(argv)
    info = machine()
    print(f"machine: {machine_line(info)}")
    load = info["loadavg_at_start"].split()
    if load and float(load[0]) > 0.5:
        print(f"WARNING: the machine is busy (load average {load[0]}): figures will be inflated")
    if args.quick:
        print("QUICK run: fewer iterations; not figures to publish")
    figures: dict[str, Any] = {}
    started = time.perf_counter()
    for name, (title, bench) in BENCHMARKS.items():
        if args.only and name != args.only:
            continue
        print(f"\n== {name}: {title}", flush=True)
        bench_started = time.perf_counter()
        figures[name] = bench(quick=args.quick)
        figures[name]["seconds"] = round(time.perf_counter() - bench_started, 1)
    total = time.perf_counter() - started
    print(f"\ntotal {total:.0f} s")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    report = {"machine": info, "quick": args.quick, "seconds": round(total, 1), **figures}
    OUT.write_text(json.dumps(report, indent=2) + "\n")
    shown = OUT.relative_to(Path.cwd()) if OUT.is_relative_to(Path.cwd()) else OUT
    print(f"figures written to {shown}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
