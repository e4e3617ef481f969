"""This tree against a base revision, side by side in one run: has the decision path
become slower?

The base is ``$DOCKET_BENCH_BASE`` (any git revision; default ``HEAD~1``, the previous
commit). Its files are exported with ``git archive`` to ``benchmarks/.out/base-<sha>/``
and run with this virtualenv's Python and libraries, ``PYTHONPATH`` pointing at them, so
that only Docket's own code differs. Both sides use THIS tree's default bundle
(``policies/``) and the same requests.

(a) In-process ``Engine.decide``: one process per tree (:mod:`benchmarks._decide_worker`),
    warm, every case of ``policies/tests/*.yaml`` cycled. Rounds alternate between the two
    processes (base, this, base, this…), so load on the machine falls on both alike; the
    figure per side is the median over its rounds of the mean time per call.
(b) ``docket serve`` under Authorize load: one server per tree (one worker each, durable
    audit log on SQLite in a temporary directory), both up at once; h2load (closed loop,
    the bench_grpc Authorize mix, 16 connections) alternates between them in rounds.
    The attested-device case sends a device JWT-SVID minted by each server's own CA (as an
    attested device does), with the caller's inventory facts in ``context.device``. Every
    body's answer is checked against its case's expected decision on both servers first.
    Then BatchAuthorize of 10 and of 100 requests (the batches of ``cerbos``: one attested
    principal and context over many resources and actions; 8 connections, one call in
    flight each), alternating likewise, as decisions/s; both servers must answer each
    batch with the same decisions first.

Reported: each side's figure, and this tree's ratio to the base (decide: time per call,
lower is better; serve: calls/s, higher is better). The target: no more than 10 % slower.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

from attestation._ca import CertificateAuthority
from benchmarks import bench_cerbos
from benchmarks._common import table
from benchmarks._load import CpuSnapshot, Stream, frame, h2load_version, run_h2load, workdir
from benchmarks.bench_grpc import (
    AUTHORIZE,
    BATCH,
    BUNDLE,
    Docket,
    as_attested_device,
    bundle_cases,
    docket_server,
    expect_ok,
    mix,
)
from sdk.v1 import decisions_pb2 as pb

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / ".out"
WORKER = Path(__file__).resolve().parent / "_decide_worker.py"
BASE_ENV = "DOCKET_BENCH_BASE"
DEFAULT_BASE = "HEAD~1"
MAX_SLOWDOWN = 0.10
BATCH_SIZES = (10, 100)
BATCH_CONNECTIONS = 8


@dataclass(frozen=True, slots=True)
class Rounds:
    """How many alternating rounds, and how long each is."""

    decide_rounds: int
    decide_calls: int
    serve_rounds: int
    serve_seconds: int


FULL = Rounds(decide_rounds=10, decide_calls=4000, serve_rounds=4, serve_seconds=4)
QUICK = Rounds(decide_rounds=4, decide_calls=1000, serve_rounds=2, serve_seconds=2)


def export_base(revision: str) -> tuple[str, Path]:
    """The base revision's full sha and a directory holding its files (made once)."""
    git = shutil.which("git")
    if git is None:
        raise RuntimeError("git not found: the base revision is read from this checkout")
    sha = subprocess.run(
        [git, "rev-parse", "--verify", f"{revision}^{{commit}}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    target = OUT / f"base-{sha[:12]}"
    if not (target / "engine").is_dir():
        archive = subprocess.run(
            [git, "archive", "--format=tar", sha], cwd=ROOT, capture_output=True, check=True
        ).stdout
        target.mkdir(parents=True, exist_ok=True)
        with tarfile.open(fileobj=BytesIO(archive)) as tar:
            tar.extractall(target, filter="data")
    return sha, target


def _env(tree: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(tree)}


# --- (a) in-process decide ---------------------------------------------------------------


class DecideWorker:
    """A :mod:`benchmarks._decide_worker` process over one tree's engine."""

    def __init__(self, tree: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(WORKER), str(BUNDLE)],
            env=_env(tree),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        ready = self._line()
        if not ready.startswith("ready "):
            raise RuntimeError(f"decide worker for {tree}: {ready!r}")
        self.requests = int(ready.split()[1])

    def _line(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"decide worker exited {self.proc.wait()}")
        return line.strip()

    def per_call_us(self, calls: int) -> float:
        """Mean µs per call over ``calls`` decisions."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"go {calls}\n")
        self.proc.stdin.flush()
        return int(self._line()) / calls / 1000

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def compare_decide(base: Path, rounds: Rounds) -> dict[str, Any]:
    """(a): median µs per call of each side over alternating rounds."""
    workers = {"base": DecideWorker(base), "this": DecideWorker(ROOT)}
    samples: dict[str, list[float]] = {"base": [], "this": []}
    try:
        for _ in range(rounds.decide_rounds):
            for side, worker in workers.items():
                samples[side].append(worker.per_call_us(rounds.decide_calls))
    finally:
        for worker in workers.values():
            worker.close()
    medians = {side: statistics.median(values) for side, values in samples.items()}
    return {
        "requests": {side: worker.requests for side, worker in workers.items()},
        "us_per_call": {side: round(value, 2) for side, value in medians.items()},
        "rounds_us": {side: [round(v, 2) for v in values] for side, values in samples.items()},
        "slowdown": round(medians["this"] / medians["base"] - 1, 4),
    }


# --- (b) docket serve under Authorize load -----------------------------------------------


def tree_command(tree: Path) -> list[str]:
    """The ``docket`` command of ``tree``: this virtualenv's for this tree; for another
    (an export), this virtualenv's Python with ``PYTHONPATH`` at it and ``-P``: a
    ``python -c`` otherwise puts its working directory (the servers start in this
    checkout) first on ``sys.path``, ahead of ``PYTHONPATH``, and runs this tree's code.
    The spawned workers inherit that ``sys.path``."""
    if tree == ROOT:
        return [str(Path(sys.executable).parent / "docket")]
    return [
        "env",
        f"PYTHONPATH={tree}",
        sys.executable,
        "-P",
        "-c",
        "import sys; from engine.cli import run; sys.argv[0] = 'docket'; run()",
    ]


def compare_serve(
    base: Path,
    rounds: Rounds,
    tmp: Path,
    *,
    this_env: Mapping[str, str] | None = None,
    batch_sizes: tuple[int, ...] = (),
) -> dict[str, Any]:
    """(b): Authorize calls/s of each side over alternating h2load rounds, and each
    server's CPU µs per call (its process group's CPU time over the calls answered);
    ``this_env``: settings for this tree's server alone (``DOCKET_*`` variables). With
    ``batch_sizes``, also ``batches``: the same figures of BatchAuthorize of each size,
    in decisions/s."""
    cases = mix(bundle_cases())
    settings = [f"{name}={value}" for name, value in (this_env or {}).items()]
    this_command = ["env", *settings, *tree_command(ROOT)] if settings else tree_command(ROOT)
    with (
        docket_server(tmp / "base", workers=1, command=tree_command(base)) as base_server,
        docket_server(tmp / "this", workers=1, command=this_command) as this_server,
    ):
        servers = {"base": base_server, "this": this_server}
        streams: dict[str, list[Stream]] = {}
        sizes: dict[str, list[int]] = {}
        for side, server in servers.items():
            ca = CertificateAuthority.load(tmp / side / "ca")
            bodies, answer_sizes = [], []
            for case in cases:
                sent = as_attested_device(case, ca)
                reply = expect_ok(server.grpc, AUTHORIZE, sent.message, pb.AuthorizeResponse)
                assert isinstance(reply, pb.AuthorizeResponse)
                if reply.decision != sent.expected:
                    raise RuntimeError(
                        f"{side}: Authorize {case.name}: {pb.Decision.Name(reply.decision)}, "
                        f"expected {pb.Decision.Name(sent.expected)} ({list(reply.reasons)})"
                    )
                bodies.append(sent.message.SerializeToString())
                answer_sizes.append(len(frame(reply.SerializeToString())))
            streams[side] = [Stream(body, 2) for body in bodies]
            sizes[side] = answer_sizes
        print(
            f"  verified: the {len(cases)} mix bodies answer as their cases expect on both "
            "servers (the attested case with each server's own device JWT-SVID)",
            flush=True,
        )
        loads: dict[str | int, dict[str, Any]] = {
            "authorize": _alternate(servers, AUTHORIZE, streams, sizes, rounds, tmp)
        }
        main = next(case for case in bundle_cases() if case.name == bench_cerbos.CASE)
        for size in batch_sizes:
            bodies_of: dict[str, list[Stream]] = {}
            replies: dict[str, list[int]] = {}
            decided: dict[str, list[int]] = {}
            for side, server in servers.items():
                ca = CertificateAuthority.load(tmp / side / "ca")
                body = bench_cerbos.batch_body(bench_cerbos.on_the_wire(main, ca), size)
                batch = pb.BatchAuthorizeRequest.FromString(body)
                reply = expect_ok(server.grpc, BATCH, batch, pb.BatchAuthorizeResponse)
                assert isinstance(reply, pb.BatchAuthorizeResponse)
                decided[side] = [result.decision for result in reply.results]
                bodies_of[side] = [Stream(body, BATCH_CONNECTIONS)]
                replies[side] = [len(frame(reply.SerializeToString()))]
            if decided["base"] != decided["this"] or len(decided["this"]) != size:
                raise RuntimeError(f"BatchAuthorize x{size}: the two servers decide differently")
            print(f"  verified: BatchAuthorize x{size} decides alike on both servers", flush=True)
            loads[size] = _alternate(servers, BATCH, bodies_of, replies, rounds, tmp, per_call=size)
    figures = {name: _slowdown(load) for name, load in loads.items()}
    return {**figures.pop("authorize"), "batches": figures} if batch_sizes else figures["authorize"]


def _slowdown(figures: dict[str, Any]) -> dict[str, Any]:
    rates = figures["calls_per_second"]
    return {**figures, "slowdown": round(1 - rates["this"] / rates["base"], 4)}


def _alternate(
    servers: Mapping[str, Docket],
    method: str,
    streams: Mapping[str, list[Stream]],
    sizes: Mapping[str, list[int]],
    rounds: Rounds,
    tmp: Path,
    *,
    per_call: int = 1,
) -> dict[str, Any]:
    """``method`` under h2load on each server in turn, ``rounds.serve_rounds`` times: the
    median calls/s (times ``per_call``: decisions/s for a batch), each round's, and the
    median CPU µs per call of each server's process group."""
    samples: dict[str, list[float]] = {side: [] for side in servers}
    cpu: dict[str, list[float]] = {side: [] for side in servers}
    for number in range(rounds.serve_rounds):
        for side, server in servers.items():
            before = CpuSnapshot.take(server.pgid)
            result = run_h2load(
                f"http://{server.grpc}{method}",
                streams[side],
                duration_s=rounds.serve_seconds,
                warm_up_s=1 if number == 0 else 0,
                response_sizes=sizes[side],
                workdir=tmp,
            )
            if result.failed or result.data_ratio < 0.99:
                raise RuntimeError(f"{side}: calls failed under load ({result.failed})")
            samples[side].append(result.per_second * per_call)
            after = CpuSnapshot.take(server.pgid)
            if after.group is not None and before.group is not None and result.measured_ok:
                cpu[side].append((after.group - before.group) * 1e6 / result.measured_ok)
    medians = {side: statistics.median(values) for side, values in samples.items()}
    return {
        "calls_per_second": {side: round(value, 1) for side, value in medians.items()},
        "cpu_us_per_call": {
            side: round(statistics.median(values), 1) if values else None
            for side, values in cpu.items()
        },
        "rounds_per_second": {side: [round(v) for v in values] for side, values in samples.items()},
    }


def setting_compared(
    tmp: Path,
    this_env: Mapping[str, str],
    *,
    quick: bool,
    names: tuple[str, str],
    labels: tuple[str, str],
) -> dict[str, Any]:
    """Two servers of THIS tree side by side (:func:`compare_serve`, the base being this
    tree too), the second with ``this_env``: what one setting costs on the Authorize
    path. Prints calls/s and server CPU µs per call of each, and their ratios;
    ``names`` key the figures (without, with), ``labels`` head the table's columns."""
    serve = compare_serve(ROOT, QUICK if quick else FULL, tmp, this_env=this_env)
    off, on = serve["calls_per_second"]["base"], serve["calls_per_second"]["this"]
    cpu_off, cpu_on = serve["cpu_us_per_call"]["base"], serve["cpu_us_per_call"]["this"]
    cpu_ratio = round(cpu_on / cpu_off, 3) if cpu_off and cpu_on else None
    print(
        table(
            ("docket serve Authorize", *labels, f"ratio ({names[1]} / {names[0]})"),
            [
                ("calls/s", off, on, f"{on / off:.3f}"),
                (
                    "server CPU µs/call",
                    cpu_off,
                    cpu_on,
                    "?" if cpu_ratio is None else f"{cpu_ratio:.3f}",
                ),
            ],
        )
    )
    rounds = serve["rounds_per_second"]
    print(
        f"rounds (calls/s): {names[0]} {', '.join(map(str, rounds['base']))}; "
        f"{names[1]} {', '.join(map(str, rounds['this']))}"
    )
    return {
        "calls_per_second": {names[0]: off, names[1]: on},
        "cpu_us_per_call": {names[0]: cpu_off, names[1]: cpu_on},
        "rounds_per_second": {names[0]: rounds["base"], names[1]: rounds["this"]},
        "throughput_ratio": round(on / off, 3),
        "cpu_ratio": cpu_ratio,
    }


def run(*, quick: bool = False) -> dict[str, Any]:
    """Run the comparison, print its table, return its figures."""
    rounds = QUICK if quick else FULL
    revision = os.environ.get(BASE_ENV, DEFAULT_BASE)
    sha, base = export_base(revision)
    print(f"  base: {revision} = {sha[:12]} (exported to {base.relative_to(ROOT)})")
    decide = compare_decide(base, rounds)
    rows: list[tuple[object, ...]] = [
        (
            "Engine.decide, µs per call",
            decide["us_per_call"]["base"],
            decide["us_per_call"]["this"],
            f"{decide['slowdown']:+.1%}",
        )
    ]
    figures: dict[str, Any] = {"base": sha, "decide": decide}
    if h2load_version() is None:
        print("  serve: SKIPPED (h2load not found: apt-get install nghttp2-client)")
    else:
        with workdir("docket-bench-compare-") as tmp:
            serve = compare_serve(base, rounds, tmp, batch_sizes=BATCH_SIZES)
        figures["serve"] = serve
        rows.append(
            (
                "docket serve Authorize, calls/s",
                serve["calls_per_second"]["base"],
                serve["calls_per_second"]["this"],
                f"{serve['slowdown']:+.1%}",
            )
        )
        for size in BATCH_SIZES:
            batch = serve["batches"][size]
            rows.append(
                (
                    f"docket serve BatchAuthorize x{size}, decisions/s",
                    batch["calls_per_second"]["base"],
                    batch["calls_per_second"]["this"],
                    f"{batch['slowdown']:+.1%}",
                )
            )
            rows.append(
                (
                    f"  its server CPU µs per call (x{size})",
                    batch["cpu_us_per_call"]["base"],
                    batch["cpu_us_per_call"]["this"],
                    "",
                )
            )
    print(table(("", f"base {sha[:12]}", "this tree", "slower by"), rows))
    slowest = max(figures[key]["slowdown"] for key in ("decide", "serve") if key in figures)
    met = slowest <= MAX_SLOWDOWN
    figures["target_met"] = met
    print(
        f"target: no more than {MAX_SLOWDOWN:.0%} slower than the base — "
        f"{'MET' if met else 'NOT MET'} (worst {slowest:+.1%})"
    )
    return figures
