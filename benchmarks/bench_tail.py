"""Issue 15's tail: Authorize p99 at a fixed rate, this tree against a base revision.

Two ``docket serve --workers 2`` (durable audit log, per-worker writers: the default),
both up together: the base (``$DOCKET_BENCH_BASE``, default ``main``, exported and run as
``compare`` runs it) and this tree. Each gets ``serving``'s fixed-rate load (the mix of
8 bodies, 2 connections each, ``--rps`` per connection, up to 16 streams each, open loop)
at the same offered rate, ``$DOCKET_BENCH_TAIL_RATE`` (default 1,072/s: half of Docket's
throughput at 256 in flight in the quiet run of ``serving``), in alternating rounds (the
order rotated each round), each after a warm-up run of its own. Every body's answer is
checked first on both (:func:`benchmarks.bench_serving.docket_peer`), and each run as
``grpc``'s are (:class:`benchmarks.bench_grpc.Runner`).

Reported per server and round, and their medians: calls/s answered, p50/p99/max (h2load's
per-request log), entries per commit, how the 16 connections landed on the two workers
(SO_REUSEPORT spreads connections, not calls). Target: this tree's median p99 ≤ 10 ms.
"""

from __future__ import annotations

import os
import statistics
from contextlib import ExitStack
from typing import Any

from benchmarks import _load
from benchmarks._common import H2LOAD_MISSING, skipped, table
from benchmarks._load import Stream
from benchmarks.bench_compare import ROOT, export_base, tree_command
from benchmarks.bench_grpc import (
    AUTHORIZE,
    CONNECTIONS_PER_BODY,
    RATE_STREAMS,
    bundle_cases,
    docket_server,
    mix,
)
from benchmarks.bench_serving import Peer, docket_peer

BASE_ENV = "DOCKET_BENCH_BASE"
DEFAULT_BASE = "main"
RATE_ENV = "DOCKET_BENCH_TAIL_RATE"
DEFAULT_RATE = 1_072
TARGET_P99_MS = 10.0
FULL = (3, 15.0, 2.0)  # rounds, seconds per run, warm-up seconds
QUICK = (2, 5.0, 1.0)


def run(*, quick: bool = False) -> dict[str, Any]:
    """Start both servers, run the rounds, print the table and the target; the figures."""
    if _load.h2load_version() is None:
        return skipped(H2LOAD_MISSING)
    rounds, seconds, warm_up = QUICK if quick else FULL
    revision = os.environ.get(BASE_ENV, DEFAULT_BASE)
    rate = int(os.environ.get(RATE_ENV, DEFAULT_RATE))
    sha, base = export_base(revision)
    names = {"base": f"base {sha[:12]}", "this": "this tree"}
    print(f"  base: {revision} = {sha[:12]} (exported to {base.relative_to(ROOT)})")
    cases = mix(bundle_cases())
    rows: list[dict[str, Any]] = []
    with _load.workdir("docket-bench-tail-") as tmp, ExitStack() as stack:
        peers: dict[str, Peer] = {}
        for side, tree in (("base", base), ("this", ROOT)):
            server = stack.enter_context(docket_server(tmp / side, command=tree_command(tree)))
            peers[side] = docket_peer(names[side], server, tmp / side, cases, tmp)
        connections = len(cases) * CONNECTIONS_PER_BODY
        per_connection = max(1, round(rate / connections))
        offered = per_connection * connections
        for number in range(rounds):
            order = ["base", "this"] if number % 2 == 0 else ["this", "base"]
            for side in order:
                rows.append(_one(peers[side], side, number + 1, per_connection, seconds, warm_up))
    return _report(rows, names, offered, sha)


def _one(
    peer: Peer, side: str, number: int, per_connection: int, seconds: float, warm_up: float
) -> dict[str, Any]:
    """One fixed-rate run against one server, after a warm-up run (figures discarded)."""
    assert peer.renew is not None
    assert peer.runner is not None
    peer.renew()  # a device token lives 5 minutes
    streams = [
        Stream(body, CONNECTIONS_PER_BODY, streams=RATE_STREAMS, rps=per_connection)
        for body in peer.bodies
    ]
    url = f"http://{peer.address}{AUTHORIZE}"
    _load.run_h2load(
        url,
        streams,
        duration_s=warm_up,
        warm_up_s=0,
        response_sizes=peer.sizes,
        workdir=peer.runner.tmp,
    )
    label = f"{peer.name}, round {number}"
    result = peer.runner.measure(label, AUTHORIZE, streams, peer.sizes, seconds)
    print(f"  {label}: {result.per_second:,.0f}/s, p99 {result.p99_ms:.2f} ms", flush=True)
    return {
        "side": side,
        "round": number,
        "calls_per_second": round(result.per_second, 1),
        "p50_ms": round(result.p50_ms, 2),
        "p99_ms": round(result.p99_ms, 2),
        "max_ms": round(result.max_ms, 2),
        "entries_per_commit": peer.runner.per_commit[label],
        "connections_per_worker": peer.runner.split[label],
        "not_ok": peer.runner.not_ok[label],
    }


def _report(
    rows: list[dict[str, Any]], names: dict[str, str], offered: int, sha: str
) -> dict[str, Any]:
    medians = {}
    for side in ("base", "this"):
        mine = [row for row in rows if row["side"] == side]
        medians[side] = {
            key: statistics.median(row[key] for row in mine)
            for key in ("calls_per_second", "p50_ms", "p99_ms", "max_ms")
        }
    lines = [
        (
            names[row["side"]],
            row["round"],
            f"{row['calls_per_second']:,.0f}",
            f"{row['p50_ms']:.2f}",
            f"{row['p99_ms']:.2f}",
            f"{row['max_ms']:.2f}",
            "n/a" if row["entries_per_commit"] is None else f"{row['entries_per_commit']:.1f}",
            "/".join(str(n) for n in row["connections_per_worker"] or []) or "?",
        )
        for row in sorted(rows, key=lambda row: (row["side"], row["round"]))
    ]
    lines += [
        (
            names[side],
            "median",
            f"{m['calls_per_second']:,.0f}",
            f"{m['p50_ms']:.2f}",
            f"{m['p99_ms']:.2f}",
            f"{m['max_ms']:.2f}",
            "",
            "",
        )
        for side, m in medians.items()
    ]
    header = ("server", "round", "calls/s", "p50 ms", "p99 ms", "max ms", "entries/commit")
    print(f"{offered:,}/s offered to each, --workers 2, durable audit log:")
    print(table((*header, "connections per worker"), lines))
    p99 = medians["this"]["p99_ms"]
    met = p99 <= TARGET_P99_MS and medians["this"]["calls_per_second"] >= 0.98 * offered
    print(
        f"target: this tree's p99 at {offered:,}/s ≤ {TARGET_P99_MS:g} ms — "
        f"{'MET' if met else 'NOT MET'} ({p99:.2f} ms; base {medians['base']['p99_ms']:.2f} ms)"
    )
    return {"base": sha, "offered": offered, "rows": rows, "medians": medians, "target_met": met}
